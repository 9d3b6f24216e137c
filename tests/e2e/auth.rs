//! Registry access: htpasswd Basic, the bearer-token flow, TLS with a private CA, and clear
//! failures that never print a secret.

use std::sync::atomic::Ordering;

use crate::support::images::{push_corpus, CorpusSpec};
use crate::support::registry::{RegistryOpts, TestCa, TestRegistry};
use crate::support::token::TokenServer;
use crate::support::{assert_same_image, Auth, Ferry, Reader};

const USER: &str = "robot";
const PASSWORD: &str = "s3cret-Pa55-for-ferry";
const POLICY: &str =
    "[[policy]]\nname = \"m\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app-*\"]\n";

fn spec() -> CorpusSpec {
    CorpusSpec {
        repos: 2,
        tags: 1,
        index_every: 2,
        sign: false,
        ..CorpusSpec::default()
    }
}

fn config(src: &str, dst: &str, extra: &str) -> String {
    format!("[registries.src]\nurl = \"{src}\"\n\n[registries.dst]\nurl = \"{dst}\"\nusername = \"{USER}\"\npassword_env = \"FERRY_TEST_PASSWORD\"\n{extra}")
}

fn ferry(cfg: &str, password: &str) -> Ferry {
    let mut f = Ferry::new(cfg, "64KiB", &[("m.toml", POLICY)]);
    f.env.push(("FERRY_TEST_PASSWORD".into(), password.into()));
    f
}

async fn assert_copied(src: &TestRegistry, dst: &Reader) {
    let s = Reader::new(&src.url);
    for repo in ["app-000", "app-001"] {
        for tag in ["1.0.0", "latest"] {
            assert_same_image(&s, dst, repo, repo, tag).await;
        }
    }
}

fn assert_no_secret(run: &crate::support::Run, secret: &str) {
    assert!(
        !run.all().contains(secret),
        "secret printed:\n{}",
        run.all()
    );
}

#[tokio::test]
async fn htpasswd_basic_auth() {
    let src = TestRegistry::start();
    let dst = TestRegistry::start_with(RegistryOpts {
        basic: Some((USER.into(), PASSWORD.into())),
        ..Default::default()
    });
    push_corpus(&src.url, &spec()).await;
    let f = ferry(&config(&src.url, &dst.url, ""), PASSWORD);
    let run = f.run(&["sync", "-vv"]);
    run.assert_code(0);
    assert_no_secret(&run, PASSWORD);
    assert_copied(
        &src,
        &Reader::with(&dst.url, Auth::Basic(USER.into(), PASSWORD.into()), None),
    )
    .await;
}

#[tokio::test]
async fn wrong_password_fails_clearly_without_printing_it() {
    let src = TestRegistry::start();
    let dst = TestRegistry::start_with(RegistryOpts {
        basic: Some((USER.into(), PASSWORD.into())),
        ..Default::default()
    });
    push_corpus(&src.url, &spec()).await;
    let wrong = "Wr0ng-pa55word-zz9";
    let run = ferry(&config(&src.url, &dst.url, ""), wrong).run(&["sync", "-vvv"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("authentication failed"),
        "{}",
        run.all()
    );
    assert!(
        run.stderr.contains("dst"),
        "names the registry: {}",
        run.all()
    );
    // Both repositories fail on the same refusal: the summary explains it once.
    let failed: Vec<_> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("failed: "))
        .collect();
    assert_eq!(failed.len(), 2, "{}", run.all());
    let explained = failed
        .iter()
        .filter(|l| l.contains("check the username and password"))
        .count();
    assert_eq!(explained, 1, "{}", run.all());
    assert!(
        failed
            .iter()
            .any(|l| l.ends_with("authentication failed (as above)")),
        "{}",
        run.all()
    );
    assert_no_secret(&run, wrong);
    assert_no_secret(&run, PASSWORD);
    // The Basic header is base64 of user:password; that must not leak either.
    use base64::Engine;
    assert_no_secret(
        &run,
        &base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{wrong}")),
    );
}

#[tokio::test]
async fn missing_password_env_is_a_config_error() {
    let f = Ferry::new(
        &config("http://127.0.0.1:1", "http://127.0.0.1:2", ""),
        "1MiB",
        &[("m.toml", POLICY)],
    );
    let run = f.run(&["validate"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("ferry.toml:13:16: registries.dst.password_env: environment variable `FERRY_TEST_PASSWORD` is not set"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn bearer_token_flow() {
    let tokens = TokenServer::start(USER, PASSWORD);
    let src = TestRegistry::start();
    let dst = TestRegistry::start_with(RegistryOpts {
        token: Some((tokens.realm(), tokens.cert())),
        ..Default::default()
    });
    push_corpus(&src.url, &spec()).await;
    let run = ferry(&config(&src.url, &dst.url, ""), PASSWORD).run(&["sync", "-vv"]);
    run.assert_code(0);
    assert_no_secret(&run, PASSWORD);
    let issued = tokens.issued.load(Ordering::SeqCst);
    // Per repository scope, cached: a handful of tokens, not one per request.
    assert!((2..=8).contains(&issued), "tokens issued: {issued}");
    assert_copied(
        &src,
        &Reader::with(
            &dst.url,
            Auth::Token(tokens.realm(), USER.into(), PASSWORD.into()),
            None,
        ),
    )
    .await;

    let refused = ferry(&config(&src.url, &dst.url, ""), "not-the-password").run(&["sync"]);
    refused.assert_code(1);
    assert!(
        refused.stderr.contains("authentication failed")
            && refused.stderr.contains("token server answered 401"),
        "{}",
        refused.all()
    );
    assert_no_secret(&refused, "not-the-password");
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let ca = TestCa::new();
    let src = TestRegistry::start();
    let dst = TestRegistry::start_with(RegistryOpts {
        tls: Some(ca.server()),
        basic: Some((USER.into(), PASSWORD.into())),
        ..Default::default()
    });
    assert!(dst.url.starts_with("https://"));
    push_corpus(&src.url, &spec()).await;
    // password_file this time, with the trailing newline `echo pw > file` leaves.
    let tls_config = |extra: &str| {
        format!(
            "[registries.src]\nurl = \"{}\"\n\n[registries.dst]\nurl = \"{}\"\nusername = \"{USER}\"\npassword_file = \"secret\"\n{extra}",
            src.url, dst.url
        )
    };
    let with_ca = Ferry::new(
        &tls_config(&format!("ca_file = \"{}\"\n", ca.ca().display())),
        "64KiB",
        &[("m.toml", POLICY)],
    );
    std::fs::write(with_ca.path().join("secret"), format!("{PASSWORD}\n")).unwrap();
    with_ca.run(&["sync"]).assert_code(0);
    assert_copied(
        &src,
        &Reader::with(
            &dst.url,
            Auth::Basic(USER.into(), PASSWORD.into()),
            Some(&ca.ca()),
        ),
    )
    .await;

    // Without the CA the certificate is not trusted: a clear failure, never a silent downgrade.
    let started = std::time::Instant::now();
    let without = Ferry::new(&tls_config(""), "64KiB", &[("m.toml", POLICY)]);
    std::fs::write(without.path().join("secret"), PASSWORD).unwrap();
    let run = without.run(&["plan"]);
    run.assert_code(1);
    assert!(
        run.stdout.contains("invalid peer certificate"),
        "{}",
        run.all()
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "a TLS failure is not retried: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn credentials_from_docker_config_json() {
    use base64::Engine;
    let src = TestRegistry::start();
    let dst = TestRegistry::start_with(RegistryOpts {
        basic: Some((USER.into(), PASSWORD.into())),
        ..Default::default()
    });
    push_corpus(&src.url, &spec()).await;
    let regs = format!(
        "[registries.src]\nurl = \"{}\"\n\n[registries.dst]\nurl = \"{}\"\ndocker_config = true\n",
        src.url, dst.url
    );
    let mut f = Ferry::new(&regs, "64KiB", &[("m.toml", POLICY)]);
    let docker = f.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        docker.join("config.json"),
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{auth}\"}}}}}}",
            dst.host()
        ),
    )
    .unwrap();
    f.env
        .push(("DOCKER_CONFIG".into(), docker.display().to_string()));
    let run = f.run(&["sync", "-vv"]);
    run.assert_code(0);
    assert_no_secret(&run, PASSWORD);
    assert_copied(
        &src,
        &Reader::with(&dst.url, Auth::Basic(USER.into(), PASSWORD.into()), None),
    )
    .await;

    // A credential helper that is not installed: the run fails naming it, never a silent
    // anonymous pull.
    std::fs::write(
        docker.join("config.json"),
        format!(
            "{{\"auths\":{{\"{}\":{{}}}},\"credsStore\":\"desktop\"}}",
            dst.host()
        ),
    )
    .unwrap();
    f.run(&["validate"]).assert_code(0);
    let run = f.run(&["sync"]);
    run.assert_code(1);
    assert!(
        run.all()
            .contains("credential helper docker-credential-desktop not found on PATH"),
        "{}",
        run.all()
    );
}

/// A `docker-credential-NAME` program in the test's PATH: it logs each server it is asked
/// about to `calls`, then answers as `script` says (the tail of a shell script).
fn helper(dir: &std::path::Path, name: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("docker-credential-{name}"));
    let calls = dir.join(format!("{name}.calls"));
    std::fs::write(
        &path,
        format!("#!/bin/sh\n[ \"$1\" = get ] || exit 9\nserver=$(cat)\necho \"$server\" >> {}\n{script}\n", calls.display()),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn calls(dir: &std::path::Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(format!("{name}.calls")))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Docker's credential helpers: `credHelpers` for one host, `credsStore` for the rest, an
/// identity token exchanged at a token server, each helper asked once per run; a failing
/// helper is named with its exit code, and nothing it printed reaches the output.
#[tokio::test]
async fn credential_helpers_are_asked_once_per_run_and_failures_name_them() {
    let tokens = TokenServer::start(USER, PASSWORD);
    let src = TestRegistry::start();
    let basic = TestRegistry::start_with(RegistryOpts {
        basic: Some((USER.into(), PASSWORD.into())),
        ..Default::default()
    });
    let bearer = TestRegistry::start_with(RegistryOpts {
        token: Some((tokens.realm(), tokens.cert())),
        ..Default::default()
    });
    let identity = TokenServer::start(USER, "identity-token-0123456789");
    let refresh = TestRegistry::start_with(RegistryOpts {
        token: Some((identity.realm(), identity.cert())),
        ..Default::default()
    });
    push_corpus(&src.url, &spec()).await;

    let regs = format!(
        "[registries.src]\nurl = \"{}\"\n[registries.dst]\nurl = \"{}\"\ndocker_config = true\n[registries.dst2]\nurl = \"{}\"\ndocker_config = true\n[registries.dst3]\nurl = \"{}\"\ndocker_config = true\n",
        src.url, basic.url, bearer.url, refresh.url
    );
    let policy = POLICY.replace(
        "targets = [\"dst\"]",
        "targets = [\"dst\", \"dst2\", \"dst3\"]",
    );
    let mut f = Ferry::new(&regs, "64KiB", &[("m.toml", &policy)]);
    let bin = f.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let answer = |user: &str, secret: &str| {
        format!("printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}' \"$server\"")
    };
    // The store's helper also writes down the environment it was given.
    let seen_env = f.path().join("vault.env");
    helper(
        &bin,
        "vault",
        &format!("env > {}\n{}", seen_env.display(), answer(USER, PASSWORD)),
    );
    helper(
        &bin,
        "cloud",
        &answer("<token>", "identity-token-0123456789"),
    );
    helper(&bin, "broken", "echo 'leaked-out-of-a-keychain'; exit 3");
    let docker = f.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let config = |store: &str| {
        format!(
            "{{\"credsStore\":\"{store}\",\"credHelpers\":{{\"{}\":\"cloud\"}},\"auths\":{{\"https://{}\":{{}}}}}}",
            refresh.host(),
            basic.host()
        )
    };
    std::fs::write(docker.join("config.json"), config("vault")).unwrap();
    f.env
        .push(("DOCKER_CONFIG".into(), docker.display().to_string()));
    f.env.push((
        "PATH".into(),
        format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
    ));
    // A secret of ferry's own, from the environment: no helper may see it.
    f.daemon_lines("api_token_env = \"FERRY_ADMIN_TOKEN\"\n");
    f.env.push((
        "FERRY_ADMIN_TOKEN".into(),
        "admin-token-0123456789abcdef".into(),
    ));

    let run = f.run(&["sync", "-vv"]);
    run.assert_code(0);
    assert_no_secret(&run, PASSWORD);
    assert_no_secret(&run, "identity-token-0123456789");
    let env = std::fs::read_to_string(&seen_env).unwrap();
    assert!(
        env.contains("PATH=") && !env.contains("FERRY_ADMIN_TOKEN"),
        "{env}"
    );
    assert_copied(
        &src,
        &Reader::with(&basic.url, Auth::Basic(USER.into(), PASSWORD.into()), None),
    )
    .await;
    assert_copied(
        &src,
        &Reader::with(
            &bearer.url,
            Auth::Token(tokens.realm(), USER.into(), PASSWORD.into()),
            None,
        ),
    )
    .await;
    // The store is asked once for each registry it serves, under the name Docker uses (the
    // `auths` key when there is one); the identity token went to its token server by POST.
    let mut asked = calls(&bin, "vault");
    asked.sort();
    let mut want = vec![format!("https://{}", basic.host()), bearer.host()];
    want.sort();
    assert_eq!(asked, want);
    assert_eq!(calls(&bin, "cloud"), [refresh.host()]);
    assert!(
        identity.issued.load(Ordering::SeqCst) > 0,
        "identity token exchanged"
    );

    // A failing store: each target fails with the helper's name and exit code, nothing else.
    std::fs::write(docker.join("config.json"), config("broken")).unwrap();
    let mut f2 = Ferry::new(
        &regs,
        "64KiB",
        &[("m.toml", &policy.replace("app-*", "app-000"))],
    );
    f2.env = f.env.clone();
    let run = f2.run(&["sync"]);
    run.assert_code(1);
    assert!(
        run.all().contains(&format!(
            "credential helper docker-credential-broken exited with code 3 for https://{}",
            basic.host()
        )),
        "{}",
        run.all()
    );
    assert_no_secret(&run, "leaked-out-of-a-keychain");
}

/// Basic auth on one target, the bearer-token flow on another, everything at trace level
/// (ferry's and every library's): no password, no Basic value, no token in any log line, in
/// `plan --json`, the daemon's `/status` and `/metrics`, or the state store's files.
#[tokio::test]
async fn secrets_never_reach_logs_status_metrics_state_or_plan_json_even_at_trace() {
    use base64::Engine;
    let tokens = TokenServer::start(USER, PASSWORD);
    let src = TestRegistry::start();
    let basic_dst = TestRegistry::start_with(RegistryOpts {
        basic: Some((USER.into(), PASSWORD.into())),
        ..Default::default()
    });
    let token_dst = TestRegistry::start_with(RegistryOpts {
        token: Some((tokens.realm(), tokens.cert())),
        ..Default::default()
    });
    push_corpus(&src.url, &spec()).await;
    let port = crate::support::free_port();
    let regs = format!(
        "{}\n[registries.dst2]\nurl = \"{}\"\nusername = \"{USER}\"\npassword_env = \"FERRY_TEST_PASSWORD\"\n",
        config(&src.url, &basic_dst.url, ""),
        token_dst.url
    );
    let policy = POLICY.replace(
        "targets = [\"dst\"]",
        "targets = [\"dst\", \"dst2\"]\ninterval = \"1h\"",
    );
    let mut f = Ferry::new(&regs, "64KiB", &[("m.toml", &policy)]);
    f.env.push(("FERRY_TEST_PASSWORD".into(), PASSWORD.into()));
    f.env.push(("RUST_LOG".into(), "trace".into()));
    f.daemon_lines(&format!("listen = \"127.0.0.1:{port}\"\n"));
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    // A JWT's header and payload are base64 JSON objects: `eyJ…` (`{"`), a dot, `eyJ…`.
    // (A bare `eyJ` also turns up by chance in Distribution's random upload `_state`.)
    let jwt = |text: &str| {
        text.match_indices("eyJ").find_map(|(i, _)| {
            let rest = &text[i..];
            let head = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))?;
            rest[head..].starts_with(".eyJ").then_some(i)
        })
    };
    let leaks = |what: &str, text: &str| {
        for secret in [PASSWORD, basic.as_str()] {
            assert!(
                !text.contains(secret),
                "{what} holds `{secret}`:\n{}",
                &text[text.find(secret).unwrap().saturating_sub(300)..]
            );
        }
        if let Some(i) = jwt(text) {
            panic!("{what} holds a token:\n{}", &text[i.saturating_sub(300)..]);
        }
    };

    let plan = f
        .command(&["plan", "--json"])
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let (out, err) = (
        String::from_utf8_lossy(&plan.stdout),
        String::from_utf8_lossy(&plan.stderr),
    );
    assert!(
        err.lines().count() > 100 && err.contains("TRACE"),
        "trace logging was on:\n{err}"
    );
    leaks("plan --json", &out);
    leaks("plan's log", &err);
    let sync = f.run(&["sync", "-vvv"]);
    sync.assert_code(0);
    leaks("sync's log", &sync.all());
    assert!(
        tokens.issued.load(Ordering::SeqCst) > 0,
        "the token flow ran"
    );
    assert_copied(
        &src,
        &Reader::with(
            &basic_dst.url,
            Auth::Basic(USER.into(), PASSWORD.into()),
            None,
        ),
    )
    .await;
    assert_copied(
        &src,
        &Reader::with(
            &token_dst.url,
            Auth::Token(tokens.realm(), USER.into(), PASSWORD.into()),
            None,
        ),
    )
    .await;

    let daemon = crate::support::Daemon::start(&f, port, "daemon.log");
    assert!(daemon.ready().await, "{}", daemon.log());
    let ran =
        crate::support::wait_for(20, || async { daemon.log().contains("run finished") }).await;
    assert!(ran, "{}", daemon.log());
    for path in ["/status", "/metrics"] {
        let (code, body) = crate::support::daemon_get(port, path).await.unwrap();
        assert_eq!(code, 200);
        leaks(path, &body);
    }
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
    leaks(
        "the daemon's log",
        &std::fs::read_to_string(f.path().join("daemon.log")).unwrap(),
    );
    for entry in crate::support::files_under(&f.path().join("state")) {
        leaks(
            &entry.display().to_string(),
            &String::from_utf8_lossy(&std::fs::read(&entry).unwrap()),
        );
    }
}
