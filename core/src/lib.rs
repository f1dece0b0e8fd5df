//! chorus-core: everything in Chorus that *decides*, and nothing that does I/O.
//!
//! ```text
//!   cli ──JobSpec──▶ ctld ──Command──▶ raft log ──▶ fsm::apply(&mut ClusterState, Command)
//!                     ▲                                   │
//!                     └──── scheduler plugin: Plan ◀──────┘ (read-only view)
//! ```
//!
//! * [`slurm`]: parsers and formatters for Slurm's user-facing syntax (time limits, arrays,
//!   dependencies, host lists, memory sizes, output file patterns, sbatch options).
//! * [`job`], [`node`]: domain types.
//! * [`state`]: the replicated [`state::ClusterState`].
//! * [`fsm`]: the replicated [`fsm::Command`] and the one function that applies it.
//! * [`plugin`]: the small traits that plugins implement (scheduler, priority, validators).
//!
//! Time is an argument: every command carries the time it was stamped with, and nothing here
//! reads a clock.

pub mod accounts;
pub mod attest;
pub mod fsm;
pub mod identity;
pub mod job;
pub mod launch;
pub mod node;
pub mod plugin;
pub mod slurm;
pub mod state;
pub mod trust;
pub mod verify;

pub use job::{Job, JobId, JobSpec, JobState, PendingReason};
pub use node::{Node, NodeState};
pub use state::ClusterState;
