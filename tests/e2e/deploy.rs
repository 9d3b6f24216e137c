//! The Kubernetes manifests under deploy/kubernetes: every resource passes the Kubernetes
//! schemas offline (`kubernetes-validate --strict`, which scripts/test.sh installs), a
//! broken copy does not, the ServiceMonitor (a CRD without a schema there) scrapes a port
//! the Service has, and the config each ConfigMap carries passes `ferry validate`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// kubernetes-validate on PATH, or in the venv scripts/test.sh makes.
fn tool(name: &str) -> PathBuf {
    let venv = root().join("target/tools/venv/bin").join(name);
    if venv.exists() {
        return venv;
    }
    PathBuf::from(name)
}

fn validate_k8s(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(tool("kubernetes-validate"))
        .arg("--strict")
        .args(files)
        .output()
        .expect("kubernetes-validate (scripts/test.sh installs it with pip)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Every document of a YAML file, as JSON (PyYAML comes with kubernetes-validate).
fn documents(file: &Path) -> Vec<serde_json::Value> {
    let out = crate::support::succeeded(
        Command::new(tool("python3"))
            .args([
                "-c",
                "import json,sys,yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
            ])
            .arg(file),
    );
    serde_json::from_str(&out).unwrap()
}

#[test]
fn the_manifests_pass_the_kubernetes_schemas_and_their_config_passes_ferry_validate() {
    let k8s = root().join("deploy/kubernetes");
    let resources: Vec<PathBuf> = [
        "base/deployment.yaml",
        "base/service.yaml",
        "base/serviceaccount.yaml",
        "overlays/cluster/statefulset.yaml",
        "overlays/cluster/etcd.yaml",
    ]
    .iter()
    .map(|f| k8s.join(f))
    .collect();
    let (ok, out) = validate_k8s(&resources);
    assert!(
        ok && out.matches("passed for resource").count() == 7,
        "{out}"
    );

    // The check can fail: a misspelt field in a copy is refused.
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("deployment.yaml");
    let text = std::fs::read_to_string(&resources[0]).unwrap();
    std::fs::write(&broken, text.replace("readinessProbe:", "readinesProbe:")).unwrap();
    let (ok, out) = validate_k8s(&[broken]);
    assert!(!ok, "a broken manifest passed:\n{out}");

    // The ServiceMonitor scrapes /metrics on a port the Service names.
    let monitor = &documents(&k8s.join("overlays/cluster/servicemonitor.yaml"))[0];
    let service = &documents(&k8s.join("base/service.yaml"))[0];
    assert_eq!(monitor["kind"], "ServiceMonitor");
    let port = monitor["spec"]["endpoints"][0]["port"].as_str().unwrap();
    assert!(service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == port));
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    for (file, kind) in [
        ("base/deployment.yaml", 0),
        ("overlays/cluster/statefulset.yaml", 1),
    ] {
        let workload = &documents(&k8s.join(file))[kind];
        let c = &workload["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{file}");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{file}");
        assert_eq!(
            c["securityContext"]["readOnlyRootFilesystem"], true,
            "{file}"
        );
        assert_eq!(
            workload["spec"]["template"]["spec"]["securityContext"]["runAsUser"],
            10001
        );
    }

    // The ConfigMaps as kustomize makes them (the overlay's ferry.toml over the base's),
    // mounted as the workloads mount them: ferry.toml and policies/ beside it.
    for config in [
        k8s.join("base/ferry.toml"),
        k8s.join("overlays/cluster/ferry.toml"),
    ] {
        let etc = tempfile::tempdir().unwrap();
        std::fs::create_dir(etc.path().join("policies")).unwrap();
        std::fs::copy(&config, etc.path().join("ferry.toml")).unwrap();
        std::fs::copy(
            k8s.join("base/policies/mirror.toml"),
            etc.path().join("policies/mirror.toml"),
        )
        .unwrap();
        crate::support::succeeded(
            Command::new(crate::support::ferry_bin())
                .arg("--config")
                .arg(etc.path().join("ferry.toml"))
                .arg("validate")
                .env("PRIVATE_PASSWORD", "from-the-secret"),
        );
    }
}
