//! `[[notify]]`: after a run that failed, held tags back (or succeeded, when asked), ferry
//! POSTs a CloudEvents document, retried when the receiver is down for a moment.

use crate::support::images::{self, Format, Pusher};
use crate::support::receiver::Receiver;
use crate::support::registry::{RegistryOpts, TestRegistry};
use crate::support::Ferry;

const TOKEN: &str = "notify-token-0123456789";

#[tokio::test]
async fn failed_held_and_succeeded_runs_are_posted_as_cloudevents_and_retried() {
    let src = TestRegistry::start();
    let dst = TestRegistry::start();
    // A target that wants credentials none are configured for: a permanent failure, at once.
    let locked = TestRegistry::start_with(RegistryOpts {
        basic: Some(("u".into(), "p".into())),
        ..Default::default()
    });
    let img = images::image(
        Format::Oci,
        &[&images::layer(61, 20_000)],
        "amd64",
        None,
        "n",
    );
    Pusher::new(&src.url).image("app", "v1", &img).await;
    let hook = Receiver::start(1); // down for the first request
    let regs = format!(
        "[registries.src]\nurl = \"{}\"\n[registries.dst]\nurl = \"{}\"\n[registries.locked]\nurl = \"{}\"\n\n\
         [[notify]]\nurl = \"{}\"\non = [\"failed\", \"held\"]\nbearer_token_env = \"NOTIFY_TOKEN\"\nheaders = {{ X-Team = \"ops\" }}\nheaders_file = {{ X-Api-Key = \"api-key\" }}\n\n\
         [[notify]]\nurl_env = \"CHAT_URL\"\non = [\"succeeded\"]\n\n\
         [[notify]]\nurl = \"http://127.0.0.1:{}/down\"\non = [\"failed\"]\n",
        src.url,
        dst.url,
        locked.url,
        hook.url("/hook"),
        crate::support::free_port() // nothing listens: an endpoint that is down
    );
    let policy = |name: &str, target: &str, extra: &str| {
        format!("[[policy]]\nname = \"{name}\"\nsource = \"src\"\ntargets = [\"{target}\"]\nrepositories = [\"app\"]\n{extra}")
    };
    let mut f = Ferry::new(
        &regs,
        "1MiB",
        &[
            ("a.toml", &policy("broken", "locked", "")),
            (
                "b.toml",
                &policy(
                    "gated",
                    "dst",
                    "target_repository = \"gated/{name}\"\n[policy.require]\nsigned_by = [\"release.pub\"]\n",
                ),
            ),
            ("c.toml", &policy("fine", "dst", "")),
        ],
    );
    f.env.push(("NOTIFY_TOKEN".into(), TOKEN.into()));
    // A chat webhook's URL is its secret; a header value can live in a file.
    f.env.push(("CHAT_URL".into(), hook.url("/chat")));
    std::fs::write(f.path().join("api-key"), "key-0123456789\n").unwrap();
    std::fs::write(
        f.path().join("policies/release.pub"),
        crate::support::cosign::Signer::new().pem,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let run = f.run(&["sync"]);
    run.assert_code(1);
    // The endpoint that is down costs the exit a bounded wait, and says so; nothing else.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(
        run.stderr
            .contains("notifications still being retried at exit; given up"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.summary("copied"),
        1,
        "replication unaffected: {}",
        run.all()
    );
    assert!(!run.all().contains(TOKEN), "the token was printed");

    let got = hook.received();
    let on = |path: &str, kind: &str| {
        got.iter()
            .filter(|r| r.path == path && !r.refused && r.body["type"] == kind)
            .cloned()
            .collect::<Vec<_>>()
    };
    let failed = on("/hook", "dev.ferry.run.failed");
    assert_eq!(failed.len(), 1, "{got:#?}");
    let e = &failed[0];
    assert_eq!(e.body["specversion"], "1.0");
    assert_eq!(e.body["subject"], "broken");
    assert_eq!(e.body["data"]["outcome"], "failed");
    assert!(
        e.body["text"]
            .as_str()
            .unwrap()
            .starts_with("ferry: policy `broken` failed: 1 failure(s); first:"),
        "{}",
        e.body["text"]
    );
    assert!(
        e.body["id"]
            .as_str()
            .is_some_and(|i| i.starts_with("broken-"))
            && e.body["time"].is_string()
    );
    assert_eq!(
        e.headers["authorization"],
        format!("Bearer {TOKEN}").as_str()
    );
    assert_eq!(e.headers["x-team"], "ops");
    assert_eq!(e.headers["x-api-key"], "key-0123456789");
    assert_eq!(e.headers["content-type"], "application/cloudevents+json");
    let held = on("/hook", "dev.ferry.run.held");
    assert_eq!(
        (held.len(), held[0].body["subject"].as_str()),
        (1, Some("gated")),
        "{got:#?}"
    );
    assert!(
        held[0].body["text"]
            .as_str()
            .unwrap()
            .contains("held back 1 tag(s); first:"),
        "{}",
        held[0].body["text"]
    );
    // The receiver refused the first delivery: it came again.
    assert_eq!(got.iter().filter(|r| r.refused).count(), 1);
    assert_eq!(
        got.iter().filter(|r| r.path == "/hook").count(),
        3,
        "two notifications, one of them twice: {got:#?}"
    );
    // `succeeded` goes only where it was asked for; nothing `fine` did is a failure.
    let ok: Vec<_> = on("/chat", "dev.ferry.run.succeeded")
        .iter()
        .map(|r| r.body["subject"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        ok.contains(&"fine".to_owned()) && !ok.contains(&"broken".to_owned()),
        "{ok:?}"
    );
    assert!(!got
        .iter()
        .any(|r| r.path == "/hook" && r.body["subject"] == "fine"));

    // A bad [[notify]] is a config error with its line.
    let bad = Ferry::new(
        &format!("{regs}\n[[notify]]\nurl = \"ftp://x\"\non = [\"exploded\"]\n"),
        "1MiB",
        &[("c.toml", &policy("fine", "dst", ""))],
    );
    let out = bad.run(&["validate"]);
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("notify[3].url: `ftp://x` is not an http:// or https:// URL"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("notify[3].on: `exploded` is not one of failed, held, conflict, succeeded"),
        "{}",
        out.stderr
    );
}
