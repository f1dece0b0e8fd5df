//! Each job in a cgroup of its own, through cgroups-rs (v1 or v2, whichever the machine
//! mounts, or the v2 hierarchy the config names): its CPUs, its memory with swap off, a
//! maximum number of processes, and the node's GPUs it was not given denied. What it used
//! and whether the OOM killer struck are read back from the cgroup when it ends, and
//! everything it left behind is killed (Slurm's proctrack/cgroup).
//!
//! ```text
//!   JobCgroup::create  PARENT/job_<id>_<attempt>, or refused, saying why (a controller or
//!                      device control missing: never a job run with less than promised):
//!                      cpu quota = CPUs × period, memory = the allocation, swap off,
//!                      pids.max, the node's GPUs not given to the job denied:
//!                        v1: devices.deny    v2: an eBPF device program (devices_v2.rs)
//!   runner: spawn stepd, blocked on a pipe ──▶ JobCgroup::add(pid) ──▶ release
//!           (v1 charges memory where it was allocated: the job joins before it execs)
//!   end:    usage() (peak memory, CPU time, oom kills) ──▶ finish(): kill leftovers, rmdir
//!           (on v2 the device program goes with the group)
//! ```

pub mod devices_v2;
mod v2;

use std::path::PathBuf;
use std::time::Duration;

use cgroups_rs::CgroupPid;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuacct::CpuAcctController;
use cgroups_rs::fs::devices::{DevicePermissions, DeviceType, DevicesController};
use cgroups_rs::fs::hierarchies::{self, V1};
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Cgroup, Controller, Hierarchy, MaxValue};

use crate::inventory::GpuDevice;
use devices_v2::DeviceRule;

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
    /// The cgroup v2 hierarchy to use, wherever it is mounted. `None`: what the machine
    /// mounts at `/sys/fs/cgroup` (v2 when that is a cgroup2 file system, else the v1
    /// controllers).
    pub v2_root: Option<PathBuf>,
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
    #[error("cgroup {path}: GPU isolation: {source}")]
    Devices { path: String, source: devices_v2::DeviceError },
}

/// A job's cgroup, removed by [`JobCgroup::finish`].
pub struct JobCgroup {
    cg: Cgroup,
    path: String,
    /// The group's directory, on v2.
    v2_dir: Option<PathBuf>,
}

const CFS_PERIOD_US: u64 = 100_000;

/// The controllers a job's limits need, v1 or v2: CPU quota, memory, number of processes.
const REQUIRED: [&str; 3] = ["cpu", "memory", "pids"];

/// The hierarchy `cfg` asks for: its v2 root, else what `/sys/fs/cgroup` holds.
enum Tree {
    V1(V1),
    V2(v2::Unified),
}

impl Tree {
    fn of(cfg: &CgroupConfig) -> Tree {
        match &cfg.v2_root {
            Some(root) => Tree::V2(v2::Unified::new(root.clone())),
            None if hierarchies::is_cgroup2_unified_mode() => {
                Tree::V2(v2::Unified::new(hierarchies::UNIFIED_MOUNTPOINT.into()))
            }
            None => Tree::V1(V1::new()),
        }
    }

    fn boxed(self) -> Box<dyn Hierarchy> {
        match self {
            Tree::V1(h) => Box::new(h),
            Tree::V2(h) => Box::new(h),
        }
    }

    /// The controllers a job's group would have, or why they cannot be known.
    fn controllers(&self) -> Result<Vec<String>, String> {
        match self {
            Tree::V1(h) => Ok(h.subsystems().iter().map(|s| s.controller_name()).collect()),
            Tree::V2(h) => h
                .controllers()
                .map_err(|e| format!("{}: {e}", h.root().join("cgroup.controllers").display())),
        }
    }

    fn describe(&self) -> String {
        match self {
            Tree::V1(_) => "cgroup v1".into(),
            Tree::V2(h) => format!("cgroup v2 at {}", h.root().display()),
        }
    }
}

impl JobCgroup {
    /// Creates the group with the job's limits: `cpus` CPUs of quota, `mem_mb` of memory and
    /// no swap beyond it, the node's GPUs other than `gpus` denied. A limit that cannot be
    /// set refuses the job, and the group is removed.
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
        let unusable = |why: String| CgroupError::Unusable { path: path.clone(), why };
        let tree = Tree::of(cfg);
        let denied: Vec<&GpuDevice> =
            cfg.gpus.iter().filter(|g| !gpus.contains(&g.index)).collect();

        // Every controller the limits need, or no job: cgroups-rs would skip a missing one.
        let have = tree.controllers().map_err(&unusable)?;
        let mut missing: Vec<&str> =
            REQUIRED.into_iter().filter(|c| !have.iter().any(|h| h == c)).collect();
        if matches!(tree, Tree::V1(_)) && !denied.is_empty() && !have.iter().any(|h| h == "devices")
        {
            missing.push("devices");
        }
        if !missing.is_empty() {
            return Err(unusable(format!(
                "{} lacks the {} controller{} (it has: {}): a job's limits could not be enforced",
                tree.describe(),
                missing.join(", "),
                if missing.len() > 1 { "s" } else { "" },
                if have.is_empty() { "none".into() } else { have.join(" ") },
            )));
        }

        let v2_dir = match &tree {
            Tree::V2(unified) => Some(unified.create(&path).map_err(|(at, e)| {
                unusable(format!("creating the v2 group: {}: {e}", at.display()))
            })?),
            Tree::V1(_) => None,
        };
        let cg = Cgroup::load(tree.boxed(), &path);
        if v2_dir.is_none() {
            cg.create().map_err(err)?;
        }
        let g = JobCgroup { cg, path: path.clone(), v2_dir };
        match g.limit(cfg, cpus, mem_mb, &denied) {
            Ok(()) => Ok(g),
            Err(e) => {
                let _ = g.cg.delete();
                Err(e)
            }
        }
    }

    /// Writes the job's limits into its new group; an error from any of them is returned.
    fn limit(
        &self,
        cfg: &CgroupConfig,
        cpus: u32,
        mem_mb: u64,
        denied: &[&GpuDevice],
    ) -> Result<(), CgroupError> {
        let err = |source| CgroupError::Cgroups { path: self.path.clone(), source };
        let bytes = (mem_mb.max(1) * 1024 * 1024) as i64;
        // `create` checked that they are there.
        let gone = |c: &str| CgroupError::Unusable {
            path: self.path.clone(),
            why: format!("the {c} controller went away"),
        };
        let mem: &MemController = self.cg.controller_of().ok_or_else(|| gone("memory"))?;
        let pids: &PidController = self.cg.controller_of().ok_or_else(|| gone("pids"))?;
        let cpu: &CpuController = self.cg.controller_of().ok_or_else(|| gone("cpu"))?;
        mem.set_limit(bytes).map_err(err)?;
        // No swap beyond the limit. v1: memory+swap = memory, where swap is accounted at all;
        // v2: swap = 0, where the kernel has the file (swap accounting on).
        match self.v2_dir {
            None if mem.path().join("memory.memsw.limit_in_bytes").exists() => {
                mem.set_memswap_limit(bytes).map_err(err)?
            }
            Some(_) if mem.path().join("memory.swap.max").exists() => {
                mem.set_memswap_limit(0).map_err(err)?
            }
            _ => {}
        }
        pids.set_pid_max(MaxValue::Value(cfg.max_pids)).map_err(err)?;
        let quota = (u64::from(cpus.max(1)) * CFS_PERIOD_US) as i64;
        cpu.set_cfs_quota_and_period(Some(quota), Some(CFS_PERIOD_US)).map_err(err)?;
        if denied.is_empty() {
            return Ok(());
        }
        match &self.v2_dir {
            None => {
                let devices: &DevicesController =
                    self.cg.controller_of().ok_or_else(|| gone("devices"))?;
                let rwm =
                    [DevicePermissions::Read, DevicePermissions::Write, DevicePermissions::MkNod];
                for g in denied {
                    devices
                        .deny_device(DeviceType::Char, g.major as i64, g.minor as i64, &rwm)
                        .map_err(err)?;
                }
            }
            Some(dir) => {
                let rules: Vec<DeviceRule> =
                    denied.iter().map(|g| DeviceRule::char_rwm(g.major, g.minor)).collect();
                devices_v2::deny(dir, &rules)
                    .map_err(|source| CgroupError::Devices { path: self.path.clone(), source })?;
            }
        }
        Ok(())
    }

    /// Moves a process (the job's stepd, before it starts anything) into the group.
    pub fn add(&self, pid: u32) -> Result<(), CgroupError> {
        self.cg
            .add_task_by_tgid(CgroupPid::from(u64::from(pid)))
            .map_err(|source| CgroupError::Cgroups { path: self.path.clone(), source })
    }

    /// Peak memory, CPU time and OOM kills of everything that ran in the group.
    pub fn usage(&self) -> CgroupUsage {
        if let Some(dir) = &self.v2_dir {
            return v2::usage(dir);
        }
        let mut u = CgroupUsage::default();
        if let Some(mem) = self.cg.controller_of::<MemController>() {
            let m = mem.memory_stat();
            u.max_rss_kb = m.max_usage_in_bytes / 1024;
            u.oom_kills = m.oom_control.oom_kill;
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
/// job's limits, every GPU of the node denied (so GPU isolation is checked too), and removed
/// again. Checked at start, and by every health check (health.rs).
pub fn probe(cfg: &CgroupConfig) -> Result<String, CgroupError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(CgroupError::Unusable {
            path: cfg.parent.clone(),
            why: "noded is not root: cannot create cgroups".into(),
        });
    }
    let g = JobCgroup::create(cfg, 0, 0, 1, 16, &[])?;
    g.remove()?;
    Ok(Tree::of(cfg).describe())
}

/// Removes `cfg.parent` (a node's or a test's) where it is empty, innermost first: `a/b/c`
/// removes `a/b/c`, then `a/b`, then `a`, stopping at the first that is busy.
///
/// Each directory is removed with a plain rmdir, which fails on a group that still has
/// children. cgroups-rs's `delete` would instead remove every empty group below first, and
/// the parents above a node's are shared: a node stopping took with it another cluster's
/// job group created a moment before its first task joined (found by the e2e suite).
pub fn remove_empty(cfg: &CgroupConfig) {
    let mut p = cfg.parent.clone();
    loop {
        let cg = Cgroup::load(Tree::of(cfg).boxed(), &p);
        let dirs: Vec<PathBuf> =
            cg.subsystems().iter().map(|s| s.to_controller().path().to_owned()).collect();
        let removed = dirs.iter().filter(|d| d.exists()).all(|d| std::fs::remove_dir(d).is_ok());
        if !removed {
            return;
        }
        match p.rsplit_once('/') {
            Some((up, _)) => p = up.to_owned(),
            None => return,
        }
    }
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}
