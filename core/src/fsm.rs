//! The replicated state machine: [`apply`] is the only way [`ClusterState`] changes.
//!
//! ```text
//!   client/node/leader ──▶ Command ──▶ raft log (ordered, durable) ──▶ apply(state, cmd)
//!                                                                      │
//!                                  Ok(Applied) / Err(Rejected) ◀───────┘ (same on every replica)
//! ```
//!
//! `apply` is deterministic: it reads no clock (every command carries `now`), draws no random
//! numbers, and re-checks everything it is told. A plan from a buggy scheduler, a report from
//! a lying node or a command replayed after a restart is refused with a reason, never applied
//! half-way: each command either changes the state as a whole or not at all.
//!
//! Command variants are append-only: their order is part of the log format.
//!
//! A job runs as one or more replicas (`replicas.rs`): most of what happens to a running job
//! happens to one of its replicas first, and to the job when its replicas are done.

mod replicas;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::identity::Token;
use crate::job::{
    ExitStatus, Hold, Job, JobId, JobSpec, JobState, NodeAlloc, OutputFile, PendingReason,
    StopCause, Usage, Verdict,
};
use crate::node::{Health, HealthChange, Node, NodeResources, NodeState};
use crate::slurm::time::TimeLimit;
use crate::state::{ClusterState, DepStatus};

/// Slurm's priority/basic starts here and counts down one per submitted job.
pub const BASIC_PRIORITY_TOP: u32 = 0xFFFF_0000;

/// A change to the cluster, in the order Raft committed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Submit {
        spec: Box<JobSpec>,
        now: u64,
    },
    RegisterNode {
        reg: Box<NodeRegistration>,
        now: u64,
    },
    ApplyPlan {
        plan: Plan,
        now: u64,
    },
    JobEnded {
        report: Box<JobReport>,
        now: u64,
    },
    Cancel {
        jobs: Vec<JobId>,
        uid: u32,
        now: u64,
    },
    Hold {
        jobs: Vec<JobId>,
        admin: bool,
        now: u64,
    },
    Release {
        jobs: Vec<JobId>,
        now: u64,
    },
    Requeue {
        jobs: Vec<JobId>,
        now: u64,
    },
    Update {
        jobs: Vec<JobId>,
        update: JobUpdate,
        now: u64,
    },
    NodeDown {
        node: String,
        reason: String,
        now: u64,
    },
    SetNodeState {
        node: String,
        state: NodeState,
        reason: Option<String>,
        user: String,
        now: u64,
    },
    /// A submission carrying the client's request id: applied again (a client retrying after
    /// a failover), it answers with the jobs the first one created and creates nothing.
    SubmitOnce {
        request: RequestId,
        spec: Box<JobSpec>,
        now: u64,
    },
    /// A node agent's health check result, from its agent process `session`: drains the node
    /// when it is unhealthy, and lifts only a drain a health check set ([`node::health_change`]).
    ///
    /// [`node::health_change`]: crate::node::health_change
    NodeHealth {
        node: String,
        session: u64,
        health: Health,
        now: u64,
    },
    /// A registration carrying the health check the agent ran before registering (as slurmd
    /// does): a node that starts unhealthy is drained by the same command that registers it,
    /// so no job can be placed on it in between.
    RegisterNodeChecked {
        reg: Box<NodeRegistration>,
        health: Health,
        now: u64,
    },
    /// Credits an operator's account, opening it (an admin's command).
    Deposit {
        operator: String,
        amount: u64,
        now: u64,
    },
    /// Bonds stake from an operator's balance to one of its nodes.
    Bond {
        operator: String,
        node: String,
        amount: u64,
        now: u64,
    },
    /// Starts returning a node's stake to its operator, after the unbonding delay.
    Unbond {
        operator: String,
        node: String,
        amount: u64,
        now: u64,
    },
    /// The agreement classes of a replicated job's reported replicas (replica indices), as
    /// the leader's validator found them; applying it decides the job (`trust::decide`).
    Verdict {
        job: JobId,
        attempt: u32,
        classes: Vec<Vec<u32>>,
        now: u64,
    },
    /// Credits a user's account, which pays for its jobs' verified work (an admin's command).
    CreditUser {
        user: String,
        amount: u64,
        now: u64,
    },
    /// Records a token by the hash of its secret (an admin's command; the secret never
    /// reaches the controllers before it is used).
    IssueToken {
        hash: [u8; 32],
        token: Token,
        now: u64,
    },
    /// Forgets the token whose id (hex of its hash's first bytes) starts with `id`.
    RevokeToken {
        id: String,
        now: u64,
    },
    /// A node joining with a join token: binds its name to the token's operator and to its
    /// key, both for good. The controller then issues the node's certificate.
    JoinNode {
        node: String,
        token: [u8; 32],
        public_key: [u8; 32],
        now: u64,
    },
}

/// A client's id for one submission, random (128 bits), reused when it retries.
pub type RequestId = u128;

impl Command {
    pub fn now(&self) -> u64 {
        match self {
            Command::Submit { now, .. }
            | Command::RegisterNode { now, .. }
            | Command::ApplyPlan { now, .. }
            | Command::JobEnded { now, .. }
            | Command::Cancel { now, .. }
            | Command::Hold { now, .. }
            | Command::Release { now, .. }
            | Command::Requeue { now, .. }
            | Command::Update { now, .. }
            | Command::NodeDown { now, .. }
            | Command::SetNodeState { now, .. }
            | Command::SubmitOnce { now, .. }
            | Command::NodeHealth { now, .. }
            | Command::RegisterNodeChecked { now, .. }
            | Command::Deposit { now, .. }
            | Command::Bond { now, .. }
            | Command::Unbond { now, .. }
            | Command::Verdict { now, .. }
            | Command::CreditUser { now, .. }
            | Command::IssueToken { now, .. }
            | Command::RevokeToken { now, .. }
            | Command::JoinNode { now, .. } => *now,
        }
    }
}

/// What a node agent says about itself when it (re)connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegistration {
    pub name: String,
    pub addr: String,
    pub hostname: String,
    pub resources: NodeResources,
    pub boot_time: u64,
    pub version: String,
    pub os: String,
    /// `(job, attempt)` the agent still runs, or ran and has not yet reported.
    pub running: Vec<(JobId, u32)>,
    /// Random per agent process. The same session registering again is a reconnect (to a
    /// new leader, say): a job assigned to it that it does not list was never delivered, and
    /// the assignment stream delivers it now. A new session is a restarted agent: what it
    /// does not list died with the old process.
    pub session: u64,
    /// The agent's ed25519 public key, whose possession the controller checked
    /// (`attest::registration_proof`). The first key a node registers with is its key from
    /// then on: another is refused.
    pub public_key: Option<[u8; 32]>,
}

/// The scheduler's proposal. `apply` re-checks every placement against the state it meets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub starts: Vec<Placement>,
    /// New pending reasons (only those that changed).
    pub reasons: Vec<(JobId, PendingReason)>,
}

/// Replicas to start for one job: a pending job's first `quorum` replicas, or more for a
/// running job whose replicas disagreed (or one was lost).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub job: JobId,
    /// For a pending job, the replicas that must agree, as the job's replication policy
    /// chose: `replicas.len()` must equal it. Ignored for a running job.
    pub quorum: u32,
    /// Each replica's allocation (its first node runs the batch script), on nodes of
    /// distinct operators.
    pub replicas: Vec<Vec<NodeAlloc>>,
}

impl Placement {
    /// A job started once, on `alloc` (what every job of a `fixed:1` partition gets).
    pub fn single(job: JobId, alloc: Vec<NodeAlloc>) -> Self {
        Self { job, quorum: 1, replicas: vec![alloc] }
    }
}

/// How the node saw a job end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndCause {
    /// The script exited or was killed by a signal nobody in Chorus sent.
    Exited,
    /// The node stopped it at its time limit.
    TimeLimit,
    /// The kernel's OOM killer ended it.
    OutOfMemory,
    /// Stopped because the controller asked (scancel, requeue).
    Stopped,
    /// The node could not start it (bad working directory, no interpreter...).
    LaunchFailed,
}

/// A node's report that one replica of a job's batch script ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReport {
    pub job: JobId,
    pub attempt: u32,
    pub node: String,
    pub exit: ExitStatus,
    pub cause: EndCause,
    pub usage: Usage,
    pub outputs: Vec<OutputFile>,
    /// Which of the job's replicas this is.
    pub replica: u32,
    /// `attest::result_digest` of the exit status and the output files (the controller
    /// computed it again from the bytes it received).
    pub digest: [u8; 32],
    /// The node's ed25519 signature over the attestation (`attest::Attestation`); empty from
    /// a node without a key.
    pub signature: Vec<u8>,
}

impl JobReport {
    /// The statement the node signed.
    pub fn attestation(&self) -> crate::attest::Attestation {
        crate::attest::Attestation {
            job: self.job,
            replica: self.replica,
            node: self.node.clone(),
            digest: self.digest,
            exit: self.exit,
            usage: self.usage,
        }
    }
}

/// Fields `scontrol update job` may change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobUpdate {
    pub time_limit: Option<TimeLimit>,
    pub name: Option<String>,
    pub partition: Option<String>,
    pub comment: Option<String>,
    pub nice: Option<i32>,
    pub priority: Option<u32>,
    pub begin: Option<u64>,
    pub ntasks: Option<u32>,
    pub cpus_per_task: Option<u32>,
}

/// What applying a command did, for the caller that proposed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The ids of the new job (one per array task; the first is the job/array id).
    Submitted(Vec<JobId>),
    NodeRegistered {
        lost_jobs: Vec<JobId>,
    },
    /// Jobs started by a plan.
    Started(Vec<JobId>),
    /// Jobs whose state changed.
    Changed(Vec<JobId>),
    Nothing,
}

/// Why a command was refused. Deterministic: every replica refuses it the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("Invalid job id specified")]
    UnknownJob(JobId),
    #[error("invalid partition specified: {0}")]
    UnknownPartition(String),
    #[error("Job dependency problem")]
    Dependency,
    #[error("Requested time limit is invalid (missing or exceeds some limit)")]
    TimeLimit,
    #[error(
        "Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)"
    )]
    NotPermitted,
    #[error("Job/step already completing or completed")]
    AlreadyDone(JobId),
    #[error("Job is no longer pending execution")]
    NotPending(JobId),
    #[error("Invalid node name specified")]
    UnknownNode(String),
    #[error("stale report for job {job} from node {node}")]
    StaleReport { job: JobId, node: String },
    #[error("Invalid job array specification")]
    Array,
    #[error("node {0} spoke from an agent process it no longer runs")]
    StaleSession(String),
    #[error("{0}")]
    Account(#[from] crate::accounts::AccountError),
    #[error("node {0} registered with another key")]
    KeyMismatch(String),
    #[error("report from node {node} not believed: {why}")]
    BadAttestation { node: String, why: String },
    #[error("verdict on job {job} refused: {why}")]
    BadVerdict { job: JobId, why: String },
    #[error(
        "Job violates accounting/QOS policy (job submit limit, user's size and/or time limits): user {0} has no credits for a priced partition"
    )]
    NoCredits(String),
    #[error("{0}")]
    Identity(#[from] crate::identity::IdentityError),
}

/// Applies one committed command. Either changes the state as a whole or returns why not.
pub fn apply(state: &mut ClusterState, cmd: Command) -> Result<Applied, Rejected> {
    state.now = state.now.max(cmd.now());
    match cmd {
        Command::Submit { spec, now } => submit(state, *spec, now),
        Command::SubmitOnce { request, spec, now } => submit_once(state, request, *spec, now),
        Command::RegisterNode { reg, now } => register_node(state, *reg, now),
        Command::ApplyPlan { plan, now } => Ok(apply_plan(state, plan, now)),
        Command::JobEnded { report, now } => replicas::report(state, *report, now),
        Command::Cancel { jobs, uid, now } => cancel(state, &jobs, uid, now),
        Command::Hold { jobs, admin, now: _ } => hold(state, &jobs, admin),
        Command::Release { jobs, now } => release(state, &jobs, now),
        Command::Requeue { jobs, now } => requeue(state, &jobs, now),
        Command::Update { jobs, update: u, now: _ } => update(state, &jobs, &u),
        Command::NodeDown { node, reason, now } => node_down(state, &node, reason, now),
        Command::SetNodeState { node, state: st, reason, user, now } => {
            let n = state.nodes.get_mut(&node).ok_or(Rejected::UnknownNode(node))?;
            n.state = st;
            n.reason_set_by = reason.as_ref().map(|_| (user, now));
            n.reason = reason;
            Ok(Applied::Nothing)
        }
        Command::NodeHealth { node, session, health, now } => {
            node_health(state, &node, session, &health, now)
        }
        Command::RegisterNodeChecked { reg, health, now } => {
            let (name, session) = (reg.name.clone(), reg.session);
            let applied = register_node(state, *reg, now)?;
            node_health(state, &name, session, &health, now)?;
            Ok(applied)
        }
        Command::Deposit { operator, amount, now } => {
            state.accounts.deposit(&operator, amount, now)?;
            Ok(Applied::Nothing)
        }
        Command::Bond { operator, node, amount, now } => {
            // A node that joined is its join token's operator's, and only it bonds stake there:
            // the books and the identities must name the same operator.
            if let Some(owner) = state.identities.operator_of(&node).filter(|o| *o != operator) {
                let (node, operator) = (node.clone(), owner.to_owned());
                return Err(crate::accounts::AccountError::NodeTaken { node, operator }.into());
            }
            state.accounts.bond_node(&operator, &node, amount, now)?;
            Ok(Applied::Nothing)
        }
        Command::Unbond { operator, node, amount, now } => {
            let delay = state.config.unbond_delay_secs;
            state.accounts.unbond_node(&operator, &node, amount, now, delay)?;
            Ok(Applied::Nothing)
        }
        Command::Verdict { job, attempt, classes, now } => {
            replicas::verdict(state, job, attempt, classes, now)
        }
        Command::CreditUser { user, amount, now: _ } => {
            state.accounts.credit_user(&user, amount)?;
            Ok(Applied::Nothing)
        }
        Command::IssueToken { hash, token, now } => {
            state.identities.issue(hash, token, now)?;
            Ok(Applied::Nothing)
        }
        Command::RevokeToken { id, now: _ } => {
            state.identities.revoke(&id)?;
            Ok(Applied::Nothing)
        }
        Command::JoinNode { node, token, public_key, now } => {
            // A name that registered with a key before identities existed keeps that key.
            let known = state.nodes.get(&node).and_then(|n| n.public_key);
            state.identities.join(&node, public_key, &token, known, now)?;
            Ok(Applied::Nothing)
        }
    }
}

/// Checks a spec against the state without changing anything: the submit path's last word.
pub fn check_submit(state: &ClusterState, spec: &JobSpec) -> Result<String, Rejected> {
    let partition = match &spec.partition {
        Some(p) => {
            state.config.partition(p).ok_or_else(|| Rejected::UnknownPartition(p.clone()))?
        }
        None => state
            .config
            .default_partition()
            .ok_or_else(|| Rejected::UnknownPartition("(default)".into()))?,
    };
    if let (Some(TimeLimit::Minutes(m)), Some(max)) = (spec.time_limit, partition.max_time_min)
        && m > max
    {
        return Err(Rejected::TimeLimit);
    }
    if let (Some(TimeLimit::Unlimited), Some(_)) = (spec.time_limit, partition.max_time_min) {
        return Err(Rejected::TimeLimit);
    }
    if let Some(a) = &spec.array
        && (a.tasks.is_empty() || a.tasks.iter().any(|t| *t >= state.config.max_array_size))
    {
        return Err(Rejected::Array);
    }
    if let Some(dep) = &spec.dependency {
        for c in &dep.conditions {
            for r in &c.jobs {
                if state.resolve(r).is_empty() {
                    return Err(Rejected::Dependency);
                }
            }
        }
    }
    let priced = partition.price_cpu_hour > 0 || partition.price_gpu_hour > 0;
    if priced && !state.accounts.user_can_pay(&spec.user) {
        return Err(Rejected::NoCredits(spec.user.clone()));
    }
    Ok(partition.name.clone())
}

/// How long a request id is remembered: far longer than any client retries.
pub const REQUEST_MEMORY_SECS: u64 = 3600;

fn submit_once(
    state: &mut ClusterState,
    request: RequestId,
    spec: JobSpec,
    now: u64,
) -> Result<Applied, Rejected> {
    state.forget_requests(now.saturating_sub(REQUEST_MEMORY_SECS));
    if let Some(&(job, _)) = state.requests.get(&request) {
        // Only the job (or array) id is kept: that is all a submitter is told.
        return Ok(Applied::Submitted(vec![job]));
    }
    let applied = submit(state, spec, now)?;
    if let Applied::Submitted(jobs) = &applied {
        state.requests.insert(request, (jobs[0], now));
        state.request_order.insert((now, request));
    }
    Ok(applied)
}

fn submit(state: &mut ClusterState, spec: JobSpec, now: u64) -> Result<Applied, Rejected> {
    let partition = check_submit(state, &spec)?;
    let part = state.config.partition(&partition).expect("checked above");
    let time_limit_min = match spec.time_limit {
        Some(TimeLimit::Minutes(m)) => Some(m),
        Some(TimeLimit::Unlimited) => None,
        None => part.default_time_min.or(part.max_time_min),
    };
    let replication = spec.replication.unwrap_or(part.replication);
    let verify = spec.verify.clone().unwrap_or_else(|| part.verify.clone());
    let spec = Arc::new(spec);
    let tasks: Vec<Option<u32>> = match &spec.array {
        Some(a) => a.tasks.iter().copied().map(Some).collect(),
        None => vec![None],
    };
    let first = state.next_job_id;
    let mut ids = Vec::with_capacity(tasks.len());
    for task in tasks {
        let id = state.next_job_id;
        state.next_job_id += 1;
        state.submitted += 1;
        let hold = spec.hold.then_some(Hold::User);
        let job = Job {
            id,
            array: task.map(|t| (first, t)),
            spec: Arc::clone(&spec),
            partition: partition.clone(),
            state: JobState::Pending,
            reason: if hold.is_some() { PendingReason::JobHeldUser } else { PendingReason::None },
            hold,
            priority: if hold.is_some() { 0 } else { basic_priority(state.submitted) },
            time_limit_min,
            submit_time: now,
            eligible_time: None,
            start_time: None,
            end_time: None,
            alloc: vec![],
            exit: ExitStatus::default(),
            stopping: None,
            restarts: 0,
            cancelled_by: None,
            usage: Usage::default(),
            outputs: vec![],
            replication,
            verify: verify.clone(),
            quorum: 0,
            wanted: 0,
            replicas: vec![],
            verdict: Verdict::Pending,
            agreed: vec![],
            result_replica: None,
            paid: 0,
            charged: 0,
        };
        state.jobs.insert(id, job);
        state.pending.insert(id);
        ids.push(id);
    }
    if spec.array.is_some() {
        state.arrays.insert(first, ids.clone());
    }
    Ok(Applied::Submitted(ids))
}

fn basic_priority(submitted: u64) -> u32 {
    BASIC_PRIORITY_TOP.saturating_sub(u32::try_from(submitted).unwrap_or(u32::MAX))
}

fn register_node(
    state: &mut ClusterState,
    reg: NodeRegistration,
    now: u64,
) -> Result<Applied, Rejected> {
    // A node's key is the one it first registered with: no one else may speak as it.
    let known_key = state.nodes.get(&reg.name).and_then(|n| n.public_key);
    if known_key.is_some() && known_key != reg.public_key {
        return Err(Rejected::KeyMismatch(reg.name));
    }
    // Replicas a restarted agent no longer lists are lost with the old process.
    let reconnect = state.nodes.get(&reg.name).is_some_and(|n| n.session == reg.session);
    let lost: Vec<JobId> = state
        .active
        .iter()
        .copied()
        .filter(|id| {
            let j = &state.jobs[id];
            !reconnect
                && j.replica_on(&reg.name).is_some()
                && !reg.running.contains(&(j.id, j.restarts))
        })
        .collect();
    for id in &lost {
        replicas::lose(state, *id, &reg.name, now);
    }
    let incarnation = state.nodes.get(&reg.name).map_or(1, |n| n.incarnation + 1);
    let (keep_state, keep_reason, keep_set_by) = match state.nodes.get(&reg.name) {
        Some(n) if n.state == NodeState::Drain => {
            (NodeState::Drain, n.reason.clone(), n.reason_set_by.clone())
        }
        _ => (NodeState::Up, None, None),
    };
    let mut node = Node {
        name: reg.name.clone(),
        addr: reg.addr,
        hostname: reg.hostname,
        resources: reg.resources,
        state: keep_state,
        reason: keep_reason,
        reason_set_by: keep_set_by,
        alloc_cpus: 0,
        alloc_mem_mb: 0,
        alloc_gpus: vec![],
        boot_time: reg.boot_time,
        registered_at: now,
        incarnation,
        session: reg.session,
        version: reg.version,
        os: reg.os,
        public_key: reg.public_key,
    };
    // Re-derive the allocation from the replicas that survive on this node.
    for id in &state.active {
        for a in state.jobs[id].held().filter(|a| a.node == node.name) {
            node.alloc_cpus += a.cpus;
            node.alloc_mem_mb += a.mem_mb;
            node.alloc_gpus.extend(&a.gpus);
        }
    }
    state.nodes.insert(reg.name, node);
    Ok(Applied::NodeRegistered { lost_jobs: lost })
}

/// Whether a pending job may start now, and if not, why. Shared by the scheduler plugins and
/// by `apply`'s re-check so the two never disagree. The array throttle is checked apart
/// ([`throttled`]): a scheduler counts running tasks once per array, not once per task.
pub fn blocking_reason(state: &ClusterState, job: &Job, now: u64) -> Option<PendingReason> {
    if let Some(h) = job.hold {
        return Some(match h {
            Hold::User => PendingReason::JobHeldUser,
            Hold::Admin => PendingReason::JobHeldAdmin,
        });
    }
    match state.dependency_status(job) {
        DepStatus::Satisfied => {}
        DepStatus::Waiting => return Some(PendingReason::Dependency),
        DepStatus::Never => return Some(PendingReason::DependencyNeverSatisfied),
    }
    if job.spec.begin.is_some_and(|b| b > now) {
        return Some(PendingReason::BeginTime);
    }
    if !state.config.partition(&job.partition).is_some_and(|p| p.up) {
        return Some(PendingReason::PartitionDown);
    }
    None
}

/// Whether an array task must wait for its array's `%` throttle, given how many of the
/// array's tasks run (or are about to).
pub fn throttled(job: &Job, running_in_array: usize) -> bool {
    job.spec
        .array
        .as_ref()
        .and_then(|a| a.throttle)
        .is_some_and(|limit| running_in_array >= limit as usize)
}

/// Whether `alloc` fits `job` on the nodes as they are now: one replica's allocation. A
/// replicated job runs only on nodes with a key, whose reports can be checked.
pub fn placement_fits(state: &ClusterState, job: &Job, alloc: &[NodeAlloc]) -> bool {
    let spec = &job.spec;
    let Some(part) = state.config.partition(&job.partition) else { return false };
    if alloc.len() != spec.num_nodes() as usize {
        return false;
    }
    let mut seen = std::collections::BTreeSet::new();
    alloc.iter().enumerate().all(|(i, a)| {
        let Some(node) = state.nodes.get(&a.node) else { return false };
        let need = spec.need_on_node(i as u32, node.resources.mem_mb, state.config.def_mem_per_cpu);
        let free_gpus = node.free_gpus();
        let typed: Vec<u32> = node.gpus_of_type(spec.gpu_type.as_deref()).collect();
        seen.insert(&a.node)
            && state.takes_work(node)
            && part.has_node(&node.name)
            && (node.public_key.is_some() || !job.is_replicated())
            && a.cpus >= need.cpus
            && a.mem_mb >= need.mem_mb
            && a.cpus <= node.free_cpus()
            && a.mem_mb <= node.free_mem_mb()
            && a.gpus.len() == need.gpus as usize
            && a.gpus.iter().all(|g| free_gpus.contains(g) && typed.contains(g))
    })
}

fn apply_plan(state: &mut ClusterState, plan: Plan, now: u64) -> Applied {
    let mut started = vec![];
    for p in plan.starts {
        let Some(job) = state.jobs.get(&p.job) else { continue };
        let fits = match job.state {
            JobState::Pending => {
                blocking_reason(state, job, now).is_none()
                    && !job.array.is_some_and(|(a, _)| throttled(job, state.running_tasks(a)))
                    && replicas::first_fit(state, job, &p)
            }
            _ => replicas::more_fit(state, job, &p),
        };
        if !fits {
            continue;
        }
        let id = p.job;
        if state.jobs[&id].state == JobState::Pending {
            let job = state.jobs.get_mut(&id).expect("checked above");
            job.state = JobState::Running;
            job.reason = PendingReason::None;
            job.start_time = Some(now);
            job.eligible_time.get_or_insert(now);
            job.quorum = p.quorum;
            job.wanted = p.quorum;
            state.pending.remove(&id);
            state.active.insert(id);
        }
        replicas::start(state, id, p.replicas, now);
        started.push(id);
    }
    for (id, reason) in plan.reasons {
        if let Some(job) = state.jobs.get_mut(&id)
            && job.state == JobState::Pending
            && job.hold.is_none()
        {
            job.reason = reason;
            if matches!(reason, PendingReason::Priority | PendingReason::Resources) {
                job.eligible_time.get_or_insert(now);
            }
        }
    }
    Applied::Started(started)
}

/// The state a job ends in, from why it was stopped (if it was) and how its result ended.
fn end_state(stopping: Option<StopCause>, cause: EndCause, exit: ExitStatus) -> JobState {
    match (stopping, cause) {
        (Some(StopCause::Cancelled), _) => JobState::Cancelled,
        (Some(StopCause::TimeLimit), _) | (_, EndCause::TimeLimit) => JobState::Timeout,
        (_, EndCause::OutOfMemory) => JobState::OutOfMemory,
        (_, EndCause::LaunchFailed) => JobState::Failed,
        _ if exit == ExitStatus::default() => JobState::Completed,
        _ => JobState::Failed,
    }
}

/// Moves a job to a terminal state and gives back what it held. A replica still running
/// counts for nothing from now on.
fn finish(state: &mut ClusterState, id: JobId, to: JobState, exit: ExitStatus, now: u64) {
    release_alloc(state, id);
    let job = state.jobs.get_mut(&id).expect("caller checked");
    for r in job.replicas.iter_mut().filter(|r| r.is_running()) {
        r.state = crate::job::ReplicaState::Lost;
    }
    job.state = to;
    job.exit = exit;
    job.end_time = Some(now);
    job.stopping = None;
    job.reason = match to {
        JobState::Timeout => PendingReason::TimeLimit,
        JobState::OutOfMemory => PendingReason::OutOfMemory,
        JobState::Failed if exit.signal != 0 => PendingReason::RaisedSignal,
        JobState::Failed => PendingReason::NonZeroExitCode,
        JobState::NodeFail => PendingReason::NodeDown,
        // A job cancelled while pending keeps saying why it was waiting, as in Slurm.
        JobState::Cancelled => job.reason,
        _ => PendingReason::None,
    };
    state.pending.remove(&id);
    state.active.remove(&id);
}

/// Gives back what an active job's running replicas hold.
fn release_alloc(state: &mut ClusterState, id: JobId) {
    if !state.active.contains(&id) {
        return;
    }
    let held: Vec<NodeAlloc> = state.jobs[&id].held().cloned().collect();
    give_back(state, &held);
}

/// Gives back allocations to their nodes.
fn give_back(state: &mut ClusterState, allocs: &[NodeAlloc]) {
    for a in allocs {
        if let Some(node) = state.nodes.get_mut(&a.node) {
            node.alloc_cpus = node.alloc_cpus.saturating_sub(a.cpus);
            node.alloc_mem_mb = node.alloc_mem_mb.saturating_sub(a.mem_mb);
            node.alloc_gpus.retain(|g| !a.gpus.contains(g));
        }
    }
}

fn requeue_one(state: &mut ClusterState, id: JobId, now: u64) {
    release_alloc(state, id);
    state.active.remove(&id);
    state.pending.insert(id);
    let job = state.jobs.get_mut(&id).expect("caller checked");
    job.state = JobState::Pending;
    job.reason = PendingReason::None;
    job.stopping = None;
    job.restarts += 1;
    job.start_time = None;
    job.end_time = None;
    replicas::forget_attempt(job);
    // Slurm holds a requeued batch job's eligibility until it is submitted again.
    job.eligible_time = Some(now);
}

fn known(state: &ClusterState, jobs: &[JobId]) -> Result<(), Rejected> {
    match jobs.iter().find(|id| !state.jobs.contains_key(id)) {
        Some(id) => Err(Rejected::UnknownJob(*id)),
        None => Ok(()),
    }
}

fn cancel(
    state: &mut ClusterState,
    jobs: &[JobId],
    uid: u32,
    now: u64,
) -> Result<Applied, Rejected> {
    known(state, jobs)?;
    if uid != 0 && jobs.iter().any(|id| state.jobs[id].spec.uid != uid) {
        return Err(Rejected::NotPermitted);
    }
    let mut changed = vec![];
    for &id in jobs {
        if !state.jobs[&id].state.is_terminal() {
            state.jobs.get_mut(&id).expect("known").cancelled_by = Some(uid);
        }
        match state.jobs[&id].state {
            JobState::Pending => {
                finish(state, id, JobState::Cancelled, ExitStatus::default(), now);
                changed.push(id);
            }
            JobState::Running | JobState::Completing if state.jobs[&id].held().next().is_none() => {
                // Between a dispute and its next replicas: nothing runs to be stopped.
                finish(state, id, JobState::Cancelled, ExitStatus::default(), now);
                changed.push(id);
            }
            JobState::Running | JobState::Completing => {
                let job = state.jobs.get_mut(&id).expect("known");
                if job.stopping != Some(StopCause::Cancelled) {
                    // Slurm shows COMPLETING while the job gets SIGTERM and its KillWait.
                    job.state = JobState::Completing;
                    job.stopping = Some(StopCause::Cancelled);
                    changed.push(id);
                }
            }
            _ => {}
        }
    }
    if changed.is_empty() && jobs.len() == 1 {
        return Err(Rejected::AlreadyDone(jobs[0]));
    }
    Ok(Applied::Changed(changed))
}

fn hold(state: &mut ClusterState, jobs: &[JobId], admin: bool) -> Result<Applied, Rejected> {
    known(state, jobs)?;
    if let Some(id) = jobs.iter().find(|id| state.jobs[id].state != JobState::Pending) {
        return Err(Rejected::NotPending(*id));
    }
    for id in jobs {
        let job = state.jobs.get_mut(id).expect("known");
        job.hold = Some(if admin { Hold::Admin } else { Hold::User });
        job.reason = if admin { PendingReason::JobHeldAdmin } else { PendingReason::JobHeldUser };
        job.priority = 0;
    }
    Ok(Applied::Changed(jobs.to_vec()))
}

fn release(state: &mut ClusterState, jobs: &[JobId], _now: u64) -> Result<Applied, Rejected> {
    known(state, jobs)?;
    let mut changed = vec![];
    for id in jobs {
        let submitted = state.submitted;
        let job = state.jobs.get_mut(id).expect("known");
        if job.hold.take().is_some() {
            job.reason = PendingReason::None;
            job.priority = basic_priority(submitted);
            changed.push(*id);
        }
    }
    Ok(Applied::Changed(changed))
}

fn requeue(state: &mut ClusterState, jobs: &[JobId], now: u64) -> Result<Applied, Rejected> {
    known(state, jobs)?;
    let mut changed = vec![];
    for &id in jobs {
        match state.jobs[&id].state {
            JobState::Running if state.jobs[&id].held().next().is_none() => {
                requeue_one(state, id, now);
            }
            JobState::Running => {
                state.jobs.get_mut(&id).expect("known").stopping = Some(StopCause::Requeue);
            }
            s if s.is_terminal() => {
                // Slurm requeues finished batch jobs too: back to pending with a restart.
                state.pending.insert(id);
                let job = state.jobs.get_mut(&id).expect("known");
                job.state = JobState::Pending;
                job.reason = PendingReason::None;
                job.restarts += 1;
                job.start_time = None;
                job.end_time = None;
                replicas::forget_attempt(job);
                job.exit = ExitStatus::default();
                job.eligible_time = Some(now);
            }
            _ => return Err(Rejected::NotPending(id)),
        }
        changed.push(id);
    }
    Ok(Applied::Changed(changed))
}

fn update(state: &mut ClusterState, jobs: &[JobId], u: &JobUpdate) -> Result<Applied, Rejected> {
    known(state, jobs)?;
    if let Some(p) = &u.partition
        && state.config.partition(p).is_none()
    {
        return Err(Rejected::UnknownPartition(p.clone()));
    }
    let pending_only = u.partition.is_some() || u.ntasks.is_some() || u.cpus_per_task.is_some();
    if pending_only
        && let Some(id) = jobs.iter().find(|id| state.jobs[id].state != JobState::Pending)
    {
        return Err(Rejected::NotPending(*id));
    }
    for id in jobs {
        let job = state.jobs.get_mut(id).expect("known");
        if let Some(t) = u.time_limit {
            job.time_limit_min = match t {
                TimeLimit::Minutes(m) => Some(m),
                TimeLimit::Unlimited => None,
            };
        }
        if let Some(p) = &u.partition {
            job.partition = p.clone();
        }
        if let Some(pr) = u.priority {
            job.priority = pr;
        }
        let needs_spec = u.name.is_some()
            || u.comment.is_some()
            || u.nice.is_some()
            || u.begin.is_some()
            || u.ntasks.is_some()
            || u.cpus_per_task.is_some();
        if needs_spec {
            let spec = Arc::make_mut(&mut job.spec);
            if let Some(n) = &u.name {
                spec.name = n.clone();
            }
            if let Some(c) = &u.comment {
                spec.comment = Some(c.clone());
            }
            if let Some(n) = u.nice {
                spec.nice = n;
            }
            if let Some(b) = u.begin {
                spec.begin = Some(b);
            }
            if let Some(n) = u.ntasks {
                spec.ntasks = Some(n);
            }
            if let Some(c) = u.cpus_per_task {
                spec.cpus_per_task = Some(c);
            }
        }
    }
    Ok(Applied::Changed(jobs.to_vec()))
}

fn node_down(
    state: &mut ClusterState,
    name: &str,
    reason: String,
    now: u64,
) -> Result<Applied, Rejected> {
    let node = state.nodes.get_mut(name).ok_or_else(|| Rejected::UnknownNode(name.into()))?;
    node.state = NodeState::Down;
    node.reason = Some(reason);
    // The controller itself (Slurm names its SlurmUser here).
    node.reason_set_by = Some(("root".into(), now));
    let lost: Vec<JobId> = state
        .active
        .iter()
        .copied()
        .filter(|id| state.jobs[id].held().any(|a| a.node == name))
        .collect();
    for id in &lost {
        replicas::lose(state, *id, name, now);
    }
    Ok(Applied::Changed(lost))
}

/// Applies a node's health check result. The user named as having set the reason is `root`:
/// NHC drains a Slurm node through `scontrol` as root, and `sinfo -R` shows that.
fn node_health(
    state: &mut ClusterState,
    name: &str,
    session: u64,
    health: &Health,
    now: u64,
) -> Result<Applied, Rejected> {
    let node = state.nodes.get_mut(name).ok_or_else(|| Rejected::UnknownNode(name.into()))?;
    if node.session != session {
        return Err(Rejected::StaleSession(name.into()));
    }
    match crate::node::health_change(node, health) {
        Some(HealthChange::Drain(reason)) => {
            node.state = NodeState::Drain;
            node.reason = Some(reason);
            node.reason_set_by = Some(("root".into(), now));
        }
        Some(HealthChange::Resume) => {
            node.state = NodeState::Up;
            node.reason = None;
            node.reason_set_by = None;
        }
        None => {}
    }
    Ok(Applied::Nothing)
}
