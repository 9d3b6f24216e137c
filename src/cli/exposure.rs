//! `ferry where DIGEST`: which sites hold an image that is or contains DIGEST, from the
//! state store's index (or the daemon's, beside one); `--check` asks the targets now.

use std::path::Path;
use std::process::ExitCode;

use crate::ledger::{exposure, Exposure};
use crate::model::Digest;
use crate::state::{StateError, StateStore};

use super::WhereArgs;

pub async fn run(config: &Path, args: &WhereArgs) -> ExitCode {
    let cfg = match super::load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let digest: Digest = args.digest.parse().expect("checked by clap");
    let found = if !cfg.daemon.state_dir.exists() {
        Ok(Vec::new())
    } else {
        match StateStore::try_open(&cfg.daemon.state_dir) {
            Ok(store) => exposure(&store, &digest).map_err(|e| e.to_string()),
            Err(StateError::Locked { .. }) => match super::remote::DaemonClient::new(&cfg) {
                Ok(c) => c.exposure(digest.as_str()).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        }
    };
    let mut found = match found {
        Ok(f) => f,
        Err(e) => return super::fail(e, 1),
    };
    if args.check {
        let app = match crate::app::App::new(cfg, None) {
            Ok(a) => a,
            Err(e) => return super::fail(e, 1),
        };
        for e in &mut found {
            let Some(reg) = app.runner().registry_named(&e.target) else {
                continue;
            };
            match reg
                .head_target_manifest(&e.repository, e.tag.as_str())
                .await
            {
                Ok(h) => e.holds_now = Some(h.is_some_and(|h| h.digest == e.image)),
                Err(err) => eprintln!("{}/{}:{}: {err}", e.target, e.repository, e.tag),
            }
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&found).expect("serializes")
        );
    } else {
        for e in &found {
            println!("{}", line(e, &digest));
        }
        eprintln!(
            "{} {digest}",
            super::counted(found.len(), "target tag holds", "target tags hold")
        );
    }
    ExitCode::SUCCESS
}

fn line(e: &Exposure, asked: &Digest) -> String {
    let when = |ms: u64| {
        chrono::DateTime::from_timestamp_millis(ms as i64)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default()
    };
    let how = if &e.image == asked {
        "the image itself".to_owned()
    } else {
        format!("in {}", e.image)
    };
    let now = match e.holds_now {
        Some(true) => "; held now",
        Some(false) => "; NOT held now",
        None => "",
    };
    format!(
        "{}/{}:{} ({how}) written {}, last seen {}{now}",
        e.target,
        e.repository,
        e.tag,
        when(e.written_ms),
        when(e.seen_ms)
    )
}
