//! End to end: real `ctld`, `noded` and CLI binaries on loopback, driven as a user would.
//! Each test starts its own cluster (`chorus up` in a temporary directory).

use std::path::Path;
use std::time::Duration;

use chorus_integration::{Cluster, ClusterOpts, script};

const MIN: Duration = Duration::from_secs(60);

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn env_of(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn plain_job_runs_with_slurm_environment_and_output_file() {
    let c = Cluster::start(ClusterOpts::default());
    let w = c.work();
    script(
        &w,
        "env.sh",
        "#!/bin/bash\n#SBATCH -J envjob   # a trailing comment\n#SBATCH --time=5\nenv | sort\necho to-stderr >&2\n",
    );
    let out = c.run("sbatch", &["env.sh"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    let id: u32 =
        line.trim().strip_prefix("Submitted batch job ").expect("Slurm's line").parse().unwrap();
    assert_eq!(c.wait_done(&id.to_string(), MIN), "COMPLETED");
    let text = std::fs::read_to_string(w.join(format!("slurm-{id}.out")))
        .expect("slurm-%j.out in the submit dir");
    let env = env_of(&text);
    assert_eq!(env["SLURM_JOB_ID"], id.to_string());
    assert_eq!(env["SLURM_JOBID"], id.to_string());
    assert_eq!(env["SLURM_JOB_NAME"], "envjob");
    assert_eq!(env["SLURM_JOB_NODELIST"], "node1");
    assert_eq!(env["SLURM_NNODES"], "1");
    assert_eq!(env["SLURM_CPUS_ON_NODE"], "1");
    assert_eq!(env["SLURM_SUBMIT_DIR"], w.canonicalize().unwrap().display().to_string());
    assert_eq!(env["SLURM_JOB_PARTITION"], "debug");
    assert_eq!(env["SLURM_CLUSTER_NAME"], "chorus");
    assert!(env["SLURM_TASK_PID"].parse::<u32>().is_ok());
    assert!(!env.contains_key("SLURM_NTASKS"), "SLURM_NTASKS only with -n");
    assert!(text.contains("to-stderr"), "stderr goes to the same file without -e");
    assert_eq!(c.field(&id.to_string(), "ExitCode"), "0:0");
    let acct =
        stdout(&c.run(
            "sacct",
            &["-j", &id.to_string(), "-X", "-P", "-n", "--format=JobID,State,ExitCode"],
        ));
    assert_eq!(acct.trim(), format!("{id}|COMPLETED|0:0"));
}

#[test]
fn failing_job_is_failed_with_its_exit_code_and_wait_returns_it() {
    let c = Cluster::start(ClusterOpts::default());
    let out = c.run("sbatch", &["--wait", "-o", "fail-%j.txt", "--wrap", "echo before; exit 3"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "sbatch --wait exits with the job's code: {}",
        stderr(&out)
    );
    let id = stdout(&out).trim().strip_prefix("Submitted batch job ").unwrap().to_owned();
    assert_eq!(c.state(&id), "FAILED");
    assert_eq!(c.field(&id, "ExitCode"), "3:0");
    assert_eq!(c.field(&id, "Reason"), "NonZeroExitCode");
    let text = std::fs::read_to_string(c.work().join(format!("fail-{id}.txt"))).unwrap();
    assert_eq!(text, "before\n");
}

#[test]
fn array_with_throttle_never_runs_more_than_allowed() {
    let c = Cluster::start(ClusterOpts { nodes: 2, node_cpus: 4, ..Default::default() });
    let id = c.submit(&[
        "--array=0-5%2",
        "--wrap",
        "echo task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID; sleep 1",
    ]);
    let start = std::time::Instant::now();
    let mut max_running = 0;
    loop {
        let out = stdout(&c.run("squeue", &["-h", "-t", "all", "-j", &id.to_string(), "-o", "%T"]));
        let running = out.lines().filter(|l| l.trim() == "RUNNING").count();
        max_running = max_running.max(running);
        let pending = out.lines().any(|l| matches!(l.trim(), "PENDING" | "RUNNING" | "COMPLETING"));
        if !pending && !out.trim().is_empty() {
            break;
        }
        assert!(start.elapsed() < 2 * MIN, "array did not finish: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(max_running <= 2, "throttle %2 exceeded: {max_running} running at once");
    for t in 0..6 {
        let f = c.work().join(format!("slurm-{id}_{t}.out"));
        let text =
            std::fs::read_to_string(&f).unwrap_or_else(|_| panic!("{} missing", f.display()));
        assert_eq!(text.trim(), format!("task {t} of {id}"));
        assert_eq!(c.state(&format!("{id}_{t}")), "COMPLETED");
    }
}

#[test]
fn dependency_chain_orders_jobs_and_reports_never_satisfied() {
    let c = Cluster::start(ClusterOpts::default());
    let a = c.submit(&["-o", "chain.txt", "--open-mode=append", "--wrap", "sleep 3; echo a"]);
    let b = c.submit(&[
        &format!("--dependency=afterok:{a}"),
        "-o",
        "chain.txt",
        "--open-mode=append",
        "--wrap",
        "echo b",
    ]);
    let n = c.submit(&["-d", &format!("afternotok:{a}"), "--wrap", "echo never"]);
    c.wait_field(&b.to_string(), "Reason", "Dependency", MIN);
    assert_eq!(c.wait_done(&b.to_string(), MIN), "COMPLETED");
    assert_eq!(std::fs::read_to_string(c.work().join("chain.txt")).unwrap(), "a\nb\n");
    c.wait_field(&n.to_string(), "Reason", "DependencyNeverSatisfied", MIN);
    assert_eq!(c.state(&n.to_string()), "PENDING");
}

#[test]
fn time_limit_ends_in_timeout_after_sigterm() {
    let c = Cluster::start(ClusterOpts { kill_wait: 2, ..Default::default() });
    let id = c.submit(&[
        "--time=1",
        "-o",
        "to-%j.out",
        "--wrap",
        "trap 'echo got TERM' TERM; while true; do sleep 1; done",
    ]);
    let id = id.to_string();
    c.wait_state(&id, &["RUNNING"], MIN);
    assert_eq!(c.wait_done(&id, 3 * MIN), "TIMEOUT");
    let text = std::fs::read_to_string(c.work().join(format!("to-{id}.out"))).unwrap();
    assert!(text.contains("DUE TO TIME LIMIT ***"), "stepd message missing: {text}");
    assert!(text.contains("got TERM"), "SIGTERM comes first: {text}");
    assert_eq!(c.field(&id, "Reason"), "TimeLimit");
    assert_eq!(c.field(&id, "TimeLimit"), "00:01:00");
}

#[test]
fn scancel_cancels_running_and_pending_jobs() {
    let c =
        Cluster::start(ClusterOpts { nodes: 1, node_cpus: 1, kill_wait: 2, ..Default::default() });
    let run = c.submit(&["--wrap", "sleep 300"]).to_string();
    let pend = c.submit(&["--wrap", "sleep 300"]).to_string();
    c.wait_state(&run, &["RUNNING"], MIN);
    c.wait_field(&pend, "Reason", "Resources", MIN);
    assert!(c.run("scancel", &[&pend]).status.success());
    assert_eq!(c.wait_done(&pend, MIN), "CANCELLED");
    assert!(c.run("scancel", &[&run]).status.success());
    assert_eq!(c.wait_done(&run, MIN), "CANCELLED");
    assert_eq!(c.field(&run, "ExitCode"), "0:15");
}

#[test]
fn bad_input_gets_slurms_errors_and_submits_nothing() {
    let c = Cluster::start(ClusterOpts::default());
    let o = c.run("sbatch", &["nosuch.sh"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "sbatch: error: Unable to open file nosuch.sh\n");
    let o = c.run("sbatch", &["--time=abc", "--wrap", "true"]);
    assert_eq!(o.status.code(), Some(255));
    assert_eq!(stderr(&o), "sbatch: error: Invalid --time specification\n");
    script(&c.work(), "garbage.sh", "#!/bin/sh\n#SBATCH --bogus-thing=1\ntrue\n");
    let o = c.run("sbatch", &["garbage.sh"]);
    assert_ne!(o.status.code(), Some(0), "a bad #SBATCH line is refused");
    let o = c.run("sbatch", &["--ntasks=64", "--wrap", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o)
            .contains("Batch job submission failed: Requested node configuration is not available"),
        "{}",
        stderr(&o)
    );
    let o = c.run("squeue", &["-j", "999999"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("Invalid job id specified"), "{}", stderr(&o));
    let q = stdout(&c.run("squeue", &["-h", "-t", "all"]));
    assert_eq!(q.trim(), "", "nothing was submitted");
}

#[test]
fn acknowledged_jobs_survive_kill_9_of_the_controller() {
    use std::process::{Command, Stdio};
    let bins = chorus_integration::require_binaries();
    let dir = tempfile::tempdir().unwrap();
    let port = chorus_cli::free_ports(1).unwrap()[0];
    let addr = format!("127.0.0.1:{port}");
    let conf = dir.path().join("chorus.toml");
    // The CA where ctld looks by default (STATE_DIR/ca), and an administrator's certificate.
    let lines = admin_credentials(&dir.path().join("ctld/ca"), dir.path());
    std::fs::write(
        &conf,
        format!("cluster_name = \"chorus\"\ncontrollers = [\"{addr}\"]\n{lines}"),
    )
    .unwrap();
    let start_ctld = || {
        Command::new(bins.join("ctld"))
            .args([
                "--state-dir",
                &dir.path().join("ctld").display().to_string(),
                "--listen",
                &addr,
                // Small, so the restart goes through a snapshot *and* the log after it.
                "--snapshot-every",
                "6",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("ctld.log")).unwrap())
            .spawn()
            .unwrap()
    };
    let sbatch = |args: &[&str]| {
        Command::new(bins.join("sbatch"))
            .args(args)
            .env("CHORUS_CONF", &conf)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let mut ctld = KillOnDrop(start_ctld());
    let mut ids = vec![];
    let t0 = std::time::Instant::now();
    while ids.len() < 20 {
        let o =
            sbatch(&["--parsable", "-H", "-J", &format!("durable{}", ids.len()), "--wrap", "true"]);
        if o.status.success() {
            ids.push(stdout(&o).trim().to_owned());
        } else {
            assert!(t0.elapsed() < MIN, "ctld never accepted jobs: {}", stderr(&o));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    ctld.0.kill().unwrap(); // SIGKILL
    ctld.0.wait().unwrap();
    let mut ctld = KillOnDrop(start_ctld());
    let squeue = || {
        Command::new(bins.join("squeue"))
            .args(["-h", "-o", "%i %j %T %r"])
            .env("CHORUS_CONF", &conf)
            .output()
            .unwrap()
    };
    let t0 = std::time::Instant::now();
    let listing = loop {
        let o = squeue();
        if o.status.success() {
            break stdout(&o);
        }
        assert!(t0.elapsed() < MIN, "ctld did not come back: {}", stderr(&o));
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(dir.path().join("ctld.log")).unwrap();
    assert!(log.contains("restored snapshot"), "the restart did not go through a snapshot:\n{log}");
    for (n, id) in ids.iter().enumerate() {
        let want = format!("{id} durable{n} PENDING JobHeldUser");
        assert!(
            listing.lines().any(|l| l.trim() == want),
            "missing `{want}` after restart in:\n{listing}"
        );
    }
    ctld.0.kill().unwrap();
    ctld.0.wait().unwrap();
}

/// Makes a CA in `ca` (`chorus ca init`) and an administrator's certificate from it in
/// `out`; returns the client configuration lines that use them.
fn admin_credentials(ca: &Path, out: &Path) -> String {
    let bins = chorus_integration::require_binaries();
    let chorus = |args: &[&str]| {
        let o = std::process::Command::new(bins.join("chorus")).args(args).output().unwrap();
        assert!(o.status.success(), "chorus {args:?}: {}", stderr(&o));
        stdout(&o)
    };
    let (ca, out) = (ca.display().to_string(), out.join("admin").display().to_string());
    chorus(&["ca", "init", &ca]);
    chorus(&["user", "cert", "admin", "--uid", "0", "--admin", "--ca-dir", &ca, "--out", &out])
}

/// A controller started by a test, killed even when the test fails half-way.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Also GPU accounting: the two stand-in GPUs report 40 % and 1000 MiB each when sampled,
/// which sacct shows as 80 % and 2000 MiB for the job that has both.
#[test]
fn gpus_are_allocated_exported_accounted_and_refused_beyond_what_nodes_have() {
    let c = Cluster::start(ClusterOpts {
        nodes: 1,
        node_cpus: 4,
        node_gpus: Some(2),
        node_gpu_fake_usage: Some("40:1000".into()),
        gpu_sample_every: Some(1),
        ..Default::default()
    });
    let id = c.submit(&[
        "--gres=gpu:1",
        "-o",
        "g1.out",
        "--wrap",
        "echo $CUDA_VISIBLE_DEVICES $SLURM_GPUS_ON_NODE",
    ]);
    // Long enough for a sample, the first being taken a second after the start.
    let two = c.submit(&[
        "--gpus-per-node=2",
        "-o",
        "g2.out",
        "--wrap",
        "echo $CUDA_VISIBLE_DEVICES; sleep 2.5",
    ]);
    assert_eq!(c.wait_done(&id.to_string(), MIN), "COMPLETED");
    assert_eq!(c.wait_done(&two.to_string(), MIN), "COMPLETED");
    assert_eq!(std::fs::read_to_string(c.work().join("g1.out")).unwrap(), "0 1\n");
    assert_eq!(std::fs::read_to_string(c.work().join("g2.out")).unwrap(), "0,1\n");
    let fields = "JobID,TRESUsageInAve,TRESUsageInMax";
    let acct = stdout(&c.run("sacct", &["-j", &two.to_string(), "-o", fields, "-P", "-n"]));
    let step = acct.lines().find(|l| l.starts_with(&format!("{two}.batch|"))).unwrap_or_default();
    let gpu = "gres/gpumem=2000M,gres/gpuutil=80,mem=";
    assert_eq!(step.matches(gpu).count(), 2, "Ave and Max: {acct}");
    assert!(acct.starts_with(&format!("{two}||\n")), "nothing on the job line: {acct}");
    let o = c.run("sbatch", &["--gres=gpu:3", "--wrap", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("Requested node configuration is not available"), "{}", stderr(&o));
    let node = stdout(&c.run("scontrol", &["show", "node", "node1"]));
    assert!(node.contains("Gres=gpu:"), "{node}");
}

#[test]
fn outputs_travel_over_the_api_when_the_node_cannot_see_the_working_directory() {
    let c = Cluster::start(ClusterOpts::default());
    // A directory the node cannot reach (it does not exist here): the job runs in the
    // node's staging directory and its output comes back through the controller.
    let remote = c.dir.path().join("elsewhere");
    let id = c.submit(&[
        "-D",
        &remote.display().to_string(),
        "--wrap",
        "echo from $SLURM_JOB_ID; echo oops >&2",
    ]);
    assert_eq!(c.wait_done(&id.to_string(), MIN), "COMPLETED");
    let file = remote.join(format!("slurm-{id}.out"));
    assert!(!file.exists(), "nothing on the submit side before it is fetched");
    let o = c.run("chorus", &["output", &id.to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), file.display().to_string());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("from {id}\noops\n"));
    // Fetching again rewrites nothing.
    assert_eq!(stdout(&c.run("chorus", &["output", &id.to_string()])), "");
}

#[test]
fn scontrol_hold_release_update_and_requeue() {
    let c =
        Cluster::start(ClusterOpts { nodes: 1, node_cpus: 1, kill_wait: 1, ..Default::default() });
    let held = c.submit(&["-H", "--wrap", "true"]).to_string();
    c.wait_field(&held, "Reason", "JobHeldUser", MIN);
    assert!(
        c.run("scontrol", &["update", &format!("JobId={held}"), "TimeLimit=5", "JobName=renamed"])
            .status
            .success()
    );
    assert_eq!(c.field(&held, "TimeLimit"), "00:05:00");
    assert_eq!(c.field(&held, "JobName"), "renamed");
    assert!(c.run("scontrol", &["release", &held]).status.success());
    assert_eq!(c.wait_done(&held, MIN), "COMPLETED");

    // One CPU: while `run` holds it, `pend` stays pending and can be held.
    let run = c.submit(&["--wrap", "sleep 300"]).to_string();
    c.wait_state(&run, &["RUNNING"], MIN);
    let pend = c.submit(&["--wrap", "true"]).to_string();
    assert!(c.run("scontrol", &["hold", &pend]).status.success());
    assert!(c.field(&pend, "Reason").starts_with("JobHeld"), "{}", c.field(&pend, "Reason"));
    assert_eq!(c.field(&pend, "Priority"), "0");

    assert!(c.run("scontrol", &["requeue", &run]).status.success());
    c.wait_field(&run, "Restarts", "1", MIN);
    c.wait_state(&run, &["RUNNING"], MIN);
    let o = c.run("scontrol", &["update", "JobId=999999", "TimeLimit=5"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("Invalid job id specified"), "{}", stderr(&o));

    assert!(c.run("scontrol", &["release", &pend]).status.success());
    assert!(c.run("scancel", &[&run]).status.success());
    assert_eq!(c.wait_done(&run, MIN), "CANCELLED");
    assert_eq!(c.wait_done(&pend, MIN), "COMPLETED");
}

#[test]
fn scancel_signal_reaches_the_job_without_ending_it() {
    let c = Cluster::start(ClusterOpts { kill_wait: 1, ..Default::default() });
    let id = c.submit(&[
        "-o",
        "sig.out",
        "--wrap",
        "trap 'echo got USR1' USR1; echo ready; while :; do sleep 0.2; done",
    ]);
    let id = id.to_string();
    c.wait_state(&id, &["RUNNING"], MIN);
    let out = c.work().join("sig.out");
    let t0 = std::time::Instant::now();
    while !std::fs::read_to_string(&out).unwrap_or_default().contains("ready") {
        assert!(t0.elapsed() < MIN, "job never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(c.run("scancel", &["--signal=USR1", &id]).status.success());
    while !std::fs::read_to_string(&out).unwrap_or_default().contains("got USR1") {
        assert!(
            t0.elapsed() < MIN,
            "USR1 never arrived: {}",
            std::fs::read_to_string(&out).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.state(&id), "RUNNING", "a signal alone does not end the job");
    assert!(c.run("scancel", &[&id]).status.success());
    assert_eq!(c.wait_done(&id, MIN), "CANCELLED");
}

/// Submits with `CHORUS_TEST_VAR=from-submitter` in sbatch's environment and returns the
/// job's `name=value` lines for the variables the script prints.
fn exported(c: &Cluster, export: Option<&str>, tag: &str) -> String {
    let w = c.work();
    let out = format!("export-{tag}.out");
    let mut args = vec!["--parsable", "-o", &out];
    let flag;
    if let Some(e) = export {
        flag = format!("--export={e}");
        args.push(&flag);
    }
    args.extend([
        "--wrap",
        "echo VAR=${CHORUS_TEST_VAR-unset} EXTRA=${EXTRA-unset} ENV=${SLURM_EXPORT_ENV-unset}",
    ]);
    let o = c.run_with(&w, "sbatch", &args, &[("CHORUS_TEST_VAR", "from-submitter")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_owned();
    assert_eq!(c.wait_done(&id, MIN), "COMPLETED");
    std::fs::read_to_string(w.join(out)).unwrap().trim().to_owned()
}

#[test]
fn export_decides_what_the_job_inherits() {
    let c = Cluster::start(ClusterOpts::default());
    assert_eq!(exported(&c, None, "default"), "VAR=from-submitter EXTRA=unset ENV=unset");
    assert_eq!(exported(&c, Some("NONE"), "none"), "VAR=unset EXTRA=unset ENV=NONE");
    assert_eq!(exported(&c, Some("EXTRA=1"), "list"), "VAR=unset EXTRA=1 ENV=EXTRA=1");
    assert_eq!(
        exported(&c, Some("ALL,EXTRA=2"), "all-plus"),
        "VAR=from-submitter EXTRA=2 ENV=ALL,EXTRA=2"
    );
}

#[test]
fn error_file_test_only_and_stored_options() {
    let c = Cluster::start(ClusterOpts::default());
    let id = c.submit(&[
        "-o",
        "out-%j.txt",
        "-e",
        "err-%x-%j.txt",
        "-J",
        "split",
        "--comment=keep me",
        "--account=physics",
        "--mail-type=END",
        "--wrap",
        "echo out; echo err >&2",
    ]);
    let id = id.to_string();
    assert_eq!(c.wait_done(&id, MIN), "COMPLETED");
    assert_eq!(std::fs::read_to_string(c.work().join(format!("out-{id}.txt"))).unwrap(), "out\n");
    assert_eq!(
        std::fs::read_to_string(c.work().join(format!("err-split-{id}.txt"))).unwrap(),
        "err\n"
    );
    assert_eq!(c.field(&id, "Account"), "physics");
    let show = stdout(&c.run("scontrol", &["show", "job", &id]));
    assert!(show.contains("Comment=keep me"), "{show}");

    let before = stdout(&c.run("squeue", &["-h", "-t", "all", "-o", "%i"]));
    let o = c.run("sbatch", &["--test-only", "--wrap", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    let msg = stderr(&o);
    assert!(
        msg.starts_with("sbatch: Job ")
            && msg.contains(" to start at ")
            && msg.trim_end().ends_with("using 1 processors on nodes node1 in partition debug"),
        "{msg}"
    );
    assert_eq!(
        stdout(&c.run("squeue", &["-h", "-t", "all", "-o", "%i"])),
        before,
        "--test-only submits nothing"
    );
}

#[test]
fn a_missing_configuration_or_a_dead_controller_is_a_clear_error() {
    let bins = chorus_integration::require_binaries();
    let dir = tempfile::tempdir().unwrap();
    let run = |conf: &std::path::Path| {
        std::process::Command::new(bins.join("squeue")).env("CHORUS_CONF", conf).output().unwrap()
    };
    let o = run(&dir.path().join("nope.toml"));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot read the Chorus configuration"), "{}", stderr(&o));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = dir.path().join("dead.toml");
    // Credentials of a CA of its own: nothing is wrong but that no controller answers.
    let lines = admin_credentials(&dir.path().join("ca"), dir.path());
    std::fs::write(
        &conf,
        format!("cluster_name = \"c\"\ncontrollers = [\"127.0.0.1:{port}\"]\n{lines}"),
    )
    .unwrap();
    let o = run(&conf);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("Unable to contact slurm controller"), "{}", stderr(&o));
}

#[test]
fn chorus_up_stops_the_cluster_loudly_when_a_daemon_dies() {
    let mut c = Cluster::start(ClusterOpts::default());
    let noded = c.daemon_pids("noded");
    assert_eq!(noded.len(), 2, "two node agents running");
    // SAFETY: kill(2) of a process this test's cluster started.
    unsafe { libc::kill(noded[0], libc::SIGKILL) };
    let status = c.wait_exit(MIN).expect("chorus up noticed the dead node agent");
    assert!(!status.success());
    let t0 = std::time::Instant::now();
    while !c.daemon_pids("ctld").is_empty() || !c.daemon_pids("noded").is_empty() {
        assert!(t0.elapsed() < MIN, "daemons left behind");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_job_over_its_memory_ends_out_of_memory_in_sacct() {
    let c = Cluster::start(ClusterOpts::default());
    let log = std::fs::read_to_string(c.dir.path().join("state/log/node1.log")).unwrap_or_default();
    if !log.contains("jobs run in cgroups") {
        chorus_noded::testing::skip(format_args!(
            "out of memory: noded runs without cgroups here (not root, or no hierarchy):\n{log}"
        ));
        return;
    }
    let id = c.submit(&["--mem=50M", "--wrap", "dd if=/dev/zero of=/dev/null bs=200M count=1"]);
    assert_eq!(c.wait_done(&id.to_string(), MIN), "OUT_OF_MEMORY");
    let out = c.run("sacct", &["-j", &id.to_string(), "-P", "-o", "JobID,State,ExitCode"]);
    assert_eq!(
        stdout(&out),
        format!("JobID|State|ExitCode\n{id}|OUT_OF_MEMORY|0:125\n{id}.batch|OUT_OF_MEMORY|0:125\n"),
        "as Slurm's sacct shows it"
    );
    assert_eq!(c.field(&id.to_string(), "Reason"), "OutOfMemory");
    let text = std::fs::read_to_string(c.work().join(format!("slurm-{id}.out"))).unwrap();
    assert!(text.contains(&format!("oom-kill event(s) in StepId={id}.batch")), "{text}");
}

/// `(node, short state)` of every node, from `sinfo -N`.
fn node_states(c: &Cluster) -> Vec<(String, String)> {
    let out = stdout(&c.run("sinfo", &["-h", "-N", "-o", "%N %t"]));
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, s)| (n.to_owned(), s.trim().to_owned()))
        .collect()
}

/// Waits (up to `timeout`) until `ok` holds for `what` produces; panics with the last value.
fn wait_until<T: std::fmt::Debug>(
    timeout: Duration,
    mut what: impl FnMut() -> T,
    ok: impl Fn(&T) -> bool,
) -> T {
    let start = std::time::Instant::now();
    loop {
        let v = what();
        if ok(&v) {
            return v;
        }
        assert!(start.elapsed() < timeout, "still {v:?} after {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn health_check_program_failing_drains_the_node_and_passing_resumes_it() {
    // The program fails on a node while a flag file named after it exists, and says why.
    let hc = tempfile::tempdir().unwrap();
    let flags = hc.path().to_owned();
    let prog = script(
        &flags,
        "healthcheck.sh",
        &format!(
            "#!/bin/sh\nf={}/\"$SLURMD_NODENAME\".bad\nif [ -e \"$f\" ]; then cat \"$f\"; exit 1; fi\nexit 0\n",
            flags.display()
        ),
    );
    let c = Cluster::start(ClusterOpts {
        nodes: 2,
        node_cpus: 2,
        noded_args: vec![
            format!("--health-check-program={}", prog.display()),
            "--health-check-interval=1".into(),
        ],
        ..Default::default()
    });
    std::fs::write(flags.join("node1.bad"), "bad flag\n").unwrap();

    // sinfo -R: the reason, NHC-style, set by root, on node1 only.
    let reasons = wait_until(
        MIN,
        || stdout(&c.run("sinfo", &["-R"])),
        |out| out.lines().any(|l| l.starts_with("NHC: bad flag")),
    );
    let line = reasons.lines().find(|l| l.starts_with("NHC: bad flag")).unwrap().to_owned();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[cols.len() - 3], "root", "{reasons}");
    assert_eq!(cols.last(), Some(&"node1"), "{reasons}");
    assert!(reasons.starts_with("REASON"), "{reasons}");
    let states = node_states(&c);
    assert!(states.contains(&("node1".into(), "drain".into())), "{states:?}");
    assert!(states.contains(&("node2".into(), "idle".into())), "{states:?}");

    // No new job goes to the drained node: four jobs, all on node2 (two at a time).
    let jobs: Vec<u32> = (0..4).map(|_| c.submit(&["--wrap", "sleep 1"])).collect();
    for id in &jobs {
        assert_eq!(c.wait_done(&id.to_string(), 2 * MIN), "COMPLETED");
        assert_eq!(c.field(&id.to_string(), "NodeList"), "node2", "job {id}");
    }

    // An operator's drain is the operator's: health checks passing never lift it.
    let o = c.run("scontrol", &["update", "NodeName=node2", "State=DRAIN", "Reason=maintenance"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Healthy again: node1 resumes by itself and takes work.
    std::fs::remove_file(flags.join("node1.bad")).unwrap();
    wait_until(MIN, || node_states(&c), |s| s.contains(&("node1".into(), "idle".into())));
    let after = c.submit(&["--wrap", "true"]);
    assert_eq!(c.wait_done(&after.to_string(), MIN), "COMPLETED");
    assert_eq!(c.field(&after.to_string(), "NodeList"), "node1");
    let reasons = stdout(&c.run("sinfo", &["-R", "-h", "-o", "%E|%N"]));
    assert_eq!(reasons.trim(), "maintenance|node2", "node2 kept its operator's drain");
}

/// `sbatch --container=BUNDLE` (a relative path: the submit directory's) runs the script in
/// the bundle's root filesystem on the node, with Slurm's environment, and its output comes
/// back as for any job. Needs root (namespaces), crun and busybox-static (scripts/deps.sh).
#[test]
fn sbatch_container_runs_the_script_in_the_oci_bundle() {
    if !nix_is_root() {
        chorus_noded::testing::skip("containers: not root (jobs in containers need namespaces)");
        return;
    }
    let c = Cluster::start(ClusterOpts { nodes: 1, ..Default::default() });
    let work = c.work();
    let ready = chorus_noded::oci::overlay_usable(&work.join("overlay-check"))
        .and_then(|()| chorus_noded::oci::busybox_bundle(&work, Path::new("crun")));
    if let Err(e) = ready {
        chorus_noded::testing::skip(format_args!(
            "containers: {e} (scripts/deps.sh installs crun and busybox-static)"
        ));
        return;
    }
    let id = c.submit(&[
        "--container=bundle",
        "-o",
        "ct-%j.out",
        "--wrap",
        "cat /etc/os-release; test -e /usr/bin/apt || echo not-the-host; echo $SLURM_JOB_ID $(hostname)",
    ]);
    assert_eq!(c.wait_done(&id.to_string(), MIN), "COMPLETED");
    let out = std::fs::read_to_string(work.join(format!("ct-{id}.out"))).unwrap();
    assert_eq!(out, format!("ID=busybox-bundle\nnot-the-host\n{id} node1\n"));
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// With a minimum stake, a node gets work only once its operator has bonded it; `chorus
/// operator` and `chorus node` show and change the books, and a bond beyond the balance is
/// refused with the reason.
#[test]
fn a_node_gets_work_once_its_operator_bonds_the_minimum_stake() {
    let opts = ClusterOpts { nodes: 1, min_stake: 100, node_stake: Some(0), ..Default::default() };
    let c = Cluster::start(opts);
    let id = c.submit(&["--wrap", "echo staked"]).to_string();
    c.wait_field(&id, "Reason", "Resources", MIN);
    let text = |o: std::process::Output| {
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    };
    let status = text(c.run("chorus", &["node", "status"]));
    assert!(status.contains("no (stake below 100)"), "{status}");
    assert!(c.run("chorus", &["operator", "deposit", "op1", "1000"]).status.success());
    let too_much =
        c.run("chorus", &["node", "register", "node1", "--operator", "op1", "--stake", "5000"]);
    assert!(!too_much.status.success());
    assert!(text(too_much).contains("operator op1 has 1000 credits, 5000 needed"));
    let ok = c.run("chorus", &["node", "register", "node1", "--operator", "op1", "--stake", "100"]);
    assert!(ok.status.success(), "{}", text(ok));
    assert_eq!(c.wait_done(&id, MIN), "COMPLETED");
    let balance = text(c.run("chorus", &["operator", "balance", "op1"]));
    assert!(balance.starts_with("Operator=op1 Balance=900 Earned=0 Slashed=0\n"), "{balance}");
    assert!(balance.contains("Node=node1 Stake=100 Agreements=0"), "{balance}");
    let status = text(c.run("chorus", &["node", "status", "node1"]));
    assert!(
        status.lines().nth(1).is_some_and(|l| l.contains("op1") && l.ends_with("yes")),
        "{status}"
    );
}
