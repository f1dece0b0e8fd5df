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
