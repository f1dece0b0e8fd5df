//! The synchronous heart of a replica: raft-rs's `RawNode`, the storage and the state
//! machine. It owns no thread and no clock: the daemon drives it from a thread
//! ([`super::start`]), the deterministic simulator from its single loop.
//!
//! ```text
//!   propose / step / tick / read_index ──▶ Core ──ready()──▶ Output {
//!                                                              messages to peers,
//!                                                              results of our proposals,
//!                                                              confirmed read indexes,
//!                                                              role changes }
//! ```
//!
//! `ready()` follows raft-rs's order: send what may go before the disk, install a snapshot,
//! apply committed entries, append and persist (one sync), send what needed the disk,
//! advance, apply what the light ready committed.

use std::sync::{Arc, RwLock};

use chorus_core::ClusterState;
use chorus_core::fsm::{self, Applied, Command};
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, HardState, Message,
};
use raft::{RawNode, StateRole};
use tracing::{info, warn};

use super::{LogEntry, ProposeError};
use crate::storage::{Member, RaftStore, SnapshotData, StoreError};

/// Settings of one replica.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub id: u64,
    /// Distinguishes this run of the replica from earlier ones in proposal contexts.
    pub incarnation: u64,
    /// Take a snapshot and compact the log after this many applied entries.
    pub snapshot_every: u64,
    /// Ticks without a leader before a follower campaigns. raft-rs picks the timeout at random
    /// in `[election_tick, max_election_tick)`; the simulator narrows it to one value per
    /// replica, drawn from its seeded RNG.
    pub election_tick: usize,
    pub max_election_tick: usize,
    pub heartbeat_tick: usize,
}

impl CoreConfig {
    pub fn new(id: u64) -> Self {
        Self {
            id,
            incarnation: 0,
            snapshot_every: 20_000,
            election_tick: 10,
            max_election_tick: 20,
            heartbeat_tick: 2,
        }
    }
}

/// Where an entry was proposed: only that replica, in that run, has a caller waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Origin {
    replica: u64,
    incarnation: u64,
    seq: u64,
}

impl Origin {
    const LEN: usize = 24;

    fn encode(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::LEN);
        v.extend_from_slice(&self.replica.to_be_bytes());
        v.extend_from_slice(&self.incarnation.to_be_bytes());
        v.extend_from_slice(&self.seq.to_be_bytes());
        v
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let n = |i: usize| Some(u64::from_be_bytes(b.get(i * 8..i * 8 + 8)?.try_into().ok()?));
        Some(Self { replica: n(0)?, incarnation: n(1)?, seq: n(2)? })
    }
}

/// What one `ready()` produced for the driver.
#[derive(Debug, Default)]
pub struct Output {
    /// Raft messages for other replicas, in order.
    pub messages: Vec<Message>,
    /// Results of this replica's own proposals, by the sequence number `propose` returned.
    pub results: Vec<(u64, Result<Applied, ProposeError>)>,
    /// Read indexes confirmed by the leader: `(context, index)`.
    pub reads: Vec<(u64, u64)>,
    /// The new role and term when it changed.
    pub role: Option<(StateRole, u64)>,
}

/// A replica's raft node and state machine.
pub struct Core<S: RaftStore> {
    raw: RawNode<S>,
    store: S,
    state: Arc<RwLock<ClusterState>>,
    cfg: CoreConfig,
    next_seq: u64,
    applied: u64,
    last_snapshot: u64,
    /// A conf change was applied: snapshot at once. raft-rs refuses a snapshot whose
    /// configuration does not name the receiver, so a controller just added can only catch
    /// up from a snapshot taken after its addition.
    snapshot_due: bool,
    removed: bool,
}

/// The entries every founding member writes identically before its first start: one conf
/// change per member, committed at term 1 (as etcd bootstraps). A controller that joins
/// later learns the founders from these entries or from a snapshot.
pub fn bootstrap<S: RaftStore>(store: &S, founders: &[Member]) -> Result<(), StoreError> {
    let mut founders = founders.to_vec();
    founders.sort_by_key(|m| m.id);
    let mut entries = vec![];
    for (i, m) in founders.iter().enumerate() {
        let cc = ConfChange {
            change_type: ConfChangeType::AddNode,
            node_id: m.id,
            context: conf_context(Origin { replica: 0, incarnation: 0, seq: 0 }, Some(m))?.into(),
            ..Default::default()
        };
        entries.push(Entry {
            entry_type: EntryType::EntryConfChange,
            term: 1,
            index: i as u64 + 1,
            data: cc
                .write_to_bytes()
                .map_err(|source| StoreError::Corrupt { what: "conf change", source })?
                .into(),
            ..Default::default()
        });
    }
    let hs = HardState { term: 1, vote: 0, commit: entries.len() as u64, ..Default::default() };
    store.persist(&entries, Some(&hs), true)
}

fn conf_context(origin: Origin, member: Option<&Member>) -> Result<Vec<u8>, StoreError> {
    let mut ctx = origin.encode();
    if let Some(m) = member {
        ctx.extend(
            bincode::serde::encode_to_vec(m, bincode::config::standard())
                .map_err(|e| StoreError::Encoding { what: "member", why: e.to_string() })?,
        );
    }
    Ok(ctx)
}

fn raft_err(what: &'static str) -> impl FnOnce(raft::Error) -> StoreError {
    move |e| StoreError::Encoding { what, why: e.to_string() }
}

impl<S: RaftStore> Core<S> {
    /// Opens a replica over `store`: restores the snapshot, and replays the committed log on
    /// the first `ready()`. `initial` is the state of a brand-new cluster; its configuration
    /// wins over the snapshot's (configuration is given at start, not replicated).
    pub fn open(store: S, initial: ClusterState, cfg: CoreConfig) -> Result<Self, StoreError> {
        let mut state = initial;
        let mut applied = 0;
        if let Some(snap) = store.load_snapshot()? {
            let data = SnapshotData::decode(snap.get_data())?;
            let config = state.config.clone();
            state = decode_state(&data.state)?;
            state.config = config;
            applied = snap.get_metadata().index;
            info!(index = applied, jobs = state.jobs.len(), "restored snapshot");
        }
        let logger = slog::Logger::root(tracing_slog::TracingSlogDrain, slog::o!());
        let raft_cfg = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_tick,
            min_election_tick: cfg.election_tick,
            max_election_tick: cfg.max_election_tick,
            heartbeat_tick: cfg.heartbeat_tick,
            applied,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        let raw = RawNode::new(&raft_cfg, store.clone(), &logger).map_err(raft_err("raft"))?;
        let mut core = Self {
            raw,
            store,
            state: Arc::new(RwLock::new(state)),
            cfg,
            next_seq: 1,
            applied,
            last_snapshot: applied,
            snapshot_due: false,
            removed: false,
        };
        core.campaign_if_alone();
        Ok(core)
    }

    /// The state machine, shared with readers.
    pub fn state(&self) -> Arc<RwLock<ClusterState>> {
        Arc::clone(&self.state)
    }

    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    pub fn role(&self) -> StateRole {
        self.raw.raft.state
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The leader this replica knows of (0: none).
    pub fn leader_id(&self) -> u64 {
        self.raw.raft.leader_id
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn commit(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    pub fn voters(&self) -> Vec<u64> {
        let mut v = self.store.conf_state().voters;
        v.sort_unstable();
        v
    }

    /// True once this replica applied its own removal from the group.
    pub fn removed(&self) -> bool {
        self.removed
    }

    /// For a leader: the index each voter is known to hold (`matched`).
    pub fn progress(&self) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> =
            self.raw.raft.prs().iter().map(|(id, pr)| (*id, pr.matched)).collect();
        v.sort_unstable();
        v
    }

    fn campaign_if_alone(&mut self) {
        if self.voters() == [self.cfg.id] && self.role() != StateRole::Leader {
            // Alone: no need to wait for an election timeout.
            let _ = self.raw.campaign();
        }
    }

    fn origin(&mut self) -> Origin {
        let seq = self.next_seq;
        self.next_seq += 1;
        Origin { replica: self.cfg.id, incarnation: self.cfg.incarnation, seq }
    }

    /// Proposes an entry; its result comes out of a later `ready()` under the returned number.
    pub fn propose(&mut self, entry: &LogEntry) -> Result<u64, ProposeError> {
        if self.role() != StateRole::Leader {
            return Err(ProposeError::NotLeader);
        }
        let data = bincode::serde::encode_to_vec(entry, bincode::config::standard())
            .map_err(|e| ProposeError::Storage(e.to_string()))?;
        let origin = self.origin();
        self.raw.propose(origin.encode(), data).map_err(|_| ProposeError::NotLeader)?;
        Ok(origin.seq)
    }

    /// Proposes adding (with its addresses) or removing a controller, one at a time.
    pub fn propose_membership(&mut self, change: Membership) -> Result<u64, ProposeError> {
        if self.role() != StateRole::Leader {
            return Err(ProposeError::NotLeader);
        }
        let origin = self.origin();
        let (change_type, node_id, member) = match &change {
            Membership::Add(m) => (ConfChangeType::AddNode, m.id, Some(m)),
            Membership::Remove(id) => (ConfChangeType::RemoveNode, *id, None),
        };
        // The change carries the member's addresses (every replica records them as it
        // applies); the entry's context carries the origin, as for commands.
        let context =
            conf_context(origin, member).map_err(|e| ProposeError::Storage(e.to_string()))?;
        let cc = ConfChange { change_type, node_id, context: context.into(), ..Default::default() };
        self.raw
            .propose_conf_change(origin.encode(), cc)
            .map_err(|e| ProposeError::Membership(e.to_string()))?;
        Ok(origin.seq)
    }

    /// A message from another replica. Messages from replicas this one does not know are
    /// stepped too: raft-rs ignores what it must.
    pub fn step(&mut self, msg: Message) -> Result<(), raft::Error> {
        self.raw.step(msg)
    }

    pub fn tick(&mut self) {
        self.raw.tick();
    }

    /// Asks the leader to confirm it still leads; the index comes out of a later `ready()`.
    pub fn read_index(&mut self, ctx: u64) {
        self.raw.read_index(ctx.to_be_bytes().to_vec());
    }

    pub fn report_unreachable(&mut self, id: u64) {
        self.raw.report_unreachable(id);
    }

    pub fn report_snapshot(&mut self, id: u64, ok: bool) {
        let status = if ok { raft::SnapshotStatus::Finish } else { raft::SnapshotStatus::Failure };
        self.raw.report_snapshot(id, status);
    }

    pub fn transfer_leader(&mut self, to: u64) {
        self.raw.transfer_leader(to);
    }

    /// Processes everything raft-rs has ready. A storage error means nothing more may be
    /// acknowledged: the daemon stops.
    pub fn ready(&mut self) -> Result<Output, StoreError> {
        let mut out = Output::default();
        if !self.raw.has_ready() {
            return Ok(out);
        }
        let mut ready = self.raw.ready();
        if let Some(ss) = ready.ss() {
            out.role = Some((ss.raft_state, self.raw.raft.term));
        }
        out.messages.extend(ready.take_messages());
        if !ready.snapshot().is_empty() {
            self.install_snapshot(ready.snapshot().clone())?;
        }
        for rs in ready.take_read_states() {
            if let Ok(ctx) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) {
                out.reads.push((u64::from_be_bytes(ctx), rs.index));
            }
        }
        let committed = ready.take_committed_entries();
        self.apply_entries(committed, &mut out)?;
        self.store.persist(ready.entries(), ready.hs(), ready.must_sync())?;
        out.messages.extend(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.store.set_commit(commit)?;
        }
        out.messages.extend(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply_entries(committed, &mut out)?;
        self.raw.advance_apply();
        self.maybe_snapshot()?;
        Ok(out)
    }

    fn install_snapshot(&mut self, mut snap: raft::eraftpb::Snapshot) -> Result<(), StoreError> {
        let index = snap.get_metadata().index;
        let data = SnapshotData::decode(snap.get_data())?;
        let mut restored = decode_state(&data.state)?;
        // Side tables first: once the log says "up to index", their rows must be there.
        self.store.load_side_tables(&data.side)?;
        let kept = SnapshotData { state: data.state, side: vec![] };
        snap.set_data(kept.encode()?.into());
        self.store.apply_snapshot(&snap)?;
        let mut st = self.state.write().expect("state lock poisoned");
        restored.config = st.config.clone();
        *st = restored;
        drop(st);
        self.applied = index;
        self.last_snapshot = index;
        info!(index, "installed a snapshot from the leader");
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>, out: &mut Output) -> Result<(), StoreError> {
        for e in entries {
            self.applied = e.index;
            let result = match e.get_entry_type() {
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&e.data)
                        .map_err(|source| StoreError::Corrupt { what: "conf change", source })?;
                    self.apply_membership(&cc)?
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&e.data)
                        .map_err(|source| StoreError::Corrupt { what: "conf change", source })?;
                    let cs = self.raw.apply_conf_change(&cc).map_err(raft_err("conf change"))?;
                    self.store.set_conf_state(cs)?;
                    Ok(Applied::Nothing)
                }
                // A new leader's empty entry.
                EntryType::EntryNormal if e.data.is_empty() => continue,
                EntryType::EntryNormal => self.apply_command(&e)?,
            };
            let origin = Origin::decode(&e.context);
            if let Some(o) = origin.filter(|o| {
                o.replica == self.cfg.id && o.incarnation == self.cfg.incarnation && o.seq != 0
            }) {
                out.results.push((o.seq, result));
            }
        }
        Ok(())
    }

    fn apply_membership(
        &mut self,
        cc: &ConfChange,
    ) -> Result<Result<Applied, ProposeError>, StoreError> {
        let cs: ConfState = match self.raw.apply_conf_change(cc) {
            Ok(cs) => cs,
            // raft-rs refuses a change that makes no sense (removing the last voter): the
            // entry is committed, so every replica refuses it the same way.
            Err(e) => return Ok(Err(ProposeError::Membership(e.to_string()))),
        };
        self.store.set_conf_state(cs)?;
        self.snapshot_due = true;
        match cc.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                let ctx = cc.get_context();
                if ctx.len() > Origin::LEN {
                    let (m, _): (Member, _) = bincode::serde::decode_from_slice(
                        &ctx[Origin::LEN..],
                        bincode::config::standard(),
                    )
                    .map_err(|e| StoreError::Encoding { what: "member", why: e.to_string() })?;
                    info!(id = m.id, client = %m.client_addr, peer = %m.peer_addr, "controller joined the group");
                    self.store.put_member(&m)?;
                }
            }
            ConfChangeType::RemoveNode => {
                info!(id = cc.node_id, "controller left the group");
                self.store.remove_member(cc.node_id)?;
                if cc.node_id == self.cfg.id {
                    warn!("this controller was removed from the group");
                    self.removed = true;
                }
            }
        }
        self.campaign_if_alone();
        Ok(Ok(Applied::Nothing))
    }

    fn apply_command(&mut self, e: &Entry) -> Result<Result<Applied, ProposeError>, StoreError> {
        let decoded: Result<(LogEntry, usize), _> =
            bincode::serde::decode_from_slice(&e.data, bincode::config::standard());
        let (LogEntry { mut cmd, blobs }, _) = match decoded {
            Ok(d) => d,
            Err(err) => {
                // Only this binary writes entries: an undecodable one is a version skew.
                warn!(index = e.index, %err, "skipping an entry this version cannot decode");
                return Ok(Err(ProposeError::Storage(format!(
                    "undecodable entry {}: {err}",
                    e.index
                ))));
            }
        };
        let ended_job = match &cmd {
            Command::JobEnded { report, .. } => Some((report.job, report.replica)),
            _ => None,
        };
        // The script and environment go to the side table, not into the state.
        let inputs = match &mut cmd {
            Command::Submit { spec, .. } | Command::SubmitOnce { spec, .. } => {
                Some(spec.take_inputs())
            }
            _ => None,
        };
        let r = fsm::apply(&mut self.state.write().expect("state lock poisoned"), cmd);
        match (&r, ended_job, inputs) {
            (Ok(Applied::Submitted(ids)), _, Some(inputs)) => {
                self.store.put_inputs(ids[0], &inputs)?;
            }
            (Ok(_), Some((job, replica)), _) if !blobs.is_empty() => {
                self.store.put_outputs(job, replica, &blobs)?;
            }
            _ => {}
        }
        Ok(r.map_err(ProposeError::from))
    }

    fn maybe_snapshot(&mut self) -> Result<(), StoreError> {
        let due = std::mem::take(&mut self.snapshot_due) && self.applied > self.last_snapshot;
        if !due && self.applied < self.last_snapshot + self.cfg.snapshot_every {
            return Ok(());
        }
        let state = {
            let st = self.state.read().expect("state lock poisoned");
            bincode::serde::encode_to_vec(&*st, bincode::config::standard())
                .map_err(|e| StoreError::Encoding { what: "state", why: e.to_string() })?
        };
        let data = SnapshotData { state, side: vec![] }.encode()?;
        self.store.create_snapshot(self.applied, data)?;
        info!(index = self.applied, "snapshot taken, log compacted");
        self.last_snapshot = self.applied;
        Ok(())
    }

    /// The state machine's bytes (what a snapshot holds): equal on replicas that applied the
    /// same entries.
    pub fn state_bytes(&self) -> Vec<u8> {
        let st = self.state.read().expect("state lock poisoned");
        bincode::serde::encode_to_vec(&*st, bincode::config::standard()).expect("state encodes")
    }
}

fn decode_state(b: &[u8]) -> Result<ClusterState, StoreError> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .map(|(s, _)| s)
        .map_err(|e| StoreError::Encoding { what: "snapshot state", why: e.to_string() })
}

/// A change of the controller group.
#[derive(Debug, Clone)]
pub enum Membership {
    Add(Member),
    Remove(u64),
}
