//! Containment, for real: jobs run by the runner in cgroups on this machine. Needs root and a
//! cgroup hierarchy; where either is missing each test says so and skips.
//!
//! ```text
//!   memory hog (200 MB in 50 MB) ──▶ OUT_OF_MEMORY, 0:125, Slurm's message; a neighbour lives
//!   fork bomb (pids.max 64)      ──▶ never more than 64 processes; ends at its time limit;
//!                                    nothing left behind, cgroup gone
//!   2 busy loops on 1 CPU        ──▶ CPU time ≈ 1 CPU × wall time, not 2
//! ```

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_core::fsm::EndCause;
use chorus_core::job::ExitStatus;
use chorus_noded::cgroup::{self, CgroupConfig};
use chorus_noded::inventory::{FakeInventory, GpuDevice, gpu_devices};
use chorus_noded::runner::RunnerConfig;
use common::{go, launch, output};

/// Removes a test's parent cgroup when the test ends.
struct Parent(String);

impl Drop for Parent {
    fn drop(&mut self) {
        cgroup::remove_empty(&self.0);
    }
}

/// A runner config with cgroups under a parent of this test's own, or why not.
fn contained(dir: &Path, test: &str, max_pids: i64) -> Option<(Arc<RunnerConfig>, Parent)> {
    contained_with(dir, test, max_pids, vec![])
}

fn contained_with(
    dir: &Path,
    test: &str,
    max_pids: i64,
    gpus: Vec<GpuDevice>,
) -> Option<(Arc<RunnerConfig>, Parent)> {
    let parent = format!("chorus-test/{test}-{}", std::process::id());
    let cg = CgroupConfig { parent, max_pids, gpus };
    match cgroup::probe(&cg) {
        Ok(_) => Some((
            Arc::new(RunnerConfig {
                node_name: "n1".into(),
                state_dir: dir.join("state"),
                max_output_bytes: 1 << 20,
                cgroups: Some(cg.clone()),
                namespaces: false,
            }),
            Parent(cg.parent),
        )),
        Err(e) => {
            eprintln!("SKIP {test}: cgroups unusable here: {e}");
            None
        }
    }
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
    // A low bar: on a busy 2-core machine the loops may get less than their CPU.
    assert!(cpu >= 500, "the loops did run: {cpu} ms");
    assert!(cpu <= wall * 12 / 10 + 200, "1 CPU's quota held: {cpu} ms of CPU in {wall} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_opens_its_gpu_and_not_the_others() {
    let dir = tempfile::tempdir().unwrap();
    // Stand-in GPUs: character devices with the numbers of /dev/full and /dev/urandom, which
    // any process may open unless its device cgroup says otherwise.
    let devs = dir.path().join("dev");
    std::fs::create_dir_all(&devs).unwrap();
    for (i, minor) in [(0, 7), (1, 9)] {
        let node = devs.join(format!("fakegpu{i}"));
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o666);
        if let Err(e) = nix::sys::stat::mknod(
            &node,
            nix::sys::stat::SFlag::S_IFCHR,
            mode,
            nix::sys::stat::makedev(1, minor),
        ) {
            eprintln!("SKIP gpu: cannot make stand-in device nodes: {e}");
            return;
        }
    }
    if let Err(e) = std::fs::File::open(devs.join("fakegpu1")) {
        eprintln!("SKIP gpu: stand-in device nodes cannot be opened here (nodev mount?): {e}");
        return;
    }
    let inv = FakeInventory { count: 2, model: "fake".into(), devices: Some(devs.clone()) };
    let gpus = gpu_devices(&inv).unwrap();
    let Some((cfg, _parent)) = contained_with(dir.path(), "gpu", 256, gpus) else { return };
    let d = devs.display();
    let script = format!(
        "head -c1 {d}/fakegpu0 >/dev/null && echo opened0\n\
         head -c1 {d}/fakegpu1 >/dev/null 2>&1 && echo opened1 || echo denied1"
    );
    let mut l = launch(5, dir.path(), &script, 1, 100);
    l.gpus = vec![0];
    let fin = go(&cfg, l).await;
    assert_eq!(fin.exit, ExitStatus::default());
    assert_eq!(output(dir.path(), 5), "opened0\ndenied1\n", "GPU 0 given, GPU 1 denied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_sees_only_its_own_files_shared_memory_and_hostname() {
    let dir = tempfile::tempdir().unwrap();
    if let Err(e) = chorus_noded::isolation::probe(&dir.path().join("state"), "n7") {
        eprintln!("SKIP namespaces: {e}");
        return;
    }
    // A work directory anyone may use: the job below runs as nobody.
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let state = dir.path().join("state");
    let cfg = Arc::new(RunnerConfig {
        node_name: "n7".into(),
        state_dir: state.clone(),
        max_output_bytes: 1 << 20,
        cgroups: None,
        namespaces: true,
    });
    let jobs = state.join("jobs");
    let looker = format!(
        "ls {}; hostname; id -u; echo x > /dev/shm/mark; ls /dev/shm; cat {}/8.0/script >/dev/null 2>&1 || echo hidden",
        jobs.display(),
        jobs.display()
    );
    let mut look = launch(6, &work, &looker, 1, 100);
    (look.uid, look.gid) = (65534, 65534);
    let neighbour = launch(8, &work, "sleep 2", 1, 100);
    let (look, neighbour) = tokio::join!(go(&cfg, look), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        go(&cfg, neighbour).await
    });
    let out = std::fs::read_to_string(work.join("slurm-6.out")).unwrap_or_default();
    assert_eq!(look.exit, ExitStatus::default(), "{out}");
    assert_eq!(neighbour.exit, ExitStatus::default());
    assert_eq!(
        out, "6.0\nn7\n65534\nmark\nhidden\n",
        "only its own job directory, the node's name, its user, its own /dev/shm, not the \
         neighbour's script"
    );
    assert!(
        !Path::new("/dev/shm/mark").exists(),
        "the job's shared memory stayed in its namespace"
    );
}

/// The health check's cgroup check (health.rs): a child group can be made and removed. A
/// hierarchy where it cannot fails the check, naming cgroups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_check_fails_when_job_cgroups_cannot_be_made() {
    use chorus_core::node::Health;
    use chorus_noded::health::{Checker, HealthConfig};
    let dir = tempfile::tempdir().unwrap();
    let Some((cfg, parent)) = contained(dir.path(), "health", 64) else { return };
    let health = |cgroups: CgroupConfig| {
        let hc = HealthConfig {
            node_name: "n1".into(),
            program: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(30),
            min_free_mb: 0,
            state_dir: dir.path().to_owned(),
            cgroups: Some(cgroups),
        };
        let gpus = Arc::new(FakeInventory { count: 0, model: "t".into(), devices: None });
        Arc::new(Checker::new(hc, gpus, 0))
    };
    let good = cfg.cgroups.clone().unwrap();
    assert_eq!(health(good.clone()).run().await.0, Health::Healthy);
    // The probe group is gone again: the parent has no child left.
    let leftovers = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .filter_map(|h| h.ok())
        .map(|h| h.path().join(&parent.0).join("job_0_0"))
        .filter(|p| p.exists())
        .collect::<Vec<_>>();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A parent that is a file, not a directory: no group can be made under it.
    let broken = CgroupConfig { parent: format!("{}/cgroup.procs", good.parent), ..good };
    let (h, _) = health(broken).run().await;
    match h {
        Health::Unhealthy(r) => assert!(r.starts_with("cgroup unusable: "), "{r}"),
        Health::Healthy => panic!("a hierarchy without room for job groups passed"),
    }
}
