//! `chorus-group-bench`: figures for a replicated controller group, on a local
//! `chorus up --controllers 3` it starts itself (binaries next to this one). Prints figures;
//! asserts nothing (benchmarks are not tests).
//!
//! ```text
//!   cargo build --release --workspace --bins
//!   target/release/chorus-group-bench --kills 10 --jobs 1000
//!     ├─ throughput: JOBS × `sbatch --wrap true`, 1 client, then 8 clients (every entry
//!     │  fsync'ed on a quorum of 3 before the reply)
//!     └─ failover: KILLS × (kill -9 the leader → time until an `sbatch` is acknowledged by
//!        the new leader; `chorus up` restarts the old one, the group is whole again before
//!        the next kill)
//! ```

use std::time::{Duration, Instant};

use chorus_integration::{Cluster, ClusterOpts};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "chorus-group-bench")]
struct Args {
    /// Controllers in the group.
    #[arg(long, default_value_t = 3)]
    controllers: u32,
    /// Jobs per throughput run.
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// Leader kills for the failover figure.
    #[arg(long, default_value_t = 10)]
    kills: usize,
}

fn submit(c: &Cluster) -> bool {
    c.run("sbatch", &["--wrap", "true"]).status.success()
}

/// `jobs` submissions from `clients` parallel loops: jobs per second, and how many failed.
fn throughput(c: &std::sync::Arc<Cluster>, jobs: usize, clients: usize) -> (f64, usize) {
    let start = Instant::now();
    let loops: Vec<_> = (0..clients)
        .map(|i| {
            let c = std::sync::Arc::clone(c);
            let n = jobs / clients + usize::from(i < jobs % clients);
            std::thread::spawn(move || (0..n).filter(|_| !submit(&c)).count())
        })
        .collect();
    let failed = loops.into_iter().map(|l| l.join().unwrap_or(jobs)).sum::<usize>();
    ((jobs - failed) as f64 / start.elapsed().as_secs_f64(), failed)
}

/// Kills the leader and times the first acknowledged submission after it.
fn failover(c: &Cluster) -> Duration {
    let leader = c.wait_group(Duration::from_secs(120));
    let pid = c.ctld_pid(&leader).expect("the leader's pid");
    // SAFETY: kill(2) of a controller this benchmark's cluster started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let killed = Instant::now();
    while !submit(c) {}
    killed.elapsed()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let a = Args::parse();
    let c = std::sync::Arc::new(Cluster::start(ClusterOpts {
        controllers: a.controllers,
        nodes: 2,
        node_cpus: 4,
        ..ClusterOpts::default()
    }));
    c.wait_group(Duration::from_secs(120));
    println!("controller group: {} controllers, every entry fsync'ed on a quorum", a.controllers);
    for clients in [1, 8] {
        let (rate, failed) = throughput(&c, a.jobs, clients);
        println!(
            "sbatch, {clients} client(s): {rate:.1} jobs/s ({} jobs, {failed} failed)",
            a.jobs
        );
    }
    let mut times: Vec<Duration> = (0..a.kills).map(|_| failover(&c)).collect();
    times.sort();
    if let (Some(max), Some(median)) = (times.last(), times.get(times.len() / 2)) {
        let all: Vec<String> = times.iter().map(|t| format!("{:.0}", ms(*t))).collect();
        println!(
            "failover (kill -9 of the leader → first acknowledged sbatch), {} kills: median {:.0} ms, max {:.0} ms [{}]",
            times.len(),
            ms(*median),
            ms(*max),
            all.join(" ")
        );
    }
}
