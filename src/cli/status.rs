use std::path::Path;
use std::process::ExitCode;

use crate::model::ByteSize;
use crate::state::StateStore;

use super::StatusArgs;

pub fn run(config: &Path, args: &StatusArgs) -> ExitCode {
    let cfg = match super::load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let store = match StateStore::open(&cfg.daemon.state_dir) {
        Ok(s) => s,
        Err(e) => return super::fail(e, 1),
    };
    let (runs, uploads) = match (store.last_runs(), store.uploads_in_flight()) {
        (Ok(r), Ok(u)) => (r, u),
        (Err(e), _) | (_, Err(e)) => return super::fail(e, 1),
    };
    if args.json {
        let v = serde_json::json!({ "runs": runs, "uploads_in_flight": uploads });
        println!("{}", serde_json::to_string_pretty(&v).expect("status serializes"));
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<24} {:<12} {:<25} {:>7} {:>7} {:>7} {:>9} {:>8}",
        "POLICY", "OUTCOME", "LAST RUN (UTC)", "TAGS", "BLOBS", "MOUNTS", "SENT", "FAILURES"
    );
    for r in &runs {
        let when =
            chrono::DateTime::from_timestamp_millis(r.started_ms as i64).map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
        let c = &r.counts;
        println!(
            "{:<24} {:<12} {:<25} {:>7} {:>7} {:>7} {:>9} {:>8}",
            r.policy,
            r.outcome,
            when,
            c.tags_copied,
            c.blobs_uploaded,
            c.blobs_mounted,
            ByteSize(c.bytes_sent).to_string(),
            c.failures
        );
        for e in r.errors.iter().take(3) {
            println!("    {e}");
        }
    }
    if !uploads.is_empty() {
        println!("\nuploads in flight:");
        for u in &uploads {
            println!("  {}/{} {} {}/{}", u.target, u.repository, u.digest, ByteSize(u.offset), ByteSize(u.size));
        }
    }
    ExitCode::SUCCESS
}
