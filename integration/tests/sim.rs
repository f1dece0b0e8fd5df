//! The deterministic simulator (`chorus_integration::sim`): a few hundred seeds keep every
//! invariant, a seed replays exactly, and the checker objects to broken histories and to
//! deliberately broken runs, so the suite cannot pass vacuously.
//!
//! A failing seed prints `simulation failed at seed S, step K: ...` and the `chorus-sim`
//! command that replays it; `chorus-sim --seeds N` runs many more.

use std::sync::{Arc, Mutex};

use chorus_core::fsm::{self, Applied, Command, NodeRegistration, Placement, Plan};
use chorus_core::job::{JobSpec, JobState, NodeAlloc};
use chorus_core::node::NodeResources;
use chorus_core::state::{ClusterConfig, ClusterState};
use chorus_ctld::storage::RaftStore;
use chorus_integration::sim::store::{Journal, SimStore};
use chorus_integration::sim::{self, Checker, Invariant, Report, Sabotage, SimConfig};
use raft::eraftpb::Entry;

const SEEDS: u64 = 300;

#[test]
fn three_hundred_seeds_keep_every_invariant() {
    let results = sim::run_seeds(0..SEEDS, &SimConfig::default(), 2);
    let failures: Vec<String> =
        results.iter().filter_map(|r| r.as_ref().err()).map(|f| f.to_string()).collect();
    assert!(
        failures.is_empty(),
        "{} of {SEEDS} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let reports: Vec<Report> = results.into_iter().map(Result::unwrap).collect();
    let sum = |f: fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
    assert!(reports.iter().any(|r| r.replicas == 3) && reports.iter().any(|r| r.replicas == 5));
    // Something actually happened: failovers, crashes, every kind of network fault.
    assert!(sum(|r| r.elections as u64) > sum(|r| r.replicas as u64), "too few elections");
    for (what, n) in [
        ("crashes", sum(|r| r.crashes)),
        ("partitions", sum(|r| r.partitions)),
        ("dropped messages", sum(|r| r.dropped)),
        ("duplicated messages", sum(|r| r.duplicated)),
        ("messages cut by a partition or a crash", sum(|r| r.cut)),
        ("snapshots sent to lagging replicas", sum(|r| r.snapshots)),
        ("client retries", sum(|r| r.client_retries)),
        ("agent restarts", sum(|r| r.agent_restarts)),
        ("jobs lost with a restarted agent", sum(|r| r.node_fail as u64)),
    ] {
        assert!(n > 0, "no {what} in {SEEDS} seeds");
    }
    for r in &reports {
        assert!(r.acknowledged == r.submitted && r.finished == r.submitted, "{r}");
        assert!(r.elections >= 1 && r.crashes > 0, "{r}");
    }
}

#[test]
fn a_seed_replays_exactly() {
    let cfg = SimConfig::default();
    let a = sim::run(42, &cfg).unwrap();
    assert_eq!(a, sim::run(42, &cfg).unwrap());
    assert_ne!(a.digest, sim::run(43, &cfg).unwrap().digest);
}

#[test]
fn options_change_the_run_and_appear_in_the_replay_command() {
    let cfg =
        SimConfig { replicas: Some(5), nodes: Some(3), jobs: Some(10), ..SimConfig::default() };
    let r = sim::run(7, &cfg).unwrap();
    assert_eq!((r.replicas, r.nodes, r.submitted), (5, 3, 10));
    assert_eq!(
        cfg.replay(7),
        "cargo run -p chorus-integration --bin chorus-sim -- --seed 7 --replicas 5 --nodes 3 --jobs 10"
    );
}

#[test]
fn a_state_changed_behind_raft_fails_with_the_seed_and_replay_command() {
    let cfg = SimConfig { sabotage: Some(Sabotage::DivergeState), ..SimConfig::default() };
    for seed in 1..4 {
        let f = sim::run(seed, &cfg).unwrap_err();
        assert_eq!(f.violation.invariant, Invariant::StateMachineSafety, "{f}");
        let text = f.to_string();
        assert!(
            text.starts_with(&format!("simulation failed at seed {seed}, step {}", f.step)),
            "{text}"
        );
        assert!(
            text.ends_with(&format!(
                "replay: cargo run -p chorus-integration --bin chorus-sim -- --seed {seed} --sabotage diverge-state"
            )),
            "{text}"
        );
        // The replay fails the same way, at the same step.
        assert_eq!(sim::run(seed, &cfg).unwrap_err(), f);
    }
}

#[test]
fn an_agent_running_other_nodes_jobs_is_caught() {
    let cfg = SimConfig { sabotage: Some(Sabotage::DoubleRun), ..SimConfig::default() };
    for seed in 1..4 {
        let f = sim::run(seed, &cfg).unwrap_err();
        assert_eq!(f.violation.invariant, Invariant::DoubleRun, "{f}");
    }
}

// ---- the checker on hand-made histories ---------------------------------------------

fn registered(cpus: u32) -> ClusterState {
    let mut st = ClusterState::new(ClusterConfig::default());
    let reg = NodeRegistration {
        name: "node1".into(),
        addr: String::new(),
        hostname: "node1".into(),
        resources: NodeResources { cpus, mem_mb: 4096, gpus: vec![] },
        boot_time: 0,
        version: "t".into(),
        os: "t".into(),
        running: vec![],
        session: 1,
        public_key: None,
    };
    fsm::apply(&mut st, Command::RegisterNode { reg: Box::new(reg), now: 1 }).unwrap();
    st
}

/// A state with job 1 running on node1 (1 CPU of 2).
fn running() -> ClusterState {
    let mut st = registered(2);
    let spec = Box::new(JobSpec::new("j", "#!/bin/sh\n", "/tmp"));
    let r = fsm::apply(&mut st, Command::SubmitOnce { request: 9, spec, now: 2 }).unwrap();
    assert_eq!(r, Applied::Submitted(vec![1]));
    let alloc = vec![NodeAlloc { node: "node1".into(), cpus: 1, mem_mb: 256, gpus: vec![] }];
    let plan = Plan { starts: vec![Placement::single(1, alloc)], reasons: vec![] };
    fsm::apply(&mut st, Command::ApplyPlan { plan, now: 3 }).unwrap();
    assert_eq!(st.jobs[&1].state, JobState::Running);
    st
}

fn hash(st: &ClusterState) -> blake3::Hash {
    blake3::hash(format!("{st:?}").as_bytes())
}

#[test]
fn checker_refuses_two_leaders_in_one_term() {
    let mut c = Checker::new();
    c.leader(3, 1).unwrap();
    c.leader(3, 1).unwrap();
    c.leader(4, 2).unwrap();
    assert_eq!(c.leader(4, 3).unwrap_err().invariant, Invariant::ElectionSafety);
}

#[test]
fn checker_refuses_two_states_at_one_applied_index() {
    let (a, b) = (registered(2), registered(4));
    let mut c = Checker::new();
    c.state(1, 5, hash(&a), &a).unwrap();
    c.state(2, 5, hash(&a), &a).unwrap();
    c.state(2, 6, hash(&b), &b).unwrap();
    assert_eq!(c.state(3, 5, hash(&b), &b).unwrap_err().invariant, Invariant::StateMachineSafety);
}

#[test]
fn checker_refuses_different_committed_entries() {
    let mut c = Checker::new();
    let (x, y) = (blake3::hash(b"x"), blake3::hash(b"y"));
    c.committed(1, 7, 2, x).unwrap();
    c.committed(2, 7, 2, x).unwrap();
    assert_eq!(c.committed(3, 7, 2, y).unwrap_err().invariant, Invariant::CommittedPrefix);
    assert_eq!(c.committed(3, 7, 3, x).unwrap_err().invariant, Invariant::CommittedPrefix);
}

#[test]
fn checker_refuses_an_oversubscribed_node() {
    let mut st = running();
    st.jobs.get_mut(&1).unwrap().alloc[0].cpus = 3;
    st.nodes.get_mut("node1").unwrap().alloc_cpus = 3;
    let v = Checker::new().state(1, 5, hash(&st), &st).unwrap_err();
    assert_eq!(v.invariant, Invariant::Oversubscribed, "{v}");
}

#[test]
fn checker_refuses_a_job_on_two_agents_or_holding_two_nodes() {
    let c = Checker::new();
    c.running([("node1", vec![1, 2]), ("node2", vec![3])].into_iter()).unwrap();
    let v = c.running([("node1", vec![1, 2]), ("node2", vec![2])].into_iter()).unwrap_err();
    assert_eq!(v.invariant, Invariant::DoubleRun);

    let mut st = running();
    let mut reg = st.nodes["node1"].clone();
    reg.name = "node2".into();
    (reg.alloc_cpus, reg.alloc_mem_mb) = (0, 0);
    st.nodes.insert("node2".into(), reg);
    st.jobs.get_mut(&1).unwrap().alloc.push(NodeAlloc {
        node: "node2".into(),
        cpus: 0,
        mem_mb: 0,
        gpus: vec![],
    });
    let v = Checker::new().state(1, 5, hash(&st), &st).unwrap_err();
    assert_eq!(v.invariant, Invariant::DoubleRun, "{v}");
}

#[test]
fn checker_refuses_a_job_leaving_its_terminal_state() {
    let run = running();
    let mut done = run.clone();
    let end = fsm::JobReport {
        replica: 0,
        digest: [0; 32],
        signature: vec![],
        job: 1,
        attempt: 0,
        node: "node1".into(),
        exit: Default::default(),
        cause: fsm::EndCause::Exited,
        usage: Default::default(),
        outputs: vec![],
    };
    fsm::apply(&mut done, Command::JobEnded { report: Box::new(end), now: 4 }).unwrap();
    let mut c = Checker::new();
    c.state(1, 3, hash(&run), &run).unwrap();
    c.state(1, 4, hash(&done), &done).unwrap();
    // Earlier indexes may still show it running (a lagging replica)...
    c.state(2, 3, hash(&run), &run).unwrap();
    // ...later ones may not.
    let v = c.state(2, 6, hash(&run), &run).unwrap_err();
    assert_eq!(v.invariant, Invariant::TerminalState, "{v}");
}

#[test]
fn checker_refuses_a_lost_job_or_a_request_with_two_jobs() {
    let st = running();
    let mut c = Checker::new();
    c.ack(9, 1).unwrap();
    assert_eq!(c.ack(9, 2).unwrap_err().invariant, Invariant::Idempotency);
    // Job 1 still runs: not finished.
    assert_eq!(c.finale(&st, 1).unwrap_err().invariant, Invariant::Liveness);
    let mut c = Checker::new();
    c.ack(10, 1).unwrap();
    let mut done = st.clone();
    done.jobs.get_mut(&1).unwrap().state = JobState::Completed;
    assert_eq!(c.finale(&done, 1).unwrap_err().invariant, Invariant::Idempotency);
    let mut c = Checker::new();
    c.ack(9, 1).unwrap();
    c.finale(&done, 1).unwrap();
    assert_eq!(c.finale(&done, 2).unwrap_err().invariant, Invariant::Idempotency);
}

fn entry(index: u64, term: u64, data: &str) -> Entry {
    Entry { index, term, data: data.as_bytes().to_vec().into(), ..Default::default() }
}

#[test]
fn journal_refuses_different_entries_at_one_index_and_term() {
    let journal = Arc::new(Mutex::new(Journal::default()));
    let (a, b) = (SimStore::new(1, Arc::clone(&journal)), SimStore::new(2, Arc::clone(&journal)));
    a.persist(&[entry(1, 1, "x"), entry(2, 1, "y")], None, true).unwrap();
    b.persist(&[entry(1, 1, "x")], None, true).unwrap();
    b.persist(&[entry(2, 1, "y")], None, true).unwrap();
    assert!(journal.lock().unwrap().take_violations().is_empty());
    b.persist(&[entry(2, 1, "z")], None, true).unwrap();
    let v = journal.lock().unwrap().take_violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].invariant, Invariant::LogMatching);
}

#[test]
fn journal_refuses_equal_entries_after_different_prefixes() {
    let journal = Arc::new(Mutex::new(Journal::default()));
    let (a, b) = (SimStore::new(1, Arc::clone(&journal)), SimStore::new(2, Arc::clone(&journal)));
    a.persist(&[entry(1, 1, "x"), entry(2, 2, "y")], None, true).unwrap();
    b.persist(&[entry(1, 2, "w"), entry(2, 2, "y")], None, true).unwrap();
    let v = journal.lock().unwrap().take_violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].details.contains("after different entries"), "{}", v[0]);
}
