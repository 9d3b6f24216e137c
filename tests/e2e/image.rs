//! The container image: `scripts/image.sh` assembles an OCI layout without a container
//! engine; ferry itself pushes it from the layout into a real registry; its config says a
//! non-root user, the entrypoint and the source label, as skopeo reads it back; and (as
//! root) its layers unpacked run `ferry version` under chroot as that user.

use std::process::Command;

use crate::support::registry::TestRegistry;
use crate::support::{ferry_bin, succeeded, Ferry, Reader};

#[tokio::test]
async fn the_image_is_built_without_an_engine_pushed_by_ferry_and_runs_as_non_root() {
    let out = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    succeeded(
        Command::new(root.join("scripts/image.sh"))
            .arg("--binary")
            .arg(ferry_bin())
            .arg(out.path()),
    );

    let dst = TestRegistry::start();
    let f = Ferry::new(
        &format!(
            "[registries.layout]\nurl = \"oci:{}\"\n[registries.dst]\nurl = \"{}\"\n",
            out.path().display(),
            dst.url
        ),
        "4MiB",
        &[(
            "p.toml",
            "[[policy]]\nname = \"publish\"\nsource = \"layout\"\ntargets = [\"dst\"]\nrepositories = [\"ferry\"]\n",
        )],
    );
    f.run(&["sync"]).assert_code(0);

    let d = Reader::new(&dst.url);
    let manifest: serde_json::Value = serde_json::from_slice(
        &d.manifest("ferry", "latest")
            .await
            .expect("ferry:latest pushed"),
    )
    .unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        d.manifest("ferry", version).await,
        d.manifest("ferry", "latest").await
    );
    let config: serde_json::Value = serde_json::from_slice(
        &d.blob("ferry", manifest["config"]["digest"].as_str().unwrap())
            .await,
    )
    .unwrap();
    let c = &config["config"];
    assert_eq!(c["User"], "10001:10001", "{config}");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/usr/local/bin/ferry"]));
    assert_eq!(c["Cmd"], serde_json::json!(["daemon"]));
    let labels = &c["Labels"];
    assert!(
        labels["org.opencontainers.image.source"]
            .as_str()
            .unwrap()
            .starts_with("https://"),
        "{labels}"
    );
    assert_eq!(labels["org.opencontainers.image.version"], version);
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if let Some(head) = head {
        assert_eq!(labels["org.opencontainers.image.revision"], head.as_str());
    }

    // skopeo, which nobody here wrote, reads the same config from the registry.
    let inspected = succeeded(
        Command::new("skopeo")
            .args(["inspect", "--config", "--tls-verify=false"])
            .arg(format!("docker://{}/ferry:latest", dst.host())),
    );
    let seen: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(seen["config"]["User"], "10001:10001");

    // Unpacked in layer order, it runs: the libraries, CA certificates and zone data are there.
    let rootfs = tempfile::tempdir().unwrap();
    for l in manifest["layers"].as_array().unwrap() {
        let blob = out
            .path()
            .join("ferry/blobs/sha256")
            .join(l["digest"].as_str().unwrap().trim_start_matches("sha256:"));
        let unpacked = Command::new("tar")
            .arg("-xzf")
            .arg(&blob)
            .arg("-C")
            .arg(rootfs.path())
            .status()
            .unwrap();
        assert!(unpacked.success());
    }
    for needed in [
        "etc/ssl/certs/ca-certificates.crt",
        "usr/share/zoneinfo/UTC",
        "etc/passwd",
    ] {
        assert!(rootfs.path().join(needed).exists(), "{needed} missing");
    }
    if is_root() {
        let ran = succeeded(
            Command::new("chroot")
                .arg("--userspec=10001:10001")
                .arg(rootfs.path())
                .args(["/usr/local/bin/ferry", "version"]),
        );
        assert!(
            ran.starts_with(&format!("ferry {version} (commit ")),
            "{ran}"
        );
    } else {
        eprintln!("not root: the chroot run of the image is skipped");
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
