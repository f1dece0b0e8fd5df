//! `ctld`: the Chorus controller daemon.

use std::path::PathBuf;
use std::time::Duration;

use chorus_core::state::{ClusterConfig, Partition};
use chorus_ctld::server::{CtldConfig, serve};
use clap::Parser;

/// The Chorus controller: accepts jobs, replicates them with Raft, schedules them on nodes.
#[derive(Debug, Parser)]
#[command(name = "ctld", version)]
struct Args {
    /// Where the Raft log, snapshots and job outputs live.
    #[arg(long, default_value = "/var/lib/chorus/ctld")]
    state_dir: PathBuf,
    /// Address for the client and node APIs.
    #[arg(long, default_value = "127.0.0.1:6817")]
    listen: String,
    #[arg(long, default_value = "chorus")]
    cluster_name: String,
    /// Name of the default partition.
    #[arg(long, default_value = "debug")]
    partition: String,
    /// Partition's maximum time limit in minutes (omit for UNLIMITED).
    #[arg(long)]
    max_time: Option<u32>,
    /// MB of memory per CPU for jobs that ask for none (Slurm's DefMemPerCPU).
    #[arg(long, default_value_t = 256)]
    def_mem_per_cpu: u64,
    /// Seconds between SIGTERM and SIGKILL when a job is stopped (Slurm's KillWait).
    #[arg(long, default_value_t = 30)]
    kill_wait: u32,
    /// Seconds without a heartbeat before a node is marked DOWN (Slurm's SlurmdTimeout).
    #[arg(long, default_value_t = 60)]
    node_timeout: u64,
    #[arg(long, default_value = "sched/fifo")]
    scheduler: String,
    /// Take a snapshot and compact the log every this many entries.
    #[arg(long, default_value_t = 20_000)]
    snapshot_every: u64,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CHORUS_LOG")
                .unwrap_or_else(|_| "info,raft=warn,slog=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    let cfg = CtldConfig {
        state_dir: a.state_dir,
        cluster: ClusterConfig {
            cluster_name: a.cluster_name,
            partitions: vec![Partition {
                name: a.partition,
                nodes: None,
                default: true,
                max_time_min: a.max_time,
                default_time_min: None,
                up: true,
            }],
            def_mem_per_cpu: a.def_mem_per_cpu,
            kill_wait_secs: a.kill_wait,
            ..ClusterConfig::default()
        },
        scheduler: a.scheduler,
        node_timeout: Duration::from_secs(a.node_timeout),
        snapshot_every: a.snapshot_every,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&a.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", a.listen))?;
        serve(cfg, listener, shutdown_signal()).await
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}
