//! Node health checks: Slurm's `HealthCheckProgram` plus checks built in, run before the agent
//! first registers and then every `--health-check-interval`. The controller drains a node
//! that is unhealthy and resumes it once it is healthy again, but only if a health check
//! drained it (`chorus_core::node::health_change`).
//!
//! ```text
//!   start ──▶ Checker::run ──▶ Health ──▶ Register (carries it: a sick node registers drained)
//!   every interval ──▶ Checker::run ──▶ Health ──▶ Health RPC (every result, changed or not)
//!
//!   Checker::run
//!     blocking pool: disk     free MB in the state directory (statvfs) ≥ --health-min-free-mb
//!                    cgroup   when jobs run in cgroups: a child group can be made and removed
//!                    gpus     the inventory still counts the GPUs registered at start
//!     async:         program  --health-check-program, as noded's user (root), no arguments,
//!                             env SLURMD_NODENAME (as slurmd gives it) and a plain PATH,
//!                             killed with its process group after --health-check-timeout;
//!                             exit 0 is healthy, anything else (or the timeout) is not
//!     verdict(findings): the first failing check in the order above, as one bounded line
//! ```
//!
//! Every decision (which finding fails, what its reason says, which wins) is a pure function
//! over data; only [`Checker`] and [`run_program`] touch the system.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chorus_core::node::{Health, MAX_HEALTH_PROBLEM};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::cgroup::{self, CgroupConfig};
use crate::inventory::GpuInventory;

/// How long the program may run: Slurm gives `HealthCheckProgram` 60 seconds.
pub const DEFAULT_PROGRAM_TIMEOUT: Duration = Duration::from_secs(60);

/// The `PATH` the program sees (slurmd passes no environment but `SLURMD_NODENAME`).
const PROGRAM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Output kept from the program, per stream; the rest is read and dropped.
const MAX_OUTPUT: usize = 64 * 1024;

/// What to check and how often.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub node_name: String,
    /// `--health-check-program`.
    pub program: Option<PathBuf>,
    /// Between checks; zero: only once, at start.
    pub interval: Duration,
    /// How long the program may run before it is killed and the node counts as unhealthy.
    pub timeout: Duration,
    /// `--health-min-free-mb`: the state directory needs at least this much free space.
    pub min_free_mb: u64,
    /// Where scripts are staged and outputs kept.
    pub state_dir: PathBuf,
    /// Jobs' cgroups, when jobs run in cgroups.
    pub cgroups: Option<CgroupConfig>,
}

/// One check, in the order their failures win.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    Disk,
    Cgroup,
    Gpus,
    Program,
}

/// What one check found: `None` when it passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: Check,
    pub problem: Option<String>,
}

/// The node's health from its findings: healthy when every check passed, else the problem of
/// the first failing check (in [`Check`] order), made one line of at most
/// [`MAX_HEALTH_PROBLEM`] bytes.
pub fn verdict(findings: &[Finding]) -> Health {
    let first = findings
        .iter()
        .filter_map(|f| f.problem.as_deref().map(|p| (f.check, p)))
        .min_by_key(|(check, _)| *check);
    match first {
        None => Health::Healthy,
        Some((check, p)) => Health::Unhealthy(
            one_line(p).unwrap_or_else(|| format!("{check:?} check failed").to_lowercase()),
        ),
    }
}

/// The first line of `text` that says something, with control characters made spaces and cut
/// (on a character boundary) to [`MAX_HEALTH_PROBLEM`] bytes. `None` when there is none.
pub fn one_line(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut out = String::new();
    for c in line.chars().map(|c| if c.is_control() { ' ' } else { c }) {
        if out.len() + c.len_utf8() > MAX_HEALTH_PROBLEM {
            break;
        }
        out.push(c);
    }
    Some(out)
}

/// The disk check's finding: `free_mb` in `dir` against the `min_mb` it needs.
pub fn disk_problem(dir: &Path, free: Result<u64, String>, min_mb: u64) -> Option<String> {
    match free {
        Ok(mb) if mb >= min_mb => None,
        Ok(mb) => Some(format!("low disk: {} has {mb} MB free, below {min_mb} MB", dir.display())),
        Err(e) => Some(format!("disk: cannot stat {}: {e}", dir.display())),
    }
}

/// The GPU check's finding: the inventory must still see the GPUs the node registered.
pub fn gpu_problem(registered: usize, found: usize) -> Option<String> {
    (registered != found).then(|| format!("GPU count {found}, registered {registered}"))
}

/// How the program ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgramOutcome {
    /// It exited (`code`) or was killed (`signal`), with what it wrote.
    Ended { code: Option<i32>, signal: Option<i32>, stdout: String, stderr: String },
    /// It ran past the timeout and was killed.
    TimedOut(Duration),
    /// It could not be started.
    NotRun(String),
}

/// The program check's finding. Exit 0 is healthy; otherwise the first line of its standard
/// output (NHC's convention), else of its standard error, else how it ended, is the reason.
pub fn program_problem(program: &Path, outcome: &ProgramOutcome) -> Option<String> {
    let name = program.display();
    match outcome {
        ProgramOutcome::Ended { code: Some(0), .. } => None,
        ProgramOutcome::Ended { code, signal, stdout, stderr } => {
            Some(one_line(stdout).or_else(|| one_line(stderr)).unwrap_or_else(|| match signal {
                Some(s) => format!("health check {name} killed by signal {s}"),
                None => format!("health check {name} exited {}", code.unwrap_or(-1)),
            }))
        }
        ProgramOutcome::TimedOut(t) => {
            Some(format!("health check {name} timed out after {} s", t.as_secs()))
        }
        ProgramOutcome::NotRun(e) => Some(format!("health check {name} cannot run: {e}")),
    }
}

/// Free space for unprivileged users in the file system holding `dir`, in MB.
pub fn free_mb(dir: &Path) -> Result<u64, String> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| e.to_string())?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64) / (1024 * 1024))
}

/// Runs the health check program: as this process's user, in `/`, with no arguments and only
/// `SLURMD_NODENAME` and `PATH` in its environment. It and everything it started are killed
/// when it exits (leftovers) or when `timeout` passes.
pub async fn run_program(program: &Path, node: &str, timeout: Duration) -> ProgramOutcome {
    let mut cmd = tokio::process::Command::new(program);
    cmd.env_clear()
        .env("SLURMD_NODENAME", node)
        .env("PATH", PROGRAM_PATH)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match crate::runner::spawn_exclusive(|| cmd.spawn()) {
        Ok(c) => c,
        Err(e) => return ProgramOutcome::NotRun(e.to_string()),
    };
    // Never 0 here: killpg(0) would signal noded's own process group.
    let Some(pgid) = child.id().map(|p| Pid::from_raw(p as i32)) else {
        return ProgramOutcome::NotRun("it ended before it could be watched".into());
    };
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        return ProgramOutcome::NotRun("no pipes to read its output".into());
    };
    let ended = async {
        let status = child.wait().await;
        // Whatever it left running would keep its output pipes open.
        let _ = killpg(pgid, Signal::SIGKILL);
        status
    };
    let all = async { tokio::join!(ended, read_some(out), read_some(err)) };
    match tokio::time::timeout(timeout, all).await {
        Ok((Ok(status), stdout, stderr)) => {
            use std::os::unix::process::ExitStatusExt;
            ProgramOutcome::Ended { code: status.code(), signal: status.signal(), stdout, stderr }
        }
        Ok((Err(e), ..)) => ProgramOutcome::NotRun(e.to_string()),
        Err(_) => {
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait().await;
            ProgramOutcome::TimedOut(timeout)
        }
    }
}

/// Reads a stream to its end, keeping the first [`MAX_OUTPUT`] bytes.
async fn read_some(mut r: impl AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = MAX_OUTPUT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Runs the checks of one node.
pub struct Checker {
    pub cfg: HealthConfig,
    gpus: Arc<dyn GpuInventory>,
    /// GPUs the node registered at start.
    registered_gpus: usize,
}

impl Checker {
    pub fn new(cfg: HealthConfig, gpus: Arc<dyn GpuInventory>, registered_gpus: usize) -> Self {
        Self { cfg, gpus, registered_gpus }
    }

    /// The built-in checks (they block: cgroupfs, statvfs, NVML).
    pub fn builtin(&self) -> Vec<Finding> {
        let c = &self.cfg;
        let mut found = vec![Finding {
            check: Check::Disk,
            problem: disk_problem(&c.state_dir, free_mb(&c.state_dir), c.min_free_mb),
        }];
        if let Some(cg) = &c.cgroups {
            found.push(Finding {
                check: Check::Cgroup,
                problem: cgroup::probe(cg).err().map(|e| format!("cgroup unusable: {e}")),
            });
        }
        found.push(Finding {
            check: Check::Gpus,
            problem: gpu_problem(self.registered_gpus, self.gpus.gpus().len()),
        });
        found
    }

    /// Runs every check once and gives the verdict, with each finding for the log.
    pub async fn run(self: &Arc<Self>) -> (Health, Vec<Finding>) {
        let me = Arc::clone(self);
        let mut found =
            tokio::task::spawn_blocking(move || me.builtin()).await.unwrap_or_else(|e| {
                vec![Finding { check: Check::Disk, problem: Some(format!("checks failed: {e}")) }]
            });
        if let Some(p) = &self.cfg.program {
            let outcome = run_program(p, &self.cfg.node_name, self.cfg.timeout).await;
            found.push(Finding { check: Check::Program, problem: program_problem(p, &outcome) });
        }
        (verdict(&found), found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(check: Check) -> Finding {
        Finding { check, problem: None }
    }

    fn bad(check: Check, p: &str) -> Finding {
        Finding { check, problem: Some(p.into()) }
    }

    #[test]
    fn every_check_passing_is_healthy() {
        let f = [ok(Check::Disk), ok(Check::Cgroup), ok(Check::Gpus), ok(Check::Program)];
        assert_eq!(verdict(&f), Health::Healthy);
        assert_eq!(verdict(&[]), Health::Healthy);
    }

    #[test]
    fn the_first_failing_check_in_check_order_gives_the_reason() {
        let f = [bad(Check::Program, "ib0 down"), ok(Check::Disk), bad(Check::Gpus, "GPU count")];
        assert_eq!(verdict(&f), Health::Unhealthy("GPU count".into()));
        let f = [bad(Check::Program, "ib0 down"), bad(Check::Disk, "low disk")];
        assert_eq!(verdict(&f), Health::Unhealthy("low disk".into()));
    }

    #[test]
    fn a_reason_is_one_bounded_line() {
        assert_eq!(one_line("\n  \n first\tline \nsecond"), Some("first line".into()));
        assert_eq!(one_line(" \n\t\n"), None);
        let long = "é".repeat(MAX_HEALTH_PROBLEM);
        let cut = one_line(&long).unwrap();
        assert!(cut.len() <= MAX_HEALTH_PROBLEM && cut.len() > MAX_HEALTH_PROBLEM - 2);
        assert!(chorus_core::node::check_health_problem(&cut).is_ok());
        // A failing check that says nothing still says which check failed.
        assert_eq!(
            verdict(&[bad(Check::Gpus, "\n")]),
            Health::Unhealthy("gpus check failed".into())
        );
    }

    #[test]
    fn disk_below_the_threshold_fails_naming_the_directory() {
        let d = Path::new("/var/lib/chorus/noded");
        assert_eq!(disk_problem(d, Ok(1024), 1024), None);
        assert_eq!(
            disk_problem(d, Ok(512), 1024).as_deref(),
            Some("low disk: /var/lib/chorus/noded has 512 MB free, below 1024 MB")
        );
        assert!(disk_problem(d, Err("ENOENT".into()), 0).unwrap().contains("cannot stat"));
    }

    #[test]
    fn a_gpu_lost_since_registration_fails() {
        assert_eq!(gpu_problem(4, 4), None);
        assert_eq!(gpu_problem(0, 0), None);
        assert_eq!(gpu_problem(4, 3).as_deref(), Some("GPU count 3, registered 4"));
    }

    #[test]
    fn program_reason_is_its_first_stdout_line_then_stderr_then_how_it_ended() {
        let p = Path::new("/etc/chorus/hc");
        let ended = |code, signal, out: &str, err: &str| ProgramOutcome::Ended {
            code,
            signal,
            stdout: out.into(),
            stderr: err.into(),
        };
        assert_eq!(program_problem(p, &ended(Some(0), None, "all bad", "")), None);
        assert_eq!(
            program_problem(p, &ended(Some(1), None, "check_fs_mount: /scratch\nmore", "x"))
                .as_deref(),
            Some("check_fs_mount: /scratch")
        );
        assert_eq!(
            program_problem(p, &ended(Some(1), None, "", "ib0 down\n")).as_deref(),
            Some("ib0 down")
        );
        assert_eq!(
            program_problem(p, &ended(Some(3), None, "", "")).as_deref(),
            Some("health check /etc/chorus/hc exited 3")
        );
        assert_eq!(
            program_problem(p, &ended(None, Some(9), "", "")).as_deref(),
            Some("health check /etc/chorus/hc killed by signal 9")
        );
        assert_eq!(
            program_problem(p, &ProgramOutcome::TimedOut(Duration::from_secs(60))).as_deref(),
            Some("health check /etc/chorus/hc timed out after 60 s")
        );
        assert!(
            program_problem(p, &ProgramOutcome::NotRun("No such file".into()))
                .unwrap()
                .contains("cannot run: No such file")
        );
    }
}
