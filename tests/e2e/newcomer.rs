//! What a new user meets first: every slip in a first config named with what to write
//! instead (issue 24's list), each checked through `ferry validate`.

use crate::support::Ferry;

const REGS: &str = "[registries.central]\nurl = \"http://127.0.0.1:5000\"\n\n[registries.edge]\nurl = \"http://127.0.0.1:5001\"\n";
const GOOD: &str = "[[policy]]\nname = \"ok\"\nsource = \"central\"\ntargets = [\"edge\"]\nrepositories = [\"base/*\"]\n";

fn validate(f: &Ferry) -> (i32, String) {
    let run = f.run(&["validate"]);
    (
        run.code,
        run.all().replace(&f.path().display().to_string(), "DIR"),
    )
}

#[test]
fn a_missing_config_says_how_to_name_one_and_a_missing_folder_has_no_fake_position() {
    let f = Ferry::new(REGS, "1MiB", &[("p.toml", GOOD)]);
    let run = std::process::Command::new(crate::support::ferry_bin())
        .arg("validate")
        .env("FERRY_CONFIG", "/nonexistent/ferry.toml")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/ferry.toml: cannot read: No such file")
            && stderr.contains("--config FILE or FERRY_CONFIG")
            && stderr.contains("`ferry init`"),
        "{stderr}"
    );
    std::fs::remove_dir_all(f.path().join("policies")).unwrap();
    let (code, out) = validate(&f);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("DIR/policies: the policy folder does not exist")
            && !out.contains("policies:1:1"),
        "{out}"
    );
}

#[test]
fn a_policy_in_the_main_config_is_sent_to_the_policy_folder() {
    let f = Ferry::new(&format!("{REGS}\n{GOOD}"), "1MiB", &[]);
    let (code, out) = validate(&f);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("DIR/ferry.toml:13:3: unknown field `policy`: policies live in their own files, in the policy folder"),
        "{out}"
    );
}

#[test]
fn a_misspelt_key_gets_the_nearest_one() {
    let f = Ferry::new(
        &REGS.replace(
            "url = \"http://127.0.0.1:5001\"",
            "url = \"http://127.0.0.1:5001\"\nusernme = \"u\"",
        ),
        "1MiB",
        &[("p.toml", GOOD)],
    );
    let (code, out) = validate(&f);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("unknown field `usernme`: did you mean `username`?"),
        "{out}"
    );
}

#[test]
fn a_regex_in_double_quotes_and_a_glob_for_a_regex_are_explained() {
    let escaped = format!("{GOOD}[policy.tags]\ninclude = [\"^v\\d+$\"]\n");
    let (code, out) = validate(&Ferry::new(REGS, "1MiB", &[("p.toml", &escaped)]));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("write regular expressions in single quotes"),
        "{out}"
    );
    let globbed =
        format!("{GOOD}[policy.tags]\ninclude = [\"v*\", \"^1\\\\.[0-9]+$\", \"release-1.*\"]\n");
    let (code, out) = validate(&Ferry::new(REGS, "1MiB", &[("p.toml", &globbed)]));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("DIR/policies/p.toml:7:12: policy `ok`: tags.include: `v*` is a regular expression, not a glob")
            && out.contains("'^v.*$'"),
        "{out}"
    );
    assert_eq!(out.matches("not a glob").count(), 1, "only `v*`:\n{out}");
}

#[test]
fn an_empty_password_variable_is_called_empty_and_a_shared_secret_file_is_named() {
    let regs = REGS.replace(
        "url = \"http://127.0.0.1:5001\"",
        "url = \"http://127.0.0.1:5001\"\nusername = \"robot\"\npassword_env = \"EDGE_PASSWORD\"",
    );
    let mut f = Ferry::new(&regs, "1MiB", &[("p.toml", GOOD)]);
    f.env.push(("EDGE_PASSWORD".into(), String::new()));
    let (code, out) = validate(&f);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("environment variable `EDGE_PASSWORD` is set but empty"),
        "{out}"
    );

    let f = Ferry::new(
        &regs.replace(
            "password_env = \"EDGE_PASSWORD\"",
            "password_file = \"edge.pw\"",
        ),
        "1MiB",
        &[("p.toml", GOOD)],
    );
    let pw = f.path().join("edge.pw");
    std::fs::write(&pw, "s3cret-pa55word\n").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out) = validate(&f);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "password_file: `edge.pw` is readable by other users (mode 0644): chmod 600 it"
        ),
        "{out}"
    );
    assert!(!out.contains("s3cret"), "{out}");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!validate(&f).1.contains("readable by other users"));
}

/// `https://` for a plain-HTTP registry and `http://` for a TLS one are named as such.
#[test]
fn tls_and_plain_http_mix_ups_are_named() {
    use crate::support::registry::{RegistryOpts, TestCa, TestRegistry};
    let (plain, dst) = (TestRegistry::start(), TestRegistry::start());
    let ca = TestCa::new();
    let tls = TestRegistry::start_with(RegistryOpts {
        tls: Some(ca.server()),
        ..Default::default()
    });
    let policy = "[[policy]]\nname = \"p\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"app\"]\n";
    for (src, want) in [
        (
            plain.url.replace("http://", "https://"),
            "answered in plain HTTP, not TLS: write its url with http://",
        ),
        (
            tls.url.replace("https://", "http://"),
            "speaks TLS: write its url with https://",
        ),
    ] {
        let f = Ferry::new(
            &format!(
                "[registries.src]\nurl = \"{src}\"\n[registries.dst]\nurl = \"{}\"\n",
                dst.url
            ),
            "1MiB",
            &[("p.toml", policy)],
        );
        let started = std::time::Instant::now();
        let run = f.run(&["plan"]);
        assert_eq!(run.code, 1, "{}", run.all());
        // A TLS mismatch does not heal: no retries.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(
            run.all().contains(want),
            "{src}: `{want}` not in:\n{}",
            run.all()
        );
    }
}

/// A closed port: plan and sync end in seconds, and the reason is given once, with the key
/// that keeps ferry trying longer.
#[test]
fn an_unreachable_registry_is_said_once_and_quickly() {
    use crate::support::registry::TestRegistry;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dst = TestRegistry::start();
    let f = Ferry::new(
        &format!("[registries.src]\nurl = \"http://127.0.0.1:{port}\"\n[registries.dst]\nurl = \"{}\"\n", dst.url),
        "1MiB",
        &[("p.toml", "[[policy]]\nname = \"p\"\nsource = \"src\"\ntargets = [\"dst\"]\nrepositories = [\"a\", \"b\", \"c\"]\n")],
    );
    for cmd in ["plan", "sync"] {
        let started = std::time::Instant::now();
        let run = f.run(&[cmd]);
        let took = started.elapsed();
        assert_eq!(run.code, 1, "{}", run.all());
        assert!(
            took < std::time::Duration::from_secs(10),
            "{cmd} took {took:?}"
        );
        let out = run.all();
        // Once in what the command prints, and (sync) once in its log.
        let (logged, printed): (Vec<&str>, Vec<&str>) = out
            .lines()
            .partition(|l| l.contains(" ERROR ") || l.contains(" WARN "));
        for lines in [&printed, &logged] {
            let said = lines
                .iter()
                .filter(|l| l.contains("nothing answered at"))
                .count();
            let brief = lines
                .iter()
                .filter(|l| l.contains("not reachable (as above)"))
                .count();
            assert!(
                (said, brief) == (1, 2) || (said, brief) == (0, 0),
                "{cmd}:\n{out}"
            );
        }
        assert!(
            printed.iter().any(|l| l.contains("nothing answered at")),
            "{out}"
        );
        assert!(
            out.contains("set retry_timeout in its [registries] entry"),
            "{out}"
        );
    }
}

/// `validate --online`: every registry asked once, one line each, exit 1 when one fails.
#[tokio::test]
async fn validate_online_checks_every_registry_once() {
    use crate::support::faults::FaultProxy;
    use crate::support::registry::{RegistryOpts, TestRegistry};
    let open = TestRegistry::start();
    crate::support::images::push_corpus(
        &open.url,
        &crate::support::images::CorpusSpec {
            repos: 1,
            tags: 1,
            index_every: 0,
            sign: false,
            ..Default::default()
        },
    )
    .await;
    let locked = TestRegistry::start_with(RegistryOpts {
        basic: Some(("robot".into(), "right-pa55word".into())),
        ..Default::default()
    });
    let no_catalog = FaultProxy::start(open.host());
    no_catalog
        .faults
        .deny_catalog
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = closed.local_addr().unwrap().port();
    drop(closed);
    let regs = format!(
        "[registries.open]\nurl = \"{}\"\n[registries.good]\nurl = \"{}\"\nusername = \"robot\"\npassword_env = \"GOOD_PW\"\n\
         [registries.bad]\nurl = \"{}\"\nusername = \"robot\"\npassword_env = \"BAD_PW\"\n\
         [registries.hidden]\nurl = \"{}\"\n[registries.gone]\nurl = \"http://127.0.0.1:{gone}\"\n",
        open.url,
        locked.url,
        locked.url,
        no_catalog.url()
    );
    let policies = "[[policy]]\nname = \"globbing\"\nsource = \"hidden\"\ntargets = [\"good\"]\nrepositories = [\"app-*\"]\n\
                    [[policy]]\nname = \"exact\"\nsource = \"open\"\ntargets = [\"bad\", \"gone\"]\nrepositories = [\"app-000\"]\n";
    let mut f = Ferry::new(&regs, "1MiB", &[("p.toml", policies)]);
    f.env.push(("GOOD_PW".into(), "right-pa55word".into()));
    f.env.push(("BAD_PW".into(), "wrong-pa55word".into()));
    let started = std::time::Instant::now();
    let run = f.run(&["validate", "--online"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("registry "))
        .collect();
    assert_eq!(lines.len(), 5, "{}", run.stdout);
    for (name, want) in [
        ("open", ": ok: reachable, anonymous access, catalog lists 1 repositories"),
        ("good", ": ok: reachable, credentials accepted"),
        ("bad", ": problem: bad: ping: authentication failed (credentials rejected)"),
        ("hidden", ": problem: reachable, anonymous access, but policy `globbing` lists repositories by glob"),
        ("gone", ": problem: gone: ping: not reachable"),
    ] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("registry {name} (")))
            .unwrap_or_else(|| panic!("{name} not in:\n{}", run.stdout));
        assert!(line.contains(want), "{name}: `{want}` not in `{line}`");
    }
    assert!(!run.all().contains("wrong-pa55word") && !run.all().contains("right-pa55word"));
}
