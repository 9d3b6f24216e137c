//! A registry that rations pulls the way Docker Hub does, for bench/ratelimit.sh: the test
//! support's fault proxy in front of a real registry, allowing `--budget` manifest GETs per
//! `--window` seconds (`RateLimit-Limit` / `RateLimit-Remaining` on manifest answers, 429
//! without Retry-After past the budget; HEADs are free).
//!
//!   ration_proxy --upstream 127.0.0.1:5000 --budget 40 --window 10
//!
//! Prints `listening on ADDR`, then `counted N refused M` each second.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use support::faults::FaultProxy;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    upstream: String,
    #[arg(long)]
    budget: u64,
    #[arg(long, default_value_t = 10)]
    window: u64,
}

fn main() {
    let args = Args::parse();
    let proxy = FaultProxy::start(args.upstream);
    let f = &proxy.faults;
    f.pull_budget.store(args.budget, Ordering::SeqCst);
    f.pull_window_secs.store(args.window, Ordering::SeqCst);
    println!("listening on 127.0.0.1:{}", proxy.port);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        println!(
            "counted {} refused {}",
            f.pulls_counted.load(Ordering::SeqCst),
            f.pulls_refused.load(Ordering::SeqCst)
        );
    }
}
