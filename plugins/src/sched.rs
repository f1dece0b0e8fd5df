//! `sched/fifo`: Slurm's `sched/builtin` — pending jobs in priority order, each placed on the
//! first nodes with room for it; the first job that does not fit makes every job behind it in
//! its partition wait with reason `Priority`.
//!
//! ```text
//!   running jobs missing replicas (a dispute, a lost replica) ──▶ more replicas, if they fit
//!   pending (priority desc, id asc) ──▶ blocked? (hold, dependency, begin, throttle) ──▶ reason
//!                                   └─▶ fits on free nodes? ── yes ──▶ quorum (replication
//!                                        policy, first node's record, the job's coin)
//!                                        ──▶ the rest of the quorum on other operators' nodes
//!                                        ── all fit ──▶ Placement
//!                                           └─ no ──▶ the next first node ... none left:
//!                                                     Resources, then Priority
//! ```
//!
//! A job's replicas go to nodes of distinct operators (a node no operator bonded counts as
//! its own), only to nodes with a key when the job is replicated.
//!
//! "First" is name order for a job that runs once, as in Slurm. A replicated job (adaptive
//! included) sees the nodes in an order of its own, drawn from the leader's secret seed and
//! the job id ([`replication::rank`]): what a node is called, or when it registered, does not
//! get it a job's first replica (whose record sets an adaptive quorum) or put colluders in
//! one quorum, and nobody outside the leader can predict which nodes a job will meet.

use std::collections::{BTreeMap, BTreeSet};

use chorus_core::fsm::{Placement, Plan, blocking_reason, throttled};
use chorus_core::job::{Job, NodeAlloc, PendingReason};
use chorus_core::plugin::Scheduler;
use chorus_core::state::{ClusterState, OperatorKey};
use chorus_core::verify::VerifySpec;

use crate::replication::{self, NodeRecord};

#[derive(Debug, Clone, Copy, Default)]
pub struct Fifo {
    /// Mixed with a job's id into the coin of adaptive replication
    /// ([`replication::draw`]). Secret (the leader's, never in the replicated state or a
    /// reply): a node that knew it could tell which of its jobs are spot-checked.
    pub seed: u64,
}

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
        let mut plan = Plan::default();
        // Running jobs whose replicas disagreed (or were lost) come first: their other
        // replicas' results are waiting for a verdict.
        for id in &state.active {
            let job = &state.jobs[id];
            let missing = job.missing_replicas();
            if missing == 0 {
                continue;
            }
            let replicas =
                place_replicas(state, job, &mut free, missing, Partial::Allowed, self.seed);
            if !replicas.is_empty() {
                plan.starts.push(Placement { job: job.id, quorum: job.quorum, replicas });
            }
        }
        let mut order: Vec<&Job> = state.pending.iter().map(|id| &state.jobs[id]).collect();
        order.sort_by_key(|j| (std::cmp::Reverse(j.priority), j.id));

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
                None => match start(state, job, &mut free, self.seed) {
                    Some(placement) => {
                        if let Some((a, _)) = job.array {
                            *array_running.entry(a).or_default() += 1;
                        }
                        plan.starts.push(placement);
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

/// Whether a job may get fewer replicas than it asked for in one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Partial {
    /// A running job's extra replicas: each helps as soon as it runs.
    Allowed,
    /// A pending job starts with its whole quorum or not at all.
    Refused,
}

/// A pending job's start: its first replica where it fits first, the quorum its replication
/// policy gives for that node (and the job's coin), and the rest of the quorum on nodes of
/// other operators. A first node that leaves the rest no room (its GPU class has no partner,
/// its operator owns the other free nodes) gives way to the next one. Nothing is taken from
/// `free` unless the whole quorum fits.
fn start(
    state: &ClusterState,
    job: &Job,
    free: &mut BTreeMap<&str, Free>,
    seed: u64,
) -> Option<Placement> {
    let policy = replication::policy(&job.replication);
    let order = Order::of(free, job, seed);
    // Nodes a first replica was tried on (a job that runs once never retries: a first
    // placement that fits is the whole of it).
    let mut tried: Vec<String> = vec![];
    loop {
        let firsts = order.nodes(free).filter(|n| !tried.iter().any(|t| t == n));
        let first = place(state, job, free, firsts, &BTreeSet::new(), None)?;
        let record = NodeRecord { agreements: state.accounts.agreements(&first[0].node) };
        let quorum = policy.quorum(record, replication::draw(seed, job.id));
        let mut replicas = vec![first];
        let more =
            place_replicas_after(state, job, free, &order, quorum - 1, Partial::Refused, &replicas);
        if more.len() + 1 == quorum as usize {
            replicas.extend(more);
            for alloc in &replicas {
                take(free, alloc);
            }
            return Some(Placement { job: job.id, quorum, replicas });
        }
        tried.push(replicas[0][0].node.clone());
    }
}

/// Up to `n` more replicas of a running job, taken from `free` (all of them or none with
/// `Partial::Refused`).
fn place_replicas(
    state: &ClusterState,
    job: &Job,
    free: &mut BTreeMap<&str, Free>,
    n: u32,
    partial: Partial,
    seed: u64,
) -> Vec<Vec<NodeAlloc>> {
    let order = Order::of(free, job, seed);
    let placed = place_replicas_after(state, job, free, &order, n, partial, &[]);
    for alloc in &placed {
        take(free, alloc);
    }
    placed
}

/// Up to `n` replicas beside the job's own and `placed`, each on nodes of operators none of
/// them has; nothing is taken from `free`. A GPU job verified exactly keeps to the GPU class
/// (model and driver) it started on (the state machine checks the same: homogeneous
/// redundancy).
fn place_replicas_after(
    state: &ClusterState,
    job: &Job,
    free: &BTreeMap<&str, Free>,
    order: &Order<'_>,
    n: u32,
    partial: Partial,
    placed: &[Vec<NodeAlloc>],
) -> Vec<Vec<NodeAlloc>> {
    let mut used: BTreeSet<OperatorKey<'_>> = job
        .alloc
        .iter()
        .chain(placed.iter().flatten())
        .map(|a| state.operator_of(&a.node))
        .collect();
    let exact_gpus =
        job.verify == VerifySpec::Exact && job.is_replicated() && job.spec.gpus_per_node > 0;
    let class = exact_gpus
        .then(|| {
            let a = job.alloc.first().or_else(|| placed.first()?.first())?;
            let node = &state.nodes[&a.node];
            let g = a.gpus.first()?;
            let gpu = node.resources.gpus.iter().find(|x| x.index == *g)?;
            let (model, driver) = gpu.class();
            Some((model, driver.to_owned()))
        })
        .flatten();
    let mut out = vec![];
    for _ in 0..n {
        let Some(alloc) = place(state, job, free, order.nodes(free), &used, class.as_ref()) else {
            break;
        };
        used.extend(alloc.iter().map(|a| state.operator_of(&a.node)));
        out.push(alloc);
    }
    if partial == Partial::Refused && out.len() != n as usize {
        out.clear();
    }
    out
}

/// The order a job meets the free nodes in: by name, as in Slurm, or for a replicated job an
/// order of its own ([`replication::rank`]), ranked once per job.
enum Order<'a> {
    ByName,
    Ranked(Vec<&'a str>),
}

impl<'a> Order<'a> {
    fn of(free: &BTreeMap<&'a str, Free>, job: &Job, seed: u64) -> Self {
        if !job.is_replicated() {
            return Order::ByName;
        }
        let mut nodes: Vec<&str> = free.keys().copied().collect();
        nodes.sort_by_cached_key(|n| replication::rank(seed, job.id, n));
        Order::Ranked(nodes)
    }

    /// The free nodes in this order (by name without copying the names).
    fn nodes<'s>(
        &'s self,
        free: &'s BTreeMap<&'a str, Free>,
    ) -> impl Iterator<Item = &'a str> + 's {
        let (by_name, ranked) = match self {
            Order::ByName => (Some(free.keys()), None),
            Order::Ranked(nodes) => (None, Some(nodes.iter())),
        };
        by_name.into_iter().flatten().chain(ranked.into_iter().flatten()).copied()
    }
}

/// First fit over `nodes` (an [`Order`]'s), skipping nodes of the operators in `excluded`;
/// takes nothing from `free`. With `class`, only GPUs of that `(model, driver major)` count.
fn place<'a>(
    state: &ClusterState,
    job: &Job,
    free: &BTreeMap<&str, Free>,
    nodes: impl Iterator<Item = &'a str>,
    excluded: &BTreeSet<OperatorKey<'_>>,
    class: Option<&(String, String)>,
) -> Option<Vec<NodeAlloc>> {
    let spec = &job.spec;
    let part = state.config.partition(&job.partition)?;
    let gpu_type = spec.gpu_type.as_deref();
    let of_class = |node: &chorus_core::node::Node, i: u32| {
        class.is_none_or(|(model, driver)| {
            node.resources.gpus.iter().any(|g| {
                let (m, d) = g.class();
                g.index == i && m == *model && d == driver
            })
        })
    };
    let mut alloc = Vec::new();
    for name in nodes {
        if alloc.len() == spec.num_nodes() as usize {
            break;
        }
        let Some(f) = free.get(name) else { continue };
        let node = &state.nodes[name];
        if !part.has_node(name)
            || excluded.contains(&state.operator_of(name))
            || (job.is_replicated() && node.public_key.is_none())
        {
            continue;
        }
        let need = spec.need_on_node(
            alloc.len() as u32,
            node.resources.mem_mb,
            state.config.def_mem_per_cpu,
        );
        let gpus: Vec<u32> = node
            .gpus_of_type(gpu_type)
            .filter(|g| f.gpus.contains(g) && of_class(node, *g))
            .take(need.gpus as usize)
            .collect();
        if f.cpus >= need.cpus && f.mem_mb >= need.mem_mb && gpus.len() == need.gpus as usize {
            alloc.push(NodeAlloc {
                node: name.to_owned(),
                cpus: need.cpus,
                mem_mb: need.mem_mb,
                gpus,
            });
        }
    }
    (alloc.len() == spec.num_nodes() as usize).then_some(alloc)
}

/// Takes what `alloc` uses from `free`.
fn take(free: &mut BTreeMap<&str, Free>, alloc: &[NodeAlloc]) {
    for a in alloc {
        let f = free.get_mut(a.node.as_str()).expect("placed on a free node");
        f.cpus -= a.cpus;
        f.mem_mb -= a.mem_mb;
        f.gpus.retain(|g| !a.gpus.contains(g));
    }
}

#[cfg(test)]
mod tests;
