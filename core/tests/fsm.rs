//! `fsm::apply`: build a state, apply commands, compare what comes out.

use chorus_core::fsm::{self, Applied, Command, EndCause, JobReport, NodeRegistration, Rejected};
use chorus_core::job::{ExitStatus, JobSpec, JobState, PendingReason, Usage};
use chorus_core::node::{Health, NodeResources, NodeState};
use chorus_core::plugin::Scheduler as _;
use chorus_core::slurm::array::parse_array_spec;
use chorus_core::slurm::dependency::parse_dependency;
use chorus_core::state::{ClusterConfig, ClusterState};

fn spec() -> JobSpec {
    JobSpec {
        user: "alice".into(),
        uid: 1000,
        gid: 1000,
        submit_host: "login".into(),
        ..JobSpec::new("job", "#!/bin/sh\ntrue\n", "/tmp")
    }
}

fn reg(name: &str, running: Vec<(u32, u32)>) -> Command {
    reg_session(name, running, 0)
}

/// A registration from the agent process `session`.
fn reg_session(name: &str, running: Vec<(u32, u32)>, session: u64) -> Command {
    Command::RegisterNode {
        reg: Box::new(NodeRegistration {
            name: name.into(),
            addr: String::new(),
            hostname: name.into(),
            resources: NodeResources { cpus: 2, mem_mb: 4000, gpus: vec![] },
            boot_time: 0,
            version: "t".into(),
            os: "linux".into(),
            running,
            session,
            public_key: None,
        }),
        now: 1,
    }
}

fn cluster() -> ClusterState {
    let mut st = ClusterState::new(ClusterConfig::default());
    fsm::apply(&mut st, reg("node1", vec![])).unwrap();
    st
}

fn submit(st: &mut ClusterState, s: JobSpec) -> Vec<u32> {
    match fsm::apply(st, Command::Submit { spec: Box::new(s), now: 10 }).unwrap() {
        Applied::Submitted(ids) => ids,
        other => panic!("{other:?}"),
    }
}

/// Runs the pure scheduler once, as the leader would.
fn schedule(st: &mut ClusterState, now: u64) {
    let plan = SimpleFifo.plan(st, now);
    fsm::apply(st, Command::ApplyPlan { plan, now }).unwrap();
}

/// A minimal scheduler for these tests (the real ones live in chorus-plugins): each pending,
/// unblocked job on node1 if it fits.
struct SimpleFifo;

impl chorus_core::plugin::Scheduler for SimpleFifo {
    fn name(&self) -> &'static str {
        "test/fifo"
    }
    fn plan(&self, st: &ClusterState, now: u64) -> fsm::Plan {
        let mut plan = fsm::Plan::default();
        let mut free = st.nodes["node1"].free_cpus();
        for id in &st.pending {
            let job = &st.jobs[id];
            if let Some(r) = fsm::blocking_reason(st, job, now) {
                plan.reasons.push((*id, r));
                continue;
            }
            if free >= 1 {
                free -= 1;
                plan.starts.push(fsm::Placement::single(
                    *id,
                    vec![chorus_core::job::NodeAlloc {
                        node: "node1".into(),
                        cpus: 1,
                        mem_mb: 256,
                        gpus: vec![],
                    }],
                ));
            }
        }
        plan
    }
}

fn end(id: u32, node: &str, exit: ExitStatus, cause: EndCause) -> Command {
    Command::JobEnded {
        report: Box::new(JobReport {
            replica: 0,
            digest: [0; 32],
            signature: vec![],
            job: id,
            attempt: 0,
            node: node.into(),
            exit,
            cause,
            usage: Usage::default(),
            outputs: vec![],
        }),
        now: 50,
    }
}

#[test]
fn submit_gives_increasing_ids_and_basic_priorities() {
    let mut st = cluster();
    let a = submit(&mut st, spec())[0];
    let b = submit(&mut st, spec())[0];
    assert_eq!((a, b), (1, 2));
    assert!(st.jobs[&a].priority > st.jobs[&b].priority, "earlier jobs first");
    assert_eq!(st.jobs[&a].state, JobState::Pending);
}

#[test]
fn array_submission_creates_one_job_per_task() {
    let mut st = cluster();
    let mut s = spec();
    s.array = Some(parse_array_spec("1-7:3").unwrap());
    let ids = submit(&mut st, s);
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(st.jobs[&2].array, Some((1, 4)));
    assert_eq!(st.jobs[&2].display_id(), "1_4");
    assert_eq!(st.next_job_id, 4);
}

#[test]
fn dependency_on_an_unknown_job_is_refused() {
    let mut st = cluster();
    let mut s = spec();
    s.dependency = Some(parse_dependency("afterok:77").unwrap());
    let r = fsm::apply(&mut st, Command::Submit { spec: Box::new(s), now: 1 });
    assert_eq!(r, Err(Rejected::Dependency));
    assert!(st.jobs.is_empty(), "a refused command changes nothing");
}

#[test]
fn completed_and_failed_come_from_the_exit_status() {
    let mut st = cluster();
    let ok = submit(&mut st, spec())[0];
    let bad = submit(&mut st, spec())[0];
    schedule(&mut st, 20);
    fsm::apply(&mut st, end(ok, "node1", ExitStatus::default(), EndCause::Exited)).unwrap();
    fsm::apply(&mut st, end(bad, "node1", ExitStatus { code: 3, signal: 0 }, EndCause::Exited))
        .unwrap();
    assert_eq!(st.jobs[&ok].state, JobState::Completed);
    assert_eq!(st.jobs[&bad].state, JobState::Failed);
    assert_eq!(st.jobs[&bad].reason, PendingReason::NonZeroExitCode);
    assert_eq!(st.nodes["node1"].alloc_cpus, 0, "resources are given back");
}

#[test]
fn a_report_from_another_node_or_a_stale_attempt_is_refused() {
    let mut st = cluster();
    fsm::apply(&mut st, reg("node2", vec![])).unwrap();
    let id = submit(&mut st, spec())[0];
    schedule(&mut st, 20);
    let r = fsm::apply(&mut st, end(id, "node2", ExitStatus::default(), EndCause::Exited));
    assert!(matches!(r, Err(Rejected::StaleReport { .. })));
    let mut stale = end(id, "node1", ExitStatus::default(), EndCause::Exited);
    if let Command::JobEnded { report, .. } = &mut stale {
        report.attempt = 5;
    }
    assert!(fsm::apply(&mut st, stale).is_err());
    assert_eq!(st.jobs[&id].state, JobState::Running);
}

#[test]
fn cancel_of_a_running_job_shows_completing_until_the_node_reports() {
    let mut st = cluster();
    let id = submit(&mut st, spec())[0];
    schedule(&mut st, 20);
    fsm::apply(&mut st, Command::Cancel { jobs: vec![id], uid: 1000, now: 30 }).unwrap();
    assert_eq!(st.jobs[&id].state, JobState::Completing);
    fsm::apply(&mut st, end(id, "node1", ExitStatus { code: 0, signal: 15 }, EndCause::Stopped))
        .unwrap();
    assert_eq!(st.jobs[&id].state, JobState::Cancelled);
    assert_eq!(st.jobs[&id].exit.to_string(), "0:15");
}

#[test]
fn cancel_of_another_users_job_is_refused() {
    let mut st = cluster();
    let id = submit(&mut st, spec())[0];
    let r = fsm::apply(&mut st, Command::Cancel { jobs: vec![id], uid: 2000, now: 30 });
    assert_eq!(r, Err(Rejected::NotPermitted));
    assert_eq!(st.jobs[&id].state, JobState::Pending);
}

#[test]
fn time_limit_report_ends_in_timeout() {
    let mut st = cluster();
    let id = submit(&mut st, spec())[0];
    schedule(&mut st, 20);
    fsm::apply(&mut st, end(id, "node1", ExitStatus { code: 0, signal: 15 }, EndCause::TimeLimit))
        .unwrap();
    assert_eq!(st.jobs[&id].state, JobState::Timeout);
    assert_eq!(st.jobs[&id].reason, PendingReason::TimeLimit);
}

#[test]
fn hold_and_release_change_reason_and_priority() {
    let mut st = cluster();
    let id = submit(&mut st, spec())[0];
    fsm::apply(&mut st, Command::Hold { jobs: vec![id], admin: false, now: 11 }).unwrap();
    assert_eq!((st.jobs[&id].reason, st.jobs[&id].priority), (PendingReason::JobHeldUser, 0));
    fsm::apply(&mut st, Command::Release { jobs: vec![id], now: 12 }).unwrap();
    assert!(st.jobs[&id].priority > 0);
    schedule(&mut st, 20);
    assert_eq!(st.jobs[&id].state, JobState::Running);
}

#[test]
fn afterok_on_a_failed_job_is_never_satisfied() {
    let mut st = cluster();
    let a = submit(&mut st, spec())[0];
    let mut s = spec();
    s.dependency = Some(parse_dependency(&format!("afterok:{a}")).unwrap());
    let b = submit(&mut st, s)[0];
    schedule(&mut st, 20);
    assert_eq!(st.jobs[&b].reason, PendingReason::Dependency);
    fsm::apply(&mut st, end(a, "node1", ExitStatus { code: 1, signal: 0 }, EndCause::Exited))
        .unwrap();
    schedule(&mut st, 30);
    assert_eq!(st.jobs[&b].reason, PendingReason::DependencyNeverSatisfied);
    assert_eq!(st.jobs[&b].state, JobState::Pending);
}

#[test]
fn a_node_that_comes_back_without_its_jobs_fails_them() {
    let mut st = cluster();
    let kept = submit(&mut st, spec())[0];
    let lost = submit(&mut st, spec())[0];
    schedule(&mut st, 20);
    // A restarted agent (new session) lost what it does not list.
    match fsm::apply(&mut st, reg_session("node1", vec![(kept, 0)], 2)).unwrap() {
        Applied::NodeRegistered { lost_jobs } => assert_eq!(lost_jobs, vec![lost]),
        other => panic!("{other:?}"),
    }
    assert_eq!(st.jobs[&lost].state, JobState::NodeFail);
    assert_eq!(st.jobs[&kept].state, JobState::Running);
    assert_eq!(st.nodes["node1"].alloc_cpus, 1, "allocation re-derived from surviving jobs");
}

#[test]
fn requeue_of_a_running_job_returns_it_to_pending_with_a_restart() {
    let mut st = cluster();
    let id = submit(&mut st, spec())[0];
    schedule(&mut st, 20);
    fsm::apply(&mut st, Command::Requeue { jobs: vec![id], now: 25 }).unwrap();
    fsm::apply(&mut st, end(id, "node1", ExitStatus { code: 0, signal: 15 }, EndCause::Stopped))
        .unwrap();
    assert_eq!(st.jobs[&id].state, JobState::Pending);
    assert_eq!(st.jobs[&id].restarts, 1);
    assert_eq!(st.nodes["node1"].alloc_cpus, 0);
}

#[test]
fn apply_is_deterministic() {
    let run = || {
        let mut st = cluster();
        for _ in 0..5 {
            submit(&mut st, spec());
        }
        schedule(&mut st, 20);
        fsm::apply(&mut st, end(1, "node1", ExitStatus::default(), EndCause::Exited)).unwrap();
        st
    };
    assert_eq!(run(), run());
}

#[test]
fn a_plan_that_breaks_an_array_throttle_is_cut_back_when_applied() {
    let mut st = cluster();
    let mut s = spec();
    s.array = Some(parse_array_spec("0-3%1").unwrap());
    submit(&mut st, s);
    // SimpleFifo knows nothing of throttles and proposes two starts on the two free CPUs.
    schedule(&mut st, 20);
    assert_eq!(st.running_tasks(1), 1);
    assert_eq!(st.nodes["node1"].alloc_cpus, 1);
}

#[test]
fn begin_time_holds_a_job_until_its_moment() {
    let mut st = cluster();
    let mut s = spec();
    s.begin = Some(100);
    let id = submit(&mut st, s)[0];
    schedule(&mut st, 50);
    assert_eq!(st.jobs[&id].reason, PendingReason::BeginTime);
    schedule(&mut st, 100);
    assert_eq!(st.jobs[&id].state, JobState::Running);
}

#[test]
fn a_cancelled_pending_job_keeps_its_reason_and_who_cancelled_it() {
    let mut st = cluster();
    let mut s = spec();
    s.hold = true;
    let id = submit(&mut st, s)[0];
    fsm::apply(&mut st, Command::Cancel { jobs: vec![id], uid: 0, now: 30 }).unwrap();
    let job = &st.jobs[&id];
    assert_eq!(
        (job.state, job.reason, job.cancelled_by),
        (JobState::Cancelled, PendingReason::JobHeldUser, Some(0))
    );
}

#[test]
fn a_retried_submission_is_answered_not_applied_twice() {
    let mut st = cluster();
    let once = |st: &mut ClusterState, request, now| {
        fsm::apply(st, Command::SubmitOnce { request, spec: Box::new(spec()), now }).unwrap()
    };
    assert_eq!(once(&mut st, 7, 10), Applied::Submitted(vec![1]));
    assert_eq!(once(&mut st, 7, 11), Applied::Submitted(vec![1]), "the retry names the same job");
    assert_eq!(st.jobs.len(), 1, "and creates nothing");
    assert_eq!(once(&mut st, 8, 12), Applied::Submitted(vec![2]), "another request is a new job");
    // Long after, the id is forgotten: the memory of requests does not grow without bound.
    let later = 12 + fsm::REQUEST_MEMORY_SECS + 1;
    assert_eq!(once(&mut st, 9, later), Applied::Submitted(vec![3]));
    assert!(!st.requests.contains_key(&7) && !st.requests.contains_key(&8));
    assert_eq!(st.requests.len(), st.request_order.len());
}

#[test]
fn an_agent_reconnecting_keeps_jobs_it_was_never_sent() {
    // After a failover the new leader may have started a job whose launch the old leader
    // never streamed: the same agent process (same session) registering again must not
    // fail it; the assignment stream delivers it now.
    let mut st = cluster();
    let delivered = submit(&mut st, spec())[0];
    let undelivered = submit(&mut st, spec())[0];
    schedule(&mut st, 20);
    match fsm::apply(&mut st, reg("node1", vec![(delivered, 0)])).unwrap() {
        Applied::NodeRegistered { lost_jobs } => assert!(lost_jobs.is_empty(), "{lost_jobs:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(st.jobs[&undelivered].state, JobState::Running);
    assert_eq!(st.nodes["node1"].alloc_cpus, 2, "both jobs still hold their CPUs");
}

fn health(session: u64, problem: Option<&str>, now: u64) -> Command {
    Command::NodeHealth {
        node: "node1".into(),
        session,
        health: match problem {
            Some(p) => Health::Unhealthy(p.into()),
            None => Health::Healthy,
        },
        now,
    }
}

fn drain_by_operator(st: &mut ClusterState, reason: &str, now: u64) {
    let cmd = Command::SetNodeState {
        node: "node1".into(),
        state: NodeState::Drain,
        reason: Some(reason.into()),
        user: "admin".into(),
        now,
    };
    fsm::apply(st, cmd).unwrap();
}

#[test]
fn a_failing_health_check_drains_the_node_as_root_and_no_job_starts_there() {
    let mut st = cluster();
    fsm::apply(&mut st, health(0, Some("low disk: /var has 5 MB free"), 20)).unwrap();
    let n = &st.nodes["node1"];
    assert_eq!(n.state, NodeState::Drain);
    assert_eq!(n.reason.as_deref(), Some("NHC: low disk: /var has 5 MB free"));
    assert_eq!(n.reason_set_by, Some(("root".into(), 20)));
    assert!(n.drained_by_health());
    let id = submit(&mut st, spec())[0];
    schedule(&mut st, 30);
    assert_eq!(st.jobs[&id].state, JobState::Pending, "a drained node takes no new job");
    // The same problem again changes nothing, not even the time the reason was set.
    fsm::apply(&mut st, health(0, Some("low disk: /var has 5 MB free"), 40)).unwrap();
    assert_eq!(st.nodes["node1"].reason_set_by, Some(("root".into(), 20)));
    // Another problem re-words the reason.
    fsm::apply(&mut st, health(0, Some("GPU count 3, registered 4"), 50)).unwrap();
    assert_eq!(st.nodes["node1"].reason.as_deref(), Some("NHC: GPU count 3, registered 4"));
}

#[test]
fn healthy_again_resumes_only_a_drain_the_health_check_set() {
    let mut st = cluster();
    fsm::apply(&mut st, health(0, Some("ib0 down"), 20)).unwrap();
    fsm::apply(&mut st, health(0, None, 30)).unwrap();
    let n = &st.nodes["node1"];
    assert_eq!((n.state, &n.reason, &n.reason_set_by), (NodeState::Up, &None, &None));
    let id = submit(&mut st, spec())[0];
    schedule(&mut st, 35);
    assert_eq!(st.jobs[&id].state, JobState::Running, "the resumed node takes work again");

    // An operator's drain is never undone by a health check, nor re-worded by one.
    drain_by_operator(&mut st, "maintenance", 40);
    fsm::apply(&mut st, health(0, None, 50)).unwrap();
    fsm::apply(&mut st, health(0, Some("ib0 down"), 60)).unwrap();
    fsm::apply(&mut st, health(0, None, 70)).unwrap();
    let n = &st.nodes["node1"];
    assert_eq!(n.state, NodeState::Drain);
    assert_eq!(n.reason.as_deref(), Some("maintenance"));
    assert_eq!(n.reason_set_by, Some(("admin".into(), 40)));

    // An operator who re-words a health drain takes it over: it stays.
    let mut st = cluster();
    fsm::apply(&mut st, health(0, Some("ib0 down"), 20)).unwrap();
    drain_by_operator(&mut st, "replacing the HCA", 25);
    fsm::apply(&mut st, health(0, None, 30)).unwrap();
    assert_eq!(st.nodes["node1"].state, NodeState::Drain);
}

#[test]
fn a_health_report_from_another_agent_process_or_for_a_down_node_changes_nothing() {
    let mut st = cluster();
    assert_eq!(
        fsm::apply(&mut st, health(7, Some("ib0 down"), 20)),
        Err(Rejected::StaleSession("node1".into()))
    );
    assert_eq!(st.nodes["node1"].state, NodeState::Up);
    let down = Command::NodeDown { node: "node1".into(), reason: "Not responding".into(), now: 30 };
    fsm::apply(&mut st, down).unwrap();
    fsm::apply(&mut st, health(0, Some("ib0 down"), 40)).unwrap();
    assert_eq!(st.nodes["node1"].state, NodeState::Down);
    assert_eq!(st.nodes["node1"].reason.as_deref(), Some("Not responding"));
    let unknown =
        Command::NodeHealth { node: "node9".into(), session: 0, health: Health::Healthy, now: 50 };
    assert_eq!(fsm::apply(&mut st, unknown), Err(Rejected::UnknownNode("node9".into())));
}

#[test]
fn a_node_that_registers_unhealthy_is_drained_by_its_registration() {
    let checked = |session, health| {
        let Command::RegisterNode { reg, now } = reg_session("node1", vec![], session) else {
            unreachable!()
        };
        Command::RegisterNodeChecked { reg, health, now }
    };
    let mut st = ClusterState::new(ClusterConfig::default());
    fsm::apply(&mut st, checked(1, Health::Unhealthy("no /scratch".into()))).unwrap();
    assert_eq!(st.nodes["node1"].state, NodeState::Drain, "never UP in between");
    assert_eq!(st.nodes["node1"].reason.as_deref(), Some("NHC: no /scratch"));
    // A registration without a result (an agent that checks nothing) keeps the drain ...
    fsm::apply(&mut st, reg_session("node1", vec![], 2)).unwrap();
    assert!(st.nodes["node1"].drained_by_health());
    // ... and a restarted agent that finds the node healthy resumes it.
    fsm::apply(&mut st, checked(3, Health::Healthy)).unwrap();
    assert_eq!(st.nodes["node1"].state, NodeState::Up);
    assert_eq!(st.nodes["node1"].session, 3);
}

#[test]
fn a_node_without_the_minimum_stake_gets_no_work() {
    use chorus_core::accounts::AccountError;
    let mut st = ClusterState::new(ClusterConfig { min_stake: 500, ..ClusterConfig::default() });
    fsm::apply(&mut st, reg("node1", vec![])).unwrap();
    let first = submit(&mut st, spec())[0];
    schedule(&mut st, 20);
    assert_eq!(st.jobs[&first].state, JobState::Pending, "no stake, no work: the plan is cut");
    let op = |cmd: fn(String, String, u64) -> Command, amount| {
        cmd("acme".into(), "node1".into(), amount)
    };
    let bond = |operator, node, amount| Command::Bond { operator, node, amount, now: 22 };
    let unbond = |operator, node, amount| Command::Unbond { operator, node, amount, now: 26 };
    fsm::apply(&mut st, Command::Deposit { operator: "acme".into(), amount: 1000, now: 21 })
        .unwrap();
    assert_eq!(
        fsm::apply(&mut st, op(bond, 2000)),
        Err(Rejected::Account(AccountError::Balance {
            operator: "acme".into(),
            have: 1000,
            need: 2000
        }))
    );
    fsm::apply(&mut st, op(bond, 500)).unwrap();
    schedule(&mut st, 24);
    assert_eq!(st.jobs[&first].state, JobState::Running);
    // Stake on its way out no longer counts: no new work, the running job goes on.
    fsm::apply(&mut st, op(unbond, 1)).unwrap();
    let second = submit(&mut st, spec())[0];
    schedule(&mut st, 27);
    assert_eq!(st.jobs[&second].state, JobState::Pending);
    assert_eq!(st.jobs[&first].state, JobState::Running);
    let acme = &st.accounts.operators["acme"];
    assert_eq!((acme.balance, acme.bonds["node1"].stake), (500, 499));
    assert_eq!(acme.bonds["node1"].unbonding, vec![(1, 26 + st.config.unbond_delay_secs)]);
}

#[test]
fn a_node_keeps_the_key_it_first_registered_with() {
    let keyed = |key: Option<[u8; 32]>, session| {
        let Command::RegisterNode { mut reg, now } = reg_session("node1", vec![], session) else {
            unreachable!()
        };
        reg.public_key = key;
        Command::RegisterNode { reg, now }
    };
    let (a, b) = (Some([1u8; 32]), Some([2u8; 32]));
    let mut st = ClusterState::new(ClusterConfig::default());
    fsm::apply(&mut st, keyed(a, 1)).unwrap();
    assert_eq!(st.nodes["node1"].public_key, a);
    for other in [b, None] {
        assert_eq!(
            fsm::apply(&mut st, keyed(other, 2)),
            Err(Rejected::KeyMismatch("node1".into())),
            "no one else may speak as node1"
        );
    }
    assert_eq!(st.nodes["node1"].session, 1, "the refused registrations changed nothing");
    fsm::apply(&mut st, keyed(a, 3)).unwrap();
    assert_eq!(st.nodes["node1"].session, 3, "the node itself, restarted");
}

#[test]
fn a_node_joins_with_a_live_join_token_once_and_for_good() {
    use chorus_core::identity::{Grant, IdentityError, Token, token_hash, token_id};
    let mut st = ClusterState::new(ClusterConfig::default());
    let token = |op: &str, expires| Token {
        grant: Grant::Join { operator: op.into() },
        expires,
        issued_by: "root".into(),
        issued_at: 1,
    };
    let (t1, t2) = (token_hash("op1-secret"), token_hash("op2-secret"));
    fsm::apply(&mut st, Command::IssueToken { hash: t1, token: token("op1", 100), now: 1 })
        .unwrap();
    fsm::apply(&mut st, Command::IssueToken { hash: t2, token: token("op2", 0), now: 1 }).unwrap();
    let join = |node: &str, token, key, now| Command::JoinNode {
        node: node.into(),
        token,
        public_key: [key; 32],
        now,
    };
    assert_eq!(
        fsm::apply(&mut st, join("node1", t1, 1, 100)),
        Err(Rejected::Identity(IdentityError::UnknownToken)),
        "expired when applied"
    );
    fsm::apply(&mut st, join("node1", t2, 1, 5)).unwrap();
    assert_eq!(st.identities.operator_of("node1"), Some("op2"));
    fsm::apply(&mut st, Command::RevokeToken { id: token_id(&t2), now: 6 }).unwrap();
    assert_eq!(
        fsm::apply(&mut st, join("node2", t2, 2, 7)),
        Err(Rejected::Identity(IdentityError::UnknownToken)),
        "revoked"
    );
    // A name that registered with a key before it joined keeps that key.
    let Command::RegisterNode { mut reg, now } = reg("node3", vec![]) else { unreachable!() };
    reg.public_key = Some([3; 32]);
    fsm::apply(&mut st, Command::RegisterNode { reg, now }).unwrap();
    fsm::apply(&mut st, Command::IssueToken { hash: t1, token: token("op1", 0), now: 200 })
        .unwrap();
    assert_eq!(
        fsm::apply(&mut st, join("node3", t1, 4, 201)),
        Err(Rejected::Identity(IdentityError::KeyMismatch("node3".into())))
    );
    fsm::apply(&mut st, join("node3", t1, 3, 202)).unwrap();
    assert_eq!(st.identities.nodes["node3"].public_key, [3; 32]);
}
