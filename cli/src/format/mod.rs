//! The text Slurm's commands print, made from Chorus's state: pure functions from jobs, nodes
//! and the cluster configuration (plus `now` and a time zone) to `String`s.
//!
//! ```text
//!   controller reply ──▶ Vec<Job>, Vec<Node>, ClusterConfig, now
//!        │
//!        ├── squeue::squeue ───▶ default / -l / -o / -O / --start listings
//!        ├── sinfo::sinfo ─────▶ default / -N / -l / -s / -R / -o listings
//!        ├── scontrol::show_* ─▶ `show job|node|partition`, multi-line or -o
//!        └── sacct::sacct ─────▶ default / --format / -p / -P / -X listings
//! ```
//!
//! The layouts the Slurm 22.05 captures show are pinned byte for byte by
//! `cli/tests/golden_format.rs`; where Slurm's output was not observed, the module docs of each
//! command say what was assumed.
//! Selecting which jobs or nodes to show is the caller's business; the one piece of selection
//! done here is Slurm's collapsing of pending array tasks into one line ([`collapse_arrays`]).

use std::cmp::Ordering;

use chorus_core::job::{Job, JobState, MemRequest, PendingReason};
use chorus_core::slurm::array::{DEFAULT_BITSTR_LEN, format_array_task_str};
use chorus_core::slurm::dependency::{DepState, ItemStatus};
use chorus_core::slurm::hostlist;
use chorus_core::slurm::pattern::{self, PatternVars};
use chorus_core::trust::ReplicationSpec;

pub mod accounts;
pub mod controllers;
pub mod sacct;
pub mod scontrol;
pub mod sinfo;
pub mod squeue;
pub mod timefmt;

pub use controllers::controllers;
pub use timefmt::Tz;

/// How long an UNLIMITED job is taken to run when an end time must be printed (a year, as
/// Slurm does as far as we know; not in the captures).
const UNLIMITED_END_SECS: u64 = 365 * 86_400;

/// One line of a job listing: a job (or array task) by itself, or the pending tasks of one
/// array that Slurm folds into a single record (`82_[0-5%2]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobRow<'a> {
    Job(&'a Job),
    /// Two or more pending tasks of one array sharing partition, reason and hold. `first` is
    /// the lowest-numbered of them and speaks for the others; `tasks` is sorted.
    PendingArray {
        first: &'a Job,
        tasks: Vec<u32>,
    },
}

/// The rows Slurm shows for `jobs` (in their order): the pending tasks of an array that share
/// partition, reason and hold are folded into one [`JobRow::PendingArray`] placed where the
/// first of them was. Running and finished tasks, and a pending task alone in its group, stay
/// on their own line (`82_1`).
pub fn collapse_arrays(jobs: &[Job]) -> Vec<JobRow<'_>> {
    type Key<'k> = (u32, &'k str, PendingReason, bool);
    let mut groups: Vec<(Key<'_>, Vec<usize>)> = Vec::new();
    let mut group_of = vec![None; jobs.len()];
    for (i, j) in jobs.iter().enumerate() {
        let Some((array, _)) = j.array else { continue };
        if j.state != JobState::Pending {
            continue;
        }
        let key = (array, j.partition.as_str(), j.reason, j.hold.is_some());
        let g = match groups.iter().position(|(k, _)| *k == key) {
            Some(g) => g,
            None => {
                groups.push((key, Vec::new()));
                groups.len() - 1
            }
        };
        groups[g].1.push(i);
        group_of[i] = Some(g);
    }
    let mut emitted = vec![false; groups.len()];
    let mut rows = Vec::with_capacity(jobs.len());
    for (i, j) in jobs.iter().enumerate() {
        let Some(g) = group_of[i].filter(|&g| groups[g].1.len() > 1) else {
            rows.push(JobRow::Job(j));
            continue;
        };
        if std::mem::replace(&mut emitted[g], true) {
            continue;
        }
        let members = &groups[g].1;
        let first = members
            .iter()
            .map(|&m| &jobs[m])
            .min_by_key(|m| m.array.map(|a| a.1))
            .expect("a group has members");
        let mut tasks: Vec<u32> =
            members.iter().filter_map(|&m| jobs[m].array.map(|a| a.1)).collect();
        tasks.sort_unstable();
        rows.push(JobRow::PendingArray { first, tasks });
    }
    rows
}

/// Every job on its own row (`squeue -r`).
pub fn uncollapsed(jobs: &[Job]) -> Vec<JobRow<'_>> {
    jobs.iter().map(JobRow::Job).collect()
}

impl<'a> JobRow<'a> {
    /// The job whose fields the row shows.
    pub fn job(&self) -> &'a Job {
        match self {
            JobRow::Job(j) | JobRow::PendingArray { first: j, .. } => j,
        }
    }

    /// `76`, `82_1`, `82_[0-5%2]` (squeue `%i`, sacct `JobID`).
    pub fn display_id(&self) -> String {
        match self {
            JobRow::Job(j) => j.display_id(),
            JobRow::PendingArray { .. } => {
                format!("{}_[{}]", self.array_job_id(), self.task_str().unwrap_or_default())
            }
        }
    }

    /// The id of the record itself (squeue `%A`, `-O JobID`, sacct `JobIDRaw`): a task's own
    /// job id; for a folded pending array, the array's job id.
    pub fn raw_id(&self) -> u32 {
        match self {
            JobRow::Job(j) => j.id,
            JobRow::PendingArray { .. } => self.array_job_id(),
        }
    }

    /// The array's job id, or the job's own id when it is not an array task (squeue `%F`).
    pub fn array_job_id(&self) -> u32 {
        let j = self.job();
        j.array.map_or(j.id, |a| a.0)
    }

    /// The task index string (squeue `%K`, scontrol `ArrayTaskId=`): `1`, `0-5%2`; `None`
    /// when the job is not an array task.
    pub fn task_str(&self) -> Option<String> {
        match self {
            JobRow::Job(j) => j.array.map(|a| a.1.to_string()),
            JobRow::PendingArray { tasks, .. } => {
                Some(format_array_task_str(tasks, self.throttle(), DEFAULT_BITSTR_LEN))
            }
        }
    }

    /// The array's `%N` limit on running tasks.
    pub fn throttle(&self) -> Option<u32> {
        self.job().spec.array.as_ref().and_then(|a| a.throttle)
    }

    /// `StdOut=`/`StdErr=` as scontrol shows them: made absolute against the working
    /// directory, with `%A %a %j %u %x` filled in and every other specifier as typed.
    pub fn std_path(&self, stream: Stream) -> String {
        let j = self.job();
        let spec = &j.spec;
        let default = pattern::default_output_pattern(spec.array.is_some());
        let stdout = spec.stdout.as_deref().unwrap_or(default);
        let pat = match stream {
            Stream::Out => stdout,
            Stream::Err => spec.stderr.as_deref().unwrap_or(stdout),
        };
        let vars = PatternVars {
            job_id: self.raw_id(),
            array_job_id: j.array.map(|a| a.0),
            array_task_id: match self {
                JobRow::Job(j) => j.array.map(|a| a.1),
                JobRow::PendingArray { .. } => None,
            },
            job_name: &spec.name,
            user: &spec.user,
            first_node: "",
            node_index: 0,
            task_id: 0,
        };
        let path = pattern::expand_pattern_for_display(pat, &vars);
        if path.starts_with('/') {
            path
        } else {
            format!("{}/{}", spec.work_dir.trim_end_matches('/'), path)
        }
    }
}

/// Which output stream a path is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

/// `s` cut or padded to `width` characters, against the right edge when `right`.
pub(crate) fn fit(s: &str, width: usize, right: bool) -> String {
    let len = s.chars().count();
    if len >= width {
        return s.chars().take(width).collect();
    }
    let pad = " ".repeat(width - len);
    if right { format!("{pad}{s}") } else { format!("{s}{pad}") }
}

/// Orders host names the way people read them: `node2` before `node10`.
pub(crate) fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn split(s: &str) -> (&str, Option<u64>, usize) {
        let digits = s.bytes().rev().take_while(u8::is_ascii_digit).count();
        let (prefix, num) = s.split_at(s.len() - digits);
        (prefix, num.parse().ok(), digits)
    }
    let (pa, na, da) = split(a);
    let (pb, nb, db) = split(b);
    pa.cmp(pb).then(na.cmp(&nb)).then(da.cmp(&db)).then(a.cmp(b))
}

/// Host names as a sorted, compressed Slurm host list: `node[1-2]`.
pub(crate) fn node_list<S: AsRef<str>>(names: &[S]) -> String {
    let mut v: Vec<String> = names.iter().map(|s| s.as_ref().to_owned()).collect();
    v.sort_by(|a, b| natural_cmp(a, b));
    v.dedup();
    hostlist::compress(&v)
}

/// The name of group `gid` (getgrgid_r through nix), or the number when it has none.
pub(crate) fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    }
}

/// The account a job is charged to: `--account`, else the user's name (Chorus keeps no
/// association database; a Slurm user's default account is usually named after them).
pub(crate) fn account(job: &Job) -> &str {
    job.spec.other.get("account").map_or(job.spec.user.as_str(), String::as_str)
}

/// `--qos`, else `normal`.
pub(crate) fn qos(job: &Job) -> &str {
    job.spec.other.get("qos").map_or("normal", String::as_str)
}

/// Seconds the job has run (so far, or in all).
pub(crate) fn run_secs(job: &Job, now: u64) -> u64 {
    match (job.start_time, job.end_time) {
        (Some(s), Some(e)) => e.saturating_sub(s),
        (Some(s), None) => now.saturating_sub(s),
        _ => 0,
    }
}

/// When a job started, or for a job that ended before it started, when it ended (Slurm sets
/// both at once then).
pub(crate) fn shown_start(job: &Job) -> Option<u64> {
    job.start_time.or(if job.state.is_terminal() { job.end_time } else { None })
}

/// When a started job ends or will end: its end time, else start + limit (a year for
/// UNLIMITED, as Slurm does).
pub(crate) fn shown_end(job: &Job) -> Option<u64> {
    if job.end_time.is_some() {
        return job.end_time;
    }
    let start = job.start_time?;
    Some(start + job.time_limit_min.map_or(UNLIMITED_END_SECS, |m| u64::from(m) * 60))
}

/// squeue `%E`, scontrol `Dependency=`: `(null)` once nothing is left to wait for, else every
/// item with its state, e.g. `afterok:72(unfulfilled)`.
///
/// Only the job's own record is at hand, so an item's state is read off the job: a job
/// pending on `Dependency` (or held) waits on every item; `DependencyNeverSatisfied` means it
/// never will. Slurm drops satisfied dependencies, so any other job prints `(null)`.
pub(crate) fn dependency_text(job: &Job) -> String {
    let Some(dep) = &job.spec.dependency else { return "(null)".into() };
    let state = match (job.state, job.reason) {
        (JobState::Pending, PendingReason::DependencyNeverSatisfied) => DepState::Failed,
        (JobState::Pending, PendingReason::Dependency) => DepState::Unfulfilled,
        (JobState::Pending, _) if job.hold.is_some() => DepState::Unfulfilled,
        _ => return "(null)".into(),
    };
    dep.format_with_state(|_, _| ItemStatus { state, whole_array: false })
}

/// The memory a job asks for, as scontrol names it: per CPU (`MinMemoryCPU`, also the default
/// `DefMemPerCPU`) or per node (`MinMemoryNode`), in MB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemAsk {
    PerCpu(u64),
    PerNode(u64),
}

pub(crate) fn mem_ask(job: &Job, def_mem_per_cpu: u64) -> MemAsk {
    match job.spec.mem {
        Some(MemRequest::PerNode(mb)) => MemAsk::PerNode(mb),
        Some(MemRequest::PerCpu(mb)) => MemAsk::PerCpu(mb),
        None => MemAsk::PerCpu(def_mem_per_cpu),
    }
}

/// MB a job holds (allocated) or will hold (asked for), over all its nodes.
pub(crate) fn total_mem(job: &Job, def_mem_per_cpu: u64) -> u64 {
    if !job.alloc.is_empty() {
        return job.alloc.iter().map(|a| a.mem_mb).sum();
    }
    let spec = &job.spec;
    (0..spec.num_nodes())
        .map(|i| {
            let cpus = spec.tasks_on_node(i) * spec.cpus_per_task();
            spec.mem_on_node(cpus, def_mem_per_cpu)
        })
        .sum()
}

/// Nodes a job holds (one replica's), or asks for while pending.
pub(crate) fn num_nodes(job: &Job) -> u32 {
    if job.size().is_empty() { job.spec.num_nodes() } else { job.size().len() as u32 }
}

/// GPUs a job holds (one replica's), or asks for while pending.
pub(crate) fn num_gpus(job: &Job) -> u32 {
    if job.size().is_empty() {
        job.spec.gpus_per_node * job.spec.num_nodes()
    } else {
        job.size().iter().map(|a| a.gpus.len() as u32).sum()
    }
}

/// Replicas of a job (a Chorus field): those started, or, while pending, as many as its
/// policy starts it with at most.
pub(crate) fn replicas(job: &Job) -> u32 {
    match (job.replicas.len(), job.replication) {
        (0, ReplicationSpec::Fixed(n)) => n,
        (0, ReplicationSpec::Adaptive { replicas, .. }) => replicas,
        (n, _) => n as u32,
    }
}

/// The nodes whose agreeing results became the job's (their batch nodes), as a hostlist;
/// empty before a verdict.
pub(crate) fn agreed_nodes(job: &Job) -> String {
    let nodes: Vec<&str> =
        job.agreed.iter().filter_map(|r| job.replicas.get(*r as usize)?.batch_node()).collect();
    if nodes.is_empty() { String::new() } else { node_list(&nodes) }
}

/// One piece of a `%`-format string (`squeue -o`, `sinfo -o`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(String),
    /// `%[.][width]{Name}`: a field by its `-O` name (a Chorus extension: Slurm gave every
    /// letter a meaning already, and never uses a brace).
    Named {
        name: String,
        width: Option<usize>,
        right: bool,
    },
    Field {
        letter: char,
        /// `None`: printed as is, neither padded nor cut.
        width: Option<usize>,
        /// `%.10i`: against the right edge.
        right: bool,
        /// `%#P` (sinfo's own layouts): as wide as the widest value.
        auto: bool,
    },
}

/// Parses `%[.|-][#][width]letter` fields and the text between them; `%%` is a `%`.
pub(crate) fn parse_format(fmt: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            text.push(c);
            continue;
        }
        if chars.peek() == Some(&'%') {
            chars.next();
            text.push('%');
            continue;
        }
        let mut right = false;
        let mut auto = false;
        if let Some(&f @ ('.' | '-')) = chars.peek() {
            right = f == '.';
            chars.next();
        }
        if chars.peek() == Some(&'#') {
            auto = true;
            chars.next();
        }
        let mut digits = String::new();
        while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(d);
            chars.next();
        }
        let Some(letter) = chars.next() else {
            text.push('%');
            break;
        };
        if !text.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut text)));
        }
        if letter == '{' {
            let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
            out.push(Piece::Named { name, width: digits.parse().ok(), right });
            continue;
        }
        out.push(Piece::Field { letter, width: digits.parse().ok(), right, auto });
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_may_be_named_in_braces() {
        assert_eq!(
            parse_format("%.18i %.3{Replicas} %{Verdict}"),
            vec![
                Piece::Field { letter: 'i', width: Some(18), right: true, auto: false },
                Piece::Text(" ".into()),
                Piece::Named { name: "Replicas".into(), width: Some(3), right: true },
                Piece::Text(" ".into()),
                Piece::Named { name: "Verdict".into(), width: None, right: false },
            ]
        );
    }

    #[test]
    fn fit_pads_and_cuts() {
        assert_eq!(fit("run1", 8, true), "    run1");
        assert_eq!(fit("heldadmin", 8, true), "heldadmi");
        assert_eq!(fit("node1", 8, false), "node1   ");
        assert_eq!(fit("job requeued in held state", 20, true), "job requeued in held");
    }

    #[test]
    fn natural_order_puts_node2_before_node10() {
        let mut v = vec!["node10", "node2", "gpu1", "node1"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["gpu1", "node1", "node2", "node10"]);
        assert_eq!(node_list(&["node2", "node1"]), "node[1-2]");
    }

    #[test]
    fn format_strings_parse_width_and_justification() {
        assert_eq!(
            parse_format("%.18i|%-20j%R%%"),
            vec![
                Piece::Field { letter: 'i', width: Some(18), right: true, auto: false },
                Piece::Text("|".into()),
                Piece::Field { letter: 'j', width: Some(20), right: false, auto: false },
                Piece::Field { letter: 'R', width: None, right: false, auto: false },
                Piece::Text("%".into()),
            ]
        );
        assert_eq!(
            parse_format("%#P"),
            vec![Piece::Field { letter: 'P', width: None, right: false, auto: true }]
        );
    }
}
