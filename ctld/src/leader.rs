//! Loops that run on the leader only: scheduling and node liveness. Both read the state and
//! propose commands; neither changes anything itself.

use std::sync::Arc;
use std::time::Duration;

use chorus_core::fsm::Command;
use chorus_core::node::NodeState;
use chorus_core::plugin::Scheduler;
use tracing::{debug, warn};

use crate::nodes::NodeHub;
use crate::replica::ReplicaHandle;

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
        let plan = replica
            .read(|st| if st.pending.is_empty() { None } else { Some(scheduler.plan(st, now)) });
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
