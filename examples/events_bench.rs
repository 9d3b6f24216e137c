//! Drivers for bench/events.sh:
//!
//!   latency: push small images one at a time into a source registry (which notifies a
//!            ferry daemon) and time each until the target serves the tag; prints p50/p95/max.
//!   load:    POST Distribution webhook envelopes at a ferry daemon as fast as it takes them,
//!            each with a new event id; prints the rate and the answers.

mod support;

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use support::{http_client, images};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Latency {
        #[arg(long)]
        source: String,
        #[arg(long)]
        target: String,
        #[arg(long, default_value = "bench/events")]
        repo: String,
        #[arg(long, default_value_t = 30)]
        pushes: usize,
    },
    Load {
        /// The webhook URL, e.g. http://127.0.0.1:9464/v1/events/distribution/src
        #[arg(long)]
        url: String,
        #[arg(long)]
        token: String,
        #[arg(long, default_value = "bench/events")]
        repo: String,
        #[arg(long, default_value_t = 10_000)]
        posts: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Distinct tags the events name (events for one tag coalesce in ferry's journal).
        #[arg(long, default_value_t = 100)]
        tags: usize,
    },
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn latency(source: &str, target: &str, repo: &str, pushes: usize) {
    let http = http_client().build().unwrap();
    let mut pusher = images::Pusher::new(source);
    let mut times = Vec::new();
    let run = std::process::id() as u64;
    for i in 0..pushes {
        let tag = format!("r{run}-{i}");
        let img = images::image(
            images::Format::Oci,
            &[&images::layer(run * 1000 + i as u64, 32 << 10)],
            "amd64",
            None,
            &tag,
        );
        for b in &img.blobs {
            pusher.blob(repo, b).await;
        }
        // The clock starts when the push completes: the manifest PUT is what notifies.
        let url = format!("{target}/v2/{repo}/manifests/{tag}");
        pusher
            .manifest(repo, &tag, img.media_type, &img.manifest)
            .await;
        let pushed = Instant::now();
        loop {
            let rsp = http
                .head(&url)
                .header("accept", img.media_type)
                .send()
                .await
                .unwrap();
            if rsp.status().is_success() {
                break;
            }
            assert!(
                pushed.elapsed() < Duration::from_secs(60),
                "{tag} never reached the target"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let secs = pushed.elapsed().as_secs_f64();
        println!("  push {i:>3} {tag}: {secs:.3} s");
        times.push(secs);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    times.sort_by(f64::total_cmp);
    println!(
        "push→target over {} pushes: p50 {:.3} s, p95 {:.3} s, max {:.3} s",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        times[times.len() - 1]
    );
}

async fn load(url: &str, token: &str, repo: &str, posts: usize, concurrency: usize, tags: usize) {
    let http = http_client()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let run = std::process::id();
    let started = Instant::now();
    let codes: Vec<u16> = futures_util::stream::iter(0..posts)
        .map(|i| {
            let body = serde_json::json!({ "events": [{
                "id": format!("load-{run}-{i}"), "action": "push",
                "target": { "mediaType": "application/vnd.oci.image.manifest.v1+json", "repository": repo,
                            "tag": format!("load-{}", i % tags.max(1)),
                            "digest": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" } }] });
            let req = http
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/vnd.docker.distribution.events.v1+json")
                .body(body.to_string());
            async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let secs = started.elapsed().as_secs_f64();
    let mut by: std::collections::BTreeMap<u16, usize> = Default::default();
    for c in codes {
        *by.entry(c).or_default() += 1;
    }
    println!(
        "{posts} webhook POSTs in {secs:.2} s: {:.0} per second; answers {by:?} (0 = no answer)",
        posts as f64 / secs
    );
}

#[tokio::main]
async fn main() {
    match Args::parse().cmd {
        Cmd::Latency {
            source,
            target,
            repo,
            pushes,
        } => latency(&source, &target, &repo, pushes).await,
        Cmd::Load {
            url,
            token,
            repo,
            posts,
            concurrency,
            tags,
        } => load(&url, &token, &repo, posts, concurrency, tags).await,
    }
}
