//! Not a test: the per-profile figures `bench/profiles.sh` prints (ignored unless asked for,
//! run in release). For each profile, side by side in one run: ferry syncing an image with a
//! 16 MiB layer and two small ones into the proxy, then skopeo copying the same image into a
//! fresh proxy of the same profile; wall time and requests each, and the upload strategy
//! ferry learnt (read back with `ferry probe`).

use std::time::Instant;

use crate::compat::registry_entry;
use crate::quirks::{skopeo_copy, skopeo_login};
use crate::support::images::{image, layer, Format, Pusher};
use crate::support::quirks::knobs::Profile;
use crate::support::quirks::QuirksProxy;
use crate::support::registry::TestRegistry;
use crate::support::{assert_same_image, Ferry, Reader};

const REPS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: bench/profiles.sh"]
async fn bench_profiles() {
    let src = TestRegistry::start();
    let img = image(
        Format::Oci,
        &[
            &layer(81, 16 << 20),
            &layer(82, 300 << 10),
            &layer(83, 40 << 10),
        ],
        "amd64",
        None,
        "bench",
    );
    Pusher::new(&src.url).image("team/app", "v1", &img).await;
    println!("profile\tstrategy\tferry_s\tskopeo_s\tratio\tferry_requests\tskopeo_requests");
    for profile in Profile::ALL {
        let name = profile.name();
        let (mut ft, mut st, mut fr, mut sr) = (vec![], vec![], 0, 0);
        let mut strategy = String::new();
        let mut skopeo_ok = true;
        for _ in 0..REPS {
            let backend = TestRegistry::start();
            let proxy = QuirksProxy::start(profile, &backend.url);
            proxy.create("team/app");
            let (entry, env) = registry_entry("target", profile, &proxy.url());
            let mut ferry = Ferry::new(
                &format!("[registries.source]\nurl = \"{}\"\n\n{entry}", src.url),
                "4MiB",
                &[("p.toml", "[[policy]]\nname = \"b\"\nsource = \"source\"\ntargets = [\"target\"]\nrepositories = [\"team/app\"]\n")],
            );
            ferry.env = env;
            let t = Instant::now();
            ferry.run(&["sync"]).assert_code(0);
            ft.push(t.elapsed().as_secs_f64());
            fr = proxy.stats().lines().len();
            let (s, d) = (Reader::new(&src.url), Reader::new(&backend.url));
            assert_same_image(&s, &d, "team/app", "team/app", "v1").await;
            let probe = ferry.run(&["probe", "target", "--json"]);
            let v: serde_json::Value = serde_json::from_str(&probe.stdout).unwrap_or_default();
            strategy = v["findings"]
                .as_array()
                .and_then(|a| a.iter().find(|f| f["what"] == "upload"))
                .and_then(|f| f["detail"].as_str())
                .map_or("?".into(), |d| d.split(" (").next().unwrap_or(d).to_owned());
            // Nothing refused, nothing learnt: chunks were taken.
            if strategy.starts_with("not learnt") {
                strategy = "chunked".into();
            }

            let backend = TestRegistry::start();
            let proxy = QuirksProxy::start(profile, &backend.url);
            proxy.create("team/app");
            let dir = tempfile::tempdir().unwrap();
            let (creds, file) = skopeo_login(profile, &proxy, dir.path());
            let t = Instant::now();
            let (ok, _) = skopeo_copy(
                &format!("docker://{}/team/app:v1", src.host()),
                &format!("docker://{}/team/app:v1", proxy.host()),
                creds,
                file.as_deref(),
            );
            st.push(t.elapsed().as_secs_f64());
            sr = proxy.stats().lines().len();
            skopeo_ok &= ok;
        }
        let (f, s) = (median(ft), median(st));
        let (s_col, ratio) = if skopeo_ok {
            (format!("{s:.2}"), format!("{:.2}", f / s))
        } else {
            ("fails".into(), "-".into())
        };
        println!("{name}\t{strategy}\t{f:.2}\t{s_col}\t{ratio}\t{fr}\t{sr}");
    }
}
