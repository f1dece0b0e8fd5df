//! `sacct`: accounting of running and finished jobs, as Slurm's sacct shows it.

use chorus_cli::format::sacct::{Parsable, SacctOpts, parse_fields, sacct};
use chorus_cli::format::timefmt;
use chorus_cli::{Ctl, current_user, print, run_main};
use chorus_core::job::JobState;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "sacct",
    disable_help_flag = true,
    disable_version_flag = true,
    infer_long_args = true
)]
struct Args {
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Jobs: `123`, `123_4`, comma-separated.
    #[arg(short = 'j', long = "jobs")]
    jobs: Option<String>,
    /// Fields to show: `JobID,State,ExitCode%10`.
    #[arg(short = 'o', long = "format")]
    format: Option<String>,
    /// Parsable, `|` after every field.
    #[arg(short = 'p', long = "parsable")]
    parsable: bool,
    /// Parsable, `|` between fields.
    #[arg(short = 'P', long = "parsable2")]
    parsable2: bool,
    /// No step lines.
    #[arg(short = 'X', long = "allocations")]
    allocations: bool,
    /// No header.
    #[arg(short = 'n', long = "noheader")]
    noheader: bool,
    /// Jobs of every user.
    #[arg(short = 'a', long = "allusers")]
    allusers: bool,
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// Jobs in these states.
    #[arg(short = 's', long = "state")]
    state: Option<String>,
    /// Start of the window (`YYYY-MM-DD[THH:MM[:SS]]`, `now-1hours`...).
    #[arg(short = 'S', long = "starttime")]
    start: Option<String>,
    /// End of the window.
    #[arg(short = 'E', long = "endtime")]
    end: Option<String>,
    #[arg(short = 'V', long = "version")]
    version: bool,
}

fn main() {
    let a = Args::parse();
    run_main("sacct", account(a))
}

async fn account(a: Args) -> anyhow::Result<i32> {
    if a.version {
        return chorus_cli::print_version();
    }
    if let Some(f) = &a.format
        && let Err(e) = parse_fields(f)
    {
        eprintln!("sacct: error: {e}");
        return Ok(1);
    }
    let mut pairs = vec![];
    if let Some(j) = &a.jobs {
        match chorus_cli::parse_job_ids(j) {
            Ok(p) => pairs = p,
            Err(_) => {
                eprintln!("sacct: fatal: Bad job/step specified: {j}");
                return Ok(1);
            }
        }
    }
    let states: Option<Vec<JobState>> = match &a.state {
        Some(s) => {
            let mut v = vec![];
            for p in s.split(',') {
                match JobState::parse(p) {
                    Some(st) => v.push(st),
                    None => {
                        eprintln!("sacct: error: Invalid state: {p}");
                        return Ok(1);
                    }
                }
            }
            Some(v)
        }
        None => None,
    };
    let mut ctl = Ctl::connect().await?;
    let (cfg, _) = ctl.cluster().await?;
    let ids: Vec<u32> = pairs.iter().map(|p| p.0).collect();
    let (jobs, now) = ctl.jobs(ids, true).await?;
    let window_start = match &a.start {
        Some(s) => Some(
            chorus_cli::parse_time_arg(s, now)
                .ok_or_else(|| anyhow::anyhow!("Invalid time specification (pos 0): {s}"))?,
        ),
        // Slurm's default without -j: jobs since midnight today.
        None if pairs.is_empty() => Some(midnight(now)),
        None => None,
    };
    let window_end = match &a.end {
        Some(s) => Some(
            chorus_cli::parse_time_arg(s, now)
                .ok_or_else(|| anyhow::anyhow!("Invalid time specification (pos 0): {s}"))?,
        ),
        None => None,
    };
    let wanted = (!pairs.is_empty()).then(|| chorus_cli::resolve_ids(&pairs, &jobs));
    let me = current_user().0;
    let users: Option<Vec<String>> = match (&a.user, a.allusers) {
        (Some(u), _) => Some(u.split(',').map(str::to_owned).collect()),
        (None, true) => None,
        // Slurm shows root every user's jobs, others their own.
        (None, false) if me == "root" || wanted.is_some() => None,
        (None, false) => Some(vec![me]),
    };
    let selected: Vec<_> = jobs
        .into_iter()
        .filter(|j| wanted.as_ref().is_none_or(|w| w.contains(&j.id)))
        .filter(|j| users.as_ref().is_none_or(|u| u.contains(&j.spec.user)))
        .filter(|j| states.as_ref().is_none_or(|s| s.contains(&j.state)))
        // In the window: still running at its start, and submitted before its end.
        .filter(|j| window_start.is_none_or(|s| j.end_time.is_none_or(|e| e >= s)))
        .filter(|j| window_end.is_none_or(|e| j.submit_time <= e))
        .collect();
    let opts = SacctOpts {
        header: !a.noheader,
        format: a.format,
        parsable: if a.parsable2 {
            Parsable::NoTrailing
        } else if a.parsable {
            Parsable::Trailing
        } else {
            Parsable::No
        },
        allocations: a.allocations,
        def_mem_per_cpu: cfg.def_mem_per_cpu,
        ..SacctOpts::default()
    };
    print(&sacct(&selected, &opts, now))?;
    Ok(0)
}

fn midnight(now: u64) -> u64 {
    let tm = timefmt::broken_down(now, timefmt::Tz::Local);
    now - (u64::from(tm.hour) * 3600 + u64::from(tm.minute) * 60 + u64::from(tm.second))
}
