//! `trust-sim`: measures replication against liars through the production state machine,
//! scheduler, policies and validators (`chorus_integration::trust::sim`).
//!
//! ```text
//!   trust-sim --jobs 10000 --liars 0.1 --policy fixed:2|fixed:3|adaptive[:N,T,S]
//!             [--collude] [--patient] [--nodes 100] [--seed 1]
//!       the run's report, then its last line:
//!       accepted_wrong=X overhead=Y false_slash=Z liar_net=A honest_net=B
//!   trust-sim --table    every policy × 1, 10, 30 % liars × naive, patient, colluding, as a
//!                        Markdown table (on every core), then the line of the run asked for
//! ```

use std::time::Instant;

use chorus_core::trust::ReplicationSpec;
use chorus_integration::trust::sim::{self, MIN_JOBS, SimConfig};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "trust-sim", about = "How well replication catches lying nodes, measured")]
struct Args {
    /// Jobs in the workload (the issue's measurements run at least 10000).
    #[arg(long, default_value_t = MIN_JOBS)]
    jobs: u32,
    /// Share of the nodes that lie: a fraction (0.1) or a percentage (10%).
    #[arg(long, default_value = "0.1", value_parser = share)]
    liars: f64,
    /// The replication policy: fixed:N or adaptive[:REPLICAS,TRUSTED_AFTER,SPOT_CHECK].
    #[arg(long, default_value = "fixed:2")]
    policy: ReplicationSpec,
    /// Liars give the same wrong output, so two of them in one quorum win.
    #[arg(long)]
    collude: bool,
    /// Liars are honest until the adaptive policy trusts them.
    #[arg(long)]
    patient: bool,
    /// Nodes, of one CPU each, each its own operator with bonded stake.
    #[arg(long, default_value_t = SimConfig::default().nodes,
          value_parser = clap::value_parser!(u32).range(1..))]
    nodes: u32,
    /// Seeds the population, the job durations and the scheduler's coin.
    #[arg(long, default_value_t = SimConfig::default().seed)]
    seed: u64,
    /// Run the whole matrix and print it as a Markdown table first.
    #[arg(long)]
    table: bool,
    /// Threads for --table (default: every core).
    #[arg(long)]
    threads: Option<usize>,
}

fn share(s: &str) -> Result<f64, String> {
    let (text, scale) = match s.strip_suffix('%') {
        Some(p) => (p, 100.0),
        None => (s, 1.0),
    };
    match text.trim().parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&(x / scale)) => Ok(x / scale),
        _ => Err(format!("`{s}`: expected a fraction from 0 to 1 or a percentage (10%)")),
    }
}

fn main() {
    let a = Args::parse();
    if a.jobs < MIN_JOBS {
        eprintln!(
            "trust-sim: {} jobs; the measurements of docs/trust-model.md run {MIN_JOBS}",
            a.jobs
        );
    }
    let asked = SimConfig {
        jobs: a.jobs,
        nodes: a.nodes,
        liars: a.liars,
        policy: a.policy,
        collude: a.collude,
        patient: a.patient,
        seed: a.seed,
        ..SimConfig::default()
    };
    let began = Instant::now();
    if a.table {
        let configs = sim::matrix(&asked);
        let threads = a.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let rows = sim::run_all(&configs, threads);
        print!("{}", sim::table(&rows));
        eprintln!(
            "trust-sim: {} runs of {} jobs on {} nodes (seed {}) in {:.1} s on {threads} threads",
            rows.len(),
            a.jobs,
            a.nodes,
            a.seed,
            began.elapsed().as_secs_f64()
        );
        let m = match rows.into_iter().find(|m| m.config == asked) {
            Some(m) => m,
            None => sim::run(&asked),
        };
        println!("{}", m.line());
        return;
    }
    let m = sim::run(&asked);
    eprintln!("trust-sim: {:.1} s", began.elapsed().as_secs_f64());
    println!("{m}");
}
