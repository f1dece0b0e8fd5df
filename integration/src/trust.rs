//! A cluster on paper for the trust layer: the production state machine (`fsm::apply`),
//! scheduler (`sched/fifo`) and validators (`verify/*`), driven without processes, clocks or
//! networks. Nodes have real ed25519 keys and sign real attestations; their output files are
//! kept here as the controller keeps them in sled. The replication tests and `trust-sim` both
//! drive it, so what they measure is what a cluster does.
//!
//! ```text
//!   add_node (register with a key, deposit, bond) ─┐
//!   submit ──▶ schedule (Fifo.plan ──▶ ApplyPlan) ──▶ replicas on nodes
//!   report (job, replica, exit, files) ── signed with the node's key ──▶ JobEnded
//!   verdicts ──▶ job_classes (the job's validator over the kept files) ──▶ Verdict
//! ```
//!
//! [`sim`] is `trust-sim`'s population of honest nodes and liars on top of it.

pub mod sim;

use std::collections::BTreeMap;

use chorus_core::attest::{self, result_digest};
use chorus_core::fsm::{self, Applied, Command, EndCause, JobReport, NodeRegistration, Rejected};
use chorus_core::job::{ExitStatus, JobId, JobSpec, OutputFile, Usage};
use chorus_core::launch;
use chorus_core::node::NodeResources;
use chorus_core::plugin::Scheduler;
use chorus_core::state::{ClusterConfig, ClusterState};
use chorus_plugins::sched::Fifo;

/// One replica started by [`TrustCluster::schedule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub job: JobId,
    pub replica: u32,
    pub node: String,
}

pub struct TrustCluster {
    pub state: ClusterState,
    pub scheduler: Fifo,
    /// The time stamped into the next command; [`TrustCluster::advance`] moves it.
    pub now: u64,
    keys: BTreeMap<String, [u8; 32]>,
    files: BTreeMap<(JobId, u32), Vec<Vec<u8>>>,
}

impl TrustCluster {
    /// An empty cluster; `seed` is the leader's secret for adaptive replication's coin.
    pub fn new(config: ClusterConfig, seed: u64) -> Self {
        Self {
            state: ClusterState::new(config),
            scheduler: Fifo { seed },
            now: 1_000,
            keys: BTreeMap::new(),
            files: BTreeMap::new(),
        }
    }

    pub fn apply(&mut self, cmd: Command) -> Result<Applied, Rejected> {
        fsm::apply(&mut self.state, cmd)
    }

    pub fn advance(&mut self, secs: u64) {
        self.now += secs;
    }

    /// Registers `name` (with a key of its own, `cpus` CPUs) and, when `operator` is given,
    /// deposits `stake` for that operator and bonds it to the node.
    pub fn add_node(&mut self, name: &str, operator: Option<&str>, stake: u64, cpus: u32) {
        let resources = NodeResources { cpus, mem_mb: 64_000, gpus: vec![] };
        self.add_node_with(name, operator, stake, resources);
    }

    /// [`TrustCluster::add_node`] with the given resources (GPUs, say).
    pub fn add_node_with(
        &mut self,
        name: &str,
        operator: Option<&str>,
        stake: u64,
        resources: NodeResources,
    ) {
        let key = *blake3::hash(name.as_bytes()).as_bytes();
        self.register_with(name, key, resources).expect("a new node registers");
        if let Some(op) = operator {
            let now = self.now;
            if stake > 0 {
                self.apply(Command::Deposit { operator: op.into(), amount: stake, now })
                    .expect("deposit");
                let (operator, node) = (op.into(), name.into());
                self.apply(Command::Bond { operator, node, amount: stake, now }).expect("bond");
            }
        }
    }

    /// Registers `name` with `key`, which becomes the key it signs with.
    pub fn register(&mut self, name: &str, key: [u8; 32], cpus: u32) -> Result<(), Rejected> {
        self.register_with(name, key, NodeResources { cpus, mem_mb: 64_000, gpus: vec![] })
    }

    fn register_with(
        &mut self,
        name: &str,
        key: [u8; 32],
        resources: NodeResources,
    ) -> Result<(), Rejected> {
        let reg = NodeRegistration {
            name: name.into(),
            addr: String::new(),
            hostname: name.into(),
            resources,
            boot_time: 0,
            version: "paper".into(),
            os: "paper".into(),
            running: vec![],
            session: 1,
            public_key: Some(attest::public_key(&key)),
        };
        self.apply(Command::RegisterNode { reg: Box::new(reg), now: self.now })?;
        self.keys.insert(name.into(), key);
        Ok(())
    }

    pub fn submit(&mut self, spec: JobSpec) -> Result<JobId, Rejected> {
        match self.apply(Command::Submit { spec: Box::new(spec), now: self.now })? {
            Applied::Submitted(ids) => Ok(ids[0]),
            other => panic!("a submission applied as {other:?}"),
        }
    }

    /// One scheduling pass, applied: the replicas it started.
    pub fn schedule(&mut self) -> Vec<Started> {
        let plan = self.scheduler.plan(&self.state, self.now);
        if plan.starts.is_empty() && plan.reasons.is_empty() {
            return vec![];
        }
        let before: BTreeMap<JobId, usize> =
            plan.starts.iter().map(|p| (p.job, self.replica_count(p.job))).collect();
        self.apply(Command::ApplyPlan { plan, now: self.now }).expect("a plan always applies");
        let mut started = vec![];
        for (job, from) in before {
            for r in &self.state.jobs[&job].replicas[from..] {
                let node = r.batch_node().unwrap_or_default().to_owned();
                started.push(Started { job, replica: r.index, node });
            }
        }
        started
    }

    fn replica_count(&self, job: JobId) -> usize {
        self.state.jobs.get(&job).map_or(0, |j| j.replicas.len())
    }

    /// `node` reports replica `replica` of `job` ended with `exit` and `stdout`, signed with
    /// its own key.
    pub fn report(
        &mut self,
        node: &str,
        job: JobId,
        replica: u32,
        exit: ExitStatus,
        stdout: &[u8],
    ) -> Result<Applied, Rejected> {
        let key = self.keys[node];
        self.report_signed(node, &key, job, replica, exit, EndCause::Exited, stdout)
    }

    /// A report signed with `key`, which need not be `node`'s (an impostor's).
    #[allow(clippy::too_many_arguments)]
    pub fn report_signed(
        &mut self,
        node: &str,
        key: &[u8; 32],
        job: JobId,
        replica: u32,
        exit: ExitStatus,
        cause: EndCause,
        stdout: &[u8],
    ) -> Result<Applied, Rejected> {
        let attempt = self.state.jobs.get(&job).map_or(0, |j| j.restarts);
        let path = self.state.jobs.get(&job).map(launch::output_paths).unwrap_or_default().0;
        let digest = result_digest(exit, &[(path.as_str(), stdout)]);
        let usage = Usage::default();
        let attestation =
            attest::Attestation { job, replica, node: node.into(), digest, exit, usage };
        let report = JobReport {
            job,
            attempt,
            node: node.into(),
            exit,
            cause,
            usage,
            outputs: vec![OutputFile { path, len: stdout.len() as u64, append: false }],
            replica,
            digest,
            signature: attestation.sign(key).to_vec(),
        };
        let applied = self.apply(Command::JobEnded { report: Box::new(report), now: self.now })?;
        // As the controller keeps a report's files once it applied.
        self.files.insert((job, replica), vec![stdout.to_vec()]);
        Ok(applied)
    }

    /// What the leader's verify loop does: the classes of every job whose replicas have all
    /// reported, by the job's validator, proposed as `Verdict`s. Returns the jobs decided.
    pub fn verdicts(&mut self) -> Vec<JobId> {
        let due: Vec<JobId> = self
            .state
            .active
            .iter()
            .copied()
            .filter(|id| self.state.jobs[id].awaits_verdict())
            .collect();
        for &id in &due {
            let job = &self.state.jobs[&id];
            let classes = chorus_plugins::verify::job_classes(job, |r| {
                self.files.get(&(id, r)).cloned().unwrap_or_default()
            });
            let cmd = Command::Verdict { job: id, attempt: job.restarts, classes, now: self.now };
            self.apply(cmd).expect("the leader's classes apply");
        }
        due
    }

    /// The secret seed `node` signs with (adversaries in tests borrow it).
    pub fn key_of(&self, node: &str) -> [u8; 32] {
        self.keys[node]
    }
}
