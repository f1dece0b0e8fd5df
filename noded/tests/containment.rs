//! Containment, for real: jobs run by the runner in cgroups on this machine. Needs root and a
//! cgroup hierarchy; where either is missing each test says so and skips.
//!
//! ```text
//!   memory hog (200 MB in 50 MB) ──▶ OUT_OF_MEMORY, 0:125, Slurm's message; a neighbour lives
//!   fork bomb (pids.max 64)      ──▶ never more than 64 processes; ends at its time limit;
//!                                    nothing left behind, cgroup gone
//!   2 busy loops on 1 CPU        ──▶ CPU time ≈ 1 CPU × wall time, not 2
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_core::fsm::EndCause;
use chorus_core::job::ExitStatus;
use chorus_core::launch::LaunchSpec;
use chorus_noded::cgroup::{self, CgroupConfig};
use chorus_noded::runner::{Finished, ProcessGroup, RunnerConfig, run};
use tokio::sync::watch;

/// Removes a test's parent cgroup when the test ends.
struct Parent(String);

impl Drop for Parent {
    fn drop(&mut self) {
        cgroup::remove_empty(&self.0);
    }
}

/// A runner config with cgroups under a parent of this test's own, or why not.
fn contained(dir: &Path, test: &str, max_pids: i64) -> Option<(Arc<RunnerConfig>, Parent)> {
    let cg =
        CgroupConfig { parent: format!("chorus-test/{test}-{}", std::process::id()), max_pids };
    match cgroup::probe(&cg) {
        Ok(_) => Some((
            Arc::new(RunnerConfig {
                node_name: "n1".into(),
                state_dir: dir.join("state"),
                max_output_bytes: 1 << 20,
                cgroups: Some(cg.clone()),
            }),
            Parent(cg.parent),
        )),
        Err(e) => {
            eprintln!("SKIP {test}: cgroups unusable here: {e}");
            None
        }
    }
}

fn launch(job_id: u32, dir: &Path, script: &str, cpus: u32, mem_mb: u64) -> LaunchSpec {
    let out = dir.join(format!("slurm-{job_id}.out")).display().to_string();
    LaunchSpec {
        job_id,
        attempt: 0,
        script: format!("#!/bin/sh\n{script}\n"),
        args: vec![],
        work_dir: dir.display().to_string(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        stdout_path: out.clone(),
        stderr_path: out,
        open_append: false,
        time_limit_secs: None,
        start_time: now(),
        uid: 0,
        gid: 0,
        cpus,
        mem_mb,
        gpus: vec![],
        job_name: "t".into(),
        user: "root".into(),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

async fn go(cfg: &Arc<RunnerConfig>, l: LaunchSpec) -> Finished {
    let (_tx, rx) = watch::channel(false);
    run(Arc::clone(cfg), l, Duration::from_secs(1), ProcessGroup::default(), rx).await
}

fn output(dir: &Path, job: u32) -> String {
    std::fs::read_to_string(dir.join(format!("slurm-{job}.out"))).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_ends_out_of_memory_and_its_neighbour_lives() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cfg, _parent)) = contained(dir.path(), "oom", 256) else { return };
    let hog = "dd if=/dev/zero of=/dev/null bs=200M count=1; echo after";
    let hog = launch(1, dir.path(), hog, 1, 50);
    let neighbour = launch(2, dir.path(), "sleep 1; echo fine", 1, 100);
    let (hog, neighbour) = tokio::join!(go(&cfg, hog), go(&cfg, neighbour));
    let out = output(dir.path(), 1);
    assert_eq!(hog.cause, EndCause::OutOfMemory, "{out}");
    assert_eq!(hog.exit, ExitStatus { code: 0, signal: 125 }, "Slurm's ExitCode=0:125");
    assert!(
        out.contains(
            "slurmstepd-n1: error: Detected 1 oom-kill event(s) in StepId=1.batch. \
             Some of your processes may have been killed by the cgroup out-of-memory handler."
        ),
        "{out}"
    );
    assert!(hog.usage.max_rss_kb >= 40 * 1024, "peak memory from the cgroup: {:?}", hog.usage);
    assert_eq!(neighbour.cause, EndCause::Exited);
    assert_eq!(neighbour.exit, ExitStatus::default());
    assert_eq!(output(dir.path(), 2), "fine\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_is_stopped_by_the_pids_limit_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cfg, _parent)) = contained(dir.path(), "forkbomb", 64) else { return };
    let parent = cfg.cgroups.as_ref().unwrap().parent.clone();
    let mut bomb = launch(3, dir.path(), "b() { b | b & }; b; sleep 30", 1, 512);
    bomb.time_limit_secs = Some(3);
    let pids = format!("/sys/fs/cgroup/pids/{parent}/job_3_0");
    let watch_pids = {
        let pids = pids.clone();
        tokio::task::spawn_blocking(move || {
            let (mut peak, start) = (0i64, Instant::now());
            while start.elapsed() < Duration::from_secs(6) {
                if let Ok(v) = std::fs::read_to_string(format!("{pids}/pids.current")) {
                    peak = peak.max(v.trim().parse().unwrap_or(0));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let fin = go(&cfg, bomb).await;
    let peak = watch_pids.await.unwrap();
    assert_eq!(fin.cause, EndCause::TimeLimit, "the bomb ran until its time limit");
    assert!(peak > 8, "the bomb did fork (peak {peak} processes)");
    assert!(peak <= 64, "pids.max held: peak {peak} processes");
    assert!(!Path::new(&pids).exists(), "the job's cgroup is removed, its processes gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_uses_no_more_cpu_than_it_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cfg, _parent)) = contained(dir.path(), "cpu", 256) else { return };
    let spin =
        "timeout 3 sh -c 'while :; do :; done' & timeout 3 sh -c 'while :; do :; done' & wait";
    let started = Instant::now();
    let fin = go(&cfg, launch(4, dir.path(), spin, 1, 100)).await;
    let wall = started.elapsed().as_millis() as u64;
    let cpu = fin.usage.user_cpu_ms + fin.usage.sys_cpu_ms;
    eprintln!("two busy loops on 1 CPU for {wall} ms used {cpu} ms of CPU");
    assert!(cpu >= 1500, "the loops did run: {cpu} ms");
    assert!(cpu <= wall * 12 / 10 + 200, "1 CPU's quota held: {cpu} ms of CPU in {wall} ms");
}
