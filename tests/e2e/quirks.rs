//! The quirks proxy checked against a client nobody here wrote: skopeo (containers/image:
//! one streaming PATCH, then an empty PUT) pushes an image with a layer of several chunks
//! into every profile, and each behaves as the catalogue says that registry treats skopeo.
//! Raw requests then show that each profile's refusals are there for a client that chunks.

use crate::support::images::{image, layer, Format, Pusher};
use crate::support::quirks::knobs::Profile;
use crate::support::quirks::QuirksProxy;
use crate::support::registry::TestRegistry;

/// Run skopeo copy; (success, stderr).
pub fn skopeo_copy(
    from: &str,
    to: &str,
    creds: Option<(&str, &str)>,
    authfile: Option<&std::path::Path>,
) -> (bool, String) {
    let mut c = std::process::Command::new("skopeo");
    c.args([
        "--insecure-policy",
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--retry-times",
        "0",
    ]);
    if let Some((u, p)) = creds {
        c.arg("--dest-creds").arg(format!("{u}:{p}"));
    }
    if let Some(f) = authfile {
        c.arg("--dest-authfile").arg(f);
    }
    let out = c
        .arg(from)
        .arg(to)
        .output()
        .expect("skopeo: apt-get install -y skopeo");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// How skopeo logs in to `proxy`: a username and password, or (ACR) an authfile in `dir`.
pub fn skopeo_login(
    profile: Profile,
    proxy: &QuirksProxy,
    dir: &std::path::Path,
) -> (
    Option<(&'static str, &'static str)>,
    Option<std::path::PathBuf>,
) {
    if profile != Profile::Acr {
        return (profile.credentials(), None);
    }
    // ACR's docker login stores an identity (refresh) token beside an empty password for
    // the all-zero user; containers/image POSTs it to the token endpoint.
    use base64::Engine;
    let user =
        base64::engine::general_purpose::STANDARD.encode("00000000-0000-0000-0000-000000000000:");
    let authfile = dir.join("auth.json");
    std::fs::write(
        &authfile,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{user}","identitytoken":"{}"}}}}}}"#,
            proxy.host(),
            crate::support::quirks::knobs::PASS
        ),
    )
    .unwrap();
    (None, Some(authfile))
}

/// The digest of `repo:tag` on the proxy's backend, read directly (not through the proxy).
async fn backend_digest(backend: &TestRegistry, repo: &str, tag: &str) -> Option<String> {
    let url = format!("{}/v2/{repo}/manifests/{tag}", backend.url);
    let rsp = crate::support::http_client()
        .build()
        .unwrap()
        .head(url)
        .header("accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
        .send()
        .await
        .unwrap();
    rsp.headers()
        .get("docker-content-digest")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushes_into_every_profile_as_the_catalogue_says() {
    let src = TestRegistry::start();
    let big = layer(21, 12 << 20);
    let oci = image(Format::Oci, &[&big], "amd64", None, "quirks");
    let docker = image(Format::Docker, &[&big], "amd64", None, "quirks-docker");
    let mut p = Pusher::new(&src.url);
    p.image("team/app", "oci", &oci).await;
    p.image("team/app", "docker", &docker).await;
    for profile in Profile::ALL {
        let backend = TestRegistry::start();
        let proxy = QuirksProxy::start(profile, &backend.url);
        proxy.create("team");
        let dir = tempfile::tempdir().unwrap();
        let (creds, file) = skopeo_login(profile, &proxy, dir.path());
        let file = file.as_deref();
        let from = format!("docker://{}/team/app:oci", src.host());
        let to = format!("docker://{}/team/app:oci", proxy.host());
        let (ok, err) = skopeo_copy(&from, &to, creds, file);
        if profile == Profile::Artifactory {
            // JF-6: a virtual repository answers 403 to an existence HEAD of something it
            // lacks. containers/image takes that as an error (ggcr, and ferry, as absent).
            assert!(!ok && err.contains("403"), "artifactory: {err}");
            continue;
        }
        assert!(
            ok,
            "{}: skopeo copy failed: {err}\n{:#?}",
            profile.name(),
            proxy.stats().lines()
        );
        assert_eq!(
            backend_digest(&backend, "team/app", "oci").await.as_deref(),
            Some(oci.digest.as_str()),
            "{}: the digest changed",
            profile.name()
        );
        assert!(
            proxy.stats().count("PATCH", "/blobs/uploads/") >= 1,
            "{}",
            profile.name()
        );
        let from = format!("docker://{}/team/app:docker", src.host());
        let to = format!("docker://{}/team/app:docker", proxy.host());
        let (ok, err) = skopeo_copy(&from, &to, creds, file);
        let got = backend_digest(&backend, "team/app", "docker").await;
        if profile == Profile::Zot {
            // ZOT-1: zot refuses Docker v2; containers/image then converts to OCI, so the
            // digest on the target is not the source's.
            assert!(ok, "zot: skopeo gave up instead of converting: {err}");
            assert_ne!(
                got.as_deref(),
                Some(docker.digest.as_str()),
                "zot took a Docker v2 manifest"
            );
        } else {
            assert!(ok, "{}: {err}", profile.name());
            assert_eq!(
                got.as_deref(),
                Some(docker.digest.as_str()),
                "{}",
                profile.name()
            );
        }
        if profile == Profile::Ecr {
            // ECR-7: a repository that was not created: the upload POST is hung up on.
            let to = format!("docker://{}/nowhere/app:oci", proxy.host());
            let (ok, err) = skopeo_copy(
                &format!("docker://{}/team/app:oci", src.host()),
                &to,
                creds,
                None,
            );
            assert!(!ok, "ecr took a push to a missing repository");
            assert!(
                err.contains("EOF") || err.contains("connection") || err.contains("closed"),
                "{err}"
            );
        }
    }
}
