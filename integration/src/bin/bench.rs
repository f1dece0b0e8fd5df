//! `chorus-bench`: drives whatever `sbatch`/`squeue`/`scancel` are first on `PATH` the way a
//! user does, so the same command measures Chorus or real Slurm. Prints figures; asserts
//! nothing (benchmarks are not tests).
//!
//! ```text
//!   PATH=target/release:$PATH CHORUS_CONF=... chorus-bench --ctld-pid $(pgrep -x ctld)
//!   chorus-bench --ctld-pid $(pgrep -x slurmctld)          # real Slurm
//! ```

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "chorus-bench")]
struct Args {
    /// Jobs submitted in the throughput runs.
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// Pending jobs for the squeue latency and memory figures.
    #[arg(long, default_value_t = 10_000)]
    pending: usize,
    /// Parallel submission loops.
    #[arg(long, default_value_t = 4)]
    loops: usize,
    /// The controller's pid, for its resident memory (ctld or slurmctld).
    #[arg(long)]
    ctld_pid: Option<u32>,
    /// Give up waiting for completion after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
}

fn sbatch(args: &[&str]) -> bool {
    Command::new("sbatch")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .is_ok_and(|s| s.success())
}

fn submit_loops(n: usize, loops: usize, args: &'static [&'static str]) -> (f64, usize) {
    let start = Instant::now();
    let handles: Vec<_> = (0..loops)
        .map(|l| {
            let count = n / loops + usize::from(l < n % loops);
            std::thread::spawn(move || (0..count).filter(|_| sbatch(args)).count())
        })
        .collect();
    let ok: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    (ok as f64 / start.elapsed().as_secs_f64(), ok)
}

fn active_jobs() -> usize {
    Command::new("squeue")
        .args(["-h", "-t", "PD,R,CG", "-o", "%i"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(usize::MAX)
}

fn wait_idle(timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if active_jobs() == 0 {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn main() {
    let a = Args::parse();
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let timeout = Duration::from_secs(a.timeout);
    println!("# chorus-bench: sbatch = {}", which("sbatch"));

    let idle_rss = a.ctld_pid.and_then(rss_kb);
    let t0 = Instant::now();
    let (rate1, ok1) = submit_loops(a.jobs, 1, &["--wrap", "true"]);
    println!("submit_1_loop: {rate1:.1} jobs/s ({ok1} accepted)");
    let (rate4, ok4) = submit_loops(a.jobs, a.loops, &["--wrap", "true"]);
    println!("submit_{}_loops: {rate4:.1} jobs/s ({ok4} accepted)", a.loops);
    match wait_idle(timeout) {
        Some(_) => println!(
            "all_{}_completed_after: {:.1} s (from the first submission)",
            ok1 + ok4,
            t0.elapsed().as_secs_f64()
        ),
        None => println!("all_completed_after: did not finish within {} s", a.timeout),
    }

    let (_, held) = submit_loops(a.pending, a.loops, &["-H", "--wrap", "true"]);
    let mut samples = vec![];
    for _ in 0..5 {
        let s = Instant::now();
        let out = Command::new("squeue").output().expect("squeue");
        samples.push(s.elapsed());
        assert!(out.status.success(), "squeue failed");
    }
    samples.sort();
    println!(
        "squeue_with_{held}_pending: median {:.0} ms, max {:.0} ms",
        ms(samples[2]),
        ms(samples[4])
    );
    if let (Some(pid), Some(idle)) = (a.ctld_pid, idle_rss) {
        let busy = rss_kb(pid).unwrap_or(0);
        println!("controller_rss_idle: {:.1} MiB", idle as f64 / 1024.0);
        println!(
            "controller_rss_with_{held}_pending: {:.1} MiB ({:.0} bytes per pending job)",
            busy as f64 / 1024.0,
            (busy.saturating_sub(idle) * 1024) as f64 / held.max(1) as f64
        );
    }
    let _ = Command::new("scancel").args(["-u", &user]).status();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn which(prog: &str) -> String {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| std::path::Path::new(d).join(prog))
        .find(|p| p.exists())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(not found)".into())
}
