//! The layering is stated once, in docs/architecture.md's table; this test reads the table and
//! holds the source to it. It also checks that every `module::function` the document's paths
//! name exists, so the map cannot drift from the territory.
//!
//! Conventions that make the text checks exact: one `use crate::x::…` per line (no grouped
//! `use crate::{…}`), and sibling files reach each other as `super::name::…`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn doc() -> String {
    std::fs::read_to_string(root().join("docs/architecture.md")).expect("docs/architecture.md")
}

/// The names written in backticks in `cell`.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// module -> the modules it may import, from the table under `## Layers`.
fn layers() -> BTreeMap<String, BTreeSet<String>> {
    let text = doc();
    let section = text
        .split("## Layers")
        .nth(1)
        .expect("a `## Layers` section");
    let section = section.split("\n## ").next().unwrap();
    let mut out = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let module = ticked(cells[1]).pop().expect("a module name");
        let allowed = ticked(cells[3]).into_iter().collect();
        assert!(
            out.insert(module.clone(), allowed).is_none(),
            "{module} twice in the table"
        );
    }
    out
}

/// Every `.rs` file of a module: `src/<m>.rs` and everything under `src/<m>/`.
fn files(module: &str) -> Vec<PathBuf> {
    let src = root().join("src");
    let mut out = Vec::new();
    let file = src.join(format!("{module}.rs"));
    if file.exists() {
        out.push(file);
    }
    let mut dirs = vec![src.join(module)];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

/// The top-level modules `text` names as `crate::x`.
fn crate_refs(text: &str) -> BTreeSet<String> {
    text.match_indices("crate::")
        .map(|(i, _)| {
            text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|m| !m.is_empty())
        .collect()
}

#[test]
fn imports_follow_the_layer_table() {
    let table = layers();
    let lib = read(&root().join("src/lib.rs"));
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_owned())
        .collect();
    let listed: BTreeSet<String> = table.keys().cloned().collect();
    assert_eq!(
        declared, listed,
        "src/lib.rs and the table in docs/architecture.md disagree"
    );
    for (module, allowed) in &table {
        for a in allowed {
            assert!(
                table.contains_key(a),
                "{module} may import `{a}`, which is no module"
            );
            assert!(
                !table[a].contains(module),
                "{module} and {a} may import each other: the table must point one way"
            );
        }
        let sources = files(module);
        assert!(!sources.is_empty(), "no sources for {module}");
        for path in sources {
            let text = read(&path);
            let shown = path.strip_prefix(root()).unwrap().display().to_string();
            assert!(
                !text.contains("use crate::{"),
                "{shown}: grouped crate import"
            );
            for used in crate_refs(&text) {
                assert!(
                    used == *module || allowed.contains(&used),
                    "{shown} imports `{used}`, which the table in docs/architecture.md does not allow `{module}`"
                );
            }
        }
    }
}

#[test]
fn no_two_files_of_a_folder_import_each_other() {
    let mut dirs = vec![root().join("src")];
    while let Some(dir) = dirs.pop() {
        let mut siblings: BTreeMap<String, String> = BTreeMap::new();
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p.clone());
                if let Ok(t) = std::fs::read_to_string(p.join("mod.rs")) {
                    siblings.insert(e.file_name().to_string_lossy().into_owned(), t);
                }
            } else if p.extension().is_some_and(|x| x == "rs") && p.file_stem().unwrap() != "mod" {
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                siblings.insert(name, read(&p));
            }
        }
        let uses = |text: &str, other: &str| {
            text.contains(&format!("super::{other}::"))
                || text.contains(&format!("super::{other};"))
        };
        for (a, ta) in &siblings {
            for (b, tb) in &siblings {
                assert!(
                    a >= b || !(uses(ta, b) && uses(tb, a)),
                    "{}: {a} and {b} import each other",
                    dir.display()
                );
            }
        }
    }
}

/// Does `path` (`copy::manifest::RepoCopy::copy_tag`, `plan::select_repositories`, a type,
/// a variant) name something the source defines? Module segments resolve to a file or a
/// folder; the rest must be defined there.
fn exists(path: &str) -> bool {
    let parts: Vec<&str> = path.split("::").collect();
    let mut at = root().join("src");
    let mut i = 0;
    while i < parts.len() {
        let (file, dir) = (at.join(format!("{}.rs", parts[i])), at.join(parts[i]));
        if !file.exists() && !dir.is_dir() {
            break;
        }
        at = dir;
        i += 1;
    }
    if i == 0 {
        return false;
    }
    let module = parts[..i].join("/");
    let src = root().join("src");
    let mut texts: Vec<String> = Vec::new();
    if let Ok(t) = std::fs::read_to_string(src.join(format!("{module}.rs"))) {
        texts.push(t);
    }
    let mut dirs = vec![src.join(&module)];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            } else if e.path().extension().is_some_and(|x| x == "rs") {
                texts.push(read(&e.path()));
            }
        }
    }
    let all = texts.join("\n");
    parts[i..].iter().all(|name| {
        let defined = [
            format!("fn {name}("),
            format!("fn {name}<"),
            format!("struct {name}"),
            format!("enum {name}"),
            format!("trait {name}"),
            format!("impl {name}"),
            format!("    {name} {{"),
            format!("    {name},"),
            format!("    {name}("),
        ];
        defined.iter().any(|d| all.contains(d.as_str()))
    })
}

#[test]
fn the_paths_in_the_architecture_document_exist() {
    let text = doc();
    let named: Vec<String> = ticked(&text)
        .into_iter()
        .filter(|t| {
            t.contains("::")
                && t.split("::").all(|p| {
                    !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
        })
        .collect();
    assert!(
        named.len() > 40,
        "the document's paths were not found: {named:?}"
    );
    let missing: Vec<&String> = named.iter().filter(|p| !exists(p)).collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md names what the source lacks: {missing:?}"
    );
    assert!(
        !exists("copy::manifest::RepoCopy::no_such_function"),
        "the check itself must fail"
    );
}
