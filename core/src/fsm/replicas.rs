//! A job's replicas: how they start, end, get lost, and become the job's verdict.
//!
//! ```text
//!   ApplyPlan ──▶ first_fit / more_fit ──▶ start: replicas on nodes of distinct operators
//!   JobEnded  ──▶ report: the replica is this node's, the attestation its key's ──▶ Ended
//!   NodeDown, a restarted agent ──▶ lose ──▶ Lost (replaced while the partition allows)
//!                     │
//!                     ▼ nothing of the job runs any more
//!   settle_or_wait: stopping? ──▶ CANCELLED / requeued
//!                   fewer replicas than wanted ──▶ wait for the scheduler
//!                   one replica ──▶ conclude (nothing to compare)
//!                   several ──▶ wait for the leader's Verdict (its validator's classes)
//!   Verdict ──▶ conclude: trust::decide ──▶ MoreReplicas: wanted += n (Disputed)
//!                                       ──▶ Agreed: the winner's result; trust::settle pays,
//!                                           charges and slashes; agreements counted
//!                                       ──▶ Failed: FAILED, VerificationFailed, no money
//! ```

use std::collections::BTreeSet;

use super::{
    Applied, JobReport, Placement, Rejected, end_state, finish, give_back, placement_fits,
    requeue_one,
};
use crate::job::{
    ExitStatus, Job, JobId, JobState, NodeAlloc, PendingReason, Replica, ReplicaEnd, ReplicaState,
    StopCause, Verdict,
};
use crate::node::NodeState;
use crate::state::{ClusterState, OperatorKey};
use crate::trust::{self, Outcome, Quorum, ReplicaRun, ReplicationSpec};
use crate::verify::VerifySpec;

/// Whether `p` may start pending `job`: as many replicas as the quorum its policy allows, and
/// they fit.
pub(super) fn first_fit(state: &ClusterState, job: &Job, p: &Placement) -> bool {
    let quorum_allowed = match job.replication {
        ReplicationSpec::Fixed(n) => p.quorum == n,
        ReplicationSpec::Adaptive { replicas, .. } => p.quorum == 1 || p.quorum == replicas,
    };
    quorum_allowed && p.replicas.len() == p.quorum as usize && replicas_fit(state, job, &p.replicas)
}

/// Whether `p` may add replicas to running `job`: no more than it is missing, within the
/// partition's limit, and they fit.
pub(super) fn more_fit(state: &ClusterState, job: &Job, p: &Placement) -> bool {
    let max = state.config.partition(&job.partition).map_or(0, |part| part.max_replicas);
    !p.replicas.is_empty()
        && p.replicas.len() as u32 <= job.missing_replicas()
        && job.replicas.len() + p.replicas.len() <= max as usize
        && replicas_fit(state, job, &p.replicas)
}

/// Each allocation fits, the operators of every replica (old and new) are distinct, and a
/// GPU job verified exactly runs on one GPU class throughout, model and driver (homogeneous
/// redundancy: honest replicas on different hardware may differ in the last bit).
fn replicas_fit(state: &ClusterState, job: &Job, replicas: &[Vec<NodeAlloc>]) -> bool {
    let mut used: BTreeSet<OperatorKey<'_>> = job
        .replicas
        .iter()
        .flat_map(|r| r.alloc.iter())
        .map(|a| state.operator_of(&a.node))
        .collect();
    for alloc in replicas {
        if !placement_fits(state, job, alloc) {
            return false;
        }
        let ops: BTreeSet<OperatorKey<'_>> =
            alloc.iter().map(|a| state.operator_of(&a.node)).collect();
        if !ops.is_disjoint(&used) {
            return false;
        }
        used.extend(ops);
    }
    if job.verify == VerifySpec::Exact && job.is_replicated() && job.spec.gpus_per_node > 0 {
        let mut classes = job
            .replicas
            .iter()
            .flat_map(|r| r.alloc.iter())
            .chain(replicas.iter().flatten())
            .flat_map(|a| gpu_classes(state, a));
        let Some(first) = classes.next() else { return true };
        return classes.all(|c| c == first);
    }
    true
}

fn gpu_classes<'a>(
    state: &'a ClusterState,
    a: &'a NodeAlloc,
) -> impl Iterator<Item = (String, &'a str)> {
    let gpus = state.nodes.get(&a.node).map(|n| n.resources.gpus.as_slice()).unwrap_or_default();
    a.gpus.iter().filter_map(|i| gpus.iter().find(|g| g.index == *i).map(|g| g.class()))
}

/// Starts replicas of `id` on the allocations (checked by the caller).
pub(super) fn start(state: &mut ClusterState, id: JobId, allocs: Vec<Vec<NodeAlloc>>, now: u64) {
    for alloc in allocs {
        for a in &alloc {
            let node = state.nodes.get_mut(&a.node).expect("checked by placement_fits");
            node.alloc_cpus += a.cpus;
            node.alloc_mem_mb += a.mem_mb;
            node.alloc_gpus.extend(&a.gpus);
        }
        let job = state.jobs.get_mut(&id).expect("checked by the caller");
        job.alloc.extend(alloc.iter().cloned());
        let index = job.replicas.len() as u32;
        job.replicas.push(Replica { index, alloc, start_time: now, state: ReplicaState::Running });
    }
}

/// A node's report on one replica: believed only from the node that runs it, for the current
/// attempt, signed with the node's key.
pub(super) fn report(
    state: &mut ClusterState,
    r: JobReport,
    now: u64,
) -> Result<Applied, Rejected> {
    let job = state.jobs.get(&r.job).ok_or(Rejected::UnknownJob(r.job))?;
    let replica = job.replicas.get(r.replica as usize);
    if !matches!(job.state, JobState::Running | JobState::Completing)
        || job.restarts != r.attempt
        || !replica.is_some_and(|x| x.is_running() && x.batch_node() == Some(r.node.as_str()))
    {
        return Err(Rejected::StaleReport { job: r.job, node: r.node });
    }
    let bad = |why: String| Rejected::BadAttestation { node: r.node.clone(), why };
    match state.nodes.get(&r.node).and_then(|n| n.public_key) {
        Some(key) => r.attestation().verify(&key, &r.signature).map_err(|e| bad(e.to_string()))?,
        None if job.is_replicated() => return Err(bad("the node has no key".into())),
        None => {}
    }
    if let Some(f) = r.outputs.iter().find(|f| !is_result_file(job, &f.path)) {
        // The submitter's commands write these paths: a node may name only the job's own.
        return Err(bad(format!("{} is not one of the job's output files", f.path)));
    }
    let held = job.replicas[r.replica as usize].alloc.clone();
    give_back(state, &held);
    let job = state.jobs.get_mut(&r.job).expect("checked above");
    job.replicas[r.replica as usize].state = ReplicaState::Ended(ReplicaEnd {
        end_time: now,
        exit: r.exit,
        cause: r.cause,
        digest: r.digest,
        usage: r.usage,
        outputs: r.outputs,
    });
    settle_or_wait(state, r.job, now)?;
    Ok(Applied::Changed(vec![r.job]))
}

/// Whether `path` may be one of `job`'s result files: its stdout or stderr, or a file inside
/// its working directory that one of its `--output-files` patterns matches.
fn is_result_file(job: &Job, path: &str) -> bool {
    let (stdout, stderr) = crate::launch::output_paths(job);
    if path == stdout || path == stderr {
        return true;
    }
    let Some(rel) = path.strip_prefix(job.spec.work_dir.trim_end_matches('/')) else {
        return false;
    };
    let Some(rel) = rel.strip_prefix('/') else { return false };
    // As noded's search matched it (glob's default options).
    !rel.split('/').any(|part| part == ".." || part == "." || part.is_empty())
        && job.spec.output_files.iter().any(|g| glob::Pattern::new(g).is_ok_and(|p| p.matches(rel)))
}

/// A replica of `id` on `node` is gone without a report (its node went down, its agent
/// restarted). A job run once fails as Slurm's does (NODE_FAIL); a replicated one carries on
/// and has the replica replaced while its partition allows more.
pub(super) fn lose(state: &mut ClusterState, id: JobId, node: &str, now: u64) {
    let job = &state.jobs[&id];
    if !job.is_replicated() {
        finish(state, id, JobState::NodeFail, ExitStatus::default(), now);
        return;
    }
    let lost: Vec<usize> = (0..job.replicas.len())
        .filter(|&i| {
            let r = &job.replicas[i];
            r.is_running() && r.alloc.iter().any(|a| a.node == node)
        })
        .collect();
    for i in lost {
        let r = &state.jobs[&id].replicas[i];
        let (held, batch) = (r.alloc.clone(), r.batch_node().unwrap_or_default().to_owned());
        give_back(state, &held);
        state.accounts.reset_agreements(&batch);
        state.jobs.get_mut(&id).expect("active").replicas[i].state = ReplicaState::Lost;
    }
    let max = state.config.partition(&state.jobs[&id].partition).map_or(0, |p| p.max_replicas);
    let job = state.jobs.get_mut(&id).expect("active");
    if job.replicas.len() >= max as usize {
        // No replica can replace it: decide with those there are.
        job.wanted = job.live_replicas();
        if job.wanted == 0 {
            finish(state, id, JobState::NodeFail, ExitStatus::default(), now);
            return;
        }
    }
    // A loss is not a verdict: only a refused Verdict could fail here, and none is applied.
    let _ = settle_or_wait(state, id, now);
}

/// What follows once nothing of `id` runs any more (module doc).
fn settle_or_wait(state: &mut ClusterState, id: JobId, now: u64) -> Result<(), Rejected> {
    let job = &state.jobs[&id];
    if job.held().next().is_some() {
        return Ok(());
    }
    match job.stopping {
        Some(StopCause::Requeue) => {
            requeue_one(state, id, now);
            return Ok(());
        }
        Some(StopCause::Cancelled) => {
            // Slurm keeps the output and exit of the cancelled script: the last to end.
            let last = job
                .replicas
                .iter()
                .filter_map(|r| Some((r.index, r.ended()?)))
                .max_by_key(|(_, e)| e.end_time);
            let (exit, usage, outputs) =
                last.map(|(_, e)| (e.exit, e.usage, e.outputs.clone())).unwrap_or_default();
            let result_replica = last.map(|(i, _)| i);
            let job = state.jobs.get_mut(&id).expect("active");
            (job.usage, job.outputs, job.result_replica) = (usage, outputs, result_replica);
            finish(state, id, JobState::Cancelled, exit, now);
            return Ok(());
        }
        _ => {}
    }
    let live = job.live_replicas();
    if live < job.wanted {
        return Ok(());
    }
    let ended: Vec<u32> =
        job.replicas.iter().filter(|r| r.ended().is_some()).map(|r| r.index).collect();
    match ended[..] {
        // One result: nothing to compare it with.
        [only] => conclude(state, id, vec![vec![only]], now).map(|_| ()),
        // Several: the leader's validator compares them and proposes a Verdict.
        _ => Ok(()),
    }
}

/// The leader's agreement classes for `id`: they must cover each reported replica of the
/// current attempt exactly once, and the job must be waiting for them.
pub(super) fn verdict(
    state: &mut ClusterState,
    id: JobId,
    attempt: u32,
    classes: Vec<Vec<u32>>,
    now: u64,
) -> Result<Applied, Rejected> {
    let job = state.jobs.get(&id).ok_or(Rejected::UnknownJob(id))?;
    let refuse = |why: &str| Err(Rejected::BadVerdict { job: id, why: why.into() });
    if !state.active.contains(&id) || job.restarts != attempt || !job.awaits_verdict() {
        return refuse("the job is not waiting for one");
    }
    let mut given: Vec<u32> = classes.iter().flatten().copied().collect();
    given.sort_unstable();
    let ended: Vec<u32> =
        job.replicas.iter().filter(|r| r.ended().is_some()).map(|r| r.index).collect();
    if given != ended || classes.iter().any(Vec::is_empty) {
        return refuse("the classes do not cover each reported replica once");
    }
    conclude(state, id, classes, now)
}

/// Applies `trust::decide` to the classes of `id`'s reported replicas.
fn conclude(
    state: &mut ClusterState,
    id: JobId,
    classes: Vec<Vec<u32>>,
    now: u64,
) -> Result<Applied, Rejected> {
    let job = &state.jobs[&id];
    let max = state.config.partition(&job.partition).map_or(0, |p| p.max_replicas);
    let live = job.live_replicas();
    let lost = job.replicas.len() as u32 - live;
    // More replicas need operators the job has not used yet; where there are none, the
    // limit is reached now.
    let limit = max.min(job.replicas.len() as u32 + other_operators(state, job));
    let q = Quorum { quorum: job.quorum.max(1), max_replicas: limit.saturating_sub(lost) };
    let outcome = trust::decide(&classes, live, q);
    match &outcome {
        Outcome::Wait => return Ok(Applied::Nothing),
        Outcome::MoreReplicas { n } => {
            let job = state.jobs.get_mut(&id).expect("active");
            job.wanted = live + n;
            job.verdict = Verdict::Disputed;
        }
        Outcome::Agreed { winner, .. } => {
            let winner = winner.clone();
            settle(state, id, &outcome, now);
            let job = state.jobs.get_mut(&id).expect("active");
            let end = job.replicas[winner[0] as usize].ended().cloned().expect("reported");
            let to = end_state(None, end.cause, end.exit);
            (job.usage, job.outputs) = (end.usage, end.outputs);
            job.result_replica = Some(winner[0]);
            job.agreed = winner;
            job.verdict = Verdict::Agreed;
            finish(state, id, to, end.exit, now);
        }
        Outcome::Failed => {
            finish(state, id, JobState::Failed, ExitStatus::default(), now);
            let job = state.jobs.get_mut(&id).expect("known");
            job.verdict = Verdict::Failed;
            job.reason = PendingReason::VerificationFailed;
        }
    }
    Ok(Applied::Changed(vec![id]))
}

/// Operators with a node in `job`'s partition that takes work and none of `job`'s replicas.
fn other_operators(state: &ClusterState, job: &Job) -> u32 {
    let Some(part) = state.config.partition(&job.partition) else { return 0 };
    let used: BTreeSet<OperatorKey<'_>> =
        job.alloc.iter().map(|a| state.operator_of(&a.node)).collect();
    let others: BTreeSet<OperatorKey<'_>> = state
        .nodes
        .values()
        .filter(|n| part.has_node(&n.name) && state.takes_work(n))
        .map(|n| state.operator_of(&n.name))
        .filter(|o| !used.contains(o))
        .collect();
    others.len() as u32
}

/// Moves the money of an agreed verdict (`trust::settle`): each agreeing replica's node is
/// paid its work, the user is charged, the disagreeing nodes are slashed (and drained when
/// that leaves them below the minimum stake). Agreeing nodes count one more agreement when
/// their result was checked against another's.
fn settle(state: &mut ClusterState, id: JobId, outcome: &Outcome, now: u64) {
    let Outcome::Agreed { winner, .. } = outcome else { return };
    let job = &state.jobs[&id];
    let part = state.config.partition(&job.partition).cloned().unwrap_or_default();
    let batch = |r: u32| job.replicas[r as usize].batch_node().unwrap_or_default().to_owned();
    let runs: Vec<ReplicaRun> = job
        .replicas
        .iter()
        .filter_map(|r| {
            let end = r.ended()?;
            let stake = state.accounts.slashable(r.batch_node()?);
            Some(ReplicaRun { replica: r.index, price: price(&part, r, end), stake })
        })
        .collect();
    let s = trust::settle(outcome, &runs, job.quorum.max(1), state.config.slash_ppm);
    let user = job.spec.user.clone();
    let paid: Vec<(String, u64)> = s.paid.iter().map(|&(r, a)| (batch(r), a)).collect();
    let slashed: Vec<(String, u64)> = s.slashed.iter().map(|&(r, a)| (batch(r), a)).collect();
    let agreeing: Vec<String> =
        if winner.len() >= 2 { winner.iter().map(|&r| batch(r)).collect() } else { vec![] };
    let total_paid: u64 = paid.iter().map(|(_, a)| a).sum();
    for (node, amount) in &paid {
        state.accounts.pay(node, id, *amount, now);
    }
    state.accounts.charge_user(&user, s.charged);
    for (node, amount) in &slashed {
        state.accounts.slash(node, id, *amount, now);
        drain_if_understaked(state, node, now);
    }
    for node in &agreeing {
        state.accounts.agreed(node);
    }
    let job = state.jobs.get_mut(&id).expect("active");
    job.paid += total_paid;
    job.charged += s.charged;
}

/// What a replica's work is worth: its CPUs and GPUs for the time it ran, at the partition's
/// prices per hour (rounded down).
fn price(part: &crate::state::Partition, r: &Replica, end: &ReplicaEnd) -> u64 {
    let secs = u128::from(end.end_time.saturating_sub(r.start_time));
    let cpus: u128 = r.alloc.iter().map(|a| u128::from(a.cpus)).sum();
    let gpus: u128 = r.alloc.iter().map(|a| a.gpus.len() as u128).sum();
    let per_hour = cpus * u128::from(part.price_cpu_hour) + gpus * u128::from(part.price_gpu_hour);
    u64::try_from(per_hour * secs / 3600).unwrap_or(u64::MAX)
}

/// The reason a slashed node is drained with.
pub const SLASHED_REASON_PREFIX: &str = "slashed: ";

/// Drains an up node whose stake a slash left below the cluster's minimum.
fn drain_if_understaked(state: &mut ClusterState, node: &str, now: u64) {
    let min = state.config.min_stake;
    let stake = state.accounts.stake_of(node);
    if min == 0 || stake >= min {
        return;
    }
    if let Some(n) = state.nodes.get_mut(node).filter(|n| n.state == NodeState::Up) {
        n.state = NodeState::Drain;
        n.reason = Some(format!("{SLASHED_REASON_PREFIX}stake {stake} below the minimum {min}"));
        n.reason_set_by = Some(("root".into(), now));
    }
}

/// Forgets the replicas of a job's attempt (it is requeued).
pub(super) fn forget_attempt(job: &mut Job) {
    job.alloc.clear();
    job.replicas.clear();
    job.quorum = 0;
    job.wanted = 0;
    job.verdict = Verdict::Pending;
    job.agreed.clear();
    job.result_replica = None;
}
