//! `chorus`: the operator's command. `chorus up` starts a local cluster; `chorus output`
//! brings a finished job's output files into place.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chorus_cli::{ClientConf, Ctl, print, run_main};
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
}

#[derive(Debug, Clone, clap::Args)]
struct UpArgs {
    /// Where the cluster keeps its state, logs and client configuration.
    #[arg(long, default_value = ".chorus")]
    dir: PathBuf,
    /// Number of node agents.
    #[arg(long, default_value_t = 2)]
    nodes: u32,
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
    #[arg(long, default_value = "chorus")]
    cluster_name: String,
    /// Seconds between SIGTERM and SIGKILL when a job is stopped (Slurm's KillWait).
    #[arg(long, default_value_t = 30)]
    kill_wait: u32,
    /// Seconds without a heartbeat before a node is marked DOWN.
    #[arg(long, default_value_t = 60)]
    node_timeout: u64,
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
    }
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
}

fn spawn(name: &str, bin: &Path, args: &[String], log: &Path) -> anyhow::Result<Daemon> {
    let log_file = std::fs::File::create(log)?;
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
    Ok(Daemon { name: name.to_owned(), child })
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

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn up(a: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(a.dir.join("log"))?;
    let dir = std::fs::canonicalize(&a.dir)?;
    let port = if a.port == 0 { free_port()? } else { a.port };
    let addr = format!("127.0.0.1:{port}");
    let mut daemons = vec![spawn(
        "ctld",
        &sibling("ctld")?,
        &[
            "--state-dir".into(),
            dir.join("ctld").display().to_string(),
            "--listen".into(),
            addr.clone(),
            "--cluster-name".into(),
            a.cluster_name.clone(),
            "--kill-wait".into(),
            a.kill_wait.to_string(),
            "--node-timeout".into(),
            a.node_timeout.to_string(),
        ],
        &dir.join("log/ctld.log"),
    )?];
    let noded = sibling("noded")?;
    for i in 1..=a.nodes {
        let name = format!("node{i}");
        let mut args = vec![
            "--name".into(),
            name.clone(),
            "--controller".into(),
            addr.clone(),
            "--state-dir".into(),
            dir.join("noded").join(&name).display().to_string(),
        ];
        for (flag, v) in [
            ("--node-cpus", a.node_cpus.map(|v| v.to_string())),
            ("--node-mem", a.node_mem.map(|v| v.to_string())),
            ("--node-gpus", a.node_gpus.map(|v| v.to_string())),
        ] {
            if let Some(v) = v {
                args.extend([flag.to_owned(), v]);
            }
        }
        daemons.push(spawn(&name, &noded, &args, &dir.join(format!("log/{name}.log")))?);
    }
    let conf_path = dir.join("chorus.toml");
    let conf = ClientConf { cluster_name: a.cluster_name.clone(), controllers: vec![addr.clone()] };
    std::fs::write(&conf_path, toml::to_string(&conf)?)?;

    let result = serve_until_stopped(&a, &conf_path, &mut daemons);
    stop_all(&mut daemons);
    result
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
        let ready = rt.block_on(async {
            let mut ctl = Ctl::connect().await.ok()?;
            let (nodes, _) = ctl.nodes().await.ok()?;
            Some(nodes.iter().filter(|n| n.accepts_work()).count() as u32 >= a.nodes)
        });
        if ready == Some(true) {
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
    println!("Chorus cluster up: 1 controller, {} node(s); state in {}", a.nodes, a.dir.display());
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
                anyhow::bail!(
                    "{} exited ({status}); stopping the cluster. See {}",
                    d.name,
                    a.dir.join(format!("log/{}.log", d.name)).display()
                );
            }
        }
    }
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
