//! The simulated outside world: clients submitting jobs and fake node agents. Each is a
//! small state machine that the world wakes and hands replies to; what it decides comes back
//! as a [`Call`] for the world to deliver to a replica. They behave like the real CLI and
//! `noded`: a client retries with the same request id until a replica acknowledges, an agent
//! registers (same session when it reconnects), runs what the leader's applied state assigns
//! to it, and reports every job that ends until a leader takes the report.
//!
//! ```text
//!   Client: wake ──Submit(request)──▶ replica ──reply──▶ Ok(Submitted) ─▶ acknowledged
//!                                                  └──▶ error/timeout ─▶ retry elsewhere
//!   Agent:  wake ──Register(session, running)──▶ replica ──Ok──▶ follow it:
//!           each wake: followed replica still leader? ── no ─▶ register again (elsewhere)
//!                      └─ yes: reconcile with its state: start assigned jobs (random
//!                         duration), stop unwanted ones; ended jobs ──Report──▶ leader
//! ```

use std::collections::{BTreeMap, BTreeSet};

use chorus_core::fsm::{Applied, EndCause, JobReport, NodeRegistration, RequestId};
use chorus_core::job::{ExitStatus, JobId, JobSpec, Usage};
use chorus_core::node::{NodeResources, NodeState};
use chorus_core::state::ClusterState;
use chorus_ctld::replica::ProposeError;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::Ms;

/// What an actor asks a replica for; the replica stamps the time when it proposes it.
#[derive(Debug, Clone)]
pub enum Request {
    Submit { request: RequestId, spec: Box<JobSpec> },
    Register(Box<NodeRegistration>),
    Report(Box<JobReport>),
}

impl Request {
    /// What it asks, for traces.
    pub fn kind(&self) -> String {
        match self {
            Request::Submit { request, .. } => format!("submit {:x}", request >> 96),
            Request::Register(r) => {
                format!("register session {:x} running {:?}", r.session >> 48, r.running)
            }
            Request::Report(r) => format!("report job {} attempt {}", r.job, r.attempt),
        }
    }
}

/// A request on its way to replica `to`, tagged so that a late reply is recognised.
#[derive(Debug, Clone)]
pub struct Call {
    pub to: u64,
    pub attempt: u64,
    pub request: Request,
}

/// A replica's answer: who answered (id, incarnation), the leader it knows of, the result.
#[derive(Debug, Clone)]
pub struct Answer {
    pub from: (u64, u64),
    pub leader_hint: u64,
    pub result: Result<Applied, ProposeError>,
}

/// The next replica to try: the hinted leader, else another one at random.
fn pick(hint: u64, from: u64, replicas: usize, rng: &mut ChaCha8Rng) -> u64 {
    if hint != 0 && hint != from {
        return hint;
    }
    let n = replicas as u64;
    let other = rng.gen_range(1..n);
    if other >= from { other + 1 } else { other }
}

/// What a client's reply changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientStep {
    Ignored,
    Acked(JobId),
    RetryIn(Ms),
    Refused(String),
}

/// One logical submission (an `sbatch`), retried with its request id until acknowledged.
#[derive(Debug)]
pub struct Client {
    pub request: RequestId,
    pub spec: JobSpec,
    pub acked: Option<JobId>,
    pub retries: u64,
    target: u64,
    inflight: Option<(u64, Ms)>,
    attempts: u64,
}

impl Client {
    pub fn new(request: RequestId, spec: JobSpec, target: u64) -> Self {
        Self { request, spec, acked: None, retries: 0, target, inflight: None, attempts: 0 }
    }

    /// Sends the submission unless one is in flight and not yet timed out. Returns the call
    /// and when to look again.
    pub fn wake(&mut self, now: Ms, timeout: Ms) -> Option<(Call, Ms)> {
        if self.acked.is_some() {
            return None;
        }
        match self.inflight {
            Some((_, deadline)) if now < deadline => return None,
            Some(_) => self.retries += 1,
            None => {}
        }
        self.attempts += 1;
        self.inflight = Some((self.attempts, now + timeout));
        let request = Request::Submit { request: self.request, spec: Box::new(self.spec.clone()) };
        Some((Call { to: self.target, attempt: self.attempts, request }, now + timeout))
    }

    pub fn reply(
        &mut self,
        attempt: u64,
        a: &Answer,
        replicas: usize,
        rng: &mut ChaCha8Rng,
    ) -> ClientStep {
        if self.inflight.map(|i| i.0) != Some(attempt) || self.acked.is_some() {
            return ClientStep::Ignored;
        }
        self.inflight = None;
        match &a.result {
            Ok(Applied::Submitted(ids)) => {
                self.acked = Some(ids[0]);
                ClientStep::Acked(ids[0])
            }
            Ok(other) => ClientStep::Refused(format!("submission answered {other:?}")),
            Err(ProposeError::Rejected(r)) => ClientStep::Refused(r.to_string()),
            Err(e) => {
                self.retries += 1;
                self.target = pick(a.leader_hint, a.from.0, replicas, rng);
                let wait = if matches!(e, ProposeError::NotLeader) { 20..100 } else { 200..600 };
                ClientStep::RetryIn(rng.gen_range(wait))
            }
        }
    }
}

type Key = (JobId, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    Register,
    Report(Key),
}

/// A node agent (`noded`) with fake jobs: a job "runs" until its random end time.
#[derive(Debug)]
pub struct Agent {
    pub name: String,
    pub cpus: u32,
    pub mem_mb: u64,
    session: u64,
    /// The replica whose assignments it follows (id, incarnation), once registered there.
    following: Option<(u64, u64)>,
    target: u64,
    /// Jobs running here and when they end.
    running: BTreeMap<Key, Ms>,
    /// Ended here and still listed by the controller (never started again).
    finished: BTreeSet<Key>,
    unreported: BTreeMap<Key, JobReport>,
    inflight: Option<(u64, Ms, What)>,
    attempts: u64,
    /// Runs every active job, whatever node it is on (a deliberately broken agent).
    pub foreign: bool,
    pub started: u64,
    pub restarts: u64,
    pub registrations: u64,
    /// Jobs the controller stopped wanting while they ran (never happens without cancel).
    pub unwanted: u64,
}

impl Agent {
    pub fn new(name: String, cpus: u32, session: u64, target: u64) -> Self {
        Self {
            name,
            cpus,
            mem_mb: u64::from(cpus) * 1024,
            session,
            following: None,
            target,
            running: BTreeMap::new(),
            finished: BTreeSet::new(),
            unreported: BTreeMap::new(),
            inflight: None,
            attempts: 0,
            foreign: false,
            started: 0,
            restarts: 0,
            registrations: 0,
            unwanted: 0,
        }
    }

    /// The replica it follows, if any.
    pub fn following(&self) -> Option<(u64, u64)> {
        self.following
    }

    /// Jobs running here now.
    pub fn running_jobs(&self) -> Vec<JobId> {
        self.running.keys().map(|k| k.0).collect()
    }

    /// Nothing running, nothing to report, nothing in flight.
    pub fn idle(&self) -> bool {
        self.running.is_empty() && self.unreported.is_empty() && self.inflight.is_none()
    }

    /// The agent process restarts: a new session, and what ran here died with the old one.
    pub fn restart(&mut self, session: u64) {
        self.session = session;
        self.running.clear();
        self.finished.clear();
        self.unreported.clear();
        self.inflight = None;
        self.following = None;
        self.restarts += 1;
    }

    /// Lets time pass: jobs end, calls time out, the assignment stream (the followed
    /// replica's state when it still leads, `None` when the stream broke) is reconciled.
    /// Returns the call to make, if any.
    pub fn wake(
        &mut self,
        now: Ms,
        timeout: Ms,
        stream: Option<&ClusterState>,
        rng: &mut ChaCha8Rng,
    ) -> Option<Call> {
        self.end_jobs(now, rng);
        if self.inflight.is_some_and(|i| now >= i.1) {
            self.inflight = None;
        }
        if self.following.is_some() {
            match stream
                .filter(|st| st.nodes.get(&self.name).is_some_and(|n| n.state != NodeState::Down))
            {
                Some(st) => self.reconcile(now, st, rng),
                None => self.following = None,
            }
        }
        if self.inflight.is_some() {
            return None;
        }
        let (to, what, request) = match self.following {
            None => (self.target, What::Register, Request::Register(Box::new(self.registration()))),
            Some((leader, _)) => {
                let (key, report) = self.unreported.iter().next()?;
                (leader, What::Report(*key), Request::Report(Box::new(report.clone())))
            }
        };
        self.attempts += 1;
        self.inflight = Some((self.attempts, now + timeout, what));
        Some(Call { to, attempt: self.attempts, request })
    }

    fn registration(&self) -> NodeRegistration {
        NodeRegistration {
            name: self.name.clone(),
            addr: String::new(),
            hostname: self.name.clone(),
            resources: NodeResources { cpus: self.cpus, mem_mb: self.mem_mb, gpus: vec![] },
            boot_time: 0,
            version: "sim".into(),
            os: "sim".into(),
            running: self.running.keys().chain(&self.finished).copied().collect(),
            session: self.session,
            public_key: None,
        }
    }

    fn end_jobs(&mut self, now: Ms, rng: &mut ChaCha8Rng) {
        let due: Vec<Key> =
            self.running.iter().filter(|(_, end)| **end <= now).map(|(k, _)| *k).collect();
        for key in due {
            self.running.remove(&key);
            let code = i32::from(rng.gen_bool(0.1));
            self.finish(key, ExitStatus { code, signal: 0 }, EndCause::Exited);
        }
    }

    fn finish(&mut self, key: Key, exit: ExitStatus, cause: EndCause) {
        self.finished.insert(key);
        let report = JobReport {
            replica: 0,
            digest: [0; 32],
            signature: vec![],
            job: key.0,
            attempt: key.1,
            node: self.name.clone(),
            exit,
            cause,
            usage: Usage::default(),
            outputs: vec![],
        };
        self.unreported.insert(key, report);
    }

    /// Starts what the controller assigns here and stops what it no longer wants.
    fn reconcile(&mut self, now: Ms, st: &ClusterState, rng: &mut ChaCha8Rng) {
        let wanted: BTreeSet<Key> = st
            .active
            .iter()
            .map(|id| &st.jobs[id])
            .filter(|j| self.foreign || j.replica_on(&self.name).is_some())
            .map(|j| (j.id, j.restarts))
            .collect();
        for key in &wanted {
            if !self.running.contains_key(key) && !self.finished.contains(key) {
                self.running.insert(*key, now + rng.gen_range(300..6000));
                self.started += 1;
            }
        }
        let unwanted: Vec<Key> =
            self.running.keys().filter(|k| !wanted.contains(k)).copied().collect();
        for key in unwanted {
            self.running.remove(&key);
            // A foreign agent loses the jobs it took when their real node ends them.
            self.unwanted += u64::from(!self.foreign);
            self.finish(key, ExitStatus { code: 0, signal: 15 }, EndCause::Stopped);
        }
        self.finished.retain(|k| wanted.contains(k));
    }

    /// Takes a replica's answer to the call `attempt`.
    pub fn reply(&mut self, attempt: u64, a: &Answer, replicas: usize, rng: &mut ChaCha8Rng) {
        let Some((_, _, what)) = self.inflight.filter(|i| i.0 == attempt) else { return };
        self.inflight = None;
        match (what, &a.result) {
            (What::Register, Ok(_)) => {
                self.following = Some(a.from);
                self.registrations += 1;
            }
            (What::Report(key), Ok(_) | Err(ProposeError::Rejected(_))) => {
                self.unreported.remove(&key);
            }
            (_, Err(_)) => self.target = pick(a.leader_hint, a.from.0, replicas, rng),
        }
    }
}
