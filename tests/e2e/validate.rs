//! `ferry validate`: every problem reported as FILE:LINE:COL: message, exit code 2; and the
//! policies shipped in `policies/` are valid.

use crate::support::Ferry;

const REGS: &str = "[registries.central]\nurl = \"http://127.0.0.1:5000\"\n\n[registries.edge]\nurl = \"http://127.0.0.1:5001\"\n";
const GOOD: &str = "[[policy]]\nname = \"ok\"\nsource = \"central\"\ntargets = [\"edge\"]\nrepositories = [\"base/*\"]\n";

/// Validate one policy file; return (exit code, stderr with the temp dir shortened to `DIR`).
fn check(policy: &str) -> (i32, String) {
    let f = Ferry::new(REGS, "1MiB", &[("p.toml", policy)]);
    let run = f.run(&["validate"]);
    (
        run.code,
        run.stderr.replace(&f.path().display().to_string(), "DIR"),
    )
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
    assert!(
        run.stdout.contains("1 policy") && !run.stdout.contains("1 policies"),
        "{}",
        run.stdout
    );
}

#[test]
fn bad_toml_points_at_the_line() {
    assert_error(
        "[[policy]]\nname = \"x\nsource = \"central\"\n",
        "DIR/policies/p.toml:2:",
    );
}

#[test]
fn unknown_field_is_an_error() {
    let p = format!("{GOOD}schedual = \"*/5 * * * *\"\n");
    assert_error(
        &p,
        "DIR/policies/p.toml:6:1: unknown field `schedual`: did you mean `schedule`? (unknown field `schedual`, expected one of",
    );
}

#[test]
fn unknown_registry_is_named() {
    let p = GOOD.replace("targets = [\"edge\"]", "targets = [\"edge\", \"paris\"]");
    assert_error(&p, "DIR/policies/p.toml:4:20: policy `ok`: targets: unknown registry `paris` (known: central, edge)");
}

#[test]
fn duplicate_policy_names_show_both_places() {
    let f = Ferry::new(
        REGS,
        "1MiB",
        &[("a.toml", GOOD), ("b.toml", &format!("\n{GOOD}"))],
    );
    let run = f.run(&["validate"]);
    run.assert_code(2);
    let err = run.stderr.replace(&f.path().display().to_string(), "DIR");
    assert!(err.contains("DIR/policies/b.toml:3:8: duplicate policy name `ok` (first defined at DIR/policies/a.toml:2:8)"), "{err}");
}

#[test]
fn invalid_regex_and_glob_are_reported_together() {
    let p = format!(
        "{}exclude_repositories = [\"apps/[z\"]\n[policy.tags]\ninclude = ['^v(\\d+']\n",
        GOOD
    );
    let (code, err) = check(&p);
    assert_eq!(code, 2);
    assert!(
        err.contains("DIR/policies/p.toml:6:25: policy `ok`: exclude_repositories: invalid glob"),
        "{err}"
    );
    assert!(
        err.contains("DIR/policies/p.toml:8:12: policy `ok`: tags.include: invalid regex"),
        "{err}"
    );
    assert!(err.contains("2 problems found"), "{err}");
}

#[test]
fn bad_schedule_and_bad_repository_name() {
    let p = GOOD.replace(
        "repositories = [\"base/*\"]",
        "repositories = [\"Base/App\"]\nschedule = \"*/5 * *\"",
    );
    let (code, err) = check(&p);
    assert_eq!(code, 2);
    assert!(
        err.contains("p.toml:5:17: policy `ok`: repositories: invalid repository name `Base/App`"),
        "{err}"
    );
    assert!(
        err.contains("p.toml:6:12: policy `ok`: schedule: a crontab has 5 fields (minute hour day-of-month month day-of-week)"),
        "{err}"
    );
}

#[test]
fn bad_main_config_field() {
    let f = Ferry::new(
        &format!("{REGS}\n[registries.x]\nurl = \"ftp://nope\"\n"),
        "1 parsec",
        &[("p.toml", GOOD)],
    );
    let run = f.run(&["validate"]);
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("ferry.toml:4:14: daemon.chunk_size: unknown size unit `parsec`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("ferry.toml:14:7: registries.x.url: `ftp://nope` must be an http:// or https:// URL with a host"),
        "{}",
        run.stderr
    );
}

#[test]
fn shipped_policies_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let names = [
        "dockerhub",
        "private",
        "central",
        "edge-paris",
        "edge-lyon",
        "dev",
        "test",
        "prod",
        "dr-prod",
    ];
    let regs: String = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "[registries.{n}]\nurl = \"http://127.0.0.1:{}\"\n",
                5000 + i
            )
        })
        .collect();
    let f = Ferry::new(&regs, "16MiB", &[]);
    let (mut files, mut policies) = (0, 0);
    for entry in std::fs::read_dir(root.join("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            policies += std::fs::read_to_string(&path)
                .unwrap()
                .matches("[[policy]]")
                .count();
            std::fs::copy(
                &path,
                f.path().join("policies").join(path.file_name().unwrap()),
            )
            .unwrap();
            files += 1;
        }
    }
    assert!(files >= 4, "expected the example policies in policies/");
    // The release key promote-release.toml names (a placeholder nobody can sign for).
    std::fs::create_dir_all(f.path().join("policies/keys")).unwrap();
    std::fs::copy(
        root.join("policies/keys/release.pub"),
        f.path().join("policies/keys/release.pub"),
    )
    .unwrap();
    let run = f.run(&["validate"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains(&format!(", {policies} policies")),
        "every shipped policy validated: {}",
        run.stdout
    );
}

/// A policy on `central` for `repos`, writing `targets` through `template`.
fn flow(name: &str, source: &str, targets: &str, repos: &str, template: &str) -> String {
    format!(
        "[[policy]]\nname = \"{name}\"\nsource = \"{source}\"\ntargets = [{targets}]\nrepositories = [{repos}]\ntarget_repository = \"{template}\"\n"
    )
}

#[test]
fn replication_loops_are_refused_also_through_renames_and_a_second_name_for_a_registry() {
    // Two policies that send `apps/*` back and forth, the way back through a rename.
    let there = flow("out", "central", "\"edge\"", "\"apps/*\"", "mirror/{name}");
    let back = flow("back", "edge", "\"central\"", "\"mirror/*\"", "apps/{name}");
    let (code, err) = check(&format!("{there}\n{back}"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            "p.toml:2:8: policy `out`: replication loop: central/apps/x → edge/mirror/x (policy `out`) → central/apps/x (policy `back`)"
        ),
        "{err}"
    );
    assert_eq!(
        err.matches("replication loop").count(),
        1,
        "one loop, reported once: {err}"
    );

    // A registry under a second name is the same registry: copying into it under a rename
    // that its own repositories match grows mirror/mirror/... for good.
    let regs = format!("{REGS}\n[registries.alias]\nurl = \"http://127.0.0.1:5000/\"\n");
    let f = Ferry::new(
        &regs,
        "1MiB",
        &[(
            "p.toml",
            &flow(
                "self",
                "central",
                "\"alias\"",
                "\"**\"",
                "mirror/{repository}",
            ),
        )],
    );
    let run = f.run(&["validate"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains(
            "policy `self`: replication loop: central/x → alias/mirror/x (policy `self`)"
        ),
        "{}",
        run.stderr
    );

    // The same two registries one way only, or back under a name the first does not read: fine.
    let (code, err) = check(&format!(
        "{there}\n{}",
        flow(
            "back",
            "edge",
            "\"central\"",
            "\"mirror/*\"",
            "from-edge/{name}"
        )
    ));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn two_sources_filling_one_target_repository_are_refused() {
    let regs = format!("{REGS}\n[registries.other]\nurl = \"http://127.0.0.1:5002\"\n");
    let a = flow("a", "central", "\"edge\"", "\"team/app\"", "{name}");
    let b = flow("b", "other", "\"edge\"", "\"app\"", "{repository}");
    let f = Ferry::new(&regs, "1MiB", &[("a.toml", &a), ("b.toml", &b)]);
    let run = f.run(&["validate"]);
    run.assert_code(2);
    let err = run.stderr.replace(&f.path().display().to_string(), "DIR");
    assert!(
        err.contains("DIR/policies/b.toml:2:8: policy `b`: writes edge/app from other/app, as policy `a` (at DIR/policies/a.toml:2) does from central/team/app"),
        "{err}"
    );
    // Two policies reading the same source repository (different tag rules) may share a target.
    let same = flow("c", "central", "\"edge\"", "\"team/app\"", "{name}");
    let f = Ferry::new(&regs, "1MiB", &[("a.toml", &a), ("c.toml", &same)]);
    f.run(&["validate"]).assert_code(0);
    // Through globs it may not happen with the real catalogs: a warning, not a refusal.
    let g1 = flow("g1", "central", "\"edge\"", "\"apps/*\"", "{repository}");
    let g2 = flow("g2", "other", "\"edge\"", "\"apps/*\"", "{repository}");
    let f = Ferry::new(&regs, "1MiB", &[("a.toml", &g1), ("b.toml", &g2)]);
    let run = f.run(&["validate"]);
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("policy `g2`: writes edge/apps/x from other/apps/x")
            && run.stderr.contains("if both source registries"),
        "{}",
        run.stderr
    );
}

#[test]
fn target_templates_giving_invalid_names_are_refused() {
    for (template, why) in [
        ("Mirror/{name}", "invalid repository name `Mirror/app`"),
        (
            "mirror/../{name}",
            "invalid repository name `mirror/../app`",
        ),
        ("", "invalid repository name ``"),
        ("{name}-", "invalid repository name `app-`"),
    ] {
        let (code, err) = check(&flow("t", "central", "\"edge\"", "\"team/app\"", template));
        assert_eq!(code, 2, "{template}: {err}");
        assert!(err.contains(&format!("p.toml:6:21: policy `t`: target_repository `{template}` gives {why} for `team/app`")), "{err}");
    }
}

#[test]
fn symlink_loops_huge_files_and_fifos_in_the_policy_folder_are_named_not_followed() {
    let f = Ferry::new(REGS, "1MiB", &[("ok.toml", GOOD)]);
    let dir = f.path().join("policies");
    std::os::unix::fs::symlink(dir.join("loop-b.toml"), dir.join("loop-a.toml")).unwrap();
    std::os::unix::fs::symlink(dir.join("loop-a.toml"), dir.join("loop-b.toml")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.toml")).unwrap();
    let big = std::fs::File::create(dir.join("big.toml")).unwrap();
    big.set_len(64 << 20).unwrap(); // sparse: 64 MiB of nothing
    assert!(std::process::Command::new("mkfifo")
        .arg(dir.join("fifo.toml"))
        .status()
        .unwrap()
        .success());
    let run = f.run(&["validate"]);
    run.assert_code(2);
    let err = run.stderr.replace(&f.path().display().to_string(), "DIR");
    for want in [
        "DIR/policies/big.toml: cannot read: larger than 8 MiB",
        "DIR/policies/fifo.toml: cannot read: not a regular file",
        "DIR/policies/loop-a.toml: cannot read: Too many levels of symbolic links",
        "DIR/policies/zero.toml: cannot read: not a regular file",
    ] {
        assert!(err.contains(want), "want `{want}` in:\n{err}");
    }
}

#[test]
fn schedules_take_an_iana_time_zone() {
    let p = format!("{GOOD}schedule = \"0 9 * * 1-5\"\ntimezone = \"Europe/Paris\"\n");
    assert_eq!(check(&p).0, 0, "{}", check(&p).1);
    let p = format!("{GOOD}schedule = \"0 9 * * 1-5\"\ntimezone = \"Mars/Olympus\"\n");
    assert_error(
        &p,
        "p.toml:7:12: policy `ok`: timezone: unknown time zone `Mars/Olympus` (an IANA name",
    );
    let p = format!("{GOOD}interval = \"1h\"\ntimezone = \"Europe/Paris\"\n");
    assert_error(
        &p,
        "p.toml:7:12: policy `ok`: timezone: applies to a schedule; this policy has none",
    );
}

#[test]
fn cluster_settings_are_checked_field_by_field() {
    let f = Ferry::new(REGS, "1MiB", &[("p.toml", GOOD)]);
    let path = f.config();
    let text = std::fs::read_to_string(&path).unwrap();
    let good =
        "[cluster]\netcd = [\"http://127.0.0.1:2379\"]\nmember = \"edge-a\"\nlease_ttl = \"5s\"\n";
    std::fs::write(&path, format!("{text}\n{good}")).unwrap();
    let run = f.run(&["validate"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("cluster: member `edge-a`, etcd http://127.0.0.1:2379, lease_ttl 5s, keys under /ferry/"),
        "{}",
        run.stdout
    );
    let bad = "[cluster]\netcd = [\"127.0.0.1:2379\"]\nmember = \"two words\"\nlease_ttl = \"1s\"\nusername = \"ferry\"\n";
    std::fs::write(&path, format!("{text}\n{bad}")).unwrap();
    let run = f.run(&["validate"]);
    run.assert_code(2);
    let line = |n: usize| text.lines().count() + 1 + n;
    for (l, want) in [
        (
            2,
            "cluster.etcd: `127.0.0.1:2379` is not an etcd client URL",
        ),
        (3, "cluster.member: 1 to 64 characters"),
        (4, "cluster.lease_ttl: must be between 2s and 5m"),
        (5, "cluster.username: needs password_env or password_file"),
    ] {
        let at = format!("ferry.toml:{}:", line(l));
        assert!(
            run.stderr
                .lines()
                .any(|e| e.contains(&at) && e.contains(want)),
            "`{at}` `{want}` in:\n{}",
            run.stderr
        );
    }
}

#[test]
fn version_names_the_commit_and_the_build_date() {
    let f = Ferry::new("", "1MiB", &[]);
    for args in [&["version"][..], &["--version"][..]] {
        let run = f.run(args);
        run.assert_code(0);
        let line = run.stdout.trim();
        let rest = line
            .strip_prefix(&format!("ferry {} (commit ", env!("CARGO_PKG_VERSION")))
            .unwrap_or_else(|| panic!("{line}"));
        let (commit, date) = rest.trim_end_matches(')').split_once(", built ").unwrap();
        assert!(
            commit == "unknown"
                || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
            "{line}"
        );
        assert!(
            date.len() == 10 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-',
            "{line}"
        );
    }
}
