//! Launching a batch job: everything a node needs to start one batch script, computed by the
//! controller from committed state, so that every replica (and every re-sent assignment) gives
//! the node exactly the same launch.
//!
//! ```text
//!   ClusterState + Job (Running, alloc[0] = batch node)
//!        │
//!        ├── batch_environment ──▶ user's exported env (spec.env) + Slurm's variables on top
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

use crate::job::{Job, JobId, JobSpec, MemRequest, NodeAlloc};
use crate::slurm::hostlist;
use crate::slurm::pattern::{PatternVars, default_output_pattern, expand_pattern};
use crate::slurm::sbatch::OpenMode;
use crate::state::ClusterState;

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
}

/// Builds the launch of `job` (which must be Running with an allocation) for its batch node
/// (`alloc[0]`).
pub fn prepare(state: &ClusterState, job: &Job) -> LaunchSpec {
    debug_assert!(!job.alloc.is_empty(), "job {} has no allocation to launch on", job.id);
    let spec = &job.spec;
    let (stdout_path, stderr_path) = output_paths(job);
    let batch = batch_alloc(job);
    LaunchSpec {
        job_id: job.id,
        attempt: job.restarts,
        script: spec.script.clone(),
        args: spec.script_args.clone(),
        work_dir: spec.work_dir.clone(),
        env: batch_environment(state, job),
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
    }
}

/// Slurm's batch environment for the job, on top of the user's exported environment
/// (`job.spec.env`, already filtered by `--export` on the client side). Slurm's variables
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
pub fn batch_environment(state: &ClusterState, job: &Job) -> Vec<(String, String)> {
    let spec = &job.spec;
    let mut env: BTreeMap<String, String> = spec.env.iter().cloned().collect();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_owned(), v);
    };

    let batch_node = batch_alloc(job).map_or("", |a| a.node.as_str());
    let nodes = job.node_names();
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
    // without a default account (`env_nonroot.txt`). Chorus has no accounting, so the account
    // a job shows everywhere (scontrol, squeue, sacct) is `--account`, else the user name.
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
    let cpus: Vec<u32> = job.alloc.iter().map(|a| a.cpus).collect();
    set("SLURM_JOB_CPUS_PER_NODE", run_length(&cpus));
    set("SLURM_CPUS_ON_NODE", batch_alloc(job).map_or(0, |a| a.cpus).to_string());
    set("SLURM_TASKS_PER_NODE", run_length(&tasks_per_node(spec, &job.alloc)));
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
            set("SLURM_MEM_PER_NODE", batch_alloc(job).map_or(0, |a| a.mem_mb).to_string());
        }
        Some(MemRequest::PerNode(mb)) => set("SLURM_MEM_PER_NODE", mb.to_string()),
        Some(MemRequest::PerCpu(mb)) => set("SLURM_MEM_PER_CPU", mb.to_string()),
        // No memory option: the job got DefMemPerCPU, and Slurm says so (observed with 256).
        None if state.config.def_mem_per_cpu > 0 => {
            set("SLURM_MEM_PER_CPU", state.config.def_mem_per_cpu.to_string());
        }
        None => {}
    }
    if let Some(a) = batch_alloc(job).filter(|a| !a.gpus.is_empty()) {
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
