//! The node agent daemon: `noded`'s flags and how they become a running agent. `noded` is
//! [`main`] with the honest [`Conduct`]; the test adversaries of `integration/` are the same
//! daemon with another conduct, so they join, run and report exactly as a node does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::agent::{AgentConfig, Conduct, run};
use crate::cgroup::{self, CgroupConfig};
use crate::gpuacct::GpuAccounting;
use crate::health::HealthConfig;
use crate::inventory::{self, FakeInventory, FakeUsage, GpuInventory, NvmlInventory};
use crate::runner::RunnerConfig;
use crate::users::{self, JobUserMode, JobUsers};
use clap::Parser;

/// Runs jobs the controller assigns to this node.
#[derive(Debug, Parser)]
#[command(name = "noded", version)]
pub struct Args {
    /// This node's name (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// The controllers' client addresses, comma-separated (any one leads the agent to the
    /// leader). `CHORUS_CONTROLLERS` is used when this is not given.
    #[arg(long, alias = "controller", value_delimiter = ',')]
    controllers: Vec<String>,
    /// The cluster CA's certificate: the controllers are believed by it only.
    #[arg(long, default_value = "/etc/chorus/ca.crt")]
    ca: PathBuf,
    /// A join token from an administrator (`chorus operator token OPERATOR`), needed until the
    /// node has a certificate (kept in STATE_DIR/keys/node.crt). Prefer --join-token-file:
    /// a command line is visible to every local user.
    #[arg(long, conflicts_with = "join_token_file")]
    join_token: Option<String>,
    /// A file holding the join token (readable by its owner only).
    #[arg(long)]
    join_token_file: Option<PathBuf>,
    /// Where scripts are staged and jobs without a shared working directory run.
    #[arg(long, default_value = "/var/lib/chorus/noded")]
    state_dir: PathBuf,
    /// Declare this many CPUs instead of what the OS reports (Slurm's config_overrides).
    #[arg(long)]
    node_cpus: Option<u32>,
    /// Declare this much memory (MB) instead of what the OS reports.
    #[arg(long)]
    node_mem: Option<u64>,
    /// Declare this many stand-in GPUs instead of asking NVML.
    #[arg(long)]
    node_gpus: Option<u32>,
    /// Model name of the stand-in GPUs.
    #[arg(long, default_value = "fakegpu")]
    node_gpu_model: String,
    /// Directory holding a character device `fakegpu<i>` for each stand-in GPU, so that the
    /// device cgroup isolates them as it would real ones.
    #[arg(long)]
    node_gpu_devices: Option<PathBuf>,
    /// What every stand-in GPU reports when sampled for accounting: `UTIL:MEM`, percent and
    /// MiB (default: nothing, as a node without the NVIDIA driver).
    #[arg(long, value_parser = FakeUsage::parse)]
    node_gpu_fake_usage: Option<FakeUsage>,
    /// Seconds between samples of a running job's GPUs for accounting (0: no GPU accounting).
    #[arg(long, default_value_t = 5)]
    gpu_sample_every: u64,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 5)]
    heartbeat: u64,
    /// Put every job in a cgroup of its own: `auto` (when this machine allows it, else run
    /// uncontained with a warning), `on` (refuse to start without), `off`.
    #[arg(long, value_enum, default_value_t = Cgroups::Auto)]
    cgroups: Cgroups,
    /// Where this node's job cgroups go in each hierarchy (default `chorus/<name>`). Nodes
    /// sharing a machine need parents of their own: a job's group is `PARENT/job_<id>_<n>`.
    #[arg(long)]
    cgroup_parent: Option<String>,
    /// Most processes (and threads) one job may have (`pids.max`).
    #[arg(long, default_value_t = 4096)]
    max_pids: i64,
    /// Run every job in its own mount, IPC, UTS, PID (and, as its partition says, network)
    /// namespaces: `auto`, `on`, `off` (as `--cgroups`).
    #[arg(long, value_enum, default_value_t = Cgroups::Auto)]
    namespaces: Cgroups,
    /// Who jobs run as (never root): `auto` (the submitter when this node knows its uid and
    /// it is not root, else a uid of the job's own from --job-uids), `range` (always a uid
    /// of the job's own), or the name of one unprivileged user for every job.
    #[arg(long, default_value = "auto", value_parser = JobUserMode::parse)]
    job_user: JobUserMode,
    /// The uids (and gids) jobs are given one each: `FIRST-LAST`.
    #[arg(long, default_value = "2000000000-2000065535", value_parser = users::parse_range)]
    job_uids: (u32, u32),
    /// The `stepd` program that runs each job (default: next to this program).
    #[arg(long)]
    stepd: Option<PathBuf>,
    /// The OCI runtime for `sbatch --container` jobs (default: `crun` on PATH; without one
    /// such jobs fail to launch, saying so).
    #[arg(long)]
    oci_runtime: Option<PathBuf>,
    /// Program run (as noded's user, root) before registering and every
    /// `--health-check-interval`: a non-zero exit or a timeout drains the node, with the first
    /// line of its output as the reason (Slurm's HealthCheckProgram).
    #[arg(long)]
    health_check_program: Option<PathBuf>,
    /// Seconds between health checks (the program and the built-in checks: free disk, cgroups,
    /// GPU count); 0: only at start (Slurm's HealthCheckInterval).
    #[arg(long, default_value_t = 300)]
    health_check_interval: u64,
    /// Seconds the health check program may run before it is killed and the node counts as
    /// unhealthy (Slurm's is fixed at 60).
    #[arg(long, default_value_t = crate::health::DEFAULT_PROGRAM_TIMEOUT.as_secs())]
    health_check_timeout: u64,
    /// Free space (MB) the state directory's file system needs for the node to be healthy.
    #[arg(long, default_value_t = 1024)]
    health_min_free_mb: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Cgroups {
    Auto,
    On,
    Off,
}

/// Runs the agent `a` describes, acting as `conduct` says, until SIGTERM or SIGINT.
pub fn main(a: Args, conduct: Arc<dyn Conduct>) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CHORUS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let name = match a.name {
        Some(n) => n,
        None => nix::unistd::gethostname()?.to_string_lossy().into_owned(),
    };
    let gpus: Arc<dyn GpuInventory> = match a.node_gpus {
        Some(count) => Arc::new(FakeInventory {
            count,
            model: a.node_gpu_model,
            devices: a.node_gpu_devices,
            usage: a.node_gpu_fake_usage,
        }),
        None => Arc::new(NvmlInventory::default()),
    };
    let gpu_accounting = (a.gpu_sample_every > 0).then(|| GpuAccounting {
        inventory: Arc::clone(&gpus),
        every: Duration::from_secs(a.gpu_sample_every),
    });
    std::fs::create_dir_all(&a.state_dir)?;
    let mut controllers = a.controllers;
    if controllers.is_empty() {
        controllers = std::env::var("CHORUS_CONTROLLERS")
            .unwrap_or_else(|_| "127.0.0.1:6817".into())
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
    }
    let cgroups = match a.cgroups {
        Cgroups::Off => None,
        mode => {
            let gpus = inventory::gpu_devices(&*gpus).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "GPU device nodes unusable: GPUs are not isolated by the device cgroup");
                vec![]
            });
            let cg = CgroupConfig {
                parent: a.cgroup_parent.clone().unwrap_or_else(|| format!("chorus/{name}")),
                max_pids: a.max_pids,
                gpus,
                v2_root: None,
            };
            match cgroup::probe(&cg) {
                Ok(kind) => {
                    tracing::info!(%kind, parent = %cg.parent, max_pids = cg.max_pids, "jobs run in cgroups");
                    Some(cg)
                }
                Err(e) if mode == Cgroups::Auto => {
                    tracing::warn!(error = %e, "jobs run WITHOUT cgroup containment (--cgroups on makes this fatal)");
                    None
                }
                Err(e) => anyhow::bail!("--cgroups on: {e}"),
            }
        }
    };
    let stepd = match a.stepd {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("stepd"),
    };
    anyhow::ensure!(stepd.is_file(), "{}: no such program (see --stepd)", stepd.display());
    let namespaces = match a.namespaces {
        Cgroups::Off => false,
        mode => match crate::stepd::probe(&stepd, &a.state_dir, &name) {
            Ok(()) => {
                tracing::info!("jobs run in their own mount, IPC, UTS, PID and network namespaces");
                true
            }
            Err(e) if mode == Cgroups::Auto => {
                tracing::warn!(error = %e, "jobs run WITHOUT namespaces (--namespaces on makes this fatal)");
                false
            }
            Err(e) => anyhow::bail!("--namespaces on: {e}"),
        },
    };
    let oci_runtime = a.oci_runtime.or_else(|| on_path("crun"));
    match &oci_runtime {
        Some(r) => {
            tracing::info!(runtime = %r.display(), "--container jobs run through this OCI runtime")
        }
        None => tracing::warn!("no OCI runtime (crun): --container jobs will fail to launch"),
    }
    let health = HealthConfig {
        node_name: name.clone(),
        program: a.health_check_program,
        interval: Duration::from_secs(a.health_check_interval),
        timeout: Duration::from_secs(a.health_check_timeout.max(1)),
        min_free_mb: a.health_min_free_mb,
        state_dir: a.state_dir.clone(),
        cgroups: cgroups.clone(),
    };
    let cgroup_parent = cgroups.clone();
    let key = crate::identity::load_or_create(&a.state_dir).map_err(anyhow::Error::msg)?;
    let ca_pem = chorus_proto::tls::read_public(&a.ca)
        .map_err(|e| anyhow::anyhow!("the cluster CA's certificate (--ca): {e}"))?;
    let token = match (&a.join_token, &a.join_token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(f)) => Some(chorus_proto::tls::read_private(f)?),
        (None, None) => None,
    };
    let join = crate::join::JoinConfig {
        name: name.clone(),
        state_dir: a.state_dir.clone(),
        seed: key,
        ca_pem: ca_pem.clone(),
        controllers: controllers.clone(),
        token,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let cert = rt.block_on(crate::join::certificate(&join, now))?;
    let key_pem = chorus_proto::tls::ed25519_key_pem(&key)?;
    let tls = chorus_proto::tls::client_tls(&ca_pem, Some((&cert, &key_pem)));
    let cfg = AgentConfig {
        runner: RunnerConfig {
            cgroups,
            namespaces,
            users: JobUsers::new(a.job_user, a.job_uids),
            oci_runtime,
            gpu_accounting,
            ..RunnerConfig::new(name.clone(), a.state_dir, stepd)
        },
        health,
        key,
        tls,
        name,
        controllers,
        cpus: a.node_cpus.unwrap_or_else(inventory::os_cpus),
        mem_mb: a.node_mem.unwrap_or_else(inventory::os_mem_mb),
        gpus,
        heartbeat: Duration::from_secs(a.heartbeat.max(1)),
        conduct,
    };
    rt.block_on(run(cfg, async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    }));
    // The node's parent group goes with it once its jobs have (a restart makes it again).
    if let Some(cg) = cgroup_parent {
        cgroup::remove_empty(&cg);
    }
    Ok(())
}

/// `name` in a directory of `PATH`, as a shell finds it.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}
