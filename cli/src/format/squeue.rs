//! `squeue`: the job listing, in Slurm 22.05's layouts.
//!
//! ```text
//!   jobs ──collapse_arrays (unless -r)──▶ rows ──sort (-S, or P,t,-p)──▶ rows
//!        ──layout: default | -l | --start | -o "%.18i ..." | -O "JobID,Name:30"──▶ text
//! ```
//!
//! Layouts, as observed (`slurm-ref/observed/squeue.txt`):
//! * default `%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R`;
//! * `-l` starts with a date line and uses `%.18i %.9P %.8j %.8u %.8T %.10M %.9l %.6D %R`
//!   (the header `TIME_LIMIT` is cut to `TIME_LIMI`);
//! * `--start` lists pending jobs only, `%.18i %.9P %.8j %.8u %.2t %.19S %.6D %20Y %R`, by
//!   expected start time (Chorus knows none beyond `--begin`, so most print `N/A`);
//! * `-o`: `%[.]WIDTHletter`; a width pads and also cuts (`%.10j` prints `my job nam`), `.`
//!   pads on the left;
//! * `-O`: `Name[:[.]WIDTH[suffix]]`, 20 wide by default, left-justified, cut to the width,
//!   columns not separated.
//!
//! The default order is the man page's `P,t,-p` (partition, state, priority descending). Ties
//! go to the higher job id first (two held jobs of priority 0, 79 before 78) and, within one
//! array, to the lower task first (`-r`: 82_0 ... 82_5), as observed.

use std::cmp::Ordering;

use chorus_core::job::{Job, JobState};
use chorus_core::slurm::mem::format_mem_mb;
use chorus_core::slurm::time::format_duration;
use chorus_core::state::ClusterConfig;

use super::timefmt::{ctime, iso};
use super::{
    JobRow, MemAsk, Piece, Stream, Tz, account, collapse_arrays, dependency_text, fit, group_name,
    mem_ask, node_list, num_nodes, parse_format, qos, replicas, run_secs, shown_end, shown_start,
    uncollapsed,
};

/// `squeue`'s default layout.
pub const DEFAULT_FORMAT: &str = "%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R";
/// `squeue -l`.
pub const LONG_FORMAT: &str = "%.18i %.9P %.8j %.8u %.8T %.10M %.9l %.6D %R";
/// `squeue --start`.
pub const START_FORMAT: &str = "%.18i %.9P %.8j %.8u %.2t %.19S %.6D %20Y %R";
/// Width of an `-O` column given without one.
pub const FORMAT_LONG_WIDTH: usize = 20;

/// What the command line asked of the listing (selection is the caller's job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqueueOpts {
    /// `false` with `-h`.
    pub header: bool,
    /// `-l`.
    pub long: bool,
    /// `-o`.
    pub format: Option<String>,
    /// `-O`.
    pub format_long: Option<String>,
    /// `--start`.
    pub start: bool,
    /// `-r`: one line per array task.
    pub expand_arrays: bool,
    /// `-S`.
    pub sort: Option<String>,
    pub tz: Tz,
    /// `DefMemPerCPU`, for `%m` of jobs that asked for no memory.
    pub def_mem_per_cpu: u64,
}

impl Default for SqueueOpts {
    fn default() -> Self {
        Self {
            header: true,
            long: false,
            format: None,
            format_long: None,
            start: false,
            expand_arrays: false,
            sort: None,
            tz: Tz::Local,
            def_mem_per_cpu: ClusterConfig::default().def_mem_per_cpu,
        }
    }
}

/// A format the listing cannot print.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("Invalid job format specification: {0}")]
    UnknownField(String),
    #[error("Invalid sort specification: {0}")]
    UnknownSortKey(String),
}

/// Checks `-o`, `-O` and `-S` before anything is asked of the controller.
pub fn check_opts(opts: &SqueueOpts) -> Result<(), FormatError> {
    if let Some(f) = &opts.format_long {
        parse_format_long(f)?;
    }
    if let Some(f) = &opts.format {
        for p in parse_format(f) {
            match p {
                Piece::Field { letter, .. } => {
                    Col::from_letter(letter)
                        .ok_or_else(|| FormatError::UnknownField(format!("%{letter}")))?;
                }
                Piece::Named { name, .. } => {
                    Col::from_name(&name).ok_or(FormatError::UnknownField(name))?;
                }
                Piece::Text(_) => {}
            }
        }
    }
    if let Some(s) = &opts.sort {
        parse_sort(s)?;
    }
    Ok(())
}

/// The listing `squeue` prints for `jobs` (already selected), every line ending in `\n`.
/// Unknown `-o` letters print empty; unknown `-O` names are skipped (see [`check_opts`]).
pub fn squeue(jobs: &[Job], opts: &SqueueOpts, now: u64) -> String {
    let mut rows = if opts.expand_arrays { uncollapsed(jobs) } else { collapse_arrays(jobs) };
    if opts.start {
        rows.retain(|r| r.job().state == JobState::Pending);
    }
    match opts.sort.as_deref().map(parse_sort) {
        Some(Ok(keys)) => rows.sort_by(|a, b| compare(&keys, a, b, now)),
        _ if opts.start => rows.sort_by(|a, b| {
            let (sa, sb) = (expected_start(a.job()), expected_start(b.job()));
            sa.is_none().cmp(&sb.is_none()).then(sa.cmp(&sb)).then(a.raw_id().cmp(&b.raw_id()))
        }),
        _ => rows.sort_by(|a, b| {
            let (ja, jb) = (a.job(), b.job());
            ja.partition
                .cmp(&jb.partition)
                .then(state_rank(ja.state).cmp(&state_rank(jb.state)))
                .then(jb.priority.cmp(&ja.priority))
                .then(b.array_job_id().cmp(&a.array_job_id()))
                .then(first_task(a).cmp(&first_task(b)))
        }),
    }
    let columns = layout(opts);
    let mut out = String::new();
    if opts.header {
        if opts.long && opts.format.is_none() && opts.format_long.is_none() {
            out.push_str(&ctime(now, opts.tz));
            out.push('\n');
        }
        out.push_str(&render(&columns, |c| c.header().to_owned()));
    }
    for row in &rows {
        out.push_str(&render(&columns, |c| value(c, row, now, opts)));
    }
    out
}

/// A column of the chosen layout.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Column {
    Text(String),
    Field { col: Option<Col>, width: Option<usize>, right: bool, suffix: String },
}

fn layout(opts: &SqueueOpts) -> Vec<Column> {
    if let Some(f) = &opts.format_long {
        return parse_format_long(f)
            .unwrap_or_default()
            .into_iter()
            .map(|(col, width, right, suffix)| Column::Field {
                col: Some(col),
                width: Some(width),
                right,
                suffix,
            })
            .collect();
    }
    let fmt = match &opts.format {
        Some(f) => f.as_str(),
        None if opts.start => START_FORMAT,
        None if opts.long => LONG_FORMAT,
        None => DEFAULT_FORMAT,
    };
    parse_format(fmt)
        .into_iter()
        .map(|p| match p {
            Piece::Text(t) => Column::Text(t),
            Piece::Field { letter, width, right, .. } => {
                Column::Field { col: Col::from_letter(letter), width, right, suffix: String::new() }
            }
            Piece::Named { name, width, right } => {
                Column::Field { col: Col::from_name(&name), width, right, suffix: String::new() }
            }
        })
        .collect()
}

fn render(columns: &[Column], mut cell: impl FnMut(Col) -> String) -> String {
    let mut line = String::new();
    for c in columns {
        match c {
            Column::Text(t) => line.push_str(t),
            Column::Field { col, width, right, suffix } => {
                let v = col.map(&mut cell).unwrap_or_default();
                match width {
                    Some(w) => line.push_str(&fit(&v, *w, *right)),
                    None => line.push_str(&v),
                }
                line.push_str(suffix);
            }
        }
    }
    line.push('\n');
    line
}

/// `-O` items: `(column, width, right-justified, suffix)`.
fn parse_format_long(s: &str) -> Result<Vec<(Col, usize, bool, String)>, FormatError> {
    s.split(',')
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (name, modifier) = item.split_once(':').unwrap_or((item, ""));
            let col = Col::from_name(name).ok_or_else(|| FormatError::UnknownField(name.into()))?;
            let (right, rest) = match modifier.strip_prefix('.') {
                Some(r) => (true, r),
                None => (false, modifier),
            };
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let width = rest[..digits].parse().unwrap_or(FORMAT_LONG_WIDTH);
            Ok((col, width, right, rest[digits..].to_owned()))
        })
        .collect()
}

/// The fields squeue can print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Account,
    ArrayJobId,
    ArrayTaskId,
    Command,
    Comment,
    Contiguous,
    Cpus,
    Dependency,
    EndTime,
    ExecHost,
    Features,
    Group,
    JobId,
    JobIdRaw,
    Licenses,
    MinCpus,
    MinMemory,
    MinTmpDisk,
    Name,
    Nice,
    NodeList,
    Nodes,
    OverSubscribe,
    Partition,
    Priority,
    PriorityFloat,
    Qos,
    Reason,
    ReasonList,
    Replicas,
    Reservation,
    SchedNodes,
    Sct,
    StartTime,
    State,
    StateCompact,
    StdErr,
    StdIn,
    StdOut,
    SubmitTime,
    TimeLeft,
    TimeLimit,
    TimeUsed,
    Uid,
    User,
    Verdict,
    Verify,
    WorkDir,
}

impl Col {
    fn from_letter(c: char) -> Option<Col> {
        Some(match c {
            'a' => Col::Account,
            'A' => Col::JobIdRaw,
            'B' => Col::ExecHost,
            'c' => Col::MinCpus,
            'C' => Col::Cpus,
            'd' => Col::MinTmpDisk,
            'D' => Col::Nodes,
            'e' => Col::EndTime,
            'E' => Col::Dependency,
            'f' => Col::Features,
            'F' => Col::ArrayJobId,
            'g' => Col::Group,
            'h' => Col::OverSubscribe,
            'i' => Col::JobId,
            'j' => Col::Name,
            'k' => Col::Comment,
            'K' => Col::ArrayTaskId,
            'l' => Col::TimeLimit,
            'L' => Col::TimeLeft,
            'm' => Col::MinMemory,
            'M' => Col::TimeUsed,
            'N' => Col::NodeList,
            'o' => Col::Command,
            'O' => Col::Contiguous,
            'p' => Col::PriorityFloat,
            'P' => Col::Partition,
            'q' => Col::Qos,
            'Q' => Col::Priority,
            'r' => Col::Reason,
            'R' => Col::ReasonList,
            'S' => Col::StartTime,
            't' => Col::StateCompact,
            'T' => Col::State,
            'u' => Col::User,
            'U' => Col::Uid,
            'v' => Col::Reservation,
            'V' => Col::SubmitTime,
            'W' => Col::Licenses,
            'y' => Col::Nice,
            'Y' => Col::SchedNodes,
            'z' => Col::Sct,
            'Z' => Col::WorkDir,
            _ => return None,
        })
    }

    /// `-O` names, any case.
    fn from_name(name: &str) -> Option<Col> {
        Some(match name.to_ascii_lowercase().as_str() {
            "account" => Col::Account,
            "arrayjobid" => Col::ArrayJobId,
            "arraytaskid" => Col::ArrayTaskId,
            "batchhost" => Col::ExecHost,
            "command" => Col::Command,
            "comment" => Col::Comment,
            "contiguous" => Col::Contiguous,
            "dependency" => Col::Dependency,
            "endtime" => Col::EndTime,
            "feature" => Col::Features,
            "groupname" => Col::Group,
            "jobarrayid" => Col::JobId,
            "jobid" => Col::JobIdRaw,
            "licenses" => Col::Licenses,
            "mincpus" => Col::MinCpus,
            "minmemory" => Col::MinMemory,
            "mintmpdisk" => Col::MinTmpDisk,
            "name" => Col::Name,
            "nice" => Col::Nice,
            "nodelist" => Col::NodeList,
            "numcpus" => Col::Cpus,
            "numnodes" => Col::Nodes,
            "oversubscribe" => Col::OverSubscribe,
            "partition" => Col::Partition,
            "priority" => Col::PriorityFloat,
            "prioritylong" => Col::Priority,
            "qos" => Col::Qos,
            "reason" => Col::Reason,
            "reasonlist" => Col::ReasonList,
            "replicas" => Col::Replicas,
            "reservation" => Col::Reservation,
            "schednodes" => Col::SchedNodes,
            "starttime" => Col::StartTime,
            "state" => Col::State,
            "statecompact" => Col::StateCompact,
            "stderr" => Col::StdErr,
            "stdin" => Col::StdIn,
            "stdout" => Col::StdOut,
            "submittime" => Col::SubmitTime,
            "timeleft" => Col::TimeLeft,
            "timelimit" => Col::TimeLimit,
            "timeused" => Col::TimeUsed,
            "userid" => Col::Uid,
            "username" => Col::User,
            "verdict" => Col::Verdict,
            "verify" => Col::Verify,
            "workdir" => Col::WorkDir,
            _ => return None,
        })
    }

    fn header(self) -> &'static str {
        match self {
            Col::Account => "ACCOUNT",
            Col::ArrayJobId => "ARRAY_JOB_ID",
            Col::ArrayTaskId => "ARRAY_TASK_ID",
            Col::Command => "COMMAND",
            Col::Comment => "COMMENT",
            Col::Contiguous => "CONTIGUOUS",
            Col::Cpus => "CPUS",
            Col::Dependency => "DEPENDENCY",
            Col::EndTime => "END_TIME",
            Col::ExecHost => "EXEC_HOST",
            Col::Features => "FEATURES",
            Col::Group => "GROUP",
            Col::JobId | Col::JobIdRaw => "JOBID",
            Col::Licenses => "LICENSES",
            Col::MinCpus => "MIN_CPUS",
            Col::MinMemory => "MIN_MEMORY",
            Col::MinTmpDisk => "MIN_TMP_DISK",
            Col::Name => "NAME",
            Col::Nice => "NICE",
            Col::NodeList => "NODELIST",
            Col::Nodes => "NODES",
            Col::OverSubscribe => "OVER_SUBSCRIBE",
            Col::Partition => "PARTITION",
            Col::Priority | Col::PriorityFloat => "PRIORITY",
            Col::Qos => "QOS",
            Col::Reason => "REASON",
            Col::ReasonList => "NODELIST(REASON)",
            Col::Replicas => "REPLICAS",
            Col::Reservation => "RESERVATION",
            Col::SchedNodes => "SCHEDNODES",
            Col::Sct => "S:C:T",
            Col::StartTime => "START_TIME",
            Col::State => "STATE",
            Col::StateCompact => "ST",
            Col::StdErr => "STDERR",
            Col::StdIn => "STDIN",
            Col::StdOut => "STDOUT",
            Col::SubmitTime => "SUBMIT_TIME",
            Col::TimeLeft => "TIME_LEFT",
            Col::TimeLimit => "TIME_LIMIT",
            Col::TimeUsed => "TIME",
            Col::Uid => "UID",
            Col::User => "USER",
            Col::Verdict => "VERDICT",
            Col::Verify => "VERIFY",
            Col::WorkDir => "WORK_DIR",
        }
    }
}

/// Whether the failure of a finished job is explained in `%R` (in parentheses) rather than
/// its nodes being listed.
fn failed(state: JobState) -> bool {
    matches!(
        state,
        JobState::Failed | JobState::Timeout | JobState::NodeFail | JobState::OutOfMemory
    )
}

/// The start squeue can predict for a pending job: only `--begin` is known to Chorus.
fn expected_start(job: &Job) -> Option<u64> {
    if job.state == JobState::Pending { job.spec.begin } else { shown_start(job) }
}

fn limit_secs(job: &Job) -> Option<u64> {
    job.time_limit_min.map(|m| u64::from(m) * 60)
}

fn value(col: Col, row: &JobRow<'_>, now: u64, opts: &SqueueOpts) -> String {
    let job = row.job();
    let spec = &job.spec;
    let pending = job.state == JobState::Pending;
    let tz = opts.tz;
    match col {
        Col::Account => account(job).to_owned(),
        Col::ArrayJobId => row.array_job_id().to_string(),
        Col::ArrayTaskId => row.task_str().unwrap_or_else(|| "N/A".into()),
        Col::Command | Col::Features | Col::Licenses | Col::Reservation | Col::SchedNodes => {
            "(null)".into()
        }
        Col::Comment => spec.comment.clone().unwrap_or_else(|| "(null)".into()),
        Col::Contiguous | Col::MinTmpDisk => "0".into(),
        Col::Cpus => job.num_cpus().to_string(),
        Col::Dependency => dependency_text(job),
        Col::EndTime => match (pending, spec.begin) {
            (true, Some(begin)) => {
                limit_secs(job).map_or_else(|| "NONE".into(), |l| iso(begin + l, tz))
            }
            (true, None) => "N/A".into(),
            (false, _) => shown_end(job).map_or_else(|| "N/A".into(), |t| iso(t, tz)),
        },
        Col::ExecHost => job.alloc.first().map_or_else(|| "n/a".into(), |a| a.node.clone()),
        Col::Group => group_name(spec.gid),
        Col::JobId => row.display_id(),
        Col::JobIdRaw => row.raw_id().to_string(),
        Col::MinCpus => (spec.cpus_per_task() * spec.ntasks_per_node.unwrap_or(1)).to_string(),
        Col::MinMemory => match mem_ask(job, opts.def_mem_per_cpu) {
            MemAsk::PerCpu(mb) | MemAsk::PerNode(mb) => format_mem_mb(mb),
        },
        Col::Name => spec.name.clone(),
        Col::Nice => spec.nice.to_string(),
        Col::NodeList => node_list(&job.node_names()),
        Col::Nodes => num_nodes(job).to_string(),
        Col::OverSubscribe => "OK".into(),
        Col::Partition => job.partition.clone(),
        Col::Priority => job.priority.to_string(),
        Col::PriorityFloat => format!("{:.14}", f64::from(job.priority) / f64::from(u32::MAX)),
        Col::Qos => qos(job).to_owned(),
        Col::Reason => job.reason.name().to_owned(),
        Col::ReasonList if pending || failed(job.state) => format!("({})", job.reason.name()),
        Col::ReasonList => node_list(&job.node_names()),
        Col::Sct => "*:*:*".into(),
        Col::StartTime => expected_start(job).map_or_else(|| "N/A".into(), |t| iso(t, tz)),
        Col::State => job.state.name().to_owned(),
        Col::StateCompact => job.state.short_name().to_owned(),
        Col::StdErr => row.std_path(Stream::Err),
        Col::StdIn => "/dev/null".into(),
        Col::StdOut => row.std_path(Stream::Out),
        Col::SubmitTime => iso(job.submit_time, tz),
        Col::TimeLeft => match limit_secs(job) {
            None => "UNLIMITED".into(),
            Some(l) => format_duration(l.saturating_sub(run_secs(job, now))),
        },
        Col::TimeLimit => limit_secs(job).map_or_else(|| "UNLIMITED".into(), format_duration),
        Col::TimeUsed => format_duration(run_secs(job, now)),
        Col::Uid => spec.uid.to_string(),
        Col::User => spec.user.clone(),
        Col::WorkDir => spec.work_dir.clone(),
        Col::Replicas => replicas(job).to_string(),
        Col::Verdict => job.verdict.name().into(),
        Col::Verify => job.verify.to_string(),
    }
}

/// Slurm's numbering of job states, by which `-S t` sorts (pending first).
fn state_rank(s: JobState) -> u32 {
    match s {
        JobState::Pending => 0,
        JobState::Running => 1,
        JobState::Completing => 2,
        JobState::Completed => 3,
        JobState::Cancelled => 4,
        JobState::Failed => 5,
        JobState::Timeout => 6,
        JobState::NodeFail => 7,
        JobState::OutOfMemory => 11,
    }
}

/// `-S` keys: a field letter, optionally preceded by `+` (ascending, the default) or `-`.
fn parse_sort(s: &str) -> Result<Vec<(char, bool)>, FormatError> {
    s.split(',')
        .filter(|k| !k.is_empty())
        .map(|k| {
            let (desc, key) = match k.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, k.strip_prefix('+').unwrap_or(k)),
            };
            let mut chars = key.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if "iAFjuUtTpQPMlLSVeDCNrBZ".contains(c) => Ok((c, desc)),
                _ => Err(FormatError::UnknownSortKey(k.into())),
            }
        })
        .collect()
}

fn compare(keys: &[(char, bool)], a: &JobRow<'_>, b: &JobRow<'_>, now: u64) -> Ordering {
    for &(key, desc) in keys {
        let o = compare_key(key, a, b, now);
        let o = if desc { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// The (lowest) task index a row shows, for ordering.
fn first_task(r: &JobRow<'_>) -> Option<u32> {
    match r {
        JobRow::Job(j) => j.array.map(|a| a.1),
        JobRow::PendingArray { tasks, .. } => tasks.first().copied(),
    }
}

fn compare_key(key: char, a: &JobRow<'_>, b: &JobRow<'_>, now: u64) -> Ordering {
    let (ja, jb) = (a.job(), b.job());
    match key {
        'i' => a.array_job_id().cmp(&b.array_job_id()).then(first_task(a).cmp(&first_task(b))),
        'A' => a.raw_id().cmp(&b.raw_id()),
        'F' => a.array_job_id().cmp(&b.array_job_id()),
        'j' => ja.spec.name.cmp(&jb.spec.name),
        'u' => ja.spec.user.cmp(&jb.spec.user),
        'U' => ja.spec.uid.cmp(&jb.spec.uid),
        't' | 'T' => state_rank(ja.state).cmp(&state_rank(jb.state)),
        'p' | 'Q' => ja.priority.cmp(&jb.priority),
        'P' => ja.partition.cmp(&jb.partition),
        'M' => run_secs(ja, now).cmp(&run_secs(jb, now)),
        'l' | 'L' => {
            let l = |j: &Job| j.time_limit_min.unwrap_or(u32::MAX);
            l(ja).cmp(&l(jb))
        }
        'S' => expected_start(ja).cmp(&expected_start(jb)),
        'V' => ja.submit_time.cmp(&jb.submit_time),
        'e' => shown_end(ja).cmp(&shown_end(jb)),
        'D' => num_nodes(ja).cmp(&num_nodes(jb)),
        'C' => ja.num_cpus().cmp(&jb.num_cpus()),
        'N' | 'B' => node_list(&ja.node_names()).cmp(&node_list(&jb.node_names())),
        'r' => ja.reason.name().cmp(jb.reason.name()),
        'Z' => ja.spec.work_dir.cmp(&jb.spec.work_dir),
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_long_items_take_width_justification_and_suffix() {
        let cols = parse_format_long("JobID,name:30,State:.10|").expect("valid");
        assert_eq!(cols[0], (Col::JobIdRaw, 20, false, String::new()));
        assert_eq!(cols[1], (Col::Name, 30, false, String::new()));
        assert_eq!(cols[2], (Col::State, 10, true, "|".into()));
        assert_eq!(parse_format_long("Bogus"), Err(FormatError::UnknownField("Bogus".into())));
    }

    #[test]
    fn sort_keys_parse_direction() {
        assert_eq!(parse_sort("P,t,-p").expect("valid"), [('P', false), ('t', false), ('p', true)]);
        assert!(parse_sort("xyz").is_err());
    }
}
