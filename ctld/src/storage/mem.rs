//! Raft storage in memory, for the deterministic simulator and tests. Every write is
//! "durable" the moment it returns: a simulated crash loses the replica, not its store.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState};

use super::{RaftStore, Row, Side, StoreError, entries_within, term_within};

#[derive(Debug, Default)]
struct Inner {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Option<Snapshot>,
    /// Index and term of the entry before `entries[0]`.
    snap_index: u64,
    snap_term: u64,
    entries: Vec<Entry>,
    side: BTreeMap<(Side, Vec<u8>), Vec<u8>>,
}

impl Inner {
    fn last_index(&self) -> u64 {
        self.snap_index + self.entries.len() as u64
    }
}

/// In-memory raft storage. Cheap to clone; clones share the data.
#[derive(Debug, Clone, Default)]
pub struct MemStore(Arc<Mutex<Inner>>);

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().expect("mem store lock poisoned")
    }
}

impl RaftStore for MemStore {
    fn conf_state(&self) -> ConfState {
        self.lock().conf_state.clone()
    }

    fn set_conf_state(&self, cs: ConfState) -> Result<(), StoreError> {
        self.lock().conf_state = cs;
        Ok(())
    }

    fn hard_state(&self) -> HardState {
        self.lock().hard_state.clone()
    }

    fn persist(
        &self,
        entries: &[Entry],
        hs: Option<&HardState>,
        _sync: bool,
    ) -> Result<(), StoreError> {
        let mut s = self.lock();
        if let Some(first) = entries.first() {
            assert!(
                first.index > s.snap_index && first.index <= s.last_index() + 1,
                "append at {} leaves a gap (log {}..={})",
                first.index,
                s.snap_index + 1,
                s.last_index()
            );
            let keep = (first.index - s.snap_index - 1) as usize;
            s.entries.truncate(keep);
            s.entries.extend_from_slice(entries);
        }
        if let Some(hs) = hs {
            s.hard_state = hs.clone();
        }
        Ok(())
    }

    fn create_snapshot(&self, index: u64, data: Vec<u8>) -> Result<(), StoreError> {
        let term = raft::Storage::term(self, index)
            .map_err(|e| StoreError::Snapshot { index, why: e.to_string() })?;
        let mut s = self.lock();
        let mut snap = Snapshot::default();
        snap.set_data(data.into());
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(s.conf_state.clone());
        let drop = (index - s.snap_index) as usize;
        s.entries.drain(..drop);
        s.snap_index = index;
        s.snap_term = term;
        s.snapshot = Some(snap);
        Ok(())
    }

    fn apply_snapshot(&self, snap: &Snapshot) -> Result<(), StoreError> {
        let m = snap.get_metadata();
        let mut s = self.lock();
        s.conf_state = m.get_conf_state().clone();
        s.entries.clear();
        s.snap_index = m.index;
        s.snap_term = m.term;
        s.hard_state.commit = s.hard_state.commit.max(m.index);
        s.hard_state.term = s.hard_state.term.max(m.term);
        s.snapshot = Some(snap.clone());
        Ok(())
    }

    fn load_snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.lock().snapshot.clone())
    }

    fn side_put(&self, side: Side, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.lock().side.insert((side, key.to_vec()), value.to_vec());
        Ok(())
    }

    fn side_get(&self, side: Side, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().side.get(&(side, key.to_vec())).cloned())
    }

    fn side_scan(&self, side: Side, prefix: &[u8]) -> Result<Vec<Row>, StoreError> {
        Ok(self
            .lock()
            .side
            .range((side, prefix.to_vec())..)
            .take_while(|((s, k), _)| *s == side && k.starts_with(prefix))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn side_remove(&self, side: Side, key: &[u8]) -> Result<(), StoreError> {
        self.lock().side.remove(&(side, key.to_vec()));
        Ok(())
    }

    fn side_clear(&self, side: Side) -> Result<(), StoreError> {
        self.lock().side.retain(|(s, _), _| *s != side);
        Ok(())
    }
}

impl raft::Storage for MemStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let s = self.lock();
        Ok(RaftState::new(s.hard_state.clone(), s.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let s = self.lock();
        let held = (s.snap_index, s.last_index());
        let slot = |i: u64| (i.saturating_sub(s.snap_index + 1) as usize).min(s.entries.len());
        let read = s.entries[slot(low)..slot(high).max(slot(low))].iter().cloned().map(Ok);
        entries_within((low, high), held, max_size.into().unwrap_or(u64::MAX), read)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let s = self.lock();
        term_within(idx, (s.snap_index, s.snap_term, s.last_index()), || {
            Ok(s.entries[(idx - s.snap_index - 1) as usize].term)
        })
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.lock().snap_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.lock().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        self.snapshot_for_peer(request_index)
    }
}
