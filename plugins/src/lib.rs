//! chorus-plugins: the compiled-in implementations of chorus-core's extension points,
//! chosen by Slurm-style names.
//!
//! | name               | trait               | what it does                                      |
//! |--------------------|---------------------|---------------------------------------------------|
//! | `sched/fifo`       | `Scheduler`         | priority order, first fit, no backfill            |
//! | `submit/fits`      | `SubmitValidator`   | refuses jobs no registered node could ever hold   |
//! | `submit/limits`    | `SubmitValidator`   | refuses sizes that can never be valid (0 CPUs...) |
//! | `verify/exact`     | `verify::Validator` | replicas agree: same exit code and result digest  |
//! | `verify/tolerance` | `verify::Validator` | same exit code and files; numbers within REL/ABS  |
//! | `replicate/fixed`  | `replication::ReplicationPolicy` | every job as N replicas              |
//! | `replicate/adaptive` | `replication::ReplicationPolicy` | trusted nodes alone, spot-checked  |

pub mod replication;
pub mod sched;
pub mod submit;
pub mod verify;

use chorus_core::plugin::{Scheduler, SubmitValidator};
use chorus_core::verify::VerifySpec;

/// Looks a scheduler up by its Slurm-style name. `seed` is the leader's secret for the coin
/// of adaptive replication.
pub fn scheduler(name: &str, seed: u64) -> Option<Box<dyn Scheduler>> {
    match name {
        "sched/fifo" | "sched/builtin" => Some(Box::new(sched::Fifo { seed })),
        _ => None,
    }
}

/// The names `scheduler` knows.
pub const SCHEDULERS: &[&str] = &["sched/fifo", "sched/builtin"];

/// Builds a validator chain from names, in order; unknown names are an error.
pub fn submit_chain(names: &[&str]) -> Result<Vec<Box<dyn SubmitValidator>>, String> {
    names
        .iter()
        .map(|n| match *n {
            "submit/fits" => Ok(Box::new(submit::Fits) as Box<dyn SubmitValidator>),
            "submit/limits" => Ok(Box::new(submit::Limits) as Box<dyn SubmitValidator>),
            other => Err(format!("unknown submit validator `{other}`")),
        })
        .collect()
}

/// The chain ctld uses unless configured otherwise.
pub const DEFAULT_SUBMIT_CHAIN: &[&str] = &["submit/limits", "submit/fits"];

/// The result validator for a job's `--verify` choice (`verify/exact`, `verify/tolerance`).
pub fn validator(spec: &VerifySpec) -> Box<dyn verify::Validator> {
    match spec {
        VerifySpec::Exact => Box::new(verify::Exact),
        VerifySpec::Tolerance { rel, abs } => Box::new(verify::Tolerance::new(*rel, *abs)),
    }
}

/// The names `validator` can return.
pub const VALIDATORS: &[&str] = &["verify/exact", "verify/tolerance"];
