//! Scoped daemon tokens: a webhook token opens only its registry's webhook path, the read
//! token only reads, the admin token everything; no token or a wrong one is 401, a right
//! one for another scope 403. The status page takes the read token through Basic auth, as
//! a browser sends it.

use crate::support::registry::TestRegistry;
use crate::support::{free_port, http_client, Daemon, Ferry};

const ADMIN: &str = "admin-token-0123456789abcdef";
const READ: &str = "read-token-0123456789abcdef";
const HOOK: &str = "hook-token-src-0123456789ab";
const OTHER_HOOK: &str = "hook-token-other-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_opens_its_own_routes_only() {
    let (src, other, dst) = (
        TestRegistry::start(),
        TestRegistry::start(),
        TestRegistry::start(),
    );
    let port = free_port();
    let f = Ferry::new(
        &format!(
            "[registries.src]\nurl = \"{}\"\nwebhook_token_file = \"hook\"\n\n[registries.other]\nurl = \"{}\"\nwebhook_token_file = \"other-hook\"\n\n[registries.dst]\nurl = \"{}\"\n",
            src.url, other.url, dst.url
        ),
        "1MiB",
        &[("p.toml", "[[policy]]\nname = \"p\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app\"]\nschedule = \"0 0 1 1 *\"\nevents = true\n")],
    );
    for (file, token) in [
        ("admin", ADMIN),
        ("read", READ),
        ("hook", HOOK),
        ("other-hook", OTHER_HOOK),
    ] {
        std::fs::write(f.path().join(file), format!("{token}\n")).unwrap();
    }
    f.daemon_lines(&format!(
        "listen = \"127.0.0.1:{port}\"\napi_token_file = \"admin\"\nread_token_file = \"read\"\n"
    ));
    let v = f.run(&["validate"]);
    v.assert_code(0);
    assert!(
        !v.all().contains("authenticate with the admin api_token"),
        "{}",
        v.all()
    );
    let d = Daemon::start(&f, port, "daemon.log");
    assert!(d.ready().await, "{}", d.log());

    let http = http_client().build().unwrap();
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let call = |method: &str, path: &str, auth: Option<&str>| {
        let mut r = http.request(method.parse().unwrap(), url(path));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        if method == "POST" {
            let body = if path.starts_with("/v1/events") {
                r#"{"events":[]}"#
            } else {
                r#"{"policy":"p"}"#
            };
            r = r
                .header(
                    "content-type",
                    if path.starts_with("/v1/events") {
                        "application/vnd.docker.distribution.events.v1+json"
                    } else {
                        "application/json"
                    },
                )
                .body(body);
        }
        async move { r.send().await.unwrap() }
    };
    let bearer = |t: &str| format!("Bearer {t}");
    let basic = |t: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("anyone:{t}"))
        )
    };

    assert_eq!(call("GET", "/healthz", None).await.status(), 200);
    let anon = call("GET", "/status", None).await;
    assert_eq!(anon.status(), 401);
    assert!(
        anon.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic"),
        "a browser asks"
    );
    for path in ["/status", "/", "/metrics", "/v1/runs/1"] {
        assert_ne!(
            call("GET", path, Some(&bearer(READ))).await.status(),
            401,
            "{path}"
        );
        assert_ne!(
            call("GET", path, Some(&basic(READ))).await.status(),
            401,
            "{path} with Basic"
        );
        assert_ne!(
            call("GET", path, Some(&bearer(ADMIN))).await.status(),
            403,
            "{path} as admin"
        );
        assert_eq!(
            call("GET", path, Some(&bearer(HOOK))).await.status(),
            403,
            "{path} with a webhook token"
        );
        assert_eq!(
            call("GET", path, Some(&bearer("wrong-token-0123456789abcdef")))
                .await
                .status(),
            401,
            "{path}"
        );
    }
    // Runs (and force_delete) are the admin's.
    for t in [READ, HOOK] {
        assert_eq!(
            call("POST", "/v1/runs", Some(&bearer(t))).await.status(),
            403
        );
    }
    assert_eq!(call("POST", "/v1/runs", None).await.status(), 401);
    assert_eq!(
        call("POST", "/v1/runs", Some(&bearer(ADMIN)))
            .await
            .status(),
        202
    );
    // A webhook token opens its own registry's path only.
    let ok = call("POST", "/v1/events/distribution/src", Some(&bearer(HOOK)))
        .await
        .status();
    assert!(ok.is_success(), "{ok}");
    assert_eq!(
        call(
            "POST",
            "/v1/events/distribution/src",
            Some(&bearer(OTHER_HOOK))
        )
        .await
        .status(),
        403
    );
    assert_eq!(
        call("POST", "/v1/events/harbor/other", Some(&bearer(HOOK)))
            .await
            .status(),
        403
    );
    assert_eq!(
        call("POST", "/v1/events/distribution/src", Some(&bearer(READ)))
            .await
            .status(),
        403
    );
    // Refused webhooks are counted and logged (once a minute per registry), with the peer.
    let metrics = call("GET", "/metrics", Some(&bearer(READ)))
        .await
        .text()
        .await
        .unwrap();
    let unauthorized: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("ferry_events_received_total") && l.contains("outcome=\"unauthorized\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(unauthorized >= 3.0, "{metrics}");
    let log = d.log();
    assert!(
        log.contains("webhook refused") && log.contains("127.0.0.1"),
        "{log}"
    );
    assert!(
        !d.log().contains(HOOK) && !d.log().contains(ADMIN) && !d.log().contains(READ),
        "no token logged"
    );
    assert_eq!(d.stop().0, 0);
}

#[test]
fn one_token_for_everything_still_works_and_validate_says_how_to_split_it() {
    let f = Ferry::new(
        "[registries.src]\nurl = \"http://127.0.0.1:1\"\n[registries.dst]\nurl = \"http://127.0.0.1:2\"\n",
        "1MiB",
        &[("p.toml", "[[policy]]\nname = \"p\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app\"]\nevents = true\n")],
    );
    std::fs::write(f.path().join("admin"), ADMIN).unwrap();
    f.daemon_lines("api_token_file = \"admin\"\n");
    let run = f.run(&["validate"]);
    run.assert_code(0);
    assert!(
        run.all()
            .contains("webhooks from `src` authenticate with the admin api_token")
            && run.all().contains("[registries.src] webhook_token_file"),
        "{}",
        run.all()
    );
}
