//! Each job in a cgroup of its own, through cgroups-rs (v1 or v2, whichever the machine
//! mounts): its CPUs, its memory with swap off, a maximum number of processes. What it
//! used and whether the OOM killer struck are read back from the cgroup when it ends, and
//! everything it left behind is killed (Slurm's proctrack/cgroup).
//!
//! ```text
//!   JobCgroup::create  PARENT/job_<id>_<attempt>: cpu quota = CPUs × period,
//!                      memory (+memsw) = the allocation, pids.max,
//!                      devices: the node's GPUs not given to the job denied (v1)
//!   runner: spawn stepd, blocked on a pipe ──▶ JobCgroup::add(pid) ──▶ release
//!           (v1 charges memory where it was allocated: the job joins before it execs)
//!   end:    usage() (peak memory, CPU time, oom kills) ──▶ finish(): kill leftovers, rmdir
//! ```

use std::time::Duration;

use cgroups_rs::CgroupPid;
use cgroups_rs::fs::devices::{DevicePermissions, DeviceType};

use crate::inventory::GpuDevice;
use cgroups_rs::fs::cpuacct::CpuAcctController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::{Cgroup, MaxValue, cgroup_builder::CgroupBuilder, hierarchies};

/// Per-node containment settings.
#[derive(Debug, Clone)]
pub struct CgroupConfig {
    /// Where this node's job groups go, relative to each hierarchy's root
    /// (e.g. `chorus/node1`).
    pub parent: String,
    /// `pids.max` of every job: a fork bomb stops here.
    pub max_pids: i64,
    /// The node's GPUs: a job may open only the device nodes of those it was given.
    pub gpus: Vec<GpuDevice>,
}

/// What the cgroup says a finished job used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    pub max_rss_kb: u64,
    pub user_cpu_ms: u64,
    pub sys_cpu_ms: u64,
    /// Processes the OOM killer ended.
    pub oom_kills: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {source}")]
    Cgroups { path: String, source: cgroups_rs::fs::error::Error },
    #[error("cgroup {path}: {why}")]
    Unusable { path: String, why: String },
}

/// A job's cgroup, removed by [`JobCgroup::finish`].
pub struct JobCgroup {
    cg: Cgroup,
    path: String,
}

const CFS_PERIOD_US: u64 = 100_000;

impl JobCgroup {
    /// Creates the group with the job's limits: `cpus` CPUs of quota, `mem_mb` of memory and
    /// no swap beyond it.
    pub fn create(
        cfg: &CgroupConfig,
        job: u32,
        attempt: u32,
        cpus: u32,
        mem_mb: u64,
        gpus: &[u32],
    ) -> Result<Self, CgroupError> {
        let path = format!("{}/job_{job}_{attempt}", cfg.parent);
        let err = |source| CgroupError::Cgroups { path: path.clone(), source };
        let bytes = (mem_mb.max(1) * 1024 * 1024) as i64;
        let hier = hierarchies::auto();
        let denied: Vec<&GpuDevice> =
            cfg.gpus.iter().filter(|g| !gpus.contains(&g.index)).collect();
        if hier.v2() && !denied.is_empty() {
            // cgroup v2 controls devices with an eBPF program, which this version does not
            // load: refuse rather than hand out GPUs unisolated.
            return Err(CgroupError::Unusable {
                path,
                why: "GPU isolation on cgroup v2 needs a device eBPF program (not implemented)"
                    .into(),
            });
        }
        let swap_limit = !hier.v2() && memsw_supported();
        let mut memory = CgroupBuilder::new(&path).memory().memory_hard_limit(bytes);
        if swap_limit {
            memory = memory.memory_swap_limit(bytes);
        }
        let mut devices = memory.done().devices();
        for g in denied {
            let rwm =
                vec![DevicePermissions::Read, DevicePermissions::Write, DevicePermissions::MkNod];
            devices = devices.device(g.major as i64, g.minor as i64, DeviceType::Char, false, rwm);
        }
        let cg = devices
            .done()
            .pid()
            .maximum_number_of_processes(MaxValue::Value(cfg.max_pids))
            .done()
            .cpu()
            .period(CFS_PERIOD_US)
            .quota((u64::from(cpus.max(1)) * CFS_PERIOD_US) as i64)
            .done()
            .build(hier)
            .map_err(err)?;
        Ok(Self { cg, path })
    }

    /// Moves a process (the job's stepd, before it starts anything) into the group.
    pub fn add(&self, pid: u32) -> Result<(), CgroupError> {
        self.cg
            .add_task_by_tgid(CgroupPid::from(u64::from(pid)))
            .map_err(|source| CgroupError::Cgroups { path: self.path.clone(), source })
    }

    /// Peak memory, CPU time and OOM kills of everything that ran in the group.
    pub fn usage(&self) -> CgroupUsage {
        let mut u = CgroupUsage::default();
        if let Some(mem) = self.cg.controller_of::<MemController>() {
            let m = mem.memory_stat();
            u.max_rss_kb = m.max_usage_in_bytes / 1024;
            u.oom_kills =
                if self.cg.v2() { v2_oom_kills(&self.path) } else { m.oom_control.oom_kill };
        }
        if let Some(acct) = self.cg.controller_of::<CpuAcctController>() {
            // cpuacct.stat counts USER_HZ ticks.
            let tick_ms = 1000 / clock_ticks().max(1);
            for line in acct.cpuacct().stat.lines() {
                match line.split_once(' ') {
                    Some(("user", v)) => {
                        u.user_cpu_ms = v.trim().parse::<u64>().unwrap_or(0) * tick_ms
                    }
                    Some(("system", v)) => {
                        u.sys_cpu_ms = v.trim().parse::<u64>().unwrap_or(0) * tick_ms
                    }
                    _ => {}
                }
            }
        }
        u
    }

    /// Kills whatever is still in the group (background processes the script left) and
    /// removes it.
    pub fn finish(self) {
        if let Err(e) = self.remove() {
            tracing::warn!(error = %e, "cgroup left behind");
        }
    }

    /// [`finish`](Self::finish), saying whether the group is gone.
    fn remove(self) -> Result<(), CgroupError> {
        for _ in 0..100 {
            let procs = self.cg.procs();
            if procs.is_empty() {
                break;
            }
            for p in procs {
                // SAFETY: kill(2) of a process in this job's own cgroup.
                unsafe { libc::kill(p.pid as i32, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut last = None;
        for _ in 0..50 {
            match self.cg.delete() {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(match last {
            Some(source) => CgroupError::Cgroups { path: self.path, source },
            None => CgroupError::Unusable { path: self.path, why: "not removed".into() },
        })
    }
}

/// Whether jobs can be put in cgroups here: a probe group under `parent` can be created with a
/// job's limits and removed again. Checked at start, and by every health check (health.rs).
pub fn probe(cfg: &CgroupConfig) -> Result<&'static str, CgroupError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(CgroupError::Unusable {
            path: cfg.parent.clone(),
            why: "noded is not root: cannot create cgroups".into(),
        });
    }
    let g = JobCgroup::create(cfg, 0, 0, 1, 16, &[])?;
    let v2 = g.cg.v2();
    g.remove()?;
    Ok(if v2 { "cgroup v2" } else { "cgroup v1" })
}

/// Removes an empty group (a node's or a test's parent) from every hierarchy, innermost
/// first: `a/b/c` removes `a/b/c`, then `a/b`, then `a`, stopping at the first that is busy.
pub fn remove_empty(path: &str) {
    let mut p = path.to_owned();
    loop {
        let cg = Cgroup::load(hierarchies::auto(), &p);
        if cg.delete().is_err() {
            return;
        }
        match p.rsplit_once('/') {
            Some((up, _)) => p = up.to_owned(),
            None => return,
        }
    }
}

fn memsw_supported() -> bool {
    std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
}

fn v2_oom_kills(path: &str) -> u64 {
    let events =
        std::fs::read_to_string(format!("/sys/fs/cgroup/{path}/memory.events")).unwrap_or_default();
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}
