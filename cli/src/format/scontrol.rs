//! `scontrol show job|node|partition`: `Key=Value` records, as Slurm 22.05 prints them.
//!
//! ```text
//!   record = lines of "Key=Value Key=Value"
//!     multi-line: first line, then "   " + each further line, then an empty line
//!     -o (one_liner): all lines joined by one space, on one line
//! ```
//!
//! A job record ends with an empty field (Slurm prints `   Power=` then a line holding only
//! three spaces), which is why `-o` lines end in `Power= `; node and partition records end
//! with their last field. Values Chorus does not have print as Slurm prints unset ones:
//! `(null)`, `N/A`, `Unknown`, `None`.
//!
//! Not observed and assumed: the place of `Comment=` (after `WorkDir=`), of `TresPerNode=`
//! (after `Power=`) and of a node's `Reason=` (last); `DOWN`/`+DRAIN` node states; a partition
//! with a time limit printing `MaxTime=HH:MM:SS`.

use chorus_core::job::{Job, JobState};
use chorus_core::node::{Node, NodeState, SlurmNodeState};
use chorus_core::slurm::mem::format_mem_mb;
use chorus_core::slurm::time::format_duration_hms;
use chorus_core::state::{ClusterConfig, Partition};

use super::timefmt::{iso, iso_or};
use super::{
    JobRow, MemAsk, Stream, Tz, account, agreed_nodes, collapse_arrays, dependency_text,
    group_name, mem_ask, node_list, num_gpus, num_nodes, qos, replicas, run_secs, shown_end,
    shown_start, total_mem,
};

/// How `scontrol show` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowOpts {
    /// `-o`: one record per line.
    pub one_liner: bool,
    pub tz: Tz,
    /// `DefMemPerCPU`, for jobs that asked for no memory.
    pub def_mem_per_cpu: u64,
}

impl Default for ShowOpts {
    fn default() -> Self {
        Self {
            one_liner: false,
            tz: Tz::Local,
            def_mem_per_cpu: ClusterConfig::default().def_mem_per_cpu,
        }
    }
}

/// Lays out one record.
fn record(lines: &[String], one_liner: bool) -> String {
    if one_liner {
        let trimmed: Vec<&str> = lines.iter().map(|l| l.trim_end()).collect();
        return format!("{}\n", trimmed.join(" "));
    }
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            out.push_str("   ");
        }
        out.push_str(l);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// `scontrol show job`: one record per job; pending tasks of an array are one record, as in
/// `squeue` (`JobId=82 ArrayJobId=82 ArrayTaskId=0-5%2 ArrayTaskThrottle=2`).
pub fn show_jobs(jobs: &[Job], opts: &ShowOpts, now: u64) -> String {
    collapse_arrays(jobs).iter().map(|r| record(&job_lines(r, opts, now), opts.one_liner)).collect()
}

fn opt_or_null(v: Option<&String>) -> &str {
    v.map_or("(null)", String::as_str)
}

fn job_lines(row: &JobRow<'_>, opts: &ShowOpts, now: u64) -> Vec<String> {
    let job = row.job();
    let spec = &job.spec;
    let tz = opts.tz;
    let mut first = format!("JobId={}", row.raw_id());
    if let (Some((array, _)), Some(tasks)) = (job.array, row.task_str()) {
        first.push_str(&format!(" ArrayJobId={array} ArrayTaskId={tasks}"));
        if let (JobRow::PendingArray { .. }, Some(t)) = (row, row.throttle()) {
            first.push_str(&format!(" ArrayTaskThrottle={t}"));
        }
    }
    first.push_str(&format!(" JobName={}", spec.name));

    let (start, end) = match (job.state, spec.begin) {
        (JobState::Pending, Some(begin)) => (
            iso(begin, tz),
            job.time_limit_min
                .map_or_else(|| "Unknown".into(), |m| iso(begin + u64::from(m) * 60, tz)),
        ),
        (JobState::Pending, None) => ("Unknown".into(), "Unknown".into()),
        _ => (iso_or(shown_start(job), tz, "Unknown"), iso_or(shown_end(job), tz, "Unknown")),
    };
    let last_eval = job.start_time.or(job.eligible_time).unwrap_or(job.submit_time);
    let cpus = job.num_cpus();
    let nodes = num_nodes(job);
    let gpus = num_gpus(job);
    let mut tres = format!(
        "cpu={cpus},mem={},node={nodes},billing={cpus}",
        format_mem_mb(total_mem(job, opts.def_mem_per_cpu))
    );
    if gpus > 0 {
        tres.push_str(&format!(",gres/gpu={gpus}"));
    }
    let min_mem = match mem_ask(job, opts.def_mem_per_cpu) {
        MemAsk::PerCpu(mb) => format!("MinMemoryCPU={}", format_mem_mb(mb)),
        MemAsk::PerNode(mb) => format!("MinMemoryNode={}", format_mem_mb(mb)),
    };
    let oversubscribe = if spec.other.contains_key("exclusive") { "NO" } else { "OK" };

    let mut lines = vec![
        first,
        format!(
            "UserId={}({}) GroupId={}({}) MCS_label=N/A",
            spec.user,
            spec.uid,
            group_name(spec.gid),
            spec.gid
        ),
        format!(
            "Priority={} Nice={} Account={} QOS={}",
            job.priority,
            spec.nice,
            account(job),
            qos(job)
        ),
        format!(
            "JobState={} Reason={} Dependency={}",
            job.state.name(),
            job.reason.name(),
            dependency_text(job)
        ),
        format!(
            "Requeue={} Restarts={} BatchFlag=1 Reboot=0 ExitCode={}",
            u8::from(spec.requeue),
            job.restarts,
            job.exit
        ),
        format!(
            "RunTime={} TimeLimit={} TimeMin=N/A",
            format_duration_hms(run_secs(job, now)),
            job.time_limit_min
                .map_or_else(|| "UNLIMITED".into(), |m| format_duration_hms(u64::from(m) * 60))
        ),
        format!(
            "SubmitTime={} EligibleTime={}",
            iso(job.submit_time, tz),
            iso_or(job.eligible_time, tz, "Unknown")
        ),
        format!("AccrueTime={}", iso_or(job.eligible_time, tz, "Unknown")),
        format!("StartTime={start} EndTime={end} Deadline=N/A"),
        format!(
            "SuspendTime=None SecsPreSuspend=0 LastSchedEval={} Scheduler=Main",
            iso(last_eval, tz)
        ),
        format!("Partition={} AllocNode:Sid={}:0", job.partition, spec.submit_host),
        format!(
            "ReqNodeList={} ExcNodeList={}",
            opt_or_null(spec.other.get("nodelist")),
            opt_or_null(spec.other.get("exclude"))
        ),
        format!("NodeList={}", node_list(&job.node_names())),
    ];
    if let Some(batch) = job.alloc.first() {
        lines.push(format!("BatchHost={}", batch.node));
    }
    lines.extend([
        format!(
            "NumNodes={nodes} NumCPUs={cpus} NumTasks={} CPUs/Task={} ReqB:S:C:T=0:0:*:*",
            spec.num_tasks(),
            spec.cpus_per_task()
        ),
        format!("TRES={tres}"),
        format!(
            "Socks/Node=* NtasksPerN:B:S:C={}:0:*:* CoreSpec=*",
            spec.ntasks_per_node.unwrap_or(0)
        ),
        format!(
            "MinCPUsNode={} {min_mem} MinTmpDiskNode=0",
            spec.cpus_per_task() * spec.ntasks_per_node.unwrap_or(1)
        ),
        format!("Features={} DelayBoot=00:00:00", opt_or_null(spec.other.get("constraint"))),
        format!("OverSubscribe={oversubscribe} Contiguous=0 Licenses=(null) Network=(null)"),
        "Command=(null)".into(),
        format!("WorkDir={}", spec.work_dir),
    ]);
    if let Some(c) = &spec.comment {
        lines.push(format!("Comment={c} "));
    }
    lines.extend([
        format!("StdErr={}", row.std_path(Stream::Err)),
        "StdIn=/dev/null".into(),
        format!("StdOut={}", row.std_path(Stream::Out)),
        "Power=".into(),
    ]);
    if spec.gpus_per_node > 0 {
        let ty = spec.gpu_type.as_deref().map(|t| format!("{t}:")).unwrap_or_default();
        lines.push(format!("TresPerNode=gres:gpu:{ty}{}", spec.gpus_per_node));
    }
    // Chorus's verification, for the jobs it concerns: a job run once in a free partition
    // prints what Slurm prints.
    if job.is_replicated() || job.paid > 0 || job.charged > 0 {
        let agreed = agreed_nodes(job);
        lines.push(format!(
            "Replicas={} Replication={} Verify={} Verdict={} AgreedNodes={}",
            replicas(job),
            job.replication,
            job.verify,
            job.verdict,
            if agreed.is_empty() { "(null)" } else { &agreed }
        ));
        lines.push(format!("Paid={} Charged={}", job.paid, job.charged));
    }
    lines.push(String::new());
    lines
}

/// `scontrol show node`: one record per node, in the order given.
pub fn show_nodes(nodes: &[Node], config: &ClusterConfig, opts: &ShowOpts) -> String {
    nodes.iter().map(|n| record(&node_lines(n, config, opts), opts.one_liner)).collect()
}

/// `NodeAddr` and `Port` from the address a node registered with (`host:port`).
fn addr_and_port(addr: &str) -> (&str, &str) {
    match addr.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (host.trim_start_matches('[').trim_end_matches(']'), port)
        }
        _ => (addr, "0"),
    }
}

/// `gpu:a100:4`, `gpu:4`, or `(null)` for a node without GPUs.
pub(crate) fn node_gres(node: &Node) -> String {
    let gpus = &node.resources.gpus;
    match gpus.first() {
        None => "(null)".into(),
        Some(g) if g.model.is_empty() || gpus.iter().any(|o| o.model != g.model) => {
            format!("gpu:{}", gpus.len())
        }
        Some(g) => format!("gpu:{}:{}", g.model, gpus.len()),
    }
}

/// `State=` of `scontrol show node`: the base state in capitals, `+DRAIN` when draining.
fn node_state_long(node: &Node) -> String {
    let base = if node.alloc_cpus == 0 {
        "IDLE"
    } else if node.alloc_cpus >= node.resources.cpus {
        "ALLOCATED"
    } else {
        "MIXED"
    };
    match node.slurm_state() {
        SlurmNodeState::Down => "DOWN".into(),
        SlurmNodeState::Drained | SlurmNodeState::Draining => format!("{base}+DRAIN"),
        _ if node.state == NodeState::Up => base.into(),
        s => s.name().to_ascii_uppercase(),
    }
}

fn node_lines(node: &Node, config: &ClusterConfig, opts: &ShowOpts) -> Vec<String> {
    let tz = opts.tz;
    let r = &node.resources;
    let (addr, port) = addr_and_port(&node.addr);
    let partitions: Vec<&str> = config
        .partitions
        .iter()
        .filter(|p| p.has_node(&node.name))
        .map(|p| p.name.as_str())
        .collect();
    let gpus = r.gpus.len();
    let mut cfg_tres = format!("cpu={},mem={},billing={}", r.cpus, format_mem_mb(r.mem_mb), r.cpus);
    if gpus > 0 {
        cfg_tres.push_str(&format!(",gres/gpu={gpus}"));
    }
    let mut alloc = Vec::new();
    if node.alloc_cpus > 0 {
        alloc.push(format!("cpu={}", node.alloc_cpus));
    }
    if node.alloc_mem_mb > 0 {
        alloc.push(format!("mem={}", format_mem_mb(node.alloc_mem_mb)));
    }
    if !node.alloc_gpus.is_empty() {
        alloc.push(format!("gres/gpu={}", node.alloc_gpus.len()));
    }
    let mut lines = vec![
        format!("NodeName={} Arch={} CoresPerSocket=1 ", node.name, std::env::consts::ARCH),
        format!("CPUAlloc={} CPUEfctv={} CPUTot={} CPULoad=N/A", node.alloc_cpus, r.cpus, r.cpus),
        "AvailableFeatures=(null)".into(),
        "ActiveFeatures=(null)".into(),
        format!("Gres={}", node_gres(node)),
        format!(
            "NodeAddr={addr} NodeHostName={} Port={port} Version={}",
            node.hostname, node.version
        ),
        format!("OS={} ", node.os),
        format!(
            "RealMemory={} AllocMem={} FreeMem=N/A Sockets={} Boards=1",
            r.mem_mb, node.alloc_mem_mb, r.cpus
        ),
        format!(
            "State={} ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A",
            node_state_long(node)
        ),
        format!("Partitions={} ", partitions.join(",")),
        format!(
            "BootTime={} SlurmdStartTime={}",
            iso(node.boot_time, tz),
            iso(node.registered_at, tz)
        ),
        format!("LastBusyTime={}", iso(node.registered_at, tz)),
        format!("CfgTRES={cfg_tres}"),
        format!("AllocTRES={}", alloc.join(",")),
        "CapWatts=n/a".into(),
        "CurrentWatts=0 AveWatts=0".into(),
        "ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s".into(),
    ];
    match (&node.reason, &node.reason_set_by) {
        (Some(reason), Some((user, at))) => {
            lines.push(format!("Reason={reason} [{user}@{}]", iso(*at, tz)))
        }
        (Some(reason), None) => lines.push(format!("Reason={reason}")),
        _ => {}
    }
    lines
}

/// `scontrol show partition`: one record per partition, in configuration order.
pub fn show_partitions(config: &ClusterConfig, nodes: &[Node], opts: &ShowOpts) -> String {
    config.partitions.iter().map(|p| record(&partition_lines(p, nodes), opts.one_liner)).collect()
}

fn partition_lines(p: &Partition, nodes: &[Node]) -> Vec<String> {
    let members: Vec<&Node> = nodes.iter().filter(|n| p.has_node(&n.name)).collect();
    let names: Vec<String> = match &p.nodes {
        Some(list) => list.clone(),
        None => members.iter().map(|n| n.name.clone()).collect(),
    };
    let node_names = if names.is_empty() { "(null)".into() } else { node_list(&names) };
    let cpus: u32 = members.iter().map(|n| n.resources.cpus).sum();
    let mem: u64 = members.iter().map(|n| n.resources.mem_mb).sum();
    let gpus: usize = members.iter().map(|n| n.resources.gpus.len()).sum();
    let count = names.len();
    let mut tres = format!("cpu={cpus},mem={},node={count},billing={cpus}", format_mem_mb(mem));
    if gpus > 0 {
        tres.push_str(&format!(",gres/gpu={gpus}"));
    }
    let minutes = |m: Option<u32>, none: &str| {
        m.map_or_else(|| none.to_owned(), |m| format_duration_hms(u64::from(m) * 60))
    };
    vec![
        format!("PartitionName={}", p.name),
        "AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL".into(),
        format!("AllocNodes=ALL Default={} QoS=N/A", if p.default { "YES" } else { "NO" }),
        format!(
            "DefaultTime={} DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO",
            minutes(p.default_time_min, "NONE")
        ),
        format!(
            "MaxNodes=UNLIMITED MaxTime={} MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED",
            minutes(p.max_time_min, "UNLIMITED")
        ),
        format!("Nodes={node_names}"),
        "PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO".into(),
        "OverTimeLimit=NONE PreemptMode=OFF".into(),
        format!(
            "State={} TotalCPUs={cpus} TotalNodes={count} SelectTypeParameters=NONE",
            if p.up { "UP" } else { "DOWN" }
        ),
        "JobDefaults=(null)".into(),
        "DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED".into(),
        format!("TRES={tres}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_address_splits_off_the_port() {
        assert_eq!(addr_and_port("127.0.0.1:17001"), ("127.0.0.1", "17001"));
        assert_eq!(addr_and_port("[::1]:17001"), ("::1", "17001"));
        assert_eq!(addr_and_port("vm"), ("vm", "0"));
    }

    #[test]
    fn one_liner_joins_fields_and_keeps_the_empty_last_one() {
        let lines = vec!["JobId=1 JobName=a".to_owned(), "Power=".to_owned(), String::new()];
        assert_eq!(record(&lines, true), "JobId=1 JobName=a Power= \n");
        assert_eq!(record(&lines, false), "JobId=1 JobName=a\n   Power=\n   \n\n");
    }
}
