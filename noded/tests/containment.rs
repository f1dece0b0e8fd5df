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
//!   cgroup v2 (a cgroup2 mount   ──▶ the eBPF device program: open of the denied stand-in
//!   of our own, beside v1)           fails with EPERM, the other opens; a hierarchy without
//!                                    the memory controller refuses the job, saying so
//!   cgroup v2 (a fake directory) ──▶ memory.max, memory.swap.max 0, pids.max, cpu.max written;
//!                                    usage read from memory.peak, cpu.stat, memory.events;
//!                                    a missing controller or device program refuses the job
//!   a job in its namespaces      ──▶ PID 2 of its own; its own /tmp, /var/tmp, /dev/shm; no
//!                                    view of noded, its keys, other jobs' files; a uid of its
//!                                    own that can write nowhere else
//!   partition network            ──▶ host / a loopback of its own / none
//!   exit codes, signals, scancel ──▶ the script's own, through PID 1 of the namespace
//! ```

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_core::fsm::EndCause;
use chorus_core::job::ExitStatus;
use chorus_core::state::Network;
use chorus_noded::cgroup::devices_v2::{self, DeviceRule};
use chorus_noded::cgroup::{self, CgroupConfig, CgroupError, CgroupUsage, JobCgroup};
use chorus_noded::inventory::{FakeInventory, GpuDevice, gpu_devices};
use chorus_noded::runner::RunnerConfig;
use chorus_noded::testing::skip;
use chorus_noded::users::{JobUserMode, JobUsers};
use common::{config, go, launch, output, workdir};

/// Removes a test's parent cgroup when the test ends.
struct Parent(CgroupConfig);

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
    let cg = CgroupConfig { parent, max_pids, gpus, v2_root: None };
    match cgroup::probe(&cg) {
        Ok(_) => Some((
            Arc::new(RunnerConfig {
                cgroups: Some(cg.clone()),
                ..config("n1", &dir.join("state"))
            }),
            Parent(cg),
        )),
        Err(e) => {
            skip(format_args!("{test}: cgroups unusable here: {e}"));
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

/// Two stand-in GPUs in `dir/dev`: character devices with the numbers of /dev/full (1:7)
/// and /dev/urandom (1:9), which any process may open unless its device cgroup says
/// otherwise. `None`, saying why, where they cannot be made or opened.
fn stand_in_gpus(dir: &Path, test: &str) -> Option<(PathBuf, Vec<GpuDevice>)> {
    let devs = dir.join("dev");
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
            skip(format_args!("{test}: cannot make stand-in device nodes: {e}"));
            return None;
        }
    }
    if let Err(e) = std::fs::File::open(devs.join("fakegpu1")) {
        skip(format_args!(
            "{test}: stand-in device nodes cannot be opened here (nodev mount?): {e}"
        ));
        return None;
    }
    let inv =
        FakeInventory { count: 2, model: "fake".into(), devices: Some(devs.clone()), usage: None };
    Some((devs, gpu_devices(&inv).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_opens_its_gpu_and_not_the_others() {
    let dir = workdir();
    let Some((devs, gpus)) = stand_in_gpus(dir.path(), "gpu") else { return };
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

/// A cgroup2 hierarchy mounted at a directory of the test's own, next to whatever the machine
/// mounts (a process is in the v1 hierarchies and the v2 one at once); unmounted when the
/// test ends. `None`, saying why, where it cannot be mounted.
struct Cgroup2 {
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl Cgroup2 {
    fn mount(test: &str) -> Option<Cgroup2> {
        if !nix::unistd::geteuid().is_root() {
            skip(format_args!("{test}: not root: cannot mount a cgroup2 hierarchy"));
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("cgroup2");
        std::fs::create_dir(&mnt).unwrap();
        let none: Option<&str> = None;
        if let Err(e) = nix::mount::mount(
            Some("none"),
            &mnt,
            Some("cgroup2"),
            nix::mount::MsFlags::empty(),
            none,
        ) {
            skip(format_args!("{test}: cannot mount cgroup2 at {}: {e}", mnt.display()));
            return None;
        }
        Some(Cgroup2 { mnt, _dir: dir })
    }
}

impl Drop for Cgroup2 {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Removes a cgroup directory once the processes that were in it are gone.
fn rmdir_when_empty(dir: &Path) {
    for _ in 0..100 {
        match std::fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => return,
        }
    }
}

#[test]
fn on_cgroup_v2_the_device_program_denies_the_gpu_not_given_with_eperm() {
    let test = "v2 devices";
    let dir = workdir();
    let Some((devs, gpus)) = stand_in_gpus(dir.path(), test) else { return };
    let Some(v2) = Cgroup2::mount(test) else { return };
    let group = v2.mnt.join(format!("chorus-test-v2dev-{}", std::process::id()));
    std::fs::create_dir(&group).unwrap();
    // The job was given GPU 0: GPU 1 is denied, as JobCgroup::create denies it on v2.
    let denied = [DeviceRule::char_rwm(gpus[1].major, gpus[1].minor)];
    if let Err(e) = devices_v2::deny(&group, &denied) {
        rmdir_when_empty(&group);
        panic!("device program refused on a real cgroup2 hierarchy: {e}");
    }
    // A shell held on its stdin until it is in the group, as stepd is held on its pipe.
    let d = devs.display();
    let mut sh = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "read go; head -c1 {d}/fakegpu0 >/dev/null && echo opened0\n\
             head -c1 {d}/fakegpu1 >/dev/null && echo opened1 || echo denied1"
        ))
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(group.join("cgroup.procs"), sh.id().to_string()).unwrap();
    sh.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    sh.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    sh.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    sh.wait().unwrap();
    rmdir_when_empty(&group);
    assert_eq!(out, "opened0\ndenied1\n", "GPU 0 given, GPU 1 denied; stderr: {err}");
    assert!(err.contains("Operation not permitted"), "EPERM, as the device cgroup says: {err}");
    assert!(
        std::fs::File::open(devs.join("fakegpu1")).is_ok(),
        "outside the group the device still opens: the program is the group's alone"
    );
    assert!(!group.exists(), "the group (and with it the program) is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_hierarchy_without_the_memory_controller_refuses_jobs_rather_than_run_them_unlimited()
{
    let test = "v2 controllers";
    let Some(v2) = Cgroup2::mount(test) else { return };
    let controllers = std::fs::read_to_string(v2.mnt.join("cgroup.controllers")).unwrap();
    if controllers.split_whitespace().any(|c| c == "memory") {
        skip(format_args!(
            "{test}: this cgroup2 hierarchy has the memory controller: {controllers}"
        ));
        return;
    }
    let dir = workdir();
    let parent = format!("chorus-test/v2-refused-{}", std::process::id());
    let cg = CgroupConfig { parent, max_pids: 64, gpus: vec![], v2_root: Some(v2.mnt.clone()) };
    let why = cgroup::probe(&cg).unwrap_err().to_string();
    assert!(why.contains("lacks the") && why.contains("memory"), "{why}");
    // Through the runner, as a node with this config would run a job: refused, saying why.
    let cfg =
        Arc::new(RunnerConfig { cgroups: Some(cg), ..config("n1", &dir.path().join("state")) });
    let fin = go(&cfg, launch(31, dir.path(), "echo ran", 1, 100)).await;
    let out = output(dir.path(), 31);
    assert_eq!(fin.cause, EndCause::LaunchFailed, "{out}");
    assert!(!out.contains("ran") && out.contains("memory"), "{out}");
    assert!(!v2.mnt.join("chorus-test").exists(), "nothing was created in the hierarchy");
}

/// A directory that looks like a cgroup v2 hierarchy offering `controllers`, with the files
/// the kernel would create in the job's group `PARENT/job_7_0` that are read before written.
fn fake_v2(controllers: &str, parent: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("cgroup.controllers"), format!("{controllers}\n")).unwrap();
    std::fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
    let job = root.path().join(parent).join("job_7_0");
    std::fs::create_dir_all(&job).unwrap();
    std::fs::write(job.join("cpu.max"), "max 100000\n").unwrap();
    std::fs::write(job.join("memory.swap.max"), "max\n").unwrap();
    root
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn on_a_fake_v2_hierarchy_the_limits_go_to_the_v2_files_and_usage_comes_from_them() {
    let parent = "chorus/n1";
    let root = fake_v2("cpuset cpu io memory hugetlb pids rdma misc", parent);
    let cfg = CgroupConfig {
        parent: parent.into(),
        max_pids: 64,
        gpus: vec![],
        v2_root: Some(root.path().to_owned()),
    };
    let g = JobCgroup::create(&cfg, 7, 0, 2, 300, &[]).unwrap();
    let job = root.path().join(parent).join("job_7_0");
    assert_eq!(read(&job.join("memory.max")), (300u64 << 20).to_string());
    assert_eq!(read(&job.join("memory.swap.max")), "0", "no swap at all on v2");
    assert_eq!(read(&job.join("pids.max")), "64");
    assert_eq!(read(&job.join("cpu.max")), "200000 100000", "2 CPUs of quota per period");
    for d in ["", "chorus", "chorus/n1"] {
        let control = read(&root.path().join(d).join("cgroup.subtree_control"));
        assert_eq!(control, "+cpu +memory +pids", "{d:?} enables the controllers below it");
    }
    assert!(!job.join("cgroup.subtree_control").exists(), "the job's group enables nothing");
    g.add(4_000_000).unwrap();
    assert_eq!(read(&job.join("cgroup.procs")), "4000000", "a process joins through cgroup.procs");
    std::fs::write(job.join("cgroup.procs"), "").unwrap();

    std::fs::write(job.join("memory.peak"), "52428800\n").unwrap();
    std::fs::write(
        job.join("cpu.stat"),
        "usage_usec 1750000\nuser_usec 1500000\nsystem_usec 250000\n",
    )
    .unwrap();
    std::fs::write(job.join("memory.events"), "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n").unwrap();
    assert_eq!(
        g.usage(),
        CgroupUsage { max_rss_kb: 51200, user_cpu_ms: 1500, sys_cpu_ms: 250, oom_kills: 1 }
    );
}

#[test]
fn on_a_fake_v2_hierarchy_a_missing_controller_or_device_program_refuses_the_job() {
    let parent = "chorus/n2";
    let root = fake_v2("cpu pids", parent);
    let mut cfg = CgroupConfig {
        parent: parent.into(),
        max_pids: 64,
        gpus: vec![],
        v2_root: Some(root.path().to_owned()),
    };
    let why = JobCgroup::create(&cfg, 7, 0, 1, 100, &[]).err().expect("refused").to_string();
    assert!(why.contains("lacks the memory controller (it has: cpu pids)"), "{why}");

    // All controllers, and a GPU to deny: a plain directory cannot take the device program
    // (and without root it cannot even be loaded), so the job is refused, not run unisolated.
    std::fs::write(root.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
    cfg.gpus = vec![
        GpuDevice { index: 0, major: 195, minor: 0 },
        GpuDevice { index: 1, major: 195, minor: 1 },
    ];
    let err = JobCgroup::create(&cfg, 7, 0, 1, 100, &[0]).err().expect("refused");
    assert!(matches!(err, CgroupError::Devices { .. }), "{err}");
    assert!(err.to_string().contains("GPU isolation"), "{err}");
    // Given every GPU, nothing is denied: no program is needed.
    assert!(JobCgroup::create(&cfg, 7, 0, 1, 100, &[0, 1]).is_ok());
}

/// Runs `l` until it prints `ready`, then stops it as scancel does (SIGTERM, KillWait of
/// 30 s, SIGKILL). Returns how it ended and what it wrote.
async fn stop_once_ready(
    cfg: &Arc<RunnerConfig>,
    l: chorus_core::launch::LaunchSpec,
) -> (chorus_noded::runner::Finished, String) {
    let (job, dir) = (l.job_id, std::path::PathBuf::from(&l.work_dir));
    let (stop, rx) = tokio::sync::watch::channel(false);
    let pg = chorus_noded::runner::ProcessGroup::default();
    let run = tokio::spawn(chorus_noded::runner::run(
        Arc::clone(cfg),
        l,
        Duration::from_secs(30),
        pg,
        rx,
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !output(&dir, job).contains("ready") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    let fin = run.await.unwrap();
    (fin, output(&dir, job))
}

/// A runner that puts jobs in namespaces and gives each a uid of its own from 5000-5099, or
/// why not.
fn isolated(dir: &Path, node: &str) -> Option<Arc<RunnerConfig>> {
    let state = dir.join("state");
    if let Err(e) = chorus_noded::stepd::probe(Path::new(env!("CARGO_BIN_EXE_stepd")), &state, node)
    {
        skip(format_args!("namespaces: {e}"));
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
    let (fin, out) = stop_once_ready(&cfg, launch(23, dir.path(), trap, 1, 100)).await;
    assert_eq!(fin.cause, EndCause::Stopped);
    assert_eq!(fin.exit, ExitStatus { code: 7, signal: 0 }, "{out}");
    assert!(out.starts_with("ready\n") && out.contains("cleaned up"), "{out}");
    // The time limit: SIGTERM, then SIGKILL after KillWait (1 s in `go`).
    let mut late =
        launch(24, dir.path(), "trap 'echo got TERM' TERM; while true; do sleep 1; done", 1, 100);
    late.time_limit_secs = Some(2);
    let fin = go(&cfg, late).await;
    let out = output(dir.path(), 24);
    assert_eq!(fin.cause, EndCause::TimeLimit, "{out}");
    assert!(out.contains("DUE TO TIME LIMIT ***") && out.contains("got TERM"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_in_its_oci_bundle_as_its_user_in_its_cgroup() {
    let dir = workdir();
    let Some(cfg) = isolated(dir.path(), "n10") else { return };
    let ready = chorus_noded::oci::overlay_usable(&dir.path().join("overlay-check"))
        .and_then(|()| chorus_noded::oci::busybox_bundle(dir.path(), Path::new("crun")));
    let bundle = match ready {
        Ok(b) => b,
        Err(e) => {
            skip(format_args!(
                "containers: {e} (scripts/deps.sh installs crun and busybox-static)"
            ));
            return;
        }
    };
    let Some((contained, _parent)) = contained(dir.path(), "oci", 256) else { return };
    let cfg = Arc::new(RunnerConfig {
        oci_runtime: Some("crun".into()),
        cgroups: contained.cgroups.clone(),
        ..(*cfg).clone()
    });
    let script = "cat /etc/os-release; test -e /usr/bin/apt || echo no-host-files\n\
                  id -u; hostname; echo job $SLURM_JOB_ID in $(pwd)\n\
                  echo x > /tmp/mark && echo tmp-ok; touch /bin/x 2>/dev/null || echo no-root-write\n\
                  grep -c . /proc/self/cgroup >/dev/null && grep memory /proc/self/cgroup";
    let mut l = launch(31, dir.path(), script, 1, 100);
    l.env.push(("SLURM_JOB_ID".into(), "31".into()));
    l.container = Some(bundle.display().to_string());
    let fin = go(&cfg, l).await;
    let out = output(dir.path(), 31);
    assert_eq!(fin.exit, ExitStatus::default(), "{out}");
    let parent = &cfg.cgroups.as_ref().unwrap().parent;
    eprintln!("container job said:\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    let want = format!("job 31 in {}", dir.path().display());
    assert_eq!(
        lines[..7],
        ["ID=busybox-bundle", "no-host-files", "5000", "n10", &want, "tmp-ok", "no-root-write"],
        "the bundle's files, not the host's; the job's uid, hostname, environment and working \
         directory; its private /tmp; the bundle's root not writable: {out}"
    );
    assert!(
        lines[7].ends_with(&format!(":memory:/{parent}/job_31_0")),
        "the container runs in the job's own cgroup: {out}"
    );
    let owner = std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata(dir.path().join("slurm-31.out")).unwrap(),
    );
    assert_eq!(owner, nix::unistd::getuid().as_raw(), "the output is its submitter's again");
    let untouched = std::fs::read_dir(bundle.join("rootfs")).unwrap().count();
    assert_eq!(untouched, 6, "nothing was written into the bundle");
    let in_bundle = |id, script: &str| {
        let mut l = launch(id, dir.path(), script, 1, 100);
        l.container = Some(bundle.display().to_string());
        l
    };
    let failing = go(&cfg, in_bundle(32, "exit 4")).await;
    assert_eq!(failing.exit, ExitStatus { code: 4, signal: 0 }, "the script's own exit code");
    // scancel's SIGTERM reaches a script in a container that traps it (crun passes it on);
    // the script is the container's PID 1, so one that does not trap it waits for KillWait's
    // SIGKILL, as in Docker.
    let trap = "trap 'echo cleaned up; exit 5' TERM; echo ready; sleep 60 & wait";
    let (fin, out) = stop_once_ready(&cfg, in_bundle(33, trap)).await;
    assert_eq!(fin.exit, ExitStatus { code: 5, signal: 0 }, "{out}");
    assert!(out.contains("cleaned up"), "{out}");
}

/// The health check's cgroup check (health.rs): a child group can be made and removed. A
/// hierarchy where it cannot fails the check, naming cgroups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_check_fails_when_job_cgroups_cannot_be_made() {
    use chorus_core::node::Health;
    use chorus_noded::health::{Checker, HealthConfig};
    let dir = workdir();
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
        let gpus =
            Arc::new(FakeInventory { count: 0, model: "t".into(), devices: None, usage: None });
        Arc::new(Checker::new(hc, gpus, 0))
    };
    let good = cfg.cgroups.clone().unwrap();
    assert_eq!(health(good.clone()).run().await.0, Health::Healthy);
    // The probe group is gone again: the parent has no child left.
    let leftovers = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .filter_map(|h| h.ok())
        .map(|h| h.path().join(&parent.0.parent).join("job_0_0"))
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
