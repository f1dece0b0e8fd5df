//! `sacct`: accounting lines for jobs and their `.batch` step, in Slurm 22.05's layouts.
//!
//! ```text
//!   jobs ──collapse pending arrays──▶ rows ──each: job line (+ ".batch" line unless -X,
//!                                            when the job got an allocation)──▶ lines
//!   lines ──fixed columns ("JobID%20"), or -p ("a|b|"), or -P ("a|b")──▶ text
//! ```
//!
//! Observed (`slurm-ref/observed/sacct.txt`, `states.txt`, `signals.txt`):
//! * fixed columns: every value followed by one space (the last too), right-justified except
//!   `JobID`/`JobIDRaw`; a value too wide is cut to `width - 1` characters and a `+`
//!   (`CANCELLED+`, `interacti+`); a line of dashes under the header;
//! * `-P` separates with `|` and has no trailing `|`; `-p` ends every field with `|`;
//! * a job cancelled prints `CANCELLED by UID` with `ExitCode` `0:0`; a job that timed out
//!   prints `0:0`; its `.batch` step shows the signal (`CANCELLED`, `0:15`);
//! * steps show no `Partition`, `User`, `DerivedExitCode`, `ReqMem`; the job line no
//!   `MaxRSS`; `MaxRSS` is in kilobytes with a `K` (`9696K`, `0`);
//! * no `.extern` step: the reference cluster did not create one, and neither does Chorus.
//! * `TRESUsageInAve`/`TRESUsageInMax` (`sacct -l`): empty on the job line; on the step,
//!   `name=value` sorted by name, CPU time as `HH:MM:SS`, sizes in bytes with a unit
//!   (`mem=0`, `vmem=4K`).
//!
//! From Slurm's sources and documentation rather than a capture: the GPU entries
//! `gres/gpumem=36266M,gres/gpuutil=100` (Slurm 23.02 and later, with `gres/gpu` accounted
//! and NVML; 22.05 has no such TRES), and the unit rule of those sizes, [`exact_units`].
//! Chorus prints only the usage TRES it measures: `cpu`, `mem` and, for jobs whose GPUs
//! were sampled, `gres/gpumem` and `gres/gpuutil`; Slurm also prints `energy`, `fs/disk`,
//! `pages` and `vmem`. Its `Ave` of a one-task step is the last sample; Chorus's is the mean
//! of the samples (memory is the peak in both, as only the peak RSS is kept).
//!
//! Assumed: the default widths of the fields the captures do not show in fixed columns (see
//! [`FIELDS`]; `TRESUsageIn*` from Slurm's sources), `TotalCPU`'s `MM:SS.mmm` form, who
//! cancelled a job (the controller does not record it yet: the job's owner is printed).

use chorus_core::job::{Job, JobState};
use chorus_core::slurm::mem::format_mem_mb;
use chorus_core::slurm::time::format_duration_hms;
use chorus_core::state::ClusterConfig;

use super::timefmt::{iso, iso_or};
use super::{
    JobRow, Tz, account, agreed_nodes, collapse_arrays, group_name, node_list, num_nodes, qos,
    replicas, run_secs, shown_start, total_mem,
};

/// `sacct`'s default fields.
pub const DEFAULT_FIELDS: &str = "JobID,JobName,Partition,Account,AllocCPUS,State,ExitCode";

/// How values are separated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Parsable {
    /// Fixed-width columns.
    #[default]
    No,
    /// `-p`: `|` after every field.
    Trailing,
    /// `-P`: `|` between fields.
    NoTrailing,
}

/// What the command line asked of the listing (selection is the caller's job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SacctOpts {
    /// `false` with `-n`.
    pub header: bool,
    /// `--format`/`-o`: `Field[%width],...`.
    pub format: Option<String>,
    pub parsable: Parsable,
    /// `-X`: no step lines.
    pub allocations: bool,
    pub tz: Tz,
    /// `DefMemPerCPU`, for `ReqMem` of jobs that asked for no memory.
    pub def_mem_per_cpu: u64,
}

impl Default for SacctOpts {
    fn default() -> Self {
        Self {
            header: true,
            format: None,
            parsable: Parsable::No,
            allocations: false,
            tz: Tz::Local,
            def_mem_per_cpu: ClusterConfig::default().def_mem_per_cpu,
        }
    }
}

/// A `--format` field sacct does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid field requested: \"{0}\"")]
pub struct UnknownField(pub String);

/// The fields Chorus prints: name as printed in the header, and default width.
pub const FIELDS: &[(&str, usize)] = &[
    ("Account", 10),
    ("AgreedNodes", 15),
    ("AllocCPUS", 10),
    ("AllocTRES", 10),
    ("AveRSS", 10),
    ("Charged", 10),
    ("Comment", 15),
    ("CPUTime", 10),
    ("CPUTimeRAW", 10),
    ("DerivedExitCode", 15),
    ("Elapsed", 10),
    ("ElapsedRaw", 10),
    ("Eligible", 19),
    ("End", 19),
    ("ExitCode", 8),
    ("GID", 6),
    ("Group", 9),
    ("JobID", 12),
    ("JobIDRaw", 12),
    ("JobName", 10),
    ("MaxRSS", 10),
    ("NCPUS", 10),
    ("NNodes", 8),
    ("NodeList", 15),
    ("NTasks", 8),
    ("Paid", 10),
    ("Partition", 10),
    ("Priority", 10),
    ("QOS", 10),
    ("Reason", 20),
    ("ReqCPUS", 8),
    ("ReqMem", 10),
    ("ReqTRES", 10),
    ("Replicas", 8),
    ("Restarts", 8),
    ("Start", 19),
    ("State", 10),
    ("Submit", 19),
    ("SystemCPU", 10),
    ("Timelimit", 10),
    ("TimelimitRaw", 10),
    ("TotalCPU", 10),
    ("TRESUsageInAve", 14),
    ("TRESUsageInMax", 14),
    ("UID", 6),
    ("User", 9),
    ("UserCPU", 10),
    ("Verdict", 10),
    ("Verify", 15),
    ("WorkDir", 15),
];

/// One column: canonical name, width.
type Field = (&'static str, usize);

/// Parses `--format`: names in any case, each with an optional `%WIDTH`.
pub fn parse_fields(s: &str) -> Result<Vec<(&'static str, usize)>, UnknownField> {
    s.split(',')
        .filter(|f| !f.is_empty())
        .map(|item| {
            let (name, width) = item.split_once('%').unwrap_or((item, ""));
            let &(canon, default) = FIELDS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .ok_or_else(|| UnknownField(name.into()))?;
            Ok((canon, width.parse().unwrap_or(default)))
        })
        .collect()
}

/// The listing `sacct` prints for `jobs` (already selected and ordered), every line ending
/// in `\n`. Unknown `--format` fields are left out (see [`parse_fields`] to refuse them).
pub fn sacct(jobs: &[Job], opts: &SacctOpts, now: u64) -> String {
    let fields: Vec<Field> = opts
        .format
        .as_deref()
        .map(|f| {
            f.split(',').filter_map(|item| parse_fields(item).ok()?.into_iter().next()).collect()
        })
        .unwrap_or_else(|| parse_fields(DEFAULT_FIELDS).expect("the default fields are known"));
    let mut out = String::new();
    if opts.header {
        out.push_str(&line(&fields, opts.parsable, |f| f.to_owned()));
        if opts.parsable == Parsable::No {
            let dashes: String =
                fields.iter().map(|(_, w)| format!("{} ", "-".repeat(*w))).collect();
            out.push_str(&dashes);
            out.push('\n');
        }
    }
    for row in collapse_arrays(jobs) {
        out.push_str(&line(&fields, opts.parsable, |f| job_value(f, &row, opts, now)));
        if !opts.allocations && !row.job().alloc.is_empty() {
            out.push_str(&line(&fields, opts.parsable, |f| batch_value(f, &row, opts, now)));
        }
    }
    out
}

fn line(fields: &[Field], parsable: Parsable, mut cell: impl FnMut(&str) -> String) -> String {
    let mut out = String::new();
    for (i, &(name, width)) in fields.iter().enumerate() {
        let v = cell(name);
        match parsable {
            Parsable::No => {
                out.push_str(&cut(&v, width, matches!(name, "JobID" | "JobIDRaw")));
                out.push(' ');
            }
            Parsable::Trailing => {
                out.push_str(&v);
                out.push('|');
            }
            Parsable::NoTrailing => {
                if i > 0 {
                    out.push('|');
                }
                out.push_str(&v);
            }
        }
    }
    out.push('\n');
    out
}

/// sacct's fixed-width cell: too wide a value is cut and marked with `+`.
fn cut(v: &str, width: usize, left: bool) -> String {
    let len = v.chars().count();
    if len > width {
        let mut s: String = v.chars().take(width.saturating_sub(1)).collect();
        if width > 0 {
            s.push('+');
        }
        return s;
    }
    let pad = " ".repeat(width - len);
    if left { format!("{v}{pad}") } else { format!("{pad}{v}") }
}

/// `MM:SS.mmm` under an hour, else `[D-]HH:MM:SS`, as sacct prints CPU times.
fn cpu_time(ms: u64) -> String {
    let secs = ms / 1000;
    if secs < 3600 {
        format!("{:02}:{:02}.{:03}", secs / 60, secs % 60, ms % 1000)
    } else {
        format_duration_hms(secs)
    }
}

fn rss(kb: u64) -> String {
    if kb == 0 { "0".into() } else { format!("{kb}K") }
}

fn tres(job: &Job, cpus: u32, mem_mb: u64, nodes: u32, billing: bool) -> String {
    let gpus: usize = job.alloc.iter().map(|a| a.gpus.len()).sum();
    let gpus = if job.alloc.is_empty() {
        (job.spec.gpus_per_node * job.spec.num_nodes()) as usize
    } else {
        gpus
    };
    let mut parts = Vec::new();
    if billing {
        parts.push(format!("billing={cpus}"));
    }
    parts.push(format!("cpu={cpus}"));
    if gpus > 0 {
        parts.push(format!("gres/gpu={gpus}"));
    }
    parts.push(format!("mem={}", format_mem_mb(mem_mb)));
    parts.push(format!("node={nodes}"));
    parts.join(",")
}

/// A count as sacct prints usage TRES (Slurm's `convert_num_unit` with
/// `CONVERT_NUM_UNIT_EXACT`): divided by 1024 while it is at least 1024 and a multiple of 512,
/// each time one unit up (`K`, `M`, `G`, `T`, `P`); a half unit prints with two decimals
/// (`1.50G`). `208 * 1024` is `208K`, `36266 << 20` is `36266M`, `100` is `100`.
pub fn exact_units(n: u64) -> String {
    const UNITS: [&str; 7] = ["", "K", "M", "G", "T", "P", "?"];
    if n == 0 {
        return "0".into();
    }
    let mut num = n as f64;
    let mut unit = 0;
    while num >= 1024.0 && (num as u64).is_multiple_of(512) {
        num /= 1024.0;
        unit += 1;
    }
    let unit = UNITS[unit.min(UNITS.len() - 1)];
    if num.fract() == 0.0 { format!("{}{unit}", num as u64) } else { format!("{num:.2}{unit}") }
}

/// The batch step's `TRESUsageInMax` (`max`) or `TRESUsageInAve`: see the module docs.
fn tres_usage_in(job: &Job, max: bool) -> String {
    let u = &job.usage;
    let mut parts = vec![
        format!("cpu={}", format_duration_hms((u.user_cpu_ms + u.sys_cpu_ms) / 1000)),
        format!("mem={}", exact_units(u.max_rss_kb.saturating_mul(1024))),
    ];
    if let Some(g) = u.gpu {
        let (mem_mb, util) =
            if max { (g.mem_max_mb, g.util_max_pct) } else { (g.mem_ave_mb, g.util_ave_pct) };
        parts.push(format!("gres/gpumem={}", exact_units(mem_mb.saturating_mul(1 << 20))));
        parts.push(format!("gres/gpuutil={}", exact_units(u64::from(util))));
    }
    parts.sort();
    parts.join(",")
}

/// The uid that cancelled a job. The controller does not keep it yet; the owner is the likely
/// one (only the owner or root may cancel).
fn cancelled_by(job: &Job) -> u32 {
    job.cancelled_by.unwrap_or(job.spec.uid)
}

fn job_value(field: &str, row: &JobRow<'_>, opts: &SacctOpts, now: u64) -> String {
    let job = row.job();
    let spec = &job.spec;
    let tz = opts.tz;
    let elapsed = run_secs(job, now);
    let mem = total_mem(job, opts.def_mem_per_cpu);
    match field {
        "Account" => account(job).into(),
        "AllocCPUS" | "NCPUS" | "ReqCPUS" => job.num_cpus().to_string(),
        "AllocTRES" if job.alloc.is_empty() => String::new(),
        "AllocTRES" | "ReqTRES" => tres(job, job.num_cpus(), mem, num_nodes(job), true),
        "Comment" => spec.comment.clone().unwrap_or_default(),
        "CPUTime" => format_duration_hms(elapsed * u64::from(job.num_cpus())),
        "CPUTimeRAW" => (elapsed * u64::from(job.num_cpus())).to_string(),
        "DerivedExitCode" => "0:0".into(),
        "Elapsed" => format_duration_hms(elapsed),
        "ElapsedRaw" => elapsed.to_string(),
        "Eligible" => iso_or(job.eligible_time, tz, "Unknown"),
        "End" => iso_or(job.end_time, tz, "Unknown"),
        "ExitCode" if matches!(job.state, JobState::Cancelled | JobState::Timeout) => "0:0".into(),
        "ExitCode" => job.exit.to_string(),
        "GID" => spec.gid.to_string(),
        "Group" => group_name(spec.gid),
        "JobID" => row.display_id(),
        "JobIDRaw" => row.raw_id().to_string(),
        "JobName" => spec.name.clone(),
        "NNodes" => num_nodes(job).to_string(),
        "NodeList" if job.alloc.is_empty() => "None assigned".into(),
        "NodeList" => node_list(&job.node_names()),
        "Partition" => job.partition.clone(),
        "Priority" => job.priority.to_string(),
        "QOS" => qos(job).into(),
        "Reason" => job.reason.name().into(),
        "ReqMem" => format_mem_mb(mem / u64::from(num_nodes(job).max(1))),
        "Restarts" => job.restarts.to_string(),
        "Start" => iso_or(shown_start(job), tz, "Unknown"),
        "State" if job.state == JobState::Cancelled => {
            format!("CANCELLED by {}", cancelled_by(job))
        }
        "State" => job.state.name().into(),
        "Submit" => iso(job.submit_time, tz),
        "SystemCPU" => cpu_time(job.usage.sys_cpu_ms),
        "Timelimit" => job
            .time_limit_min
            .map_or_else(|| "UNLIMITED".into(), |m| format_duration_hms(u64::from(m) * 60)),
        "TimelimitRaw" => job.time_limit_min.map_or_else(|| "UNLIMITED".into(), |m| m.to_string()),
        "TotalCPU" => cpu_time(job.usage.user_cpu_ms + job.usage.sys_cpu_ms),
        "UID" => spec.uid.to_string(),
        "User" => spec.user.clone(),
        "UserCPU" => cpu_time(job.usage.user_cpu_ms),
        "WorkDir" => spec.work_dir.clone(),
        "Replicas" => replicas(job).to_string(),
        "Verify" => job.verify.to_string(),
        "Verdict" => job.verdict.name().into(),
        "AgreedNodes" => agreed_nodes(job),
        "Paid" => job.paid.to_string(),
        "Charged" => job.charged.to_string(),
        _ => String::new(),
    }
}

/// How the batch step ended: a signal shows as `CANCELLED`, as observed.
fn batch_state(job: &Job) -> &'static str {
    match job.state {
        JobState::Running | JobState::Completing => "RUNNING",
        JobState::OutOfMemory => "OUT_OF_MEMORY",
        _ if job.exit.signal != 0 => "CANCELLED",
        JobState::Cancelled | JobState::Timeout => "CANCELLED",
        _ if job.exit.code != 0 => "FAILED",
        JobState::Failed | JobState::NodeFail => "FAILED",
        _ => "COMPLETED",
    }
}

fn batch_value(field: &str, row: &JobRow<'_>, opts: &SacctOpts, now: u64) -> String {
    let job = row.job();
    let Some(batch) = job.alloc.first() else { return String::new() };
    let tz = opts.tz;
    let elapsed = run_secs(job, now);
    let cpus = batch.cpus;
    match field {
        "Account" => account(job).into(),
        "AllocCPUS" | "NCPUS" | "ReqCPUS" => cpus.to_string(),
        "AllocTRES" => tres(job, cpus, batch.mem_mb, 1, false),
        "AveRSS" | "MaxRSS" => rss(job.usage.max_rss_kb),
        "CPUTime" => format_duration_hms(elapsed * u64::from(cpus)),
        "CPUTimeRAW" => (elapsed * u64::from(cpus)).to_string(),
        "Elapsed" => format_duration_hms(elapsed),
        "ElapsedRaw" => elapsed.to_string(),
        "Eligible" | "Start" | "Submit" => iso_or(job.start_time, tz, "Unknown"),
        "End" => iso_or(job.end_time, tz, "Unknown"),
        "ExitCode" => job.exit.to_string(),
        "JobID" => format!("{}.batch", row.display_id()),
        "JobIDRaw" => format!("{}.batch", row.raw_id()),
        "JobName" => "batch".into(),
        "NNodes" | "NTasks" => "1".into(),
        "NodeList" => batch.node.clone(),
        "State" => batch_state(job).into(),
        "SystemCPU" => cpu_time(job.usage.sys_cpu_ms),
        "TotalCPU" => cpu_time(job.usage.user_cpu_ms + job.usage.sys_cpu_ms),
        "TRESUsageInAve" => tres_usage_in(job, false),
        "TRESUsageInMax" => tres_usage_in(job, true),
        "UserCPU" => cpu_time(job.usage.user_cpu_ms),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_cells_cut_with_a_plus() {
        assert_eq!(cut("CANCELLED by 0", 10, false), "CANCELLED+");
        assert_eq!(cut("interactive", 10, false), "interacti+");
        assert_eq!(cut("7", 12, true), "7           ");
        assert_eq!(cut("wrap", 10, false), "      wrap");
    }

    #[test]
    fn format_fields_take_a_width_and_ignore_case() {
        assert_eq!(
            parse_fields("jobid,JobName%20").expect("known"),
            [("JobID", 12), ("JobName", 20)]
        );
        assert_eq!(parse_fields("Bogus"), Err(UnknownField("Bogus".into())));
    }

    #[test]
    fn usage_sizes_move_up_a_unit_only_while_exact() {
        // Observed: `mem=0`, `vmem=4K`; Slurm's documentation: `gres/gpumem=36266M`,
        // `mem=628748K`, `gres/gpuutil=100`.
        assert_eq!(exact_units(0), "0");
        assert_eq!(exact_units(4096), "4K");
        assert_eq!(exact_units(36_266 << 20), "36266M");
        assert_eq!(exact_units(628_748 * 1024), "628748K");
        assert_eq!(exact_units(100), "100");
        assert_eq!(exact_units(1023), "1023");
        assert_eq!(exact_units(1024 << 20), "1G");
        assert_eq!(exact_units(1536 << 20), "1.50G", "half units are exact enough");
        assert_eq!(exact_units(1025), "1025", "not a multiple of 512");
        assert_eq!(exact_units(1 << 50), "1P");
        assert_eq!(exact_units(1 << 63), "8?", "past P, as Slurm's UNIT_UNKNOWN");
    }

    #[test]
    fn cpu_times_have_milliseconds_under_an_hour() {
        assert_eq!(cpu_time(4), "00:00.004");
        assert_eq!(cpu_time(83_456), "01:23.456");
        assert_eq!(cpu_time(3_723_000), "01:02:03");
    }
}
