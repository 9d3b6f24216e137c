use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use crate::model::ByteSize;
use crate::state::StateStore;

use super::StatusArgs;

/// The status document: from the state store, or, while a daemon holds the store, from the
/// daemon's `/status` endpoint (the same document, plus its schedule).
async fn document(cfg: &crate::config::Config) -> Result<Value, String> {
    match StateStore::open(&cfg.daemon.state_dir) {
        Ok(store) => {
            let mut doc = serde_json::to_value(store.status().map_err(|e| e.to_string())?)
                .expect("status serializes");
            // No daemon here, but the cluster it belongs to can still be read from etcd.
            if let Some(settings) = &cfg.cluster {
                let peek = crate::cluster::Cluster::peek(settings, crate::daemon::local(cfg));
                doc["cluster"] =
                    match tokio::time::timeout(std::time::Duration::from_secs(10), peek).await {
                        Ok(Ok(c)) => c,
                        Ok(Err(e)) => serde_json::json!({ "error": e.to_string() }),
                        Err(_) => serde_json::json!({ "error": "etcd did not answer within 10 s" }),
                    };
            }
            Ok(doc)
        }
        Err(open_error) => {
            let client = super::remote::DaemonClient::new(cfg)?;
            client
                .status()
                .await
                .map_err(|e| format!("{open_error}; and {e}"))
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
    let n = |v: &Value| v.as_u64().unwrap_or(0);
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
    let runs: Vec<&Value> = doc["runs"].as_array().into_iter().flatten().collect();
    // Every configured policy, run or not, then runs of policies no longer configured.
    let mut names: Vec<String> = cfg.policies.iter().map(|p| p.name.clone()).collect();
    names.extend(
        runs.iter()
            .filter_map(|r| r["policy"].as_str())
            .filter(|p| !cfg.policies.iter().any(|c| c.name == *p))
            .map(str::to_owned),
    );
    for name in &names {
        let trigger = cfg
            .policies
            .iter()
            .find(|p| &p.name == name)
            .map_or("(removed)".to_owned(), |p| {
                crate::daemon::describe(&p.trigger)
            });
        let next = doc["policies"][name]["next_run_ms"]
            .as_u64()
            .map_or("-".into(), time);
        let Some(r) = runs.iter().find(|r| r["policy"] == name.as_str()) else {
            println!(
                "{name:<22} {trigger:<20} {:<12} {:<20} {next:<20}",
                "never run", "-"
            );
            continue;
        };
        let c = &r["counts"];
        println!(
            "{:<22} {:<20} {:<12} {:<20} {:<20} {:>6} {:>6} {:>6} {:>10} {:>8}",
            name,
            trigger,
            r["outcome"].as_str().unwrap_or(""),
            time(n(&r["started_ms"])),
            next,
            n(&c["tags_copied"]),
            n(&c["blobs_uploaded"]),
            n(&c["blobs_mounted"]),
            ByteSize(n(&c["bytes_sent"])).to_string(),
            n(&c["failures"])
        );
        if let Some(scope) = r["scope"].as_str() {
            println!("    targeted run: {scope}");
        }
        for e in r["errors"].as_array().into_iter().flatten().take(3) {
            println!("    failed: {}", e.as_str().unwrap_or(""));
        }
        for h in r["held"].as_array().into_iter().flatten().take(5) {
            println!("    held: {}", h.as_str().unwrap_or(""));
        }
    }
    let pending = doc["pending_events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !pending.is_empty() {
        println!(
            "\nevents pending ({} in all):",
            n(&doc["pending_events_total"])
        );
        for e in &pending {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
            let tag = if s("tag").is_empty() {
                String::new()
            } else {
                format!(":{}", s("tag"))
            };
            println!(
                "  {} {} {}{tag} from {} (accepted {}, {} attempts){}",
                s("policy"),
                s("action"),
                s("repository"),
                s("registry"),
                time(n(&e["accepted_ms"])),
                n(&e["attempts"]),
                if e["through_etcd"] == true {
                    ", handed over through etcd"
                } else {
                    ""
                }
            );
        }
    }
    print_cluster(&doc["cluster"]);
    let uploads = doc["uploads_in_flight"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !uploads.is_empty() {
        println!("\nuploads in flight:");
        for u in &uploads {
            let s = |k: &str| u[k].as_str().unwrap_or("").to_owned();
            println!(
                "  {}/{} {} {}/{}",
                s("target"),
                s("repository"),
                s("digest"),
                ByteSize(n(&u["offset"])),
                ByteSize(n(&u["size"]))
            );
        }
    }
    ExitCode::SUCCESS
}

/// Members, their last heartbeat and what each holds; policies they do not agree on.
fn print_cluster(c: &Value) {
    if c.is_null() {
        return;
    }
    if let Some(e) = c["error"].as_str() {
        println!("\ncluster: cannot be read: {e}");
        return;
    }
    if c["daemon_running"] == false {
        println!(
            "\ncluster (this member's daemon is not running; etcd {}):",
            c["etcd"].as_str().unwrap_or("")
        );
    } else if c["joined"] != true {
        println!("\ncluster: this member has not joined (etcd unreachable?)");
        return;
    } else {
        println!(
            "\ncluster (this member: {}, etcd {}):",
            c["member"].as_str().unwrap_or(""),
            c["etcd"].as_str().unwrap_or("")
        );
    }
    println!(
        "  {:<20} {:<24} {:>10} {:>9}  HOLDS",
        "MEMBER", "HOST / PID", "HEARTBEAT", "POLICIES"
    );
    for m in c["members"].as_array().into_iter().flatten() {
        let heartbeat = m["heartbeat_age_seconds"]
            .as_i64()
            .map_or("?".to_owned(), |s| format!("{s}s ago"));
        let holds: Vec<&str> = m["holds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "  {:<20} {:<24} {:>10} {:>9}  {}",
            m["name"].as_str().unwrap_or(""),
            format!("{} / {}", m["host"].as_str().unwrap_or(""), m["pid"]),
            heartbeat,
            m["policies"],
            holds.join(", ")
        );
    }
    if let Some(n) = c["events_waiting"].as_u64().filter(|n| *n > 0) {
        println!("  {n} events or run requests waiting in etcd for their policy's owner");
    }
    for m in c["mismatches"].as_array().into_iter().flatten() {
        let list = |k: &str| {
            m[k].as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if m["differs"] == true {
            println!(
                "  policy {}: defined differently on {}",
                m["policy"].as_str().unwrap_or(""),
                list("defined_on")
            );
        }
        if !list("missing_on").is_empty() {
            println!(
                "  policy {}: not defined on {} (runs only on {})",
                m["policy"].as_str().unwrap_or(""),
                list("missing_on"),
                list("defined_on")
            );
        }
    }
}
