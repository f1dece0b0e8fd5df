//! The Raft replica: one thread owns the `RawNode`, the storage and the right to change the
//! state. Everything else talks to it through a channel.
//!
//! ```text
//!   services ──Propose(cmd, reply)──▶ ┌──────────── replica thread ────────────┐
//!                                     │ propose → ready → persist (one fsync)   │
//!   tick (100 ms) ──────────────────▶ │ → send msgs → apply committed entries   │
//!                                     │ → fsm::apply(state, cmd) → reply        │
//!                                     └──────────────┬──────────────────────────┘
//!                           applied index (watch) ◀──┘  snapshot every N entries
//! ```
//!
//! A reply is sent only after the entry is durable, committed and applied, so an
//! acknowledged submission survives `kill -9`. Proposals arriving together share one fsync.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chorus_core::ClusterState;
use chorus_core::fsm::{self, Applied, Command, Rejected};
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType};
use raft::{RawNode, StateRole};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::storage::{SledStorage, StoreError};

/// What travels in a raft entry: the command, and bytes that must be replicated but do not
/// belong in the in-memory state (job output files).
#[derive(Debug, Serialize, Deserialize)]
pub struct LogEntry {
    pub cmd: Command,
    pub blobs: Vec<Vec<u8>>,
}

/// Why a proposal was not applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    #[error("{0}")]
    Rejected(#[from] Rejected),
    #[error("this controller is not the leader")]
    NotLeader,
    #[error("the controller is overloaded, try again")]
    Busy,
    #[error("the controller is shutting down")]
    Stopped,
    #[error("storage failure: {0}")]
    Storage(String),
}

pub type Reply = oneshot::Sender<Result<Applied, ProposeError>>;

enum Input {
    Propose(LogEntry, Reply),
}

/// A handle to the replica thread, cheap to clone.
#[derive(Clone)]
pub struct ReplicaHandle {
    tx: SyncSender<Input>,
    state: Arc<RwLock<ClusterState>>,
    applied: watch::Receiver<u64>,
    leader: Arc<AtomicBool>,
}

impl ReplicaHandle {
    /// Proposes a command and waits until it is applied (or refused).
    pub async fn propose(
        &self,
        cmd: Command,
        blobs: Vec<Vec<u8>>,
    ) -> Result<Applied, ProposeError> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Input::Propose(LogEntry { cmd, blobs }, reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(ProposeError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(ProposeError::Stopped),
        }
        rx.await.unwrap_or(Err(ProposeError::Stopped))
    }

    /// Read access to the applied state. Hold it briefly.
    pub fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        f(&self.state.read().expect("state lock poisoned"))
    }

    /// A receiver that changes whenever a command is applied.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }
}

/// Settings of the replica thread.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub id: u64,
    /// Take a snapshot and compact the log after this many applied entries.
    pub snapshot_every: u64,
    pub tick: Duration,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self { id: 1, snapshot_every: 20_000, tick: Duration::from_millis(100) }
    }
}

struct Replica {
    raw: RawNode<SledStorage>,
    store: SledStorage,
    state: Arc<RwLock<ClusterState>>,
    applied_tx: watch::Sender<u64>,
    leader: Arc<AtomicBool>,
    waiting: HashMap<u64, Reply>,
    next_proposal: u64,
    applied: u64,
    last_snapshot: u64,
    cfg: ReplicaConfig,
}

/// Opens the replica over `store`, restoring state from its snapshot and log, and starts its
/// thread. `initial` is the state of a brand-new cluster.
pub fn start(
    store: SledStorage,
    initial: ClusterState,
    cfg: ReplicaConfig,
) -> Result<(ReplicaHandle, std::thread::JoinHandle<()>), StoreError> {
    if store.is_empty() {
        info!(id = cfg.id, "bootstrapping a new single-voter group");
        store.bootstrap(vec![cfg.id])?;
    }
    let mut state = initial;
    let mut applied = 0;
    if let Some(snap) = store.load_snapshot()? {
        let (restored, _): (ClusterState, _) =
            bincode::serde::decode_from_slice(snap.get_data(), bincode::config::standard())
                .map_err(|e| {
                    StoreError::Sled(sled::Error::Unsupported(format!("snapshot: {e}")))
                })?;
        // The configuration given at start wins; jobs and nodes come from the snapshot.
        let config = state.config.clone();
        state = restored;
        state.config = config;
        applied = snap.get_metadata().index;
        info!(index = applied, jobs = state.jobs.len(), "restored snapshot");
    }
    let logger = slog::Logger::root(tracing_slog::TracingSlogDrain, slog::o!());
    let raft_cfg = raft::Config {
        id: cfg.id,
        election_tick: 10,
        heartbeat_tick: 3,
        applied,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    };
    let mut raw = RawNode::new(&raft_cfg, store.clone(), &logger)
        .map_err(|e| StoreError::Sled(sled::Error::Unsupported(format!("raft: {e}"))))?;
    if store.conf_state().voters == [cfg.id] {
        // Alone: no need to wait for an election timeout.
        let _ = raw.campaign();
    }
    let state = Arc::new(RwLock::new(state));
    let (applied_tx, applied_rx) = watch::channel(applied);
    let leader = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::sync_channel(65_536);
    let replica = Replica {
        raw,
        store,
        state: Arc::clone(&state),
        applied_tx,
        leader: Arc::clone(&leader),
        waiting: HashMap::new(),
        next_proposal: 1,
        applied,
        last_snapshot: applied,
        cfg,
    };
    let thread = std::thread::Builder::new()
        .name("raft-replica".into())
        .spawn(move || replica.run(rx))
        .expect("spawn replica thread");
    Ok((ReplicaHandle { tx, state, applied: applied_rx, leader }, thread))
}

impl Replica {
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
                self.raw.tick();
                last_tick = Instant::now();
            }
            if let Err(e) = self.on_ready() {
                // Storage that cannot persist must not acknowledge anything more.
                error!(error = %e, "raft storage failed; the replica stops");
                for (_, r) in self.waiting.drain() {
                    let _ = r.send(Err(ProposeError::Storage(e.to_string())));
                }
                std::process::exit(70);
            }
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Propose(entry, reply) => {
                if self.raw.raft.state != StateRole::Leader {
                    let _ = reply.send(Err(ProposeError::NotLeader));
                    return;
                }
                let data = match bincode::serde::encode_to_vec(&entry, bincode::config::standard())
                {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = reply.send(Err(ProposeError::Storage(e.to_string())));
                        return;
                    }
                };
                let id = self.next_proposal;
                self.next_proposal += 1;
                match self.raw.propose(id.to_be_bytes().to_vec(), data) {
                    Ok(()) => {
                        self.waiting.insert(id, reply);
                    }
                    Err(e) => {
                        debug!(error = %e, "proposal dropped");
                        let _ = reply.send(Err(ProposeError::NotLeader));
                    }
                }
            }
        }
    }

    fn on_ready(&mut self) -> Result<(), StoreError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if let Some(ss) = ready.ss() {
            let is_leader = ss.raft_state == StateRole::Leader;
            self.leader.store(is_leader, Ordering::Relaxed);
            info!(term = self.raw.raft.term, role = ?ss.raft_state, "role changed");
            if !is_leader {
                for (_, r) in self.waiting.drain() {
                    let _ = r.send(Err(ProposeError::NotLeader));
                }
            }
        }
        // Single voter: no peers yet; messages would go to the peer transport.
        let _ = ready.take_messages();
        if !ready.snapshot().is_empty() {
            self.store.apply_snapshot(ready.snapshot())?;
        }
        let committed = ready.take_committed_entries();
        self.apply_entries(committed)?;
        self.store.persist(ready.entries(), ready.hs(), ready.must_sync())?;
        let _ = ready.take_persisted_messages();
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.store.set_commit(commit)?;
        }
        let _ = light.take_messages();
        let committed = light.take_committed_entries();
        self.apply_entries(committed)?;
        self.raw.advance_apply();
        self.maybe_snapshot()?;
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        for e in entries {
            self.applied = e.index;
            match e.get_entry_type() {
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&e.data)
                        .map_err(|source| StoreError::Corrupt { what: "conf change", source })?;
                    let cs = self.raw.apply_conf_change(&cc).map_err(conf_err)?;
                    self.store.set_conf_state(cs)?;
                    continue;
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&e.data)
                        .map_err(|source| StoreError::Corrupt { what: "conf change", source })?;
                    let cs = self.raw.apply_conf_change(&cc).map_err(conf_err)?;
                    self.store.set_conf_state(cs)?;
                    continue;
                }
                EntryType::EntryNormal if e.data.is_empty() => continue,
                EntryType::EntryNormal => {}
            }
            let reply = <[u8; 8]>::try_from(e.context.as_ref())
                .ok()
                .and_then(|id| self.waiting.remove(&u64::from_be_bytes(id)));
            let decoded: Result<(LogEntry, usize), _> =
                bincode::serde::decode_from_slice(&e.data, bincode::config::standard());
            let result = match decoded {
                Ok((LogEntry { mut cmd, blobs }, _)) => {
                    let ended_job = match &cmd {
                        Command::JobEnded { report, .. } => Some(report.job),
                        _ => None,
                    };
                    // The script and environment go to sled, not into the state.
                    let inputs = match &mut cmd {
                        Command::Submit { spec, .. } => Some(spec.take_inputs()),
                        _ => None,
                    };
                    let r = fsm::apply(&mut self.state.write().expect("state lock"), cmd);
                    match (&r, ended_job, inputs) {
                        (Ok(Applied::Submitted(ids)), _, Some(inputs)) => {
                            self.store.put_inputs(ids[0], &inputs)?;
                        }
                        (Ok(_), Some(job), _) if !blobs.is_empty() => {
                            self.store.put_outputs(job, &blobs)?;
                        }
                        _ => {}
                    }
                    r.map_err(ProposeError::from)
                }
                Err(err) => {
                    // Only this binary writes entries: an undecodable one is a version skew.
                    warn!(index = e.index, %err, "skipping an entry this version cannot decode");
                    Err(ProposeError::Storage(format!("undecodable entry {}: {err}", e.index)))
                }
            };
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        }
        self.applied_tx.send_replace(self.applied);
        Ok(())
    }

    fn maybe_snapshot(&mut self) -> Result<(), StoreError> {
        if self.applied < self.last_snapshot + self.cfg.snapshot_every {
            return Ok(());
        }
        let data = {
            let st = self.state.read().expect("state lock");
            bincode::serde::encode_to_vec(&*st, bincode::config::standard()).map_err(|e| {
                StoreError::Sled(sled::Error::Unsupported(format!("encode state: {e}")))
            })?
        };
        self.store.create_snapshot(self.applied, data)?;
        info!(index = self.applied, "snapshot taken, log compacted");
        self.last_snapshot = self.applied;
        Ok(())
    }
}

fn conf_err(e: raft::Error) -> StoreError {
    StoreError::Sled(sled::Error::Unsupported(format!("conf change: {e}")))
}
