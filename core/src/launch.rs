//! Launching a batch job: everything a node needs to start one batch script, computed by the
//! controller from committed state, so that every replica (and every re-sent assignment) gives
//! the node exactly the same launch.
//!
//! ```text
//!   ClusterState + Job (Running, alloc[0] = batch node)
//!        │
//!        ├── batch_environment ──▶ user's exported env (JobInputs) + Slurm's variables on top
//!        ├── output_paths ───────▶ -o/-e patterns (or slurm-%j.out, slurm-%A_%a.out)
//!        │                         expanded, made absolute against the working directory
//!        ▼
//!   prepare ──▶ LaunchSpec ──▶ noded: adds SLURM_TASK_PID (and, with --export=NONE, the
//!                                     user's login environment), opens the output files,
//!                                     execs the script in the job's cgroup
//! ```
//!
//! The environment mirrors what Slurm 22.05 gives a batch script, as recorded on the reference
//! cluster (`slurm-ref/observed/env_*.txt`): the same names, set under the same conditions,
//! with the same value formats (`2(x2)`, `node[1-2]`, memory in plain MB). What Chorus leaves
//! out, and why, is written next to each choice in [`batch_environment`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::job::{Job, JobId, JobInputs, JobSpec, MemRequest, NodeAlloc, Replica};
use crate::slurm::hostlist;
use crate::slurm::pattern::{PatternVars, default_output_pattern, expand_pattern};
use crate::slurm::sbatch::OpenMode;
use crate::state::{ClusterState, Network};

/// Everything a node needs to start one batch script, computed by the controller from
/// committed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchSpec {
    pub job_id: JobId,
    /// `job.restarts`: a launch is keyed by `(job_id, attempt)`, so a re-sent assignment never
    /// starts a job twice and a report from an older attempt is recognised as stale.
    pub attempt: u32,
    /// The script's text, `#!` line included.
    pub script: String,
    pub args: Vec<String>,
    /// Absolute working directory (`-D`, default the submit directory).
    pub work_dir: String,
    /// The environment, sorted by name (as `env | sort` prints it); no duplicate names.
    pub env: Vec<(String, String)>,
    /// Absolute path of the batch script's standard output.
    pub stdout_path: String,
    /// Absolute path of its standard error: equal to `stdout_path` when `-e` was not given.
    pub stderr_path: String,
    /// `--open-mode=append`; otherwise the files are truncated.
    pub open_append: bool,
    /// `None`: no limit.
    pub time_limit_secs: Option<u64>,
    /// When the controller started the job (seconds since the epoch): the deadline is
    /// `start_time + time_limit_secs`.
    pub start_time: u64,
    pub uid: u32,
    pub gid: u32,
    /// CPUs allocated on the batch node.
    pub cpus: u32,
    /// Memory (MB) allocated on the batch node: the cgroup limit.
    pub mem_mb: u64,
    /// Indices of the batch node's GPUs given to the job.
    pub gpus: Vec<u32>,
    pub job_name: String,
    pub user: String,
    /// The job's network, from its partition.
    pub network: Network,
    /// `--container=PATH`: the OCI bundle to run the script in.
    pub container: Option<String>,
    /// Which of the job's replicas this is (its report says so).
    pub replica: u32,
    /// Run as on a node that shares no filesystem with the submitter: in a working directory
    /// of its own, its outputs returned through the controller, never written in place. Every
    /// replica of a replicated job is, so none can overwrite another's result, and a node
    /// cannot tell a spot check from a job it runs alone.
    pub sandboxed: bool,
    /// `--output-files` globs, relative to the working directory: part of the result.
    pub output_files: Vec<String>,
}

/// Builds the launch of one replica of `job` (Running) for the replica's batch node
/// (`alloc[0]`), with the script and environment the controller kept for it. Its environment
/// names the replica's nodes; its output paths are the job's, the same for every replica.
pub fn prepare(
    state: &ClusterState,
    job: &Job,
    replica: &Replica,
    inputs: &JobInputs,
) -> LaunchSpec {
    debug_assert!(!replica.alloc.is_empty(), "job {} has no allocation to launch on", job.id);
    let spec = &job.spec;
    let (stdout_path, stderr_path) = output_paths(job);
    let batch = replica.alloc.first();
    LaunchSpec {
        job_id: job.id,
        attempt: job.restarts,
        script: inputs.script.clone(),
        args: spec.script_args.clone(),
        work_dir: spec.work_dir.clone(),
        env: batch_environment(state, job, &replica.alloc, &inputs.env),
        stdout_path,
        stderr_path,
        open_append: matches!(spec.open_mode, OpenMode::Append),
        time_limit_secs: job.time_limit_min.map(|m| u64::from(m) * 60),
        start_time: job.start_time.unwrap_or(state.now),
        uid: spec.uid,
        gid: spec.gid,
        cpus: batch.map_or(0, |a| a.cpus),
        mem_mb: batch.map_or(0, |a| a.mem_mb),
        gpus: batch.map(|a| a.gpus.clone()).unwrap_or_default(),
        job_name: spec.name.clone(),
        user: spec.user.clone(),
        network: state
            .config
            .partitions
            .iter()
            .find(|p| p.name == job.partition)
            .map_or_else(Network::default, |p| p.network),
        container: spec.other.get("container").cloned(),
        replica: replica.index,
        sandboxed: job.is_replicated(),
        output_files: spec.output_files.clone(),
    }
}

/// Slurm's batch environment for the job, on top of the user's exported environment
/// (`user_env`: the job's [`JobInputs::env`], already filtered by `--export` on the client side). Slurm's variables
/// override the user's of the same name. Sorted by name.
///
/// Left to the node, which alone knows them at exec time:
/// * `SLURM_TASK_PID`: the script's process id.
/// * With `--export=NONE` (`SLURM_GET_USER_ENV=1`): the user's login environment. Slurm
///   runs the user's login shell on the node and takes `HOME`, `SHELL`, `PATH`, `MAIL` and
///   whatever the profile exports from it (see `env_export_none.txt`); that needs the node's
///   passwd database and files. Chorus sets only what it knows for sure (`USER`, `LOGNAME`);
///   the node adds `HOME` and `SHELL` from the passwd entry and a login `PATH`, underneath
///   these variables (Slurm's win on a clash, as in Slurm).
/// * Whether the `TMPDIR` the user exported exists: Slurm falls back to `/tmp` when it cannot
///   be created. Here `TMPDIR=/tmp` is set only when the user exported none.
///
/// Deliberately not set, although Slurm 22.05 sets them:
/// * `SLURM_CONF`: the path of a `slurm.conf` on the node. Chorus has none; a script or tool
///   reading it would find nothing, which is worse than knowing it is absent.
/// * `SLURM_WORKING_CLUSTER` (`ref:127.0.0.1:6817:9728:109`): slurmctld's address and RPC
///   version, only for Slurm's own clients inside the job to reach slurmctld. Chorus's CLI
///   finds the controller by its own configuration; a fake value would mislead.
/// * `SLURM_NODE_ALIASES`: `(null)` unless cloud nodes have dynamic addresses; nothing a
///   script can use.
/// * `SLURM_TASK_PID`: see above (the node adds it).
///
/// Shell-maintained variables (`SHLVL`, `_`) are the interpreter's business.
pub fn batch_environment(
    state: &ClusterState,
    job: &Job,
    alloc: &[NodeAlloc],
    user_env: &[(String, String)],
) -> Vec<(String, String)> {
    let spec = &job.spec;
    let mut env: BTreeMap<String, String> = user_env.iter().cloned().collect();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_owned(), v);
    };

    let batch = alloc.first();
    let batch_node = batch.map_or("", |a| a.node.as_str());
    let nodes: Vec<String> = alloc.iter().map(|a| a.node.clone()).collect();
    let nodelist = hostlist::compress(&nodes);

    // Identity of the job.
    set("ENVIRONMENT", "BATCH".into());
    set("SLURM_JOB_ID", job.id.to_string());
    set("SLURM_JOBID", job.id.to_string());
    set("SLURM_JOB_NAME", spec.name.clone());
    set("SLURM_JOB_USER", spec.user.clone());
    set("SLURM_JOB_UID", spec.uid.to_string());
    set("SLURM_JOB_GID", spec.gid.to_string());
    set("SLURM_JOB_PARTITION", job.partition.clone());
    // Observed: `root` for root (its default account is `root`); Slurm leaves it out for a user
    // without a default account (`env_nonroot.txt`). Chorus has no accounting associations:
    // it names `--account`, else the user (every user is taken to have an account of its name).
    set(
        "SLURM_JOB_ACCOUNT",
        spec.other.get("account").cloned().unwrap_or_else(|| spec.user.clone()),
    );
    set("SLURM_JOB_QOS", spec.other.get("qos").cloned().unwrap_or_else(|| "normal".into()));
    set("SLURM_CLUSTER_NAME", state.config.cluster_name.clone());
    set("SLURM_SUBMIT_DIR", spec.submit_dir.clone());
    set("SLURM_SUBMIT_HOST", spec.submit_host.clone());
    // The scheduling priority (nice value) of the sbatch process, which Slurm passes on to
    // the tasks of srun steps. Chorus's CLI does not record it; 0 is what a login shell has and
    // what every observed job shows.
    set("SLURM_PRIO_PROCESS", "0".into());
    if job.restarts > 0 {
        set("SLURM_RESTART_COUNT", job.restarts.to_string());
    }
    if let Some(dep) = &spec.dependency {
        // Slurm copies the option's text; Chorus keeps the parsed form, whose text names one
        // job per item (`afterok:1:2` comes back as `afterok:1,afterok:2`, which means the same).
        set("SLURM_JOB_DEPENDENCY", dep.to_string());
    }

    // The allocation.
    set("SLURM_JOB_NODELIST", nodelist.clone());
    set("SLURM_NODELIST", nodelist);
    set("SLURM_JOB_NUM_NODES", nodes.len().to_string());
    set("SLURM_NNODES", nodes.len().to_string());
    let cpus: Vec<u32> = alloc.iter().map(|a| a.cpus).collect();
    set("SLURM_JOB_CPUS_PER_NODE", run_length(&cpus));
    set("SLURM_CPUS_ON_NODE", batch.map_or(0, |a| a.cpus).to_string());
    set("SLURM_TASKS_PER_NODE", run_length(&tasks_per_node(spec, alloc)));
    // Slurm sets the task count only when the user fixed it: `-n`, or `--ntasks-per-node`
    // (sbatch turns that into a task count of nodes × tasks per node).
    if spec.ntasks.is_some() || spec.ntasks_per_node.is_some() {
        set("SLURM_NTASKS", spec.num_tasks().to_string());
        set("SLURM_NPROCS", spec.num_tasks().to_string());
    }
    if let Some(n) = spec.ntasks_per_node {
        set("SLURM_NTASKS_PER_NODE", n.to_string());
    }
    if let Some(c) = spec.cpus_per_task {
        set("SLURM_CPUS_PER_TASK", c.to_string());
    }
    match spec.mem {
        // `--mem=0` asks for all of a node's memory: give the amount it got.
        Some(MemRequest::PerNode(0)) => {
            set("SLURM_MEM_PER_NODE", batch.map_or(0, |a| a.mem_mb).to_string());
        }
        Some(MemRequest::PerNode(mb)) => set("SLURM_MEM_PER_NODE", mb.to_string()),
        Some(MemRequest::PerCpu(mb)) => set("SLURM_MEM_PER_CPU", mb.to_string()),
        // No memory option: the job got DefMemPerCPU, and Slurm says so (observed with 256).
        None if state.config.def_mem_per_cpu > 0 => {
            set("SLURM_MEM_PER_CPU", state.config.def_mem_per_cpu.to_string());
        }
        None => {}
    }
    if let Some(a) = batch.filter(|a| !a.gpus.is_empty()) {
        let mut gpus = a.gpus.clone();
        gpus.sort_unstable();
        let list = gpus.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        set("SLURM_GPUS_ON_NODE", gpus.len().to_string());
        set("SLURM_JOB_GPUS", list.clone());
        // Slurm's gres/gpu sets these three when gres.conf names no environment flags (as on
        // the reference cluster), to the allocated indices since devices are not renumbered
        // there (ConstrainDevices=no). A node that hides the other GPUs from the job (device
        // cgroup, container) renumbers them from 0 and must rewrite these three.
        set("CUDA_VISIBLE_DEVICES", list.clone());
        set("GPU_DEVICE_ORDINAL", list.clone());
        set("ROCR_VISIBLE_DEVICES", list);
    }

    // The batch step: one task, the first of the job, on the batch node.
    set("SLURMD_NODENAME", batch_node.to_owned());
    set("HOSTNAME", batch_node.to_owned());
    set("SLURM_TOPOLOGY_ADDR", batch_node.to_owned());
    set("SLURM_TOPOLOGY_ADDR_PATTERN", "node".into());
    set("SLURM_NODEID", "0".into());
    set("SLURM_PROCID", "0".into());
    set("SLURM_LOCALID", "0".into());
    set("SLURM_GTIDS", "0".into());

    // Array tasks.
    if let (Some((array_id, index)), Some(array)) = (job.array, &spec.array) {
        let mut tasks = array.tasks.clone();
        tasks.sort_unstable();
        tasks.dedup();
        set("SLURM_ARRAY_JOB_ID", array_id.to_string());
        set("SLURM_ARRAY_TASK_ID", index.to_string());
        set("SLURM_ARRAY_TASK_COUNT", tasks.len().to_string());
        set("SLURM_ARRAY_TASK_MIN", tasks.first().copied().unwrap_or(index).to_string());
        set("SLURM_ARRAY_TASK_MAX", tasks.last().copied().unwrap_or(index).to_string());
        set("SLURM_ARRAY_TASK_STEP", array_step(&tasks).to_string());
    }

    // --export.
    if let Some(export) = &spec.export_env {
        set("SLURM_EXPORT_ENV", export.clone());
        if export.eq_ignore_ascii_case("NONE") {
            // Observed: Slurm then loads the user's login environment on the node, as if
            // --get-user-env had been given, and says so.
            set("SLURM_GET_USER_ENV", "1".into());
            set("USER", spec.user.clone());
            set("LOGNAME", spec.user.clone());
        }
    }
    if spec.other.contains_key("get-user-env") {
        set("SLURM_GET_USER_ENV", "1".into());
    }

    // The batch script starts in the working directory: a `PWD` exported from the submit
    // shell would name the submit directory (bash corrects it, other interpreters do not).
    set("PWD", spec.work_dir.clone());
    // Slurm gives the script a TMPDIR when the user exported none (observed: /tmp).
    env.entry("TMPDIR".into()).or_insert_with(|| "/tmp".into());

    env.into_iter().collect()
}

/// Output paths `(stdout, stderr)`: the `-o`/`-e` patterns (or the default `slurm-%j.out`,
/// `slurm-%A_%a.out` for array tasks) expanded with the job's values, relative to the working
/// directory unless absolute. Without `-e`, stderr goes where stdout goes; `-e` alone leaves
/// stdout at the default name (observed in `output_files.txt`).
///
/// `%N` expands to the batch node's name. Slurm uses the node's short host name there, which
/// is the same thing unless several Slurm nodes share a host (as on the reference cluster,
/// where it gave `vm`).
pub fn output_paths(job: &Job) -> (String, String) {
    let spec = &job.spec;
    let vars = PatternVars {
        job_id: job.id,
        array_job_id: job.array.map(|(a, _)| a),
        array_task_id: job.array.map(|(_, t)| t),
        job_name: &spec.name,
        user: &spec.user,
        first_node: batch_alloc(job).map_or("", |a| a.node.as_str()),
        node_index: 0,
        task_id: 0,
    };
    let default = default_output_pattern(job.array.is_some());
    let stdout = spec.stdout.as_deref().unwrap_or(default);
    let stderr = spec.stderr.as_deref().unwrap_or(stdout);
    let path = |pattern: &str| absolute(&spec.work_dir, &expand_pattern(pattern, &vars));
    (path(stdout), path(stderr))
}

/// The batch node's share of the allocation.
fn batch_alloc(job: &Job) -> Option<&NodeAlloc> {
    job.alloc.first()
}

/// Tasks on each allocated node. With a task count fixed by the user, spread as Slurm's block
/// distribution does; otherwise one task per `cpus_per_task` CPUs the node got (Slurm's rule
/// when no task count is given: `-c2` on 2 CPUs is one task, a plain job is one per CPU).
fn tasks_per_node(spec: &JobSpec, alloc: &[NodeAlloc]) -> Vec<u32> {
    let fixed = spec.ntasks.is_some() || spec.ntasks_per_node.is_some();
    (0u32..)
        .zip(alloc)
        .map(
            |(i, a)| {
                if fixed { spec.tasks_on_node(i) } else { (a.cpus / spec.cpus_per_task()).max(1) }
            },
        )
        .collect()
}

/// Slurm's compressed per-node counts: runs of equal values as `N(xK)`, joined by commas
/// (`[2, 2]` → `2(x2)`, `[4, 4, 2]` → `4(x2),2`).
fn run_length(values: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let run = values[i..].iter().take_while(|v| **v == values[i]).count();
        out.push(if run > 1 { format!("{}(x{run})", values[i]) } else { values[i].to_string() });
        i += run;
    }
    out.join(",")
}

/// `SLURM_ARRAY_TASK_STEP` for a sorted task list: the common difference when the tasks are
/// evenly spaced (`0-15:4` → 4, `0-2` → 1), otherwise 1 (an irregular list such as `1,2,7`
/// has no single step; sbatch's man page only defines the value as the array's step size, and
/// 1 is what a plain range reports). One task: 1.
fn array_step(tasks: &[u32]) -> u32 {
    let Some(first_gap) = tasks.windows(2).map(|w| w[1] - w[0]).next() else { return 1 };
    if tasks.windows(2).all(|w| w[1] - w[0] == first_gap) { first_gap.max(1) } else { 1 }
}

/// `path` made absolute against `dir`, as Slurm does for relative `-o`/`-e` paths.
fn absolute(dir: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else if dir.ends_with('/') {
        format!("{dir}{path}")
    } else {
        format!("{dir}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::fsm::{self, Applied, Command, NodeRegistration, Placement, Plan};
    use crate::job::{ExitStatus, JobState, Usage};
    use crate::node::{GpuInfo, NodeResources};
    use crate::slurm::array::ArraySpec;
    use crate::slurm::dependency::parse_dependency;
    use crate::slurm::time::TimeLimit;
    use crate::state::ClusterConfig;

    // Recorded from Slurm 22.05 on the reference cluster (`slurm-ref/observed/env_*.txt`,
    // `env | sort` in the batch script). Names that Chorus leaves out on purpose, or that the
    // node or the shell add, are dropped by `observed` (see `NOT_FROM_CHORUS`).

    /// `sbatch -o env_plain.out env.sh` (job 43).
    const PLAIN: &str = "\
ENVIRONMENT=BATCH
HOME=/root
HOSTNAME=node1
LANG=C.UTF-8
LOGNAME=root
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
PWD=/tmp/slurm-ref-capture
SHELL=/bin/bash
SHLVL=1
SLURMD_NODENAME=node1
SLURM_CLUSTER_NAME=ref
SLURM_CONF=/etc/slurm/slurm.conf
SLURM_CPUS_ON_NODE=1
SLURM_GTIDS=0
SLURM_JOBID=43
SLURM_JOB_ACCOUNT=root
SLURM_JOB_CPUS_PER_NODE=1
SLURM_JOB_GID=0
SLURM_JOB_ID=43
SLURM_JOB_NAME=env.sh
SLURM_JOB_NODELIST=node1
SLURM_JOB_NUM_NODES=1
SLURM_JOB_PARTITION=debug
SLURM_JOB_QOS=normal
SLURM_JOB_UID=0
SLURM_JOB_USER=root
SLURM_LOCALID=0
SLURM_MEM_PER_CPU=256
SLURM_NNODES=1
SLURM_NODEID=0
SLURM_NODELIST=node1
SLURM_NODE_ALIASES=(null)
SLURM_PRIO_PROCESS=0
SLURM_PROCID=0
SLURM_SUBMIT_DIR=/tmp/slurm-ref-capture
SLURM_SUBMIT_HOST=vm
SLURM_TASKS_PER_NODE=1
SLURM_TASK_PID=27537
SLURM_TOPOLOGY_ADDR=node1
SLURM_TOPOLOGY_ADDR_PATTERN=node
SLURM_WORKING_CLUSTER=ref:127.0.0.1:6817:9728:109
TERM=dumb
TMPDIR=/tmp
USER=root
_=/usr/bin/env";

    /// `sbatch --ntasks=2 --cpus-per-task=1 --mem=100M -o env_n2.out env.sh` (job 47).
    const NTASKS2_MEM100M: &str = "\
ENVIRONMENT=BATCH
HOME=/root
HOSTNAME=node1
LANG=C.UTF-8
LOGNAME=root
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
PWD=/tmp/slurm-ref-capture
SHELL=/bin/bash
SHLVL=1
SLURMD_NODENAME=node1
SLURM_CLUSTER_NAME=ref
SLURM_CONF=/etc/slurm/slurm.conf
SLURM_CPUS_ON_NODE=2
SLURM_CPUS_PER_TASK=1
SLURM_GTIDS=0
SLURM_JOBID=47
SLURM_JOB_ACCOUNT=root
SLURM_JOB_CPUS_PER_NODE=2
SLURM_JOB_GID=0
SLURM_JOB_ID=47
SLURM_JOB_NAME=env.sh
SLURM_JOB_NODELIST=node1
SLURM_JOB_NUM_NODES=1
SLURM_JOB_PARTITION=debug
SLURM_JOB_QOS=normal
SLURM_JOB_UID=0
SLURM_JOB_USER=root
SLURM_LOCALID=0
SLURM_MEM_PER_NODE=100
SLURM_NNODES=1
SLURM_NODEID=0
SLURM_NODELIST=node1
SLURM_NODE_ALIASES=(null)
SLURM_NPROCS=2
SLURM_NTASKS=2
SLURM_PRIO_PROCESS=0
SLURM_PROCID=0
SLURM_SUBMIT_DIR=/tmp/slurm-ref-capture
SLURM_SUBMIT_HOST=vm
SLURM_TASKS_PER_NODE=2
SLURM_TASK_PID=28002
SLURM_TOPOLOGY_ADDR=node1
SLURM_TOPOLOGY_ADDR_PATTERN=node
SLURM_WORKING_CLUSTER=ref:127.0.0.1:6817:9728:109
TERM=dumb
TMPDIR=/tmp
USER=root
_=/usr/bin/env";

    /// `sbatch -N2 -n4 --mem-per-cpu=200M -J two-nodes -o env_N2.out env.sh` (job 48).
    const NODES2_NTASKS4_MEM_PER_CPU: &str = "\
ENVIRONMENT=BATCH
HOME=/root
HOSTNAME=node1
LANG=C.UTF-8
LOGNAME=root
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
PWD=/tmp/slurm-ref-capture
SHELL=/bin/bash
SHLVL=1
SLURMD_NODENAME=node1
SLURM_CLUSTER_NAME=ref
SLURM_CONF=/etc/slurm/slurm.conf
SLURM_CPUS_ON_NODE=2
SLURM_GTIDS=0
SLURM_JOBID=48
SLURM_JOB_ACCOUNT=root
SLURM_JOB_CPUS_PER_NODE=2(x2)
SLURM_JOB_GID=0
SLURM_JOB_ID=48
SLURM_JOB_NAME=two-nodes
SLURM_JOB_NODELIST=node[1-2]
SLURM_JOB_NUM_NODES=2
SLURM_JOB_PARTITION=debug
SLURM_JOB_QOS=normal
SLURM_JOB_UID=0
SLURM_JOB_USER=root
SLURM_LOCALID=0
SLURM_MEM_PER_CPU=200
SLURM_NNODES=2
SLURM_NODEID=0
SLURM_NODELIST=node[1-2]
SLURM_NODE_ALIASES=(null)
SLURM_NPROCS=4
SLURM_NTASKS=4
SLURM_PRIO_PROCESS=0
SLURM_PROCID=0
SLURM_SUBMIT_DIR=/tmp/slurm-ref-capture
SLURM_SUBMIT_HOST=vm
SLURM_TASKS_PER_NODE=2(x2)
SLURM_TASK_PID=28224
SLURM_TOPOLOGY_ADDR=node1
SLURM_TOPOLOGY_ADDR_PATTERN=node
SLURM_WORKING_CLUSTER=ref:127.0.0.1:6817:9728:109
TERM=dumb
TMPDIR=/tmp
USER=root
_=/usr/bin/env";

    /// Task 1 of `sbatch --array=0-2 -o env_array_%A_%a.out env.sh` (array 44; Slurm gave
    /// this task job id 46).
    const ARRAY_TASK_1: &str = "\
ENVIRONMENT=BATCH
HOME=/root
HOSTNAME=node1
LANG=C.UTF-8
LOGNAME=root
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
PWD=/tmp/slurm-ref-capture
SHELL=/bin/bash
SHLVL=1
SLURMD_NODENAME=node1
SLURM_ARRAY_JOB_ID=44
SLURM_ARRAY_TASK_COUNT=3
SLURM_ARRAY_TASK_ID=1
SLURM_ARRAY_TASK_MAX=2
SLURM_ARRAY_TASK_MIN=0
SLURM_ARRAY_TASK_STEP=1
SLURM_CLUSTER_NAME=ref
SLURM_CONF=/etc/slurm/slurm.conf
SLURM_CPUS_ON_NODE=1
SLURM_GTIDS=0
SLURM_JOBID=46
SLURM_JOB_ACCOUNT=root
SLURM_JOB_CPUS_PER_NODE=1
SLURM_JOB_GID=0
SLURM_JOB_ID=46
SLURM_JOB_NAME=env.sh
SLURM_JOB_NODELIST=node1
SLURM_JOB_NUM_NODES=1
SLURM_JOB_PARTITION=debug
SLURM_JOB_QOS=normal
SLURM_JOB_UID=0
SLURM_JOB_USER=root
SLURM_LOCALID=0
SLURM_MEM_PER_CPU=256
SLURM_NNODES=1
SLURM_NODEID=0
SLURM_NODELIST=node1
SLURM_NODE_ALIASES=(null)
SLURM_PRIO_PROCESS=0
SLURM_PROCID=0
SLURM_SUBMIT_DIR=/tmp/slurm-ref-capture
SLURM_SUBMIT_HOST=vm
SLURM_TASKS_PER_NODE=1
SLURM_TASK_PID=27803
SLURM_TOPOLOGY_ADDR=node1
SLURM_TOPOLOGY_ADDR_PATTERN=node
SLURM_WORKING_CLUSTER=ref:127.0.0.1:6817:9728:109
TERM=dumb
TMPDIR=/tmp
USER=root
_=/usr/bin/env";

    /// `sbatch --export=NONE -o env_exportnone.out env.sh` (job 49).
    const EXPORT_NONE: &str = "\
ENVIRONMENT=BATCH
HOME=/root
HOSTNAME=node1
LOGNAME=root
MAIL=/var/mail/root
PATH=/root/.cargo/bin:/root/.cargo/bin:/root/.pyenv/plugins/pyenv-virtualenv/shims:/root/.pyenv/shims:/root/.pyenv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
PWD=/tmp/slurm-ref-capture
PYENV_ROOT=/root/.pyenv
PYENV_SHELL=bash
PYENV_VIRTUALENV_INIT=1
SHELL=/bin/bash
SHLVL=2
SLURMD_NODENAME=node1
SLURM_CLUSTER_NAME=ref
SLURM_CONF=/etc/slurm/slurm.conf
SLURM_CPUS_ON_NODE=1
SLURM_EXPORT_ENV=NONE
SLURM_GET_USER_ENV=1
SLURM_GTIDS=0
SLURM_JOBID=49
SLURM_JOB_ACCOUNT=root
SLURM_JOB_CPUS_PER_NODE=1
SLURM_JOB_GID=0
SLURM_JOB_ID=49
SLURM_JOB_NAME=env.sh
SLURM_JOB_NODELIST=node1
SLURM_JOB_NUM_NODES=1
SLURM_JOB_PARTITION=debug
SLURM_JOB_QOS=normal
SLURM_JOB_UID=0
SLURM_JOB_USER=root
SLURM_LOCALID=0
SLURM_MEM_PER_CPU=256
SLURM_NNODES=1
SLURM_NODEID=0
SLURM_NODELIST=node1
SLURM_NODE_ALIASES=(null)
SLURM_PRIO_PROCESS=0
SLURM_PROCID=0
SLURM_SUBMIT_DIR=/tmp/slurm-ref-capture
SLURM_SUBMIT_HOST=vm
SLURM_TASKS_PER_NODE=1
SLURM_TASK_PID=28647
SLURM_TOPOLOGY_ADDR=node1
SLURM_TOPOLOGY_ADDR_PATTERN=node
SLURM_WORKING_CLUSTER=ref:127.0.0.1:6817:9728:109
TMPDIR=/tmp
USER=root
_=/usr/bin/env";

    /// Unprivileged user: `sbatch -o env_user.out env.sh` as `slurmref` (job 51).
    const NONROOT: &str = "\
ENVIRONMENT=BATCH
HOME=/home/slurmref
HOSTNAME=node1
LANG=C.UTF-8
LOGNAME=slurmref
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
PWD=/tmp/slurm-ref-capture-user
SHELL=/bin/bash
SHLVL=1
SLURMD_NODENAME=node1
SLURM_CLUSTER_NAME=ref
SLURM_CONF=/etc/slurm/slurm.conf
SLURM_CPUS_ON_NODE=1
SLURM_GTIDS=0
SLURM_JOBID=51
SLURM_JOB_CPUS_PER_NODE=1
SLURM_JOB_GID=1001
SLURM_JOB_ID=51
SLURM_JOB_NAME=env.sh
SLURM_JOB_NODELIST=node1
SLURM_JOB_NUM_NODES=1
SLURM_JOB_PARTITION=debug
SLURM_JOB_QOS=normal
SLURM_JOB_UID=1001
SLURM_JOB_USER=slurmref
SLURM_LOCALID=0
SLURM_MEM_PER_CPU=256
SLURM_NNODES=1
SLURM_NODEID=0
SLURM_NODELIST=node1
SLURM_NODE_ALIASES=(null)
SLURM_PRIO_PROCESS=0
SLURM_PROCID=0
SLURM_SUBMIT_DIR=/tmp/slurm-ref-capture-user
SLURM_SUBMIT_HOST=vm
SLURM_TASKS_PER_NODE=1
SLURM_TASK_PID=29136
SLURM_TOPOLOGY_ADDR=node1
SLURM_TOPOLOGY_ADDR_PATTERN=node
SLURM_WORKING_CLUSTER=ref:127.0.0.1:6817:9728:109
TERM=dumb
TMPDIR=/tmp
USER=slurmref
_=/usr/bin/env";

    /// Left out on purpose (see [`batch_environment`]), added by the node (`SLURM_TASK_PID`) or
    /// by the shell running the script (`SHLVL`, `_`).
    const NOT_FROM_CHORUS: [&str; 6] = [
        "SLURM_CONF",
        "SLURM_WORKING_CLUSTER",
        "SLURM_NODE_ALIASES",
        "SLURM_TASK_PID",
        "SHLVL",
        "_",
    ];

    const REF_DIR: &str = "/tmp/slurm-ref-capture";
    const REF_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    fn observed(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| !NOT_FROM_CHORUS.contains(k))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn as_map(env: &[(String, String)]) -> BTreeMap<String, String> {
        env.iter().cloned().collect()
    }

    /// Compares name by name, so that a failure names the variables that differ.
    fn assert_env(got: &BTreeMap<String, String>, want: &BTreeMap<String, String>) {
        let diff: Vec<String> = got
            .keys()
            .chain(want.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|k| got.get(*k) != want.get(*k))
            .map(|k| format!("{k}: got {:?}, Slurm {:?}", got.get(k), want.get(k)))
            .collect();
        assert!(diff.is_empty(), "environment differs from Slurm's:\n{}", diff.join("\n"));
    }

    /// The environment the reference capture submitted with (`env -i ...` in capture.sh).
    fn user_env(user: &str, home: &str) -> Vec<(String, String)> {
        [
            ("HOME", home),
            ("USER", user),
            ("LOGNAME", user),
            ("SHELL", "/bin/bash"),
            ("PATH", REF_PATH),
            ("LANG", "C.UTF-8"),
            ("TERM", "dumb"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// `sbatch env.sh` as root from the reference capture directory.
    fn base_spec() -> JobSpec {
        JobSpec {
            submit_host: "vm".into(),
            env: user_env("root", "/root"),
            ..JobSpec::new("env.sh", "#!/bin/bash\nenv | sort\n", REF_DIR)
        }
    }

    /// The reference cluster: `ref`, DefMemPerCPU=256, nodes of 2 CPUs and 8000 MB; job ids
    /// start at `first_job_id` so that they match the recorded ones.
    fn cluster(first_job_id: JobId, nodes: &[(&str, u32)]) -> ClusterState {
        let config =
            ClusterConfig { cluster_name: "ref".into(), first_job_id, ..Default::default() };
        let mut state = ClusterState::new(config);
        for (name, gpus) in nodes {
            let gpus = (0..*gpus)
                .map(|i| GpuInfo {
                    index: i,
                    uuid: format!("GPU-{name}-{i}"),
                    model: "h100".into(),
                    memory_mb: 81_559,
                    driver: "535.104.05".into(),
                })
                .collect();
            let reg = NodeRegistration {
                name: (*name).into(),
                addr: "127.0.0.1:0".into(),
                hostname: "vm".into(),
                resources: NodeResources { cpus: 2, mem_mb: 8000, gpus },
                boot_time: 0,
                version: "test".into(),
                os: "Linux".into(),
                running: vec![],
                session: 0,
                public_key: None,
            };
            fsm::apply(&mut state, Command::RegisterNode { reg: Box::new(reg), now: 1 })
                .expect("register");
        }
        state
    }

    fn submit(state: &mut ClusterState, spec: JobSpec) -> Vec<JobId> {
        match fsm::apply(state, Command::Submit { spec: Box::new(spec), now: 10 }) {
            Ok(Applied::Submitted(ids)) => ids,
            other => panic!("submit: {other:?}"),
        }
    }

    fn start(state: &mut ClusterState, job: JobId, alloc: Vec<NodeAlloc>) {
        let plan = Plan { starts: vec![Placement::single(job, alloc)], reasons: vec![] };
        let applied = fsm::apply(state, Command::ApplyPlan { plan, now: 20 });
        assert_eq!(applied, Ok(Applied::Started(vec![job])), "plan refused");
    }

    fn on(node: &str, cpus: u32, mem_mb: u64, gpus: &[u32]) -> NodeAlloc {
        NodeAlloc { node: node.into(), cpus, mem_mb, gpus: gpus.to_vec() }
    }

    /// Submits `spec` on a fresh reference cluster and starts it on `alloc`.
    fn running(
        first_job_id: JobId,
        nodes: &[(&str, u32)],
        spec: JobSpec,
        alloc: Vec<NodeAlloc>,
    ) -> (ClusterState, Job) {
        let mut state = cluster(first_job_id, nodes);
        let id = submit(&mut state, spec)[0];
        start(&mut state, id, alloc);
        let job = state.jobs[&id].clone();
        (state, job)
    }

    fn env_of(state: &ClusterState, job: &Job) -> BTreeMap<String, String> {
        as_map(&batch_environment(state, job, &job.alloc, &job.spec.env))
    }

    #[test]
    fn plain_sbatch_matches_slurm() {
        let (state, job) =
            running(43, &[("node1", 0)], base_spec(), vec![on("node1", 1, 256, &[])]);
        assert_env(&env_of(&state, &job), &observed(PLAIN));
    }

    #[test]
    fn ntasks2_cpus_per_task_mem100m_match_slurm() {
        let spec = JobSpec {
            ntasks: Some(2),
            cpus_per_task: Some(1),
            mem: Some(MemRequest::PerNode(100)),
            ..base_spec()
        };
        let (state, job) = running(47, &[("node1", 0)], spec, vec![on("node1", 2, 100, &[])]);
        assert_env(&env_of(&state, &job), &observed(NTASKS2_MEM100M));
    }

    #[test]
    fn nodes2_ntasks4_mem_per_cpu_match_slurm() {
        let spec = JobSpec {
            name: "two-nodes".into(),
            nodes: Some(2),
            ntasks: Some(4),
            mem: Some(MemRequest::PerCpu(200)),
            ..base_spec()
        };
        let alloc = vec![on("node1", 2, 400, &[]), on("node2", 2, 400, &[])];
        let (state, job) = running(48, &[("node1", 0), ("node2", 0)], spec, alloc);
        assert_env(&env_of(&state, &job), &observed(NODES2_NTASKS4_MEM_PER_CPU));
    }

    #[test]
    fn array_task_matches_slurm() {
        let spec = JobSpec {
            array: Some(ArraySpec { tasks: vec![0, 1, 2], throttle: None }),
            ..base_spec()
        };
        let mut state = cluster(44, &[("node1", 0)]);
        let ids = submit(&mut state, spec);
        // Chorus numbers an array's tasks in task order from the array's id; Slurm gave task 1
        // the id 46 (it hands the array's own id to the last task). Everything else matches.
        assert_eq!(ids, vec![44, 45, 46]);
        start(&mut state, ids[1], vec![on("node1", 1, 256, &[])]);
        let job = &state.jobs[&ids[1]];
        let mut want = observed(ARRAY_TASK_1);
        want.insert("SLURM_JOB_ID".into(), "45".into());
        want.insert("SLURM_JOBID".into(), "45".into());
        assert_env(&env_of(&state, job), &want);
    }

    #[test]
    fn export_none_matches_slurm_but_the_login_environment() {
        // sbatch sends only SLURM_* variables with --export=NONE (none here).
        let spec = JobSpec { export_env: Some("NONE".into()), env: vec![], ..base_spec() };
        let (state, job) = running(49, &[("node1", 0)], spec, vec![on("node1", 1, 256, &[])]);
        let mut want = observed(EXPORT_NONE);
        // The user's login environment, which the node loads (SLURM_GET_USER_ENV=1).
        let login = ["HOME", "SHELL", "MAIL", "PATH", "PYENV_ROOT", "PYENV_SHELL"];
        for k in login.into_iter().chain(["PYENV_VIRTUALENV_INIT"]) {
            want.remove(k);
        }
        assert_env(&env_of(&state, &job), &want);
    }

    #[test]
    fn nonroot_user_gets_its_ids_and_user_name_as_account() {
        let spec = JobSpec {
            user: "slurmref".into(),
            uid: 1001,
            gid: 1001,
            work_dir: "/tmp/slurm-ref-capture-user".into(),
            submit_dir: "/tmp/slurm-ref-capture-user".into(),
            env: user_env("slurmref", "/home/slurmref"),
            ..base_spec()
        };
        let (state, job) = running(51, &[("node1", 0)], spec, vec![on("node1", 1, 256, &[])]);
        let mut want = observed(NONROOT);
        // Deviation: Slurm omits it for a user without a default account; Chorus has no
        // accounting and names the user's own account.
        want.insert("SLURM_JOB_ACCOUNT".into(), "slurmref".into());
        assert_env(&env_of(&state, &job), &want);
    }

    #[test]
    fn account_and_qos_come_from_their_options() {
        let mut spec = base_spec();
        spec.other.insert("account".into(), "physics".into());
        spec.other.insert("qos".into(), "high".into());
        let (state, job) = running(1, &[("node1", 0)], spec, vec![on("node1", 1, 256, &[])]);
        let env = env_of(&state, &job);
        assert_eq!(env["SLURM_JOB_ACCOUNT"], "physics");
        assert_eq!(env["SLURM_JOB_QOS"], "high");
    }

    const GPU_VARIABLES: [&str; 5] = [
        "SLURM_GPUS_ON_NODE",
        "SLURM_JOB_GPUS",
        "CUDA_VISIBLE_DEVICES",
        "GPU_DEVICE_ORDINAL",
        "ROCR_VISIBLE_DEVICES",
    ];

    #[test]
    fn gres_gpu_sets_gpu_variables_to_allocated_indices() {
        let spec = JobSpec { gpus_per_node: 2, ..base_spec() };
        let (state, job) = running(1, &[("node1", 4)], spec, vec![on("node1", 1, 256, &[3, 1])]);
        let env = env_of(&state, &job);
        assert_eq!(env["SLURM_GPUS_ON_NODE"], "2");
        assert_eq!(env["SLURM_JOB_GPUS"], "1,3");
        assert_eq!(env["CUDA_VISIBLE_DEVICES"], "1,3");
        assert_eq!(env["GPU_DEVICE_ORDINAL"], "1,3");
        assert_eq!(env["ROCR_VISIBLE_DEVICES"], "1,3");
        // Nothing else changes.
        let mut rest = env.clone();
        for k in GPU_VARIABLES {
            rest.remove(k);
        }
        let (state, job) = running(1, &[("node1", 4)], base_spec(), vec![on("node1", 1, 256, &[])]);
        assert_env(&rest, &env_of(&state, &job));
    }

    #[test]
    fn no_gpus_sets_no_gpu_variables() {
        let (state, job) = running(1, &[("node1", 4)], base_spec(), vec![on("node1", 1, 256, &[])]);
        let env = env_of(&state, &job);
        for k in GPU_VARIABLES {
            assert!(!env.contains_key(k), "{k} set without GPUs");
        }
    }

    #[test]
    fn nodes2_without_ntasks_sets_no_task_count() {
        let spec = JobSpec { nodes: Some(2), ..base_spec() };
        let alloc = vec![on("node1", 1, 256, &[]), on("node2", 1, 256, &[])];
        let (state, job) = running(1, &[("node1", 0), ("node2", 0)], spec, alloc);
        let env = env_of(&state, &job);
        assert!(!env.contains_key("SLURM_NTASKS") && !env.contains_key("SLURM_NPROCS"));
        assert_eq!(env["SLURM_TASKS_PER_NODE"], "1(x2)");
        assert_eq!(env["SLURM_JOB_CPUS_PER_NODE"], "1(x2)");
        assert_eq!(env["SLURM_JOB_NODELIST"], "node[1-2]");
        assert_eq!(env["SLURM_CPUS_ON_NODE"], "1");
    }

    #[test]
    fn ntasks_per_node_sets_task_count_and_ntasks_per_node() {
        let spec = JobSpec { nodes: Some(2), ntasks_per_node: Some(2), ..base_spec() };
        let alloc = vec![on("node1", 2, 512, &[]), on("node2", 2, 512, &[])];
        let (state, job) = running(1, &[("node1", 0), ("node2", 0)], spec, alloc);
        let env = env_of(&state, &job);
        assert_eq!(env["SLURM_NTASKS"], "4");
        assert_eq!(env["SLURM_NPROCS"], "4");
        assert_eq!(env["SLURM_NTASKS_PER_NODE"], "2");
        assert_eq!(env["SLURM_TASKS_PER_NODE"], "2(x2)");
    }

    #[test]
    fn cpus_per_task_without_ntasks_is_one_task() {
        let spec = JobSpec { cpus_per_task: Some(2), ..base_spec() };
        let (state, job) = running(1, &[("node1", 0)], spec, vec![on("node1", 2, 512, &[])]);
        let env = env_of(&state, &job);
        assert_eq!(env["SLURM_CPUS_PER_TASK"], "2");
        assert_eq!(env["SLURM_CPUS_ON_NODE"], "2");
        assert_eq!(env["SLURM_TASKS_PER_NODE"], "1");
        assert!(!env.contains_key("SLURM_NTASKS"));
    }

    #[test]
    fn mem_0_reports_the_memory_the_node_gave() {
        let spec = JobSpec { mem: Some(MemRequest::PerNode(0)), ..base_spec() };
        let (state, job) = running(1, &[("node1", 0)], spec, vec![on("node1", 1, 8000, &[])]);
        let env = env_of(&state, &job);
        assert_eq!(env["SLURM_MEM_PER_NODE"], "8000");
        assert!(!env.contains_key("SLURM_MEM_PER_CPU"));
    }

    #[test]
    fn export_list_sets_export_env_without_get_user_env() {
        let spec = JobSpec { export_env: Some("ALL,FOO=bar".into()), ..base_spec() };
        let (state, job) = running(1, &[("node1", 0)], spec, vec![on("node1", 1, 256, &[])]);
        let env = env_of(&state, &job);
        assert_eq!(env["SLURM_EXPORT_ENV"], "ALL,FOO=bar");
        assert!(!env.contains_key("SLURM_GET_USER_ENV"));
    }

    #[test]
    fn get_user_env_sets_get_user_env() {
        let mut spec = base_spec();
        spec.other.insert("get-user-env".into(), String::new());
        let (state, job) = running(1, &[("node1", 0)], spec, vec![on("node1", 1, 256, &[])]);
        assert_eq!(env_of(&state, &job)["SLURM_GET_USER_ENV"], "1");
    }

    #[test]
    fn slurm_variables_override_the_users_and_the_rest_is_kept() {
        let mut spec = base_spec();
        spec.env.extend(
            [("SLURM_JOB_ID", "999"), ("FOO", "bar"), ("TMPDIR", "/scratch"), ("PWD", "/old")]
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        spec.work_dir = "/tmp/slurm-ref-capture/sub".into();
        let (state, job) = running(7, &[("node1", 0)], spec, vec![on("node1", 1, 256, &[])]);
        let env = batch_environment(&state, &job, &job.alloc, &job.spec.env);
        let map = as_map(&env);
        assert_eq!(map["SLURM_JOB_ID"], "7");
        assert_eq!(map["FOO"], "bar");
        assert_eq!(map["TMPDIR"], "/scratch");
        assert_eq!(map["PWD"], "/tmp/slurm-ref-capture/sub");
        assert_eq!(map.len(), env.len(), "duplicate names");
        assert!(env.windows(2).all(|w| w[0].0 < w[1].0), "not sorted by name");
    }

    #[test]
    fn dependency_sets_job_dependency() {
        let mut state = cluster(1, &[("node1", 0)]);
        let first = submit(&mut state, base_spec())[0];
        let dep = parse_dependency(&format!("afterany:{first}")).expect("parses");
        let second = submit(&mut state, JobSpec { dependency: Some(dep), ..base_spec() })[0];
        // Let the first job end so that the dependency is satisfied.
        start(&mut state, first, vec![on("node1", 1, 256, &[])]);
        let report = fsm::JobReport {
            replica: 0,
            digest: [0; 32],
            signature: vec![],
            job: first,
            attempt: 0,
            node: "node1".into(),
            exit: ExitStatus::default(),
            cause: fsm::EndCause::Exited,
            usage: Usage::default(),
            outputs: vec![],
        };
        fsm::apply(&mut state, Command::JobEnded { report: Box::new(report), now: 30 })
            .expect("ended");
        start(&mut state, second, vec![on("node1", 1, 256, &[])]);
        let env = env_of(&state, &state.jobs[&second]);
        assert_eq!(env["SLURM_JOB_DEPENDENCY"], "afterany:1");
        assert!(!env_of(&state, &state.jobs[&first]).contains_key("SLURM_JOB_DEPENDENCY"));
    }

    #[test]
    fn requeue_sets_restart_count_and_attempt() {
        let (mut state, job) =
            running(1, &[("node1", 0)], base_spec(), vec![on("node1", 1, 256, &[])]);
        assert!(!env_of(&state, &job).contains_key("SLURM_RESTART_COUNT"));
        assert_eq!(prepare(&state, &job, &job.replicas[0], &job.spec.inputs()).attempt, 0);
        fsm::apply(&mut state, Command::Requeue { jobs: vec![job.id], now: 30 }).expect("requeue");
        let report = fsm::JobReport {
            replica: 0,
            digest: [0; 32],
            signature: vec![],
            job: job.id,
            attempt: 0,
            node: "node1".into(),
            exit: ExitStatus { code: 0, signal: 15 },
            cause: fsm::EndCause::Stopped,
            usage: Usage::default(),
            outputs: vec![],
        };
        fsm::apply(&mut state, Command::JobEnded { report: Box::new(report), now: 31 })
            .expect("ended");
        assert_eq!(state.jobs[&job.id].state, JobState::Pending);
        start(&mut state, job.id, vec![on("node1", 1, 256, &[])]);
        let job = &state.jobs[&job.id];
        assert_eq!(env_of(&state, job)["SLURM_RESTART_COUNT"], "1");
        assert_eq!(prepare(&state, job, &job.replicas[0], &job.spec.inputs()).attempt, 1);
    }

    #[test]
    fn prepare_describes_the_batch_node_share() {
        let spec = JobSpec {
            nodes: Some(2),
            ntasks: Some(3),
            gpus_per_node: 1,
            time_limit: Some(TimeLimit::Minutes(90)),
            open_mode: OpenMode::Append,
            script_args: vec!["a".into(), "b c".into()],
            ..base_spec()
        };
        let alloc = vec![on("node2", 2, 512, &[1]), on("node1", 1, 256, &[0])];
        let (state, job) = running(5, &[("node1", 2), ("node2", 2)], spec, alloc);
        let launch = prepare(&state, &job, &job.replicas[0], &job.spec.inputs());
        let want = LaunchSpec {
            job_id: 5,
            attempt: 0,
            script: "#!/bin/bash\nenv | sort\n".into(),
            args: vec!["a".into(), "b c".into()],
            work_dir: REF_DIR.into(),
            env: batch_environment(&state, &job, &job.alloc, &job.spec.env),
            stdout_path: format!("{REF_DIR}/slurm-5.out"),
            stderr_path: format!("{REF_DIR}/slurm-5.out"),
            open_append: true,
            time_limit_secs: Some(5400),
            start_time: 20,
            uid: 0,
            gid: 0,
            cpus: 2,
            mem_mb: 512,
            gpus: vec![1],
            job_name: "env.sh".into(),
            user: "root".into(),
            network: Network::Host,
            container: None,
            replica: 0,
            sandboxed: false,
            output_files: vec![],
        };
        assert_eq!(launch, want);
        let env = as_map(&launch.env);
        assert_eq!(env["SLURMD_NODENAME"], "node2");
        assert_eq!(env["HOSTNAME"], "node2");
        assert_eq!(env["SLURM_TASKS_PER_NODE"], "2,1");
        assert_eq!(env["SLURM_JOB_CPUS_PER_NODE"], "2,1");
        assert_eq!(env["SLURM_CPUS_ON_NODE"], "2");
    }

    #[test]
    fn default_time_limit_is_unlimited_and_truncates() {
        let (state, job) = running(1, &[("node1", 0)], base_spec(), vec![on("node1", 1, 256, &[])]);
        let launch = prepare(&state, &job, &job.replicas[0], &job.spec.inputs());
        assert_eq!(launch.time_limit_secs, None);
        assert!(!launch.open_append);
    }

    // ---- output_paths (observed in output_files.txt)

    /// A job as it is before it starts: output names need only the spec and the ids.
    fn job_with(id: JobId, array: Option<(JobId, u32)>, spec: JobSpec) -> Job {
        let mut state = cluster(id, &[]);
        let spec = if array.is_some() {
            JobSpec { array: Some(ArraySpec { tasks: vec![0, 1, 2, 3], throttle: None }), ..spec }
        } else {
            spec
        };
        let ids = submit(&mut state, spec);
        let mut job = state.jobs[&ids[0]].clone();
        // Pick the task the test names (task ids follow the array's id in task order).
        if let Some((a, t)) = array {
            job = state.jobs.values().find(|j| j.array == Some((a, t))).expect("task").clone();
        }
        job
    }

    #[test]
    fn default_output_is_slurm_jobid_out_in_work_dir() {
        let job = job_with(53, None, base_spec());
        let p = format!("{REF_DIR}/slurm-53.out");
        assert_eq!(output_paths(&job), (p.clone(), p));
    }

    #[test]
    fn default_output_of_array_task_is_slurm_a_a_out() {
        let job = job_with(54, Some((54, 1)), base_spec());
        let p = format!("{REF_DIR}/slurm-54_1.out");
        assert_eq!(output_paths(&job), (p.clone(), p));
    }

    #[test]
    fn output_pattern_expands_j_x_u() {
        let spec =
            JobSpec { name: "pat".into(), stdout: Some("o_%j_%x_%u.txt".into()), ..base_spec() };
        let job = job_with(56, None, spec);
        let p = format!("{REF_DIR}/o_56_pat_root.txt");
        assert_eq!(output_paths(&job), (p.clone(), p));
    }

    #[test]
    fn output_pattern_expands_a_a_and_j_of_array_task() {
        let spec =
            JobSpec { name: "arr".into(), stdout: Some("a_%A_%a_%j.txt".into()), ..base_spec() };
        // Task 2 of array 57 has job id 59 in Chorus (57 + index 2 of tasks 0..=3).
        let job = job_with(57, Some((57, 2)), spec);
        assert_eq!(job.id, 59);
        let p = format!("{REF_DIR}/a_57_2_59.txt");
        assert_eq!(output_paths(&job), (p.clone(), p));
    }

    #[test]
    fn output_pattern_a_a_of_plain_job_is_no_val() {
        let job =
            job_with(59, None, JobSpec { stdout: Some("na_%A_%a.txt".into()), ..base_spec() });
        assert_eq!(output_paths(&job).0, format!("{REF_DIR}/na_59_4294967294.txt"));
    }

    #[test]
    fn error_given_separates_stderr() {
        let spec = JobSpec {
            stdout: Some("sep_%j.out".into()),
            stderr: Some("sep_%j.err".into()),
            ..base_spec()
        };
        let job = job_with(62, None, spec);
        assert_eq!(
            output_paths(&job),
            (format!("{REF_DIR}/sep_62.out"), format!("{REF_DIR}/sep_62.err"))
        );
    }

    #[test]
    fn error_only_keeps_default_stdout() {
        let job =
            job_with(63, None, JobSpec { stderr: Some("only_err_%j.err".into()), ..base_spec() });
        assert_eq!(
            output_paths(&job),
            (format!("{REF_DIR}/slurm-63.out"), format!("{REF_DIR}/only_err_63.err"))
        );
    }

    #[test]
    fn absolute_output_paths_are_kept() {
        let job = job_with(70, None, JobSpec { stdout: Some("/dev/null".into()), ..base_spec() });
        assert_eq!(output_paths(&job), ("/dev/null".into(), "/dev/null".into()));
        let spec = JobSpec {
            stdout: Some("/var/log/%x-%j.log".into()),
            stderr: Some("rel.err".into()),
            ..base_spec()
        };
        let job = job_with(71, None, spec);
        assert_eq!(
            output_paths(&job),
            ("/var/log/env.sh-71.log".into(), format!("{REF_DIR}/rel.err"))
        );
    }

    #[test]
    fn chdir_makes_relative_output_relative_to_it() {
        let sub = format!("{REF_DIR}/sub");
        let job = job_with(
            66,
            None,
            JobSpec { work_dir: sub.clone(), stdout: Some("rel_%j.out".into()), ..base_spec() },
        );
        assert_eq!(output_paths(&job).0, format!("{sub}/rel_66.out"));
        let job = job_with(67, None, JobSpec { work_dir: sub.clone(), ..base_spec() });
        assert_eq!(output_paths(&job).0, format!("{sub}/slurm-67.out"));
    }

    #[test]
    fn output_pattern_n_is_the_batch_node() {
        let spec = JobSpec { stdout: Some("n_%N.out".into()), ..base_spec() };
        let (_, job) = running(1, &[("node1", 0)], spec, vec![on("node1", 1, 256, &[])]);
        assert_eq!(output_paths(&job).0, format!("{REF_DIR}/n_node1.out"));
    }

    // ---- helpers

    #[test]
    fn run_length_compresses_equal_neighbours() {
        assert_eq!(run_length(&[1]), "1");
        assert_eq!(run_length(&[2, 2]), "2(x2)");
        assert_eq!(run_length(&[4, 4, 2]), "4(x2),2");
        assert_eq!(run_length(&[1, 2, 1]), "1,2,1");
        assert_eq!(run_length(&[]), "");
    }

    #[test]
    fn array_step_is_the_common_difference() {
        assert_eq!(array_step(&[0, 1, 2]), 1);
        assert_eq!(array_step(&[0, 4, 8, 12]), 4);
        assert_eq!(array_step(&[5]), 1);
        assert_eq!(array_step(&[1, 2, 7]), 1);
        assert_eq!(array_step(&[]), 1);
    }

    #[test]
    fn stepped_array_reports_its_step() {
        let spec = JobSpec {
            array: Some(ArraySpec { tasks: vec![0, 4, 8, 12], throttle: Some(2) }),
            ..base_spec()
        };
        let mut state = cluster(100, &[("node1", 0)]);
        let ids = submit(&mut state, spec);
        start(&mut state, ids[2], vec![on("node1", 1, 256, &[])]);
        let env = env_of(&state, &state.jobs[&ids[2]]);
        assert_eq!(env["SLURM_ARRAY_JOB_ID"], "100");
        assert_eq!(env["SLURM_ARRAY_TASK_ID"], "8");
        assert_eq!(env["SLURM_ARRAY_TASK_COUNT"], "4");
        assert_eq!(env["SLURM_ARRAY_TASK_MIN"], "0");
        assert_eq!(env["SLURM_ARRAY_TASK_MAX"], "12");
        assert_eq!(env["SLURM_ARRAY_TASK_STEP"], "4");
    }
}
