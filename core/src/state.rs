//! The replicated state: every job, every node, the cluster's configuration.
//!
//! Only [`crate::fsm::apply`] mutates it. Indices (`pending`, `active`) are kept in step by
//! the same code that changes a job's state, so a scheduler pass costs O(pending), not
//! O(every job ever run).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::accounts::Accounts;
use crate::fsm::RequestId;
use crate::identity::Identities;
use crate::job::{Job, JobId, JobState};
use crate::node::Node;
use crate::slurm::dependency::{DepKind, Dependency, JobRef};
use crate::trust::ReplicationSpec;
use crate::verify::VerifySpec;

/// A partition, as `PartitionName=` lines in slurm.conf describe one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub name: String,
    /// Node names; `None` means every node (`Nodes=ALL`).
    pub nodes: Option<Vec<String>>,
    pub default: bool,
    /// Minutes; `None` is UNLIMITED.
    pub max_time_min: Option<u32>,
    /// Minutes; `None` means `max_time_min`.
    pub default_time_min: Option<u32>,
    pub up: bool,
    /// What network a job of this partition sees on its node.
    pub network: Network,
    /// How many times its jobs run, on nodes of distinct operators (`fixed:1`: once, as in
    /// Slurm); a job's `--replicas` overrides it.
    pub replication: ReplicationSpec,
    /// How replicas' results are compared, unless a job's `--verify` says otherwise.
    pub verify: VerifySpec,
    /// The most replicas one job may run, disputes included.
    pub max_replicas: u32,
    /// Credits per CPU-hour a replica's node earns for verified work (and its user pays).
    pub price_cpu_hour: u64,
    /// Credits per GPU-hour, on top.
    pub price_gpu_hour: u64,
}

impl Default for Partition {
    fn default() -> Self {
        Self {
            name: "debug".into(),
            nodes: None,
            default: true,
            max_time_min: None,
            default_time_min: None,
            up: true,
            network: Network::Host,
            replication: ReplicationSpec::Fixed(1),
            verify: VerifySpec::Exact,
            max_replicas: 5,
            price_cpu_hour: 0,
            price_gpu_hour: 0,
        }
    }
}

/// A job's network, per partition: the host's, only a loopback interface of its own, or no
/// interface at all. The last two need the node to run jobs in namespaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Network {
    #[default]
    Host,
    Loopback,
    None,
}

impl Network {
    pub const ALL: [Network; 3] = [Network::Host, Network::Loopback, Network::None];

    pub fn as_str(self) -> &'static str {
        match self {
            Network::Host => "host",
            Network::Loopback => "loopback",
            Network::None => "none",
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Network::ALL
            .into_iter()
            .find(|n| n.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown network `{s}`: expected host, loopback or none"))
    }
}

impl Partition {
    pub fn has_node(&self, node: &str) -> bool {
        self.nodes.as_ref().is_none_or(|n| n.iter().any(|x| x == node))
    }
}

/// The cluster-wide settings that decide scheduling; fixed when the cluster is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub cluster_name: String,
    pub partitions: Vec<Partition>,
    /// MB of memory per CPU when a job asks for none (`DefMemPerCPU`).
    pub def_mem_per_cpu: u64,
    /// Seconds between SIGTERM and SIGKILL (`KillWait`).
    pub kill_wait_secs: u32,
    /// Largest array index + 1 (`MaxArraySize`).
    pub max_array_size: u32,
    pub first_job_id: JobId,
    /// Stake a node needs bonded to be given work; 0: none asked.
    pub min_stake: u64,
    /// Seconds unbonded stake stays slashable before it returns to its operator.
    pub unbond_delay_secs: u64,
    /// Share of its bonded stake a node loses when it disagrees with a verified result, in
    /// millionths.
    pub slash_ppm: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            cluster_name: "chorus".into(),
            partitions: vec![Partition::default()],
            def_mem_per_cpu: 256,
            kill_wait_secs: 30,
            max_array_size: 100_001,
            first_job_id: 1,
            min_stake: 0,
            unbond_delay_secs: 7 * 86_400,
            slash_ppm: 100_000,
        }
    }
}

impl ClusterConfig {
    pub fn default_partition(&self) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.default).or(self.partitions.first())
    }

    pub fn partition(&self, name: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub config: ClusterConfig,
    pub next_job_id: JobId,
    pub jobs: BTreeMap<JobId, Job>,
    pub nodes: BTreeMap<String, Node>,
    /// Pending jobs, for the scheduler.
    pub pending: BTreeSet<JobId>,
    /// Running or completing jobs.
    pub active: BTreeSet<JobId>,
    /// Array job id → its task job ids, in task order.
    pub arrays: BTreeMap<JobId, Vec<JobId>>,
    /// Jobs submitted so far (decides priority/basic's decreasing priorities).
    pub submitted: u64,
    /// The time stamped into the last applied command.
    pub now: u64,
    /// Submissions' request ids → (job or array id, when): a retried submission is answered,
    /// not applied twice. Forgotten after `fsm::REQUEST_MEMORY_SECS`.
    pub requests: BTreeMap<RequestId, (JobId, u64)>,
    /// The same ids by age, for forgetting them in order.
    pub request_order: BTreeSet<(u64, RequestId)>,
    /// Operators' credits and stake (accounts.rs).
    pub accounts: Accounts,
    /// Tokens (by hash) and the nodes that joined, with their operators (identity.rs).
    pub identities: Identities,
}

/// Whether a job's dependency lets it start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepStatus {
    Satisfied,
    Waiting,
    Never,
}

/// Who answers for a node: the operator that bonded stake to it, or, for a node no operator
/// bonded, the node alone. A job's replicas go to nodes with distinct keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OperatorKey<'a> {
    Operator(&'a str),
    Unbonded(&'a str),
}

impl ClusterState {
    /// Who answers for `node` (see [`OperatorKey`]); a node the cluster does not know answers
    /// for nothing, and counts as one unbonded node with the others it does not know.
    ///
    /// The operator a node joined under (its join token's) answers for it; for a node that
    /// joined before identities existed, the operator that bonded stake to it.
    pub fn operator_of(&self, node: &str) -> OperatorKey<'_> {
        let op = self.identities.operator_of(node).or(self
            .accounts
            .node_operator
            .get(node)
            .map(String::as_str));
        match op {
            Some(op) => OperatorKey::Operator(op),
            None => OperatorKey::Unbonded(self.nodes.get_key_value(node).map_or("", |(k, _)| k)),
        }
    }

    /// Whether `node` may be given work: up, and with the stake the cluster asks.
    pub fn takes_work(&self, node: &crate::node::Node) -> bool {
        node.accepts_work() && self.accounts.has_stake(&node.name, self.config.min_stake)
    }

    /// Forgets request ids recorded before `before`.
    pub fn forget_requests(&mut self, before: u64) {
        while let Some(&(at, id)) = self.request_order.first() {
            if at >= before {
                break;
            }
            self.request_order.pop_first();
            self.requests.remove(&id);
        }
    }

    pub fn new(config: ClusterConfig) -> Self {
        Self {
            next_job_id: config.first_job_id,
            config,
            jobs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            pending: BTreeSet::new(),
            active: BTreeSet::new(),
            arrays: BTreeMap::new(),
            submitted: 0,
            accounts: Accounts::default(),
            identities: Identities::default(),
            now: 0,
            requests: BTreeMap::new(),
            request_order: BTreeSet::new(),
        }
    }

    pub fn job(&self, id: JobId) -> Option<&Job> {
        self.jobs.get(&id)
    }

    /// The jobs a reference names: a plain job, one array task (`12_3`), or every task of an
    /// array (`12`, when 12 is an array job id).
    pub fn resolve(&self, r: &JobRef) -> Vec<JobId> {
        match (r.task, self.arrays.get(&r.job_id)) {
            (Some(t), Some(tasks)) => tasks
                .iter()
                .copied()
                .filter(|id| self.jobs[id].array == Some((r.job_id, t)))
                .collect(),
            (None, Some(tasks)) => tasks.clone(),
            (Some(_), None) => vec![],
            (None, None) => self.jobs.get(&r.job_id).map(|j| vec![j.id]).unwrap_or_default(),
        }
    }

    /// Evaluates a job's `--dependency` against the current state.
    pub fn dependency_status(&self, job: &Job) -> DepStatus {
        let Some(dep) = &job.spec.dependency else { return DepStatus::Satisfied };
        self.eval_dependency(job, dep)
    }

    fn eval_dependency(&self, job: &Job, dep: &Dependency) -> DepStatus {
        let statuses = dep.conditions.iter().map(|c| {
            if c.kind == DepKind::Singleton {
                return self.singleton_status(job);
            }
            let mut all = DepStatus::Satisfied;
            for r in &c.jobs {
                for id in self.resolve(r) {
                    match self.condition_on(c.kind, &self.jobs[&id]) {
                        DepStatus::Never => return DepStatus::Never,
                        DepStatus::Waiting => all = DepStatus::Waiting,
                        DepStatus::Satisfied => {}
                    }
                }
            }
            all
        });
        let statuses: Vec<DepStatus> = statuses.collect();
        if dep.any {
            if statuses.contains(&DepStatus::Satisfied) {
                DepStatus::Satisfied
            } else if statuses.iter().all(|s| *s == DepStatus::Never) {
                DepStatus::Never
            } else {
                DepStatus::Waiting
            }
        } else if statuses.contains(&DepStatus::Never) {
            DepStatus::Never
        } else if statuses.iter().all(|s| *s == DepStatus::Satisfied) {
            DepStatus::Satisfied
        } else {
            DepStatus::Waiting
        }
    }

    fn condition_on(&self, kind: DepKind, other: &Job) -> DepStatus {
        let ok = other.state == JobState::Completed;
        match kind {
            DepKind::After if other.state != JobState::Pending => DepStatus::Satisfied,
            DepKind::AfterAny | DepKind::AfterOk | DepKind::AfterNotOk
                if !other.state.is_terminal() =>
            {
                DepStatus::Waiting
            }
            DepKind::AfterAny => DepStatus::Satisfied,
            DepKind::AfterOk if ok => DepStatus::Satisfied,
            DepKind::AfterNotOk if !ok => DepStatus::Satisfied,
            DepKind::AfterOk | DepKind::AfterNotOk => DepStatus::Never,
            _ => DepStatus::Waiting,
        }
    }

    /// `singleton`: no earlier job of the same name and user may be pending or running.
    fn singleton_status(&self, job: &Job) -> DepStatus {
        let blocked = self.pending.iter().chain(self.active.iter()).any(|id| {
            let o = &self.jobs[id];
            o.id < job.id
                && o.spec.name == job.spec.name
                && o.spec.user == job.spec.user
                && o.array.map(|a| a.0) != job.array.map(|a| a.0).or(Some(job.id))
        });
        if blocked { DepStatus::Waiting } else { DepStatus::Satisfied }
    }

    /// Running tasks of an array (for the `%` throttle).
    pub fn running_tasks(&self, array_job: JobId) -> usize {
        self.arrays
            .get(&array_job)
            .map(|t| t.iter().filter(|id| self.active.contains(id)).count())
            .unwrap_or(0)
    }
}
