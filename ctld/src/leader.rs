//! Loops that run on the leader only: scheduling, verification and node liveness. Each reads
//! the state and proposes commands; none changes anything itself.

use std::sync::Arc;
use std::time::Duration;

use chorus_core::fsm::Command;
use chorus_core::node::NodeState;
use chorus_core::plugin::Scheduler;
use tracing::{debug, warn};

use crate::nodes::NodeHub;
use crate::replica::ReplicaHandle;
use crate::storage::{RaftStore, SledStorage};

/// Runs the scheduler whenever the state changes (at most every `min_interval`) and at least
/// every `max_interval`, and proposes the plan if it changes anything.
pub async fn schedule_loop(
    replica: ReplicaHandle,
    scheduler: Arc<dyn Scheduler>,
    clock: fn() -> u64,
    min_interval: Duration,
    max_interval: Duration,
) {
    let mut applied = replica.applied();
    loop {
        tokio::select! {
            r = applied.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(max_interval) => {},
        }
        // A burst of submissions triggers one pass, not one per submission.
        tokio::time::sleep(min_interval).await;
        applied.borrow_and_update();
        if !replica.is_leader() {
            continue;
        }
        let now = clock();
        // Pending jobs, and running jobs whose replicas disagreed (or were lost), need places.
        let plan = replica.read(|st| {
            let wanting = st.active.iter().any(|id| st.jobs[id].missing_replicas() > 0);
            (!st.pending.is_empty() || wanting).then(|| scheduler.plan(st, now))
        });
        let Some(plan) = plan else { continue };
        if plan.starts.is_empty() && plan.reasons.is_empty() {
            continue;
        }
        debug!(starts = plan.starts.len(), reasons = plan.reasons.len(), "proposing plan");
        if let Err(e) = replica.propose(Command::ApplyPlan { plan, now }, vec![]).await {
            debug!(error = %e, "plan not applied");
        }
    }
}

/// Marks nodes DOWN that stopped heartbeating for `timeout`. A controller that becomes
/// leader counts from that moment, so a failover or restart never marks a healthy node DOWN.
pub async fn liveness_loop(
    replica: ReplicaHandle,
    hub: Arc<NodeHub>,
    clock: fn() -> u64,
    timeout: Duration,
) {
    let mut led = false;
    loop {
        tokio::time::sleep(Duration::from_millis(200).min(timeout / 4)).await;
        if !replica.is_leader() {
            led = false;
            continue;
        }
        if !led {
            hub.lead();
            led = true;
            continue;
        }
        let up = replica.read(|st| {
            st.nodes
                .values()
                .filter(|n| n.state != NodeState::Down)
                .map(|n| n.name.clone())
                .collect::<Vec<_>>()
        });
        for node in hub.silent(up.into_iter(), timeout) {
            warn!(node = %node, "node not responding: marking it DOWN");
            let cmd = Command::NodeDown { node, reason: "Not responding".into(), now: clock() };
            if let Err(e) = replica.propose(cmd, vec![]).await {
                debug!(error = %e, "NodeDown not applied");
            }
        }
    }
}

/// Compares the results of replicated jobs whose replicas have all reported, each with its
/// job's validator (`verify/exact`, `verify/tolerance`) over the output files kept in sled,
/// and proposes the classes as `Command::Verdict`. The comparison runs once, here; every
/// controller then applies the same classes, so every controller reaches the same verdict.
pub async fn verify_loop(replica: ReplicaHandle, store: SledStorage, clock: fn() -> u64) {
    let mut applied = replica.applied();
    loop {
        tokio::select! {
            r = applied.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {},
        }
        applied.borrow_and_update();
        if !replica.is_leader() {
            continue;
        }
        let due: Vec<chorus_core::Job> = replica.read(|st| {
            st.active
                .iter()
                .map(|id| &st.jobs[id])
                .filter(|j| j.awaits_verdict())
                .cloned()
                .collect()
        });
        for job in due {
            let mut unreadable = None;
            let classes = chorus_plugins::verify::job_classes(&job, |r| {
                store.outputs(job.id, r).unwrap_or_else(|e| {
                    unreadable = Some(e.to_string());
                    vec![]
                })
            });
            if let Some(e) = unreadable {
                warn!(job = job.id, error = %e, "cannot read a replica's outputs: verdict deferred");
                continue;
            }
            debug!(job = job.id, ?classes, validator = job.verify.validator_name(), "verdict");
            let cmd =
                Command::Verdict { job: job.id, attempt: job.restarts, classes, now: clock() };
            if let Err(e) = replica.propose(cmd, vec![]).await {
                debug!(job = job.id, error = %e, "verdict not applied");
            }
        }
    }
}
