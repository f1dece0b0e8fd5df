//! chorus-ctld: the controller.
//!
//! ```text
//!            ┌──────────── ctld ─────────────────────────────────────────────┐
//!  clients ─▶│ ClientService ─┐                                              │
//!  nodes   ─▶│ NodeApi ───────┼─▶ ReplicaHandle ─▶ replica thread (raft-rs)  │
//!            │ (TLS; gates: auth.rs; JoinService issues node certificates)   │
//!            │ leader loops ──┘    (propose)        sled log ─▶ fsm::apply   │
//!            │   scheduler: state ─▶ Plan ─▶ propose ApplyPlan               │
//!            │   liveness:  silent nodes ─▶ propose NodeDown                 │
//!            └───────────────────────────────────────────────────────────────┘
//! ```

pub mod auth;
pub mod client_service;
pub mod join;
pub mod leader;
pub mod nodes;
pub mod peer;
pub mod replica;
pub mod server;
pub mod storage;

/// Seconds since the epoch: the only clock the controller reads; commands carry its value.
pub fn wall_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
