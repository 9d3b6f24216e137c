//! A layout's garbage collection deletes only what ferry wrote there: through a symlinked
//! `blobs/sha256` it deletes nothing, and it never touches a file not named by a digest.

use crate::support::images::{self, Format, Pusher};
use crate::support::registry::TestRegistry;
use crate::support::Ferry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_blob_folder_is_not_collected_through() {
    let src = TestRegistry::start();
    let solo = |seed: u64| {
        images::image(
            Format::Oci,
            &[&images::layer(seed, 20_000)],
            "amd64",
            None,
            "links",
        )
    };
    let (v1, v2) = (solo(961), solo(962));
    let mut p = Pusher::new(&src.url);
    p.image("solo", "v1", &v1).await;
    p.image("solo", "v2", &v2).await;
    let usb = tempfile::tempdir().unwrap();
    let f = Ferry::new(
        &format!("[registries.src]\nurl = \"{}\"\n[registries.usb]\nurl = \"oci:{}\"\n", src.url, usb.path().display()),
        "64KiB",
        &[("p.toml", "[[policy]]\nname = \"p\"\nsource = \"src\"\ntargets = [\"usb\"]\nrepositories = [\"solo\"]\ndelete = true\nmax_delete = \"100%\"\n")],
    );
    f.run(&["sync"]).assert_code(0);

    // Someone's folder, reached through a link where the layout's blobs were.
    let outside = tempfile::tempdir().unwrap();
    let theirs = outside.path().join("sha256");
    std::fs::rename(usb.path().join("solo/blobs/sha256"), &theirs).unwrap();
    std::os::unix::fs::symlink(&theirs, usb.path().join("solo/blobs/sha256")).unwrap();
    std::fs::write(theirs.join("precious-notes.txt"), b"mine").unwrap();
    std::fs::write(
        theirs.join("id_ed25519"),
        b"-----BEGIN OPENSSH PRIVATE KEY-----",
    )
    .unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let before: Vec<_> = std::fs::read_dir(&theirs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    for e in &before {
        std::fs::File::options()
            .write(true)
            .open(e)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    let gone = crate::support::http_client()
        .build()
        .unwrap()
        .delete(format!("{}/v2/solo/manifests/{}", src.url, v1.digest))
        .send()
        .await
        .unwrap();
    assert!(gone.status().is_success());
    let run = f.run(&["sync"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("garbage is not collected through it"),
        "{}",
        run.all()
    );
    for e in &before {
        assert!(e.exists(), "{} was deleted", e.display());
    }
}

/// A FIFO where a layer should be: the read fails at once, naming the file, instead of
/// waiting for a writer that never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_a_layout_is_refused_not_waited_on() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = images::image(
        Format::Oci,
        &[&images::layer(963, 20_000)],
        "amd64",
        None,
        "fifo",
    );
    Pusher::new(&src.url).image("solo", "v1", &img).await;
    let usb = tempfile::tempdir().unwrap();
    let regs = format!(
        "[registries.src]\nurl = \"{}\"\n[registries.usb]\nurl = \"oci:{}\"\n[registries.dst]\nurl = \"{}\"\n",
        src.url,
        usb.path().display(),
        dst.url
    );
    let policy = |from: &str, to: &str| {
        format!("[[policy]]\nname = \"{from}-{to}\"\nsource = \"{from}\"\ntargets = [\"{to}\"]\nrepositories = [\"solo\"]\n")
    };
    Ferry::new(&regs, "64KiB", &[("p.toml", &policy("src", "usb"))])
        .run(&["sync"])
        .assert_code(0);
    let layer = usb
        .path()
        .join("solo/blobs/sha256")
        .join(&img.blobs[1].digest["sha256:".len()..]);
    std::fs::remove_file(&layer).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&layer)
        .status()
        .unwrap();
    assert!(made.success());
    let started = std::time::Instant::now();
    let run = Ferry::new(&regs, "64KiB", &[("p.toml", &policy("usb", "dst"))]).run(&["sync"]);
    run.assert_code(1);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(run.stderr.contains("not a regular file"), "{}", run.all());
}

/// `app/blobs` would be a folder among `app`'s blobs: refused, and `app` stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_cannot_nest_inside_another_layouts_blobs() {
    let src = TestRegistry::start();
    let img = |seed: u64| {
        images::image(
            Format::Oci,
            &[&images::layer(seed, 9_000)],
            "amd64",
            None,
            "nest",
        )
    };
    let mut p = Pusher::new(&src.url);
    p.image("app", "v1", &img(971)).await;
    p.image("app/blobs", "v1", &img(972)).await;
    let usb = tempfile::tempdir().unwrap();
    let f = Ferry::new(
        &format!("[registries.src]\nurl = \"{}\"\n[registries.usb]\nurl = \"oci:{}\"\n", src.url, usb.path().display()),
        "64KiB",
        &[("p.toml", "[[policy]]\nname = \"p\"\nsource = \"src\"\ntargets = [\"usb\"]\nrepositories = [\"app\", \"app/blobs\"]\n")],
    );
    let run = f.run(&["sync"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("a repository path part named `blobs`"),
        "{}",
        run.all()
    );
    assert!(!usb.path().join("app/blobs/index.json").exists());
    assert!(
        usb.path().join("app/index.json").is_file(),
        "app itself is copied"
    );
}

/// What ferry writes into a layout is owner-only whatever the umask, and readable by other
/// accounts only with `layout_mode = "shared"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_files_are_private_unless_shared() {
    use std::os::unix::fs::PermissionsExt as _;
    let src = TestRegistry::start();
    let img = images::image(
        Format::Oci,
        &[&images::layer(981, 9_000)],
        "amd64",
        None,
        "modes",
    );
    Pusher::new(&src.url).image("app", "v1", &img).await;
    for (mode, file, dir) in [("private", 0o600, 0o700), ("shared", 0o644, 0o755)] {
        let usb = tempfile::tempdir().unwrap();
        Ferry::new(
            &format!("[registries.src]\nurl = \"{}\"\n[registries.usb]\nurl = \"oci:{}\"\nlayout_mode = \"{mode}\"\n", src.url, usb.path().display()),
            "64KiB",
            &[("p.toml", "[[policy]]\nname = \"p\"\nsource = \"src\"\ntargets = [\"usb\"]\nrepositories = [\"app\"]\n")],
        )
        .run(&["sync"])
        .assert_code(0);
        let app = usb.path().join("app");
        let mode_of =
            |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for d in [app.clone(), app.join("blobs"), app.join("blobs/sha256")] {
            assert_eq!(mode_of(&d), dir, "{mode}: {}", d.display());
        }
        let mut files = vec![app.join("index.json"), app.join("oci-layout")];
        files.extend(
            std::fs::read_dir(app.join("blobs/sha256"))
                .unwrap()
                .flatten()
                .map(|e| e.path()),
        );
        assert!(files.len() >= 5, "{files:?}");
        for f in files {
            assert_eq!(mode_of(&f), file, "{mode}: {}", f.display());
        }
    }
}
