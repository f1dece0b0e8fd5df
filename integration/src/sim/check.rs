//! The invariants, as a checker fed with observations. It keeps what it has seen across
//! replicas and time, so a property that must hold "ever" (one leader per term, one state per
//! applied index) is checked against the whole history, not one moment.
//!
//! ```text
//!   role seen ──────────▶ leader(term, id)        one leader per term, ever
//!   commit advanced ────▶ committed(i, term, h)   committed prefixes agree
//!   applied changed ────▶ state(r, i, h, state)   one state per applied index; allocations
//!                                                 fit; a job holds one node per node asked;
//!                                                 a terminal job stays in its terminal state
//!   agents' running ────▶ running(agents)         no job runs on two nodes at once
//!   client acked ───────▶ ack(request, job)       a request names one job
//!   quiescent ──────────▶ finale(leader state)    every acknowledged job is there, terminal
//! ```
//!
//! Each method is pure bookkeeping over its arguments, so tests feed it broken histories and
//! see it object (`tests/sim.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chorus_core::fsm::RequestId;
use chorus_core::job::{JobId, JobState};
use chorus_core::state::ClusterState;

/// Which property failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invariant {
    ElectionSafety,
    LogMatching,
    CommittedPrefix,
    StateMachineSafety,
    Oversubscribed,
    DoubleRun,
    TerminalState,
    Idempotency,
    Liveness,
    /// Nothing cancels or requeues in the simulation: a job an agent runs is never taken back.
    Revoked,
    /// The code under test panicked or failed in a way no invariant names.
    Crash,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invariant::ElectionSafety => "election safety",
            Invariant::LogMatching => "log matching",
            Invariant::CommittedPrefix => "committed prefixes agree",
            Invariant::StateMachineSafety => "state-machine safety",
            Invariant::Oversubscribed => "no node oversubscribed",
            Invariant::DoubleRun => "no job on two nodes",
            Invariant::TerminalState => "exactly one terminal state",
            Invariant::Idempotency => "one job per request",
            Invariant::Liveness => "acknowledged jobs finish",
            Invariant::Revoked => "a running job stays assigned",
            Invariant::Crash => "no panic",
        })
    }
}

/// A failed invariant and what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: Invariant,
    pub details: String,
}

impl Violation {
    pub fn new(invariant: Invariant, details: impl Into<String>) -> Self {
        Self { invariant, details: details.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.details)
    }
}

type Check = Result<(), Violation>;

fn fail(invariant: Invariant, details: String) -> Check {
    Err(Violation::new(invariant, details))
}

/// What the checker remembers.
#[derive(Debug, Default)]
pub struct Checker {
    leaders: BTreeMap<u64, u64>,
    committed: BTreeMap<u64, (u64, blake3::Hash)>,
    states: BTreeMap<u64, (blake3::Hash, u64)>,
    /// Job → (lowest applied index it was seen terminal at, that state).
    terminal: BTreeMap<JobId, (u64, JobState)>,
    acks: BTreeMap<RequestId, JobId>,
}

impl Checker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Terms that had a leader.
    pub fn elections(&self) -> usize {
        self.leaders.len()
    }

    /// Replica `id` is leader in `term`.
    pub fn leader(&mut self, term: u64, id: u64) -> Check {
        match self.leaders.insert(term, id) {
            Some(other) if other != id => fail(
                Invariant::ElectionSafety,
                format!("replicas {other} and {id} both led term {term}"),
            ),
            _ => Ok(()),
        }
    }

    /// Replica `replica` holds the committed entry `index` with `term` and hash `hash`.
    pub fn committed(&mut self, replica: u64, index: u64, term: u64, hash: blake3::Hash) -> Check {
        match self.committed.get(&index) {
            None => {
                self.committed.insert(index, (term, hash));
                Ok(())
            }
            Some(&(t, h)) if t == term && h == hash => Ok(()),
            Some(&(t, _)) => fail(
                Invariant::CommittedPrefix,
                format!(
                    "replica {replica} committed index {index} term {term}, \
                     another replica term {t} (or another entry)"
                ),
            ),
        }
    }

    /// Replica `replica` applied up to `applied` and its state hashes to `hash`. The state's
    /// own properties are checked the first time an index is seen (equal hash, equal state).
    pub fn state(
        &mut self,
        replica: u64,
        applied: u64,
        hash: blake3::Hash,
        st: &ClusterState,
    ) -> Check {
        match self.states.get(&applied) {
            Some(&(h, _)) if h == hash => return Ok(()),
            Some(&(_, other)) => {
                return fail(
                    Invariant::StateMachineSafety,
                    format!(
                        "replicas {other} and {replica} applied up to {applied} \
                         and hold different states"
                    ),
                );
            }
            None => {
                self.states.insert(applied, (hash, replica));
            }
        }
        allocations_fit(st).map_err(|d| {
            Violation::new(
                Invariant::Oversubscribed,
                format!("replica {replica} at {applied}: {d}"),
            )
        })?;
        one_node_each(st).map_err(|d| {
            Violation::new(Invariant::DoubleRun, format!("replica {replica} at {applied}: {d}"))
        })?;
        self.terminal_once(replica, applied, st)
    }

    fn terminal_once(&mut self, replica: u64, applied: u64, st: &ClusterState) -> Check {
        for (&(at, state), job) in
            self.terminal.iter().filter_map(|(id, t)| Some((t, st.jobs.get(id)?)))
        {
            if applied >= at && job.state != state {
                return fail(
                    Invariant::TerminalState,
                    format!(
                        "job {} was {state} at index {at}, is {} at {applied} on replica {replica}",
                        job.id, job.state
                    ),
                );
            }
        }
        for job in st.jobs.values().filter(|j| j.state.is_terminal()) {
            let seen = self.terminal.entry(job.id).or_insert((applied, job.state));
            if seen.1 != job.state {
                return fail(
                    Invariant::TerminalState,
                    format!(
                        "job {} ended {} at index {}, {} at {applied}",
                        job.id, seen.1, seen.0, job.state
                    ),
                );
            }
            seen.0 = seen.0.min(applied);
        }
        Ok(())
    }

    /// What every agent runs now, as `(node, jobs)`.
    pub fn running<'a>(&self, agents: impl Iterator<Item = (&'a str, Vec<JobId>)>) -> Check {
        let mut on: BTreeMap<JobId, &str> = BTreeMap::new();
        for (node, jobs) in agents {
            for job in jobs {
                if let Some(other) = on.insert(job, node) {
                    return fail(
                        Invariant::DoubleRun,
                        format!("job {job} runs on {other} and {node} at once"),
                    );
                }
            }
        }
        Ok(())
    }

    /// A client was told that `request` created `job`.
    pub fn ack(&mut self, request: RequestId, job: JobId) -> Check {
        match self.acks.insert(request, job) {
            Some(other) if other != job => fail(
                Invariant::Idempotency,
                format!("request {request:x} acknowledged as job {other} and job {job}"),
            ),
            _ => Ok(()),
        }
    }

    /// Once quiescent: every acknowledged job is in the leader's state, terminal, and each
    /// request created exactly one job.
    pub fn finale(&self, st: &ClusterState, submissions: usize) -> Check {
        for (request, job) in &self.acks {
            match st.jobs.get(job) {
                None => {
                    return fail(Invariant::Liveness, format!("acknowledged job {job} is missing"));
                }
                Some(j) if !j.state.is_terminal() => {
                    return fail(
                        Invariant::Liveness,
                        format!("acknowledged job {job} is {}", j.state),
                    );
                }
                Some(_) => {}
            }
            if st.requests.get(request).map(|r| r.0) != Some(*job) {
                return fail(
                    Invariant::Idempotency,
                    format!(
                        "request {request:x} was acknowledged as job {job}, the state says {:?}",
                        st.requests.get(request)
                    ),
                );
            }
        }
        let distinct: BTreeSet<JobId> = st.requests.values().map(|r| r.0).collect();
        if st.jobs.len() != submissions
            || st.requests.len() != submissions
            || distinct.len() != submissions
        {
            return fail(
                Invariant::Idempotency,
                format!(
                    "{submissions} submissions made {} jobs, {} requests naming {} jobs",
                    st.jobs.len(),
                    st.requests.len(),
                    distinct.len()
                ),
            );
        }
        Ok(())
    }
}

/// Every node holds at most what it has, and its counters equal the sum of its jobs'.
fn allocations_fit(st: &ClusterState) -> Result<(), String> {
    let mut used: BTreeMap<&str, (u32, u64)> = BTreeMap::new();
    for id in &st.active {
        for a in &st.jobs[id].alloc {
            let u = used.entry(a.node.as_str()).or_default();
            u.0 += a.cpus;
            u.1 += a.mem_mb;
        }
    }
    for (name, &(cpus, mem)) in &used {
        let Some(n) = st.nodes.get(*name) else {
            return Err(format!("jobs hold unknown node {name}"));
        };
        if cpus > n.resources.cpus || mem > n.resources.mem_mb {
            return Err(format!(
                "{name}: jobs hold {cpus} CPUs {mem} MB of {} CPUs {} MB",
                n.resources.cpus, n.resources.mem_mb
            ));
        }
    }
    for n in st.nodes.values() {
        let (cpus, mem) = used.get(n.name.as_str()).copied().unwrap_or_default();
        if (n.alloc_cpus, n.alloc_mem_mb) != (cpus, mem) {
            return Err(format!(
                "{}: counts {} CPUs {} MB allocated, its jobs hold {cpus} CPUs {mem} MB",
                n.name, n.alloc_cpus, n.alloc_mem_mb
            ));
        }
    }
    Ok(())
}

/// An active job holds as many distinct nodes as it asked for; others hold none.
fn one_node_each(st: &ClusterState) -> Result<(), String> {
    for job in st.jobs.values() {
        let active = st.active.contains(&job.id);
        let nodes: BTreeSet<&str> = job.alloc.iter().map(|a| a.node.as_str()).collect();
        let want = if active { job.spec.num_nodes() as usize } else { 0 };
        if active != matches!(job.state, JobState::Running | JobState::Completing) {
            return Err(format!(
                "job {} is {} but {}in the active set",
                job.id,
                job.state,
                if active { "" } else { "not " }
            ));
        }
        if active && (nodes.len() != want || job.alloc.len() != want) {
            return Err(format!(
                "job {} asked for {want} nodes and holds {:?}",
                job.id,
                job.alloc.iter().map(|a| &a.node).collect::<Vec<_>>()
            ));
        }
    }
    Ok(())
}
