//! `ferry validate`: every problem reported as FILE:LINE:COL: message, exit code 2; and the
//! policies shipped in `policies/` are valid.

use crate::support::Ferry;

const REGS: &str = "[registries.central]\nurl = \"http://127.0.0.1:5000\"\n\n[registries.edge]\nurl = \"http://127.0.0.1:5001\"\n";
const GOOD: &str = "[[policy]]\nname = \"ok\"\nsource = \"central\"\ntargets = [\"edge\"]\nrepositories = [\"base/*\"]\n";

/// Validate one policy file; return (exit code, stderr with the temp dir shortened to `DIR`).
fn check(policy: &str) -> (i32, String) {
    let f = Ferry::new(REGS, "1MiB", &[("p.toml", policy)]);
    let run = f.run(&["validate"]);
    (run.code, run.stderr.replace(&f.path().display().to_string(), "DIR"))
}

fn assert_error(policy: &str, want: &str) {
    let (code, err) = check(policy);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(want), "want `{want}` in:\n{err}");
}

#[test]
fn good_policy_is_valid() {
    let f = Ferry::new(REGS, "1MiB", &[("p.toml", GOOD)]);
    let run = f.run(&["validate"]);
    run.assert_code(0);
    assert!(run.stdout.contains("1 policies"), "{}", run.stdout);
}

#[test]
fn bad_toml_points_at_the_line() {
    assert_error("[[policy]]\nname = \"x\nsource = \"central\"\n", "DIR/policies/p.toml:2:");
}

#[test]
fn unknown_field_is_an_error() {
    let p = format!("{GOOD}schedual = \"*/5 * * * *\"\n");
    assert_error(&p, "DIR/policies/p.toml:6:1: unknown field `schedual`, expected one of");
}

#[test]
fn unknown_registry_is_named() {
    let p = GOOD.replace("targets = [\"edge\"]", "targets = [\"edge\", \"paris\"]");
    assert_error(&p, "DIR/policies/p.toml:4:20: policy `ok`: targets: unknown registry `paris` (known: central, edge)");
}

#[test]
fn duplicate_policy_names_show_both_places() {
    let f = Ferry::new(REGS, "1MiB", &[("a.toml", GOOD), ("b.toml", &format!("\n{GOOD}"))]);
    let run = f.run(&["validate"]);
    run.assert_code(2);
    let err = run.stderr.replace(&f.path().display().to_string(), "DIR");
    assert!(err.contains("DIR/policies/b.toml:3:8: duplicate policy name `ok` (first defined at DIR/policies/a.toml:2:8)"), "{err}");
}

#[test]
fn invalid_regex_and_glob_are_reported_together() {
    let p = format!("{}exclude_repositories = [\"apps/[z\"]\n[policy.tags]\ninclude = ['^v(\\d+']\n", GOOD);
    let (code, err) = check(&p);
    assert_eq!(code, 2);
    assert!(err.contains("DIR/policies/p.toml:6:25: policy `ok`: exclude_repositories: invalid glob"), "{err}");
    assert!(err.contains("DIR/policies/p.toml:8:12: policy `ok`: tags.include: invalid regex"), "{err}");
    assert!(err.contains("2 problems found"), "{err}");
}

#[test]
fn bad_schedule_and_bad_repository_name() {
    let p = GOOD.replace("repositories = [\"base/*\"]", "repositories = [\"Base/App\"]\nschedule = \"*/5 * *\"");
    let (code, err) = check(&p);
    assert_eq!(code, 2);
    assert!(err.contains("p.toml:5:17: policy `ok`: repositories: invalid repository name `Base/App`"), "{err}");
    assert!(
        err.contains("p.toml:6:12: policy `ok`: schedule: expected 5 fields (crontab, minute first) or 6 (seconds first), got 3"),
        "{err}"
    );
}

#[test]
fn bad_main_config_field() {
    let f = Ferry::new(&format!("{REGS}\n[registries.x]\nurl = \"ftp://nope\"\n"), "1 parsec", &[("p.toml", GOOD)]);
    let run = f.run(&["validate"]);
    run.assert_code(2);
    assert!(run.stderr.contains("ferry.toml:4:14: daemon.chunk_size: unknown size unit `parsec`"), "{}", run.stderr);
    assert!(
        run.stderr.contains("ferry.toml:14:7: registries.x.url: `ftp://nope` must be an http:// or https:// URL with a host"),
        "{}",
        run.stderr
    );
}

#[test]
fn shipped_policies_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let names = ["dockerhub", "private", "central", "edge-paris", "edge-lyon", "dev", "test", "prod", "dr-prod"];
    let regs: String =
        names.iter().enumerate().map(|(i, n)| format!("[registries.{n}]\nurl = \"http://127.0.0.1:{}\"\n", 5000 + i)).collect();
    let f = Ferry::new(&regs, "16MiB", &[]);
    let (mut files, mut policies) = (0, 0);
    for entry in std::fs::read_dir(root.join("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            policies += std::fs::read_to_string(&path).unwrap().matches("[[policy]]").count();
            std::fs::copy(&path, f.path().join("policies").join(path.file_name().unwrap())).unwrap();
            files += 1;
        }
    }
    assert!(files >= 4, "expected the example policies in policies/");
    let run = f.run(&["validate"]);
    run.assert_code(0);
    assert!(run.stdout.contains(&format!(", {policies} policies")), "every shipped policy validated: {}", run.stdout);
}
