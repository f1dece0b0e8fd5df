//! sched/fifo: placements and pending reasons for the situations Slurm users meet.

use chorus_core::fsm::{self, Applied, Command, NodeRegistration, Plan};
use chorus_core::job::{JobSpec, PendingReason};
use chorus_core::node::NodeResources;
use chorus_core::plugin::Scheduler;
use chorus_core::slurm::array::parse_array_spec;
use chorus_core::slurm::dependency::parse_dependency;
use chorus_core::state::{ClusterConfig, ClusterState};

use super::Fifo;

fn spec(name: &str) -> JobSpec {
    JobSpec {
        user: "alice".into(),
        uid: 1000,
        gid: 1000,
        ..JobSpec::new(name, "#!/bin/sh\ntrue\n", "/tmp")
    }
}

fn cluster(nodes: u32, cpus: u32) -> ClusterState {
    let mut st = ClusterState::new(ClusterConfig::default());
    for i in 1..=nodes {
        let reg = NodeRegistration {
            name: format!("node{i}"),
            addr: String::new(),
            hostname: "h".into(),
            resources: NodeResources { cpus, mem_mb: 8000, gpus: vec![] },
            boot_time: 0,
            version: "t".into(),
            os: "linux".into(),
            running: vec![],
            session: 0,
            public_key: None,
        };
        fsm::apply(&mut st, Command::RegisterNode { reg: Box::new(reg), now: 1 }).unwrap();
    }
    st
}

fn submit(st: &mut ClusterState, s: JobSpec) -> u32 {
    match fsm::apply(st, Command::Submit { spec: Box::new(s), now: 10 }).unwrap() {
        Applied::Submitted(ids) => ids[0],
        other => panic!("{other:?}"),
    }
}

/// One scheduling pass, applied; returns the plan.
fn pass(st: &mut ClusterState) -> Plan {
    let plan = Fifo::default().plan(st, 20);
    fsm::apply(st, Command::ApplyPlan { plan: plan.clone(), now: 20 }).unwrap();
    plan
}

#[test]
fn jobs_fill_free_cpus_then_wait_for_resources_and_priority() {
    let mut st = cluster(2, 2);
    let ids: Vec<u32> = (0..6).map(|i| submit(&mut st, spec(&format!("j{i}")))).collect();
    let plan = pass(&mut st);
    assert_eq!(plan.starts.len(), 4, "2 nodes x 2 CPUs");
    assert_eq!(st.jobs[&ids[4]].reason, PendingReason::Resources);
    assert_eq!(st.jobs[&ids[5]].reason, PendingReason::Priority);
    assert_eq!(st.nodes["node1"].alloc_cpus, 2);
}

#[test]
fn held_and_dependent_jobs_do_not_block_others() {
    let mut st = cluster(1, 1);
    let mut held = spec("held");
    held.hold = true;
    let h = submit(&mut st, held);
    let mut dep = spec("dep");
    dep.dependency = Some(parse_dependency(&format!("afterok:{h}")).unwrap());
    let d = submit(&mut st, dep);
    let free = submit(&mut st, spec("free"));
    pass(&mut st);
    assert_eq!(st.jobs[&h].reason, PendingReason::JobHeldUser);
    assert_eq!(st.jobs[&d].reason, PendingReason::Dependency);
    assert!(st.active.contains(&free));
}

#[test]
fn array_throttle_limits_running_tasks() {
    let mut st = cluster(2, 4);
    let mut a = spec("arr");
    a.array = Some(parse_array_spec("0-5%2").unwrap());
    let first = submit(&mut st, a);
    pass(&mut st);
    assert_eq!(st.running_tasks(first), 2);
    let limited = st
        .pending
        .iter()
        .filter(|id| st.jobs[id].reason == PendingReason::JobArrayTaskLimit)
        .count();
    assert_eq!(limited, 4);
}

#[test]
fn multi_node_jobs_spread_tasks_over_nodes() {
    let mut st = cluster(2, 2);
    let mut s = spec("wide");
    s.nodes = Some(2);
    s.ntasks = Some(4);
    let id = submit(&mut st, s);
    pass(&mut st);
    let alloc = &st.jobs[&id].alloc;
    assert_eq!(
        alloc.iter().map(|a| (a.node.as_str(), a.cpus)).collect::<Vec<_>>(),
        vec![("node1", 2), ("node2", 2)]
    );
}

#[test]
fn a_plan_is_rechecked_when_applied() {
    let mut st = cluster(1, 1);
    let a = submit(&mut st, spec("a"));
    let b = submit(&mut st, spec("b"));
    let mut plan = Fifo::default().plan(&st, 20);
    // A buggy scheduler places both on the one CPU: apply must take only the first.
    let mut second = plan.starts[0].clone();
    second.job = b;
    plan.starts.push(second);
    fsm::apply(&mut st, Command::ApplyPlan { plan, now: 20 }).unwrap();
    assert!(st.active.contains(&a));
    assert!(st.pending.contains(&b));
    assert_eq!(st.nodes["node1"].alloc_cpus, 1);
}

fn gpu_node(st: &mut ClusterState, name: &str, models: &[&str]) {
    let gpus = models
        .iter()
        .enumerate()
        .map(|(i, m)| chorus_core::node::GpuInfo {
            index: i as u32,
            uuid: format!("GPU-{name}-{i}"),
            model: (*m).into(),
            memory_mb: 1024,
            driver: "535.104.05".into(),
        })
        .collect();
    let reg = NodeRegistration {
        name: name.into(),
        addr: String::new(),
        hostname: "h".into(),
        resources: NodeResources { cpus: 8, mem_mb: 8000, gpus },
        boot_time: 0,
        version: "t".into(),
        os: "linux".into(),
        running: vec![],
        session: 0,
        public_key: None,
    };
    fsm::apply(st, Command::RegisterNode { reg: Box::new(reg), now: 1 }).unwrap();
}

#[test]
fn gres_gpu_type_picks_gpus_of_that_model_only() {
    let mut st = ClusterState::new(ClusterConfig::default());
    gpu_node(&mut st, "gpu1", &["t4", "a100", "a100"]);
    let mut s = spec("typed");
    s.gpus_per_node = 2;
    s.gpu_type = Some("A100".into());
    let id = submit(&mut st, s);
    let mut any = spec("any");
    any.gpus_per_node = 1;
    let other = submit(&mut st, any);
    pass(&mut st);
    assert_eq!(st.jobs[&id].alloc[0].gpus, vec![1, 2]);
    assert_eq!(st.jobs[&other].alloc[0].gpus, vec![0]);
    assert_eq!(st.nodes["gpu1"].free_gpus(), Vec::<u32>::new());
}

#[test]
fn gpu_jobs_wait_for_resources_when_gpus_are_taken() {
    let mut st = ClusterState::new(ClusterConfig::default());
    gpu_node(&mut st, "gpu1", &["a100"]);
    let mut s = spec("one");
    s.gpus_per_node = 1;
    let a = submit(&mut st, s.clone());
    let b = submit(&mut st, s);
    pass(&mut st);
    assert!(st.active.contains(&a));
    assert_eq!(st.jobs[&b].reason, PendingReason::Resources);
}

#[test]
fn submit_fits_refuses_what_no_node_could_ever_hold() {
    use chorus_core::plugin::SubmitValidator;
    let st = cluster(2, 2);
    let mut wide = spec("wide");
    wide.ntasks = Some(3);
    assert_eq!(
        crate::submit::Fits.check(&st, &wide).unwrap_err().0,
        "Requested node configuration is not available"
    );
    let mut gpu = spec("gpu");
    gpu.gpus_per_node = 1;
    assert!(crate::submit::Fits.check(&st, &gpu).is_err(), "no node has a GPU");
    let mut three = spec("three");
    three.nodes = Some(3);
    assert_eq!(
        crate::submit::Fits.check(&st, &three).unwrap_err().0,
        "Node count specification invalid"
    );
    let mut whole = spec("whole");
    whole.mem = Some(chorus_core::job::MemRequest::PerNode(0));
    assert!(crate::submit::Fits.check(&st, &whole).is_ok(), "--mem=0 takes a whole node");
    assert!(crate::submit::Fits.check(&st, &spec("small")).is_ok());
}

#[test]
fn only_nodes_with_the_minimum_stake_are_given_work() {
    let mut st = cluster(2, 2);
    st.config.min_stake = 100;
    for cmd in [
        Command::Deposit { operator: "acme".into(), amount: 100, now: 2 },
        Command::Bond { operator: "acme".into(), node: "node2".into(), amount: 100, now: 3 },
    ] {
        fsm::apply(&mut st, cmd).unwrap();
    }
    let ids: Vec<u32> = (0..3).map(|i| submit(&mut st, spec(&format!("j{i}")))).collect();
    let plan = pass(&mut st);
    let nodes: Vec<&str> = plan.starts.iter().map(|p| p.replicas[0][0].node.as_str()).collect();
    assert_eq!(nodes, ["node2", "node2"], "node1 has no stake bonded");
    assert_eq!(st.jobs[&ids[2]].reason, PendingReason::Resources);
}

#[test]
fn replicated_jobs_meet_the_nodes_in_an_order_of_their_own() {
    let mut st = cluster(4, 64);
    for (i, n) in st.nodes.values_mut().enumerate() {
        n.public_key = Some([i as u8 + 1; 32]);
    }
    let mut twice = spec("twice");
    twice.replication = Some(chorus_core::trust::ReplicationSpec::Fixed(2));
    let ids: Vec<u32> = (0..40).map(|_| submit(&mut st, twice.clone())).collect();
    let once = submit(&mut st, spec("once"));
    let first_nodes = |seed: u64| -> Vec<String> {
        let plan = Fifo { seed }.plan(&st, 20);
        ids.iter()
            .map(|id| {
                let p = plan.starts.iter().find(|p| p.job == *id).expect("every job fits");
                assert_eq!(p.replicas.len(), 2);
                assert_ne!(p.replicas[0][0].node, p.replicas[1][0].node);
                p.replicas[0][0].node.clone()
            })
            .collect()
    };
    let firsts = first_nodes(1);
    for n in ["node1", "node2", "node3", "node4"] {
        let times = firsts.iter().filter(|f| *f == n).count();
        assert!((3..=20).contains(&times), "{n} came first {times} times in 40: {firsts:?}");
    }
    assert_eq!(firsts, first_nodes(1), "one seed, one order");
    assert_ne!(firsts, first_nodes(2), "another seed, another order");
    // A job run once is placed as Slurm places it: the first node by name.
    let plan = Fifo { seed: 1 }.plan(&st, 20);
    let p = plan.starts.iter().find(|p| p.job == once).unwrap();
    assert_eq!(p.replicas[0][0].node, "node1");
}
