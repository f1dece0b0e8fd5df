//! `ctld`: the Chorus controller daemon.

use std::path::PathBuf;
use std::time::Duration;

use chorus_core::state::{ClusterConfig, Network, Partition};
use chorus_core::trust::ReplicationSpec;
use chorus_core::verify::VerifySpec;
use chorus_ctld::server::{CtldConfig, Founding, Listeners, serve};
use chorus_ctld::storage::Member;
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
    /// Address for the peer API (raft messages between controllers).
    #[arg(long, default_value = "127.0.0.1:6820")]
    peer_listen: String,
    /// This controller's id in its group (1, 2, 3, ...), unique and never reused.
    #[arg(long, default_value_t = 1)]
    id: u64,
    /// The founding members of a new group, the same list on each:
    /// `ID=CLIENT_ADDR/PEER_ADDR,...` (e.g. `1=10.0.0.1:6817/10.0.0.1:6820,2=...`).
    /// Ignored once the state directory holds a log. Without it (and without --join) a
    /// new controller founds a group of its own.
    #[arg(long, value_parser = parse_members, conflicts_with = "join")]
    initial_controllers: Option<MemberList>,
    /// Start empty and wait to be added to an existing group (`chorus controller add`).
    #[arg(long)]
    join: bool,
    /// Raft tick in milliseconds: a leader silent for 10–20 ticks is replaced.
    #[arg(long, default_value_t = 100)]
    tick_ms: u64,
    #[arg(long, default_value = "chorus")]
    cluster_name: String,
    /// Name of the default partition.
    #[arg(long, default_value = "debug")]
    partition: String,
    /// Partition's maximum time limit in minutes (omit for UNLIMITED).
    #[arg(long)]
    max_time: Option<u32>,
    /// The network the partition's jobs see: `host`, `loopback` (a loopback interface of
    /// their own) or `none` (no interface). The last two need nodes running jobs in
    /// namespaces; other nodes refuse such jobs.
    #[arg(long, default_value_t = Network::Host)]
    network: Network,
    /// Stake a node needs bonded (`chorus node register --stake`) to be given work; 0: none.
    #[arg(long, default_value_t = 0)]
    min_stake: u64,
    /// Seconds unbonded stake stays slashable before it returns to its operator.
    #[arg(long, default_value_t = 7 * 86_400)]
    unbond_delay: u64,
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
    /// How many times the partition runs each job, on nodes of distinct operators:
    /// `fixed:N` or `adaptive[:N,TRUSTED_AFTER,SPOT]` (docs/trust-model.md). `fixed:1` runs
    /// each job once, as Slurm does; `sbatch --replicas` overrides it per job.
    #[arg(long, default_value = "fixed:1")]
    replication: ReplicationSpec,
    /// How the partition compares replicas' results: `exact` or `tolerance:REL[,ABS]`.
    #[arg(long, default_value = "exact")]
    verify: VerifySpec,
    /// The most replicas one job may run, disputes included.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=64))]
    max_replicas: u32,
    /// Credits per CPU-hour of verified work: paid to the nodes that agree, charged to the
    /// user (whose account must then hold credits to submit). 0: free.
    #[arg(long, default_value_t = 0)]
    price_cpu_hour: u64,
    /// Credits per GPU-hour of verified work, on top.
    #[arg(long, default_value_t = 0)]
    price_gpu_hour: u64,
    /// Share of its stake a node loses when it disagrees with a verified result (0 to 1).
    #[arg(long, default_value = "0.1", value_parser = parse_share)]
    slash: u32,
    /// The secret of adaptive replication's coin (default: random for each controller
    /// process; set it only to replay a run).
    #[arg(long)]
    trust_seed: Option<u64>,
    /// The cluster CA's directory (`ca.crt`, `ca.key`; `chorus ca init DIR` makes one). Every
    /// controller of a group has the same. Default: STATE_DIR/ca.
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    /// Another name or address clients reach this controller by, for its certificate (which
    /// names its listening addresses, localhost and its host name already). Repeatable.
    #[arg(long = "tls-san", value_name = "HOST")]
    tls_sans: Vec<String>,
}

/// A share from 0 to 1 in millionths (`0.1` → 100 000).
fn parse_share(s: &str) -> Result<u32, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok((v * 1_000_000.0).round() as u32),
        _ => Err(format!("`{s}` is not a share from 0 to 1")),
    }
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
    let founding = match (a.initial_controllers, a.join) {
        (Some(MemberList(members)), _) => Founding::Founders(members),
        (None, true) => Founding::Join,
        (None, false) => Founding::Alone,
    };
    let cfg = CtldConfig {
        id: a.id,
        founding,
        tick: Duration::from_millis(a.tick_ms.max(10)),
        trust_seed: a.trust_seed,
        ca_dir: a.ca_dir.unwrap_or_else(|| a.state_dir.join("ca")),
        tls_hosts: a.tls_sans,
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
                network: a.network,
                replication: a.replication,
                verify: a.verify,
                max_replicas: a.max_replicas,
                price_cpu_hour: a.price_cpu_hour,
                price_gpu_hour: a.price_gpu_hour,
            }],
            def_mem_per_cpu: a.def_mem_per_cpu,
            kill_wait_secs: a.kill_wait,
            min_stake: a.min_stake,
            unbond_delay_secs: a.unbond_delay,
            slash_ppm: a.slash,
            ..ClusterConfig::default()
        },
        scheduler: a.scheduler,
        node_timeout: Duration::from_secs(a.node_timeout),
        snapshot_every: a.snapshot_every,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let bind = |addr: String| async move {
            tokio::net::TcpListener::bind(&addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
        };
        let listeners =
            Listeners { client: bind(a.listen).await?, peer: bind(a.peer_listen).await? };
        serve(cfg, listeners, shutdown_signal()).await
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

/// The founding members, as one flag value.
#[derive(Debug, Clone)]
struct MemberList(Vec<Member>);

/// `1=HOST:PORT/HOST:PORT,2=...`: each controller's id, client address and peer address.
fn parse_members(s: &str) -> Result<MemberList, String> {
    let mut out: Vec<Member> = vec![];
    for item in s.split(',').filter(|i| !i.is_empty()) {
        let bad = || format!("`{item}`: expected ID=CLIENT_ADDR/PEER_ADDR");
        let (id, addrs) = item.split_once('=').ok_or_else(bad)?;
        let (client_addr, peer_addr) = addrs.split_once('/').ok_or_else(bad)?;
        let id: u64 = id.trim().parse().map_err(|_| bad())?;
        if id == 0 || out.iter().any(|m| m.id == id) {
            return Err(format!("`{item}`: ids must be distinct and above 0"));
        }
        out.push(Member { id, client_addr: client_addr.into(), peer_addr: peer_addr.into() });
    }
    if out.is_empty() {
        return Err("no controllers given".into());
    }
    Ok(MemberList(out))
}
