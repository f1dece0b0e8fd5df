//! chorus-plugins: the compiled-in implementations of chorus-core's extension points,
//! chosen by Slurm-style names.
//!
//! | name              | trait             | what it does                                        |
//! |-------------------|-------------------|-----------------------------------------------------|
//! | `sched/fifo`      | `Scheduler`       | priority order, first fit, no backfill              |
//! | `submit/fits`     | `SubmitValidator` | refuses jobs no registered node could ever hold     |
//! | `submit/limits`   | `SubmitValidator` | refuses sizes that can never be valid (0 CPUs, ...) |

pub mod sched;
pub mod submit;

use chorus_core::plugin::{Scheduler, SubmitValidator};

/// Looks a scheduler up by its Slurm-style name.
pub fn scheduler(name: &str) -> Option<Box<dyn Scheduler>> {
    match name {
        "sched/fifo" | "sched/builtin" => Some(Box::new(sched::Fifo)),
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
