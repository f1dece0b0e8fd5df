//! The simulator's raft storage: a [`MemStore`] (what the replica really runs on) that also
//! writes every entry it persists into a [`Journal`] shared by all replicas of a run. The
//! journal checks raft's log matching property as entries are written, instead of comparing
//! every pair of logs after every step:
//!
//! ```text
//!   Core::ready ──persist(entries)──▶ SimStore ──▶ MemStore (the data)
//!                                         └─────▶ Journal: (index, term) ─▶ entry hash,
//!                                                 chain hash = H(chain of index-1, entry)
//! ```
//!
//! Two logs holding the same index and term must hold the same entry there and the same
//! entries before it; with the chain hash, "same prefix" is one comparison. A disagreement
//! is recorded as a [`Violation`] that the world picks up after the step.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chorus_ctld::storage::mem::MemStore;
use chorus_ctld::storage::{RaftStore, Row, Side, StoreError};
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState};

use super::check::{Invariant, Violation};

/// What every replica of a run wrote, keyed by `(index, term)`.
#[derive(Debug, Default)]
pub struct Journal {
    entries: BTreeMap<(u64, u64), Written>,
    violations: Vec<Violation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    entry: blake3::Hash,
    chain: blake3::Hash,
    by: u64,
}

/// The hash of an entry: everything raft replicates about it.
pub fn entry_hash(e: &Entry) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(&e.index.to_be_bytes());
    h.update(&e.term.to_be_bytes());
    h.update(&(e.get_entry_type() as i32).to_be_bytes());
    h.update(&(e.data.len() as u64).to_be_bytes());
    h.update(&e.data);
    h.update(&e.context);
    h.finalize()
}

fn chain(prev: blake3::Hash, entry: blake3::Hash) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(prev.as_bytes());
    h.update(entry.as_bytes());
    h.finalize()
}

impl Journal {
    /// The entry hash recorded for `(index, term)`, if any replica wrote it.
    pub fn entry(&self, index: u64, term: u64) -> Option<blake3::Hash> {
        self.entries.get(&(index, term)).map(|w| w.entry)
    }

    /// Violations found since the last call.
    pub fn take_violations(&mut self) -> Vec<Violation> {
        std::mem::take(&mut self.violations)
    }

    fn fail(&mut self, details: String) {
        self.violations.push(Violation::new(Invariant::LogMatching, details));
    }

    /// Records `entries`, written by `replica` after the entry `(prev_index, prev_term)`.
    fn record(&mut self, replica: u64, prev: (u64, u64), entries: &[Entry]) {
        let mut prev_chain = if prev.0 == 0 {
            blake3::Hash::from_bytes([0; 32])
        } else if let Some(w) = self.entries.get(&prev) {
            w.chain
        } else {
            let (i, t) = prev;
            self.fail(format!("replica {replica} appends after index {i} term {t}, never written"));
            return;
        };
        for (expect, e) in (prev.0 + 1..).zip(entries) {
            if e.index != expect {
                self.fail(format!(
                    "replica {replica} persists index {} after {}",
                    e.index,
                    expect - 1
                ));
                return;
            }
            let w = Written {
                entry: entry_hash(e),
                chain: chain(prev_chain, entry_hash(e)),
                by: replica,
            };
            prev_chain = w.chain;
            match self.entries.get(&(e.index, e.term)) {
                None => {
                    self.entries.insert((e.index, e.term), w);
                }
                Some(old) if old.entry != w.entry => self.fail(format!(
                    "index {} term {}: replica {} wrote a different entry than replica {}",
                    e.index, e.term, replica, old.by
                )),
                Some(old) if old.chain != w.chain => self.fail(format!(
                    "index {} term {}: replica {} holds it after different entries than replica {}",
                    e.index, e.term, replica, old.by
                )),
                Some(_) => {}
            }
        }
    }
}

/// A replica's durable storage in the simulator. Survives the replica's crash: the world
/// keeps it and opens a new `Core` over it.
#[derive(Debug, Clone)]
pub struct SimStore {
    inner: MemStore,
    replica: u64,
    journal: Arc<Mutex<Journal>>,
}

impl SimStore {
    pub fn new(replica: u64, journal: Arc<Mutex<Journal>>) -> Self {
        Self { inner: MemStore::new(), replica, journal }
    }

    fn journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().expect("journal lock poisoned")
    }
}

impl RaftStore for SimStore {
    fn conf_state(&self) -> ConfState {
        self.inner.conf_state()
    }

    fn set_conf_state(&self, cs: ConfState) -> Result<(), StoreError> {
        self.inner.set_conf_state(cs)
    }

    fn hard_state(&self) -> HardState {
        self.inner.hard_state()
    }

    fn persist(
        &self,
        entries: &[Entry],
        hs: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StoreError> {
        if let Some(first) = entries.first() {
            let prev = first.index.saturating_sub(1);
            let prev_term =
                if prev == 0 { 0 } else { raft::Storage::term(&self.inner, prev).unwrap_or(0) };
            self.journal().record(self.replica, (prev, prev_term), entries);
        }
        self.inner.persist(entries, hs, sync)
    }

    fn create_snapshot(&self, index: u64, data: Vec<u8>) -> Result<(), StoreError> {
        self.inner.create_snapshot(index, data)
    }

    fn apply_snapshot(&self, snap: &Snapshot) -> Result<(), StoreError> {
        self.inner.apply_snapshot(snap)
    }

    fn load_snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        self.inner.load_snapshot()
    }

    fn side_put(&self, side: Side, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.inner.side_put(side, key, value)
    }

    fn side_get(&self, side: Side, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.side_get(side, key)
    }

    fn side_scan(&self, side: Side, prefix: &[u8]) -> Result<Vec<Row>, StoreError> {
        self.inner.side_scan(side, prefix)
    }

    fn side_remove(&self, side: Side, key: &[u8]) -> Result<(), StoreError> {
        self.inner.side_remove(side, key)
    }

    fn side_clear(&self, side: Side) -> Result<(), StoreError> {
        self.inner.side_clear(side)
    }
}

impl raft::Storage for SimStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.inner.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.inner.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.inner.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.inner.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.inner.last_index()
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        self.inner.snapshot(request_index, to)
    }
}
