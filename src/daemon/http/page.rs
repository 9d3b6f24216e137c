//! `GET /`: the status page. One HTML document rendered from the `/status` document, with its
//! styles inline and no script or external asset, so it works air-gapped and behind any
//! proxy; it refreshes itself every 10 seconds.

use std::fmt::Write;

use std::collections::BTreeMap;

use crate::api::{ClusterStatus, StatusDoc};
use crate::state::now_ms;

const REFRESH_SECS: u32 = 10;
const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.6em}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #ddd;vertical-align:top}\
th{background:#f4f4f4}.ok{color:#176b2c}.failed{color:#b00020;font-weight:bold}.interrupted,.held,.conflict{color:#9a6700}\
.muted{color:#777}code{font-size:12px}ul{margin:0;padding-left:1.1em}";

/// Text made safe for HTML element content and attribute values.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `12 s ago`, `in 3 min`: relative to now, in the largest unit that fits.
fn relative(ms: u64, now: u64) -> String {
    let (d, past) = if ms <= now {
        (now - ms, true)
    } else {
        (ms - now, false)
    };
    let s = d / 1000;
    let amount = match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    };
    if past {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

fn list(items: &[String], max: usize) -> String {
    if items.is_empty() {
        return String::new();
    }
    let mut out = String::from("<ul>");
    for i in items.iter().take(max) {
        let _ = write!(out, "<li>{}</li>", esc(i));
    }
    if items.len() > max {
        let _ = write!(out, "<li class=muted>and {} more</li>", items.len() - max);
    }
    out + "</ul>"
}

/// How far an upload is, in percent; a size of 0 or an offset past it reads as done.
fn percent(offset: u64, size: u64) -> u64 {
    (u128::from(offset) * 100 / u128::from(size.max(1))).min(100) as u64
}

pub fn render(doc: &StatusDoc) -> String {
    let now = now_ms();
    let mut h = String::with_capacity(16 << 10);
    let no_policies = BTreeMap::new();
    let policies = doc.policies.as_ref().unwrap_or(&no_policies);
    // The store keeps the latest run of each policy (full or targeted): that is the row.
    let _ = write!(
        h,
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta http-equiv=refresh content={REFRESH_SECS}>\
         <title>ferry status</title><style>{STYLE}</style></head><body><h1>ferry: {} polic{}</h1>\
         <p class=muted>As of {} UTC; this page refreshes every {REFRESH_SECS} s. JSON: <a href=/status>/status</a>, metrics: <a href=/metrics>/metrics</a>.</p>",
        policies.len(),
        if policies.len() == 1 { "y" } else { "ies" },
        chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now as i64).unwrap_or_default().format("%Y-%m-%d %H:%M:%S"),
    );
    if let Some(e) = &doc.error {
        let _ = write!(h, "<p class=failed>State store: {}</p>", esc(e));
    }
    h.push_str(
        "<h2>Policies</h2><table id=policies><tr><th>Policy</th><th>Trigger</th><th>Last run</th><th>Outcome</th>\
         <th>Copied</th><th>In sync</th><th>Held</th><th>Conflicts</th><th>Failures</th><th>Next run</th><th>Held tags</th><th>Conflicting tags</th><th>Verified tags</th><th>Last errors</th></tr>",
    );
    let no_list: Vec<String> = Vec::new();
    for (name, p) in policies {
        let last = doc.last_run(name);
        let outcome = if p.running {
            "running"
        } else {
            last.map_or("none yet", |r| r.outcome.as_str())
        };
        // A run that copied everything else but left conflicts is not green: someone must look.
        let class = match last {
            Some(r) if outcome == "ok" && r.counts.conflicts > 0 => "conflict",
            _ => outcome,
        };
        let conflicts: Vec<String> = last.map_or_else(Vec::new, |r| {
            r.findings
                .conflicts
                .iter()
                .map(ToString::to_string)
                .collect()
        });
        let count = |f: fn(&crate::state::Counts) -> u64| {
            last.map_or_else(String::new, |r| f(&r.counts).to_string())
        };
        let _ = write!(
            h,
            "<tr data-policy=\"{n}\" data-outcome=\"{o}\"><td><b>{n}</b></td><td>{t}</td><td>{l}</td><td class=\"{k}\">{o}</td>\
             <td>{c}</td><td>{s}</td><td class=held>{hd}</td><td class=conflict>{cf}</td><td>{f}</td><td>{next}</td><td>{ht}</td><td class=conflict>{ct}</td><td class=verified>{vt}</td><td>{er}</td></tr>",
            k = esc(class),
            n = esc(name),
            t = esc(&p.trigger),
            l = last.map_or_else(|| "never".to_owned(), |r| relative(r.ended_ms, now)),
            o = esc(outcome),
            c = count(|c| c.tags_copied),
            s = count(|c| c.tags_in_sync),
            hd = count(|c| c.held),
            cf = count(|c| c.conflicts),
            f = count(|c| c.failures),
            next = p.next_run_ms.map_or_else(|| "on request".to_owned(), |ms| relative(ms, now)),
            ht = list(last.map_or(&no_list, |r| &r.findings.held), 5),
            ct = list(&conflicts, 5),
            vt = list(last.map_or(&no_list, |r| &r.findings.verified), 5),
            er = list(last.map_or(&no_list, |r| &r.errors), 3),
        );
    }
    h.push_str("</table>");

    let uploads = &doc.uploads_in_flight;
    let _ = write!(h, "<h2>Uploads in flight ({})</h2>", uploads.len());
    if !uploads.is_empty() {
        h.push_str("<table id=uploads><tr><th>Target</th><th>Repository</th><th>Blob</th><th>Done</th></tr>");
        for u in uploads.iter().take(100) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}%</td></tr>",
                esc(&u.target),
                esc(&u.repository),
                esc(u.digest.get(..19).unwrap_or("")),
                percent(u.offset, u.size)
            );
        }
        h.push_str("</table>");
    }

    let _ = write!(h, "<h2>Events pending ({})</h2>", doc.pending_events_total);
    if !doc.pending_events.is_empty() {
        h.push_str("<table id=events><tr><th>Policy</th><th>Event</th><th>Accepted</th><th>Attempts</th></tr>");
        for e in &doc.pending_events {
            let what = format!(
                "{} {}{}{}",
                e.key.action,
                e.key.repository_str(),
                e.key
                    .tag
                    .as_ref()
                    .map(|t| format!(":{t}"))
                    .unwrap_or_default(),
                if e.through_etcd {
                    " (through etcd)"
                } else {
                    ""
                }
            );
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&e.key.policy),
                esc(&what),
                relative(e.accepted_ms, now),
                e.attempts
            );
        }
        h.push_str("</table>");
    }

    h.push_str(
        "<h2>Registries</h2><table id=registries><tr><th>Registry</th><th>Requests at once (limit / max)</th><th>Rate limit</th></tr>",
    );
    let rates = doc.rate_limits.as_deref().unwrap_or_default();
    for c in doc.concurrency.as_deref().unwrap_or_default() {
        let rate = rates
            .iter()
            .find(|r| r.registry == c.registry)
            .map_or_else(String::new, |r| {
                let n = |v: Option<u64>| v.map_or("null".to_owned(), |v| v.to_string());
                format!(
                    "{} of {} left, paused {:.0} s in all",
                    n(r.remaining),
                    n(r.limit),
                    r.paused_seconds
                )
            });
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{} / {}</td><td>{}</td></tr>",
            esc(&c.registry),
            c.limit,
            c.max,
            esc(&rate)
        );
    }
    h.push_str("</table>");
    if let Some(c) = &doc.cluster {
        cluster(&mut h, c);
    }
    h.push_str("</body></html>\n");
    h
}

/// Members, heartbeats and holdings; policies the members do not agree on.
fn cluster(h: &mut String, c: &ClusterStatus) {
    if !c.joined {
        h.push_str("<h2>Cluster</h2><p class=failed>This member has not joined the cluster (etcd unreachable?).</p>");
        return;
    }
    let _ = write!(
        h,
        "<h2>Cluster</h2><p class=muted>This member: {}; etcd {}</p><table id=cluster><tr><th>Member</th><th>Host / pid</th><th>Last heartbeat</th><th>Holds</th></tr>",
        esc(&c.member),
        esc(&c.etcd)
    );
    for m in &c.members {
        let beat = m
            .heartbeat_age_seconds
            .map_or("?".to_owned(), |s| format!("{s} s ago"));
        let _ = write!(
            h,
            "<tr data-member=\"{0}\"><td>{0}</td><td>{1} / {2}</td><td>{beat}</td><td>{3}</td></tr>",
            esc(&m.name),
            esc(&m.host),
            m.pid,
            list(&m.holds, 50)
        );
    }
    h.push_str("</table>");
    for m in &c.mismatches {
        let how = if m.differs {
            "defined differently"
        } else {
            "not defined everywhere"
        };
        let _ = write!(
            h,
            "<p class=held>Policy {}: {how} (defined on {}; missing on {}).</p>",
            esc(&m.policy),
            esc(&m.defined_on.join(", ")),
            esc(&m.missing_on.join(", "))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PolicyState;
    use crate::state::{Counts, Outcome, RunRecord};

    #[test]
    fn names_and_errors_are_escaped() {
        let policy = PolicyState {
            trigger: "interval 1m".into(),
            ..Default::default()
        };
        let mut run = RunRecord::new(
            "p<1>",
            0,
            Outcome::Failed,
            [(
                "t".to_owned(),
                Counts {
                    failures: 1,
                    ..Default::default()
                },
            )]
            .into(),
            vec!["<script>alert(1)</script>".into()],
            Default::default(),
        );
        run.ended_ms = 0;
        let doc = StatusDoc {
            policies: Some([("p<1>".to_owned(), policy)].into()),
            runs: vec![run],
            ..Default::default()
        };
        let page = render(&doc);
        assert!(
            page.contains("data-policy=\"p&lt;1&gt;\"") && page.contains("&lt;script&gt;"),
            "{page}"
        );
        assert!(!page.contains("<script>"));
    }

    #[test]
    fn a_run_with_conflicts_is_amber_and_lists_them() {
        let conflict = crate::state::Conflict {
            target: "prod".into(),
            repository: "app".into(),
            tag: "v1".into(),
            source_digest: "sha256:aa".into(),
            target_digest: Some("sha256:bb".into()),
        };
        let counts = Counts {
            conflicts: 1,
            ..Default::default()
        };
        let findings = crate::state::Findings {
            conflicts: vec![conflict],
            ..Default::default()
        };
        let run = RunRecord::new(
            "p",
            0,
            Outcome::Ok,
            [("prod".into(), counts)].into(),
            vec![],
            findings,
        );
        let doc = StatusDoc {
            policies: Some([("p".to_owned(), PolicyState::default())].into()),
            runs: vec![run],
            ..Default::default()
        };
        let page = render(&doc);
        assert!(page.contains("<td class=\"conflict\">ok</td>"), "{page}");
        assert!(
            page.contains("prod/app:v1 is sha256:bb there, sha256:aa on the source"),
            "{page}"
        );
    }

    #[test]
    fn upload_progress_never_overflows() {
        assert_eq!(percent(u64::MAX, u64::MAX), 100);
        assert_eq!(percent(50, 0), 100);
        assert_eq!(percent(1, 4), 25);
    }
}
