//! Containment, for real: jobs run by the runner in cgroups and namespaces on this machine.
//! Needs root, a cgroup hierarchy and namespaces; where one is missing each test says so and
//! skips.
//!
//! ```text
//!   memory hog (200 MB in 50 MB) ──▶ OUT_OF_MEMORY, 0:125, Slurm's message; a neighbour lives
//!   fork bomb (pids.max 64)      ──▶ never more than 64 processes; ends at its time limit;
//!                                    nothing left behind, cgroup gone
//!   2 busy loops on 1 CPU        ──▶ CPU time ≈ 1 CPU × wall time, not 2
//!   unassigned stand-in GPU      ──▶ open fails; the assigned one opens
//!   a job in its namespaces      ──▶ PID 2 of its own; its own /tmp, /var/tmp, /dev/shm; no
//!                                    view of noded, its keys, other jobs' files; a uid of its
//!                                    own that can write nowhere else
//!   partition network            ──▶ host / a loopback of its own / none
//!   exit codes, signals, scancel ──▶ the script's own, through PID 1 of the namespace
//! ```

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_core::fsm::EndCause;
use chorus_core::job::ExitStatus;
use chorus_core::state::Network;
use chorus_noded::cgroup::{self, CgroupConfig};
use chorus_noded::inventory::{FakeInventory, GpuDevice, gpu_devices};
use chorus_noded::runner::RunnerConfig;
use chorus_noded::users::{JobUserMode, JobUsers};
use common::{config, go, launch, output, workdir};

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
                cgroups: Some(cg.clone()),
                ..config("n1", &dir.join("state"))
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
    let dir = workdir();
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
    let dir = workdir();
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
    let dir = workdir();
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
    let dir = workdir();
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
    let inv =
        FakeInventory { count: 2, model: "fake".into(), devices: Some(devs.clone()), usage: None };
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

/// A runner that puts jobs in namespaces and gives each a uid of its own from 5000-5099, or
/// why not.
fn isolated(dir: &Path, node: &str) -> Option<Arc<RunnerConfig>> {
    let state = dir.join("state");
    if let Err(e) = chorus_noded::stepd::probe(Path::new(env!("CARGO_BIN_EXE_stepd")), &state, node)
    {
        eprintln!("SKIP namespaces: {e}");
        return None;
    }
    Some(Arc::new(RunnerConfig {
        namespaces: true,
        users: JobUsers::new(JobUserMode::Range, (5000, 5099)),
        ..config(node, &state)
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_sees_only_its_own_processes_files_and_hostname() {
    let dir = workdir();
    let Some(cfg) = isolated(dir.path(), "n7") else { return };
    let work = dir.path();
    // What noded keeps: another job's directory and a key, which no job may read.
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("keys")).unwrap();
    std::fs::write(state.join("keys/node.key"), "secret key").unwrap();
    // A finished job's output, in the same working directory.
    let first = go(&cfg, launch(8, work, "echo private", 1, 100)).await;
    assert_eq!((first.exit, output(work, 8)), (ExitStatus::default(), "private\n".into()));

    let looker = format!(
        "echo pid $$; ls -d /proc/[0-9]* | wc -l; test -e /proc/{noded} && echo sees-noded\n\
         hostname; id -u\n\
         echo x > /tmp/mark; echo y > /var/tmp/vmark; echo z > /dev/shm/smark; ls /tmp /dev/shm\n\
         ls {state}/jobs; cat {state}/keys/node.key 2>/dev/null || echo no-key\n\
         cat {work}/slurm-8.out 2>/dev/null || echo no-output-of-8\n\
         touch /etc/chorus-mark 2>/dev/null || echo no-etc; touch {work}/mark 2>/dev/null || echo no-work-dir",
        noded = std::process::id(),
        state = state.display(),
        work = work.display(),
    );
    let neighbour = launch(9, work, "echo n > /tmp/neighbour; sleep 2", 1, 100);
    let (look, neighbour) = tokio::join!(
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            go(&cfg, launch(6, work, &looker, 1, 100)).await
        },
        go(&cfg, neighbour)
    );
    let out = output(work, 6);
    assert_eq!(
        (look.exit, neighbour.exit),
        (ExitStatus::default(), ExitStatus::default()),
        "{out}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid 2", "the script is the first task of its PID namespace: {out}");
    let procs: u32 = lines[1].trim().parse().unwrap();
    assert!(procs <= 5, "only its own processes in /proc ({procs}): {out}");
    assert_eq!(
        lines[2..].join("\n"),
        [
            "n7",
            "5002",
            "/dev/shm:",
            "smark",
            "",
            "/tmp:",
            "mark",
            "vmark",
            "6.0",
            "no-key",
            "no-output-of-8",
            "no-etc",
            "no-work-dir",
        ]
        .join("\n"),
        "the node's name; a uid of its own (5000 and 5001 went to jobs 8 and 9, and are not reused yet); its own \
         /tmp, /var/tmp and /dev/shm, not the neighbour's; only its own job directory; no key, \
         no other job's output, nowhere to write outside its own directories"
    );
    for leaked in ["/tmp/mark", "/var/tmp/vmark", "/dev/shm/smark", "/etc/chorus-mark"] {
        assert!(!Path::new(leaked).exists(), "{leaked} stayed in the job's namespace");
    }
    assert!(!state.join("jobs/6.0/tmp").exists(), "the job's /tmp went with it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_network_is_the_hosts_a_loopback_of_its_own_or_none() {
    let dir = workdir();
    let Some(cfg) = isolated(dir.path(), "n8") else { return };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut outs = vec![];
    for (id, network) in [(11, Network::Host), (12, Network::Loopback), (13, Network::None)] {
        let mut l = launch(id, dir.path(), "", 1, 100);
        l.script = format!(
            "#!/bin/bash\n(echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo connected\n\
             (echo > /dev/tcp/127.0.0.1/1) 2>&1 | grep -om1 'refused\\|unreachable'\n"
        );
        l.network = network;
        assert_eq!(go(&cfg, l).await.exit, ExitStatus::default(), "{network}");
        outs.push(output(dir.path(), id));
    }
    assert_eq!(
        outs,
        ["connected\nrefused\n", "refused\n", "unreachable\n"],
        "host: the node's listener answers; loopback: a lo of its own; none: no network"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_its_namespace_a_job_ends_with_its_own_status_and_hears_scancel() {
    let dir = workdir();
    let Some(cfg) = isolated(dir.path(), "n9") else { return };
    let code = go(&cfg, launch(21, dir.path(), "exit 3", 1, 100)).await;
    assert_eq!(code.exit, ExitStatus { code: 3, signal: 0 });
    let killed = go(&cfg, launch(22, dir.path(), "kill -9 $$", 1, 100)).await;
    assert_eq!(killed.exit, ExitStatus { code: 0, signal: 9 });
    // SIGTERM from scancel reaches the script, which may clean up before it ends.
    let trap = "trap 'echo cleaned up; exit 7' TERM; echo ready; sleep 60 & wait";
    let (stop, rx) = tokio::sync::watch::channel(false);
    let pg = chorus_noded::runner::ProcessGroup::default();
    let run = tokio::spawn(chorus_noded::runner::run(
        Arc::clone(&cfg),
        launch(23, dir.path(), trap, 1, 100),
        Duration::from_secs(30),
        pg,
        rx,
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !output(dir.path(), 23).contains("ready") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    let fin = run.await.unwrap();
    let out = output(dir.path(), 23);
    assert_eq!(fin.cause, EndCause::Stopped);
    assert_eq!(fin.exit, ExitStatus { code: 7, signal: 0 }, "{out}");
    assert!(out.starts_with("ready\n") && out.contains("cleaned up"), "{out}");
}
