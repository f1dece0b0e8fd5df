//! Golden tests of `chorus_cli::format`: Slurm 22.05's printed output, pinned byte for byte.
//!
//! The expected lines are copied from `slurm-ref/observed/*.txt` (a two-node reference
//! cluster, `node[1-2]`, 2 CPUs and 8000 MB each, one partition `debug`). The jobs and nodes
//! are rebuilt here through `fsm::apply`, with the same names, times and resources. Times are
//! printed in UTC (the capture's zone).
//!
//! Where Chorus cannot print what Slurm printed, the expected line is Slurm's with that field
//! changed, and the test says so at the change:
//! * Chorus gives every array task its own job id, so the job Slurm numbered 83 (submitted
//!   after array 82 of six tasks) is 88 here;
//! * nodes do not report CPU load or free memory (`N/A`), nor when they were last busy;
//! * the controller does not record the submitting process's session id (`Sid=0`);
//! * a job's `.batch` step ends when the job does (Slurm's step can end a little later).

use chorus_cli::format::sacct::{Parsable, SacctOpts, sacct};
use chorus_cli::format::scontrol::{ShowOpts, show_jobs, show_nodes, show_partitions};
use chorus_cli::format::sinfo::{SinfoOpts, sinfo};
use chorus_cli::format::squeue::{SqueueOpts, squeue};
use chorus_cli::format::{Tz, collapse_arrays};
use chorus_core::fsm::{
    Command, EndCause, JobReport, JobUpdate, NodeRegistration, Placement, Plan, apply,
};
use chorus_core::job::{
    ExitStatus, GpuUsage, Job, JobId, JobSpec, NodeAlloc, PendingReason, Usage,
};
use chorus_core::node::{GpuInfo, Node, NodeResources, NodeState};
use chorus_core::slurm::array::parse_array_spec;
use chorus_core::slurm::dependency::parse_dependency;
use chorus_core::slurm::time::TimeLimit;
use chorus_core::state::{ClusterConfig, ClusterState};

const UTC: Tz = Tz::Fixed(0);

/// 2026-11-22T19:06:15: the reference machine booted.
const BOOT: u64 = 1_795_374_375;
/// 2026-11-22T21:32:23: slurmd started.
const SLURMD_START: u64 = 1_795_383_143;
/// 2026-11-22T21:35:15: the four running jobs were submitted.
const T_SUBMIT_RUN: u64 = 1_795_383_315;
/// 2026-11-22T21:35:18: they started; the pending jobs were submitted.
const T_START: u64 = 1_795_383_318;
/// 2026-11-22T21:35:21: `squeue` ran.
const T_SQUEUE: u64 = 1_795_383_321;
/// 2026-11-22T21:35:36: `scontrol show job 72`, `sinfo -N -l` ran.
const T_SHOW: u64 = 1_795_383_336;

const WORK_DIR: &str = "/tmp/slurm-ref-capture";

fn lines(ls: &[&str]) -> String {
    ls.iter().map(|l| format!("{l}\n")).collect()
}

fn spec(name: &str) -> JobSpec {
    JobSpec::new(name, "#!/bin/sh\ntrue\n", WORK_DIR)
}

fn minutes(spec: JobSpec, m: u32) -> JobSpec {
    JobSpec { time_limit: Some(TimeLimit::Minutes(m)), ..spec }
}

/// A cluster like the reference one, driven only through `fsm::apply`.
struct Sim {
    st: ClusterState,
}

impl Sim {
    fn new(first_job_id: JobId) -> Self {
        let config =
            ClusterConfig { cluster_name: "ref".into(), first_job_id, ..ClusterConfig::default() };
        let mut sim = Sim { st: ClusterState::new(config) };
        for (name, port) in [("node1", 17001), ("node2", 17002)] {
            sim.apply(Command::RegisterNode {
                reg: Box::new(NodeRegistration {
                    name: name.into(),
                    addr: format!("127.0.0.1:{port}"),
                    hostname: "vm".into(),
                    resources: NodeResources { cpus: 2, mem_mb: 8000, gpus: vec![] },
                    boot_time: BOOT,
                    version: "22.05.8".into(),
                    os: "Linux 6.18.44-fc-v595 #1 SMP PREEMPT_DYNAMIC @0".into(),
                    running: vec![],
                    session: 0,
                    public_key: None,
                }),
                now: SLURMD_START,
            });
        }
        sim
    }

    fn apply(&mut self, cmd: Command) {
        let what = format!("{cmd:?}");
        apply(&mut self.st, cmd).unwrap_or_else(|e| panic!("{what}: {e}"));
    }

    fn submit(&mut self, spec: JobSpec, now: u64) -> Vec<JobId> {
        match apply(&mut self.st, Command::Submit { spec: Box::new(spec), now }) {
            Ok(chorus_core::fsm::Applied::Submitted(ids)) => ids,
            other => panic!("submit: {other:?}"),
        }
    }

    fn reasons(&mut self, reasons: &[(JobId, PendingReason)], now: u64) {
        self.apply(Command::ApplyPlan {
            plan: Plan { starts: vec![], reasons: reasons.to_vec() },
            now,
        });
    }

    /// Starts `job` with `cpus` CPUs (256 MB each) on each of `nodes`.
    fn start(&mut self, job: JobId, nodes: &[&str], cpus: u32, now: u64) {
        let alloc = nodes
            .iter()
            .map(|n| NodeAlloc {
                node: (*n).into(),
                cpus,
                mem_mb: 256 * u64::from(cpus),
                gpus: vec![],
            })
            .collect();
        self.apply(Command::ApplyPlan {
            plan: Plan { starts: vec![Placement::single(job, alloc)], reasons: vec![] },
            now,
        });
        assert!(self.st.jobs[&job].start_time.is_some(), "job {job} did not start");
    }

    fn end(&mut self, job: JobId, code: i32, signal: i32, cause: EndCause, rss_kb: u64, now: u64) {
        let usage = Usage { max_rss_kb: rss_kb, ..Usage::default() };
        self.end_with(job, ExitStatus { code, signal }, cause, usage, now);
    }

    fn end_with(&mut self, job: JobId, exit: ExitStatus, cause: EndCause, usage: Usage, now: u64) {
        let j = &self.st.jobs[&job];
        let report = JobReport {
            replica: 0,
            digest: [0; 32],
            signature: vec![],
            job,
            attempt: j.restarts,
            node: j.alloc[0].node.clone(),
            exit,
            cause,
            usage,
            outputs: vec![],
        };
        self.apply(Command::JobEnded { report: Box::new(report), now });
    }

    /// Adds `gpu1`: 2 CPUs, 8000 MB and two GPUs.
    fn add_gpu_node(&mut self) {
        let gpu = |index| GpuInfo {
            index,
            uuid: format!("GPU-{index}"),
            model: "a100".into(),
            memory_mb: 40_960,
            driver: "535.104.05".into(),
        };
        self.apply(Command::RegisterNode {
            reg: Box::new(NodeRegistration {
                name: "gpu1".into(),
                addr: "127.0.0.1:17003".into(),
                hostname: "vm".into(),
                resources: NodeResources { cpus: 2, mem_mb: 8000, gpus: vec![gpu(0), gpu(1)] },
                boot_time: BOOT,
                version: "22.05.8".into(),
                os: "Linux".into(),
                running: vec![],
                session: 0,
                public_key: None,
            }),
            now: SLURMD_START,
        });
    }

    /// Starts `job` on `gpu1` with one CPU and GPU 0.
    fn start_on_gpu(&mut self, job: JobId, now: u64) {
        let alloc = vec![NodeAlloc { node: "gpu1".into(), cpus: 1, mem_mb: 256, gpus: vec![0] }];
        self.apply(Command::ApplyPlan {
            plan: Plan { starts: vec![Placement::single(job, alloc)], reasons: vec![] },
            now,
        });
        assert!(self.st.jobs[&job].start_time.is_some(), "job {job} did not start");
    }

    fn set_priority(&mut self, jobs: &[JobId], priority: u32) {
        let update = JobUpdate { priority: Some(priority), ..Default::default() };
        self.apply(Command::Update { jobs: jobs.to_vec(), update, now: T_START });
    }

    fn jobs(&self) -> Vec<Job> {
        self.st.jobs.values().cloned().collect()
    }

    fn nodes(&self) -> Vec<Node> {
        self.st.nodes.values().cloned().collect()
    }

    fn job(&self, id: JobId) -> Job {
        self.st.jobs[&id].clone()
    }
}

/// The state `squeue.txt` was captured in: four running 10-minute jobs fill both nodes;
/// pending: Resources, Priority, held (user/admin), dependency, begin time, an array, and a
/// job of user slurmref.
fn busy_cluster() -> Sim {
    let mut sim = Sim::new(72);
    let run: Vec<JobId> = (1..=4)
        .flat_map(|i| sim.submit(minutes(spec(&format!("run{i}")), 10), T_SUBMIT_RUN))
        .collect();
    assert_eq!(run, [72, 73, 74, 75]);
    let prio: Vec<_> = run.iter().map(|&j| (j, PendingReason::Priority)).collect();
    sim.reasons(&prio, T_SUBMIT_RUN);
    for (job, node) in [(72, "node1"), (73, "node1"), (74, "node2"), (75, "node2")] {
        sim.start(job, &[node], 1, T_START);
    }

    assert_eq!(sim.submit(minutes(spec("waitres"), 5), T_START), [76]);
    assert_eq!(sim.submit(minutes(spec("waitprio"), 5), T_START), [77]);
    assert_eq!(sim.submit(JobSpec { hold: true, ..spec("helduser") }, T_START), [78]);
    assert_eq!(sim.submit(JobSpec { hold: true, ..spec("heldadmin") }, T_START), [79]);
    sim.apply(Command::Hold { jobs: vec![79], admin: true, now: T_START });
    let dep = parse_dependency("afterok:72").expect("valid");
    assert_eq!(sim.submit(JobSpec { dependency: Some(dep), ..spec("dep") }, T_START), [80]);
    let begin = T_START + 3600;
    assert_eq!(sim.submit(JobSpec { begin: Some(begin), ..spec("later") }, T_START), [81]);
    let array = parse_array_spec("0-5%2").expect("valid");
    let arr = sim.submit(JobSpec { array: Some(array), ..minutes(spec("arr"), 1) }, T_START);
    assert_eq!(arr, (82..=87).collect::<Vec<_>>());
    let user = JobSpec {
        user: "slurmref".into(),
        uid: 1001,
        gid: 1001,
        work_dir: "/tmp/slurm-ref-capture-user".into(),
        ..minutes(spec("userjob"), 5)
    };
    assert_eq!(sim.submit(user, T_START), [88]);

    let mut reasons = vec![
        (76, PendingReason::Resources),
        (77, PendingReason::Priority),
        (80, PendingReason::Dependency),
        (81, PendingReason::BeginTime),
        (88, PendingReason::Priority),
    ];
    reasons.extend(arr.iter().map(|&j| (j, PendingReason::Priority)));
    sim.reasons(&reasons, T_START);

    // Slurm's priority/basic counts one per job, an array being one job.
    for (job, p) in [(72, 4294901703), (73, 4294901702), (74, 4294901701), (75, 4294901700)] {
        sim.set_priority(&[job], p);
    }
    for (job, p) in [(76, 4294901699), (77, 4294901698), (80, 4294901696), (81, 4294901695)] {
        sim.set_priority(&[job], p);
    }
    sim.set_priority(&arr, 4294901694);
    sim.set_priority(&[88], 4294901693);
    sim
}

fn squeue_opts() -> SqueueOpts {
    SqueueOpts { tz: UTC, ..Default::default() }
}

fn squeue_at(sim: &Sim, opts: &SqueueOpts) -> String {
    squeue(&sim.jobs(), opts, T_SQUEUE)
}

const SQUEUE_DEFAULT: &[&str] = &[
    "             JOBID PARTITION     NAME     USER ST       TIME  NODES NODELIST(REASON)",
    "                76     debug  waitres     root PD       0:00      1 (Resources)",
    "                77     debug waitprio     root PD       0:00      1 (Priority)",
    "                80     debug      dep     root PD       0:00      1 (Dependency)",
    "                81     debug    later     root PD       0:00      1 (BeginTime)",
    "        82_[0-5%2]     debug      arr     root PD       0:00      1 (Priority)",
    // Slurm's 83.
    "                88     debug  userjob slurmref PD       0:00      1 (Priority)",
    "                79     debug heldadmi     root PD       0:00      1 (JobHeldAdmin)",
    "                78     debug helduser     root PD       0:00      1 (JobHeldUser)",
    "                72     debug     run1     root  R       0:03      1 node1",
    "                73     debug     run2     root  R       0:03      1 node1",
    "                74     debug     run3     root  R       0:03      1 node2",
    "                75     debug     run4     root  R       0:03      1 node2",
];

#[test]
fn squeue_default_columns_sort_and_fold_pending_array_tasks() {
    let sim = busy_cluster();
    assert_eq!(squeue_at(&sim, &squeue_opts()), lines(SQUEUE_DEFAULT));
}

#[test]
fn squeue_o_with_the_default_format_spelled_out_prints_the_same() {
    let sim = busy_cluster();
    let opts = SqueueOpts {
        format: Some("%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R".into()),
        ..squeue_opts()
    };
    assert_eq!(squeue_at(&sim, &opts), lines(SQUEUE_DEFAULT));
}

#[test]
fn squeue_h_drops_the_header() {
    let sim = busy_cluster();
    let opts = SqueueOpts { header: false, ..squeue_opts() };
    assert_eq!(squeue_at(&sim, &opts), lines(&SQUEUE_DEFAULT[1..]));
}

#[test]
fn squeue_l_prints_the_date_long_state_and_time_limit() {
    let sim = busy_cluster();
    let opts = SqueueOpts { long: true, ..squeue_opts() };
    let expected = lines(&[
        "Sun Nov 22 21:35:21 2026",
        "             JOBID PARTITION     NAME     USER    STATE       TIME TIME_LIMI  NODES NODELIST(REASON)",
        "                76     debug  waitres     root  PENDING       0:00      5:00      1 (Resources)",
        "                77     debug waitprio     root  PENDING       0:00      5:00      1 (Priority)",
        "                80     debug      dep     root  PENDING       0:00 UNLIMITED      1 (Dependency)",
        "                81     debug    later     root  PENDING       0:00 UNLIMITED      1 (BeginTime)",
        "        82_[0-5%2]     debug      arr     root  PENDING       0:00      1:00      1 (Priority)",
        "                88     debug  userjob slurmref  PENDING       0:00      5:00      1 (Priority)",
        "                79     debug heldadmi     root  PENDING       0:00 UNLIMITED      1 (JobHeldAdmin)",
        "                78     debug helduser     root  PENDING       0:00 UNLIMITED      1 (JobHeldUser)",
        "                72     debug     run1     root  RUNNING       0:03     10:00      1 node1",
        "                73     debug     run2     root  RUNNING       0:03     10:00      1 node1",
        "                74     debug     run3     root  RUNNING       0:03     10:00      1 node2",
        "                75     debug     run4     root  RUNNING       0:03     10:00      1 node2",
    ]);
    assert_eq!(squeue_at(&sim, &opts), expected);
}

#[test]
fn squeue_format_with_many_specifiers() {
    let sim = busy_cluster();
    // Job 83/88 of user slurmref is left out: its group and account come from the
    // reference machine's user database and Slurm's association table.
    let jobs: Vec<Job> = sim.jobs().into_iter().filter(|j| j.spec.uid == 0).collect();
    let opts = SqueueOpts {
        format: Some(
            "%i|%A|%F|%K|%j|%u|%U|%g|%t|%T|%r|%R|%M|%l|%L|%D|%C|%m|%P|%Q|%p|%q|%a|%V|%S|%e|%N|%B|%Z|%o|%E|%h|%y"
                .into(),
        ),
        ..squeue_opts()
    };
    let expected = lines(&[
        "JOBID|JOBID|ARRAY_JOB_ID|ARRAY_TASK_ID|NAME|USER|UID|GROUP|ST|STATE|REASON|NODELIST(REASON)|TIME|TIME_LIMIT|TIME_LEFT|NODES|CPUS|MIN_MEMORY|PARTITION|PRIORITY|PRIORITY|QOS|ACCOUNT|SUBMIT_TIME|START_TIME|END_TIME|NODELIST|EXEC_HOST|WORK_DIR|COMMAND|DEPENDENCY|OVER_SUBSCRIBE|NICE",
        "76|76|76|N/A|waitres|root|0|root|PD|PENDING|Resources|(Resources)|0:00|5:00|5:00|1|1|256M|debug|4294901699|0.99998472724110|normal|root|2026-11-22T21:35:18|N/A|N/A||n/a|/tmp/slurm-ref-capture|(null)|(null)|OK|0",
        "77|77|77|N/A|waitprio|root|0|root|PD|PENDING|Priority|(Priority)|0:00|5:00|5:00|1|1|256M|debug|4294901698|0.99998472700826|normal|root|2026-11-22T21:35:18|N/A|N/A||n/a|/tmp/slurm-ref-capture|(null)|(null)|OK|0",
        "80|80|80|N/A|dep|root|0|root|PD|PENDING|Dependency|(Dependency)|0:00|UNLIMITED|UNLIMITED|1|1|256M|debug|4294901696|0.99998472654260|normal|root|2026-11-22T21:35:18|N/A|N/A||n/a|/tmp/slurm-ref-capture|(null)|afterok:72(unfulfilled)|OK|0",
        "81|81|81|N/A|later|root|0|root|PD|PENDING|BeginTime|(BeginTime)|0:00|UNLIMITED|UNLIMITED|1|1|256M|debug|4294901695|0.99998472630977|normal|root|2026-11-22T21:35:18|2026-11-22T22:35:18|NONE||n/a|/tmp/slurm-ref-capture|(null)|(null)|OK|0",
        "82_[0-5%2]|82|82|0-5%2|arr|root|0|root|PD|PENDING|Priority|(Priority)|0:00|1:00|1:00|1|1|256M|debug|4294901694|0.99998472607694|normal|root|2026-11-22T21:35:18|N/A|N/A||n/a|/tmp/slurm-ref-capture|(null)|(null)|OK|0",
        "79|79|79|N/A|heldadmin|root|0|root|PD|PENDING|JobHeldAdmin|(JobHeldAdmin)|0:00|UNLIMITED|UNLIMITED|1|1|256M|debug|0|0.00000000000000|normal|root|2026-11-22T21:35:18|N/A|N/A||n/a|/tmp/slurm-ref-capture|(null)|(null)|OK|0",
        "78|78|78|N/A|helduser|root|0|root|PD|PENDING|JobHeldUser|(JobHeldUser)|0:00|UNLIMITED|UNLIMITED|1|1|256M|debug|0|0.00000000000000|normal|root|2026-11-22T21:35:18|N/A|N/A||n/a|/tmp/slurm-ref-capture|(null)|(null)|OK|0",
        "72|72|72|N/A|run1|root|0|root|R|RUNNING|None|node1|0:03|10:00|9:57|1|1|256M|debug|4294901703|0.99998472817242|normal|root|2026-11-22T21:35:15|2026-11-22T21:35:18|2026-11-22T21:45:18|node1|node1|/tmp/slurm-ref-capture|(null)|(null)|OK|0",
        "73|73|73|N/A|run2|root|0|root|R|RUNNING|None|node1|0:03|10:00|9:57|1|1|256M|debug|4294901702|0.99998472793959|normal|root|2026-11-22T21:35:15|2026-11-22T21:35:18|2026-11-22T21:45:18|node1|node1|/tmp/slurm-ref-capture|(null)|(null)|OK|0",
        "74|74|74|N/A|run3|root|0|root|R|RUNNING|None|node2|0:03|10:00|9:57|1|1|256M|debug|4294901701|0.99998472770676|normal|root|2026-11-22T21:35:15|2026-11-22T21:35:18|2026-11-22T21:45:18|node2|node2|/tmp/slurm-ref-capture|(null)|(null)|OK|0",
        "75|75|75|N/A|run4|root|0|root|R|RUNNING|None|node2|0:03|10:00|9:57|1|1|256M|debug|4294901700|0.99998472747393|normal|root|2026-11-22T21:35:15|2026-11-22T21:35:18|2026-11-22T21:45:18|node2|node2|/tmp/slurm-ref-capture|(null)|(null)|OK|0",
    ]);
    assert_eq!(squeue(&jobs, &opts, T_SQUEUE), expected);
}

#[test]
fn squeue_capital_o_pads_and_cuts_to_twenty_without_separators() {
    let sim = busy_cluster();
    let opts = SqueueOpts {
        format_long: Some(
            "JobID,ArrayJobID,ArrayTaskID,Name,UserName,State,StateCompact,Reason,TimeUsed,TimeLimit,NumNodes,NumCPUs,MinMemory,SubmitTime,StartTime,Dependency,WorkDir"
                .into(),
        ),
        ..squeue_opts()
    };
    let out = squeue_at(&sim, &opts);
    let expected = lines(&[
        "JOBID               ARRAY_JOB_ID        ARRAY_TASK_ID       NAME                USER                STATE               ST                  REASON              TIME                TIME_LIMIT          NODES               CPUS                MIN_MEMORY          SUBMIT_TIME         START_TIME          DEPENDENCY          WORK_DIR            ",
        "76                  76                  N/A                 waitres             root                PENDING             PD                  Resources           0:00                5:00                1                   1                   256M                2026-11-22T21:35:18 N/A                 (null)              /tmp/slurm-ref-captu",
        "77                  77                  N/A                 waitprio            root                PENDING             PD                  Priority            0:00                5:00                1                   1                   256M                2026-11-22T21:35:18 N/A                 (null)              /tmp/slurm-ref-captu",
        "80                  80                  N/A                 dep                 root                PENDING             PD                  Dependency          0:00                UNLIMITED           1                   1                   256M                2026-11-22T21:35:18 N/A                 afterok:72(unfulfill/tmp/slurm-ref-captu",
        "81                  81                  N/A                 later               root                PENDING             PD                  BeginTime           0:00                UNLIMITED           1                   1                   256M                2026-11-22T21:35:18 2026-11-22T22:35:18 (null)              /tmp/slurm-ref-captu",
        "82                  82                  0-5%2               arr                 root                PENDING             PD                  Priority            0:00                1:00                1                   1                   256M                2026-11-22T21:35:18 N/A                 (null)              /tmp/slurm-ref-captu",
        // Slurm's 83.
        "88                  88                  N/A                 userjob             slurmref            PENDING             PD                  Priority            0:00                5:00                1                   1                   256M                2026-11-22T21:35:18 N/A                 (null)              /tmp/slurm-ref-captu",
        "79                  79                  N/A                 heldadmin           root                PENDING             PD                  JobHeldAdmin        0:00                UNLIMITED           1                   1                   256M                2026-11-22T21:35:18 N/A                 (null)              /tmp/slurm-ref-captu",
        "78                  78                  N/A                 helduser            root                PENDING             PD                  JobHeldUser         0:00                UNLIMITED           1                   1                   256M                2026-11-22T21:35:18 N/A                 (null)              /tmp/slurm-ref-captu",
        "72                  72                  N/A                 run1                root                RUNNING             R                   None                0:03                10:00               1                   1                   256M                2026-11-22T21:35:15 2026-11-22T21:35:18 (null)              /tmp/slurm-ref-captu",
        "73                  73                  N/A                 run2                root                RUNNING             R                   None                0:03                10:00               1                   1                   256M                2026-11-22T21:35:15 2026-11-22T21:35:18 (null)              /tmp/slurm-ref-captu",
        "74                  74                  N/A                 run3                root                RUNNING             R                   None                0:03                10:00               1                   1                   256M                2026-11-22T21:35:15 2026-11-22T21:35:18 (null)              /tmp/slurm-ref-captu",
        "75                  75                  N/A                 run4                root                RUNNING             R                   None                0:03                10:00               1                   1                   256M                2026-11-22T21:35:15 2026-11-22T21:35:18 (null)              /tmp/slurm-ref-captu",
    ]);
    assert_eq!(out, expected);
}

#[test]
fn squeue_r_lists_every_array_task() {
    let sim = busy_cluster();
    let arr: Vec<Job> = sim.jobs().into_iter().filter(|j| j.array.is_some()).collect();
    let opts = SqueueOpts { expand_arrays: true, ..squeue_opts() };
    let expected = lines(&[
        "             JOBID PARTITION     NAME     USER ST       TIME  NODES NODELIST(REASON)",
        "              82_0     debug      arr     root PD       0:00      1 (Priority)",
        "              82_1     debug      arr     root PD       0:00      1 (Priority)",
        "              82_2     debug      arr     root PD       0:00      1 (Priority)",
        "              82_3     debug      arr     root PD       0:00      1 (Priority)",
        "              82_4     debug      arr     root PD       0:00      1 (Priority)",
        "              82_5     debug      arr     root PD       0:00      1 (Priority)",
    ]);
    assert_eq!(squeue(&arr, &opts, T_SQUEUE), expected);
    // Without -r they fold into one line; one task alone prints as itself.
    let one: Vec<Job> = arr.iter().filter(|j| j.array == Some((82, 4))).cloned().collect();
    let expected = lines(&[
        "             JOBID PARTITION     NAME     USER ST       TIME  NODES NODELIST(REASON)",
        "              82_4     debug      arr     root PD       0:00      1 (Priority)",
    ]);
    assert_eq!(squeue(&one, &squeue_opts(), T_SQUEUE), expected);
}

#[test]
fn squeue_array_tasks_that_run_leave_the_folded_line() {
    let mut sim = busy_cluster();
    // As in scancel.txt: 82_5 cancelled, 82_0 running, 82_1-4 pending on Resources.
    sim.apply(Command::Cancel { jobs: vec![87], uid: 0, now: T_SQUEUE });
    sim.apply(Command::Cancel { jobs: vec![72], uid: 0, now: T_SQUEUE });
    sim.end(72, 0, 15, EndCause::Stopped, 0, T_SQUEUE);
    sim.start(82, &["node1"], 1, T_SQUEUE);
    sim.reasons(&(83..=86).map(|j| (j, PendingReason::Resources)).collect::<Vec<_>>(), T_SQUEUE);
    let arr: Vec<Job> = sim.jobs().into_iter().filter(|j| j.array.is_some()).collect();
    let opts = SqueueOpts { expand_arrays: true, format: Some("%i %T %r".into()), ..squeue_opts() };
    let pending_or_running: Vec<Job> =
        arr.iter().filter(|j| !j.state.is_terminal()).cloned().collect();
    assert_eq!(
        squeue(&pending_or_running, &opts, T_SQUEUE),
        lines(&[
            "JOBID STATE REASON",
            "82_1 PENDING Resources",
            "82_2 PENDING Resources",
            "82_3 PENDING Resources",
            "82_4 PENDING Resources",
            "82_0 RUNNING None",
        ])
    );
    let opts = SqueueOpts { format: Some("%i %T %r".into()), ..squeue_opts() };
    assert_eq!(
        squeue(&pending_or_running, &opts, T_SQUEUE),
        lines(&["JOBID STATE REASON", "82_[1-4%2] PENDING Resources", "82_0 RUNNING None"])
    );
}

#[test]
fn squeue_o_widths_cut_and_right_justify() {
    // scancel.txt: `squeue -t all -o '%.8i %.10j %.2t %.12T %.20r' -S i` printed job 22 as
    // `      22 my job nam CA    CANCELLED          JobHeldUser` once cancelled; here it is
    // still held (Chorus's FSM resets the reason of a job cancelled while pending).
    let mut sim = Sim::new(22);
    sim.submit(JobSpec { hold: true, ..spec("my job name") }, T_START);
    let opts = SqueueOpts {
        format: Some("%.8i %.10j %.2t %.12T %.20r".into()),
        sort: Some("i".into()),
        ..squeue_opts()
    };
    assert_eq!(
        squeue(&sim.jobs(), &opts, T_SQUEUE),
        lines(&[
            "   JOBID       NAME ST        STATE               REASON",
            "      22 my job nam PD      PENDING          JobHeldUser",
        ])
    );
    // sbatch.txt: `squeue -h -j 22 -o '[%j]'`.
    let opts = SqueueOpts { header: false, format: Some("[%j]".into()), ..squeue_opts() };
    assert_eq!(squeue(&sim.jobs(), &opts, T_SQUEUE), "[my job name]\n");
}

#[test]
fn squeue_s_i_orders_by_array_then_task() {
    let sim = busy_cluster();
    let opts = SqueueOpts {
        header: false,
        sort: Some("i".into()),
        format: Some("%i %P".into()),
        ..squeue_opts()
    };
    let expected = lines(&[
        "72 debug",
        "73 debug",
        "74 debug",
        "75 debug",
        "76 debug",
        "77 debug",
        "78 debug",
        "79 debug",
        "80 debug",
        "81 debug",
        "82_[0-5%2] debug",
        "88 debug",
    ]);
    assert_eq!(squeue_at(&sim, &opts), expected);
}

#[test]
fn squeue_start_lists_pending_jobs_with_what_is_known_of_their_start() {
    // Slurm's backfill predicted start times and nodes for 76, 77, 82 and 83; Chorus predicts
    // none, so those print like the held jobs do (N/A, (null)).
    let sim = busy_cluster();
    let opts = SqueueOpts { start: true, ..squeue_opts() };
    let expected = lines(&[
        "             JOBID PARTITION     NAME     USER ST          START_TIME  NODES SCHEDNODES           NODELIST(REASON)",
        "                81     debug    later     root PD 2026-11-22T22:35:18      1 (null)               (BeginTime)",
        "                76     debug  waitres     root PD                 N/A      1 (null)               (Resources)",
        "                77     debug waitprio     root PD                 N/A      1 (null)               (Priority)",
        "                78     debug helduser     root PD                 N/A      1 (null)               (JobHeldUser)",
        "                79     debug heldadmi     root PD                 N/A      1 (null)               (JobHeldAdmin)",
        "                80     debug      dep     root PD                 N/A      1 (null)               (Dependency)",
        "        82_[0-5%2]     debug      arr     root PD                 N/A      1 (null)               (Priority)",
        "                88     debug  userjob slurmref PD                 N/A      1 (null)               (Priority)",
    ]);
    assert_eq!(squeue_at(&sim, &opts), expected);
}

#[test]
fn squeue_header_only_when_nothing_matches() {
    assert_eq!(
        squeue(&[], &squeue_opts(), T_SQUEUE),
        lines(&[
            "             JOBID PARTITION     NAME     USER ST       TIME  NODES NODELIST(REASON)"
        ])
    );
}

#[test]
fn squeue_dependency_never_satisfied_and_singleton() {
    // states.txt: job 93 afterok:92 after 92 failed; 97 singleton behind 96.
    let mut sim = Sim::new(92);
    sim.submit(spec("wrap"), T_START);
    sim.start(92, &["node1"], 1, T_START);
    let dep = parse_dependency("afterok:92").expect("valid");
    sim.submit(JobSpec { dependency: Some(dep), ..spec("wrap") }, T_START);
    sim.end(92, 1, 0, EndCause::Exited, 0, T_START + 3);
    sim.reasons(&[(93, PendingReason::DependencyNeverSatisfied)], T_START + 3);
    let single = parse_dependency("singleton").expect("valid");
    sim.submit(spec("single"), T_START);
    sim.submit(JobSpec { dependency: Some(single), ..spec("single") }, T_START);
    sim.reasons(&[(95, PendingReason::Dependency)], T_START + 3);
    let opts = SqueueOpts {
        format: Some("%i %j %T %r %E".into()),
        sort: Some("i".into()),
        ..squeue_opts()
    };
    assert_eq!(
        squeue(&sim.jobs(), &opts, T_SQUEUE),
        lines(&[
            "JOBID NAME STATE REASON DEPENDENCY",
            "92 wrap FAILED NonZeroExitCode (null)",
            "93 wrap PENDING DependencyNeverSatisfied afterok:92(failed)",
            "94 single PENDING None (null)",
            "95 single PENDING Dependency singleton(unfulfilled)",
        ])
    );
}

fn show_opts() -> ShowOpts {
    ShowOpts { tz: UTC, ..Default::default() }
}

fn running_72_record() -> Vec<&'static str> {
    vec![
        "JobId=72 JobName=run1",
        "   UserId=root(0) GroupId=root(0) MCS_label=N/A",
        "   Priority=4294901703 Nice=0 Account=root QOS=normal",
        "   JobState=RUNNING Reason=None Dependency=(null)",
        "   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0",
        "   RunTime=00:00:18 TimeLimit=00:10:00 TimeMin=N/A",
        "   SubmitTime=2026-11-22T21:35:15 EligibleTime=2026-11-22T21:35:15",
        "   AccrueTime=2026-11-22T21:35:15",
        "   StartTime=2026-11-22T21:35:18 EndTime=2026-11-22T21:45:18 Deadline=N/A",
        "   SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T21:35:18 Scheduler=Main",
        // Slurm: Sid=2380.
        "   Partition=debug AllocNode:Sid=localhost:0",
        "   ReqNodeList=(null) ExcNodeList=(null)",
        "   NodeList=node1",
        "   BatchHost=node1",
        "   NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:*",
        "   TRES=cpu=1,mem=256M,node=1,billing=1",
        "   Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=*",
        "   MinCPUsNode=1 MinMemoryCPU=256M MinTmpDiskNode=0",
        "   Features=(null) DelayBoot=00:00:00",
        "   OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null)",
        "   Command=(null)",
        "   WorkDir=/tmp/slurm-ref-capture",
        "   StdErr=/tmp/slurm-ref-capture/slurm-72.out",
        "   StdIn=/dev/null",
        "   StdOut=/tmp/slurm-ref-capture/slurm-72.out",
        "   Power=",
        "   ",
        "",
    ]
}

#[test]
fn scontrol_show_job_running() {
    let sim = busy_cluster();
    assert_eq!(show_jobs(&[sim.job(72)], &show_opts(), T_SHOW), lines(&running_72_record()));
}

#[test]
fn scontrol_show_job_one_liner() {
    let sim = busy_cluster();
    let opts = ShowOpts { one_liner: true, ..show_opts() };
    let expected = "JobId=72 JobName=run1 UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901703 Nice=0 Account=root QOS=normal JobState=RUNNING Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:18 TimeLimit=00:10:00 TimeMin=N/A SubmitTime=2026-11-22T21:35:15 EligibleTime=2026-11-22T21:35:15 AccrueTime=2026-11-22T21:35:15 StartTime=2026-11-22T21:35:18 EndTime=2026-11-22T21:45:18 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T21:35:18 Scheduler=Main Partition=debug AllocNode:Sid=localhost:0 ReqNodeList=(null) ExcNodeList=(null) NodeList=node1 BatchHost=node1 NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=256M,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryCPU=256M MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/slurm-ref-capture StdErr=/tmp/slurm-ref-capture/slurm-72.out StdIn=/dev/null StdOut=/tmp/slurm-ref-capture/slurm-72.out Power= \n";
    assert_eq!(show_jobs(&[sim.job(72)], &opts, T_SHOW), expected);
}

#[test]
fn scontrol_show_job_held_by_user() {
    let sim = busy_cluster();
    let expected = lines(&[
        "JobId=78 JobName=helduser",
        "   UserId=root(0) GroupId=root(0) MCS_label=N/A",
        "   Priority=0 Nice=0 Account=root QOS=normal",
        "   JobState=PENDING Reason=JobHeldUser Dependency=(null)",
        "   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0",
        "   RunTime=00:00:00 TimeLimit=UNLIMITED TimeMin=N/A",
        "   SubmitTime=2026-11-22T21:35:18 EligibleTime=Unknown",
        "   AccrueTime=Unknown",
        "   StartTime=Unknown EndTime=Unknown Deadline=N/A",
        "   SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T21:35:18 Scheduler=Main",
        // Slurm: Sid=2380.
        "   Partition=debug AllocNode:Sid=localhost:0",
        "   ReqNodeList=(null) ExcNodeList=(null)",
        "   NodeList=",
        "   NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:*",
        "   TRES=cpu=1,mem=256M,node=1,billing=1",
        "   Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=*",
        "   MinCPUsNode=1 MinMemoryCPU=256M MinTmpDiskNode=0",
        "   Features=(null) DelayBoot=00:00:00",
        "   OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null)",
        "   Command=(null)",
        "   WorkDir=/tmp/slurm-ref-capture",
        "   StdErr=/tmp/slurm-ref-capture/slurm-78.out",
        "   StdIn=/dev/null",
        "   StdOut=/tmp/slurm-ref-capture/slurm-78.out",
        "   Power=",
        "   ",
        "",
    ]);
    assert_eq!(show_jobs(&[sim.job(78)], &show_opts(), T_SHOW), expected);
}

#[test]
fn scontrol_show_job_pending_array_is_one_record() {
    let sim = busy_cluster();
    let arr: Vec<Job> = sim.jobs().into_iter().filter(|j| j.array.is_some()).collect();
    let out = show_jobs(&arr, &show_opts(), T_SHOW);
    // Slurm's record also carried the backfill's expected start (StartTime=..., EndTime=...,
    // SchedNodeList=node2, Scheduler=Backfill:*) and an EligibleTime three seconds later.
    let expected = lines(&[
        "JobId=82 ArrayJobId=82 ArrayTaskId=0-5%2 ArrayTaskThrottle=2 JobName=arr",
        "   UserId=root(0) GroupId=root(0) MCS_label=N/A",
        "   Priority=4294901694 Nice=0 Account=root QOS=normal",
        "   JobState=PENDING Reason=Priority Dependency=(null)",
        "   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0",
        "   RunTime=00:00:00 TimeLimit=00:01:00 TimeMin=N/A",
        "   SubmitTime=2026-11-22T21:35:18 EligibleTime=2026-11-22T21:35:18",
        "   AccrueTime=2026-11-22T21:35:18",
        "   StartTime=Unknown EndTime=Unknown Deadline=N/A",
        "   SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-22T21:35:18 Scheduler=Main",
        "   Partition=debug AllocNode:Sid=localhost:0",
        "   ReqNodeList=(null) ExcNodeList=(null)",
        "   NodeList=",
        "   NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:*",
        "   TRES=cpu=1,mem=256M,node=1,billing=1",
        "   Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=*",
        "   MinCPUsNode=1 MinMemoryCPU=256M MinTmpDiskNode=0",
        "   Features=(null) DelayBoot=00:00:00",
        "   OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null)",
        "   Command=(null)",
        "   WorkDir=/tmp/slurm-ref-capture",
        "   StdErr=/tmp/slurm-ref-capture/slurm-82_4294967294.out",
        "   StdIn=/dev/null",
        "   StdOut=/tmp/slurm-ref-capture/slurm-82_4294967294.out",
        "   Power=",
        "   ",
        "",
    ]);
    assert_eq!(out, expected);
}

#[test]
fn scontrol_show_job_dependency_never_satisfied() {
    let mut sim = Sim::new(92);
    sim.submit(spec("wrap"), T_START);
    sim.start(92, &["node1"], 1, T_START);
    let dep = parse_dependency("afterok:92").expect("valid");
    sim.submit(JobSpec { dependency: Some(dep), ..spec("wrap") }, T_START);
    sim.end(92, 1, 0, EndCause::Exited, 0, T_START + 3);
    sim.reasons(&[(93, PendingReason::DependencyNeverSatisfied)], T_START + 3);
    let out = show_jobs(&[sim.job(93)], &show_opts(), T_SHOW);
    assert!(
        out.contains(
            "\n   JobState=PENDING Reason=DependencyNeverSatisfied Dependency=afterok:92(failed)\n"
        ),
        "{out}"
    );
    assert!(out.contains("\n   StdOut=/tmp/slurm-ref-capture/slurm-93.out\n"), "{out}");
}

#[test]
fn scontrol_show_job_output_patterns_are_partly_expanded() {
    // output_files.txt: jobs 56, 57, 60, 61, 66.
    let cases = [
        (
            56,
            JobSpec { stdout: Some("o_%j_%x_%u_%N.txt".into()), ..spec("pat") },
            "/tmp/slurm-ref-capture/o_56_pat_root_%N.txt",
        ),
        (
            60,
            JobSpec { stdout: Some("p_%%_%n_%t_%s.txt".into()), ..spec("job.sh") },
            "/tmp/slurm-ref-capture/p_%%_%n_%t_%s.txt",
        ),
        (
            61,
            JobSpec { stdout: Some("z_%5j.txt".into()), ..spec("job.sh") },
            "/tmp/slurm-ref-capture/z_%5j.txt",
        ),
        (
            66,
            JobSpec {
                stdout: Some("rel_%j.out".into()),
                work_dir: "/tmp/slurm-ref-capture/sub".into(),
                ..spec("wrap")
            },
            "/tmp/slurm-ref-capture/sub/rel_66.out",
        ),
    ];
    for (id, spec, path) in cases {
        let mut sim = Sim::new(id);
        sim.submit(spec, T_START);
        let out = show_jobs(&[sim.job(id)], &show_opts(), T_SHOW);
        assert!(out.contains(&format!("\n   StdErr={path}\n")), "{out}");
        assert!(out.contains(&format!("\n   StdOut={path}\n")), "{out}");
    }
    // An array task: a_%A_%a_%j.txt for task 3 of array 57 (Slurm's job 57; here 58).
    let mut sim = Sim::new(57);
    let array = parse_array_spec("2-3").expect("valid");
    let spec = JobSpec { array: Some(array), stdout: Some("a_%A_%a_%j.txt".into()), ..spec("arr") };
    sim.submit(spec, T_START);
    sim.start(58, &["node1"], 1, T_START);
    let out = show_jobs(&[sim.job(58)], &show_opts(), T_SHOW);
    assert!(out.starts_with("JobId=58 ArrayJobId=57 ArrayTaskId=3 JobName=arr\n"), "{out}");
    assert!(out.contains("\n   StdOut=/tmp/slurm-ref-capture/a_57_3_58.txt\n"), "{out}");
}

fn node_record(name: &str, port: u32) -> Vec<String> {
    vec![
        format!("NodeName={name} Arch={} CoresPerSocket=1 ", std::env::consts::ARCH),
        // Slurm: CPULoad=0.06.
        "   CPUAlloc=2 CPUEfctv=2 CPUTot=2 CPULoad=N/A".into(),
        "   AvailableFeatures=(null)".into(),
        "   ActiveFeatures=(null)".into(),
        "   Gres=(null)".into(),
        format!("   NodeAddr=127.0.0.1 NodeHostName=vm Port={port} Version=22.05.8"),
        "   OS=Linux 6.18.44-fc-v595 #1 SMP PREEMPT_DYNAMIC @0 ".into(),
        // Slurm: FreeMem=23708.
        "   RealMemory=8000 AllocMem=512 FreeMem=N/A Sockets=2 Boards=1".into(),
        "   State=ALLOCATED ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A".into(),
        "   Partitions=debug ".into(),
        "   BootTime=2026-11-22T19:06:15 SlurmdStartTime=2026-11-22T21:32:23".into(),
        // Slurm: the last time the node went from idle to busy (21:35:15).
        "   LastBusyTime=2026-11-22T21:32:23".into(),
        "   CfgTRES=cpu=2,mem=8000M,billing=2".into(),
        "   AllocTRES=cpu=2,mem=512M".into(),
        "   CapWatts=n/a".into(),
        "   CurrentWatts=0 AveWatts=0".into(),
        "   ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s".into(),
        "".into(),
    ]
}

#[test]
fn scontrol_show_node() {
    let sim = busy_cluster();
    let nodes = sim.nodes();
    let mut expected: Vec<String> = node_record("node1", 17001);
    expected.extend(node_record("node2", 17002));
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(show_nodes(&nodes, &sim.st.config, &show_opts()), lines(&expected));
}

#[test]
fn scontrol_show_node_drained_state_and_reason() {
    let mut sim = busy_cluster();
    sim.apply(Command::SetNodeState {
        node: "node2".into(),
        state: NodeState::Drain,
        reason: Some("capture test".into()),
        user: "root".into(),
        // Slurm's capture drained node2 at 21:35:38.
        now: T_SHOW + 2,
    });
    let out = show_nodes(&[sim.st.nodes["node2"].clone()], &sim.st.config, &show_opts());
    assert!(out.contains("\n   State=ALLOCATED+DRAIN ThreadsPerCore=1 "), "{out}");
    assert!(out.ends_with("\n   Reason=capture test [root@2026-11-22T21:35:38]\n\n"), "{out}");
}

#[test]
fn scontrol_show_partition() {
    let sim = busy_cluster();
    let expected = lines(&[
        "PartitionName=debug",
        "   AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL",
        "   AllocNodes=ALL Default=YES QoS=N/A",
        "   DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO",
        "   MaxNodes=UNLIMITED MaxTime=UNLIMITED MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED",
        "   Nodes=node[1-2]",
        "   PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO",
        "   OverTimeLimit=NONE PreemptMode=OFF",
        "   State=UP TotalCPUs=4 TotalNodes=2 SelectTypeParameters=NONE",
        "   JobDefaults=(null)",
        "   DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED",
        "   TRES=cpu=4,mem=16000M,node=2,billing=4",
        "",
    ]);
    assert_eq!(show_partitions(&sim.st.config, &sim.nodes(), &show_opts()), expected);
}

fn sinfo_opts() -> SinfoOpts {
    SinfoOpts { tz: UTC, ..Default::default() }
}

#[test]
fn sinfo_default_idle_and_busy() {
    let idle = Sim::new(1);
    let expected = lines(&[
        "PARTITION AVAIL  TIMELIMIT  NODES  STATE NODELIST",
        "debug*       up   infinite      2   idle node[1-2]",
    ]);
    assert_eq!(sinfo(&idle.st.config, &idle.nodes(), &sinfo_opts(), T_SHOW), expected);
    let busy = busy_cluster();
    let expected = lines(&[
        "PARTITION AVAIL  TIMELIMIT  NODES  STATE NODELIST",
        "debug*       up   infinite      2  alloc node[1-2]",
    ]);
    assert_eq!(sinfo(&busy.st.config, &busy.nodes(), &sinfo_opts(), T_SHOW), expected);
}

#[test]
fn sinfo_n_l_one_line_per_node_after_the_date() {
    let sim = busy_cluster();
    let opts = SinfoOpts { node_oriented: true, long: true, ..sinfo_opts() };
    let expected = lines(&[
        "Sun Nov 22 21:35:36 2026",
        "NODELIST   NODES PARTITION       STATE CPUS    S:C:T MEMORY TMP_DISK WEIGHT AVAIL_FE REASON              ",
        "node1          1    debug*   allocated 2       2:1:1   8000        0      1   (null) none                ",
        "node2          1    debug*   allocated 2       2:1:1   8000        0      1   (null) none                ",
    ]);
    assert_eq!(sinfo(&sim.st.config, &sim.nodes(), &opts, T_SHOW), expected);
}

#[test]
fn sinfo_o_fields() {
    let sim = busy_cluster();
    let opts =
        SinfoOpts { format: Some("%P %a %l %D %t %N %c %C %m %e %O %T %E".into()), ..sinfo_opts() };
    // Slurm: FREE_MEM 23708, CPU_LOAD 0.06 (Chorus's nodes report neither).
    let expected = lines(&[
        "PARTITION AVAIL TIMELIMIT NODES STATE NODELIST CPUS CPUS(A/I/O/T) MEMORY FREE_MEM CPU_LOAD STATE REASON",
        "debug* up infinite 2 alloc node[1-2] 2 4/0/0/4 8000 N/A N/A allocated none",
    ]);
    assert_eq!(sinfo(&sim.st.config, &sim.nodes(), &opts, T_SHOW), expected);
    let opts = SinfoOpts {
        node_oriented: true,
        format: Some("%N %t %T %c %C %m %e %O %Z %z".into()),
        ..sinfo_opts()
    };
    let expected = lines(&[
        "NODELIST STATE STATE CPUS CPUS(A/I/O/T) MEMORY FREE_MEM CPU_LOAD THREADS S:C:T",
        "node1 alloc allocated 2 2/0/0/2 8000 N/A N/A 1 2:1:1",
        "node2 alloc allocated 2 2/0/0/2 8000 N/A N/A 1 2:1:1",
    ]);
    assert_eq!(sinfo(&sim.st.config, &sim.nodes(), &opts, T_SHOW), expected);
}

#[test]
fn sinfo_s_summarizes_partitions() {
    let sim = busy_cluster();
    let opts = SinfoOpts { summarize: true, ..sinfo_opts() };
    let expected = lines(&[
        "PARTITION AVAIL  TIMELIMIT   NODES(A/I/O/T) NODELIST",
        "debug*       up   infinite          2/0/0/2 node[1-2]",
    ]);
    assert_eq!(sinfo(&sim.st.config, &sim.nodes(), &opts, T_SHOW), expected);
}

#[test]
fn sinfo_after_draining_a_busy_node() {
    let mut sim = busy_cluster();
    sim.apply(Command::SetNodeState {
        node: "node2".into(),
        state: NodeState::Drain,
        reason: Some("capture test".into()),
        user: "root".into(),
        // Slurm's capture drained node2 at 21:35:38.
        now: T_SHOW + 2,
    });
    let expected = lines(&[
        "PARTITION AVAIL  TIMELIMIT  NODES  STATE NODELIST",
        "debug*       up   infinite      1   drng node2",
        "debug*       up   infinite      1  alloc node1",
    ]);
    assert_eq!(sinfo(&sim.st.config, &sim.nodes(), &sinfo_opts(), T_SHOW), expected);
    let opts = SinfoOpts { reasons: true, ..sinfo_opts() };
    let expected = lines(&[
        "REASON               USER      TIMESTAMP           NODELIST",
        "capture test         root      2026-11-22T21:35:38 node2",
    ]);
    assert_eq!(sinfo(&sim.st.config, &sim.nodes(), &opts, T_SHOW), expected);
}

/// Finished jobs as in sacct.txt / states.txt / signals.txt, each built in a cluster whose
/// next job id is its Slurm id.
fn finished_jobs() -> Vec<Job> {
    let mut out = vec![];
    // (id, name, exit code, signal, cause, run seconds, MaxRSS KB)
    let simple = [
        (1, "refjob", 0, 0, EndCause::Exited, 0, 0),
        (86, "wrap", 0, 0, EndCause::Exited, 0, 0),
        (88, "fail3.sh", 3, 0, EndCause::Exited, 0, 0),
        (89, "selfkill.sh", 0, 9, EndCause::Exited, 0, 0),
        (90, "oom.sh", 0, 125, EndCause::OutOfMemory, 0, 0),
        (107, "wrap", 0, 15, EndCause::TimeLimit, 79, 208),
    ];
    for (id, name, code, signal, cause, secs, rss) in simple {
        let mut sim = Sim::new(id);
        sim.submit(spec(name), T_START);
        sim.start(id, &["node1"], 1, T_START);
        sim.end(id, code, signal, cause, rss, T_START + secs);
        out.push(sim.job(id));
    }
    // 102: scancel of a running job.
    let mut sim = Sim::new(102);
    sim.submit(spec("wrap"), T_START);
    sim.start(102, &["node1"], 1, T_START);
    sim.apply(Command::Cancel { jobs: vec![102], uid: 0, now: T_START + 1 });
    sim.end(102, 0, 15, EndCause::Stopped, 0, T_START + 1);
    out.push(sim.job(102));
    // 103: scancel of a pending job.
    let mut sim = Sim::new(103);
    sim.submit(spec("wrap"), T_START);
    sim.apply(Command::Cancel { jobs: vec![103], uid: 0, now: T_START });
    out.push(sim.job(103));
    out
}

fn sacct_opts() -> SacctOpts {
    SacctOpts { tz: UTC, ..Default::default() }
}

fn by_id(jobs: &[Job], ids: &[JobId]) -> Vec<Job> {
    ids.iter().map(|id| jobs.iter().find(|j| j.id == *id).expect("built").clone()).collect()
}

#[test]
fn sacct_parsable_states_and_exit_codes_of_job_and_batch_step() {
    let jobs = finished_jobs();
    let opts = SacctOpts {
        format: Some("JobID,JobName,State,ExitCode,DerivedExitCode,Elapsed".into()),
        parsable: Parsable::NoTrailing,
        ..sacct_opts()
    };
    let out = sacct(&by_id(&jobs, &[86, 88, 89, 90, 102, 103, 107]), &opts, T_SHOW);
    // Slurm's step of 102 ended a second after the job (00:00:02), that of 107 too
    // (00:01:20); Slurm also named 86 and 88 `allocation` in this capture, taken moments
    // after they ended (their later sacct lines say wrap and fail3.sh).
    let expected = lines(&[
        "JobID|JobName|State|ExitCode|DerivedExitCode|Elapsed",
        "86|wrap|COMPLETED|0:0|0:0|00:00:00",
        "86.batch|batch|COMPLETED|0:0||00:00:00",
        "88|fail3.sh|FAILED|3:0|0:0|00:00:00",
        "88.batch|batch|FAILED|3:0||00:00:00",
        "89|selfkill.sh|FAILED|0:9|0:0|00:00:00",
        "89.batch|batch|CANCELLED|0:9||00:00:00",
        "90|oom.sh|OUT_OF_MEMORY|0:125|0:0|00:00:00",
        "90.batch|batch|OUT_OF_MEMORY|0:125||00:00:00",
        "102|wrap|CANCELLED by 0|0:0|0:0|00:00:01",
        "102.batch|batch|CANCELLED|0:15||00:00:01",
        "103|wrap|CANCELLED by 0|0:0|0:0|00:00:00",
        "107|wrap|TIMEOUT|0:0|0:0|00:01:19",
        "107.batch|batch|CANCELLED|0:15||00:01:19",
    ]);
    assert_eq!(out, expected);
}

#[test]
fn sacct_format_maxrss_only_on_the_step() {
    let jobs = finished_jobs();
    let opts = SacctOpts {
        format: Some("JobID,JobName,State,ExitCode,Elapsed,MaxRSS".into()),
        parsable: Parsable::NoTrailing,
        ..sacct_opts()
    };
    let expected = lines(&[
        "JobID|JobName|State|ExitCode|Elapsed|MaxRSS",
        "1|refjob|COMPLETED|0:0|00:00:00|",
        "1.batch|batch|COMPLETED|0:0|00:00:00|0",
        "107|wrap|TIMEOUT|0:0|00:01:19|",
        // Slurm: 00:01:20 (the step outlived the job by a second).
        "107.batch|batch|CANCELLED|0:15|00:01:19|208K",
    ]);
    assert_eq!(sacct(&by_id(&jobs, &[1, 107]), &opts, T_SHOW), expected);
    let opts = SacctOpts { parsable: Parsable::Trailing, ..opts };
    assert!(
        sacct(&by_id(&jobs, &[1]), &opts, T_SHOW)
            .starts_with("JobID|JobName|State|ExitCode|Elapsed|MaxRSS|\n1|refjob|")
    );
}

#[test]
fn sacct_default_columns() {
    let mut jobs = by_id(&finished_jobs(), &[1]);
    // 16: 64 tasks asked for, cancelled while pending.
    let mut sim = Sim::new(16);
    sim.submit(JobSpec { ntasks: Some(64), ..spec("wrap") }, T_START);
    sim.apply(Command::Cancel { jobs: vec![16], uid: 0, now: T_START });
    jobs.push(sim.job(16));
    // 48: two nodes, two tasks on each.
    let mut sim = Sim::new(48);
    sim.submit(JobSpec { nodes: Some(2), ntasks: Some(4), ..spec("two-nodes") }, T_START);
    sim.start(48, &["node1", "node2"], 2, T_START);
    sim.end(48, 0, 0, EndCause::Exited, 0, T_START);
    jobs.push(sim.job(48));
    jobs.extend(by_id(&finished_jobs(), &[90]));
    let expected = lines(&[
        "JobID           JobName  Partition    Account  AllocCPUS      State ExitCode ",
        "------------ ---------- ---------- ---------- ---------- ---------- -------- ",
        "1                refjob      debug       root          1  COMPLETED      0:0 ",
        "1.batch           batch                  root          1  COMPLETED      0:0 ",
        "16                 wrap      debug       root         64 CANCELLED+      0:0 ",
        "48            two-nodes      debug       root          4  COMPLETED      0:0 ",
        "48.batch          batch                  root          2  COMPLETED      0:0 ",
        "90               oom.sh      debug       root          1 OUT_OF_ME+    0:125 ",
        "90.batch          batch                  root          1 OUT_OF_ME+    0:125 ",
    ]);
    assert_eq!(sacct(&jobs, &sacct_opts(), T_SHOW), expected);
}

#[test]
fn sacct_x_allocations_only_with_a_width() {
    let jobs = by_id(&finished_jobs(), &[86, 88, 89, 90, 102, 107]);
    let opts = SacctOpts {
        allocations: true,
        format: Some("JobID,JobName%20,State,ExitCode,Elapsed".into()),
        ..sacct_opts()
    };
    let expected = lines(&[
        "JobID                     JobName      State ExitCode    Elapsed ",
        "------------ -------------------- ---------- -------- ---------- ",
        "86                           wrap  COMPLETED      0:0   00:00:00 ",
        "88                       fail3.sh     FAILED      3:0   00:00:00 ",
        "89                    selfkill.sh     FAILED      0:9   00:00:00 ",
        "90                         oom.sh OUT_OF_ME+    0:125   00:00:00 ",
        "102                          wrap CANCELLED+      0:0   00:00:01 ",
        "107                          wrap    TIMEOUT      0:0   00:01:19 ",
    ]);
    assert_eq!(sacct(&jobs, &opts, T_SHOW), expected);
}

#[test]
fn sacct_user_is_blank_on_the_step() {
    let mut sim = Sim::new(83);
    let user = JobSpec { user: "slurmref".into(), uid: 1001, gid: 1001, ..spec("userjob") };
    sim.submit(user, T_START);
    sim.start(83, &["node1"], 1, T_START);
    sim.end(83, 0, 0, EndCause::Exited, 0, T_START);
    let opts =
        SacctOpts { format: Some("JobID,User,JobName,State,ExitCode".into()), ..sacct_opts() };
    let expected = lines(&[
        "JobID             User    JobName      State ExitCode ",
        "------------ --------- ---------- ---------- -------- ",
        "83            slurmref    userjob  COMPLETED      0:0 ",
        "83.batch                    batch  COMPLETED      0:0 ",
    ]);
    assert_eq!(sacct(&[sim.job(83)], &opts, T_SHOW), expected);
}

#[test]
fn sacct_array_tasks_and_raw_ids() {
    // sacct -j 4 -o JobID,JobIDRaw,JobName,State,ExitCode -P. Slurm's raw ids were 24, 25,
    // 26, 4 (the array's own record runs last); Chorus numbers tasks in order from 4.
    let mut sim = Sim::new(4);
    let spec = JobSpec { array: Some(parse_array_spec("0-3").expect("valid")), ..spec("wrap") };
    let ids = sim.submit(spec, T_START);
    for &id in &ids {
        sim.start(id, &["node1"], 1, T_START);
        sim.end(id, 0, 0, EndCause::Exited, 0, T_START + 1);
    }
    let opts = SacctOpts {
        format: Some("JobID,JobIDRaw,JobName,State,ExitCode".into()),
        parsable: Parsable::NoTrailing,
        ..sacct_opts()
    };
    let expected = lines(&[
        "JobID|JobIDRaw|JobName|State|ExitCode",
        "4_0|4|wrap|COMPLETED|0:0",
        "4_0.batch|4.batch|batch|COMPLETED|0:0",
        "4_1|5|wrap|COMPLETED|0:0",
        "4_1.batch|5.batch|batch|COMPLETED|0:0",
        "4_2|6|wrap|COMPLETED|0:0",
        "4_2.batch|6.batch|batch|COMPLETED|0:0",
        "4_3|7|wrap|COMPLETED|0:0",
        "4_3.batch|7.batch|batch|COMPLETED|0:0",
    ]);
    assert_eq!(sacct(&sim.jobs(), &opts, T_SHOW), expected);
}

#[test]
fn sacct_tres_usage_in_of_a_job_without_gpus() {
    // sacct -j 1 -l -P, these fields only. Slurm printed
    // `cpu=00:00:00,energy=0,fs/disk=0,mem=0,pages=0,vmem=4K` in both: Chorus measures
    // neither energy, disk reads, page faults nor virtual memory, and leaves them out.
    let opts = SacctOpts {
        format: Some("JobID,TRESUsageInAve,TRESUsageInMax".into()),
        parsable: Parsable::NoTrailing,
        ..sacct_opts()
    };
    let expected = lines(&[
        "JobID|TRESUsageInAve|TRESUsageInMax",
        "1||",
        "1.batch|cpu=00:00:00,mem=0|cpu=00:00:00,mem=0",
    ]);
    assert_eq!(sacct(&by_id(&finished_jobs(), &[1]), &opts, T_SHOW), expected);
}

/// A GPU job's usage TRES. Not captured (the reference cluster has no GPU, and Slurm 22.05
/// has no GPU usage TRES): the step line of Slurm's documentation (gres.html, GPU accounting,
/// Slurm 23.02 and later) is `TRESUsageInAve`
/// `cpu=00:00:11,energy=0,fs/disk=87613,gres/gpumem=36266M,gres/gpuutil=100,mem=628748K,pages=0,vmem=0`;
/// Chorus prints the entries it measures, in the same order and units.
#[test]
fn sacct_tres_usage_in_with_gpu_memory_and_utilisation() {
    let mut sim = Sim::new(1277);
    sim.add_gpu_node();
    sim.submit(JobSpec { gpus_per_node: 1, ..spec("train") }, T_START);
    sim.start_on_gpu(1277, T_START);
    let gpu =
        GpuUsage { mem_max_mb: 40_960, mem_ave_mb: 36_266, util_max_pct: 100, util_ave_pct: 97 };
    let usage = Usage { max_rss_kb: 628_748, user_cpu_ms: 10_600, sys_cpu_ms: 900, gpu: Some(gpu) };
    sim.end_with(1277, ExitStatus::default(), EndCause::Exited, usage, T_START + 20);
    // 1278: GPUs given, but the node could not read them (no NVML): no GPU entries.
    sim.submit(JobSpec { gpus_per_node: 1, ..spec("nonvml") }, T_START);
    sim.start_on_gpu(1278, T_START);
    let usage = Usage { max_rss_kb: 4, ..Usage::default() };
    sim.end_with(1278, ExitStatus::default(), EndCause::Exited, usage, T_START + 20);
    let opts = SacctOpts {
        format: Some("JobID,AllocTRES,TRESUsageInAve,TRESUsageInMax".into()),
        parsable: Parsable::NoTrailing,
        ..sacct_opts()
    };
    let expected = lines(&[
        "JobID|AllocTRES|TRESUsageInAve|TRESUsageInMax",
        "1277|billing=1,cpu=1,gres/gpu=1,mem=256M,node=1||",
        "1277.batch|cpu=1,gres/gpu=1,mem=256M,node=1|\
         cpu=00:00:11,gres/gpumem=36266M,gres/gpuutil=97,mem=628748K|\
         cpu=00:00:11,gres/gpumem=40G,gres/gpuutil=100,mem=628748K",
        "1278|billing=1,cpu=1,gres/gpu=1,mem=256M,node=1||",
        "1278.batch|cpu=1,gres/gpu=1,mem=256M,node=1|cpu=00:00:00,mem=4K|cpu=00:00:00,mem=4K",
    ]);
    assert_eq!(sacct(&sim.jobs(), &opts, T_SHOW), expected);
    // Fixed columns are 14 wide, as Slurm's sacct declares them, and cut like any other.
    let opts = SacctOpts { format: Some("JobID,TRESUsageInMax".into()), ..sacct_opts() };
    let expected = lines(&[
        "JobID        TRESUsageInMax ",
        "------------ -------------- ",
        "1277                        ",
        "1277.batch   cpu=00:00:11,+ ",
        "1278                        ",
        "1278.batch   cpu=00:00:00,+ ",
    ]);
    assert_eq!(sacct(&sim.jobs(), &opts, T_SHOW), expected);
}

#[test]
fn sacct_header_only_when_nothing_matches() {
    let expected = lines(&[
        "JobID           JobName  Partition    Account  AllocCPUS      State ExitCode ",
        "------------ ---------- ---------- ---------- ---------- ---------- -------- ",
    ]);
    assert_eq!(sacct(&[], &sacct_opts(), T_SHOW), expected);
    let opts = SacctOpts {
        allocations: true,
        format: Some("JobID,State,ExitCode".into()),
        parsable: Parsable::NoTrailing,
        ..sacct_opts()
    };
    assert_eq!(sacct(&[], &opts, T_SHOW), "JobID|State|ExitCode\n");
}

#[test]
fn collapse_keeps_running_tasks_apart() {
    let sim = busy_cluster();
    let jobs = sim.jobs();
    let rows = collapse_arrays(&jobs);
    // 72..81, the folded array, 88.
    assert_eq!(rows.len(), 10 + 1 + 1);
}
