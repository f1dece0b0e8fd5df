//! Extension points: small traits, chosen by Slurm-style names (`sched/fifo`).
//! The implementations live in `chorus-plugins`; ctld looks them up by name.

use crate::fsm::Plan;
use crate::job::JobSpec;
use crate::state::ClusterState;

/// Proposes which pending jobs start where. Reads the state; never changes it.
pub trait Scheduler: Send + Sync {
    /// The Slurm-style name, e.g. `sched/fifo`.
    fn name(&self) -> &'static str;
    /// A plan for `now`. `fsm::apply` re-checks it, so a wrong plan costs a cycle, not a replica.
    fn plan(&self, state: &ClusterState, now: u64) -> Plan;
}

/// A reason a submission is refused, printed to the user after `sbatch: error: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// Checks a submission before it is proposed (Slurm's `job_submit` plugins).
/// A chain of these runs in order; the first refusal wins.
pub trait SubmitValidator: Send + Sync {
    fn name(&self) -> &'static str;
    fn check(&self, state: &ClusterState, spec: &JobSpec) -> Result<(), Refusal>;
}
