//! The replica over real sled storage: what an acknowledged command leaves behind.

use chorus_core::fsm::{Applied, Command};
use chorus_core::job::{JobInputs, JobSpec};
use chorus_core::state::{ClusterConfig, ClusterState};
use chorus_ctld::replica::{self, CoreConfig, NoPeers, ReplicaConfig};
use chorus_ctld::storage::{Member, RaftStore, SledStorage};

fn spec() -> JobSpec {
    JobSpec {
        env: vec![("PATH".into(), "/usr/bin:/bin".into()), ("BIG".into(), "x".repeat(4096))],
        ..JobSpec::new("job", "#!/bin/sh\ntrue\n", "/tmp")
    }
}

/// A replica over sled in `dir`, for a brand-new default cluster.
fn open(
    dir: &std::path::Path,
    cfg: ReplicaConfig,
) -> (SledStorage, replica::ReplicaHandle, std::thread::JoinHandle<()>) {
    let store = SledStorage::open(dir).unwrap();
    let me = Member { id: 1, client_addr: "127.0.0.1:1".into(), peer_addr: "127.0.0.1:2".into() };
    let (h, thread) = replica::start(
        store.clone(),
        ClusterState::new(ClusterConfig::default()),
        &[me],
        NoPeers,
        cfg,
    )
    .unwrap();
    // A founding member applies the group's bootstrap entries, then elects itself.
    while !h.is_leader() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    (store, h, thread)
}

async fn submit(h: &replica::ReplicaHandle, s: JobSpec) -> Vec<u32> {
    match h.propose(Command::Submit { spec: Box::new(s), now: 1 }, vec![]).await.unwrap() {
        Applied::Submitted(ids) => ids,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_script_and_environment_live_in_sled_not_in_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let (store, h, _thread) = open(dir.path(), ReplicaConfig::default());
    let ids = submit(&h, spec()).await;
    let job = h.read(|st| st.jobs[&ids[0]].clone());
    assert!(job.spec.env.is_empty() && job.spec.script.is_empty(), "kept out of memory");
    assert_eq!(store.inputs(JobInputs::key(&job)).unwrap(), Some(spec().inputs()));
}

#[tokio::test]
async fn array_tasks_share_their_arrays_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let (store, h, _thread) = open(dir.path(), ReplicaConfig::default());
    let mut s = spec();
    s.array = Some(chorus_core::slurm::array::parse_array_spec("0-2").unwrap());
    let ids = submit(&h, s).await;
    for id in ids {
        let job = h.read(|st| st.jobs[&id].clone());
        assert_eq!(store.inputs(JobInputs::key(&job)).unwrap(), Some(spec().inputs()));
    }
}

#[tokio::test]
async fn a_restart_replays_the_log_into_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let (_, h, thread) = open(
            dir.path(),
            ReplicaConfig {
                core: CoreConfig { snapshot_every: 3, ..CoreConfig::new(1) },
                ..Default::default()
            },
        );
        for _ in 0..7 {
            submit(&h, spec()).await;
        }
        let st = h.read(|st| st.clone());
        drop(h);
        thread.join().unwrap();
        st
    };
    let (store, h, _thread) = open(dir.path(), ReplicaConfig::default());
    let target = store.hard_state().commit;
    let mut applied = h.applied();
    while *applied.borrow_and_update() < target {
        applied.changed().await.unwrap();
    }
    let after = h.read(|st| st.clone());
    assert_eq!(after.jobs, before.jobs);
    assert_eq!(after.next_job_id, before.next_job_id);
}
