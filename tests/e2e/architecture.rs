//! Imports point down only (DESIGN.md §5): a module may import only the layers below it.
//! Convention that makes this text check exact: one `use crate::x::…` per line.

const BANNED: &[(&str, &[&str])] = &[
    (
        "model",
        &[
            "config", "registry", "state", "plan", "copy", "app", "daemon", "cli", "cluster",
        ],
    ),
    (
        "events",
        &[
            "config", "registry", "state", "plan", "copy", "app", "daemon", "cli", "cluster",
        ],
    ),
    (
        "config",
        &[
            "registry", "state", "plan", "copy", "app", "daemon", "cli", "cluster",
        ],
    ),
    (
        "registry",
        &[
            "config", "state", "plan", "copy", "app", "daemon", "cli", "cluster",
        ],
    ),
    (
        "state",
        &[
            "config", "registry", "plan", "copy", "app", "daemon", "cli", "cluster",
        ],
    ),
    (
        "notify",
        &[
            "registry", "plan", "copy", "app", "daemon", "cli", "cluster",
        ],
    ),
    (
        "plan",
        &["state", "copy", "app", "daemon", "cli", "cluster"],
    ),
    ("copy", &["config", "app", "daemon", "cli", "cluster"]),
    ("app", &["daemon", "cli", "cluster"]),
    ("cluster", &["registry", "plan", "app", "daemon", "cli"]),
    ("daemon", &["registry", "cli"]),
];

fn sources(module: &str) -> Vec<(String, String)> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let file = src.join(format!("{module}.rs"));
    if file.exists() {
        out.push((
            file.display().to_string(),
            std::fs::read_to_string(&file).unwrap(),
        ));
    }
    let mut dirs = vec![src.join(module)];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push((
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                ));
            }
        }
    }
    out
}

#[test]
fn imports_point_down() {
    for (module, banned) in BANNED {
        let files = sources(module);
        assert!(!files.is_empty(), "no sources for {module}");
        for (path, text) in files {
            assert!(
                !text.contains("use crate::{"),
                "{path}: grouped crate import"
            );
            for b in *banned {
                assert!(
                    !text.contains(&format!("crate::{b}::"))
                        && !text.contains(&format!("crate::{b};")),
                    "{path} imports {b}"
                );
            }
        }
    }
}
