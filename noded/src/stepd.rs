//! stepd: the process between noded and a job's script (Slurm's slurmstepd), one per job.
//!
//! ```text
//!   noded ─spawn─▶ stepd     its own session (pgid = pid); noded waits on it and signals
//!                            the job through its process group
//!     fd 3  waits for "go": noded has put it in the job's cgroup, so all it starts is contained
//!     fd 4  launch errors go back to noded; closed once the script runs
//!
//!   without namespaces:      drop to the job's user, chdir, exec the script
//!   with namespaces:         isolation::enter (mount, IPC, UTS, PID, network; the job's view)
//!          fork ─▶ init      PID 1 of the job: mounts /proc,
//!                  fork ─▶ task  drop to the job's user, chdir, exec the script
//!                  reaps orphans; on the task's end sends its wait status up and exits,
//!                  and the kernel kills whatever is left in the namespace
//!     stepd ignores the signals sent to the job's process group (they reach the task
//!     directly; an init only gets the ones it handles), and ends as the task ended:
//!     the same exit code, or the same signal
//! ```
//!
//! [`StepPlan`] is both ends of the command line: noded builds it, the `stepd` binary parses it.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chorus_core::state::Network;
use clap::Parser;
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork};

use crate::isolation::{self, View};

/// The descriptor stepd waits on before it starts anything.
pub const GATE_FD: i32 = 3;
/// The descriptor stepd reports launch errors on.
pub const REPORT_FD: i32 = 4;

/// What stepd does for one job.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "stepd", about = "Runs one job's script for noded (not for direct use).")]
pub struct StepPlan {
    /// The node's name: the job's hostname.
    #[arg(long)]
    pub node: String,
    /// noded's state directory, hidden from the job.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// The job's own directory (inside the state directory).
    #[arg(long)]
    pub job_dir: PathBuf,
    #[arg(long)]
    pub work_dir: PathBuf,
    /// `UID:GID` to become; omitted: stay noded's user.
    #[arg(long, value_parser = parse_ids)]
    pub user: Option<(u32, u32)>,
    /// Set no_new_privs: no setuid program lifts the job above its user.
    #[arg(long)]
    pub no_new_privs: bool,
    /// Run in namespaces of the job's own (isolation.rs).
    #[arg(long)]
    pub namespaces: bool,
    #[arg(long, default_value_t = Network::Host)]
    pub network: Network,
    /// `--container`: the bundle's root filesystem, overlaid at JOB_DIR/rootfs; the command
    /// is then the OCI runtime, run as root (it drops to the job's user itself).
    #[arg(long)]
    pub container_rootfs: Option<PathBuf>,
    /// The script and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

fn parse_ids(s: &str) -> Result<(u32, u32), String> {
    let (u, g) = s.split_once(':').ok_or("expected UID:GID")?;
    Ok((u.parse().map_err(|_| "bad uid")?, g.parse().map_err(|_| "bad gid")?))
}

impl StepPlan {
    /// The command line that makes stepd carry out this plan.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "--node".into(),
            self.node.clone().into(),
            "--state-dir".into(),
            self.state_dir.clone().into(),
            "--job-dir".into(),
            self.job_dir.clone().into(),
            "--work-dir".into(),
            self.work_dir.clone().into(),
            "--network".into(),
            self.network.to_string().into(),
        ];
        if let Some((u, g)) = self.user {
            a.extend(["--user".into(), format!("{u}:{g}").into()]);
        }
        if self.no_new_privs {
            a.push("--no-new-privs".into());
        }
        if self.namespaces {
            a.push("--namespaces".into());
        }
        if let Some(r) = &self.container_rootfs {
            a.extend(["--container-rootfs".into(), r.clone().into()]);
        }
        a.push("--".into());
        a.extend(self.command.iter().cloned());
        a
    }
}

/// The two pipes between noded and a stepd it starts.
pub struct Pipes {
    gate: File,
    report: File,
    /// stepd's ends, closed in noded once it has started.
    theirs: (OwnedFd, OwnedFd),
}

impl Pipes {
    /// Lets the started stepd go on, and returns the pipe its launch error comes back on:
    /// it closes empty once the script runs. Dropped instead, stepd exits at once.
    pub fn go(self) -> std::io::Result<File> {
        drop(self.theirs);
        (&self.gate).write_all(b"go\n")?;
        Ok(self.report)
    }
}

/// The command that starts stepd on `plan`: a session of its own, an empty environment and
/// stdin; the caller adds the environment and stdout/stderr, spawns, and calls [`Pipes::go`].
pub fn command(stepd: &Path, plan: &StepPlan) -> std::io::Result<(Command, Pipes)> {
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (gate_r, gate_w) = nix::unistd::pipe2(cloexec)?;
    let (report_r, report_w) = nix::unistd::pipe2(cloexec)?;
    let mut cmd = Command::new(stepd);
    cmd.args(plan.args()).env_clear().current_dir("/").stdin(Stdio::null());
    let fds = [(gate_r.as_raw_fd(), GATE_FD), (report_w.as_raw_fd(), REPORT_FD)];
    // SAFETY: setsid, fcntl and dup2 are plain syscalls on the child's own session and
    // descriptors.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            // Copies above the targets first, so that no dup2 overwrites a source.
            let mut high = [0; 2];
            for (h, (from, _)) in high.iter_mut().zip(fds) {
                *h = libc::fcntl(from, libc::F_DUPFD_CLOEXEC, 10);
                if *h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (h, (_, to)) in high.into_iter().zip(fds) {
                if libc::dup2(h, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let pipes = Pipes { gate: gate_w.into(), report: report_r.into(), theirs: (gate_r, report_w) };
    Ok((cmd, pipes))
}

/// Whether jobs can be put in namespaces here: runs `/bin/true` through stepd with every
/// step a job takes (its own namespaces, a loopback network, a throwaway job directory under
/// `state_dir`, nobody's uid), once at noded's start.
pub fn probe(stepd: &Path, state_dir: &Path, node: &str) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("noded is not root: cannot create namespaces".into());
    }
    let job_dir = state_dir.join("jobs").join("probe");
    std::fs::create_dir_all(&job_dir).map_err(|e| format!("{}: {e}", job_dir.display()))?;
    let plan = StepPlan {
        node: node.into(),
        state_dir: state_dir.into(),
        job_dir: job_dir.clone(),
        work_dir: "/".into(),
        user: Some((65534, 65534)),
        no_new_privs: true,
        namespaces: true,
        network: Network::Loopback,
        container_rootfs: None,
        command: vec!["/bin/true".into()],
    };
    let run = || -> Result<(), String> {
        let (mut cmd, pipes) = command(stepd, &plan).map_err(|e| e.to_string())?;
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = cmd.spawn().map_err(|e| format!("{}: {e}", stepd.display()))?;
        let mut why = String::new();
        let _ = pipes.go().map(|r| (&r).read_to_string(&mut why));
        let status = child.wait().map_err(|e| e.to_string())?;
        match (why.is_empty(), status.success()) {
            (true, true) => Ok(()),
            (true, false) => Err(format!("the namespace probe exited {status}")),
            (false, _) => Err(why),
        }
    };
    let r = run();
    let _ = std::fs::remove_dir_all(&job_dir);
    r
}

/// stepd's `main`: carries out `plan` and never returns. Single-threaded by construction (the
/// binary starts no threads), so forking here is safe.
pub fn main(plan: StepPlan) -> ! {
    // SAFETY: noded hands stepd these two descriptors and nothing else owns them.
    let (gate, report) =
        unsafe { (OwnedFd::from_raw_fd(GATE_FD), OwnedFd::from_raw_fd(REPORT_FD)) };
    let report = File::from(report);
    let _ =
        nix::fcntl::fcntl(&report, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
    let mut go = [0u8; 3];
    if File::from(gate).read_exact(&mut go).is_err() || &go != b"go\n" {
        // noded could not put us in the job's cgroup and has given up on this launch.
        std::process::exit(1);
    }
    if !plan.namespaces {
        let e = exec_task(&plan);
        fail(&report, &e, 127)
    }
    if let Err(e) = isolation::enter(&View {
        state_dir: &plan.state_dir,
        job_dir: &plan.job_dir,
        work_dir: &plan.work_dir,
        hostname: &plan.node,
        network: plan.network,
        container_rootfs: plan.container_rootfs.as_deref(),
    }) {
        fail(&report, &e, 1)
    }
    if let Some(rootfs) = &plan.container_rootfs
        && let Err(e) = isolation::container_root(rootfs, &plan.job_dir.join("rootfs"))
    {
        fail(&report, &e, 1)
    }
    let (status_r, status_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => fail(&report, &format!("pipe: {e}"), 1),
    };
    // Blocked across the fork: no signal meant for the job can end stepd before it ignores
    // them, and none is lost by init, which unblocks them at once.
    let mut before = SigSet::empty();
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), Some(&mut before));
    // SAFETY: stepd has one thread.
    match unsafe { fork() } {
        Err(e) => fail(&report, &format!("fork: {e}"), 1),
        Ok(ForkResult::Child) => {
            drop(status_r);
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&before), None);
            init(&plan, report, File::from(status_w))
        }
        Ok(ForkResult::Parent { child }) => {
            // The report descriptor is init's and the task's to close now.
            drop((status_w, report));
            for sig in Signal::iterator() {
                if !matches!(sig, Signal::SIGKILL | Signal::SIGSTOP | Signal::SIGCHLD) {
                    // SAFETY: SIG_IGN installs no handler.
                    let _ = unsafe { signal(sig, SigHandler::SigIgn) };
                }
            }
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&before), None);
            let init_status = wait_for(child);
            let mut raw = [0u8; 4];
            let task_status =
                File::from(status_r).read_exact(&mut raw).ok().map(|()| i32::from_ne_bytes(raw));
            mirror(task_status.unwrap_or(init_status))
        }
    }
}

/// Tells noded why the launch failed, and exits.
fn fail(report: &File, why: &str, code: i32) -> ! {
    let _ = (&*report).write_all(why.as_bytes());
    std::process::exit(code)
}

/// PID 1 of the job: mounts /proc, starts the task, reaps every orphan until the task ends,
/// then passes its wait status up and exits.
fn init(plan: &StepPlan, report: File, mut status_w: File) -> ! {
    if let Err(e) = isolation::mount_proc() {
        fail(&report, &e, 1)
    }
    // SAFETY: init has one thread.
    let task = match unsafe { fork() } {
        Ok(ForkResult::Child) => fail(&report, &exec_task(plan), 127),
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => fail(&report, &format!("fork: {e}"), 1),
    };
    // Init's copy; the task's closes when it execs.
    drop(report);
    loop {
        let mut raw = 0;
        // SAFETY: waits for any child of ours; raw is a local.
        let pid = unsafe { libc::waitpid(-1, &mut raw, 0) };
        if pid == task.as_raw() {
            let _ = status_w.write_all(&raw.to_ne_bytes());
            std::process::exit(0);
        }
        if pid < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            std::process::exit(1);
        }
    }
}

/// Becomes the job's user in its working directory and execs the script. Returns only on
/// failure, with the reason.
fn exec_task(plan: &StepPlan) -> String {
    if let Some((uid, gid)) = plan.user
        && let Err(e) = become_user(uid, gid)
    {
        return e;
    }
    if plan.no_new_privs {
        // SAFETY: prctl with constant arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return format!("no_new_privs: {}", std::io::Error::last_os_error());
        }
    }
    if let Err(e) = std::env::set_current_dir(&plan.work_dir) {
        return format!("chdir to {}: {e}", plan.work_dir.display());
    }
    let (script, args) = plan.command.split_first().expect("clap requires a command");
    let pid = std::process::id().to_string();
    let e = Command::new(script).args(args).env("SLURM_TASK_PID", &pid).exec();
    if e.raw_os_error() == Some(libc::ENOEXEC) {
        // No `#!` line: the shell runs it, as execvp(3) would.
        let e = Command::new("/bin/sh").arg(script).args(args).env("SLURM_TASK_PID", &pid).exec();
        return format!("exec /bin/sh {}: {e}", PathBuf::from(script).display());
    }
    format!("exec {}: {e}", PathBuf::from(script).display())
}

fn become_user(uid: u32, gid: u32) -> Result<(), String> {
    let groups: Vec<Gid> = nix::unistd::User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .and_then(|u| CString::new(u.name).ok())
        .and_then(|name| nix::unistd::getgrouplist(&name, Gid::from_raw(gid)).ok())
        .unwrap_or_else(|| vec![Gid::from_raw(gid)]);
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setgid(Gid::from_raw(gid)).map_err(|e| format!("setgid {gid}: {e}"))?;
    nix::unistd::setuid(Uid::from_raw(uid)).map_err(|e| format!("setuid {uid}: {e}"))
}

/// Waits for `pid` and returns its raw wait status.
fn wait_for(pid: Pid) -> i32 {
    loop {
        match waitpid(pid, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(_, code)) => return (code & 0xff) << 8,
            Ok(WaitStatus::Signaled(_, sig, _)) => return sig as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 1 << 8,
        }
    }
}

/// Ends stepd as a process with wait status `raw` ended: the same code or the same signal.
fn mirror(raw: i32) -> ! {
    if libc::WIFSIGNALED(raw) {
        let sig = libc::WTERMSIG(raw);
        let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: plain syscalls: no core file of stepd, default action, then the signal.
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
        }
        std::process::exit(128 + sig);
    }
    std::process::exit(if libc::WIFEXITED(raw) { libc::WEXITSTATUS(raw) } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_survives_its_command_line() {
        let plan = StepPlan {
            node: "n1".into(),
            state_dir: "/var/lib/chorus/noded".into(),
            job_dir: "/var/lib/chorus/noded/jobs/5.0".into(),
            work_dir: "/home/u/run dir".into(),
            user: Some((2_000_000, 2_000_000)),
            no_new_privs: true,
            namespaces: true,
            network: Network::Loopback,
            container_rootfs: Some("/home/u/bundle/rootfs".into()),
            command: vec![
                "/var/lib/chorus/noded/jobs/5.0/script".into(),
                "--".into(),
                "a b".into(),
            ],
        };
        let mut argv: Vec<OsString> = vec!["stepd".into()];
        argv.extend(plan.args());
        assert_eq!(StepPlan::try_parse_from(argv).unwrap(), plan);
        let bare = StepPlan {
            user: None,
            no_new_privs: false,
            namespaces: false,
            container_rootfs: None,
            ..plan
        };
        let mut argv: Vec<OsString> = vec!["stepd".into()];
        argv.extend(bare.args());
        assert_eq!(StepPlan::try_parse_from(argv).unwrap(), bare);
    }
}
