//! `chorus-sim`: runs the deterministic simulator of the replicated controller
//! (`chorus_integration::sim`). One seed prints its report; many seeds print each failure
//! with the command that replays it, then totals. Exits 1 when any seed fails.
//!
//! ```text
//!   chorus-sim --seed 42 [--trace]          one run, every event on stderr with --trace
//!   chorus-sim --seeds 2000 [--start 0]     many runs, on every core
//!   RUST_LOG=raft=debug chorus-sim --seed 42 --log   raft-rs's own logs too
//! ```

use std::process::ExitCode;
use std::time::Instant;

use chorus_integration::sim::{self, Report, Sabotage, SimConfig};
use clap::{Parser, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "chorus-sim", about = "Deterministic simulation of the replicated controller")]
struct Args {
    /// Run this one seed and print its report.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds, from --start.
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed of --seeds.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Controllers: 3 or 5 (default: drawn from each seed).
    #[arg(long, value_parser = replicas)]
    replicas: Option<usize>,
    /// Node agents (default: 2 to 4, drawn from each seed).
    #[arg(long)]
    nodes: Option<usize>,
    /// Submissions (default: 20 to 60, drawn from each seed).
    #[arg(long)]
    jobs: Option<usize>,
    /// Virtual ms of faults before the heal phase.
    #[arg(long, default_value_t = SimConfig::default().fault_ms)]
    fault_ms: u64,
    /// Virtual ms the heal phase may take.
    #[arg(long = "heal-ms", default_value_t = SimConfig::default().heal_deadline_ms)]
    heal_ms: u64,
    #[arg(long, hide = true)]
    sabotage: Option<SabotageArg>,
    /// Print every simulated event to stderr.
    #[arg(long)]
    trace: bool,
    /// Send raft-rs's and the replica's logs to stderr, filtered by RUST_LOG (default: info).
    #[arg(long)]
    log: bool,
    /// Threads for --seeds (default: every core).
    #[arg(long)]
    threads: Option<usize>,
}

fn replicas(s: &str) -> Result<usize, String> {
    match s {
        "3" => Ok(3),
        "5" => Ok(5),
        _ => Err("the simulator runs 3 or 5 controllers".into()),
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SabotageArg {
    DivergeState,
    DoubleRun,
}

fn config(a: &Args) -> SimConfig {
    SimConfig {
        replicas: a.replicas,
        nodes: a.nodes,
        jobs: a.jobs,
        fault_ms: a.fault_ms,
        heal_deadline_ms: a.heal_ms,
        sabotage: a.sabotage.map(|s| match s {
            SabotageArg::DivergeState => Sabotage::DivergeState,
            SabotageArg::DoubleRun => Sabotage::DoubleRun,
        }),
        trace: a.trace,
    }
}

fn one(seed: u64, cfg: &SimConfig) -> ExitCode {
    match sim::run(seed, cfg) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("{f}");
            ExitCode::FAILURE
        }
    }
}

fn many(start: u64, n: u64, cfg: &SimConfig, threads: usize) -> ExitCode {
    let began = Instant::now();
    let results = sim::run_seeds(start..start + n, cfg, threads);
    let mut total = Report::default();
    let mut failures = 0;
    for r in &results {
        match r {
            Ok(r) => add(&mut total, r),
            Err(f) => {
                failures += 1;
                println!("{f}");
            }
        }
    }
    println!(
        "{n} seeds ({start}..{}), {failures} failed, {:.1} s on {threads} threads; passing runs: \
         {} steps, {:.0} s virtual, {} elections, {} crashes, {} partitions, {} messages \
         ({} dropped, {} duplicated, {} cut, {} snapshots), {} jobs acknowledged, {} finished \
         ({} node failures), {} agent restarts",
        start + n,
        began.elapsed().as_secs_f64(),
        total.steps,
        total.virtual_ms as f64 / 1000.0,
        total.elections,
        total.crashes,
        total.partitions,
        total.messages,
        total.dropped,
        total.duplicated,
        total.cut,
        total.snapshots,
        total.acknowledged,
        total.finished,
        total.node_fail,
        total.agent_restarts,
    );
    if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn add(t: &mut Report, r: &Report) {
    t.steps += r.steps;
    t.virtual_ms += r.virtual_ms;
    t.elections += r.elections;
    t.crashes += r.crashes;
    t.partitions += r.partitions;
    t.messages += r.messages;
    t.dropped += r.dropped;
    t.duplicated += r.duplicated;
    t.cut += r.cut;
    t.snapshots += r.snapshots;
    t.acknowledged += r.acknowledged;
    t.finished += r.finished;
    t.node_fail += r.node_fail;
    t.agent_restarts += r.agent_restarts;
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.log {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_writer(std::io::stderr)
            .without_time()
            .init();
    }
    let cfg = config(&args);
    let threads =
        args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    match (args.seed, args.seeds) {
        (Some(seed), _) => one(seed, &cfg),
        (None, Some(n)) => many(args.start, n, &cfg, threads),
        (None, None) => {
            eprintln!("chorus-sim: give --seed S or --seeds N");
            ExitCode::from(2)
        }
    }
}
