use raft::Storage;
use raft::eraftpb::{Entry, HardState};

use super::SledStorage;

fn entry(index: u64, term: u64) -> Entry {
    Entry { index, term, data: format!("cmd-{index}").into_bytes().into(), ..Default::default() }
}

#[test]
fn entries_and_hard_state_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStorage::open(dir.path()).unwrap();
        s.bootstrap(vec![1]).unwrap();
        let hs = HardState { term: 2, commit: 3, ..Default::default() };
        s.persist(&[entry(1, 1), entry(2, 2), entry(3, 2)], Some(&hs), true).unwrap();
    }
    let s = SledStorage::open(dir.path()).unwrap();
    let st = s.initial_state().unwrap();
    assert_eq!(st.hard_state.commit, 3);
    assert_eq!(st.conf_state.voters, vec![1]);
    assert_eq!(s.last_index().unwrap(), 3);
    let got = s.entries(1, 4, None, raft::GetEntriesContext::empty(false)).unwrap();
    assert_eq!(got, vec![entry(1, 1), entry(2, 2), entry(3, 2)]);
    assert_eq!(s.term(2).unwrap(), 2);
}

#[test]
fn conflicting_suffix_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStorage::open(dir.path()).unwrap();
    s.persist(&[entry(1, 1), entry(2, 1), entry(3, 1)], None, true).unwrap();
    s.persist(&[entry(2, 2)], None, true).unwrap();
    assert_eq!(s.last_index().unwrap(), 2);
    assert_eq!(s.term(2).unwrap(), 2);
    assert!(s.term(3).is_err());
}

#[test]
fn snapshot_compacts_the_log_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStorage::open(dir.path()).unwrap();
        s.bootstrap(vec![1]).unwrap();
        s.persist(&(1..=10).map(|i| entry(i, 1)).collect::<Vec<_>>(), None, true).unwrap();
        s.create_snapshot(7, b"state".to_vec()).unwrap();
        assert_eq!(s.first_index().unwrap(), 8);
        assert!(matches!(
            s.entries(5, 9, None, raft::GetEntriesContext::empty(false)),
            Err(raft::Error::Store(raft::StorageError::Compacted))
        ));
    }
    let s = SledStorage::open(dir.path()).unwrap();
    assert_eq!(s.first_index().unwrap(), 8);
    assert_eq!(s.last_index().unwrap(), 10);
    assert_eq!(s.term(7).unwrap(), 1);
    assert_eq!(s.load_snapshot().unwrap().unwrap().get_data(), b"state");
}

#[test]
fn outputs_are_kept_per_job() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStorage::open(dir.path()).unwrap();
    s.put_outputs(7, &[b"out".to_vec(), b"err".to_vec()]).unwrap();
    s.put_outputs(70, &[b"other".to_vec()]).unwrap();
    assert_eq!(s.outputs(7).unwrap(), vec![b"out".to_vec(), b"err".to_vec()]);
}

#[test]
fn inputs_round_trip_and_are_missing_when_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStorage::open(dir.path()).unwrap();
    let inputs = chorus_core::job::JobInputs {
        script: "#!/bin/sh\necho hi\n".into(),
        env: vec![("HOME".into(), "/root".into())],
    };
    s.put_inputs(5, &inputs).unwrap();
    assert_eq!(s.inputs(5).unwrap(), Some(inputs));
    assert_eq!(s.inputs(6).unwrap(), None);
}
