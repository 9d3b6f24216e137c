//! `ferry audit`: the ledger's entries, filtered, or its chain checked; from the state
//! store, or through the daemon that holds it.

use std::path::Path;
use std::process::ExitCode;

use crate::ledger::{Asked, Entry, Ledger, Retention, Verified};
use crate::model::now_ms;
use crate::state::{StateError, StateStore};

use super::AuditArgs;

pub async fn run(config: &Path, args: &AuditArgs) -> ExitCode {
    let cfg = match super::load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let asked = Asked {
        since: args.since.clone(),
        until: args.until.clone(),
        policy: args.policy.clone(),
        target: args.target.clone(),
        repository: args.repository.clone(),
        digest: args.digest.clone(),
    };
    let filter = match asked.filter(now_ms()) {
        Ok(f) => f,
        Err(e) => return super::fail(e, 2),
    };
    if !cfg.daemon.state_dir.exists() {
        return report(args, Vec::new(), None);
    }
    match StateStore::try_open(&cfg.daemon.state_dir) {
        Ok(store) => {
            // Reading only: the retention is not applied here.
            let ledger = Ledger::new(
                store,
                Retention {
                    max_age: cfg.daemon.audit_retention,
                    max_entries: cfg.daemon.audit_max_entries,
                    archive: None,
                },
            );
            if args.verify {
                return verified(args, &ledger.check());
            }
            let mut entries = Vec::new();
            match ledger.each_page(&filter, 0, |page| entries.extend(page)) {
                Ok(()) => report(args, entries, None),
                Err(e) => super::fail(e, 1),
            }
        }
        Err(StateError::Locked { .. }) => through_daemon(&cfg, args, &asked).await,
        Err(e) => super::fail(e, 1),
    }
}

async fn through_daemon(cfg: &crate::config::Config, args: &AuditArgs, asked: &Asked) -> ExitCode {
    let client = match super::remote::DaemonClient::new(cfg) {
        Ok(c) => c,
        Err(e) => return super::fail(e, 1),
    };
    if args.verify {
        return match client.audit_verify().await {
            Ok(v) => verified(args, &v),
            Err(e) => super::fail(e, 1),
        };
    }
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("since", &asked.since),
        ("until", &asked.until),
        ("policy", &asked.policy),
        ("target", &asked.target),
        ("repository", &asked.repository),
        ("digest", &asked.digest),
    ] {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    let base = q.finish();
    let (mut entries, mut after) = (Vec::new(), 0);
    loop {
        let query = format!("{base}&after={after}");
        match client.audit(&query).await {
            Ok(p) => {
                entries.extend(p.entries);
                match p.next {
                    Some(n) => after = n,
                    None => break,
                }
            }
            Err(e) => return super::fail(e, 1),
        }
    }
    report(args, entries, Some(client.base()))
}

fn report(args: &AuditArgs, entries: Vec<Entry>, from: Option<&str>) -> ExitCode {
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&entries).expect("entries serialize")
        );
        return ExitCode::SUCCESS;
    }
    for e in &entries {
        println!("{}", line(e));
    }
    let origin = from
        .map(|b| format!(" (from the daemon at {b})"))
        .unwrap_or_default();
    eprintln!(
        "{}{origin}",
        super::counted(entries.len(), "entry", "entries")
    );
    ExitCode::SUCCESS
}

/// `2026-12-04T19:00:01Z #12 written dst/team/app:1.0 sha256:… ← src/team/app@sha256:… policy p (schedule) on host`
fn line(e: &Entry) -> String {
    let d = &e.draft;
    let at = chrono::DateTime::from_timestamp_millis(d.at_ms as i64)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    let place = match &d.tag {
        Some(t) => format!("{}/{}:{t}", d.target, d.repository),
        None => format!("{}/{}@{}", d.target, d.repository, d.digest),
    };
    let mut out = format!("{at} #{} {} {place} {}", e.seq, d.action, d.digest);
    if let Some(s) = &d.source {
        out.push_str(&format!(" ← {}/{}@{}", s.registry, s.repository, s.digest));
    }
    out.push_str(&format!(
        " policy {} ({}) on {}",
        d.policy, d.trigger, d.member
    ));
    if let Some(v) = &d.verified {
        out.push_str(&format!("; verified: {v}"));
    }
    if let Some(r) = &d.reason {
        out.push_str(&format!("; {r}"));
    }
    if e.recovered {
        out.push_str("; recorded after the fact (its answer was lost)");
    }
    out
}

fn verified(args: &AuditArgs, v: &Verified) -> ExitCode {
    if args.json {
        println!("{}", serde_json::to_string_pretty(v).expect("serializes"));
    } else {
        match (&v.broken, &v.head) {
            (Some(b), _) => eprintln!("audit ledger: broken at {b}"),
            (None, Some(h)) => println!(
                "audit ledger: {} intact; head {h}",
                super::counted(v.entries as usize, "entry", "entries")
            ),
            (None, None) => println!("audit ledger: empty"),
        }
    }
    if v.broken.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
