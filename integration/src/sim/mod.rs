//! The deterministic simulator: the replicated controller (3 or 5 replica cores,
//! [`chorus_ctld::replica::Core`], each over in-memory storage), fake node agents and
//! submitting clients, all driven by one thread from one seeded RNG and a virtual clock.
//! Invariants are checked after every step; a failure names the seed and the command that
//! replays it, step for step.
//!
//! ```text
//!   seed ──▶ ChaCha8Rng ──▶ every choice: sizes, delays, drops, duplicates, partitions,
//!                           crashes, election timeouts, job lengths, client timeouts
//!
//!   ┌─ World::step: pop the earliest event (virtual ms) ───────────────────────────────┐
//!   │  Tick / Deliver raft message / Crash / Restart / Partition / Heal               │
//!   │  client or agent wakes / call arrives at a replica / reply arrives / scheduler   │
//!   │    └─▶ Core::tick / step / propose ──▶ Core::ready ──▶ messages into the Network │
//!   │                                                    └─▶ results back to callers  │
//!   │  Checker: one leader per term · log matching (SimStore's journal) · committed    │
//!   │  prefixes agree · one state per applied index · allocations fit · one node per   │
//!   │  job · terminal states stay · one job per request                                │
//!   └──────────────────────────────────────────────────────────────────────────────────┘
//!   fault phase: all of the faults above ──▶ heal phase: none, every replica up again
//!     ──▶ quiescent: every acknowledged job terminal, exactly once, on every replica
//! ```
//!
//! How the seed decides elections: raft-rs draws each randomized election timeout from its
//! own thread RNG in `[min_election_tick, max_election_tick)`. At every (re)start a replica
//! gets `election_tick = rng.gen_range(10..20)` and `max_election_tick = election_tick + 1`
//! from the run's RNG, so raft's draw has one possible value and the seed alone decides who
//! campaigns first. Ticks come every 100 virtual ms, jittered by the same RNG. Nothing else
//! reads a clock or another RNG: raft-rs keeps its progress in FxHash maps (deterministic),
//! and the simulator iterates only ordered maps.

mod actors;
pub mod check;
mod net;
pub mod store;
mod world;

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use check::{Checker, Invariant, Violation};

/// Virtual milliseconds since the simulation began.
pub type Ms = u64;

/// A deliberate bug, to prove the checker is wired in (tests only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// From halfway through the fault phase, a follower's state machine is changed behind
    /// raft's back every second.
    DivergeState,
    /// The first agent runs every job, whatever node it was placed on.
    DoubleRun,
}

/// What to simulate. Unset sizes are drawn from the seed.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Controllers (3 or 5); `None`: drawn from the seed.
    pub replicas: Option<usize>,
    /// Fake node agents; `None`: 2 to 4, drawn from the seed.
    pub nodes: Option<usize>,
    /// Submissions; `None`: 20 to 60, drawn from the seed.
    pub jobs: Option<usize>,
    /// Virtual ms of faults before the heal phase.
    pub fault_ms: Ms,
    /// Virtual ms the heal phase may take to reach quiescence.
    pub heal_deadline_ms: Ms,
    pub sabotage: Option<Sabotage>,
    /// Print every event to stderr.
    pub trace: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            replicas: None,
            nodes: None,
            jobs: None,
            fault_ms: 30_000,
            heal_deadline_ms: 300_000,
            sabotage: None,
            trace: false,
        }
    }
}

impl SimConfig {
    /// The `chorus-sim` arguments that give this configuration (besides the seed).
    pub fn cli_args(&self) -> String {
        let d = SimConfig::default();
        let mut s = String::new();
        let mut opt = |name: &str, v: Option<String>| {
            if let Some(v) = v {
                s.push_str(&format!(" --{name} {v}"));
            }
        };
        opt("replicas", self.replicas.map(|v| v.to_string()));
        opt("nodes", self.nodes.map(|v| v.to_string()));
        opt("jobs", self.jobs.map(|v| v.to_string()));
        opt("fault-ms", (self.fault_ms != d.fault_ms).then(|| self.fault_ms.to_string()));
        opt(
            "heal-ms",
            (self.heal_deadline_ms != d.heal_deadline_ms)
                .then(|| self.heal_deadline_ms.to_string()),
        );
        opt(
            "sabotage",
            self.sabotage.map(|s| match s {
                Sabotage::DivergeState => "diverge-state".into(),
                Sabotage::DoubleRun => "double-run".into(),
            }),
        );
        s
    }

    /// The command that replays `seed` under this configuration.
    pub fn replay(&self, seed: u64) -> String {
        format!(
            "cargo run -p chorus-integration --bin chorus-sim -- --seed {seed}{}",
            self.cli_args()
        )
    }
}

/// What a passing run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub seed: u64,
    pub replicas: usize,
    pub nodes: usize,
    pub steps: u64,
    pub virtual_ms: Ms,
    /// Terms that had a leader.
    pub elections: usize,
    pub crashes: u64,
    pub partitions: u64,
    pub messages: u64,
    pub dropped: u64,
    pub duplicated: u64,
    /// Messages lost to a partition or a down replica.
    pub cut: u64,
    pub snapshots: u64,
    pub submitted: usize,
    pub acknowledged: usize,
    /// Acknowledged jobs in a terminal state at the end (all of them, on a pass).
    pub finished: usize,
    pub node_fail: usize,
    pub client_retries: u64,
    pub agent_restarts: u64,
    pub registrations: u64,
    /// The final applied index and state hash (the same on every replica).
    pub applied: u64,
    pub digest: String,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: {} replicas, {} nodes, {} steps, {:.1} s virtual; {} elections, {} crashes, \
             {} partitions; {} messages ({} dropped, {} duplicated, {} cut, {} snapshots); \
             {} jobs submitted, {} acknowledged, {} finished ({} node failures), \
             {} client retries, {} agent restarts, {} registrations; applied {} state {}",
            self.seed,
            self.replicas,
            self.nodes,
            self.steps,
            self.virtual_ms as f64 / 1000.0,
            self.elections,
            self.crashes,
            self.partitions,
            self.messages,
            self.dropped,
            self.duplicated,
            self.cut,
            self.snapshots,
            self.submitted,
            self.acknowledged,
            self.finished,
            self.node_fail,
            self.client_retries,
            self.agent_restarts,
            self.registrations,
            self.applied,
            &self.digest[..self.digest.len().min(16)],
        )
    }
}

/// A failed run: which invariant, where, and how to replay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub seed: u64,
    pub step: u64,
    pub virtual_ms: Ms,
    pub violation: Violation,
    pub replay: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulation failed at seed {}, step {} ({:.3} s virtual): {}\nreplay: {}",
            self.seed,
            self.step,
            self.virtual_ms as f64 / 1000.0,
            self.violation,
            self.replay
        )
    }
}

impl std::error::Error for Failure {}

/// Runs one seed to quiescence or to the first violated invariant. A panic in the code under
/// test is a failure too (with the seed), not an abort of the caller.
pub fn run(seed: u64, cfg: &SimConfig) -> Result<Report, Failure> {
    let mut world = world::World::new(seed, cfg);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.run()));
    let violation = match outcome {
        Ok(Ok(report)) => return Ok(report),
        Ok(Err(v)) => v,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "(no message)".into());
            Violation::new(Invariant::Crash, format!("panic: {msg}"))
        }
    };
    let (step, virtual_ms) = world.position();
    Err(Failure { seed, step, virtual_ms, violation, replay: cfg.replay(seed) })
}

/// Runs `seeds` on `threads` threads (each run stays single-threaded and deterministic);
/// results come back in seed order.
pub fn run_seeds(
    seeds: Range<u64>,
    cfg: &SimConfig,
    threads: usize,
) -> Vec<Result<Report, Failure>> {
    let next = AtomicU64::new(seeds.start);
    let results = Mutex::new(Vec::new());
    let cfg = Arc::new(cfg.clone());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        break;
                    }
                    let r = run(seed, &cfg);
                    results.lock().expect("results lock poisoned").push((seed, r));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("results lock poisoned");
    results.sort_by_key(|(seed, _)| *seed);
    results.into_iter().map(|(_, r)| r).collect()
}
