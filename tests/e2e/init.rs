//! `ferry init`: every example validates as written, an existing config is never touched,
//! and the README's first five minutes (init, edit two URLs, validate, plan, sync) copy a
//! real image.

use std::process::Command;

use crate::support::images::{image, layer, Format, Pusher};
use crate::support::registry::TestRegistry;
use crate::support::{assert_same_image, ferry_bin, Reader};

fn ferry(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(ferry_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("FERRY_CONFIG")
        .output()
        .unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn every_example_validates_and_an_existing_config_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    for example in ["mirror", "promote", "edge", "airgap"] {
        let out = ferry(tmp.path(), &["init", example, "--example", example]);
        assert_eq!(out.status.code(), Some(0), "{example}: {}", text(&out));
        let config = format!("{example}/ferry.toml");
        let v = ferry(tmp.path(), &["--config", &config, "validate"]);
        assert_eq!(v.status.code(), Some(0), "{example}: {}", text(&v));
        assert!(!text(&v).contains("warning"), "{example}: {}", text(&v));
        // A plan touches nothing: no state folder appears.
        assert!(!tmp.path().join(example).join("state").exists());
    }
    let before = std::fs::read(tmp.path().join("mirror/ferry.toml")).unwrap();
    std::fs::write(tmp.path().join("mirror/ferry.toml"), b"# mine\n").unwrap();
    let again = ferry(tmp.path(), &["init", "mirror", "--example", "promote"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(text(&again).contains("already exists"), "{}", text(&again));
    assert_eq!(
        std::fs::read(tmp.path().join("mirror/ferry.toml")).unwrap(),
        b"# mine\n"
    );
    assert!(!tmp.path().join("mirror/policies/promote.toml").exists());
    assert_ne!(before, b"# mine\n");
    // Without DIR: the current folder.
    let here = tempfile::tempdir().unwrap();
    assert_eq!(ferry(here.path(), &["init"]).status.code(), Some(0));
    assert!(
        here.path().join("ferry.toml").is_file()
            && here.path().join("policies/mirror.toml").is_file()
    );
}

#[tokio::test]
async fn from_init_to_a_first_sync() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image(Format::Oci, &[&layer(7, 40_000)], "amd64", None, "alpine");
    Pusher::new(&src.url)
        .image("library/alpine", "3.20.1", &img)
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    assert_eq!(ferry(tmp.path(), &["init", "site"]).status.code(), Some(0));
    // The one edit a user makes: their registries' addresses.
    let cfg = tmp.path().join("site/ferry.toml");
    let text_cfg = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("https://registry-1.docker.io", &src.url)
        .replace("https://registry.example.internal", &dst.url);
    std::fs::write(&cfg, text_cfg).unwrap();
    for step in ["validate", "plan", "sync"] {
        let out = ferry(tmp.path(), &["--config", "site/ferry.toml", step]);
        assert_eq!(out.status.code(), Some(0), "{step}: {}", text(&out));
    }
    eprintln!("init to first sync: {:?}", started.elapsed());
    assert_same_image(
        &Reader::new(&src.url),
        &Reader::new(&dst.url),
        "library/alpine",
        "mirror/docker.io/library/alpine",
        "3.20.1",
    )
    .await;
}
