//! One conformance suite for every [`RaftStore`]: sled (the daemon's) and memory (the
//! simulator's) must behave the same, or the simulator proves nothing about the daemon.
//! Each check is a function over a fresh store; sled additionally checks what survives a
//! reopen.

use raft::Storage;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};

use super::mem::MemStore;
use super::{Member, RaftStore, Side, SledStorage, SnapshotData};

fn entry(index: u64, term: u64) -> Entry {
    Entry { index, term, data: format!("cmd-{index}").into_bytes().into(), ..Default::default() }
}

fn entries(s: &impl RaftStore, low: u64, high: u64) -> raft::Result<Vec<Entry>> {
    s.entries(low, high, None, raft::GetEntriesContext::empty(false))
}

fn snapshot_data(state: &[u8]) -> Vec<u8> {
    SnapshotData { state: state.to_vec(), side: vec![] }.encode().unwrap()
}

fn new_store_is_empty(s: impl RaftStore) {
    assert!(s.is_empty());
    assert_eq!(s.first_index().unwrap(), 1);
    assert_eq!(s.last_index().unwrap(), 0);
    assert_eq!(s.term(0).unwrap(), 0);
    assert!(s.load_snapshot().unwrap().is_none());
}

fn appends_and_reads_back(s: impl RaftStore) {
    let hs = HardState { term: 2, commit: 3, ..Default::default() };
    s.persist(&[entry(1, 1), entry(2, 2), entry(3, 2)], Some(&hs), true).unwrap();
    assert!(!s.is_empty());
    assert_eq!(s.initial_state().unwrap().hard_state, hs);
    assert_eq!(s.last_index().unwrap(), 3);
    assert_eq!(entries(&s, 1, 4).unwrap(), vec![entry(1, 1), entry(2, 2), entry(3, 2)]);
    assert_eq!(entries(&s, 2, 3).unwrap(), vec![entry(2, 2)]);
    assert_eq!(s.term(2).unwrap(), 2);
    assert!(matches!(entries(&s, 1, 5), Err(raft::Error::Store(raft::StorageError::Unavailable))));
    assert!(matches!(s.term(4), Err(raft::Error::Store(raft::StorageError::Unavailable))));
}

fn max_size_returns_at_least_one_entry(s: impl RaftStore) {
    s.persist(&(1..=5).map(|i| entry(i, 1)).collect::<Vec<_>>(), None, true).unwrap();
    let got = s.entries(1, 6, Some(1), raft::GetEntriesContext::empty(false)).unwrap();
    assert_eq!(got, vec![entry(1, 1)]);
}

fn conflicting_suffix_is_replaced(s: impl RaftStore) {
    s.persist(&[entry(1, 1), entry(2, 1), entry(3, 1)], None, true).unwrap();
    s.persist(&[entry(2, 2)], None, true).unwrap();
    assert_eq!(s.last_index().unwrap(), 2);
    assert_eq!(s.term(2).unwrap(), 2);
    assert!(s.term(3).is_err());
    s.persist(&[entry(3, 2), entry(4, 2)], None, true).unwrap();
    assert_eq!(
        entries(&s, 1, 5).unwrap(),
        vec![entry(1, 1), entry(2, 2), entry(3, 2), entry(4, 2)]
    );
}

fn snapshot_compacts_the_log(s: impl RaftStore) {
    s.set_conf_state(ConfState { voters: vec![1, 2, 3], ..Default::default() }).unwrap();
    s.persist(&(1..=10).map(|i| entry(i, 1)).collect::<Vec<_>>(), None, true).unwrap();
    s.create_snapshot(7, snapshot_data(b"state")).unwrap();
    assert_eq!(s.first_index().unwrap(), 8);
    assert_eq!(s.last_index().unwrap(), 10);
    assert_eq!(s.term(7).unwrap(), 1);
    assert!(matches!(entries(&s, 5, 9), Err(raft::Error::Store(raft::StorageError::Compacted))));
    assert!(matches!(s.term(6), Err(raft::Error::Store(raft::StorageError::Compacted))));
    assert_eq!(entries(&s, 8, 11).unwrap().len(), 3);
    let snap = s.load_snapshot().unwrap().unwrap();
    assert_eq!(snap.get_metadata().index, 7);
    assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1, 2, 3]);
    // A later append continues after the snapshot.
    s.persist(&[entry(11, 2)], None, true).unwrap();
    assert_eq!(s.last_index().unwrap(), 11);
}

fn a_snapshot_for_a_peer_carries_the_side_tables(s: impl RaftStore) {
    s.persist(&(1..=3).map(|i| entry(i, 1)).collect::<Vec<_>>(), None, true).unwrap();
    let inputs = chorus_core::job::JobInputs { script: "#!/bin/sh\n".into(), env: vec![] };
    s.put_inputs(5, &inputs).unwrap();
    s.put_outputs(5, 0, &[b"out".to_vec()]).unwrap();
    let m = Member { id: 2, client_addr: "a:1".into(), peer_addr: "a:2".into() };
    s.put_member(&m).unwrap();
    assert!(matches!(
        s.snapshot(1, 2),
        Err(raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable))
    ));
    s.create_snapshot(3, snapshot_data(b"state")).unwrap();
    let snap = s.snapshot(3, 2).unwrap();
    let data = SnapshotData::decode(snap.get_data()).unwrap();
    assert_eq!(data.state, b"state");
    let sides: Vec<Side> = data.side.iter().map(|r| r.0).collect();
    assert_eq!(sides, vec![Side::Inputs, Side::Outputs, Side::Members]);
    // The copy kept on disk stays small: the tables are live there.
    assert!(
        SnapshotData::decode(s.load_snapshot().unwrap().unwrap().get_data())
            .unwrap()
            .side
            .is_empty()
    );
}

fn installing_a_snapshot_replaces_the_log_and_tables(s: impl RaftStore) {
    s.persist(&(1..=3).map(|i| entry(i, 1)).collect::<Vec<_>>(), None, true).unwrap();
    s.put_outputs(1, 0, &[b"stale".to_vec()]).unwrap();
    let mut snap = Snapshot::default();
    snap.set_data(snapshot_data(b"leader's state").into());
    snap.mut_metadata().index = 20;
    snap.mut_metadata().term = 4;
    snap.mut_metadata().set_conf_state(ConfState { voters: vec![1, 2, 3], ..Default::default() });
    s.load_side_tables(&[(Side::Outputs, vec![0, 0, 0, 9, 0, 0, 0, 0], b"fresh".to_vec())])
        .unwrap();
    s.apply_snapshot(&snap).unwrap();
    assert_eq!(s.first_index().unwrap(), 21);
    assert_eq!(s.last_index().unwrap(), 20);
    assert_eq!(s.term(20).unwrap(), 4);
    assert_eq!(s.conf_state().voters, vec![1, 2, 3]);
    assert!(s.hard_state().commit >= 20);
    assert!(s.outputs(1, 0).unwrap().is_empty());
    assert_eq!(s.outputs(9, 0).unwrap(), vec![b"fresh".to_vec()]);
    s.persist(&[entry(21, 4)], None, true).unwrap();
    assert_eq!(entries(&s, 21, 22).unwrap(), vec![entry(21, 4)]);
}

fn side_tables_keep_rows_apart(s: impl RaftStore) {
    s.put_outputs(7, 0, &[b"out".to_vec(), b"err".to_vec()]).unwrap();
    s.put_outputs(7, 1, &[b"replica 1".to_vec()]).unwrap();
    s.put_outputs(70, 0, &[b"other".to_vec()]).unwrap();
    assert_eq!(s.outputs(7, 0).unwrap(), vec![b"out".to_vec(), b"err".to_vec()]);
    assert_eq!(s.outputs(7, 1).unwrap(), vec![b"replica 1".to_vec()]);
    assert!(s.outputs(7, 2).unwrap().is_empty());
    let inputs = chorus_core::job::JobInputs {
        script: "#!/bin/sh\necho hi\n".into(),
        env: vec![("HOME".into(), "/root".into())],
    };
    s.put_inputs(5, &inputs).unwrap();
    assert_eq!(s.inputs(5).unwrap(), Some(inputs));
    assert_eq!(s.inputs(6).unwrap(), None);
    let m =
        |id| Member { id, client_addr: format!("h:{id}"), peer_addr: format!("h:{}", id + 100) };
    s.put_member(&m(2)).unwrap();
    s.put_member(&m(1)).unwrap();
    assert_eq!(s.members().unwrap(), vec![m(1), m(2)]);
    s.remove_member(1).unwrap();
    assert_eq!(s.members().unwrap(), vec![m(2)]);
}

/// Runs every check against a fresh store from `open`.
fn conformance<S: RaftStore>(open: impl Fn() -> S) {
    new_store_is_empty(open());
    appends_and_reads_back(open());
    max_size_returns_at_least_one_entry(open());
    conflicting_suffix_is_replaced(open());
    snapshot_compacts_the_log(open());
    a_snapshot_for_a_peer_carries_the_side_tables(open());
    installing_a_snapshot_replaces_the_log_and_tables(open());
    side_tables_keep_rows_apart(open());
}

#[test]
fn mem_store_conforms() {
    conformance(MemStore::new);
}

#[test]
fn sled_store_conforms() {
    let dirs = std::cell::RefCell::new(vec![]);
    conformance(|| {
        let d = tempfile::tempdir().unwrap();
        let s = SledStorage::open(d.path()).unwrap();
        dirs.borrow_mut().push(d);
        s
    });
}

#[test]
fn sled_keeps_everything_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStorage::open(dir.path()).unwrap();
        s.set_conf_state(ConfState { voters: vec![1], ..Default::default() }).unwrap();
        let hs = HardState { term: 2, commit: 3, ..Default::default() };
        s.persist(&(1..=10).map(|i| entry(i, 2)).collect::<Vec<_>>(), Some(&hs), true).unwrap();
        s.create_snapshot(7, snapshot_data(b"state")).unwrap();
        s.put_outputs(3, 0, &[b"out".to_vec()]).unwrap();
        s.persist(&[], None, true).unwrap();
    }
    let s = SledStorage::open(dir.path()).unwrap();
    let st = s.initial_state().unwrap();
    assert_eq!(st.hard_state.commit, 3);
    assert_eq!(st.conf_state.voters, vec![1]);
    assert_eq!(s.first_index().unwrap(), 8);
    assert_eq!(s.last_index().unwrap(), 10);
    assert_eq!(s.term(7).unwrap(), 2);
    assert_eq!(entries(&s, 8, 11).unwrap(), (8..=10).map(|i| entry(i, 2)).collect::<Vec<_>>());
    assert_eq!(s.outputs(3, 0).unwrap(), vec![b"out".to_vec()]);
}

#[test]
fn sled_refuses_a_state_directory_of_another_format() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStorage::open(dir.path()).unwrap();
        s.persist(&[entry(1, 1)], None, true).unwrap();
    }
    SledStorage::open(dir.path()).expect("its own format");
    // What a controller before format marks left: a log without a mark.
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("raft_meta").unwrap().remove(b"format").unwrap();
        db.flush().unwrap();
    }
    let Err(e) = SledStorage::open(dir.path()) else { panic!("opened an older format") };
    let e = e.to_string();
    assert!(e.contains("format 1") && e.contains("--state-dir"), "{e}");
}
