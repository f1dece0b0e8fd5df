//! `sched/fifo`: Slurm's `sched/builtin` — pending jobs in priority order, each placed on the
//! first nodes (by name) with room for it; the first job that does not fit makes every job
//! behind it in its partition wait with reason `Priority`.
//!
//! ```text
//!   pending (priority desc, id asc) ──▶ blocked? (hold, dependency, begin, throttle) ──▶ reason
//!                                   └─▶ fits on free nodes? ── yes ──▶ Placement
//!                                                           └─ no ──▶ Resources, then Priority
//! ```

use std::collections::{BTreeMap, BTreeSet};

use chorus_core::fsm::{Placement, Plan, blocking_reason, throttled};
use chorus_core::job::{Job, NodeAlloc, PendingReason};
use chorus_core::plugin::Scheduler;
use chorus_core::state::ClusterState;

#[derive(Debug, Clone, Copy, Default)]
pub struct Fifo;

/// What is still free on a node during one pass.
#[derive(Debug, Clone)]
struct Free {
    cpus: u32,
    mem_mb: u64,
    gpus: Vec<u32>,
}

impl Scheduler for Fifo {
    fn name(&self) -> &'static str {
        "sched/fifo"
    }

    fn plan(&self, state: &ClusterState, now: u64) -> Plan {
        let mut free: BTreeMap<&str, Free> = state
            .nodes
            .values()
            .filter(|n| state.takes_work(n))
            .map(|n| {
                (
                    n.name.as_str(),
                    Free { cpus: n.free_cpus(), mem_mb: n.free_mem_mb(), gpus: n.free_gpus() },
                )
            })
            .collect();
        let mut order: Vec<&Job> = state.pending.iter().map(|id| &state.jobs[id]).collect();
        order.sort_by_key(|j| (std::cmp::Reverse(j.priority), j.id));

        let mut plan = Plan::default();
        let mut blocked_partitions: BTreeSet<&str> = BTreeSet::new();
        // Running (or just placed) tasks per throttled array, counted once per array.
        let mut array_running: BTreeMap<u32, usize> = BTreeMap::new();
        for job in order {
            let reason = blocking_reason(state, job, now).or_else(|| {
                let (array, _) = job.array?;
                let running =
                    *array_running.entry(array).or_insert_with(|| state.running_tasks(array));
                throttled(job, running).then_some(PendingReason::JobArrayTaskLimit)
            });
            let reason = match reason {
                Some(r) => r,
                None if blocked_partitions.contains(job.partition.as_str()) => {
                    PendingReason::Priority
                }
                None => match place(state, job, &mut free) {
                    Some(alloc) => {
                        if let Some((a, _)) = job.array {
                            *array_running.entry(a).or_default() += 1;
                        }
                        plan.starts.push(Placement { job: job.id, alloc });
                        continue;
                    }
                    None => {
                        blocked_partitions.insert(job.partition.as_str());
                        PendingReason::Resources
                    }
                },
            };
            if reason != job.reason {
                plan.reasons.push((job.id, reason));
            }
        }
        plan
    }
}

/// First fit over nodes in name order; takes what it places from `free`.
fn place(
    state: &ClusterState,
    job: &Job,
    free: &mut BTreeMap<&str, Free>,
) -> Option<Vec<NodeAlloc>> {
    let spec = &job.spec;
    let part = state.config.partition(&job.partition)?;
    let mut alloc = Vec::new();
    for (name, f) in free.iter() {
        if alloc.len() == spec.num_nodes() as usize {
            break;
        }
        let node = &state.nodes[*name];
        if !part.has_node(name) {
            continue;
        }
        let need = spec.need_on_node(
            alloc.len() as u32,
            node.resources.mem_mb,
            state.config.def_mem_per_cpu,
        );
        let gpus: Vec<u32> = node
            .gpus_of_type(spec.gpu_type.as_deref())
            .filter(|g| f.gpus.contains(g))
            .take(need.gpus as usize)
            .collect();
        if f.cpus >= need.cpus && f.mem_mb >= need.mem_mb && gpus.len() == need.gpus as usize {
            alloc.push(NodeAlloc {
                node: (*name).to_owned(),
                cpus: need.cpus,
                mem_mb: need.mem_mb,
                gpus,
            });
        }
    }
    if alloc.len() != spec.num_nodes() as usize {
        return None;
    }
    for a in &alloc {
        let f = free.get_mut(a.node.as_str()).expect("placed on a free node");
        f.cpus -= a.cpus;
        f.mem_mb -= a.mem_mb;
        f.gpus.retain(|g| !a.gpus.contains(g));
    }
    Some(alloc)
}

#[cfg(test)]
mod tests;
