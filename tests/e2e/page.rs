//! The status page at `GET /`, loaded in headless Chromium (Debian's `chromium` package, which
//! scripts/test.sh installs): every policy has its row with its outcome, and a screenshot is
//! saved for a person to look at.

use crate::support::images::{self, Format, Pusher};
use crate::support::registry::{RegistryOpts, TestRegistry};
use crate::support::{daemon_get, free_port, wait_for, Daemon, Ferry};

/// Headless Chromium with the flags this machine's closed network needs (no background
/// fetches, no first-run work), in its own profile folder.
fn chromium(profile: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(chromium_bin().expect("checked by the test"))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
        ])
        .args([
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium")
}

fn chromium_bin() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {b}"))
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

#[tokio::test]
async fn the_status_page_shows_every_policy_in_a_browser() {
    if chromium_bin().is_none() {
        return crate::support::disk::skipped(
            "no Chromium: apt-get install -y chromium (scripts/test.sh does, as root)",
        );
    }
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let locked = TestRegistry::start_with(RegistryOpts {
        basic: Some(("u".into(), "p".into())),
        ..Default::default()
    });
    let key = crate::support::cosign::Signer::new();
    let mut pusher = Pusher::new(&src.url);
    let img = |seed: u64| {
        images::image(
            Format::Oci,
            &[&images::layer(seed, 20_000)],
            "amd64",
            None,
            "page",
        )
    };
    pusher.image("app", "v1", &img(81)).await;
    // v2 is signed: the gated policy copies it, and the page says by which key.
    let v2 = img(82);
    let sig = key.legacy(&v2.digest);
    pusher.image("app", "v2", &v2).await;
    pusher
        .image("app", &images::signature_tag(&v2.digest), &sig)
        .await;
    let port = free_port();
    let regs = format!(
        "[registries.src]\nurl = \"{}\"\n[registries.dst]\nurl = \"{}\"\n[registries.locked]\nurl = \"{}\"\n",
        src.url, dst.url, locked.url
    );
    let policy = |name: &str, target: &str, extra: &str| {
        format!("[[policy]]\nname = \"{name}\"\nsource = \"src\"\ntargets = [\"{target}\"]\nrepositories = [\"app\"]\ninterval = \"1h\"\n{extra}")
    };
    let f = Ferry::new(
        &regs,
        "1MiB",
        &[
            ("a.toml", &policy("mirror", "dst", "")),
            ("b.toml", &policy("locked-out", "locked", "")),
            (
                "c.toml",
                &policy(
                    "signed-only",
                    "dst",
                    "target_repository = \"s/{name}\"\n[policy.require]\nsigned_by = [\"release.pub\"]\n",
                ),
            ),
        ],
    );
    std::fs::write(f.path().join("policies/release.pub"), &key.pem).unwrap();
    f.daemon_lines(&format!("listen = \"127.0.0.1:{port}\"\n"));
    let daemon = Daemon::start(&f, port, "daemon.log");
    assert!(daemon.ready().await, "{}", daemon.log());
    let all_ran = || async {
        daemon_get(port, "/status")
            .await
            .is_some_and(|(_, b)| b.matches("\"outcome\"").count() >= 3)
    };
    assert!(wait_for(30, all_ran).await, "{}", daemon.log());

    let (code, html) = daemon_get(port, "/").await.unwrap();
    assert_eq!(code, 200);
    assert!(
        html.contains("http-equiv=refresh")
            && !html.contains("<script")
            && !html.contains("src=\"http"),
        "self-contained"
    );

    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    let dom = chromium(profile.path(), &["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    for (policy, outcome) in [
        ("mirror", "ok"),
        ("locked-out", "failed"),
        ("signed-only", "ok"),
    ] {
        let row = format!("<tr data-policy=\"{policy}\" data-outcome=\"{outcome}\">");
        assert!(
            dom.contains(&row),
            "no row `{row}` in the DOM Chromium built:\n{dom}"
        );
    }
    assert!(
        dom.contains("app:v1 → dst: no signature verifies under signed_by: none found"),
        "the held tag and why:\n{dom}"
    );
    let verified = format!(
        "<td class=\"verified\"><ul><li>app:v2 → dst: key {} (signature {})</li></ul></td>",
        key.fingerprint, sig.digest
    );
    assert!(
        dom.contains(&verified),
        "what verified the copied tag:\n{dom}"
    );
    assert!(
        dom.contains("none are configured"),
        "the failure's reason:\n{dom}"
    );

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium(
        profile.path(),
        &[
            "--window-size=1400,900",
            &format!("--screenshot={}", shot.display()),
            &url,
        ],
    );
    let png = std::fs::read(&shot)
        .unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("status page screenshot: {}", shot.display());
    assert_eq!(daemon.stop().0, 0);
}
