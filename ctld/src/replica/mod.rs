//! The Raft replica: one thread owns the [`Core`] (raft-rs's `RawNode`, the storage and the
//! state machine). Everything else talks to it through a channel.
//!
//! ```text
//!   services ──Propose(cmd, reply)──▶ ┌──────────── replica thread ────────────┐
//!   services ──Read(reply)──────────▶ │ propose / read_index / step / tick      │
//!   peer API ──Step(raft msg)───────▶ │ → Core::ready(): persist (one fsync),   │──▶ Transport
//!   tick (100 ms) ──────────────────▶ │   apply committed → fsm::apply          │   (peers)
//!                                     │ → replies, confirmed reads, Status      │
//!                                     └──────────────┬──────────────────────────┘
//!                           applied index (watch) ◀──┘  snapshot every N entries
//! ```
//!
//! A reply is sent only after the entry is durable on a quorum, committed and applied, so an
//! acknowledged submission survives `kill -9` of any minority. Proposals arriving together
//! share one fsync. Reads wait for a ReadIndex round: the leader confirms with a quorum that
//! it still leads, and the read is served once this replica applied up to that index, so a
//! read never shows less than what was acknowledged before it began.

pub mod core;

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chorus_core::ClusterState;
use chorus_core::fsm::{Applied, Command, Rejected};
use raft::StateRole;
use raft::eraftpb::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

pub use self::core::{Core, CoreConfig, Membership, Output, bootstrap};
use crate::storage::{Member, RaftStore, StoreError};

/// What travels in a raft entry: the command, and bytes that must be replicated but do not
/// belong in the in-memory state (job output files).
#[derive(Debug, Serialize, Deserialize)]
pub struct LogEntry {
    pub cmd: Command,
    pub blobs: Vec<Vec<u8>>,
}

/// Why a proposal or a read was not served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    #[error("{0}")]
    Rejected(#[from] Rejected),
    #[error("this controller is not the leader")]
    NotLeader,
    #[error("leadership changed before the request committed; it may or may not have been applied")]
    LeadershipLost,
    #[error("no leader confirmed the read in time (election in progress?)")]
    NoQuorum,
    #[error("the controller is overloaded, try again")]
    Busy,
    #[error("the controller is shutting down")]
    Stopped,
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("membership change refused: {0}")]
    Membership(String),
}

pub type Reply = oneshot::Sender<Result<Applied, ProposeError>>;
type ReadReply = oneshot::Sender<Result<(), ProposeError>>;

enum Input {
    Propose(LogEntry, Reply),
    Membership(Membership, Reply),
    Step(Box<Message>),
    Read(ReadReply),
    Unreachable(u64),
    SnapshotSent { to: u64, ok: bool },
    TransferLeader(u64),
}

/// Where raft messages for other replicas go. Must not block: the replica thread calls it.
pub trait Transport: Send + 'static {
    fn send(&self, msgs: Vec<Message>);
}

/// No peers (a single controller): nothing to send.
pub struct NoPeers;

impl Transport for NoPeers {
    fn send(&self, msgs: Vec<Message>) {
        if !msgs.is_empty() {
            warn!(
                count = msgs.len(),
                "raft messages for peers, but this controller has no transport"
            );
        }
    }
}

/// What the replica thread publishes after every round.
#[derive(Debug, Clone)]
pub struct Status {
    pub id: u64,
    pub role: StateRole,
    pub term: u64,
    /// 0 when no leader is known.
    pub leader_id: u64,
    pub applied: u64,
    pub commit: u64,
    pub voters: Vec<u64>,
    /// For a leader: how far each voter's log is known to match.
    pub progress: Vec<(u64, u64)>,
    /// This controller applied its own removal from the group: it serves nothing more.
    pub removed: bool,
}

/// A handle to the replica thread, cheap to clone.
#[derive(Clone)]
pub struct ReplicaHandle {
    tx: SyncSender<Input>,
    state: Arc<RwLock<ClusterState>>,
    applied: watch::Receiver<u64>,
    status: Arc<RwLock<Status>>,
    members: Arc<dyn Fn() -> Vec<Member> + Send + Sync>,
}

impl ReplicaHandle {
    fn send(&self, input: Input) -> Result<(), ProposeError> {
        match self.tx.try_send(input) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(ProposeError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(ProposeError::Stopped),
        }
    }

    /// Proposes a command and waits until it is applied (or refused).
    pub async fn propose(
        &self,
        cmd: Command,
        blobs: Vec<Vec<u8>>,
    ) -> Result<Applied, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::Propose(LogEntry { cmd, blobs }, reply))?;
        rx.await.unwrap_or(Err(ProposeError::Stopped))
    }

    /// Adds or removes a controller; waits until the change is applied.
    pub async fn change_membership(&self, change: Membership) -> Result<Applied, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::Membership(change, reply))?;
        rx.await.unwrap_or(Err(ProposeError::Stopped))
    }

    /// Waits until this replica has applied everything committed before the call (ReadIndex),
    /// so that a read after it is not stale.
    pub async fn read_barrier(&self) -> Result<(), ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::Read(reply))?;
        rx.await.unwrap_or(Err(ProposeError::Stopped))
    }

    /// Read access to the applied state. Hold it briefly.
    pub fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        f(&self.state.read().expect("state lock poisoned"))
    }

    /// A linearizable read: [`read_barrier`](Self::read_barrier), then [`read`](Self::read).
    pub async fn read_fresh<T>(
        &self,
        f: impl FnOnce(&ClusterState) -> T,
    ) -> Result<T, ProposeError> {
        self.read_barrier().await?;
        Ok(self.read(f))
    }

    /// A receiver that changes whenever a command is applied.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    pub fn status(&self) -> Status {
        self.status.read().expect("status lock poisoned").clone()
    }

    pub fn is_leader(&self) -> bool {
        self.status.read().expect("status lock poisoned").role == StateRole::Leader
    }

    /// The controllers of the group, by id.
    pub fn members(&self) -> Vec<Member> {
        (self.members)()
    }

    /// The client address of the leader, when one is known.
    pub fn leader_addr(&self) -> Option<String> {
        let leader = self.status().leader_id;
        self.members().into_iter().find(|m| m.id == leader).map(|m| m.client_addr)
    }

    /// A raft message from a peer. Dropped when the replica is overloaded (raft resends).
    pub fn step(&self, msg: Message) {
        let _ = self.send(Input::Step(Box::new(msg)));
    }

    pub fn report_unreachable(&self, id: u64) {
        let _ = self.send(Input::Unreachable(id));
    }

    pub fn report_snapshot(&self, to: u64, ok: bool) {
        let _ = self.send(Input::SnapshotSent { to, ok });
    }

    pub fn transfer_leader(&self, to: u64) {
        let _ = self.send(Input::TransferLeader(to));
    }
}

/// Settings of the replica thread.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub core: CoreConfig,
    pub tick: Duration,
    /// How long a read waits for the leader's confirmation before it fails.
    pub read_timeout: Duration,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            core: CoreConfig::new(1),
            tick: Duration::from_millis(100),
            read_timeout: Duration::from_secs(5),
        }
    }
}

/// Reads waiting for a ReadIndex round, then for the apply to reach its index.
#[derive(Default)]
struct Reads {
    /// Not yet asked for.
    queued: Vec<ReadReply>,
    /// Asked for under a context, since when.
    asked: HashMap<u64, (Instant, Vec<ReadReply>)>,
    /// Confirmed at an index this replica has not applied yet, asked since when.
    confirmed: Vec<(u64, Instant, Vec<ReadReply>)>,
    next_ctx: u64,
}

struct Driver<S: RaftStore, T: Transport> {
    core: Core<S>,
    transport: T,
    applied_tx: watch::Sender<u64>,
    status: Arc<RwLock<Status>>,
    waiting: HashMap<u64, Reply>,
    reads: Reads,
    cfg: ReplicaConfig,
}

/// Opens the replica over `store` (bootstrapping it with `founders` when it is brand new and
/// founders are given) and starts its thread. `initial` is the state of a new cluster.
pub fn start<S: RaftStore, T: Transport>(
    store: S,
    initial: ClusterState,
    founders: &[Member],
    transport: T,
    cfg: ReplicaConfig,
) -> Result<(ReplicaHandle, std::thread::JoinHandle<()>), StoreError> {
    if store.is_empty() && !founders.is_empty() {
        info!(id = cfg.core.id, founders = founders.len(), "bootstrapping a new controller group");
        bootstrap(&store, founders)?;
    }
    let core = Core::open(store.clone(), initial, cfg.core.clone())?;
    let state = core.state();
    let (applied_tx, applied_rx) = watch::channel(core.applied());
    let status = Arc::new(RwLock::new(Status {
        id: core.id(),
        role: core.role(),
        term: core.term(),
        leader_id: core.leader_id(),
        applied: core.applied(),
        commit: core.commit(),
        voters: core.voters(),
        progress: vec![],
        removed: core.removed(),
    }));
    let (tx, rx) = std::sync::mpsc::sync_channel(65_536);
    let driver = Driver {
        core,
        transport,
        applied_tx,
        status: Arc::clone(&status),
        waiting: HashMap::new(),
        reads: Reads::default(),
        cfg,
    };
    let thread = std::thread::Builder::new()
        .name("raft-replica".into())
        .spawn(move || driver.run(rx))
        .expect("spawn replica thread");
    let members = Arc::new(move || store.members().unwrap_or_default());
    Ok((ReplicaHandle { tx, state, applied: applied_rx, status, members }, thread))
}

impl<S: RaftStore, T: Transport> Driver<S, T> {
    fn run(mut self, rx: Receiver<Input>) {
        let mut last_tick = Instant::now();
        loop {
            let timeout = self.cfg.tick.saturating_sub(last_tick.elapsed());
            match rx.recv_timeout(timeout) {
                Ok(input) => {
                    self.handle(input);
                    // Batch whatever else is waiting: one ready, one fsync for all of it.
                    for _ in 0..4096 {
                        match rx.try_recv() {
                            Ok(input) => self.handle(input),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    info!("replica stopping: all handles dropped");
                    return;
                }
            }
            if last_tick.elapsed() >= self.cfg.tick {
                self.core.tick();
                last_tick = Instant::now();
                self.expire_reads();
            }
            if !self.reads.queued.is_empty() {
                let ctx = self.reads.next_ctx;
                self.reads.next_ctx += 1;
                let batch = std::mem::take(&mut self.reads.queued);
                self.reads.asked.insert(ctx, (Instant::now(), batch));
                self.core.read_index(ctx);
            }
            match self.core.ready() {
                Ok(out) => self.deliver(out),
                Err(e) => {
                    // Storage that cannot persist must not acknowledge anything more.
                    error!(error = %e, "raft storage failed; the replica stops");
                    for (_, r) in self.waiting.drain() {
                        let _ = r.send(Err(ProposeError::Storage(e.to_string())));
                    }
                    std::process::exit(70);
                }
            }
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Propose(entry, reply) => match self.core.propose(&entry) {
                Ok(seq) => {
                    self.waiting.insert(seq, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Input::Membership(change, reply) => match self.core.propose_membership(change) {
                Ok(seq) => {
                    self.waiting.insert(seq, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Input::Step(msg) => {
                if let Err(e) = self.core.step(*msg) {
                    warn!(error = %e, "raft message refused");
                }
            }
            Input::Read(reply) => self.reads.queued.push(reply),
            Input::Unreachable(id) => self.core.report_unreachable(id),
            Input::SnapshotSent { to, ok } => self.core.report_snapshot(to, ok),
            Input::TransferLeader(to) => self.core.transfer_leader(to),
        }
    }

    fn deliver(&mut self, out: Output) {
        if !out.messages.is_empty() {
            self.transport.send(out.messages);
        }
        if let Some((role, term)) = out.role {
            info!(term, ?role, leader = self.core.leader_id(), "role changed");
            if role != StateRole::Leader {
                for (_, r) in self.waiting.drain() {
                    let _ = r.send(Err(ProposeError::LeadershipLost));
                }
            }
        }
        for (seq, result) in out.results {
            if let Some(r) = self.waiting.remove(&seq) {
                let _ = r.send(result);
            }
        }
        for (ctx, index) in out.reads {
            if let Some((at, batch)) = self.reads.asked.remove(&ctx) {
                self.reads.confirmed.push((index, at, batch));
            }
        }
        let applied = self.core.applied();
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads.confirmed)
            .into_iter()
            .partition(|(i, ..)| *i <= applied);
        self.reads.confirmed = later;
        for r in ready.into_iter().flat_map(|(.., b)| b) {
            let _ = r.send(Ok(()));
        }
        self.applied_tx.send_if_modified(|a| std::mem::replace(a, applied) != applied);
        let mut st = self.status.write().expect("status lock poisoned");
        st.role = self.core.role();
        st.term = self.core.term();
        st.leader_id = self.core.leader_id();
        st.applied = applied;
        st.commit = self.core.commit();
        st.voters = self.core.voters();
        st.removed = self.core.removed();
        st.progress = if st.role == StateRole::Leader { self.core.progress() } else { Vec::new() };
    }

    /// Reads whose ReadIndex went unanswered (no leader), or whose index this replica does
    /// not reach (cut off from the group, removed from it), fail rather than hang.
    fn expire_reads(&mut self) {
        let limit = self.cfg.read_timeout;
        let (stale, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads.confirmed)
            .into_iter()
            .partition(|(_, at, _)| at.elapsed() > limit);
        self.reads.confirmed = kept;
        for r in stale.into_iter().flat_map(|(.., b)| b) {
            let _ = r.send(Err(ProposeError::NoQuorum));
        }
        let expired: Vec<u64> = self
            .reads
            .asked
            .iter()
            .filter(|(_, (at, _))| at.elapsed() > limit)
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in expired {
            if let Some((_, batch)) = self.reads.asked.remove(&ctx) {
                for r in batch {
                    let _ = r.send(Err(ProposeError::NoQuorum));
                }
            }
        }
    }
}
