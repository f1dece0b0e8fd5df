//! Runs one batch script: stages it, starts it in its own process group with Slurm's
//! environment, enforces the time limit and stop requests (SIGTERM, KillWait, SIGKILL), and
//! collects the exit status, resource use and output files.
//!
//! ```text
//!   stage script (0700, owned by the job's user)
//!   open stdout/stderr (truncate|append) in the working directory, or in a staging directory
//!   when that directory does not exist on this node (outputs then travel back via ctld)
//!   job cgroup (cgroup.rs): CPU quota, memory + swap, pids.max, GPU devices
//!   the job's user (users.rs): never root
//!   stepd (stepd.rs; setsid: pgid = pid), held on a pipe until it is in the cgroup, then
//!       namespaces (isolation.rs): mount, IPC, UTS, PID, network as the partition says
//!       exec script args as the job's user; a launch error comes back on a second pipe
//!   wait4 on a blocking thread ──┬── deadline  → "*** ... DUE TO TIME LIMIT ***", TERM, KILL
//!                                ├── stop      → "*** ... CANCELLED AT ... ***", TERM, KILL
//!                                └── GPU tick  → sample the job's GPUs (gpuacct.rs)
//!   end: usage and OOM kills from the cgroup (OUT_OF_MEMORY, Slurm's message), leftovers
//!        killed, cgroup removed
//! ```

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use chorus_core::fsm::EndCause;
use chorus_core::job::{ExitStatus, Usage};
use chorus_core::launch::LaunchSpec;
use chorus_core::state::Network;

use crate::cgroup::{CgroupConfig, JobCgroup};
use crate::gpuacct::{GpuAccounting, GpuTally};
use crate::oci;
use crate::stepd::{self, StepPlan};
use crate::users::{JobUser, JobUsers};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;
use tracing::{info, warn};

/// Settings shared by every job on this node.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub node_name: String,
    pub state_dir: PathBuf,
    /// Output files larger than this travel back truncated (the node's copy stays whole).
    pub max_output_bytes: u64,
    /// Each job in a cgroup of its own; `None` where cgroups are unusable or turned off.
    pub cgroups: Option<CgroupConfig>,
    /// Each job in its own mount, IPC, UTS, PID and network namespaces (isolation.rs).
    pub namespaces: bool,
    /// The `stepd` program (stepd.rs).
    pub stepd: PathBuf,
    /// Who jobs run as, when noded is root (users.rs).
    pub users: JobUsers,
    /// The OCI runtime for `--container` jobs (crun); `None`: such jobs fail to launch.
    pub oci_runtime: Option<PathBuf>,
    /// Sample the GPUs of jobs that have some (gpuacct.rs); `None`: GPU use is not recorded.
    pub gpu_accounting: Option<GpuAccounting>,
}

impl RunnerConfig {
    /// No cgroups, no namespaces, users as `--job-user auto`, 16 MB of output sent back, no
    /// GPU accounting.
    pub fn new(
        node_name: impl Into<String>,
        state_dir: impl Into<PathBuf>,
        stepd: PathBuf,
    ) -> Self {
        Self {
            node_name: node_name.into(),
            state_dir: state_dir.into(),
            max_output_bytes: 16 << 20,
            cgroups: None,
            namespaces: false,
            stepd,
            users: JobUsers::default(),
            oci_runtime: None,
            gpu_accounting: None,
        }
    }
}

/// One output file as it goes back to the controller.
#[derive(Debug, Clone)]
pub struct Output {
    pub path: String,
    pub data: Vec<u8>,
    pub append: bool,
}

#[derive(Debug, Clone)]
pub struct Finished {
    pub job_id: u32,
    pub attempt: u32,
    pub replica: u32,
    pub exit: ExitStatus,
    pub cause: EndCause,
    pub usage: Usage,
    pub outputs: Vec<Output>,
}

/// A running job's handle for signals.
#[derive(Debug, Clone, Default)]
pub struct ProcessGroup(Arc<AtomicI32>);

impl ProcessGroup {
    /// Sends `sig` to every process of the job. False when it has not started or is gone.
    pub fn signal(&self, sig: Signal) -> bool {
        let pgid = self.0.load(Ordering::Relaxed);
        pgid > 0 && killpg(Pid::from_raw(pgid), sig).is_ok()
    }
}

/// Where a job's files are, on this node, and where they belong on the submit side.
struct Paths {
    dir: PathBuf,
    work_dir: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
    staged: bool,
}

fn paths(cfg: &RunnerConfig, l: &LaunchSpec) -> Paths {
    let dir = cfg.state_dir.join("jobs").join(format!("{}.{}", l.job_id, l.attempt));
    // A replica runs sandboxed even where the submitter's directory is visible: it must not
    // write a result no one has verified yet, nor overwrite another replica's.
    if !l.sandboxed && Path::new(&l.work_dir).is_dir() {
        return Paths {
            dir,
            work_dir: l.work_dir.clone().into(),
            stdout: l.stdout_path.clone().into(),
            stderr: l.stderr_path.clone().into(),
            staged: false,
        };
    }
    // Not a shared filesystem: run in a staging directory; outputs travel back via ctld.
    let work = dir.join("work");
    let local = |p: &str| work.join(Path::new(p).file_name().unwrap_or_default());
    Paths {
        stdout: local(&l.stdout_path),
        stderr: local(&l.stderr_path),
        work_dir: work.clone(),
        dir,
        staged: true,
    }
}

/// Opens (creating with `mode`) an output file, owned by the submitter `uid:gid`.
fn open_output(path: &Path, append: bool, uid: u32, gid: u32, mode: u32) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).write(true).mode(mode);
    if append {
        o.append(true)
    } else {
        o.truncate(true)
    };
    let f = o.open(path)?;
    if nix::unistd::geteuid().is_root() {
        let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
    }
    Ok(f)
}

/// Runs `l` to the end. `stop` turning true asks for a stop (scancel, requeue).
pub async fn run(
    cfg: Arc<RunnerConfig>,
    l: LaunchSpec,
    kill_wait: Duration,
    pg: ProcessGroup,
    mut stop: watch::Receiver<bool>,
) -> Finished {
    let p = paths(&cfg, &l);
    let mut fin = Finished {
        job_id: l.job_id,
        attempt: l.attempt,
        replica: l.replica,
        exit: ExitStatus { code: 1, signal: 0 },
        cause: EndCause::LaunchFailed,
        usage: Usage::default(),
        outputs: vec![],
    };
    let (child, cgroup, user) = match launch(&cfg, &l, &p).await {
        Ok(c) => c,
        Err(e) => {
            warn!(job = l.job_id, error = %e, "launch failed");
            let msg = format!(
                "slurmstepd-{}: error: couldn't start job {}: {e}\n",
                cfg.node_name, l.job_id
            );
            if let Ok(mut f) = open_output(&p.stderr, true, l.uid, l.gid, 0o600) {
                let _ = f.write_all(msg.as_bytes());
            }
            fin.outputs = collect_outputs(&cfg, &l, &p);
            let _ = std::fs::remove_dir_all(p.dir.join("tmp"));
            return fin;
        }
    };
    let pid = child.id() as i32;
    pg.0.store(pid, Ordering::Relaxed);
    info!(job = l.job_id, pid, "started");
    let mut waiter = tokio::task::spawn_blocking(move || wait4(pid));

    let deadline = l.time_limit_secs.map(|s| {
        let elapsed = wall_clock().saturating_sub(l.start_time);
        tokio::time::Instant::now() + Duration::from_secs(s.saturating_sub(elapsed))
    });
    let mut cause = EndCause::Exited;
    let mut gpu_ticks = cfg.gpu_accounting.as_ref().filter(|_| !l.gpus.is_empty()).map(|a| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + a.every, a.every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        (t, a)
    });
    let mut gpu_tally = GpuTally::default();
    let status = loop {
        tokio::select! {
            r = &mut waiter => break r.unwrap_or((0, Default::default())),
            acct = gpu_tick(&mut gpu_ticks) => {
                let (inv, gpus) = (Arc::clone(&acct.inventory), l.gpus.clone());
                if let Ok(Some(s)) = tokio::task::spawn_blocking(move || inv.sample(&gpus)).await {
                    gpu_tally.add(&s);
                }
            }
            _ = sleep_until(deadline), if cause == EndCause::Exited => {
                cause = EndCause::TimeLimit;
                stepd_message(&p, &l, &cfg.node_name, " DUE TO TIME LIMIT");
                terminate(&pg, kill_wait);
            }
            r = stop.changed(), if cause == EndCause::Exited => {
                if r.is_err() || *stop.borrow() {
                    cause = EndCause::Stopped;
                    stepd_message(&p, &l, &cfg.node_name, "");
                    terminate(&pg, kill_wait);
                }
            }
        }
    };
    // Whatever the script left behind in its process group goes with it.
    pg.signal(Signal::SIGKILL);
    pg.0.store(0, Ordering::Relaxed);
    let (raw, usage) = status;
    fin.exit = decode_wait_status(raw);
    fin.cause = cause;
    fin.usage = Usage { gpu: gpu_tally.usage(), ..usage };
    if let Some(cg) = cgroup {
        let u = cg.usage();
        // The cgroup saw every process of the job, not only those the script waited for.
        fin.usage.max_rss_kb = fin.usage.max_rss_kb.max(u.max_rss_kb);
        fin.usage.user_cpu_ms = fin.usage.user_cpu_ms.max(u.user_cpu_ms);
        fin.usage.sys_cpu_ms = fin.usage.sys_cpu_ms.max(u.sys_cpu_ms);
        if u.oom_kills > 0 && cause == EndCause::Exited {
            // As Slurm: the job ends OUT_OF_MEMORY with ExitCode 0:125 and says so.
            fin.cause = EndCause::OutOfMemory;
            fin.exit = ExitStatus { code: 0, signal: 125 };
            oom_message(&p, &l, &cfg.node_name, u.oom_kills);
        }
        tokio::task::spawn_blocking(move || cg.finish()).await.ok();
    }
    if l.container.is_some() && nix::unistd::geteuid().is_root() {
        // crun hands the output files it inherits to the job's uid: give them back to the
        // submitter, as every other job's are.
        for f in [&p.stdout, &p.stderr] {
            let _ = std::os::unix::fs::chown(f, Some(l.uid), Some(l.gid));
        }
    }
    fin.outputs = collect_outputs(&cfg, &l, &p);
    info!(job = l.job_id, exit = %fin.exit, cause = ?fin.cause, "ended");
    let _ = std::fs::remove_file(p.dir.join("script"));
    for gone in ["tmp", "bundle", "crun", "rootfs", "rootfs.layers"] {
        let _ = std::fs::remove_dir_all(p.dir.join(gone));
    }
    // Every process of the job is gone: its uid may serve another job.
    drop(user);
    fin
}

/// Everything up to the script running: the job's user, its cgroup, stepd. The error says
/// why not, for the job's stderr.
async fn launch(
    cfg: &RunnerConfig,
    l: &LaunchSpec,
    p: &Paths,
) -> std::io::Result<(std::process::Child, Option<JobCgroup>, Option<JobUser>)> {
    let other = std::io::Error::other;
    if l.network != Network::Host && !cfg.namespaces {
        return Err(other(format!(
            "the partition's network is `{}`, which needs namespaces; this node runs jobs without them",
            l.network
        )));
    }
    let user = match nix::unistd::geteuid().is_root() {
        true => Some(cfg.users.for_job(l.uid, l.gid).map_err(other)?),
        false => None,
    };
    let cgroup = match &cfg.cgroups {
        Some(cg) => Some(
            JobCgroup::create(cg, l.job_id, l.attempt, l.cpus, l.mem_mb, &l.gpus)
                .map_err(|e| other(e.to_string()))?,
        ),
        None => None,
    };
    let started = start(cfg, l, p, cgroup.as_ref(), user.as_ref());
    // stepd reports a failed launch on its report pipe; the pipe closes empty once the
    // script runs.
    let failed = match started {
        Ok((child, report)) => {
            let why = tokio::task::spawn_blocking(move || {
                let mut why = String::new();
                let _ = (&report).read_to_string(&mut why);
                why
            })
            .await
            .unwrap_or_default();
            if why.is_empty() {
                return Ok((child, cgroup, user));
            }
            let mut child = child;
            tokio::task::spawn_blocking(move || child.wait()).await.ok();
            other(why)
        }
        Err(e) => e,
    };
    if let Some(cg) = cgroup {
        tokio::task::spawn_blocking(move || cg.finish()).await.ok();
    }
    Err(failed)
}

/// Held while a script is written and while a child is spawned. A child forked while another
/// job's script is still open for writing inherits that descriptor until it execs, and an
/// exec of that script in the meantime fails with ETXTBSY ("Text file busy", exit 126).
/// `spawn` returns only once the child has exec'd, so with writes and spawns serialised no
/// child ever holds a script open for writing.
static SCRIPT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Spawns a child that is not a job's (the health check program) under [`SCRIPT_LOCK`], for
/// the same reason: it must not carry a script open for writing past its fork.
pub(crate) fn spawn_exclusive<T>(spawn: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    let _guard = SCRIPT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    spawn()
}

fn start(
    cfg: &RunnerConfig,
    l: &LaunchSpec,
    p: &Paths,
    cgroup: Option<&JobCgroup>,
    user: Option<&JobUser>,
) -> std::io::Result<(std::process::Child, File)> {
    std::fs::create_dir_all(&p.dir)?;
    std::fs::set_permissions(&p.dir, std::fs::Permissions::from_mode(0o700))?;
    if p.staged {
        std::fs::create_dir_all(&p.work_dir)?;
    }
    let script = p.dir.join("script");
    {
        let _guard = SCRIPT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::write(&script, &l.script)?;
    }
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700))?;
    if let Some(u) = user {
        for owned in [&p.dir, &script].into_iter().chain(p.staged.then_some(&p.work_dir)) {
            std::os::unix::fs::chown(owned, Some(u.uid), Some(u.gid))?;
        }
    }
    // A stranger's output is for its submitter alone; a submitter's own is as Slurm makes it.
    let mode = match user {
        Some(u) if u.is_stranger(l.uid) => 0o600,
        _ => 0o644,
    };
    let stdout = open_output(&p.stdout, l.open_append, l.uid, l.gid, mode)?;
    let stderr = if p.stderr == p.stdout {
        stdout.try_clone()?
    } else {
        open_output(&p.stderr, l.open_append, l.uid, l.gid, mode)?
    };
    let env = with_login_defaults(l, &cfg.node_name);
    let mut plan = StepPlan {
        node: cfg.node_name.clone(),
        state_dir: cfg.state_dir.clone(),
        job_dir: p.dir.clone(),
        work_dir: p.work_dir.clone(),
        user: user.map(|u| (u.uid, u.gid)),
        no_new_privs: user.is_some_and(|u| u.is_stranger(l.uid)),
        namespaces: cfg.namespaces,
        network: l.network,
        container_rootfs: None,
        command: std::iter::once(script.clone().into_os_string())
            .chain(l.args.iter().map(Into::into))
            .collect(),
    };
    if let Some(bundle) = &l.container {
        contain(cfg, l, p, &script, &env, &mut plan, Path::new(bundle))?;
    }
    let (mut cmd, pipes) = stepd::command(&cfg.stepd, &plan)?;
    cmd.envs(env).stdout(stdout).stderr(stderr);
    let mut child = spawn_exclusive(|| cmd.spawn())?;
    // stepd waits until it is in the job's cgroup, so the script is contained from its
    // first instruction.
    if let Some(cg) = cgroup
        && let Err(e) = cg.add(child.id())
    {
        let _ = child.kill();
        let _ = child.wait();
        return Err(std::io::Error::other(e.to_string()));
    }
    Ok((child, pipes.go()?))
}

/// Turns `plan` into running the job in its OCI bundle (oci.rs): the job's own config.json
/// in JOB_DIR/bundle, the bundle's root filesystem overlaid by stepd, the runtime as the
/// command. The runtime starts as root and drops to the job's user itself.
fn contain(
    cfg: &RunnerConfig,
    l: &LaunchSpec,
    p: &Paths,
    script: &Path,
    env: &[(String, String)],
    plan: &mut StepPlan,
    bundle: &Path,
) -> std::io::Result<()> {
    let other = std::io::Error::other;
    let Some(runtime) = &cfg.oci_runtime else {
        return Err(other("--container: this node has no OCI runtime (crun)"));
    };
    if !cfg.namespaces {
        return Err(other("--container: this node runs jobs without namespaces"));
    }
    let (config, rootfs) = oci::read_bundle(bundle).map_err(std::io::Error::other)?;
    let (uid, gid) = plan.user.unwrap_or((l.uid, l.gid));
    let job = oci::JobInContainer {
        script,
        args: &l.args,
        work_dir: &p.work_dir,
        env,
        uid,
        gid,
        hostname: &cfg.node_name,
        rootfs: &p.dir.join("rootfs"),
    };
    let config = oci::job_config(config, &job)
        .map_err(|e| std::io::Error::other(format!("container {}: {e}", bundle.display())))?;
    let dir = p.dir.join("bundle");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    plan.user = None;
    plan.no_new_privs = false;
    plan.container_rootfs = Some(rootfs);
    plan.command = [
        runtime.as_os_str(),
        "--cgroup-manager=disabled".as_ref(),
        "--root".as_ref(),
        p.dir.join("crun").as_os_str(),
        "run".as_ref(),
        "--bundle".as_ref(),
        dir.as_os_str(),
        format!("chorus-{}-{}", l.job_id, l.attempt).as_ref(),
    ]
    .into_iter()
    .map(Into::into)
    .collect();
    Ok(())
}

/// Slurm's environment plus what a login gives when `--export=NONE` left them out.
fn with_login_defaults(l: &LaunchSpec, node: &str) -> Vec<(String, String)> {
    let mut env = l.env.clone();
    let has = |env: &[(String, String)], k: &str| env.iter().any(|(x, _)| x == k);
    if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(l.uid)) {
        for (k, v) in [
            ("HOME", user.dir.to_string_lossy().into_owned()),
            ("SHELL", user.shell.to_string_lossy().into_owned()),
            ("USER", user.name.clone()),
            ("LOGNAME", user.name.clone()),
        ] {
            if !has(&env, k) {
                env.push((k.into(), v));
            }
        }
    }
    if !has(&env, "PATH") {
        env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
    }
    if !has(&env, "HOSTNAME") {
        env.push(("HOSTNAME".into(), node.into()));
    }
    env
}

fn terminate(pg: &ProcessGroup, kill_wait: Duration) {
    pg.signal(Signal::SIGCONT);
    pg.signal(Signal::SIGTERM);
    let pg = pg.clone();
    tokio::spawn(async move {
        tokio::time::sleep(kill_wait).await;
        pg.signal(Signal::SIGKILL);
    });
}

fn stepd_message(p: &Paths, l: &LaunchSpec, node: &str, why: &str) {
    let at = crate::agent::local_time(wall_clock());
    let msg = format!(
        "slurmstepd-{node}: error: *** JOB {} ON {node} CANCELLED AT {at}{why} ***\n",
        l.job_id
    );
    if let Ok(mut f) = open_output(&p.stderr, true, l.uid, l.gid, 0o600) {
        let _ = f.write_all(msg.as_bytes());
    }
}

/// Slurm's line when the cgroup's OOM killer ended processes of the job.
fn oom_message(p: &Paths, l: &LaunchSpec, node: &str, kills: u64) {
    let msg = format!(
        "slurmstepd-{node}: error: Detected {kills} oom-kill event(s) in StepId={}.batch. Some of your processes may have been killed by the cgroup out-of-memory handler.\n",
        l.job_id
    );
    if let Ok(mut f) = open_output(&p.stderr, true, l.uid, l.gid, 0o600) {
        let _ = f.write_all(msg.as_bytes());
    }
}

/// The next time to sample the job's GPUs, or never when they are not sampled.
async fn gpu_tick<'a>(
    ticks: &mut Option<(tokio::time::Interval, &'a GpuAccounting)>,
) -> &'a GpuAccounting {
    match ticks {
        Some((t, acct)) => {
            t.tick().await;
            acct
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn wall_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Waits for `pid` and returns its raw wait status and resource use.
fn wait4(pid: i32) -> (i32, Usage) {
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals; pid is our child.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        if r == -1 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return (0, Usage::default());
        }
    }
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    (
        status,
        Usage {
            max_rss_kb: ru.ru_maxrss as u64,
            user_cpu_ms: ms(ru.ru_utime),
            sys_cpu_ms: ms(ru.ru_stime),
            gpu: None,
        },
    )
}

/// Slurm's `code:signal` from a wait status.
pub fn decode_wait_status(raw: i32) -> ExitStatus {
    if libc::WIFEXITED(raw) {
        ExitStatus { code: libc::WEXITSTATUS(raw), signal: 0 }
    } else if libc::WIFSIGNALED(raw) {
        ExitStatus { code: 0, signal: libc::WTERMSIG(raw) }
    } else {
        ExitStatus { code: 1, signal: 0 }
    }
}

fn collect_outputs(cfg: &RunnerConfig, l: &LaunchSpec, p: &Paths) -> Vec<Output> {
    let mut out = vec![];
    let files = [(&p.stdout, &l.stdout_path), (&p.stderr, &l.stderr_path)];
    for (i, (local, remote)) in files.iter().enumerate() {
        if i == 1 && p.stderr == p.stdout {
            break;
        }
        let mut data = std::fs::read(local).unwrap_or_default();
        if data.len() as u64 > cfg.max_output_bytes {
            warn!(job = l.job_id, path = %local.display(), "output too large to send whole: truncated copy sent");
            data.truncate(cfg.max_output_bytes as usize);
        }
        out.push(Output { path: (*remote).clone(), data, append: l.open_append && p.staged });
    }
    // The report must fit in one message: declared files share what stdout and stderr left.
    let mut budget = REPORT_BUDGET.saturating_sub(out.iter().map(|o| o.data.len() as u64).sum());
    for (local, rel) in declared_outputs(l, p) {
        let remote = Path::new(&l.work_dir).join(&rel).to_string_lossy().into_owned();
        if out.iter().any(|o| o.path == remote) {
            continue;
        }
        match read_regular(&local, cfg.max_output_bytes.min(budget)) {
            Ok(data) => {
                budget -= data.len() as u64;
                out.push(Output { path: remote, data, append: false });
            }
            Err(e) => {
                warn!(job = l.job_id, path = %local.display(), error = %e, "declared output not sent")
            }
        }
    }
    out
}

/// The most output bytes one report carries, well within the message size limit.
const REPORT_BUDGET: u64 = (chorus_proto::MAX_MESSAGE_BYTES as u64) * 3 / 4;

/// The most declared output files one job may return (with stdout and stderr, within what
/// a report may carry).
pub const MAX_DECLARED_OUTPUTS: usize = chorus_proto::MAX_REPORTED_FILES - 2;

/// The files `--output-files` names, found in the job's working directory: `(path here,
/// path relative to the working directory)`, sorted, each once. Only regular files that are
/// inside the working directory count: noded reads them as root, and a job must not be able
/// to have it send back the node's key through a symbolic link.
fn declared_outputs(l: &LaunchSpec, p: &Paths) -> Vec<(PathBuf, String)> {
    let Ok(root) = p.work_dir.canonicalize() else { return vec![] };
    let mut found = std::collections::BTreeMap::new();
    for pattern in &l.output_files {
        let full = p.work_dir.join(pattern);
        let Ok(paths) = glob::glob(&full.to_string_lossy()) else {
            warn!(job = l.job_id, pattern, "not a valid --output-files pattern");
            continue;
        };
        for path in paths.flatten() {
            let regular = path.symlink_metadata().is_ok_and(|m| m.file_type().is_file());
            let inside = path
                .parent()
                .and_then(|d| d.canonicalize().ok())
                .is_some_and(|d| d.starts_with(&root));
            let Ok(rel) = path.strip_prefix(&p.work_dir) else { continue };
            if regular && inside {
                found.insert(rel.to_string_lossy().into_owned(), path.clone());
            }
        }
    }
    if found.len() > MAX_DECLARED_OUTPUTS {
        warn!(
            job = l.job_id,
            found = found.len(),
            "more declared outputs than a report carries: the first {MAX_DECLARED_OUTPUTS} by name are sent"
        );
    }
    found.into_iter().take(MAX_DECLARED_OUTPUTS).map(|(rel, path)| (path, rel)).collect()
}

/// Reads a regular file without following a symbolic link at its last component, at most
/// `max` bytes of it.
fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
    let mut data = vec![];
    f.take(max).read_to_end(&mut data)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status_maps_to_slurm_exit_codes() {
        assert_eq!(decode_wait_status(3 << 8), ExitStatus { code: 3, signal: 0 });
        assert_eq!(decode_wait_status(9), ExitStatus { code: 0, signal: 9 });
        assert_eq!(decode_wait_status(0), ExitStatus { code: 0, signal: 0 });
    }
}
