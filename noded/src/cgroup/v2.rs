//! A cgroup v2 hierarchy mounted anywhere: cgroups-rs's own `V2` is fixed at
//! `/sys/fs/cgroup` and enables the controllers that directory lists, so a hierarchy mounted
//! elsewhere (a test's, a delegated one) gets one of ours. Through it cgroups-rs writes the
//! limits, moves processes and removes groups as it does under its own.
//!
//! ```text
//!   ROOT/cgroup.controllers   what the hierarchy can give: cpu, memory, pids are needed
//!   ROOT/a/b/job_…            create(): each directory above the job enables them for its
//!                             children in cgroup.subtree_control, errors reported
//! ```

use std::io;
use std::path::{Path, PathBuf};

use cgroups_rs::fs::cgroup::Cgroup;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Hierarchy, Subsystem};

use super::REQUIRED;

#[derive(Debug, Clone)]
pub struct Unified {
    root: PathBuf,
}

impl Unified {
    pub fn new(root: PathBuf) -> Self {
        Unified { root }
    }

    /// What `cgroup.controllers` of the root lists.
    pub fn controllers(&self) -> io::Result<Vec<String>> {
        let list = std::fs::read_to_string(self.root.join("cgroup.controllers"))?;
        Ok(list.split_whitespace().map(String::from).collect())
    }

    /// Creates `ROOT/path` and the directories above it, each of those enabling the required
    /// controllers for its children. Returns the group's directory.
    pub fn create(&self, path: &str) -> Result<PathBuf, (PathBuf, io::Error)> {
        let enable = REQUIRED.map(|c| format!("+{c}")).join(" ");
        let mut dir = self.root.clone();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let control = dir.join("cgroup.subtree_control");
            let enabled = std::fs::read_to_string(&control).unwrap_or_default();
            if !REQUIRED.iter().all(|c| enabled.split_whitespace().any(|e| e == *c)) {
                std::fs::write(&control, &enable).map_err(|e| (control, e))?;
            }
            dir.push(part);
            match std::fs::create_dir(&dir) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err((dir, e)),
                _ => {}
            }
        }
        Ok(dir)
    }
}

impl Hierarchy for Unified {
    /// The required controllers this hierarchy has; the others are not used.
    fn subsystems(&self) -> Vec<Subsystem> {
        let have = self.controllers().unwrap_or_default();
        let root = || (self.root.clone(), PathBuf::new(), true);
        let mut subs = vec![];
        if have.iter().any(|c| c == "memory") {
            let (point, base, v2) = root();
            subs.push(Subsystem::Mem(MemController::new(point, base, v2)));
        }
        if have.iter().any(|c| c == "pids") {
            let (point, base, v2) = root();
            subs.push(Subsystem::Pid(PidController::new(point, base, v2)));
        }
        if have.iter().any(|c| c == "cpu") {
            let (point, base, v2) = root();
            subs.push(Subsystem::Cpu(CpuController::new(point, base, v2)));
        }
        subs
    }

    fn root(&self) -> PathBuf {
        self.root.clone()
    }

    fn root_control_group(&self) -> Cgroup {
        Cgroup::load(Box::new(self.clone()), "")
    }

    fn parent_control_group(&self, path: &str) -> Cgroup {
        let parent = Path::new(path).parent().unwrap_or(Path::new(""));
        Cgroup::load(Box::new(self.clone()), parent)
    }

    fn v2(&self) -> bool {
        true
    }
}

/// What a v2 group's own files say a finished job used: peak memory (`memory.peak`, Linux
/// 5.19 and later), CPU time (`cpu.stat`, in µs) and OOM kills (`memory.events`).
pub fn usage(dir: &Path) -> super::CgroupUsage {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let field = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cpu = read("cpu.stat");
    super::CgroupUsage {
        max_rss_kb: read("memory.peak").trim().parse::<u64>().unwrap_or(0) / 1024,
        user_cpu_ms: field(&cpu, "user_usec") / 1000,
        sys_cpu_ms: field(&cpu, "system_usec") / 1000,
        oom_kills: field(&read("memory.events"), "oom_kill"),
    }
}
