//! chorus-noded: the node agent.
//!
//! ```text
//!   join (join.rs): keys/node.crt, or a join token ──▶ Join ──▶ the node's certificate,
//!                   shown on every call below (mutual TLS)
//!   inventory (OS, NVML or stand-in GPUs) ──▶ Register ──▶ ctld
//!   health checks (health.rs) at start ───▶ carried by Register (a sick node registers drained)
//!   health checks every interval ─────────▶ Health ──▶ ctld drains / resumes the node
//!   heartbeat every few seconds ───────────▶ ctld (re-register when it forgets us)
//!   Assignments stream ──▶ reconcile by (job, attempt):
//!        new launch ──▶ runner: user, cgroup ──▶ stepd: namespaces ──▶ script
//!                       GPU samples every few seconds (gpuacct.rs)
//!                       wait4 ──▶ report (+ outputs, usage)
//!        stop flag  ──▶ SIGTERM, KillWait, SIGKILL
//!        signal     ──▶ kill(pgid, sig)
//! ```

pub mod agent;
pub mod cgroup;
pub mod daemon;
pub mod gpuacct;
pub mod health;
pub mod identity;
pub mod inventory;
pub mod isolation;
pub mod join;
pub mod oci;
pub mod runner;
pub mod stepd;
pub mod testing;
pub mod users;
