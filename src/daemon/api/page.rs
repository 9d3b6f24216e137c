//! `GET /`: the status page. One HTML document rendered from the `/status` document, with its
//! styles inline and no script or external asset, so it works air-gapped and behind any
//! proxy; it refreshes itself every 10 seconds.

use std::fmt::Write;

use serde_json::Value;

use crate::state::now_ms;

const REFRESH_SECS: u32 = 10;
const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.6em}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #ddd;vertical-align:top}\
th{background:#f4f4f4}.ok{color:#176b2c}.failed{color:#b00020;font-weight:bold}.interrupted,.held{color:#9a6700}\
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

fn list(items: Option<&Vec<Value>>, max: usize) -> String {
    let items: Vec<&str> = items
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
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

pub fn render(doc: &Value) -> String {
    let now = now_ms();
    let mut h = String::with_capacity(16 << 10);
    let no_policies = serde_json::Map::new();
    let policies = doc["policies"].as_object().unwrap_or(&no_policies);
    // The store keeps the latest run of each policy (full or targeted): that is the row.
    let runs = doc["runs"].as_array().map_or(&[][..], Vec::as_slice);
    let _ = write!(
        h,
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta http-equiv=refresh content={REFRESH_SECS}>\
         <title>ferry status</title><style>{STYLE}</style></head><body><h1>ferry: {} polic{}</h1>\
         <p class=muted>As of {} UTC; this page refreshes every {REFRESH_SECS} s. JSON: <a href=/status>/status</a>, metrics: <a href=/metrics>/metrics</a>.</p>",
        policies.len(),
        if policies.len() == 1 { "y" } else { "ies" },
        chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now as i64).unwrap_or_default().format("%Y-%m-%d %H:%M:%S"),
    );
    if let Some(e) = doc["error"].as_str() {
        let _ = write!(h, "<p class=failed>State store: {}</p>", esc(e));
    }
    h.push_str(
        "<h2>Policies</h2><table id=policies><tr><th>Policy</th><th>Trigger</th><th>Last run</th><th>Outcome</th>\
         <th>Copied</th><th>In sync</th><th>Held</th><th>Failures</th><th>Next run</th><th>Held tags</th><th>Last errors</th></tr>",
    );
    for (name, p) in policies {
        let last = runs.iter().find(|r| r["policy"] == name.as_str());
        let outcome = if p["running"].as_bool() == Some(true) {
            "running"
        } else {
            last.and_then(|r| r["outcome"].as_str())
                .unwrap_or("none yet")
        };
        let count = |k: &str| {
            last.and_then(|r| r["counts"][k].as_u64())
                .map_or_else(String::new, |n| n.to_string())
        };
        let _ = write!(
            h,
            "<tr data-policy=\"{n}\" data-outcome=\"{o}\"><td><b>{n}</b></td><td>{t}</td><td>{l}</td><td class=\"{o}\">{o}</td>\
             <td>{c}</td><td>{s}</td><td class=held>{hd}</td><td>{f}</td><td>{next}</td><td>{ht}</td><td>{er}</td></tr>",
            n = esc(name),
            t = esc(p["trigger"].as_str().unwrap_or("")),
            l = last.and_then(|r| r["ended_ms"].as_u64()).map_or_else(|| "never".to_owned(), |ms| relative(ms, now)),
            o = esc(outcome),
            c = count("tags_copied"),
            s = count("tags_in_sync"),
            hd = count("held"),
            f = count("failures"),
            next = p["next_run_ms"].as_u64().map_or_else(|| "on request".to_owned(), |ms| relative(ms, now)),
            ht = list(last.and_then(|r| r["held"].as_array()), 5),
            er = list(last.and_then(|r| r["errors"].as_array()), 3),
        );
    }
    h.push_str("</table>");

    let uploads = doc["uploads_in_flight"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let _ = write!(h, "<h2>Uploads in flight ({})</h2>", uploads.len());
    if !uploads.is_empty() {
        h.push_str("<table id=uploads><tr><th>Target</th><th>Repository</th><th>Blob</th><th>Done</th></tr>");
        for u in uploads.iter().take(100) {
            let (off, size) = (
                u["offset"].as_u64().unwrap_or(0),
                u["size"].as_u64().unwrap_or(0).max(1),
            );
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}%</td></tr>",
                esc(u["target"].as_str().unwrap_or("")),
                esc(u["repository"].as_str().unwrap_or("")),
                esc(u["digest"].as_str().unwrap_or("").get(..19).unwrap_or("")),
                off * 100 / size
            );
        }
        h.push_str("</table>");
    }

    let pending = doc["pending_events"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let _ = write!(
        h,
        "<h2>Events pending ({})</h2>",
        doc["pending_events_total"].as_u64().unwrap_or(0)
    );
    if !pending.is_empty() {
        h.push_str("<table id=events><tr><th>Policy</th><th>Event</th><th>Accepted</th><th>Attempts</th></tr>");
        for e in pending {
            let what = format!(
                "{} {}{}{}",
                e["action"].as_str().unwrap_or(""),
                e["repository"].as_str().unwrap_or(""),
                e["tag"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .map(|t| format!(":{t}"))
                    .unwrap_or_default(),
                if e["through_etcd"] == true {
                    " (through etcd)"
                } else {
                    ""
                }
            );
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(e["policy"].as_str().unwrap_or("")),
                esc(&what),
                e["accepted_ms"]
                    .as_u64()
                    .map_or_else(String::new, |ms| relative(ms, now)),
                e["attempts"].as_u64().unwrap_or(0)
            );
        }
        h.push_str("</table>");
    }

    h.push_str(
        "<h2>Registries</h2><table id=registries><tr><th>Registry</th><th>Requests at once (limit / max)</th><th>Rate limit</th></tr>",
    );
    for c in doc["concurrency"].as_array().into_iter().flatten() {
        let name = c["registry"].as_str().unwrap_or("");
        let rate = doc["rate_limits"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["registry"] == name)
            .map_or_else(String::new, |r| {
                format!(
                    "{} of {} left, paused {:.0} s in all",
                    r["remaining"],
                    r["limit"],
                    r["paused_seconds"].as_f64().unwrap_or(0.0)
                )
            });
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{} / {}</td><td>{}</td></tr>",
            esc(name),
            c["limit"],
            c["max"],
            esc(&rate)
        );
    }
    h.push_str("</table>");
    cluster(&mut h, &doc["cluster"]);
    h.push_str("</body></html>\n");
    h
}

/// Members, heartbeats and holdings; policies the members do not agree on.
fn cluster(h: &mut String, c: &Value) {
    if c.is_null() {
        return;
    }
    if c["joined"] != true {
        h.push_str("<h2>Cluster</h2><p class=failed>This member has not joined the cluster (etcd unreachable?).</p>");
        return;
    }
    let _ = write!(
        h,
        "<h2>Cluster</h2><p class=muted>This member: {}; etcd {}</p><table id=cluster><tr><th>Member</th><th>Host / pid</th><th>Last heartbeat</th><th>Holds</th></tr>",
        esc(c["member"].as_str().unwrap_or("")),
        esc(c["etcd"].as_str().unwrap_or(""))
    );
    for m in c["members"].as_array().into_iter().flatten() {
        let beat = m["heartbeat_age_seconds"]
            .as_i64()
            .map_or("?".to_owned(), |s| format!("{s} s ago"));
        let _ = write!(
            h,
            "<tr data-member=\"{0}\"><td>{0}</td><td>{1} / {2}</td><td>{beat}</td><td>{3}</td></tr>",
            esc(m["name"].as_str().unwrap_or("")),
            esc(m["host"].as_str().unwrap_or("")),
            m["pid"],
            list(m["holds"].as_array(), 50)
        );
    }
    h.push_str("</table>");
    for m in c["mismatches"].as_array().into_iter().flatten() {
        let names = |k: &str| {
            m[k].as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let how = if m["differs"] == true {
            "defined differently"
        } else {
            "not defined everywhere"
        };
        let _ = write!(
            h,
            "<p class=held>Policy {}: {how} (defined on {}; missing on {}).</p>",
            esc(m["policy"].as_str().unwrap_or("")),
            esc(&names("defined_on")),
            esc(&names("missing_on"))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_errors_are_escaped() {
        let doc = serde_json::json!({
            "policies": { "p<1>": { "trigger": "interval 1m", "running": false, "next_run_ms": null } },
            "runs": [{ "policy": "p<1>", "outcome": "failed", "ended_ms": 0, "counts": { "failures": 1 },
                       "errors": ["<script>alert(1)</script>"], "held": [] }],
        });
        let page = render(&doc);
        assert!(
            page.contains("data-policy=\"p&lt;1&gt;\"") && page.contains("&lt;script&gt;"),
            "{page}"
        );
        assert!(!page.contains("<script>"));
    }
}
