//! Push a deterministic, realistic image corpus into a registry (for the demo and the
//! benchmark). The generator is the one the tests use.
//!
//!   cargo run --example corpus -- --registry http://127.0.0.1:5000 --prefix apps/web --repos 3

mod support;

use clap::Parser;
use support::images;

#[derive(Parser)]
struct Args {
    /// Registry root URL (anonymous push).
    #[arg(long)]
    registry: String,
    /// Repository name prefix; repositories are PREFIX-000, PREFIX-001, ...
    #[arg(long, default_value = "app")]
    prefix: String,
    #[arg(long, default_value_t = 3)]
    repos: usize,
    /// Version tags per repository (plus `latest`).
    #[arg(long, default_value_t = 2)]
    tags: usize,
    /// Size of the base layer shared by every repository (bytes, or with KiB/MiB/GiB).
    #[arg(long, default_value = "2MiB")]
    base_size: ferry::model::ByteSize,
    /// Size of the layer shared by one repository's tags.
    #[arg(long, default_value = "512KiB")]
    repo_layer: ferry::model::ByteSize,
    /// Smallest and largest per-tag layer.
    #[arg(long, default_value = "64KiB")]
    app_min: ferry::model::ByteSize,
    #[arg(long, default_value = "1MiB")]
    app_max: ferry::model::ByteSize,
    /// Every N-th repository is multi-arch (0: none).
    #[arg(long, default_value_t = 3)]
    index_every: usize,
    /// Add a cosign-style signature tag to each repository's newest image.
    #[arg(long)]
    sign: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let spec = images::CorpusSpec {
        prefix: a.prefix,
        repos: a.repos,
        tags: a.tags,
        base_size: a.base_size.0 as usize,
        repo_layer: a.repo_layer.0 as usize,
        app_layer: (a.app_min.0 as usize, a.app_max.0.max(a.app_min.0) as usize),
        index_every: a.index_every,
        sign: a.sign,
        seed: a.seed,
    };
    let started = std::time::Instant::now();
    let corpus = images::push_corpus(&a.registry, &spec).await;
    println!(
        "pushed {} tags in {} repositories ({:.1} MiB of blobs) in {:.1}s",
        corpus.tags.len(),
        spec.repos,
        corpus.bytes as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
}
