//! Raft log, hard state, snapshots and the replica's side tables, behind `raft::Storage`.
//!
//! [`RaftStore`] is what the replica needs of a store. Two implement it: [`SledStorage`]
//! (the daemon) and [`mem::MemStore`] (the simulator and tests); one conformance suite
//! (`storage/conformance.rs`) runs against both.
//!
//! ```text
//!   sled tree "raft_log"   index (u64 BE) → Entry (protobuf); [0xff; 9] → HardState
//!   sled tree "raft_meta"  "conf_state" → ConfState,
//!                          "snapshot" → Snapshot (metadata + the state machine's bytes)
//!   side table Inputs      job or array id (u32 BE) → bincode of JobInputs (script, environment)
//!   side table Outputs     job id (u32 BE) ++ n (u8) → bytes of the job's n-th output file
//!   side table Members     controller id (u64 BE) → bincode of Member (its addresses)
//! ```
//!
//! Side tables are written by the replica as it applies the entries that carry them, so every
//! replica holds them and the in-memory state stays small. A snapshot sent to a follower
//! carries them along ([`RaftStore::snapshot_for_peer`]): a new controller gets the scripts
//! and outputs of every job it learns about.
//!
//! Durability: [`RaftStore::persist`] writes entries and hard state in one atomic sled batch
//! (the hard state lives in the log tree for that reason) and then syncs once, so many
//! proposals share one fsync and a crash never leaves entries of a term the hard state has
//! not reached, nor a commit index beyond the entries. Nothing is acknowledged to a client
//! before that returns. Snapshots are written before the log is cut behind them; entries a
//! crash leaves at or below the snapshot are ignored. `tests/crash.rs` kills a writer 200
//! times at random moments and checks every entry it reported durable.

pub mod mem;

use std::path::Path;
use std::sync::{Arc, RwLock};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use serde::{Deserialize, Serialize};

/// The encoding of what this store holds (log entries, snapshots, side tables: bincode of
/// core types). Bumped whenever a core type in them changes shape: bincode has no room for
/// a field that older data lacks, so such data must be refused, never misread.
/// 2: replicated execution (issue 6) added replicas, verdicts and prices to jobs and
/// partitions.
pub const FORMAT: u32 = 2;
const FORMAT_KEY: &[u8] = b"format";

/// Refuses a state directory written in another format; marks a new one with this one.
fn check_format(db: &sled::Db, log: &sled::Tree, meta: &sled::Tree) -> Result<(), StoreError> {
    match meta.get(FORMAT_KEY)? {
        Some(b) if b.as_ref() == FORMAT.to_be_bytes() => Ok(()),
        Some(b) => Err(StoreError::Format { found: format!("format {}", hex_or_number(&b)) }),
        None if log.is_empty() && meta.is_empty() => {
            meta.insert(FORMAT_KEY, &FORMAT.to_be_bytes())?;
            db.flush()?;
            Ok(())
        }
        None => Err(StoreError::Format { found: "format 1 (no format mark)".into() }),
    }
}

fn hex_or_number(b: &[u8]) -> String {
    match <[u8; 4]>::try_from(b) {
        Ok(n) => u32::from_be_bytes(n).to_string(),
        Err(_) => format!("{b:02x?}"),
    }
}

/// Errors of the storage layer, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt {what} in raft storage: {source}")]
    Corrupt { what: &'static str, source: protobuf::ProtobufError },
    #[error("{what}: {why}")]
    Encoding { what: &'static str, why: String },
    #[error("snapshot at {index}: {why}")]
    Snapshot { index: u64, why: String },
    #[error(
        "this state directory was written by another version of Chorus ({found}; this ctld \
         reads format {FORMAT}): start it with a new --state-dir, or run the version that wrote it"
    )]
    Format { found: String },
}

fn corrupt(what: &'static str) -> impl FnOnce(protobuf::ProtobufError) -> StoreError {
    move |source| StoreError::Corrupt { what, source }
}

/// Tables kept beside the log, written as entries apply and carried by snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Side {
    Inputs,
    Outputs,
    Members,
}

impl Side {
    pub const ALL: [Side; 3] = [Side::Inputs, Side::Outputs, Side::Members];

    fn tree(self) -> &'static str {
        match self {
            Side::Inputs => "inputs",
            Side::Outputs => "outputs",
            Side::Members => "members",
        }
    }
}

/// A side table's row: key and value.
pub type Row = (Vec<u8>, Vec<u8>);

/// What a snapshot's data holds: the state machine's bytes, and the side tables when the
/// snapshot travels to a follower (empty in the copy kept on disk, whose tables are live).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SnapshotData {
    pub state: Vec<u8>,
    pub side: Vec<(Side, Vec<u8>, Vec<u8>)>,
}

impl SnapshotData {
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        bincode::serde::encode_to_vec(self, bincode::config::standard())
            .map_err(|e| StoreError::Encoding { what: "snapshot", why: e.to_string() })
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map(|(d, _)| d)
            .map_err(|e| StoreError::Encoding { what: "snapshot", why: e.to_string() })
    }
}

fn encode<T: Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .map_err(|e| StoreError::Encoding { what, why: e.to_string() })
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, b: &[u8]) -> Result<T, StoreError> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| StoreError::Encoding { what, why: e.to_string() })
}

/// What the replica needs of its storage beyond `raft::Storage`.
pub trait RaftStore: raft::Storage + Clone + Send + Sync + 'static {
    fn conf_state(&self) -> ConfState;
    fn set_conf_state(&self, cs: ConfState) -> Result<(), StoreError>;
    fn hard_state(&self) -> HardState;
    /// Appends entries (replacing any conflicting suffix) and the hard state; syncs once
    /// when `sync`.
    fn persist(
        &self,
        entries: &[Entry],
        hs: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StoreError>;
    /// Stores a snapshot of the state machine at `index` (an applied entry) and drops the
    /// log up to it.
    fn create_snapshot(&self, index: u64, data: Vec<u8>) -> Result<(), StoreError>;
    /// Installs a snapshot from a leader: the log is replaced by the snapshot's point.
    /// The caller loads the side tables first.
    fn apply_snapshot(&self, snap: &Snapshot) -> Result<(), StoreError>;
    fn load_snapshot(&self) -> Result<Option<Snapshot>, StoreError>;
    fn side_put(&self, side: Side, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    fn side_get(&self, side: Side, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn side_scan(&self, side: Side, prefix: &[u8]) -> Result<Vec<Row>, StoreError>;
    fn side_remove(&self, side: Side, key: &[u8]) -> Result<(), StoreError>;
    fn side_clear(&self, side: Side) -> Result<(), StoreError>;

    /// True when nothing was ever stored: the caller bootstraps the group.
    fn is_empty(&self) -> bool {
        self.conf_state() == ConfState::default()
            && self.hard_state() == HardState::default()
            && raft::Storage::last_index(self).unwrap_or(0) == 0
    }

    /// Records the commit index (after a light ready advanced it); no sync of its own.
    fn set_commit(&self, commit: u64) -> Result<(), StoreError> {
        let mut hs = self.hard_state();
        if hs.commit < commit {
            hs.commit = commit;
            self.persist(&[], Some(&hs), false)?;
        }
        Ok(())
    }

    /// The stored snapshot with the side tables added, for a follower to install.
    fn snapshot_for_peer(&self, request_index: u64) -> raft::Result<Snapshot> {
        let Some(mut snap) = self.load_snapshot().map_err(store_err)? else {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        };
        if snap.get_metadata().index < request_index {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        let mut data = SnapshotData::decode(snap.get_data()).map_err(store_err)?;
        for side in Side::ALL {
            for (k, v) in self.side_scan(side, &[]).map_err(store_err)? {
                data.side.push((side, k, v));
            }
        }
        snap.set_data(data.encode().map_err(store_err)?.into());
        Ok(snap)
    }

    /// Replaces every side table with the ones a snapshot carried.
    fn load_side_tables(&self, rows: &[(Side, Vec<u8>, Vec<u8>)]) -> Result<(), StoreError> {
        for side in Side::ALL {
            self.side_clear(side)?;
        }
        for (side, k, v) in rows {
            self.side_put(*side, k, v)?;
        }
        Ok(())
    }

    /// Keeps a submission's script and environment under its job (or array) id.
    fn put_inputs(&self, key: u32, inputs: &chorus_core::job::JobInputs) -> Result<(), StoreError> {
        self.side_put(Side::Inputs, &key.to_be_bytes(), &encode("inputs", inputs)?)
    }

    /// A job's script and environment; `None` if they were never stored.
    fn inputs(&self, key: u32) -> Result<Option<chorus_core::job::JobInputs>, StoreError> {
        match self.side_get(Side::Inputs, &key.to_be_bytes())? {
            Some(b) => Ok(Some(decode("inputs", &b)?)),
            None => Ok(None),
        }
    }

    /// Keeps the bytes of the output files of one replica of a job (written by every
    /// controller as it applies the report that carried them).
    fn put_outputs(&self, job: u32, replica: u32, data: &[Vec<u8>]) -> Result<(), StoreError> {
        for (n, d) in data.iter().enumerate() {
            self.side_put(Side::Outputs, &output_key(job, replica, Some(n)), d)?;
        }
        Ok(())
    }

    /// The output files of one replica of a job, in the order its report listed them.
    fn outputs(&self, job: u32, replica: u32) -> Result<Vec<Vec<u8>>, StoreError> {
        let prefix = output_key(job, replica, None);
        Ok(self.side_scan(Side::Outputs, &prefix)?.into_iter().map(|(_, v)| v).collect())
    }

    /// Records a controller's addresses (as its conf change applies).
    fn put_member(&self, m: &Member) -> Result<(), StoreError> {
        self.side_put(Side::Members, &m.id.to_be_bytes(), &encode("member", m)?)
    }

    fn remove_member(&self, id: u64) -> Result<(), StoreError> {
        self.side_remove(Side::Members, &id.to_be_bytes())
    }

    /// The controllers of the group and their addresses, by id.
    fn members(&self) -> Result<Vec<Member>, StoreError> {
        self.side_scan(Side::Members, &[])?.iter().map(|(_, v)| decode("member", v)).collect()
    }
}

/// `job (u32 BE) ++ replica (u16 BE) ++ n (u16 BE)`, or the prefix of all of a replica's files.
fn output_key(job: u32, replica: u32, n: Option<usize>) -> Vec<u8> {
    let mut k = job.to_be_bytes().to_vec();
    k.extend_from_slice(&(replica as u16).to_be_bytes());
    if let Some(n) = n {
        k.extend_from_slice(&(n as u16).to_be_bytes());
    }
    k
}

/// A controller of the group: its raft id and where to reach its two APIs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    /// `host:port` of its client and node API.
    pub client_addr: String,
    /// `host:port` of its peer (raft) API.
    pub peer_addr: String,
}

pub(crate) fn store_err(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

/// `raft::Storage::entries`'s contract over a log holding `(snap_index, last_index]`: the
/// range must be held, and at least one entry is returned however small `max` is.
pub(crate) fn entries_within(
    (low, high): (u64, u64),
    (snap_index, last_index): (u64, u64),
    max: u64,
    read: impl Iterator<Item = raft::Result<Entry>>,
) -> raft::Result<Vec<Entry>> {
    if low <= snap_index {
        return Err(raft::Error::Store(StorageError::Compacted));
    }
    if high > last_index + 1 {
        return Err(raft::Error::Store(StorageError::Unavailable));
    }
    let mut out = Vec::new();
    let mut size = 0u64;
    for e in read {
        let e = e?;
        size += u64::from(e.compute_size());
        if !out.is_empty() && size > max {
            break;
        }
        out.push(e);
    }
    Ok(out)
}

/// `raft::Storage::term`'s contract: the snapshot's term at its index, `Compacted` before,
/// `Unavailable` after the log; `read` for the indexes in between.
pub(crate) fn term_within(
    idx: u64,
    (snap_index, snap_term, last_index): (u64, u64, u64),
    read: impl FnOnce() -> raft::Result<u64>,
) -> raft::Result<u64> {
    match idx {
        i if i == snap_index => Ok(snap_term),
        i if i < snap_index => Err(raft::Error::Store(StorageError::Compacted)),
        i if i > last_index => Err(raft::Error::Store(StorageError::Unavailable)),
        _ => read(),
    }
}

#[derive(Debug, Default, Clone)]
struct Cache {
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the last snapshot (the entry before the first kept).
    snap_index: u64,
    snap_term: u64,
    last_index: u64,
}

/// sled-backed raft storage. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct SledStorage {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    side: [sled::Tree; 3],
    cache: Arc<RwLock<Cache>>,
}

impl std::fmt::Debug for SledStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStorage").field("cache", &self.cache).finish()
    }
}

/// Key of the hard state in the log tree: after every 8-byte index key.
const HARD_STATE: &[u8] = &[0xff; 9];
/// Where stores written before the hard state moved into the log tree kept it.
const OLD_HARD_STATE: &[u8] = b"hard_state";
const CONF_STATE: &[u8] = b"conf_state";
const SNAPSHOT: &[u8] = b"snapshot";

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl SledStorage {
    /// Opens (or creates) the store under `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).mode(sled::Mode::HighThroughput).open()?;
        let log = db.open_tree("raft_log")?;
        let meta = db.open_tree("raft_meta")?;
        let side = [
            db.open_tree(Side::Inputs.tree())?,
            db.open_tree(Side::Outputs.tree())?,
            db.open_tree(Side::Members.tree())?,
        ];
        check_format(&db, &log, &meta)?;
        let mut cache = Cache::default();
        if let Some(b) = log.get(HARD_STATE)?.or(meta.get(OLD_HARD_STATE)?) {
            cache.hard_state = HardState::parse_from_bytes(&b).map_err(corrupt("hard state"))?;
        }
        if let Some(b) = meta.get(CONF_STATE)? {
            cache.conf_state = ConfState::parse_from_bytes(&b).map_err(corrupt("conf state"))?;
        }
        if let Some(b) = meta.get(SNAPSHOT)? {
            let s = Snapshot::parse_from_bytes(&b).map_err(corrupt("snapshot"))?;
            cache.snap_index = s.get_metadata().index;
            cache.snap_term = s.get_metadata().term;
        }
        cache.last_index = match log.range(..HARD_STATE).next_back().transpose()? {
            Some((k, _)) => u64::from_be_bytes(k.as_ref().try_into().expect("8-byte keys")),
            None => 0,
        }
        .max(cache.snap_index);
        Ok(Self { db, log, meta, side, cache: Arc::new(RwLock::new(cache)) })
    }

    fn tree(&self, side: Side) -> &sled::Tree {
        &self.side[side as usize]
    }

    fn cache(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().expect("storage cache lock poisoned")
    }

    fn cache_mut(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().expect("storage cache lock poisoned")
    }

    /// Number of entries kept in the log.
    pub fn log_len(&self) -> u64 {
        let c = self.cache();
        c.last_index - c.snap_index
    }
}

impl RaftStore for SledStorage {
    fn conf_state(&self) -> ConfState {
        self.cache().conf_state.clone()
    }

    fn set_conf_state(&self, cs: ConfState) -> Result<(), StoreError> {
        self.meta.insert(CONF_STATE, cs.write_to_bytes().map_err(corrupt("conf state"))?)?;
        self.cache_mut().conf_state = cs;
        Ok(())
    }

    fn hard_state(&self) -> HardState {
        self.cache().hard_state.clone()
    }

    fn persist(
        &self,
        entries: &[Entry],
        hs: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StoreError> {
        // One batch: sled applies it whole or not at all.
        let mut batch = sled::Batch::default();
        if let Some(first) = entries.first() {
            let last = self.cache().last_index;
            for i in first.index..=last {
                batch.remove(&key(i));
            }
            for e in entries {
                batch.insert(&key(e.index), e.write_to_bytes().map_err(corrupt("entry"))?);
            }
        }
        if let Some(hs) = hs {
            batch.insert(HARD_STATE, hs.write_to_bytes().map_err(corrupt("hard state"))?);
        }
        self.log.apply_batch(batch)?;
        if let Some(last) = entries.last() {
            self.cache_mut().last_index = last.index;
        }
        if let Some(hs) = hs {
            self.cache_mut().hard_state = hs.clone();
        }
        if sync {
            self.db.flush()?;
        }
        Ok(())
    }

    fn create_snapshot(&self, index: u64, data: Vec<u8>) -> Result<(), StoreError> {
        let term = raft::Storage::term(self, index)
            .map_err(|e| StoreError::Snapshot { index, why: e.to_string() })?;
        let mut snap = Snapshot::default();
        snap.set_data(data.into());
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state());
        self.meta.insert(SNAPSHOT, snap.write_to_bytes().map_err(corrupt("snapshot"))?)?;
        {
            let mut c = self.cache_mut();
            c.snap_index = index;
            c.snap_term = term;
        }
        // The snapshot is in place before the log is cut: a crash in between leaves entries
        // at or below it, which are never read again.
        let mut batch = sled::Batch::default();
        for k in self.log.range(..key(index + 1)).keys() {
            batch.remove(k?);
        }
        self.log.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    fn apply_snapshot(&self, snap: &Snapshot) -> Result<(), StoreError> {
        let m = snap.get_metadata();
        // Snapshot first, then the log: a crash in between leaves the old entries, ignored at
        // or below the snapshot, and a stale tail above it that the leader will overwrite.
        self.meta.insert(SNAPSHOT, snap.write_to_bytes().map_err(corrupt("snapshot"))?)?;
        self.set_conf_state(m.get_conf_state().clone())?;
        let mut hs = self.hard_state();
        hs.commit = hs.commit.max(m.index);
        hs.term = hs.term.max(m.term);
        let mut batch = sled::Batch::default();
        for k in self.log.range(..HARD_STATE).keys() {
            batch.remove(k?);
        }
        batch.insert(HARD_STATE, hs.write_to_bytes().map_err(corrupt("hard state"))?);
        self.log.apply_batch(batch)?;
        {
            let mut c = self.cache_mut();
            c.snap_index = m.index;
            c.snap_term = m.term;
            c.last_index = m.index;
            c.hard_state = hs;
        }
        self.db.flush()?;
        Ok(())
    }

    fn load_snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        match self.meta.get(SNAPSHOT)? {
            Some(b) => Ok(Some(Snapshot::parse_from_bytes(&b).map_err(corrupt("snapshot"))?)),
            None => Ok(None),
        }
    }

    fn side_put(&self, side: Side, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tree(side).insert(key, value)?;
        Ok(())
    }

    fn side_get(&self, side: Side, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree(side).get(key)?.map(|v| v.to_vec()))
    }

    fn side_scan(&self, side: Side, prefix: &[u8]) -> Result<Vec<Row>, StoreError> {
        self.tree(side)
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    fn side_remove(&self, side: Side, key: &[u8]) -> Result<(), StoreError> {
        self.tree(side).remove(key)?;
        Ok(())
    }

    fn side_clear(&self, side: Side) -> Result<(), StoreError> {
        self.tree(side).clear()?;
        Ok(())
    }
}

impl raft::Storage for SledStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let c = self.cache();
        Ok(RaftState::new(c.hard_state.clone(), c.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let held = {
            let c = self.cache();
            (c.snap_index, c.last_index)
        };
        let read = self.log.range(key(low)..key(high)).map(|item| {
            let (_, v) = item.map_err(store_err)?;
            Entry::parse_from_bytes(&v).map_err(store_err)
        });
        entries_within((low, high), held, max_size.into().unwrap_or(u64::MAX), read)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let held = {
            let c = self.cache();
            (c.snap_index, c.snap_term, c.last_index)
        };
        term_within(idx, held, || match self.log.get(key(idx)).map_err(store_err)? {
            Some(v) => Ok(Entry::parse_from_bytes(&v).map_err(store_err)?.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        })
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.cache().snap_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.cache().last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        self.snapshot_for_peer(request_index)
    }
}

#[cfg(test)]
mod conformance;
