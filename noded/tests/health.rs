//! Health checks against the real system: the program as noded runs it (real scripts, real
//! processes), the built-in checks with a GPU inventory that changes under them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use chorus_core::node::{GpuInfo, Health};
use chorus_noded::health::{
    Check, Checker, HealthConfig, ProgramOutcome, program_problem, run_program,
};
use chorus_noded::inventory::GpuInventory;

fn script(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("hc.sh");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

async fn problem(body: &str, timeout: Duration) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let p = script(dir.path(), body);
    program_problem(&p, &run_program(&p, "node7", timeout).await)
}

#[tokio::test]
async fn a_program_exiting_zero_is_healthy_and_its_output_is_ignored() {
    assert_eq!(problem("echo all fine; exit 0", Duration::from_secs(30)).await, None);
}

#[tokio::test]
async fn a_failing_program_gives_its_first_output_line_as_the_reason() {
    let got = problem("echo; echo 'check_fs_mount: /scratch not mounted'; echo more; exit 1", {
        Duration::from_secs(30)
    })
    .await;
    assert_eq!(got.as_deref(), Some("check_fs_mount: /scratch not mounted"));
    let got = problem("echo 'ib0 down' >&2; exit 2", Duration::from_secs(30)).await;
    assert_eq!(got.as_deref(), Some("ib0 down"));
    let got = problem("exit 3", Duration::from_secs(30)).await.unwrap();
    assert!(got.ends_with("hc.sh exited 3"), "{got}");
}

#[tokio::test]
async fn the_program_sees_only_slurmd_nodename_and_path() {
    // Run under cargo, CARGO_MANIFEST_DIR is in this process's environment: not in the
    // program's.
    let got = problem(
        "echo \"$SLURMD_NODENAME ${CARGO_MANIFEST_DIR:-clean} $PATH $(pwd)\"; exit 1",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert!(got.starts_with("node7 clean /usr/local/sbin:"), "{got}");
    assert!(got.ends_with(" /"), "runs in /: {got}");
}

#[tokio::test]
async fn a_program_past_its_timeout_is_killed_with_what_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let p = script(
        dir.path(),
        &format!("sleep 300 & echo $! > {}; echo started; wait", pidfile.display()),
    );
    let start = Instant::now();
    let outcome = run_program(&p, "node7", Duration::from_secs(1)).await;
    assert_eq!(outcome, ProgramOutcome::TimedOut(Duration::from_secs(1)));
    assert!(start.elapsed() < Duration::from_secs(60), "took {:?}", start.elapsed());
    assert!(program_problem(&p, &outcome).unwrap().contains("timed out after 1 s"));
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    gone(pid);
}

#[tokio::test]
async fn leftovers_of_a_program_that_exited_are_killed_and_do_not_hold_it_up() {
    // The background sleep keeps the output pipes open: without the process group kill the
    // check would wait for it, and time out.
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let p = script(dir.path(), &format!("sleep 300 & echo $! > {}; exit 0", pidfile.display()));
    let outcome = run_program(&p, "node7", Duration::from_secs(120)).await;
    assert!(matches!(outcome, ProgramOutcome::Ended { code: Some(0), .. }), "{outcome:?}");
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    gone(pid);
}

#[tokio::test]
async fn a_program_that_cannot_run_is_a_failure() {
    let p = Path::new("/nonexistent/hc");
    let got = program_problem(p, &run_program(p, "node7", Duration::from_secs(5)).await).unwrap();
    assert!(got.starts_with("health check /nonexistent/hc cannot run:"), "{got}");
}

/// Waits (generously) until `pid` no longer runs; a zombie counts as gone.
fn gone(pid: i32) {
    let start = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
        if matches!(state, None | Some('Z')) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "process {pid} still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// GPUs that can disappear, as a GPU falling off the bus does.
struct Gpus(AtomicU32);

impl GpuInventory for Gpus {
    fn name(&self) -> &'static str {
        "gpu/test"
    }
    fn gpus(&self) -> Vec<GpuInfo> {
        (0..self.0.load(Ordering::Relaxed))
            .map(|i| GpuInfo {
                index: i,
                uuid: format!("GPU-{i}"),
                model: "t".into(),
                memory_mb: 1,
                driver: "535.104.05".into(),
            })
            .collect()
    }
    fn devices(&self) -> Vec<(u32, PathBuf)> {
        vec![]
    }
    fn sample(&self, _: &[u32]) -> Option<Vec<chorus_noded::inventory::GpuSample>> {
        None
    }
}

fn config(state_dir: &Path, min_free_mb: u64, program: Option<PathBuf>) -> HealthConfig {
    HealthConfig {
        node_name: "node7".into(),
        program,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(30),
        min_free_mb,
        state_dir: state_dir.to_owned(),
        cgroups: None,
    }
}

#[tokio::test]
async fn built_in_checks_catch_a_lost_gpu_and_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let gpus = Arc::new(Gpus(AtomicU32::new(2)));
    let checker = Arc::new(Checker::new(config(dir.path(), 0, None), gpus.clone(), 2));
    assert_eq!(checker.run().await.0, Health::Healthy);
    gpus.0.store(1, Ordering::Relaxed);
    assert_eq!(checker.run().await.0, Health::Unhealthy("GPU count 1, registered 2".into()));

    // No file system has this much free: the disk check fails, and wins over the GPUs.
    let checker = Arc::new(Checker::new(config(dir.path(), u64::MAX / 2, None), gpus.clone(), 2));
    let (health, found) = checker.run().await;
    let Health::Unhealthy(reason) = health else { panic!("{health:?}") };
    assert!(reason.starts_with("low disk: "), "{reason}");
    let failed: Vec<Check> =
        found.iter().filter(|f| f.problem.is_some()).map(|f| f.check).collect();
    assert_eq!(failed, vec![Check::Disk, Check::Gpus]);
}

#[tokio::test]
async fn the_program_runs_with_the_built_in_checks() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("bad");
    let p = script(
        dir.path(),
        &format!("[ -e {} ] && {{ echo flagged; exit 1; }}; exit 0", flag.display()),
    );
    let gpus = Arc::new(Gpus(AtomicU32::new(0)));
    let checker = Arc::new(Checker::new(config(dir.path(), 0, Some(p)), gpus, 0));
    assert_eq!(checker.run().await.0, Health::Healthy);
    std::fs::write(&flag, "").unwrap();
    assert_eq!(checker.run().await.0, Health::Unhealthy("flagged".into()));
}
