//! The node API and what the controller knows about nodes outside the replicated state:
//! when each last spoke (heartbeats are not logged) and the one-shot signals waiting for it.
//! Only the leader serves nodes; a follower refuses naming the leader, and an assignment
//! stream ends when its controller stops leading, so the agent finds the new leader.
//!
//! ```text
//!   noded ──Register──▶ propose RegisterNode ──▶ state.nodes
//!   noded ──Heartbeat─▶ NodeHub.last_seen (memory only; the leader proposes NodeDown when it ages)
//!   noded ◀─Assignments stream── desired set: running jobs of this node (+ stop flags, signals),
//!                                re-sent whole whenever the applied index moves
//!   noded ──Report────▶ propose JobEnded (+ output bytes as blobs)
//!   noded ──Health────▶ session check ──▶ node::health_change: nothing to do ──▶ done
//!                                          drain / resume ──▶ propose NodeHealth
//! ```
//!
//! A registration carrying the agent's first health check proposes `RegisterNodeChecked`:
//! registering and draining are one command, so no job lands on a node that started sick.
//!
//! Every call comes through the node gate (auth.rs): the caller is the node its certificate
//! names, and a call naming another node (`name`, a report's `node`) is refused with
//! PERMISSION_DENIED and logged, rate-limited ([`Refusals`]).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_core::fsm::Command;
use chorus_core::job::{JobId, JobInputs, Replica};
use chorus_core::launch;
use chorus_core::node::NodeState;
use chorus_proto::WireError;
use chorus_proto::leader::not_leader;
use chorus_proto::node::{self as pn, node_service_server::NodeService};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::auth::{Refusals, caller};
use crate::client_service::{fresh, leader_only, status_of};
use crate::replica::ReplicaHandle;
use crate::storage::{RaftStore, SledStorage};

/// In-memory, per-controller knowledge about nodes.
pub struct NodeHub {
    last_seen: Mutex<HashMap<String, Instant>>,
    signals: Mutex<HashMap<String, Vec<(JobId, i32)>>>,
    wake: Mutex<HashMap<String, mpsc::Sender<()>>>,
    /// When this controller last became leader: a new leader gives every node a full
    /// timeout from then before it may mark it DOWN (no false alarms after a failover).
    since: Mutex<Instant>,
    /// When each node last had its health change the state: a node flapping faster than
    /// `health_gap` is told to try again rather than filling the log.
    health_changed: Mutex<HashMap<String, Instant>>,
    health_gap: Duration,
}

/// The least time between two state changes a node's health reports may cause.
pub const HEALTH_CHANGE_GAP: Duration = Duration::from_secs(1);

impl NodeHub {
    pub fn new() -> Self {
        Self {
            last_seen: Mutex::new(HashMap::new()),
            signals: Mutex::new(HashMap::new()),
            wake: Mutex::new(HashMap::new()),
            since: Mutex::new(Instant::now()),
            health_changed: Mutex::new(HashMap::new()),
            health_gap: HEALTH_CHANGE_GAP,
        }
    }

    /// A hub that lets a node's health change the state at most once per `gap`.
    pub fn with_health_gap(gap: Duration) -> Self {
        Self { health_gap: gap, ..Self::new() }
    }

    /// Whether `node`'s health may change the state now (and, if so, records that it does).
    fn health_may_change(&self, node: &str) -> bool {
        let mut m = self.health_changed.lock().expect("lock");
        let now = Instant::now();
        match m.get(node) {
            Some(t) if now.duration_since(*t) < self.health_gap => false,
            _ => {
                m.insert(node.to_owned(), now);
                true
            }
        }
    }

    /// This controller just became leader: forget what it saw before (heartbeats went to
    /// another leader meanwhile) and count every node's silence from now.
    pub fn lead(&self) {
        self.last_seen.lock().expect("lock").clear();
        *self.since.lock().expect("lock") = Instant::now();
    }

    pub fn seen(&self, node: &str) {
        self.last_seen.lock().expect("lock").insert(node.to_owned(), Instant::now());
    }

    /// Queues a signal for a job on `node` and wakes its assignment stream.
    pub fn signal(&self, node: &str, job: JobId, signal: i32) {
        self.signals.lock().expect("lock").entry(node.to_owned()).or_default().push((job, signal));
        if let Some(w) = self.wake.lock().expect("lock").get(node) {
            let _ = w.try_send(());
        }
    }

    fn take_signals(&self, node: &str) -> Vec<(JobId, i32)> {
        self.signals.lock().expect("lock").remove(node).unwrap_or_default()
    }

    /// Nodes that are UP in `state` but silent for longer than `timeout` (counting from this
    /// controller's start for nodes it has not heard from yet).
    pub fn silent(&self, up: impl Iterator<Item = String>, timeout: Duration) -> Vec<String> {
        let seen = self.last_seen.lock().expect("lock");
        let since = *self.since.lock().expect("lock");
        up.filter(|n| seen.get(n).copied().unwrap_or(since).elapsed() > timeout).collect()
    }
}

impl Default for NodeHub {
    fn default() -> Self {
        Self::new()
    }
}

pub struct NodeApi {
    pub replica: ReplicaHandle,
    pub store: SledStorage,
    pub hub: Arc<NodeHub>,
    pub clock: fn() -> u64,
    pub refusals: Arc<Refusals>,
}

impl NodeApi {
    /// Refuses (and logs, rate-limited) a call whose body speaks for a node other than the
    /// one the caller's certificate names.
    fn speaks_for<T>(&self, req: &Request<T>, claimed: &str) -> Result<(), Status> {
        let principal = &caller(req)?.principal;
        match principal {
            chorus_core::identity::Principal::Node(me) if me == claimed => Ok(()),
            other => {
                let why = format!("{other} may speak only for itself, not for node {claimed}");
                self.refusals.warn(&other.to_string(), &why);
                Err(Status::permission_denied(why))
            }
        }
    }
}

fn wire(e: WireError) -> Status {
    Status::invalid_argument(format!("{}: {}", e.field, e.why))
}

type AssignStream = Pin<Box<dyn Stream<Item = Result<pn::AssignmentSet, Status>> + Send>>;

#[tonic::async_trait]
impl NodeService for NodeApi {
    async fn register(
        &self,
        req: Request<pn::RegisterRequest>,
    ) -> Result<Response<pn::RegisterReply>, Status> {
        self.speaks_for(&req, &req.get_ref().name)?;
        leader_only(&self.replica)?;
        let (reg, health): chorus_proto::CheckedRegistration =
            req.into_inner().try_into().map_err(wire)?;
        let name = reg.name.clone();
        // The key a node registers with is the one its certificate is for.
        let joined = self.replica.read(|st| st.identities.nodes.get(&name).map(|j| j.public_key));
        if let Some(k) = joined
            && reg.public_key != Some(k)
        {
            self.refusals
                .warn(&format!("node {name}"), "registered with a key it did not join with");
            return Err(Status::permission_denied(format!(
                "node {name} registers with a key its certificate is not for"
            )));
        }
        let (reg, now) = (Box::new(reg), (self.clock)());
        let cmd = match health {
            Some(health) => Command::RegisterNodeChecked { reg, health, now },
            None => Command::RegisterNode { reg, now },
        };
        let applied =
            self.replica.propose(cmd, vec![]).await.map_err(|e| status_of(&self.replica, e))?;
        let reason = self.replica.read(|st| st.nodes.get(&name).and_then(|n| n.reason.clone()));
        info!(node = %name, ?applied, reason, "node registered");
        self.hub.seen(&name);
        let (cluster_name, kill_wait_secs) =
            self.replica.read(|st| (st.config.cluster_name.clone(), st.config.kill_wait_secs));
        Ok(Response::new(pn::RegisterReply { cluster_name, kill_wait_secs }))
    }

    async fn heartbeat(
        &self,
        req: Request<pn::HeartbeatRequest>,
    ) -> Result<Response<pn::HeartbeatReply>, Status> {
        self.speaks_for(&req, &req.get_ref().name)?;
        leader_only(&self.replica)?;
        let name = req.into_inner().name;
        let known =
            self.replica.read(|st| st.nodes.get(&name).is_some_and(|n| n.state != NodeState::Down));
        if known {
            self.hub.seen(&name);
        }
        Ok(Response::new(pn::HeartbeatReply { known }))
    }

    async fn health(
        &self,
        req: Request<pn::HealthRequest>,
    ) -> Result<Response<pn::HealthReply>, Status> {
        self.speaks_for(&req, &req.get_ref().name)?;
        leader_only(&self.replica)?;
        let r: chorus_proto::HealthReport = req.into_inner().try_into().map_err(wire)?;
        // Only the node's current agent speaks for it: the session it registered with.
        let change = self.replica.read(|st| match st.nodes.get(&r.node) {
            None => Err(None),
            Some(n) if n.state == NodeState::Down => Err(None),
            Some(n) if n.session != r.session => Err(Some(Status::failed_precondition(format!(
                "node {} is registered by another agent process",
                r.node
            )))),
            Some(n) => Ok(chorus_core::node::health_change(n, &r.health)),
        });
        let change = match change {
            Ok(c) => c,
            Err(None) => return Ok(Response::new(pn::HealthReply { known: false })),
            Err(Some(status)) => return Err(status),
        };
        self.hub.seen(&r.node);
        let Some(change) = change else {
            return Ok(Response::new(pn::HealthReply { known: true }));
        };
        if !self.hub.health_may_change(&r.node) {
            return Err(Status::resource_exhausted("health changes too often: try again later"));
        }
        info!(node = %r.node, ?change, "health check changes the node's state");
        let cmd = Command::NodeHealth {
            node: r.node,
            session: r.session,
            health: r.health,
            now: (self.clock)(),
        };
        self.replica.propose(cmd, vec![]).await.map_err(|e| status_of(&self.replica, e))?;
        Ok(Response::new(pn::HealthReply { known: true }))
    }

    type AssignmentsStream = AssignStream;

    async fn assignments(
        &self,
        req: Request<pn::AssignmentsRequest>,
    ) -> Result<Response<AssignStream>, Status> {
        self.speaks_for(&req, &req.get_ref().name)?;
        leader_only(&self.replica)?;
        // A new leader may not have applied all that its predecessor committed (a job it
        // started, say): a set built from that state would tell the agent to stop the job.
        // The ReadIndex round makes the first set at least as new as anything committed.
        fresh(&self.replica).await?;
        let name = req.into_inner().name;
        if !self.replica.read(|st| st.nodes.contains_key(&name)) {
            return Err(Status::failed_precondition("unknown node: register first"));
        }
        let (tx, rx) = mpsc::channel(16);
        let (wake_tx, mut wake_rx) = mpsc::channel(16);
        self.hub.wake.lock().expect("lock").insert(name.clone(), wake_tx);
        let replica = self.replica.clone();
        let hub = Arc::clone(&self.hub);
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut applied = replica.applied();
            let mut last: Option<Vec<AssignmentKey>> = None;
            loop {
                if !replica.is_leader() {
                    let _ = tx.send(Err(not_leader(replica.leader_addr().as_deref()))).await;
                    break;
                }
                // Most applied commands (a submission, a pending reason) change nothing for
                // this node: compare the cheap key before building any launch.
                let signals = hub.take_signals(&name);
                let set = replica.read(|st| {
                    let key = assignment_key(st, &name);
                    (last.as_ref() != Some(&key) || !signals.is_empty())
                        .then(|| (desired(st, &name, &store), key))
                });
                if let Some((mut set, key)) = set {
                    set.signals = signals
                        .into_iter()
                        .map(|(job_id, signal)| pn::Signal { job_id, signal })
                        .collect();
                    if tx.send(Ok(set)).await.is_err() {
                        break;
                    }
                    last = Some(key);
                }
                tokio::select! {
                    r = applied.changed() => if r.is_err() { break },
                    _ = wake_rx.recv() => {},
                    _ = tx.closed() => break,
                    // Leadership can move without anything being applied here.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn report(
        &self,
        req: Request<pn::JobReport>,
    ) -> Result<Response<pn::ReportReply>, Status> {
        self.speaks_for(&req, &req.get_ref().node)?;
        leader_only(&self.replica)?;
        let (report, blobs): chorus_proto::ReportWithOutputs =
            req.into_inner().try_into().map_err(wire)?;
        self.hub.seen(&report.node);
        let (job, node) = (report.job, report.node.clone());
        match self
            .replica
            .propose(Command::JobEnded { report: Box::new(report), now: (self.clock)() }, blobs)
            .await
        {
            Ok(_) => Ok(Response::new(pn::ReportReply {})),
            // A stale or foreign report is refused for good: the node must not retry it.
            Err(crate::replica::ProposeError::Rejected(r)) => {
                self.refusals.warn(&format!("node {node}"), &format!("report for job {job}: {r}"));
                Ok(Response::new(pn::ReportReply {}))
            }
            Err(e) => Err(status_of(&self.replica, e)),
        }
    }
}

/// `(job, attempt, replica, stop)` of each replica whose batch script runs on a node: what
/// its assignment set depends on.
type AssignmentKey = (JobId, u32, u32, bool);

/// The running replicas whose batch script `node` runs, with their jobs.
fn batch_replicas<'a>(
    st: &'a chorus_core::ClusterState,
    node: &'a str,
) -> impl Iterator<Item = (&'a chorus_core::Job, &'a Replica)> {
    st.active.iter().map(|id| &st.jobs[id]).filter_map(move |j| Some((j, j.replica_on(node)?)))
}

fn assignment_key(st: &chorus_core::ClusterState, node: &str) -> Vec<AssignmentKey> {
    batch_replicas(st, node)
        .map(|(j, r)| (j.id, j.restarts, r.index, j.stopping.is_some()))
        .collect()
}

/// The node's desired state: its running replicas, in job order, each with the script and
/// environment kept for its job in sled.
fn desired(st: &chorus_core::ClusterState, node: &str, store: &SledStorage) -> pn::AssignmentSet {
    let assignments = batch_replicas(st, node)
        .filter_map(|(job, replica)| match store.inputs(JobInputs::key(job)) {
            Ok(Some(inputs)) => Some(pn::Assignment {
                launch: Some((&launch::prepare(st, job, replica, &inputs)).into()),
                stop: job.stopping.is_some(),
            }),
            Ok(None) => {
                warn!(job = job.id, "no script stored for a running job: not launched");
                None
            }
            Err(e) => {
                warn!(job = job.id, error = %e, "cannot read a running job's script: not launched");
                None
            }
        })
        .collect();
    pn::AssignmentSet { assignments, signals: vec![], kill_wait_secs: st.config.kill_wait_secs }
}
