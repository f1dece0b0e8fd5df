//! The replica over real sled storage: what an acknowledged command leaves behind.

use chorus_core::fsm::{Applied, Command, NodeRegistration};
use chorus_core::job::{JobInputs, JobSpec};
use chorus_core::node::NodeResources;
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

/// Three replicas in one process, raft messages routed through channels; appends to one
/// follower can be held back to make it lag.
mod group {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use chorus_ctld::replica::{ReplicaHandle, Transport};
    use chorus_ctld::storage::mem::MemStore;
    use raft::eraftpb::{Message, MessageType};

    use super::*;

    #[derive(Clone, Default)]
    pub struct Router {
        pub handles: Arc<Mutex<HashMap<u64, ReplicaHandle>>>,
        /// Appends to this replica are dropped (0: none).
        pub starve: Arc<AtomicU64>,
        /// Everything to or from this replica is dropped (0: none).
        pub isolate: Arc<AtomicU64>,
    }

    impl Transport for Router {
        fn send(&self, msgs: Vec<Message>) {
            let handles = self.handles.lock().unwrap();
            for m in msgs {
                let cut = self.isolate.load(Ordering::SeqCst);
                let starved = (m.to == self.starve.load(Ordering::SeqCst)
                    && matches!(
                        m.get_msg_type(),
                        MessageType::MsgAppend | MessageType::MsgSnapshot
                    ))
                    || m.to == cut
                    || m.from == cut;
                if let (false, Some(h)) = (starved, handles.get(&m.to)) {
                    h.step(m);
                }
            }
        }
    }

    pub fn start() -> (Router, Vec<ReplicaHandle>) {
        let router = Router::default();
        let founders: Vec<Member> = (1..=3)
            .map(|id| Member { id, client_addr: format!("c{id}"), peer_addr: format!("p{id}") })
            .collect();
        let handles: Vec<ReplicaHandle> = (1..=3)
            .map(|id| {
                let cfg = ReplicaConfig {
                    core: CoreConfig::new(id),
                    tick: std::time::Duration::from_millis(20),
                    ..Default::default()
                };
                let state = ClusterState::new(ClusterConfig::default());
                replica::start(MemStore::new(), state, &founders, router.clone(), cfg).unwrap().0
            })
            .collect();
        for (id, h) in (1..=3).zip(&handles) {
            router.handles.lock().unwrap().insert(id, h.clone());
        }
        (router, handles)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_on_a_lagging_follower_waits_for_what_was_acknowledged() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let (router, replicas) = group::start();
    let leader = loop {
        if let Some(l) = replicas.iter().find(|h| h.is_leader()) {
            break l.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let follower = replicas.iter().find(|h| !h.is_leader()).unwrap().clone();
    router.starve.store(follower.status().id, Ordering::SeqCst);

    // Acknowledged by the leader and the other follower: a quorum without the starved one.
    let ids = submit(&leader, spec()).await;
    assert!(follower.read(|st| !st.jobs.contains_key(&ids[0])), "the follower must lag");

    // A read through the follower waits: the leader confirms an index the follower lacks.
    let read = tokio::spawn({
        let f = follower.clone();
        async move { f.read_fresh(|st| st.jobs.contains_key(&ids[0])).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!read.is_finished(), "a read served before the follower caught up would be stale");
    router.starve.store(0, Ordering::SeqCst);
    let seen = tokio::time::timeout(Duration::from_secs(10), read).await.unwrap().unwrap();
    assert!(seen.unwrap(), "once caught up, the read shows the acknowledged job");
}

/// Item 6 of the replication issue: a new leader has heard no heartbeat (they went to its
/// predecessor); it must give every node a full timeout from its election before it may mark
/// one DOWN, however long it has itself been running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_marks_no_node_down_before_a_full_timeout() {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use chorus_core::node::NodeState;
    use chorus_ctld::leader::liveness_loop;
    use chorus_ctld::nodes::NodeHub;

    const TIMEOUT: Duration = Duration::from_secs(3);
    let (router, replicas) = group::start();
    let hubs: Vec<std::sync::Arc<NodeHub>> =
        replicas.iter().map(|_| std::sync::Arc::new(NodeHub::new())).collect();
    for (r, hub) in replicas.iter().zip(&hubs) {
        tokio::spawn(liveness_loop(r.clone(), std::sync::Arc::clone(hub), || 1, TIMEOUT));
    }
    let leader_of = |replicas: &[replica::ReplicaHandle]| {
        replicas
            .iter()
            .position(|h| h.is_leader() && h.status().id != router.isolate.load(Ordering::SeqCst))
    };
    let first = loop {
        if let Some(i) = leader_of(&replicas) {
            break i;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let reg = node1();
    replicas[first]
        .propose(Command::RegisterNode { reg: Box::new(reg), now: 1 }, vec![])
        .await
        .unwrap();
    // The node heartbeats to the first leader only, for longer than the timeout: the other
    // controllers have heard nothing from it all that while.
    let until = Instant::now() + TIMEOUT + Duration::from_secs(1);
    while Instant::now() < until {
        hubs[first].seen("node1");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The first leader is cut off; another is elected.
    router.isolate.store(replicas[first].status().id, Ordering::SeqCst);
    let second = loop {
        if let Some(i) = leader_of(&replicas).filter(|i| *i != first) {
            break i;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elected = Instant::now();
    // Within its grace the new leader marks nothing DOWN (its clock started at its election)...
    let state = |r: &replica::ReplicaHandle| r.read(|st| st.nodes["node1"].state);
    while elected.elapsed() < TIMEOUT / 2 {
        assert_eq!(
            state(&replicas[second]),
            NodeState::Up,
            "a failover marked a healthy node DOWN"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... and a node that really stays silent is marked DOWN once its full timeout has passed.
    let deadline = elected + TIMEOUT * 3;
    while state(&replicas[second]) != NodeState::Down {
        assert!(Instant::now() < deadline, "a silent node was never marked DOWN");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(elected.elapsed() >= TIMEOUT, "marked DOWN before a full timeout from the election");
}

/// The node API's health call: only the node's current agent speaks for it, a bad reason is
/// refused at the boundary, an unchanged result costs no log entry, and a node flapping
/// faster than the hub's gap is told to try again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_report_drains_and_resumes_its_own_node_only() {
    use std::sync::Arc;

    use chorus_core::identity::Principal;
    use chorus_core::node::NodeState;
    use chorus_ctld::auth::{Caller, Credential};
    use chorus_ctld::nodes::{NodeApi, NodeHub};
    use chorus_proto::node::{self as pn, node_service_server::NodeService};
    use tonic::{Code, Request};

    let dir = tempfile::tempdir().unwrap();
    let (store, h, _thread) = open(dir.path(), ReplicaConfig::default());
    let reg = node1();
    h.propose(Command::RegisterNode { reg: Box::new(reg), now: 1 }, vec![]).await.unwrap();
    let api = |gap| NodeApi {
        replica: h.clone(),
        store: store.clone(),
        hub: Arc::new(NodeHub::with_health_gap(gap)),
        clock: || 5,
        refusals: Arc::default(),
    };
    let api_slow = api(std::time::Duration::from_secs(3600));
    // Each report comes from the node it names, as its certificate would say (auth.rs).
    let report = |name: &str, session, problem: &str| {
        let req = Request::new(pn::HealthRequest {
            name: name.into(),
            session,
            health: Some(pn::Health { problem: problem.into() }),
        });
        Caller::attach(req, Principal::Node(name.into()), Credential::Certificate)
    };
    let node = || h.read(|st| st.nodes["node1"].clone());

    let e = api_slow.health(report("node1", 2, "ib0 down")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "another agent process: {e:?}");
    let e = api_slow.health(report("node1", 1, "two\nlines")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(node().state, NodeState::Up);
    let as_node2 = Caller::attach(
        Request::new(report("node1", 1, "ib0 down").into_inner()),
        Principal::Node("node2".into()),
        Credential::Certificate,
    );
    let e = api_slow.health(as_node2).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "node2 speaking for node1: {e:?}");
    assert_eq!(node().state, NodeState::Up);
    let r = api_slow.health(report("node9", 1, "")).await.unwrap().into_inner();
    assert!(!r.known, "an unknown node is told so");

    let applied = h.status().applied;
    assert!(api_slow.health(report("node1", 1, "")).await.unwrap().into_inner().known);
    assert_eq!(h.status().applied, applied, "healthy and up: nothing proposed");

    api_slow.health(report("node1", 1, "ib0 down")).await.unwrap();
    assert_eq!((node().state, node().reason), (NodeState::Drain, Some("NHC: ib0 down".into())));
    let e = api_slow.health(report("node1", 1, "")).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "a flap within the gap waits");
    assert_eq!(node().state, NodeState::Drain);
    // Past the gap (a hub with none), the healthy node is resumed.
    api(std::time::Duration::ZERO).health(report("node1", 1, "")).await.unwrap();
    assert_eq!((node().state, node().reason), (NodeState::Up, None));
}

/// node1 registering with 2 CPUs and 1000 MB, session 1.
fn node1() -> NodeRegistration {
    NodeRegistration {
        name: "node1".into(),
        addr: String::new(),
        hostname: "node1".into(),
        resources: NodeResources { cpus: 2, mem_mb: 1000, gpus: vec![] },
        boot_time: 0,
        version: "t".into(),
        os: "linux".into(),
        running: vec![],
        session: 1,
        public_key: None,
    }
}
