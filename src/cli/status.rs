use std::path::Path;
use std::process::ExitCode;

use crate::api::{ClusterStatus, StatusDoc};
use crate::model::ByteSize;
use crate::state::{StateError, StateStore};

use super::remote::RemoteError;
use super::StatusArgs;

#[derive(Debug, thiserror::Error)]
enum StatusError {
    #[error(transparent)]
    Store(StateError),
    #[error("{open}; and {daemon}")]
    Daemon {
        open: StateError,
        daemon: RemoteError,
    },
}

/// The status document: from the state store, or, while a daemon holds the store, from the
/// daemon's `/status` endpoint (the same document, plus its schedule).
async fn document(cfg: &crate::config::Config) -> Result<StatusDoc, StatusError> {
    match StateStore::try_open(&cfg.daemon.state_dir) {
        Ok(store) => {
            let mut doc = StatusDoc::read(&store, None).map_err(StatusError::Store)?;
            // No daemon here, but the cluster it belongs to can still be read from etcd.
            if let Some(settings) = &cfg.cluster {
                let peek = crate::cluster::Cluster::peek(settings, crate::daemon::local(cfg));
                doc.cluster = Some(
                    match tokio::time::timeout(std::time::Duration::from_secs(10), peek).await {
                        Ok(Ok(c)) => c,
                        Ok(Err(e)) => ClusterStatus::unreadable(e.to_string()),
                        Err(_) => ClusterStatus::unreadable("etcd did not answer within 10 s"),
                    },
                );
            }
            Ok(doc)
        }
        Err(open) => {
            let daemon = |daemon| StatusError::Daemon { open, daemon };
            let client = match super::remote::DaemonClient::new(cfg) {
                Ok(c) => c,
                Err(e) => return Err(daemon(e)),
            };
            client.status().await.map_err(daemon)
        }
    }
}

pub async fn run(config: &Path, args: &StatusArgs) -> ExitCode {
    let cfg = match super::load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let doc = match document(&cfg).await {
        Ok(d) => d,
        Err(e) => return super::fail(e, 1),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("status serializes")
        );
        return ExitCode::SUCCESS;
    }
    let time = |ms: u64| {
        chrono::DateTime::from_timestamp_millis(ms as i64)
            .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
    };
    println!(
        "{:<22} {:<20} {:<12} {:<20} {:<20} {:>6} {:>6} {:>6} {:>10} {:>8}",
        "POLICY",
        "TRIGGER",
        "OUTCOME",
        "LAST RUN (UTC)",
        "NEXT RUN (UTC)",
        "TAGS",
        "BLOBS",
        "MOUNTS",
        "SENT",
        "FAILURES"
    );
    // Every configured policy, run or not, then runs of policies no longer configured.
    let mut names: Vec<String> = cfg.policies.iter().map(|p| p.name.clone()).collect();
    names.extend(
        doc.runs
            .iter()
            .map(|r| &r.policy)
            .filter(|p| !cfg.policies.iter().any(|c| &c.name == *p))
            .cloned(),
    );
    for name in &names {
        let trigger = cfg
            .policies
            .iter()
            .find(|p| &p.name == name)
            .map_or("(removed)".to_owned(), |p| {
                crate::daemon::describe(&p.trigger)
            });
        let next = doc
            .policies
            .as_ref()
            .and_then(|p| p.get(name))
            .and_then(|p| p.next_run_ms)
            .map_or("-".into(), time);
        let Some(r) = doc.last_run(name) else {
            println!(
                "{name:<22} {trigger:<20} {:<12} {:<20} {next:<20}",
                "never run", "-"
            );
            continue;
        };
        let c = &r.counts;
        println!(
            "{:<22} {:<20} {:<12} {:<20} {:<20} {:>6} {:>6} {:>6} {:>10} {:>8}",
            name,
            trigger,
            r.outcome.as_str(),
            time(r.started_ms),
            next,
            c.tags_copied,
            c.blobs_uploaded,
            c.blobs_mounted,
            ByteSize(c.bytes_sent).to_string(),
            c.failures
        );
        if let Some(scope) = &r.scope {
            println!("    targeted run: {scope}");
        }
        if let Some(ch) = doc.last_changes.iter().find(|c| c.policy == r.policy) {
            println!(
                "    last change: {} copied, {} deleted at {}{}",
                ch.counts.tags_copied,
                ch.counts.deleted,
                time(ch.started_ms),
                ch.scope
                    .as_ref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            );
        }
        listed("failed", &r.errors, 3);
        let conflicts: Vec<String> = r
            .findings
            .conflicts
            .iter()
            .map(ToString::to_string)
            .collect();
        listed("conflict", &conflicts, 5);
        listed("held", &r.findings.held, 5);
        listed("verified", &r.findings.verified, 5);
    }
    if !doc.pending_events.is_empty() {
        println!("\nevents pending ({} in all):", doc.pending_events_total);
        for e in &doc.pending_events {
            let tag = e
                .key
                .tag
                .as_ref()
                .map(|t| format!(":{t}"))
                .unwrap_or_default();
            println!(
                "  {} {} {}{tag} from {} (accepted {}, {} attempts){}",
                e.key.policy,
                e.key.action,
                e.key.repository_str(),
                e.registry,
                time(e.accepted_ms),
                e.attempts,
                if e.through_etcd {
                    ", handed over through etcd"
                } else {
                    ""
                }
            );
        }
    }
    if let Some(c) = &doc.cluster {
        print_cluster(c);
    }
    if !doc.uploads_in_flight.is_empty() {
        println!("\nuploads in flight:");
        for u in &doc.uploads_in_flight {
            println!(
                "  {}/{} {} {}/{}",
                u.target,
                u.repository,
                u.digest,
                ByteSize(u.offset),
                ByteSize(u.size)
            );
        }
    }
    ExitCode::SUCCESS
}

/// Members, their last heartbeat and what each holds; policies they do not agree on.
fn print_cluster(c: &ClusterStatus) {
    if let Some(e) = &c.error {
        println!("\ncluster: cannot be read: {e}");
        return;
    }
    if c.daemon_running == Some(false) {
        println!(
            "\ncluster (this member's daemon is not running; etcd {}):",
            c.etcd
        );
    } else if !c.joined {
        println!("\ncluster: this member has not joined (etcd unreachable?)");
        return;
    } else {
        println!("\ncluster (this member: {}, etcd {}):", c.member, c.etcd);
    }
    println!(
        "  {:<20} {:<24} {:>10} {:>9}  HOLDS",
        "MEMBER", "HOST / PID", "HEARTBEAT", "POLICIES"
    );
    for m in &c.members {
        let heartbeat = m
            .heartbeat_age_seconds
            .map_or("?".to_owned(), |s| format!("{s}s ago"));
        println!(
            "  {:<20} {:<24} {:>10} {:>9}  {}",
            m.name,
            format!("{} / {}", m.host, m.pid),
            heartbeat,
            m.policies,
            m.holds.join(", ")
        );
    }
    if let Some(n) = c.events_waiting.filter(|n| *n > 0) {
        println!("  {n} events or run requests waiting in etcd for their policy's owner");
    }
    for m in &c.mismatches {
        if m.differs {
            println!(
                "  policy {}: defined differently on {}",
                m.policy,
                m.defined_on.join(", ")
            );
        }
        if !m.missing_on.is_empty() {
            println!(
                "  policy {}: not defined on {} (runs only on {})",
                m.policy,
                m.missing_on.join(", "),
                m.defined_on.join(", ")
            );
        }
    }
}

/// The first `max` lines of a run's list, and how many more there are: a cut list must not
/// read as the whole of it.
fn listed(what: &str, items: &[String], max: usize) {
    for i in items.iter().take(max) {
        println!("    {what}: {i}");
    }
    if items.len() > max {
        println!("    {what}: and {} more", items.len() - max);
    }
}
