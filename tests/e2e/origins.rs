//! Credentials go only to the origin they are for. A registry (here Nexus's profile, whose
//! upload `Location`s name another port, as behind a proxy) can point ferry anywhere; the
//! other origin gets no `Authorization` unless `trusted_origins` says it is the same
//! service, and the refusal says so.

use crate::compat::registry_entry;
use crate::support::images::{self, Format, Pusher};
use crate::support::quirks::knobs::Profile;
use crate::support::quirks::QuirksProxy;
use crate::support::registry::TestRegistry;
use crate::support::{Ferry, Reader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_location_on_another_origin_gets_no_credentials_unless_trusted() {
    use std::sync::atomic::Ordering;
    let src = TestRegistry::start();
    let backend = TestRegistry::start();
    let proxy = QuirksProxy::start(Profile::Nexus, &backend.url);
    proxy.create("team/app");
    let img = images::image(
        Format::Oci,
        &[&images::layer(951, 40_000)],
        "amd64",
        None,
        "origins",
    );
    Pusher::new(&src.url).image("team/app", "v1", &img).await;
    let (trusted, env) = registry_entry("target", Profile::Nexus, &proxy.url());
    assert!(trusted.contains("trusted_origins"), "{trusted}");
    let bare: String = trusted
        .lines()
        .filter(|l| !l.starts_with("trusted_origins"))
        .map(|l| format!("{l}\n"))
        .collect();
    let policy = "[[policy]]\nname = \"p\"\nsource = \"source\"\ntargets = [\"target\"]\nrepositories = [\"team/app\"]\n";
    let make = |entry: &str| {
        let mut f = Ferry::new(
            &format!("[registries.source]\nurl = \"{}\"\n\n{entry}", src.url),
            "1MiB",
            &[("p.toml", policy)],
        );
        f.env = env.clone();
        f
    };

    let run = make(&bare).run(&["sync"]);
    run.assert_code(1);
    let other = crate::support::quirks::other_origin(&proxy.url()).unwrap();
    assert!(
        run.stderr.contains(&format!(
            "the registry sent ferry to {other}, which asks for credentials"
        )) && run.stderr.contains("trusted_origins"),
        "{}",
        run.all()
    );
    let stats = &proxy.state.stats;
    assert!(
        stats.other_port_requests.load(Ordering::SeqCst) > 0,
        "the Location was followed"
    );
    assert_eq!(
        stats.other_port_auth.load(Ordering::SeqCst),
        0,
        "no credentials went there"
    );
    assert!(
        !run.all().contains(Profile::Nexus.credentials().unwrap().1),
        "no secret printed"
    );
    assert_eq!(
        Reader::new(&backend.url).digest("team/app", "v1").await,
        None
    );

    // Named as the same service, it gets them, and the image lands.
    make(&trusted).run(&["sync"]).assert_code(0);
    assert!(stats.other_port_auth.load(Ordering::SeqCst) > 0);
    assert_eq!(
        Reader::new(&backend.url)
            .digest("team/app", "v1")
            .await
            .as_deref(),
        Some(img.digest.as_str())
    );
}

#[test]
fn credentials_in_urls_and_cleartext_trusted_origins_fail_validate() {
    let f = Ferry::new(
        "[registries.a]\nurl = \"https://robot:Victim-Passw0rd@registry.example\"\n\n[registries.b]\nurl = \"https://b.example\"\ntrusted_origins = [\"http://b.example:8080\", \"https://b.example:8443/path\"]\n",
        "1MiB",
        &[],
    );
    let run = f.run(&["validate"]);
    run.assert_code(2);
    let all = run.all();
    assert!(!all.contains("Victim-Passw0rd"), "{all}");
    assert!(all.contains("ferry.toml:8:7: registries.a.url: `https://registry.example/` was given with a user and password"), "{all}");
    assert!(
        all.contains("`http://b.example:8080` is plain http for an https registry"),
        "{all}"
    );
    assert!(
        all.contains("`https://b.example:8443/path` is not an origin"),
        "{all}"
    );
}

#[test]
fn credentials_over_plain_http_off_this_machine_are_a_warning() {
    let mut f = Ferry::new(
        "[registries.lab]\nurl = \"http://registry.lab.example:5000\"\nusername = \"robot\"\npassword_env = \"LAB_PASSWORD\"\n\n[registries.local]\nurl = \"http://127.0.0.1:5000\"\nusername = \"robot\"\npassword_env = \"LAB_PASSWORD\"\n",
        "1MiB",
        &[],
    );
    f.env
        .push(("LAB_PASSWORD".into(), "Victim-Passw0rd".into()));
    let run = f.run(&["validate"]);
    let all = run.all();
    assert!(all.contains("registries.lab: credentials are sent over plain http to http://registry.lab.example:5000"), "{all}");
    assert!(
        !all.contains("registries.local:"),
        "loopback is fine: {all}"
    );
    assert!(!all.contains("Victim-Passw0rd"), "{all}");
}
