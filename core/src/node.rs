//! Nodes: what an agent registered, what is allocated on it, and its Slurm state.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One GPU as a node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    pub memory_mb: u64,
    /// The driver's version (NVML's `sys_driver_version`, e.g. `535.104.05`).
    pub driver: String,
}

impl GpuInfo {
    /// What a bitwise comparison of results must hold equal across replicas: the model and
    /// the driver's major version (the same kernels and libraries give the same bits).
    pub fn class(&self) -> (String, &str) {
        (self.model.to_ascii_lowercase(), self.driver.split('.').next().unwrap_or_default())
    }
}

/// What a node agent says it has when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeResources {
    pub cpus: u32,
    pub mem_mb: u64,
    pub gpus: Vec<GpuInfo>,
}

/// The administrative/health part of a node's state; allocation is derived from its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Registered and answering.
    Up,
    /// Registered once, not answering (missed heartbeats).
    Down,
    /// Takes no new work (operator or health check); running jobs finish.
    Drain,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    /// Where the agent listens or can be reached, for display (`NodeAddr`).
    pub addr: String,
    pub hostname: String,
    pub resources: NodeResources,
    pub state: NodeState,
    pub reason: Option<String>,
    /// Who set `reason`, and when (`sinfo -R`, `scontrol show node`).
    pub reason_set_by: Option<(String, u64)>,
    pub alloc_cpus: u32,
    pub alloc_mem_mb: u64,
    /// GPU indices in use.
    pub alloc_gpus: Vec<u32>,
    pub boot_time: u64,
    pub registered_at: u64,
    /// Bumped on every registration: lets a node tell a restart from a reconnect.
    pub incarnation: u64,
    /// The registering agent process's session (see `NodeRegistration::session`).
    pub session: u64,
    pub version: String,
    pub os: String,
    /// The agent's ed25519 public key (fsm's `NodeRegistration::public_key`).
    pub public_key: Option<[u8; 32]>,
}

impl Node {
    pub fn free_cpus(&self) -> u32 {
        self.resources.cpus.saturating_sub(self.alloc_cpus)
    }

    pub fn free_mem_mb(&self) -> u64 {
        self.resources.mem_mb.saturating_sub(self.alloc_mem_mb)
    }

    pub fn free_gpus(&self) -> Vec<u32> {
        self.resources
            .gpus
            .iter()
            .map(|g| g.index)
            .filter(|i| !self.alloc_gpus.contains(i))
            .collect()
    }

    /// Indices of this node's GPUs of model `ty` (any model when `None`), in index order.
    pub fn gpus_of_type<'a>(&'a self, ty: Option<&'a str>) -> impl Iterator<Item = u32> + 'a {
        self.resources
            .gpus
            .iter()
            .filter(move |g| ty.is_none_or(|t| g.model.eq_ignore_ascii_case(t)))
            .map(|g| g.index)
    }

    pub fn accepts_work(&self) -> bool {
        self.state == NodeState::Up
    }

    /// Drained by a health check (its reason carries [`HEALTH_REASON_PREFIX`]), not by hand.
    pub fn drained_by_health(&self) -> bool {
        self.state == NodeState::Drain
            && self.reason.as_deref().is_some_and(|r| r.starts_with(HEALTH_REASON_PREFIX))
    }

    /// Slurm's node state name, derived from health and allocation (`idle`, `mixed`,
    /// `allocated`, `down`, `drained`, `draining`).
    pub fn slurm_state(&self) -> SlurmNodeState {
        let busy = self.alloc_cpus > 0;
        let full = self.alloc_cpus >= self.resources.cpus;
        match self.state {
            NodeState::Down => SlurmNodeState::Down,
            NodeState::Drain if busy => SlurmNodeState::Draining,
            NodeState::Drain => SlurmNodeState::Drained,
            NodeState::Up if full => SlurmNodeState::Allocated,
            NodeState::Up if busy => SlurmNodeState::Mixed,
            NodeState::Up => SlurmNodeState::Idle,
        }
    }
}

/// What a node agent's health check found (Slurm's `HealthCheckProgram` and Chorus's built-in
/// checks): healthy, or the problem in one line a person can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    Healthy,
    Unhealthy(String),
}

/// A drain reason set by a health check starts with this, as LBNL NHC's do: only such a drain
/// is lifted when the node is healthy again; an operator's drain is never undone.
pub const HEALTH_REASON_PREFIX: &str = "NHC: ";

/// The longest problem text a node may send, in bytes.
pub const MAX_HEALTH_PROBLEM: usize = 256;

/// Whether `problem` may become a node's reason: 1 to [`MAX_HEALTH_PROBLEM`] bytes, one line,
/// no control characters (it is printed by `sinfo` and `scontrol` as it is).
pub fn check_health_problem(problem: &str) -> Result<(), &'static str> {
    if problem.trim().is_empty() {
        Err("an unhealthy node must say why")
    } else if problem.len() > MAX_HEALTH_PROBLEM {
        Err("at most 256 bytes")
    } else if problem.chars().any(char::is_control) {
        Err("one line without control characters")
    } else {
        Ok(())
    }
}

/// What a health result does to a node, decided from the node alone (the state machine applies
/// it; the controller asks first so that an unchanged result costs no log entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthChange {
    /// Drain it (or re-word a health drain) with this reason.
    Drain(String),
    /// Lift the drain a health check set.
    Resume,
}

/// The health-check rules, as NHC applies them:
///
/// | node                         | unhealthy               | healthy |
/// |------------------------------|-------------------------|---------|
/// | up                           | drain, `NHC: <problem>` | —       |
/// | drained by a health check    | re-word if it changed   | resume  |
/// | drained by an operator       | —                       | —       |
/// | down                         | —                       | —       |
///
/// A DOWN node is not answering: it registers again before anything it says counts.
pub fn health_change(node: &Node, health: &Health) -> Option<HealthChange> {
    match (node.state, health) {
        (NodeState::Down, _) => None,
        (NodeState::Up, Health::Healthy) => None,
        (NodeState::Up, Health::Unhealthy(p)) => {
            Some(HealthChange::Drain(format!("{HEALTH_REASON_PREFIX}{p}")))
        }
        (NodeState::Drain, _) if !node.drained_by_health() => None,
        (NodeState::Drain, Health::Healthy) => Some(HealthChange::Resume),
        (NodeState::Drain, Health::Unhealthy(p)) => {
            let reason = format!("{HEALTH_REASON_PREFIX}{p}");
            (node.reason.as_deref() != Some(reason.as_str())).then_some(HealthChange::Drain(reason))
        }
    }
}

/// A node's state as Slurm prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SlurmNodeState {
    Idle,
    Mixed,
    Allocated,
    Down,
    Drained,
    Draining,
}

impl SlurmNodeState {
    /// `sinfo -o %T`, `scontrol show node` (upper case there).
    pub fn name(self) -> &'static str {
        match self {
            SlurmNodeState::Idle => "idle",
            SlurmNodeState::Mixed => "mixed",
            SlurmNodeState::Allocated => "allocated",
            SlurmNodeState::Down => "down",
            SlurmNodeState::Drained => "drained",
            SlurmNodeState::Draining => "draining",
        }
    }

    /// `sinfo`'s default STATE column (`%t`).
    pub fn short_name(self) -> &'static str {
        match self {
            SlurmNodeState::Idle => "idle",
            SlurmNodeState::Mixed => "mix",
            SlurmNodeState::Allocated => "alloc",
            SlurmNodeState::Down => "down",
            SlurmNodeState::Drained => "drain",
            SlurmNodeState::Draining => "drng",
        }
    }
}

impl fmt::Display for SlurmNodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(state: NodeState, reason: Option<&str>) -> Node {
        Node {
            name: "n1".into(),
            addr: String::new(),
            hostname: "n1".into(),
            resources: NodeResources { cpus: 2, mem_mb: 1000, gpus: vec![] },
            state,
            reason: reason.map(String::from),
            reason_set_by: reason.map(|_| ("root".into(), 1)),
            alloc_cpus: 0,
            alloc_mem_mb: 0,
            alloc_gpus: vec![],
            boot_time: 0,
            registered_at: 0,
            incarnation: 1,
            session: 0,
            version: String::new(),
            os: String::new(),
            public_key: None,
        }
    }

    #[test]
    fn health_change_follows_nhc_rules() {
        use HealthChange::*;
        let sick = Health::Unhealthy("ib0 down".into());
        let well = Health::Healthy;
        let drain = |r: &str| Some(Drain(r.into()));
        let cases = [
            (node(NodeState::Up, None), &sick, drain("NHC: ib0 down")),
            (node(NodeState::Up, None), &well, None),
            (node(NodeState::Drain, Some("NHC: ib0 down")), &sick, None),
            (node(NodeState::Drain, Some("NHC: no /scratch")), &sick, drain("NHC: ib0 down")),
            (node(NodeState::Drain, Some("NHC: ib0 down")), &well, Some(Resume)),
            (node(NodeState::Drain, Some("maintenance")), &sick, None),
            (node(NodeState::Drain, Some("maintenance")), &well, None),
            (node(NodeState::Drain, None), &well, None),
            (node(NodeState::Down, Some("Not responding")), &sick, None),
            (node(NodeState::Down, Some("NHC: ib0 down")), &well, None),
        ];
        for (n, h, want) in cases {
            assert_eq!(health_change(&n, h), want, "{:?} {:?} {h:?}", n.state, n.reason);
        }
    }

    #[test]
    fn a_health_problem_is_one_short_line() {
        assert!(check_health_problem("low disk: /var 5 MB").is_ok());
        assert!(check_health_problem("").is_err());
        assert!(check_health_problem("  ").is_err());
        assert!(check_health_problem("two\nlines").is_err());
        assert!(check_health_problem("bell\u{7}").is_err());
        assert!(check_health_problem(&"x".repeat(MAX_HEALTH_PROBLEM)).is_ok());
        assert!(check_health_problem(&"x".repeat(MAX_HEALTH_PROBLEM + 1)).is_err());
    }
}
