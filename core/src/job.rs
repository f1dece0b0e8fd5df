//! Jobs: what a user asked for ([`JobSpec`]) and what became of it ([`Job`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::fsm::EndCause;
use crate::slurm::array::ArraySpec;
use crate::slurm::dependency::Dependency;
use crate::slurm::sbatch::OpenMode;
use crate::slurm::time::TimeLimit;
use crate::trust::ReplicationSpec;
use crate::verify::VerifySpec;

/// Slurm job ids are 32-bit; ids are never reused.
pub type JobId = u32;

/// Everything a submission fixes about a job, validated at the boundary (ctld's client
/// service) before it enters the log. Array tasks share one `Arc<JobSpec>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Partition asked for; `None` means the default partition (resolved at submit).
    pub partition: Option<String>,
    /// The batch script's text, `#!` line included.
    pub script: String,
    /// Arguments after the script path on sbatch's command line.
    pub script_args: Vec<String>,
    /// Absolute working directory (`-D`, default the submit directory).
    pub work_dir: String,
    pub submit_dir: String,
    pub submit_host: String,
    /// The environment the job starts with, already filtered by `--export`.
    pub env: Vec<(String, String)>,
    /// Whether `--export` was given (Slurm sets `SLURM_EXPORT_ENV` then).
    pub export_env: Option<String>,
    pub ntasks: Option<u32>,
    pub cpus_per_task: Option<u32>,
    pub ntasks_per_node: Option<u32>,
    pub nodes: Option<u32>,
    pub mem: Option<MemRequest>,
    /// GPUs per node (`--gres=gpu:N`, `--gpus-per-node`, `--gpus` on one node).
    pub gpus_per_node: u32,
    pub gpu_type: Option<String>,
    /// `None`: the partition's default time.
    pub time_limit: Option<TimeLimit>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub open_mode: OpenMode,
    pub array: Option<ArraySpec>,
    pub dependency: Option<Dependency>,
    pub hold: bool,
    /// Earliest start, seconds since the epoch (`--begin`).
    pub begin: Option<u64>,
    pub comment: Option<String>,
    pub requeue: bool,
    pub nice: i32,
    /// Accepted and shown, not acted on yet (`--account`, `--qos`, `--mail-type`, ...).
    pub other: BTreeMap<String, String>,
    /// `--replicas=N|fixed:N|adaptive[...]`; `None`: the partition's policy.
    pub replication: Option<ReplicationSpec>,
    /// `--verify=exact|tolerance:REL[,ABS]`; `None`: the partition's validator.
    pub verify: Option<VerifySpec>,
    /// `--output-files=GLOB[,GLOB...]`: files, relative to the working directory, that are
    /// part of the job's result (digested, compared between replicas, returned).
    pub output_files: Vec<String>,
}

impl JobSpec {
    /// A job as sbatch builds it before any option applies: root's, one task on one node,
    /// partition default, time limit default, output `slurm-%j.out`, requeue on. Callers
    /// override fields with struct update syntax (`JobSpec { ntasks: Some(2), ..JobSpec::new(..) }`).
    pub fn new(name: impl Into<String>, script: impl Into<String>, dir: impl Into<String>) -> Self {
        let dir = dir.into();
        Self {
            name: name.into(),
            user: "root".into(),
            uid: 0,
            gid: 0,
            partition: None,
            script: script.into(),
            script_args: vec![],
            work_dir: dir.clone(),
            submit_dir: dir,
            submit_host: "localhost".into(),
            env: vec![],
            export_env: None,
            ntasks: None,
            cpus_per_task: None,
            ntasks_per_node: None,
            nodes: None,
            mem: None,
            gpus_per_node: 0,
            gpu_type: None,
            time_limit: None,
            stdout: None,
            stderr: None,
            open_mode: OpenMode::Truncate,
            array: None,
            dependency: None,
            hold: false,
            begin: None,
            comment: None,
            requeue: true,
            nice: 0,
            other: BTreeMap::new(),
            replication: None,
            verify: None,
            output_files: vec![],
        }
    }

    /// Moves the script and environment out (see [`JobInputs`]).
    pub fn take_inputs(&mut self) -> JobInputs {
        JobInputs { script: std::mem::take(&mut self.script), env: std::mem::take(&mut self.env) }
    }

    /// A copy of the script and environment, leaving the spec whole.
    pub fn inputs(&self) -> JobInputs {
        JobInputs { script: self.script.clone(), env: self.env.clone() }
    }

    /// Total tasks: `-n`, else one per node.
    pub fn num_tasks(&self) -> u32 {
        self.ntasks.unwrap_or_else(|| self.num_nodes() * self.ntasks_per_node.unwrap_or(1)).max(1)
    }

    pub fn num_nodes(&self) -> u32 {
        self.nodes.unwrap_or(1).max(1)
    }

    pub fn cpus_per_task(&self) -> u32 {
        self.cpus_per_task.unwrap_or(1).max(1)
    }

    pub fn num_cpus(&self) -> u32 {
        self.num_tasks() * self.cpus_per_task()
    }

    /// Tasks on the `i`-th of `n` nodes: spread as evenly as Slurm's block distribution does.
    pub fn tasks_on_node(&self, i: u32) -> u32 {
        let (tasks, nodes) = (self.num_tasks(), self.num_nodes());
        tasks / nodes + u32::from(i < tasks % nodes)
    }

    /// What the `i`-th node of this job's allocation must give it. `--mem=0` asks for all of
    /// the node's memory (`node_mem_mb`), as in Slurm.
    pub fn need_on_node(&self, i: u32, node_mem_mb: u64, def_mem_per_cpu: u64) -> NodeNeed {
        let cpus = self.tasks_on_node(i) * self.cpus_per_task();
        let mem_mb = match self.mem_on_node(cpus, def_mem_per_cpu) {
            0 => node_mem_mb,
            m => m,
        };
        NodeNeed { cpus, mem_mb, gpus: self.gpus_per_node }
    }

    /// Memory in MB a node must hold for this job, given the CPUs it gets there.
    pub fn mem_on_node(&self, cpus_on_node: u32, def_mem_per_cpu: u64) -> u64 {
        match self.mem {
            Some(MemRequest::PerNode(mb)) => mb,
            Some(MemRequest::PerCpu(mb)) => mb * u64::from(cpus_on_node),
            None => def_mem_per_cpu * u64::from(cpus_on_node),
        }
    }
}

/// The bulky part of a submission: the script and the exported environment. They travel in
/// the log with the `Submit` command, but the controller keeps them out of the in-memory state
/// (a pending job costs what its scheduling needs, not its environment) and hands them to
/// [`crate::launch::prepare`] when the job starts. Array tasks share their array's inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInputs {
    pub script: String,
    pub env: Vec<(String, String)>,
}

impl JobInputs {
    /// The id the inputs of `job` are kept under: the array job id for array tasks.
    pub fn key(job: &Job) -> JobId {
        job.array.map_or(job.id, |(array, _)| array)
    }
}

/// What one node of an allocation must give a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeNeed {
    pub cpus: u32,
    pub mem_mb: u64,
    pub gpus: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemRequest {
    /// `--mem`, MB per node. `--mem=0` means all of the node's memory.
    PerNode(u64),
    /// `--mem-per-cpu`, MB per allocated CPU.
    PerCpu(u64),
}

/// Slurm's job states, printed with Slurm's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum JobState {
    Pending,
    Running,
    Completing,
    Completed,
    Failed,
    Cancelled,
    Timeout,
    OutOfMemory,
    NodeFail,
}

impl JobState {
    pub const ALL: [JobState; 9] = [
        JobState::Pending,
        JobState::Running,
        JobState::Completing,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Timeout,
        JobState::OutOfMemory,
        JobState::NodeFail,
    ];

    pub fn is_terminal(self) -> bool {
        !matches!(self, JobState::Pending | JobState::Running | JobState::Completing)
    }

    /// The long name (`squeue -o %T`, `scontrol`, `sacct`).
    pub fn name(self) -> &'static str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Running => "RUNNING",
            JobState::Completing => "COMPLETING",
            JobState::Completed => "COMPLETED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
            JobState::Timeout => "TIMEOUT",
            JobState::OutOfMemory => "OUT_OF_MEMORY",
            JobState::NodeFail => "NODE_FAIL",
        }
    }

    /// The compact name (`squeue -o %t`, the default ST column).
    pub fn short_name(self) -> &'static str {
        match self {
            JobState::Pending => "PD",
            JobState::Running => "R",
            JobState::Completing => "CG",
            JobState::Completed => "CD",
            JobState::Failed => "F",
            JobState::Cancelled => "CA",
            JobState::Timeout => "TO",
            JobState::OutOfMemory => "OOM",
            JobState::NodeFail => "NF",
        }
    }

    /// Accepts what `squeue -t` and `sacct -s` accept: long or compact names, any case.
    pub fn parse(s: &str) -> Option<JobState> {
        let up = s.to_ascii_uppercase();
        JobState::ALL.into_iter().find(|st| st.name() == up || st.short_name() == up)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a job is pending (or why it ended, for a few). A closed set that prints Slurm's strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PendingReason {
    None,
    Priority,
    Resources,
    Dependency,
    DependencyNeverSatisfied,
    JobHeldUser,
    JobHeldAdmin,
    BeginTime,
    JobArrayTaskLimit,
    PartitionTimeLimit,
    PartitionDown,
    NodeDown,
    TimeLimit,
    OutOfMemory,
    NonZeroExitCode,
    RaisedSignal,
    /// The job's replicas reached no majority (issue 6): it ended FAILED, nobody was paid.
    VerificationFailed,
}

impl PendingReason {
    pub fn name(self) -> &'static str {
        match self {
            PendingReason::None => "None",
            PendingReason::Priority => "Priority",
            PendingReason::Resources => "Resources",
            PendingReason::Dependency => "Dependency",
            PendingReason::DependencyNeverSatisfied => "DependencyNeverSatisfied",
            PendingReason::JobHeldUser => "JobHeldUser",
            PendingReason::JobHeldAdmin => "JobHeldAdmin",
            PendingReason::BeginTime => "BeginTime",
            PendingReason::JobArrayTaskLimit => "JobArrayTaskLimit",
            PendingReason::PartitionTimeLimit => "PartitionTimeLimit",
            PendingReason::PartitionDown => "PartitionDown",
            PendingReason::NodeDown => "NodeDown",
            PendingReason::TimeLimit => "TimeLimit",
            PendingReason::OutOfMemory => "OutOfMemory",
            PendingReason::NonZeroExitCode => "NonZeroExitCode",
            PendingReason::RaisedSignal => "RaisedSignal",
            PendingReason::VerificationFailed => "VerificationFailed",
        }
    }
}

impl fmt::Display for PendingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a job's batch script ended, as Slurm's `ExitCode=code:signal`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub code: i32,
    pub signal: i32,
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.code, self.signal)
    }
}

/// Who holds a pending job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hold {
    User,
    Admin,
}

/// Resources a job holds on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAlloc {
    pub node: String,
    pub cpus: u32,
    pub mem_mb: u64,
    /// Indices of the node's GPUs given to the job.
    pub gpus: Vec<u32>,
}

/// Resource use measured by the node (`sacct`'s MaxRSS, TotalCPU, TRESUsageIn*).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub max_rss_kb: u64,
    pub user_cpu_ms: u64,
    pub sys_cpu_ms: u64,
    /// What the job's GPUs on its batch node did while it ran; `None` when it had none there
    /// or the node could not ask them (no NVML driver), or the job ended before a sample.
    pub gpu: Option<GpuUsage>,
}

/// GPU use sampled every few seconds while a job ran. Each sample is summed over the job's
/// GPUs (as Slurm's `gres/gpumem` and `gres/gpuutil`: two GPUs fully busy are 200 %); then
/// the peak and the mean over the samples are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuUsage {
    /// The most GPU memory in use at once, MiB.
    pub mem_max_mb: u64,
    /// GPU memory in use, mean over the samples, MiB.
    pub mem_ave_mb: u64,
    /// The highest utilisation seen, percent.
    pub util_max_pct: u32,
    /// Utilisation, mean over the samples, percent.
    pub util_ave_pct: u32,
}

/// One output file of a finished job, as kept by the controller (the bytes live outside the
/// state; see `ctld`'s output store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// The absolute path Slurm's naming rules give, on the submit side.
    pub path: String,
    pub len: u64,
    pub append: bool,
}

/// A job (or one task of an array) and everything that happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    /// `(array job id, task index)` for array tasks.
    pub array: Option<(JobId, u32)>,
    pub spec: Arc<JobSpec>,
    pub partition: String,
    pub state: JobState,
    pub reason: PendingReason,
    pub hold: Option<Hold>,
    pub priority: u32,
    /// Time limit in minutes after the partition's default; `None` is UNLIMITED.
    pub time_limit_min: Option<u32>,
    pub submit_time: u64,
    pub eligible_time: Option<u64>,
    pub start_time: Option<u64>,
    pub end_time: Option<u64>,
    pub alloc: Vec<NodeAlloc>,
    pub exit: ExitStatus,
    /// Set when the job has been asked to stop (scancel, time limit) but has not ended.
    pub stopping: Option<StopCause>,
    pub restarts: u32,
    /// The uid that cancelled the job (`sacct`'s `CANCELLED by UID`).
    pub cancelled_by: Option<u32>,
    pub usage: Usage,
    pub outputs: Vec<OutputFile>,
    /// How many replicas this job runs, resolved at submission from `--replicas` or the
    /// partition's policy (`fixed:1`: the job runs once, as in Slurm).
    pub replication: ReplicationSpec,
    /// How its replicas' results are compared, resolved at submission.
    pub verify: VerifySpec,
    /// The replicas that must agree (the policy's choice when the job started; 0 while
    /// pending).
    pub quorum: u32,
    /// Replicas asked for so far in this attempt: the quorum, plus those a dispute added.
    pub wanted: u32,
    /// This attempt's replicas, in index order; `alloc` is their allocations, concatenated.
    pub replicas: Vec<Replica>,
    pub verdict: Verdict,
    /// The replicas whose result became the job's (empty until a verdict).
    pub agreed: Vec<u32>,
    /// The replica whose output files are the job's (`outputs`): the first agreeing one, or
    /// for a cancelled job the last to end.
    pub result_replica: Option<u32>,
    /// What the verdict moved: paid to the agreeing nodes' operators, and charged to the user.
    pub paid: u64,
    pub charged: u64,
}

/// One run of a job, on nodes of one operator: Chorus may run a job several times on nodes of
/// different operators and compare the results (docs/trust-model.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub index: u32,
    /// Its nodes: `alloc[0]` runs the batch script.
    pub alloc: Vec<NodeAlloc>,
    pub start_time: u64,
    pub state: ReplicaState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaState {
    Running,
    /// Its node reported how it ended, with a signed attestation the controller checked.
    Ended(ReplicaEnd),
    /// Its node went down or its agent restarted before it reported: it counts for nothing.
    Lost,
}

/// What a replica's node reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaEnd {
    pub end_time: u64,
    pub exit: ExitStatus,
    pub cause: EndCause,
    /// `attest::result_digest` of its exit status and files.
    pub digest: [u8; 32],
    pub usage: Usage,
    pub outputs: Vec<OutputFile>,
}

impl Replica {
    pub fn batch_node(&self) -> Option<&str> {
        self.alloc.first().map(|a| a.node.as_str())
    }

    pub fn is_running(&self) -> bool {
        self.state == ReplicaState::Running
    }

    pub fn ended(&self) -> Option<&ReplicaEnd> {
        match &self.state {
            ReplicaState::Ended(e) => Some(e),
            _ => None,
        }
    }
}

/// Where a job's verification stands (`scontrol show job`'s `Verdict=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Verdict {
    /// Not decided: replicas are running, or have reported and await comparison.
    #[default]
    Pending,
    /// The replicas disagreed; more run on nodes of other operators.
    Disputed,
    /// A majority agreed: its result is the job's.
    Agreed,
    /// No majority: the job failed verification.
    Failed,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pending => "Pending",
            Verdict::Disputed => "Disputed",
            Verdict::Agreed => "Agreed",
            Verdict::Failed => "Failed",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a running job is being stopped: decides its terminal state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopCause {
    Cancelled,
    TimeLimit,
    Requeue,
}

impl Job {
    pub fn is_array_task(&self) -> bool {
        self.array.is_some()
    }

    /// The id users see: `123` or `123_4`.
    pub fn display_id(&self) -> String {
        match self.array {
            Some((a, t)) => format!("{a}_{t}"),
            None => self.id.to_string(),
        }
    }

    /// CPUs the job holds (one replica's: every replica holds the same), or asks for while
    /// pending.
    pub fn num_cpus(&self) -> u32 {
        match self.replicas.first() {
            Some(r) => r.alloc.iter().map(|a| a.cpus).sum(),
            None => self.spec.num_cpus(),
        }
    }

    /// One replica's allocation: the job's size as Slurm's commands show it (every replica
    /// holds the same); empty while pending.
    pub fn size(&self) -> &[NodeAlloc] {
        self.replicas.first().map_or(&[], |r| r.alloc.as_slice())
    }

    pub fn node_names(&self) -> Vec<String> {
        self.alloc.iter().map(|a| a.node.clone()).collect()
    }

    /// What the job holds on nodes now: the allocations of its running replicas.
    pub fn held(&self) -> impl Iterator<Item = &NodeAlloc> {
        self.replicas.iter().filter(|r| r.is_running()).flat_map(|r| r.alloc.iter())
    }

    /// Its running replica whose batch script runs on `node` (at most one: a job's replicas
    /// go to nodes of distinct operators).
    pub fn replica_on(&self, node: &str) -> Option<&Replica> {
        self.replicas.iter().find(|r| r.is_running() && r.batch_node() == Some(node))
    }

    /// Replicas of this attempt that count: running or reported (not lost).
    pub fn live_replicas(&self) -> u32 {
        self.replicas.iter().filter(|r| r.state != ReplicaState::Lost).count() as u32
    }

    /// Replicas the scheduler should start for this running job: those a dispute asked for,
    /// or replacements of lost ones.
    pub fn missing_replicas(&self) -> u32 {
        if self.state != JobState::Running || self.stopping.is_some() {
            return 0;
        }
        self.wanted.saturating_sub(self.live_replicas())
    }

    /// Whether every replica this job wants has reported and the results, more than one,
    /// wait to be compared (the leader's validator, then `Command::Verdict`).
    pub fn awaits_verdict(&self) -> bool {
        self.state == JobState::Running
            && self.stopping.is_none()
            && self.held().next().is_none()
            && self.live_replicas() == self.wanted
            && self.replicas.iter().filter(|r| r.ended().is_some()).count() >= 2
    }

    /// Whether the job may run more than once (its results are then compared, and every
    /// replica runs sandboxed, as on a node that shares no filesystem with the submitter).
    pub fn is_replicated(&self) -> bool {
        self.replication != ReplicationSpec::Fixed(1)
    }

    /// The moment a running job passes its time limit.
    pub fn deadline(&self) -> Option<u64> {
        Some(self.start_time? + u64::from(self.time_limit_min?) * 60)
    }
}
