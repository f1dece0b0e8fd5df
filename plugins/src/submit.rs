//! Submit validators: the checks a submission passes before it is proposed.

use chorus_core::job::JobSpec;
use chorus_core::plugin::{Refusal, SubmitValidator};
use chorus_core::state::ClusterState;

/// `submit/fits`: a job that no registered node could ever hold is refused with Slurm's
/// message, as slurmctld refuses jobs its node configuration cannot satisfy. Down and
/// drained nodes count: they may come back. With no node registered yet, nothing is refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fits;

impl SubmitValidator for Fits {
    fn name(&self) -> &'static str {
        "submit/fits"
    }

    fn check(&self, state: &ClusterState, spec: &JobSpec) -> Result<(), Refusal> {
        let part = match &spec.partition {
            Some(p) => state.config.partition(p),
            None => state.config.default_partition(),
        };
        let Some(part) = part else { return Ok(()) };
        let nodes: Vec<_> = state.nodes.values().filter(|n| part.has_node(&n.name)).collect();
        if nodes.is_empty() {
            return Ok(());
        }
        let able = nodes
            .iter()
            .filter(|n| {
                let need = spec.need_on_node(0, n.resources.mem_mb, state.config.def_mem_per_cpu);
                n.resources.cpus >= need.cpus
                    && n.resources.mem_mb >= need.mem_mb
                    && n.gpus_of_type(spec.gpu_type.as_deref()).count() >= need.gpus as usize
            })
            .count();
        // With `--mem=0` (a whole node) memory is never what is missing.
        let need = spec.need_on_node(0, 0, state.config.def_mem_per_cpu);
        if able >= spec.num_nodes() as usize {
            Ok(())
        } else if nodes.len() < spec.num_nodes() as usize {
            Err(Refusal("Node count specification invalid".into()))
        } else if spec.mem.is_some()
            && need.mem_mb > nodes.iter().map(|n| n.resources.mem_mb).max().unwrap_or(0)
        {
            Err(Refusal("Memory specification can not be satisfied".into()))
        } else {
            Err(Refusal("Requested node configuration is not available".into()))
        }
    }
}

/// `submit/limits`: sizes that can never be valid, whatever the cluster.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits;

impl SubmitValidator for Limits {
    fn name(&self) -> &'static str {
        "submit/limits"
    }

    fn check(&self, _state: &ClusterState, spec: &JobSpec) -> Result<(), Refusal> {
        if spec.num_tasks() < spec.num_nodes() && spec.ntasks.is_some() {
            return Err(Refusal("Node count specification invalid".into()));
        }
        if spec.name.len() > 200 {
            return Err(Refusal("Job name too long".into()));
        }
        Ok(())
    }
}
