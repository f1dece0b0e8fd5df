//! `squeue`: list jobs, as Slurm's squeue does.

use chorus_cli::format::squeue::{SqueueOpts, check_opts, squeue};
use chorus_cli::{Ctl, current_user, print, run_main};
use chorus_core::job::JobState;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "squeue",
    disable_help_flag = true,
    disable_version_flag = true,
    infer_long_args = true
)]
struct Args {
    /// Do not print a header.
    #[arg(short = 'h', long = "noheader")]
    noheader: bool,
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Jobs to show: `123`, `123_4`, comma-separated.
    #[arg(short = 'j', long = "jobs")]
    jobs: Option<String>,
    /// Only these users (comma-separated).
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// Only the calling user's jobs.
    #[arg(long = "me")]
    me: bool,
    /// Only these states (comma-separated, `all` for every state).
    #[arg(short = 't', long = "states")]
    states: Option<String>,
    /// Only these partitions.
    #[arg(short = 'p', long = "partition")]
    partition: Option<String>,
    /// Only these job names.
    #[arg(short = 'n', long = "name")]
    name: Option<String>,
    /// Output format with `%` fields.
    #[arg(short = 'o', long = "format")]
    format: Option<String>,
    /// Output format with field names.
    #[arg(short = 'O', long = "Format")]
    format_long: Option<String>,
    /// Long listing.
    #[arg(short = 'l', long = "long")]
    long: bool,
    /// Expected start times of pending jobs.
    #[arg(long = "start")]
    start: bool,
    /// One line per array task.
    #[arg(short = 'r', long = "array")]
    array: bool,
    /// Sort order.
    #[arg(short = 'S', long = "sort")]
    sort: Option<String>,
    #[arg(short = 'a', long = "all")]
    all: bool,
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
    #[arg(short = 'V', long = "version")]
    version: bool,
}

fn main() {
    let a = Args::parse();
    run_main("squeue", list(a))
}

async fn list(a: Args) -> anyhow::Result<i32> {
    if a.version {
        return chorus_cli::print_version();
    }
    let mut pairs = vec![];
    if let Some(j) = &a.jobs {
        match chorus_cli::parse_job_ids(j) {
            Ok(p) => pairs = p,
            Err(e) => {
                eprintln!("squeue: error: {e}");
                return Ok(1);
            }
        }
    }
    let (all_states, states) = match &a.states {
        None => (false, vec![]),
        Some(s) if s.eq_ignore_ascii_case("all") => (true, vec![]),
        Some(s) => {
            let mut v = vec![];
            for part in s.split(',') {
                match JobState::parse(part) {
                    Some(st) => v.push(st),
                    None => {
                        eprintln!("squeue: error: Invalid job state specified: {part}");
                        return Ok(1);
                    }
                }
            }
            (false, v)
        }
    };
    let mut ctl = Ctl::connect().await?;
    let (cfg, _) = ctl.cluster().await?;
    let opts = SqueueOpts {
        header: !a.noheader,
        long: a.long,
        format: a.format.clone(),
        format_long: a.format_long.clone(),
        start: a.start,
        expand_arrays: a.array,
        sort: a.sort.clone(),
        def_mem_per_cpu: cfg.def_mem_per_cpu,
        ..SqueueOpts::default()
    };
    if let Err(e) = check_opts(&opts) {
        eprintln!("squeue: error: {e}");
        return Ok(1);
    }
    let include_finished =
        all_states || states.iter().any(|s| s.is_terminal()) || !pairs.is_empty();
    let ids: Vec<u32> = pairs.iter().map(|p| p.0).collect();
    let (jobs, now) = ctl.jobs(ids, include_finished).await?;
    if !pairs.is_empty() && jobs.is_empty() {
        eprintln!("slurm_load_jobs error: Invalid job id specified");
        return Ok(1);
    }
    let wanted: Option<Vec<u32>> =
        (!pairs.is_empty()).then(|| chorus_cli::resolve_ids(&pairs, &jobs));
    let me = current_user().0;
    let users: Option<Vec<String>> = match (&a.user, a.me) {
        (_, true) => Some(vec![me]),
        (Some(u), false) => Some(u.split(',').map(str::to_owned).collect()),
        _ => None,
    };
    let selected: Vec<_> = jobs
        .into_iter()
        .filter(|j| wanted.as_ref().is_none_or(|w| w.contains(&j.id)))
        .filter(|j| {
            if all_states {
                true
            } else if states.is_empty() {
                // Slurm's default: jobs not yet finished (and, with -j, finished ones too).
                !j.state.is_terminal() || wanted.is_some()
            } else {
                states.contains(&j.state)
            }
        })
        .filter(|j| users.as_ref().is_none_or(|u| u.contains(&j.spec.user)))
        .filter(|j| a.partition.as_ref().is_none_or(|p| p.split(',').any(|x| x == j.partition)))
        .filter(|j| a.name.as_ref().is_none_or(|n| n.split(',').any(|x| x == j.spec.name)))
        .collect();
    print(&squeue(&selected, &opts, now))?;
    Ok(0)
}
