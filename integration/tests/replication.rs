//! Replicated execution through the production state machine, scheduler and validators
//! (`chorus_integration::trust`): placement on distinct operators, verdicts, disputes,
//! settlement, slashing, losses, cancellation, and what the state machine refuses.

use chorus_core::fsm::{Command, EndCause, Placement, Plan, Rejected};
use chorus_core::job::{ExitStatus, JobSpec, JobState, NodeAlloc, PendingReason, Verdict};
use chorus_core::node::NodeState;
use chorus_core::state::ClusterConfig;
use chorus_core::trust::ReplicationSpec;
use chorus_integration::trust::{Started, TrustCluster};

const OK: ExitStatus = ExitStatus { code: 0, signal: 0 };

/// `n` nodes, each of its own operator (`op1`..), each with `stake` bonded; 10 % slashes,
/// a minimum stake of 500, a price of 3600 credits per CPU-hour (one per CPU-second).
fn cluster(n: u32, stake: u64) -> TrustCluster {
    let mut config = ClusterConfig { min_stake: 500, slash_ppm: 100_000, ..Default::default() };
    config.partitions[0].price_cpu_hour = 3600;
    let mut c = TrustCluster::new(config, 7);
    for i in 1..=n {
        c.add_node(&format!("node{i}"), Some(&format!("op{i}")), stake, 4);
    }
    c.apply(Command::CreditUser { user: "alice".into(), amount: 10_000, now: c.now }).unwrap();
    c
}

fn spec(replicas: u32) -> JobSpec {
    JobSpec {
        user: "alice".into(),
        uid: 1000,
        gid: 1000,
        replication: Some(ReplicationSpec::Fixed(replicas)),
        ..JobSpec::new("pi", "#!/bin/sh\necho 3.14\n", "/w")
    }
}

fn operators(c: &TrustCluster, started: &[Started]) -> Vec<String> {
    started.iter().map(|s| c.state.accounts.node_operator[&s.node].clone()).collect()
}

#[test]
fn replicas_go_to_nodes_of_distinct_operators_and_agreement_pays_them() {
    let mut c = cluster(3, 1000);
    let job = c.submit(spec(2)).unwrap();
    let started = c.schedule();
    assert_eq!(started.len(), 2, "{started:?}");
    let ops = operators(&c, &started);
    assert_ne!(ops[0], ops[1]);
    assert_eq!(c.state.jobs[&job].state, JobState::Running);
    c.advance(10);
    for s in &started {
        c.report(&s.node, job, s.replica, OK, b"3.14\n").unwrap();
    }
    assert!(c.state.jobs[&job].awaits_verdict());
    assert_eq!(c.verdicts(), vec![job]);
    let j = &c.state.jobs[&job];
    assert_eq!(
        (j.state, j.verdict, j.agreed.clone()),
        (JobState::Completed, Verdict::Agreed, vec![0, 1])
    );
    // 10 s of 1 CPU at one credit per CPU-second, for each agreeing replica.
    assert_eq!((j.paid, j.charged), (20, 20));
    assert_eq!(c.state.accounts.users["alice"].balance, 10_000 - 20);
    for s in &started {
        let bond = c.state.accounts.bond(&s.node).unwrap();
        assert_eq!(bond.agreements, 1, "a checked agreement counts");
        let op = &c.state.accounts.operators[&c.state.accounts.node_operator[&s.node]];
        assert_eq!(op.earned, 10);
    }
    // Nothing is held any more.
    assert!(c.state.nodes.values().all(|n| n.alloc_cpus == 0));
}

#[test]
fn a_liar_is_outvoted_by_a_third_replica_slashed_and_drained() {
    let mut c = cluster(3, 520);
    let job = c.submit(spec(2)).unwrap();
    let first = c.schedule();
    c.advance(10);
    c.report(&first[0].node, job, 0, OK, b"3.14\n").unwrap();
    c.report(&first[1].node, job, 1, OK, b"2.71\n").unwrap();
    assert_eq!(c.verdicts(), vec![job]);
    let j = &c.state.jobs[&job];
    assert_eq!((j.state, j.verdict, j.wanted), (JobState::Running, Verdict::Disputed, 3));
    let third = c.schedule();
    assert_eq!(third.len(), 1);
    let mut ops = operators(&c, &first);
    ops.extend(operators(&c, &third));
    ops.sort();
    ops.dedup();
    assert_eq!(ops.len(), 3, "the tie-breaker runs on a third operator's node");
    c.advance(10);
    c.report(&third[0].node, job, 2, OK, b"3.14\n").unwrap();
    assert_eq!(c.verdicts(), vec![job]);
    let j = &c.state.jobs[&job];
    assert_eq!(
        (j.state, j.verdict, j.agreed.clone(), j.result_replica),
        (JobState::Completed, Verdict::Agreed, vec![0, 2], Some(0))
    );
    let liar = &first[1].node;
    let bond = c.state.accounts.bond(liar).unwrap();
    assert_eq!((bond.stake, bond.agreements), (468, 0), "10 % of 520 slashed, trust reset");
    let node = &c.state.nodes[liar];
    assert_eq!(node.state, NodeState::Drain, "468 is below the minimum stake of 500");
    assert_eq!(node.reason.as_deref(), Some("slashed: stake 468 below the minimum 500"));
    for honest in [&first[0].node, &third[0].node] {
        assert_eq!(c.state.nodes[honest].state, NodeState::Up);
        assert_eq!(c.state.accounts.bond(honest).unwrap().stake, 520, "never slashed");
    }
    // Each agreeing replica is paid its 10 s; the user pays for two replicas, what the job
    // costs undisputed, and the liar's slashed stake is burned.
    assert_eq!((j.paid, j.charged), (20, 20));
    // A drained node gets no more work.
    let next = c.submit(spec(2)).unwrap();
    assert!(c.schedule().iter().all(|s| s.node != *liar));
    assert_eq!(c.state.jobs[&next].state, JobState::Running);
}

#[test]
fn no_majority_at_the_limit_fails_verification_and_moves_no_money() {
    let mut c = cluster(3, 1000);
    c.state.config.partitions[0].max_replicas = 3;
    let job = c.submit(spec(2)).unwrap();
    let first = c.schedule();
    c.report(&first[0].node, job, 0, OK, b"a\n").unwrap();
    c.report(&first[1].node, job, 1, OK, b"b\n").unwrap();
    c.verdicts();
    let third = c.schedule();
    c.report(&third[0].node, job, 2, OK, b"c\n").unwrap();
    c.verdicts();
    let j = &c.state.jobs[&job];
    assert_eq!(
        (j.state, j.verdict, j.reason, j.paid, j.charged),
        (JobState::Failed, Verdict::Failed, PendingReason::VerificationFailed, 0, 0)
    );
    assert_eq!(c.state.accounts.users["alice"].balance, 10_000);
    assert!(c.state.accounts.operators.values().all(|o| o.slashed == 0 && o.earned == 0));
}

#[test]
fn with_no_other_operator_left_a_dispute_is_decided_by_what_there_is() {
    // Two operators only: the 1-1 dispute cannot grow, and a tie never wins.
    let mut c = cluster(2, 1000);
    let job = c.submit(spec(2)).unwrap();
    let first = c.schedule();
    c.report(&first[0].node, job, 0, OK, b"a\n").unwrap();
    c.report(&first[1].node, job, 1, OK, b"b\n").unwrap();
    c.verdicts();
    assert_eq!(c.state.jobs[&job].verdict, Verdict::Failed);
}

#[test]
fn a_job_run_once_is_decided_by_its_one_report_and_paid() {
    let mut c = cluster(2, 1000);
    let job = c.submit(spec(1)).unwrap();
    let s = c.schedule();
    c.advance(5);
    c.report(&s[0].node, job, 0, ExitStatus { code: 3, signal: 0 }, b"x\n").unwrap();
    let j = &c.state.jobs[&job];
    assert_eq!((j.state, j.verdict, j.exit.code), (JobState::Failed, Verdict::Agreed, 3));
    assert_eq!((j.paid, j.charged), (5, 5));
    assert_eq!(c.state.accounts.bond(&s[0].node).unwrap().agreements, 0, "nothing was checked");
    assert!(c.verdicts().is_empty());
}

#[test]
fn only_the_assigned_node_may_report_a_replica_and_only_with_its_key() {
    let mut c = cluster(3, 1000);
    let job = c.submit(spec(2)).unwrap();
    let s = c.schedule();
    let idle = (1..=3).map(|i| format!("node{i}")).find(|n| s.iter().all(|x| x.node != *n));
    let idle = idle.unwrap();
    // A node reporting for a replica it was not given.
    let e = c.report(&idle, job, 0, OK, b"3.14\n").unwrap_err();
    assert!(matches!(e, Rejected::StaleReport { .. }), "{e:?}");
    // The right node name, someone else's key.
    let forged = c.key_of(&idle);
    let e =
        c.report_signed(&s[0].node, &forged, job, 0, OK, EndCause::Exited, b"3.14\n").unwrap_err();
    assert!(matches!(e, Rejected::BadAttestation { .. }), "{e:?}");
    // A replica index that does not exist, and a report for another attempt.
    assert!(c.report(&s[0].node, job, 7, OK, b"").is_err());
    c.report(&s[0].node, job, 0, OK, b"3.14\n").unwrap();
    assert!(
        matches!(c.report(&s[0].node, job, 0, OK, b"3.14\n"), Err(Rejected::StaleReport { .. })),
        "a replica reports once"
    );
}

#[test]
fn a_verdict_must_cover_each_reported_replica_once() {
    let mut c = cluster(3, 1000);
    let job = c.submit(spec(2)).unwrap();
    let s = c.schedule();
    let verdict = |classes: Vec<Vec<u32>>| Command::Verdict { job, attempt: 0, classes, now: 2000 };
    assert!(matches!(c.apply(verdict(vec![vec![0, 1]])), Err(Rejected::BadVerdict { .. })));
    for r in &s {
        c.report(&r.node, job, r.replica, OK, b"1\n").unwrap();
    }
    for bad in
        [vec![vec![0]], vec![vec![0, 1], vec![1]], vec![vec![0, 1, 2]], vec![vec![0, 1], vec![]]]
    {
        assert!(
            matches!(c.apply(verdict(bad.clone())), Err(Rejected::BadVerdict { .. })),
            "{bad:?}"
        );
    }
    c.apply(verdict(vec![vec![1, 0]])).unwrap();
    assert_eq!(c.state.jobs[&job].state, JobState::Completed);
}

#[test]
fn a_plan_that_puts_two_replicas_on_one_operator_is_refused() {
    let mut c = cluster(2, 1000);
    // node3 is op1's too.
    c.add_node("node3", Some("op1"), 1000, 4);
    let job = c.submit(spec(2)).unwrap();
    let on = |node: &str| vec![NodeAlloc { node: node.into(), cpus: 1, mem_mb: 256, gpus: vec![] }];
    let plan =
        |replicas| Plan { starts: vec![Placement { job, quorum: 2, replicas }], reasons: vec![] };
    c.apply(Command::ApplyPlan { plan: plan(vec![on("node1"), on("node3")]), now: c.now }).unwrap();
    assert_eq!(c.state.jobs[&job].state, JobState::Pending, "one operator, twice");
    let wrong_quorum = Plan {
        starts: vec![Placement { job, quorum: 1, replicas: vec![on("node1")] }],
        reasons: vec![],
    };
    c.apply(Command::ApplyPlan { plan: wrong_quorum, now: c.now }).unwrap();
    assert_eq!(c.state.jobs[&job].state, JobState::Pending, "fixed:2 runs twice");
    c.apply(Command::ApplyPlan { plan: plan(vec![on("node1"), on("node2")]), now: c.now }).unwrap();
    assert_eq!(c.state.jobs[&job].state, JobState::Running);
}

#[test]
fn a_lost_replica_is_replaced_on_another_operator_and_the_job_carries_on() {
    let mut c = cluster(3, 1000);
    let job = c.submit(spec(2)).unwrap();
    let s = c.schedule();
    c.report(&s[0].node, job, 0, OK, b"1\n").unwrap();
    let down = s[1].node.clone();
    c.apply(Command::NodeDown { node: down.clone(), reason: "Not responding".into(), now: c.now })
        .unwrap();
    let j = &c.state.jobs[&job];
    assert_eq!((j.state, j.live_replicas(), j.missing_replicas()), (JobState::Running, 1, 1));
    let replacement = c.schedule();
    assert_eq!(replacement.len(), 1);
    assert!(replacement[0].node != down && replacement[0].node != s[0].node);
    c.report(&replacement[0].node, job, 2, OK, b"1\n").unwrap();
    c.verdicts();
    let j = &c.state.jobs[&job];
    assert_eq!((j.state, j.agreed.clone()), (JobState::Completed, vec![0, 2]));
}

#[test]
fn a_job_run_once_still_fails_with_its_node_as_in_slurm() {
    let mut c = cluster(2, 1000);
    let job = c.submit(spec(1)).unwrap();
    let s = c.schedule();
    c.apply(Command::NodeDown { node: s[0].node.clone(), reason: "x".into(), now: c.now }).unwrap();
    assert_eq!(c.state.jobs[&job].state, JobState::NodeFail);
}

#[test]
fn cancelling_a_replicated_job_waits_for_every_replica_and_pays_nothing() {
    let mut c = cluster(3, 1000);
    let job = c.submit(spec(2)).unwrap();
    let s = c.schedule();
    c.apply(Command::Cancel { jobs: vec![job], uid: 1000, now: c.now }).unwrap();
    assert_eq!(c.state.jobs[&job].state, JobState::Completing);
    let stopped = ExitStatus { code: 0, signal: 15 };
    let key = c.key_of(&s[0].node);
    c.report_signed(&s[0].node, &key, job, 0, stopped, EndCause::Stopped, b"").unwrap();
    assert_eq!(c.state.jobs[&job].state, JobState::Completing, "replica 1 still runs");
    let key = c.key_of(&s[1].node);
    c.report_signed(&s[1].node, &key, job, 1, stopped, EndCause::Stopped, b"").unwrap();
    let j = &c.state.jobs[&job];
    assert_eq!((j.state, j.exit, j.paid, j.charged), (JobState::Cancelled, stopped, 0, 0));
}

#[test]
fn a_trusted_node_may_run_alone_but_a_new_one_never_does() {
    let mut config = ClusterConfig::default();
    config.partitions[0].replication =
        ReplicationSpec::Adaptive { replicas: 2, trusted_after: 3, spot_check_ppm: 100_000 };
    let mut c = TrustCluster::new(config, 11);
    for i in 1..=3 {
        c.add_node(&format!("node{i}"), Some(&format!("op{i}")), 100, 1);
    }
    let spec = || JobSpec { replication: None, ..spec(1) };
    // Until node1 has 3 agreements, every job runs twice.
    let mut alone = 0;
    for _ in 0..60 {
        let job = c.submit(spec()).unwrap();
        let s = c.schedule();
        assert!(!s.is_empty());
        if s.len() == 1 {
            alone += 1;
            assert!(
                c.state.accounts.agreements(&s[0].node) >= 3,
                "only a node with a record runs alone"
            );
        }
        for r in &s {
            c.report(&r.node, job, r.replica, OK, b"1\n").unwrap();
        }
        c.verdicts();
        assert_eq!(c.state.jobs[&job].state, JobState::Completed);
    }
    assert!(alone > 0, "trust is earned");
    assert!(alone < 60, "and spot checks never stop");
}

#[test]
fn a_priced_partition_takes_jobs_only_from_users_with_credits() {
    let mut c = cluster(2, 1000);
    let bob = JobSpec { user: "bob".into(), ..spec(1) };
    assert!(matches!(c.submit(bob.clone()), Err(Rejected::NoCredits(u)) if u == "bob"));
    c.apply(Command::CreditUser { user: "bob".into(), amount: 1, now: c.now }).unwrap();
    let job = c.submit(bob).unwrap();
    let s = c.schedule();
    c.advance(30);
    c.report(&s[0].node, job, 0, OK, b"").unwrap();
    let bob = &c.state.accounts.users["bob"];
    assert_eq!((bob.balance, bob.owed, bob.spent), (0, 29, 30), "what it could not pay is owed");
    let again = JobSpec { user: "bob".into(), ..spec(1) };
    assert!(matches!(c.submit(again), Err(Rejected::NoCredits(_))), "until it is paid");
}

#[test]
fn a_node_may_return_only_the_jobs_own_output_files() {
    use chorus_core::attest::{self, result_digest};
    use chorus_core::fsm::JobReport;
    use chorus_core::job::{OutputFile, Usage};
    let mut c = cluster(2, 1000);
    let spec = JobSpec { output_files: vec!["out/*.csv".into()], ..spec(1) };
    let job = c.submit(spec).unwrap();
    let s = c.schedule();
    let key = c.key_of(&s[0].node);
    let report = |path: &str| {
        let digest = result_digest(OK, &[(path, b"x".as_slice())]);
        let a = attest::Attestation {
            job,
            replica: 0,
            node: s[0].node.clone(),
            digest,
            exit: OK,
            usage: Usage::default(),
        };
        let signature = a.sign(&key).to_vec();
        let outputs = vec![OutputFile { path: path.into(), len: 1, append: false }];
        let (node, exit, cause) = (s[0].node.clone(), OK, EndCause::Exited);
        let r = JobReport {
            job,
            attempt: 0,
            node,
            exit,
            cause,
            usage: a.usage,
            outputs,
            replica: 0,
            digest,
            signature,
        };
        Command::JobEnded { report: Box::new(r), now: 2000 }
    };
    // The submitter's CLI writes these paths: a node must not choose them.
    for evil in ["/home/alice/.bashrc", "/w/out/../../etc/x.csv", "/w/other.txt", "/wout/a.csv"] {
        let e = c.apply(report(evil)).unwrap_err();
        assert!(matches!(e, Rejected::BadAttestation { .. }), "{evil}: {e:?}");
    }
    c.apply(report("/w/out/result.csv")).expect("a declared output");
    assert_eq!(c.state.jobs[&job].state, JobState::Completed);
}

#[test]
fn gpu_replicas_verified_exactly_run_on_one_model_and_driver() {
    use chorus_core::node::{GpuInfo, NodeResources};
    let mut c = TrustCluster::new(ClusterConfig::default(), 3);
    let gpu = |model: &str, driver: &str| GpuInfo {
        index: 0,
        uuid: format!("GPU-{model}-{driver}"),
        model: model.into(),
        memory_mb: 81_920,
        driver: driver.into(),
    };
    // node1 and node4 are one class; node2's driver and node3's model differ from both.
    for (name, g) in [
        ("node1", gpu("A100", "535.104.05")),
        ("node2", gpu("A100", "550.54.14")),
        ("node3", gpu("H100", "535.104.05")),
        ("node4", gpu("a100", "535.86.10")),
    ] {
        let resources = NodeResources { cpus: 4, mem_mb: 64_000, gpus: vec![g] };
        c.add_node_with(name, Some(&format!("op-{name}")), 100, resources);
    }
    let gpu_job = |verify| JobSpec { gpus_per_node: 1, verify, ..spec(2) };
    // Whichever node the job's order puts first, its replicas meet on the one pair.
    for _ in 0..8 {
        let exact = c.submit(gpu_job(None)).unwrap();
        let started = c.schedule();
        let mut nodes: Vec<&str> = started.iter().map(|s| s.node.as_str()).collect();
        nodes.sort();
        assert_eq!(nodes, ["node1", "node4"], "same model and driver major, whatever the case");
        for s in &started {
            c.report(&s.node, exact, s.replica, OK, b"bits\n").unwrap();
        }
        c.verdicts();
    }
    // Without node4 no class has two nodes: an exact job waits, a tolerance (which does not
    // need bitwise-equal hardware) runs on mixed ones.
    let drain = |node: &str| Command::SetNodeState {
        node: node.into(),
        state: NodeState::Drain,
        reason: Some("maintenance".into()),
        user: "root".into(),
        now: 0,
    };
    c.apply(drain("node4")).unwrap();
    let tolerant = c.submit(gpu_job(Some("tolerance:1e-6".parse().unwrap()))).unwrap();
    let waiting = c.submit(gpu_job(None)).unwrap();
    let started = c.schedule();
    assert!(started.iter().all(|s| s.job == tolerant), "{started:?}");
    assert_eq!(started.len(), 2, "job {tolerant}");
    assert_eq!(c.state.jobs[&waiting].reason, PendingReason::Resources);
    for s in &started {
        c.report(&s.node, tolerant, s.replica, OK, b"1.0\n").unwrap();
    }
    c.verdicts();
    // And the state machine refuses a plan that mixes classes for an exact job.
    let on =
        |node: &str| vec![NodeAlloc { node: node.into(), cpus: 1, mem_mb: 256, gpus: vec![0] }];
    let plan = Plan {
        starts: vec![Placement {
            job: waiting,
            quorum: 2,
            replicas: vec![on("node1"), on("node2")],
        }],
        reasons: vec![],
    };
    c.apply(Command::ApplyPlan { plan, now: c.now }).unwrap();
    assert_eq!(c.state.jobs[&waiting].state, JobState::Pending);
}
