//! The dependency tree, checked offline from `cargo metadata` (what `cargo deny check
//! licenses bans sources` would say, without its advisory database): every crate from
//! crates.io, under a license on the allow list, and no second TLS or crypto stack.

use std::process::Command;

/// Licenses a crate may be under (SPDX ids; an `OR` needs one of them, an `AND` all).
const ALLOWED: &[&str] = &[
    "MIT",
    "Apache-2.0",
    "Apache-2.0 WITH LLVM-exception",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "Zlib",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "MPL-2.0",
    "CC0-1.0",
    "0BSD",
    "BSL-1.0",
    "CDLA-Permissive-2.0",
    "Unlicense",
];

/// Crates that would bring a second TLS or crypto stack beside rustls on ring.
const BANNED: &[&str] = &[
    "openssl",
    "openssl-sys",
    "native-tls",
    "aws-lc-sys",
    "aws-lc-rs",
    "boring-sys",
];

fn license_ok(expr: &str) -> bool {
    let e = expr.replace(['(', ')'], "").replace('/', " OR ");
    e.split(" OR ")
        .any(|alt| alt.split(" AND ").all(|l| ALLOWED.contains(&l.trim())))
}

#[test]
fn every_dependency_is_from_crates_io_under_an_allowed_license_and_none_is_banned() {
    // This machine's platform only: a fresh checkout has downloaded just its crates, and
    // --offline would fail on the lock file's crates for other targets.
    let rustc = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc names its host");
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Only what the build resolves (the lock file also lists crates for other targets).
    let used: std::collections::HashSet<&str> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    let mut problems = Vec::new();
    let mut checked = 0;
    for p in meta["packages"].as_array().unwrap() {
        let (name, version) = (p["name"].as_str().unwrap(), p["version"].as_str().unwrap());
        if !used.contains(p["id"].as_str().unwrap()) || name == "ferry" {
            continue;
        }
        checked += 1;
        match p["source"].as_str() {
            Some("registry+https://github.com/rust-lang/crates.io-index") => {}
            other => problems.push(format!("{name} {version}: source {other:?}, not crates.io")),
        }
        match p["license"].as_str() {
            Some(l) if license_ok(l) => {}
            other => problems.push(format!(
                "{name} {version}: license {other:?} is not on the allow list"
            )),
        }
        if BANNED.contains(&name) {
            problems.push(format!(
                "{name} {version}: banned (a second TLS or crypto stack)"
            ));
        }
    }
    assert!(
        checked > 100,
        "only {checked} crates seen: not the real tree"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
