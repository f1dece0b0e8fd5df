//! Raft log, hard state and snapshots in sled, behind `raft::Storage`.
//!
//! ```text
//!   tree "raft_log"   index (u64 BE) → Entry (protobuf)
//!   tree "raft_meta"  "hard_state" → HardState, "conf_state" → ConfState,
//!                     "snapshot" → Snapshot (metadata + the state machine's bytes)
//!   tree "outputs"    job id (u32 BE) ++ n (u8) → bytes of the job's n-th output file
//!   tree "inputs"     job or array id (u32 BE) → bincode of JobInputs (script, environment)
//! ```
//!
//! `outputs` and `inputs` are written by the replica as it applies the entries that carry
//! them, so every replica holds them and the in-memory state stays small.
//!
//! Durability: [`SledStorage::persist`] writes entries and hard state and then calls
//! `flush()` (an fsync) once, so many proposals share one sync. Nothing is acknowledged
//! to a client before that returns. sled recovers a prefix of its writes, so a crash between
//! the log batch and the hard state leaves a state raft accepts (entries beyond the commit).

use std::path::Path;
use std::sync::{Arc, RwLock};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

/// Errors of the storage layer, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt {what} in raft storage: {source}")]
    Corrupt { what: &'static str, source: protobuf::ProtobufError },
}

fn corrupt(what: &'static str) -> impl FnOnce(protobuf::ProtobufError) -> StoreError {
    move |source| StoreError::Corrupt { what, source }
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
    outputs: sled::Tree,
    inputs: sled::Tree,
    cache: Arc<RwLock<Cache>>,
}

impl std::fmt::Debug for SledStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStorage").field("cache", &self.cache).finish()
    }
}

const HARD_STATE: &[u8] = b"hard_state";
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
        let outputs = db.open_tree("outputs")?;
        let inputs = db.open_tree("inputs")?;
        let mut cache = Cache::default();
        if let Some(b) = meta.get(HARD_STATE)? {
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
        cache.last_index = match log.last()? {
            Some((k, _)) => u64::from_be_bytes(k.as_ref().try_into().expect("8-byte keys")),
            None => cache.snap_index,
        };
        Ok(Self { db, log, meta, outputs, inputs, cache: Arc::new(RwLock::new(cache)) })
    }

    /// True when nothing was ever stored: the caller bootstraps the configuration.
    pub fn is_empty(&self) -> bool {
        self.cache.read().expect("not poisoned").conf_state == ConfState::default()
    }

    /// Sets the initial voters of a new group.
    pub fn bootstrap(&self, voters: Vec<u64>) -> Result<(), StoreError> {
        self.set_conf_state(ConfState { voters, ..Default::default() })?;
        self.db.flush()?;
        Ok(())
    }

    pub fn set_conf_state(&self, cs: ConfState) -> Result<(), StoreError> {
        self.meta.insert(CONF_STATE, cs.write_to_bytes().map_err(corrupt("conf state"))?)?;
        self.cache.write().expect("not poisoned").conf_state = cs;
        Ok(())
    }

    pub fn conf_state(&self) -> ConfState {
        self.cache.read().expect("not poisoned").conf_state.clone()
    }

    /// Appends entries (replacing any conflicting suffix) and the hard state, then syncs once.
    pub fn persist(
        &self,
        entries: &[Entry],
        hs: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StoreError> {
        if let Some(first) = entries.first() {
            let mut batch = sled::Batch::default();
            let last = self.cache.read().expect("not poisoned").last_index;
            for i in first.index..=last {
                batch.remove(&key(i));
            }
            for e in entries {
                batch.insert(&key(e.index), e.write_to_bytes().map_err(corrupt("entry"))?);
            }
            self.log.apply_batch(batch)?;
            self.cache.write().expect("not poisoned").last_index =
                entries.last().expect("non-empty").index;
        }
        if let Some(hs) = hs {
            self.meta.insert(HARD_STATE, hs.write_to_bytes().map_err(corrupt("hard state"))?)?;
            self.cache.write().expect("not poisoned").hard_state = hs.clone();
        }
        if sync {
            self.db.flush()?;
        }
        Ok(())
    }

    /// Records the commit index (after a light ready advanced it).
    pub fn set_commit(&self, commit: u64) -> Result<(), StoreError> {
        let mut hs = self.cache.read().expect("not poisoned").hard_state.clone();
        if hs.commit < commit {
            hs.commit = commit;
            self.persist(&[], Some(&hs), false)?;
        }
        Ok(())
    }

    /// Stores a snapshot of the state machine at `index` and drops the log up to it.
    pub fn create_snapshot(&self, index: u64, data: Vec<u8>) -> Result<(), StoreError> {
        let term = raft::Storage::term(self, index).map_err(|e| {
            StoreError::Sled(sled::Error::Unsupported(format!("snapshot at {index}: {e}")))
        })?;
        let mut snap = Snapshot::default();
        snap.set_data(data.into());
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state());
        self.meta.insert(SNAPSHOT, snap.write_to_bytes().map_err(corrupt("snapshot"))?)?;
        {
            let mut c = self.cache.write().expect("not poisoned");
            c.snap_index = index;
            c.snap_term = term;
        }
        let mut batch = sled::Batch::default();
        for k in self.log.range(..key(index + 1)).keys() {
            batch.remove(k?);
        }
        self.log.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Installs a snapshot received from a leader (or loaded at start): replaces the log.
    pub fn apply_snapshot(&self, snap: &Snapshot) -> Result<(), StoreError> {
        let m = snap.get_metadata();
        self.meta.insert(SNAPSHOT, snap.write_to_bytes().map_err(corrupt("snapshot"))?)?;
        self.set_conf_state(m.get_conf_state().clone())?;
        self.log.clear()?;
        let mut c = self.cache.write().expect("not poisoned");
        c.snap_index = m.index;
        c.snap_term = m.term;
        c.last_index = m.index;
        c.hard_state.commit = c.hard_state.commit.max(m.index);
        c.hard_state.term = c.hard_state.term.max(m.term);
        let hs = c.hard_state.clone();
        drop(c);
        self.persist(&[], Some(&hs), true)
    }

    /// The stored snapshot, if any (state machine bytes and metadata).
    pub fn load_snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        match self.meta.get(SNAPSHOT)? {
            Some(b) => Ok(Some(Snapshot::parse_from_bytes(&b).map_err(corrupt("snapshot"))?)),
            None => Ok(None),
        }
    }

    /// Number of entries kept in the log.
    pub fn log_len(&self) -> u64 {
        let c = self.cache.read().expect("not poisoned");
        c.last_index - c.snap_index
    }

    /// Keeps the bytes of a finished job's output files (written by every replica as it
    /// applies the report that carried them).
    pub fn put_outputs(&self, job: u32, data: &[Vec<u8>]) -> Result<(), StoreError> {
        for (n, d) in data.iter().enumerate() {
            let mut k = job.to_be_bytes().to_vec();
            k.push(n as u8);
            self.outputs.insert(k, d.as_slice())?;
        }
        Ok(())
    }

    /// Keeps a submission's script and environment under its job (or array) id.
    pub fn put_inputs(
        &self,
        key: u32,
        inputs: &chorus_core::job::JobInputs,
    ) -> Result<(), StoreError> {
        let bytes =
            bincode::serde::encode_to_vec(inputs, bincode::config::standard()).map_err(|e| {
                StoreError::Sled(sled::Error::Unsupported(format!("encode inputs: {e}")))
            })?;
        self.inputs.insert(key.to_be_bytes(), bytes)?;
        Ok(())
    }

    /// A job's script and environment; `None` if they were never stored.
    pub fn inputs(&self, key: u32) -> Result<Option<chorus_core::job::JobInputs>, StoreError> {
        let Some(b) = self.inputs.get(key.to_be_bytes())? else { return Ok(None) };
        let (v, _) =
            bincode::serde::decode_from_slice(&b, bincode::config::standard()).map_err(|e| {
                StoreError::Sled(sled::Error::Unsupported(format!("decode inputs {key}: {e}")))
            })?;
        Ok(Some(v))
    }

    pub fn outputs(&self, job: u32) -> Result<Vec<Vec<u8>>, StoreError> {
        self.outputs.scan_prefix(job.to_be_bytes()).values().map(|v| Ok(v?.to_vec())).collect()
    }
}

fn store_err(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

impl raft::Storage for SledStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let c = self.cache.read().expect("not poisoned");
        Ok(RaftState::new(c.hard_state.clone(), c.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max = max_size.into().unwrap_or(u64::MAX);
        let c = self.cache.read().expect("not poisoned").clone();
        if low <= c.snap_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > c.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = Vec::new();
        let mut size = 0u64;
        for item in self.log.range(key(low)..key(high)) {
            let (_, v) = item.map_err(store_err)?;
            let e = Entry::parse_from_bytes(&v).map_err(store_err)?;
            size += u64::from(e.compute_size());
            if !out.is_empty() && size > max {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let c = self.cache.read().expect("not poisoned").clone();
        if idx == c.snap_index {
            return Ok(c.snap_term);
        }
        if idx < c.snap_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > c.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        match self.log.get(key(idx)).map_err(store_err)? {
            Some(v) => Ok(Entry::parse_from_bytes(&v).map_err(store_err)?.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.cache.read().expect("not poisoned").snap_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.cache.read().expect("not poisoned").last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        match self.load_snapshot().map_err(store_err)? {
            Some(s) if s.get_metadata().index >= request_index => Ok(s),
            _ => Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)),
        }
    }
}

#[cfg(test)]
mod tests;
