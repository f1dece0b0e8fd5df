//! `scancel`: cancel or signal jobs, as Slurm's scancel does.

use chorus_cli::{Ctl, current_user, run_main};
use chorus_core::job::JobState;
use chorus_proto::client as pb;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "scancel", disable_version_flag = true, infer_long_args = true)]
struct Args {
    /// Signal to send instead of cancelling (name or number).
    #[arg(short = 's', long = "signal")]
    signal: Option<String>,
    /// Only jobs of this user.
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// Only jobs in this state (PENDING, RUNNING, ...).
    #[arg(short = 't', long = "state")]
    state: Option<String>,
    /// Only jobs with this name.
    #[arg(short = 'n', long = "name", alias = "jobname")]
    name: Option<String>,
    /// Only jobs in this partition.
    #[arg(short = 'p', long = "partition")]
    partition: Option<String>,
    /// Signal only the batch shell (Chorus signals the batch step's process group).
    #[arg(short = 'b', long = "batch")]
    batch: bool,
    /// Signal every step (the same as the default here).
    #[arg(short = 'f', long = "full")]
    full: bool,
    #[arg(short = 'Q', long = "quiet")]
    quiet: bool,
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
    /// Jobs: `123`, `123_4`, `123_[1-3]`.
    jobs: Vec<String>,
}

fn main() {
    let a = Args::parse();
    run_main("scancel", cancel(a))
}

fn signal_number(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") { name } else { format!("SIG{name}") };
    name.parse::<nix::sys::signal::Signal>().ok().map(|s| s as i32)
}

async fn cancel(a: Args) -> anyhow::Result<i32> {
    let mut pairs = vec![];
    for j in &a.jobs {
        match chorus_cli::parse_job_ids(j) {
            Ok(p) => pairs.extend(p),
            Err(_) => {
                eprintln!("scancel: error: Invalid job id {j}");
                return Ok(1);
            }
        }
    }
    let filtered =
        a.user.is_some() || a.state.is_some() || a.name.is_some() || a.partition.is_some();
    if pairs.is_empty() && !filtered {
        eprintln!("scancel: error: No job identification provided");
        return Ok(1);
    }
    let signal = match &a.signal {
        Some(s) => match signal_number(s) {
            Some(n) => n,
            None => {
                eprintln!("scancel: error: Invalid job signal: {s}");
                return Ok(1);
            }
        },
        None => 0,
    };
    let state = match &a.state {
        Some(s) => match JobState::parse(s) {
            Some(st) => Some(st),
            None => {
                eprintln!("scancel: error: Invalid job state specified: {s}");
                return Ok(1);
            }
        },
        None => None,
    };
    let mut ctl = Ctl::connect().await?;
    let ids: Vec<u32> = pairs.iter().map(|p| p.0).collect();
    let (jobs, _) = ctl.jobs(ids.clone(), false).await?;
    let mut targets: Vec<u32> = if pairs.is_empty() {
        jobs.iter().map(|j| j.id).collect()
    } else {
        chorus_cli::resolve_ids(&pairs, &jobs)
    };
    let by_id: std::collections::HashMap<u32, &chorus_core::Job> =
        jobs.iter().map(|j| (j.id, j)).collect();
    targets.retain(|id| {
        let Some(j) = by_id.get(id) else { return !filtered };
        a.user.as_ref().is_none_or(|u| &j.spec.user == u)
            && state.is_none_or(|s| j.state == s)
            && a.name.as_ref().is_none_or(|n| &j.spec.name == n)
            && a.partition.as_ref().is_none_or(|p| &j.partition == p)
    });
    for (id, task) in &pairs {
        let known = match task {
            Some(t) => jobs.iter().any(|j| j.array == Some((*id, *t))),
            None => jobs.iter().any(|j| j.id == *id || j.array.map(|x| x.0) == Some(*id)),
        };
        if !known && !a.quiet {
            let shown = task.map_or(id.to_string(), |t| format!("{id}_{t}"));
            eprintln!("scancel: error: Kill job error on job id {shown}: Invalid job id specified");
        }
    }
    targets.retain(|id| by_id.contains_key(id));
    if targets.is_empty() {
        return Ok(0);
    }
    let (_, uid, _) = current_user();
    let req = pb::CancelRequest { job_ids: targets, signal, uid };
    match chorus_cli::rpc!(ctl, cancel, req.clone()) {
        Ok(_) => Ok(0),
        Err(s) => {
            eprintln!("scancel: error: {}", s.message());
            Ok(1)
        }
    }
}
