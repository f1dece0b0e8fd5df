//! `chorus`: the operator's command. `chorus up` starts a local cluster; `chorus output`
//! brings a finished job's output files into place; `chorus controller` grows or shrinks the
//! controller group; `chorus ca`, `chorus user`, `chorus operator token` and `chorus token`
//! make and revoke credentials.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chorus_cli::{ClientConf, Ctl, print, rpc, run_main};
use chorus_core::node::NodeState;
use chorus_proto::client as pb;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "chorus",
    version,
    about = "Chorus: a Slurm-compatible scheduler over untrusted nodes"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start a local cluster in the foreground (one controller, node agents on loopback).
    Up(UpArgs),
    /// Write a finished job's output files where Slurm would have put them.
    Output {
        /// Job id, or array job id for every task.
        job: String,
    },
    /// Show, add or remove the controllers of the group.
    Controller {
        #[command(subcommand)]
        action: ControllerCmd,
    },
    /// Operators' accounts: credits to bond as stake, earnings, slashes.
    Operator {
        #[command(subcommand)]
        action: OperatorCmd,
    },
    /// Nodes' stake: bond it, unbond it, see who may be given work.
    Node {
        #[command(subcommand)]
        action: NodeCmd,
    },
    /// The cluster's certificate authority.
    Ca {
        #[command(subcommand)]
        action: CaCmd,
    },
    /// Users' credentials (certificates and tokens, an administrator's commands) and
    /// credits, which pay for their jobs' verified work.
    User {
        #[command(subcommand)]
        action: UserCmd,
    },
    /// Tokens already issued.
    Token {
        #[command(subcommand)]
        action: TokenCmd,
    },
    /// Who the controller takes this client's credential for.
    Whoami,
}

#[derive(Debug, Subcommand)]
enum CaCmd {
    /// Make a cluster CA in DIR (ca.crt, and ca.key readable by its owner only). Give every
    /// controller of the group the same (ctld --ca-dir DIR).
    Init {
        dir: PathBuf,
        #[arg(long, default_value = "chorus")]
        cluster_name: String,
    },
}

/// Who a user credential is for.
#[derive(Debug, Clone, clap::Args)]
struct WhoArgs {
    /// The user's name (what jobs are recorded under).
    name: String,
    /// The uid jobs run as.
    #[arg(long)]
    uid: u32,
    /// The gid jobs run as (default: the uid).
    #[arg(long)]
    gid: Option<u32>,
    /// An administrator: every job, node, account and credential.
    #[arg(long, conflicts_with = "operator")]
    admin: bool,
    /// Acts for this operator: its nodes (drain, resume) and stake (bond, unbond).
    #[arg(long)]
    operator: Option<String>,
}

impl WhoArgs {
    fn user(&self) -> chorus_core::identity::User {
        chorus_cli::credentials::user(
            &self.name,
            self.uid,
            self.gid,
            self.admin,
            self.operator.clone(),
        )
    }
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    /// Issue a client certificate: writes DIR/NAME.crt, DIR/NAME.key (made here, 0600) and
    /// DIR/ca.crt, and prints the client configuration lines that use them.
    Cert {
        #[command(flatten)]
        who: WhoArgs,
        /// Where the files go.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = chorus_proto::tls::LEAF_DAYS)]
        days: u64,
        /// Sign with the CA's files in this directory instead of asking a controller.
        #[arg(long)]
        ca_dir: Option<PathBuf>,
    },
    /// Issue a token (printed once: the controllers keep only its hash); put it in a file
    /// named by `token_file` in the client configuration.
    Token {
        #[command(flatten)]
        who: WhoArgs,
        /// How long it is accepted: N[smhd]; 0: until revoked.
        #[arg(long, default_value = "30d", value_parser = chorus_cli::credentials::parse_ttl)]
        ttl: u64,
    },
    /// Credit a user's account, opening it (an administrator's command).
    Credit { user: String, amount: u64 },
    /// A user's balance, what it spent and what it owes.
    Balance { user: String },
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Revoke a token by its id (as printed when it was issued).
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
enum OperatorCmd {
    /// Credit an operator's account, opening it (an administrator's command).
    Deposit { operator: String, amount: u64 },
    /// An operator's balance, its nodes' stake and its latest history.
    Balance { operator: String },
    /// Issue a join token for the operator's nodes (`noded --join-token-file`); printed once.
    Token {
        operator: String,
        /// How long it is accepted: N[smhd]; 0: until revoked.
        #[arg(long, default_value = "24h", value_parser = chorus_cli::credentials::parse_ttl)]
        ttl: u64,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCmd {
    /// Bond stake from an operator's balance to one of its nodes.
    Register {
        node: String,
        #[arg(long)]
        operator: String,
        /// Credits to bond.
        #[arg(long)]
        stake: u64,
    },
    /// Start returning stake to the operator; it stays slashable for the unbonding delay.
    Unbond {
        node: String,
        #[arg(long)]
        operator: String,
        #[arg(long)]
        amount: u64,
    },
    /// Each node's operator, stake and record, and whether it may be given work.
    Status { node: Option<String> },
}

#[derive(Debug, Subcommand)]
enum ControllerCmd {
    /// One line per controller: id, role, addresses, how far its log is known to match.
    List,
    /// Add a controller started with `ctld --join --id N`, by its peer address.
    Add {
        /// `host:port` of the new controller's peer API (its `--peer-listen`).
        peer_addr: String,
    },
    /// Remove a controller from the group, by id.
    Remove { id: u64 },
}

#[derive(Debug, Clone, clap::Args)]
struct UpArgs {
    /// Where the cluster keeps its state, logs and client configuration.
    #[arg(long, default_value = ".chorus")]
    dir: PathBuf,
    /// Number of node agents, each under an operator of its own (`op1`, `op2`, ...): enough
    /// by default for `sbatch --replicas=2` with one to spare for a dispute.
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Credits each local operator deposits and bonds to its node (at least --min-stake);
    /// 0: nodes are left unbonded, to be bonded by hand (`chorus node register`).
    #[arg(long, default_value_t = 1000)]
    node_stake: u64,
    /// The partition's replication policy (ctld's --replication): `fixed:N` or
    /// `adaptive[:N,TRUSTED_AFTER,SPOT]`; `fixed:1` runs each job once, as Slurm does.
    #[arg(long, default_value = "fixed:1")]
    replication: String,
    /// Number of controllers (1, or 3 or 5 for a replicated group).
    #[arg(long, default_value_t = 1)]
    controllers: u32,
    /// Controller port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// CPUs each node declares (default: what the OS reports).
    #[arg(long)]
    node_cpus: Option<u32>,
    /// Memory (MB) each node declares (default: what the OS reports).
    #[arg(long)]
    node_mem: Option<u64>,
    /// Stand-in GPUs each node declares.
    #[arg(long)]
    node_gpus: Option<u32>,
    /// What every stand-in GPU reports when sampled for accounting: `UTIL:MEM`, percent and
    /// MiB (noded's flag of the same name).
    #[arg(long)]
    node_gpu_fake_usage: Option<String>,
    /// Seconds between samples of a job's GPUs (noded's flag of the same name).
    #[arg(long)]
    gpu_sample_every: Option<u64>,
    #[arg(long, default_value = "chorus")]
    cluster_name: String,
    /// Seconds between SIGTERM and SIGKILL when a job is stopped (Slurm's KillWait).
    #[arg(long, default_value_t = 30)]
    kill_wait: u32,
    /// Seconds without a heartbeat before a node is marked DOWN.
    #[arg(long, default_value_t = 60)]
    node_timeout: u64,
    /// Stake a node needs bonded to be given work (ctld's flag of the same name); 0: none.
    #[arg(long, default_value_t = 0)]
    min_stake: u64,
    /// Controllers snapshot their state and compact their log every this many entries.
    #[arg(long, default_value_t = 20_000)]
    snapshot_every: u64,
    /// An argument passed on to every node agent, e.g.
    /// `--noded-arg=--health-check-program=/etc/chorus/hc.sh` (repeat for several).
    #[arg(long = "noded-arg", value_name = "ARG", allow_hyphen_values = true)]
    noded_args: Vec<String>,
    /// An argument passed on to every controller, e.g. `--ctld-arg=--price-cpu-hour=3600`.
    #[arg(long = "ctld-arg", value_name = "ARG", allow_hyphen_values = true)]
    ctld_args: Vec<String>,
}

fn main() {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Up(a) => std::process::exit(match up(a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("chorus: error: {e:#}");
                1
            }
        }),
        Cmd::Output { job } => run_main("chorus", output(job)),
        Cmd::Controller { action } => run_main("chorus", controller(action)),
        Cmd::Operator { action } => run_main("chorus", operator(action)),
        Cmd::Node { action } => run_main("chorus", node(action)),
        Cmd::Ca { action } => run_main("chorus", ca(action)),
        Cmd::User { action } => run_main("chorus", user(action)),
        Cmd::Token { action } => run_main("chorus", token(action)),
        Cmd::Whoami => run_main("chorus", whoami()),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn ca(action: CaCmd) -> anyhow::Result<i32> {
    let CaCmd::Init { dir, cluster_name } = action;
    if dir.join(chorus_proto::tls::CA_KEY).exists() {
        anyhow::bail!("{} holds a CA already", dir.display());
    }
    chorus_proto::tls::Ca::create(&cluster_name, now())?.save(&dir)?;
    print(&format!(
        "CA written to {}: give ca.crt to every node and client, and ca.key to controllers only\n",
        dir.display()
    ))?;
    Ok(0)
}

async fn user(action: UserCmd) -> anyhow::Result<i32> {
    use chorus_cli::credentials;
    match action {
        UserCmd::Cert { who, out, days, ca_dir } => {
            let files = match ca_dir {
                Some(dir) => {
                    let ca = chorus_proto::tls::Ca::load(&dir)?;
                    credentials::cert_from_ca(&ca, &who.user(), days, &out, now())?
                }
                None => {
                    let mut ctl = Ctl::connect().await?;
                    credentials::cert_from_controller(&mut ctl, &who.user(), days, &out).await?
                }
            };
            print(&files.conf_lines())?;
        }
        UserCmd::Token { who, ttl } => {
            let mut ctl = Ctl::connect().await?;
            let (secret, r) = credentials::issue_token(&mut ctl, Err(&who.user()), ttl).await?;
            print(&format!("{secret}\n"))?;
            eprintln!("token {} for {}{}", r.id, who.user(), expiry(r.expires));
        }
        UserCmd::Credit { user, amount } => {
            let mut ctl = Ctl::connect().await?;
            let action = pb::stake_request::Action::CreditUser as i32;
            rpc!(ctl, stake, pb::StakeRequest { action, user, amount, ..Default::default() })?;
        }
        UserCmd::Balance { user } => {
            let mut ctl = Ctl::connect().await?;
            let (a, _) = accounts(&mut ctl).await?;
            match chorus_cli::format::accounts::user_balance(&a, &user) {
                Some(text) => print(&text)?,
                None => anyhow::bail!("user {user} has no account"),
            }
        }
    }
    Ok(0)
}

fn expiry(at: u64) -> String {
    if at == 0 {
        ", until revoked".into()
    } else {
        format!(", until {}", chorus_cli::format::timefmt::iso(at, chorus_cli::format::Tz::Local))
    }
}

async fn token(action: TokenCmd) -> anyhow::Result<i32> {
    let TokenCmd::Revoke { id } = action;
    let mut ctl = Ctl::connect().await?;
    rpc!(ctl, revoke_token, pb::RevokeTokenRequest { id })?;
    Ok(0)
}

async fn whoami() -> anyhow::Result<i32> {
    let mut ctl = Ctl::connect().await?;
    let r = rpc!(ctl, who_am_i, pb::WhoAmIRequest {})?;
    let user = chorus_core::identity::User::try_from(r.user.unwrap_or_default())?;
    print(&format!("{user}, by {}\n", r.credential))?;
    Ok(0)
}

async fn stake(
    ctl: &mut Ctl,
    action: pb::stake_request::Action,
    operator: String,
    node: String,
    amount: u64,
) -> anyhow::Result<()> {
    let req =
        pb::StakeRequest { action: action as i32, operator, node, amount, ..Default::default() };
    rpc!(ctl, stake, req)?;
    Ok(())
}

async fn accounts(ctl: &mut Ctl) -> anyhow::Result<(chorus_core::accounts::Accounts, u64)> {
    let r = rpc!(ctl, accounts, pb::AccountsRequest {})?;
    Ok((chorus_proto::decode_bincode(&r.accounts)?, r.min_stake))
}

async fn operator(action: OperatorCmd) -> anyhow::Result<i32> {
    use pb::stake_request::Action;
    let mut ctl = Ctl::connect().await?;
    match action {
        OperatorCmd::Deposit { operator, amount } => {
            stake(&mut ctl, Action::Deposit, operator, String::new(), amount).await?;
        }
        OperatorCmd::Balance { operator } => {
            let (a, _) = accounts(&mut ctl).await?;
            let tz = chorus_cli::format::Tz::Local;
            match chorus_cli::format::accounts::balance(&a, &operator, tz) {
                Some(text) => print(&text)?,
                None => anyhow::bail!("operator {operator} has no account"),
            }
        }
        OperatorCmd::Token { operator, ttl } => {
            let (secret, r) =
                chorus_cli::credentials::issue_token(&mut ctl, Ok(operator.clone()), ttl).await?;
            print(&format!("{secret}\n"))?;
            eprintln!("join token {} for operator {operator}'s nodes{}", r.id, expiry(r.expires));
        }
    }
    Ok(0)
}

async fn node(action: NodeCmd) -> anyhow::Result<i32> {
    use pb::stake_request::Action;
    let mut ctl = Ctl::connect().await?;
    match action {
        NodeCmd::Register { node, operator, stake: amount } => {
            stake(&mut ctl, Action::Bond, operator, node, amount).await?;
        }
        NodeCmd::Unbond { node, operator, amount } => {
            stake(&mut ctl, Action::Unbond, operator, node, amount).await?;
        }
        NodeCmd::Status { node } => {
            let (nodes, _) = ctl.nodes().await?;
            if let Some(n) = &node
                && !nodes.iter().any(|x| &x.name == n)
            {
                anyhow::bail!("Invalid node name specified");
            }
            let (a, min_stake) = accounts(&mut ctl).await?;
            print(&chorus_cli::format::accounts::node_status(
                &nodes,
                &a,
                min_stake,
                node.as_deref(),
            ))?;
        }
    }
    Ok(0)
}

async fn controller(action: ControllerCmd) -> anyhow::Result<i32> {
    let mut ctl = Ctl::connect().await?;
    let reply = match action {
        ControllerCmd::List => {
            let r = rpc!(ctl, controllers, pb::ControllersRequest {})?;
            // Only the leader knows how far each log matches: ask it when a follower answered.
            let leader = r.controllers.iter().find(|c| c.id == r.leader_id && c.id != r.self_id);
            match leader.map(|l| l.client_addr.clone()) {
                Some(addr) => {
                    let mut at_leader = Ctl::at(&[addr], ctl.conf.clone())?;
                    rpc!(at_leader, controllers, pb::ControllersRequest {}).unwrap_or(r)
                }
                None => r,
            }
        }
        ControllerCmd::Add { peer_addr } => rpc!(
            ctl,
            change_controllers,
            pb::ChangeControllersRequest { add_peer_addr: peer_addr, remove_id: 0 }
        )?,
        ControllerCmd::Remove { id } => rpc!(
            ctl,
            change_controllers,
            pb::ChangeControllersRequest { add_peer_addr: String::new(), remove_id: id }
        )?,
    };
    print(&chorus_cli::format::controllers(&reply))?;
    Ok(0)
}

async fn output(job: String) -> anyhow::Result<i32> {
    let pairs = chorus_cli::parse_job_ids(&job).map_err(anyhow::Error::msg)?;
    let mut ctl = Ctl::connect().await?;
    let ids: Vec<u32> = pairs.iter().map(|p| p.0).collect();
    let (jobs, _) = ctl.jobs(ids, true).await?;
    if jobs.is_empty() {
        anyhow::bail!("Invalid job id specified");
    }
    for id in chorus_cli::resolve_ids(&pairs, &jobs) {
        for path in ctl.fetch_outputs(id).await? {
            print(&format!("{path}\n"))?;
        }
    }
    Ok(0)
}

/// A child daemon that dies with us (PR_SET_PDEATHSIG) and is stopped with SIGTERM.
struct Daemon {
    name: String,
    child: Child,
    bin: PathBuf,
    args: Vec<String>,
}

impl Daemon {
    /// Starts the same daemon again, appending to its log.
    fn restart(&mut self, log: &Path) -> anyhow::Result<()> {
        let log_file = std::fs::OpenOptions::new().append(true).create(true).open(log)?;
        *self = start_child(&self.name, &self.bin, &self.args, log_file)?;
        Ok(())
    }
}

fn spawn(name: &str, bin: &Path, args: &[String], log: &Path) -> anyhow::Result<Daemon> {
    start_child(name, bin, args, std::fs::File::create(log)?)
}

fn start_child(
    name: &str,
    bin: &Path,
    args: &[String],
    log_file: std::fs::File,
) -> anyhow::Result<Daemon> {
    let mut cmd = Command::new(bin);
    cmd.args(args).stdin(Stdio::null()).stdout(log_file.try_clone()?).stderr(log_file);
    // SAFETY: prctl only sets this child's parent-death signal.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| anyhow::anyhow!("cannot start {}: {e}", bin.display()))?;
    Ok(Daemon { name: name.to_owned(), child, bin: bin.to_owned(), args: args.to_vec() })
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.with_file_name(name);
    if p.exists() {
        Ok(p)
    } else {
        anyhow::bail!("{} not found next to {} (build the workspace first)", name, exe.display())
    }
}

/// `(id, client address, peer address)` of each local controller. Chosen once and kept in
/// `DIR/controllers`: a group's members are in its log, so a restart must reuse them.
fn local_group(dir: &Path, count: u32, port: u16) -> anyhow::Result<Vec<(u64, String, String)>> {
    let path = dir.join("controllers");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let group: Vec<(u64, String, String)> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?.parse().ok()?, f.next()?.to_owned(), f.next()?.to_owned()))
            })
            .collect();
        if group.len() as u32 != count {
            anyhow::bail!(
                "{} was started with {} controller(s), not {count}: use the same --controllers, or another --dir",
                dir.display(),
                group.len()
            );
        }
        return Ok(group);
    }
    let ports = chorus_cli::free_ports(2 * count as usize)?;
    let mut group = vec![];
    for (id, pair) in (1..).zip(ports.chunks(2)) {
        let client = if id == 1 && port != 0 { port } else { pair[0] };
        group.push((id, format!("127.0.0.1:{client}"), format!("127.0.0.1:{}", pair[1])));
    }
    let text: String = group.iter().map(|(i, c, p)| format!("{i} {c} {p}\n")).collect();
    std::fs::write(&path, text)?;
    Ok(group)
}

fn up(a: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(a.dir.join("log"))?;
    let dir = std::fs::canonicalize(&a.dir)?;
    if ![1, 3, 5].contains(&a.controllers) {
        anyhow::bail!("--controllers must be 1, 3 or 5 (a group tolerates (N-1)/2 failures)");
    }
    // Ports are remembered in the state directory: a restarted cluster keeps its group.
    let group = local_group(&dir, a.controllers, a.port)?;
    let member_list = group
        .iter()
        .map(|(id, client, peer)| format!("{id}={client}/{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let client_addrs: Vec<String> = group.iter().map(|g| g.1.clone()).collect();
    // Everything speaks TLS: a CA of the cluster's own (made once, kept in DIR/ca), an
    // administrator's certificate for whoever runs this, and a configuration that uses it.
    let ca_dir = dir.join("ca");
    let conf_path = dir.join("chorus.toml");
    let conf = local_credentials(&dir, &ca_dir, &a.cluster_name, client_addrs.clone(), &conf_path)?;
    std::fs::write(&conf_path, toml::to_string(&conf)?)?;
    let mut daemons = vec![];
    for (id, client, peer) in &group {
        let name = if group.len() == 1 { "ctld".to_owned() } else { format!("ctld{id}") };
        let mut args = vec![
            "--id".into(),
            id.to_string(),
            "--state-dir".into(),
            dir.join(&name).display().to_string(),
            "--listen".into(),
            client.clone(),
            "--peer-listen".into(),
            peer.clone(),
            "--cluster-name".into(),
            a.cluster_name.clone(),
            "--kill-wait".into(),
            a.kill_wait.to_string(),
            "--node-timeout".into(),
            a.node_timeout.to_string(),
            "--snapshot-every".into(),
            a.snapshot_every.to_string(),
            "--min-stake".into(),
            a.min_stake.to_string(),
            "--replication".into(),
            a.replication.clone(),
            "--ca-dir".into(),
            ca_dir.display().to_string(),
        ];
        args.extend(a.ctld_args.iter().cloned());
        if group.len() > 1 {
            args.extend(["--initial-controllers".into(), member_list.clone()]);
        }
        let log = dir.join(format!("log/{name}.log"));
        daemons.push(spawn(&name, &sibling("ctld")?, &args, &log)?);
    }
    let noded = sibling("noded")?;
    // Clusters side by side on one machine (tests do this) have the same node names and job
    // ids: each keeps its job cgroups under a parent of its own, named after its directory.
    let cgroups = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        dir.canonicalize().unwrap_or_else(|_| dir.clone()).hash(&mut h);
        format!("chorus/up-{:08x}", h.finish() as u32)
    };
    // Each node joins under an operator of its own (`op<N>` for `node<N>`), with a join token
    // issued through the controller, as an operator's node would.
    let tokens = join_tokens(&conf, a.nodes, &dir, &mut daemons)?;
    for (i, token) in (1..=a.nodes).zip(tokens) {
        let name = format!("node{i}");
        let mut args = vec![
            "--ca".into(),
            ca_dir.join(chorus_proto::tls::CA_CERT).display().to_string(),
            "--join-token-file".into(),
            token.display().to_string(),
            "--name".into(),
            name.clone(),
            "--cgroup-parent".into(),
            format!("{cgroups}/{name}"),
            "--controllers".into(),
            client_addrs.join(","),
            "--state-dir".into(),
            dir.join("noded").join(&name).display().to_string(),
        ];
        for (flag, v) in [
            ("--node-cpus", a.node_cpus.map(|v| v.to_string())),
            ("--node-mem", a.node_mem.map(|v| v.to_string())),
            ("--node-gpus", a.node_gpus.map(|v| v.to_string())),
            ("--node-gpu-fake-usage", a.node_gpu_fake_usage.clone()),
            ("--gpu-sample-every", a.gpu_sample_every.map(|v| v.to_string())),
        ] {
            if let Some(v) = v {
                args.extend([flag.to_owned(), v]);
            }
        }
        args.extend(a.noded_args.iter().cloned());
        daemons.push(spawn(&name, &noded, &args, &dir.join(format!("log/{name}.log")))?);
    }
    let result = serve_until_stopped(&a, &conf_path, &mut daemons);
    stop_all(&mut daemons);
    result
}

/// The local cluster's CA (made if `ca_dir` has none), an administrator's certificate for
/// the user running `chorus up` (in DIR/admin), and the client configuration using both
/// (paths relative to DIR, where it is written).
fn local_credentials(
    dir: &Path,
    ca_dir: &Path,
    cluster: &str,
    controllers: Vec<String>,
    conf_path: &Path,
) -> anyhow::Result<ClientConf> {
    use chorus_core::identity::{Role, User};
    let ca = chorus_proto::tls::Ca::load_or_create(ca_dir, cluster, now())?;
    let (name, uid, gid) = chorus_cli::current_user();
    let admin = User { name, uid, gid, role: Role::Admin };
    let days = chorus_proto::tls::LEAF_DAYS;
    let files =
        chorus_cli::credentials::cert_from_ca(&ca, &admin, days, &dir.join("admin"), now())?;
    let rel = |p: &Path| p.strip_prefix(dir).map(Path::to_owned).unwrap_or_else(|_| p.to_owned());
    Ok(ClientConf {
        cluster_name: cluster.to_owned(),
        controllers,
        ca: Some(rel(&files.ca)),
        cert: Some(rel(&files.cert)),
        key: Some(rel(&files.key)),
        token_file: None,
        source: conf_path.to_owned(),
    })
}

/// One join token per local node, for operator `op<N>` (valid for an hour: a node keeps its
/// certificate once it joined), each in the node's state directory (0600). Waits for the
/// controllers to elect a leader, and fails if one of them dies meanwhile.
fn join_tokens(
    conf: &ClientConf,
    nodes: u32,
    dir: &Path,
    daemons: &mut [Daemon],
) -> anyhow::Result<Vec<PathBuf>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut ctl = Ctl::with_conf(conf.clone())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut files = vec![];
    for i in 1..=nodes {
        let path = dir.join("noded").join(format!("node{i}")).join("join-token");
        std::fs::create_dir_all(path.parent().expect("a file in a directory"))?;
        let operator = format!("op{i}");
        let secret = loop {
            if let Some(d) = daemons
                .iter_mut()
                .find_map(|d| d.child.try_wait().ok().flatten().map(|_| d.name.clone()))
            {
                let log = dir.join(format!("log/{d}.log"));
                anyhow::bail!("{d} exited during start-up; see {}", log.display());
            }
            let issued = rt.block_on(chorus_cli::credentials::issue_token(
                &mut ctl,
                Ok(operator.clone()),
                3600,
            ));
            match issued {
                Ok((secret, _)) => break secret,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "no join token yet");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => anyhow::bail!(
                    "cannot issue the nodes' join tokens: {}",
                    chorus_cli::status_message(&e)
                ),
            }
        };
        chorus_proto::tls::write_private(&path, &secret)?;
        files.push(path);
    }
    Ok(files)
}

fn serve_until_stopped(a: &UpArgs, conf_path: &Path, daemons: &mut [Daemon]) -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    // Block SIGINT/SIGTERM and poll for them, so children get a clean stop.
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block()?;

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // SAFETY: setting an environment variable before any other thread reads it.
    unsafe { std::env::set_var("CHORUS_CONF", conf_path) };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(d) = daemons
            .iter_mut()
            .find_map(|d| d.child.try_wait().ok().flatten().map(|_| d.name.clone()))
        {
            anyhow::bail!(
                "{d} exited during start-up; see {}",
                a.dir.join(format!("log/{d}.log")).display()
            );
        }
        // Registered counts, drained or not: a node whose health check fails registers drained.
        let ready = rt.block_on(async {
            let mut ctl = Ctl::connect().await.ok()?;
            let (nodes, _) = ctl.nodes().await.ok()?;
            Some(nodes.iter().filter(|n| n.state != NodeState::Down).count() as u32 >= a.nodes)
        });
        if ready == Some(true) && rt.block_on(bond_local_nodes(a)).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the cluster did not come up within 60 s; see the logs in {}",
                a.dir.join("log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let controllers = if a.controllers == 1 {
        "1 controller".to_owned()
    } else {
        format!("{} controllers (Raft group)", a.controllers)
    };
    println!("Chorus cluster up: {controllers}, {} node(s); state in {}", a.nodes, a.dir.display());
    println!("export CHORUS_CONF={}", conf_path.display());
    // Until SIGINT/SIGTERM, watch the daemons: one that dies stops the whole cluster loudly
    // rather than leaving a half-working one behind.
    loop {
        let timeout = libc::timespec { tv_sec: 0, tv_nsec: 250_000_000 };
        // SAFETY: `set` is an initialised sigset; sigtimedwait only reads it and the timeout.
        let sig = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &timeout) };
        if sig > 0 {
            eprintln!("chorus: signal {sig}: stopping the cluster");
            return Ok(());
        }
        for d in daemons.iter_mut() {
            if let Ok(Some(status)) = d.child.try_wait() {
                let log = a.dir.join(format!("log/{}.log", d.name));
                if a.controllers > 1 && d.name.starts_with("ctld") {
                    // A group rides out the loss of a minority: bring the controller back, as
                    // a service manager would, and let it catch up from its log and peers.
                    eprintln!(
                        "chorus: {} exited ({status}); restarting it. See {}",
                        d.name,
                        log.display()
                    );
                    std::thread::sleep(Duration::from_secs(1));
                    d.restart(&log)?;
                    continue;
                }
                anyhow::bail!(
                    "{} exited ({status}); stopping the cluster. See {}",
                    d.name,
                    log.display()
                );
            }
        }
    }
}

/// Puts each local node under an operator of its own (`op<N>` for `node<N>`), with stake
/// bonded, so that replicas of one job can go to distinct operators. A node bonded already
/// (a restarted cluster) is left as it is.
async fn bond_local_nodes(a: &UpArgs) -> anyhow::Result<()> {
    use pb::stake_request::Action;
    let mut ctl = Ctl::connect().await?;
    let (accounts, _) = accounts(&mut ctl).await?;
    if a.node_stake == 0 {
        return Ok(());
    }
    let amount = a.node_stake.max(a.min_stake);
    for i in 1..=a.nodes {
        let (node, operator) = (format!("node{i}"), format!("op{i}"));
        if accounts.node_operator.contains_key(&node) {
            continue;
        }
        stake(&mut ctl, Action::Deposit, operator.clone(), String::new(), amount).await?;
        stake(&mut ctl, Action::Bond, operator, node, amount).await?;
    }
    Ok(())
}

fn stop_all(daemons: &mut [Daemon]) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    // Node agents first, then the controller.
    for d in daemons.iter().rev() {
        let _ = kill(Pid::from_raw(d.child.id() as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for d in daemons.iter_mut() {
        while d.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = d.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = d.child.wait();
    }
}
