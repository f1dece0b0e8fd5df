//! Nodes that cheat, end to end: real `ctld` and honest `noded`s under `chorus up`, and the
//! test `adversary` agent (`noded` with a lying conduct, src/bin/adversary.rs) joining under
//! operators of its own, with its own key, certificate and stake. Each adversary is caught;
//! the liars are slashed and drained; honest nodes never lose a credit.
//!
//! A replicated job meets the nodes in an order of its own (the leader's secret seed and the
//! job id), so a test that does not use every node runs jobs until the adversary has been in
//! a quorum; every one of those jobs must come out right.

use std::path::PathBuf;
use std::time::Duration;

use chorus_integration::{Agent, Cluster, ClusterOpts};

const MIN: Duration = Duration::from_secs(60);

fn text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// `honest` nodes (op1..), a minimum stake of 500, and a slash of 60 %: one slash leaves a
/// node with 400 of its 1000, below the minimum, so it is drained.
fn cluster(honest: u32) -> Cluster {
    Cluster::start(ClusterOpts {
        nodes: honest,
        min_stake: 500,
        node_stake: Some(1000),
        ctld_args: vec!["--slash=0.6".into()],
        ..ClusterOpts::default()
    })
}

/// Joins adversary `name` under operator `op-<name>` with 1000 credits bonded, and waits
/// until it takes work.
fn join_adversary(c: &Cluster, name: &str, flags: &[&str]) -> Agent {
    let op = format!("op-{name}");
    let agent = c.join_agent("adversary", name, &op, flags);
    c.wait_node(name, &["idle", "mixed", "allocated"], MIN);
    stake(c, name, &op, 1000).expect("the operator bonds its stake");
    agent
}

fn stake(c: &Cluster, node: &str, op: &str, amount: u64) -> Result<(), String> {
    let amount = amount.to_string();
    let d = c.run("chorus", &["operator", "deposit", op, &amount]);
    assert!(d.status.success(), "{}", text(&d));
    let b = c.run("chorus", &["node", "register", node, "--operator", op, "--stake", &amount]);
    if b.status.success() { Ok(()) } else { Err(text(&b)) }
}

/// `chorus node status`: node → (agreements, slashed, may take work).
fn status(c: &Cluster, node: &str) -> (u32, u64, String) {
    let out = text(&c.run("chorus", &["node", "status", node]));
    let line = out.lines().nth(1).unwrap_or_else(|| panic!("no status for {node}: {out}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[3].parse().unwrap(), f[5].parse().unwrap(), f[6..].join(" "))
}

/// Submits `--replicas=N --wrap SCRIPT` and waits for it to end; returns (id, state).
fn run_replicated(c: &Cluster, replicas: u32, script: &str) -> (String, String) {
    let n = format!("--replicas={replicas}");
    let id = c.submit(&[&n, "--wrap", script]).to_string();
    let state = c.wait_done(&id, MIN);
    (id, state)
}

/// Runs `--replicas=N` jobs, the `n`th printing `n`, until `liar` has been slashed (within
/// `max` jobs: a job uses `replicas` of the nodes, so each one misses the liar now and then,
/// but never many times running). Each job completes with its honest answer; `each` sees
/// every job that ran. Returns the number of jobs.
fn run_until_slashed(
    c: &Cluster,
    liar: &str,
    replicas: u32,
    max: u32,
    mut each: impl FnMut(&str),
) -> u32 {
    for n in 1..=max {
        let (id, state) = run_replicated(c, replicas, &format!("echo {n}"));
        assert_eq!(state, "COMPLETED", "job {id}");
        assert_eq!(result(c, &id), format!("{n}\n"), "the verified result of job {id}");
        each(&id);
        if status(c, liar).1 > 0 {
            return n;
        }
    }
    panic!("{liar} was not slashed in {max} jobs");
}

/// The agreed result of `id`, fetched into the submit directory.
fn result(c: &Cluster, id: &str) -> String {
    let o = c.run("chorus", &["output", id]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::read_to_string(c.work().join(format!("slurm-{id}.out"))).unwrap_or_default()
}

fn assert_caught(c: &Cluster, liar: &str) {
    c.wait_node(liar, &["drained"], MIN);
    let (agreements, slashed, work) = status(c, liar);
    assert_eq!((agreements, slashed), (0, 600), "{liar}: 60 % of 1000 slashed, record reset");
    assert!(work.starts_with("no"), "{liar} gets no work: {work}");
    let node = text(&c.run("scontrol", &["show", "node", liar]));
    assert!(node.contains("Reason=slashed: stake 400 below the minimum 500 [root@"), "{node}");
}

fn assert_honest_untouched(c: &Cluster, nodes: &[&str]) {
    for n in nodes {
        let (_, slashed, work) = status(c, n);
        assert_eq!((slashed, work.as_str()), (0, "yes"), "{n} is never slashed");
    }
}

#[test]
fn a_liar_is_outvoted_slashed_drained_and_must_stake_again_under_a_new_identity() {
    let c = cluster(2);
    let _liar = join_adversary(&c, "evil1", &["--lie", "1"]);
    let mut outvoted = 0;
    run_until_slashed(&c, "evil1", 2, 15, |id| {
        // Whether or not the liar was in the quorum, the honest pair is what agreed.
        assert_eq!(c.field(id, "AgreedNodes"), "node[1-2]", "job {id}");
        outvoted += u32::from(c.field(id, "Replicas") == "3");
    });
    assert_eq!(outvoted, 1, "one lie, one tie-breaker");
    assert_caught(&c, "evil1");
    assert_honest_untouched(&c, &["node1", "node2"]);

    // The operator comes back as a new node with a new key: it is a stranger without stake,
    // and its slashed stake is still bonded (and unbonding would take a week).
    let _again = c.join_agent("adversary", "evil1b", "op-evil1", &["--lie", "1"]);
    c.wait_node("evil1b", &["idle"], MIN);
    assert_eq!(status(&c, "evil1b").2, "no (stake below 500)");
    let no_money = c
        .run("chorus", &["node", "register", "evil1b", "--operator", "op-evil1", "--stake", "500"]);
    assert!(
        text(&no_money).contains("operator op-evil1 has 0 credits, 500 needed"),
        "{}",
        text(&no_money)
    );
    let (id, state) = run_replicated(&c, 2, "echo 43");
    assert_eq!((state.as_str(), c.field(&id, "AgreedNodes").as_str()), ("COMPLETED", "node[1-2]"));
    // Staking again costs new credits, which the next lie puts at risk once more.
    stake(&c, "evil1b", "op-evil1", 1000).unwrap();
    run_until_slashed(&c, "evil1b", 2, 15, |_| {});
    c.wait_node("evil1b", &["drained"], MIN);
}

#[test]
fn colluding_liars_are_caught_where_honest_replicas_outnumber_them() {
    let c = cluster(3);
    let same = ["--lie", "1", "--wrong", "41\n"];
    let _a = join_adversary(&c, "evil1", &same);
    let _b = join_adversary(&c, "evil2", &same);
    // Five replicas on five operators: the two liars agree with each other, and lose 2 to 3.
    let (id, state) = run_replicated(&c, 5, "echo 42");
    assert_eq!(state, "COMPLETED");
    assert_eq!(c.field(&id, "AgreedNodes"), "node[1-3]");
    assert_eq!(result(&c, &id), "42\n");
    assert_caught(&c, "evil1");
    assert_caught(&c, "evil2");
    assert_honest_untouched(&c, &["node1", "node2", "node3"]);
}

#[test]
fn a_patient_liar_earns_a_record_and_loses_it_with_its_first_lie() {
    let c = cluster(2);
    let _liar = join_adversary(&c, "evil1", &["--lie", "1", "--honest-first", "2"]);
    let mut record = vec![];
    run_until_slashed(&c, "evil1", 2, 20, |_| record.push(status(&c, "evil1").0));
    assert_eq!(record.iter().max(), Some(&2), "two checked agreements earned first: {record:?}");
    assert_caught(&c, "evil1");
    assert_honest_untouched(&c, &["node1", "node2"]);
}

#[test]
fn a_node_that_reports_without_running_or_for_replicas_it_was_not_given_is_caught() {
    let c = cluster(2);
    let _lazy = join_adversary(&c, "evil1", &["--skip"]);
    let _nosy = join_adversary(&c, "evil2", &["--foreign"]);
    // evil1 reports success with no output; evil2 runs its replica honestly and also signs
    // reports for the replicas on either side of it, which are not its own. Once evil1 is
    // drained, each job has all of node1, node2 and evil2.
    let mut ids = vec![];
    run_until_slashed(&c, "evil1", 3, 15, |id| ids.push(id.to_owned()));
    assert_caught(&c, "evil1");
    let (id, state) = run_replicated(&c, 3, "echo 42");
    assert_eq!((state.as_str(), result(&c, &id).as_str()), ("COMPLETED", "42\n"));
    ids.push(id);
    let log = std::fs::read_to_string(c.dir.path().join("state/log/ctld.log")).unwrap();
    assert!(
        log.contains("node evil2")
            && ids.iter().any(|id| log.contains(&format!("report for job {id}"))),
        "the controller refused and logged evil2's reports for replicas not its own"
    );
    let (_, slashed, work) = status(&c, "evil2");
    assert_eq!((slashed, work.as_str()), (0, "yes"), "its own replica was honest");
    assert_honest_untouched(&c, &["node1", "node2"]);
}

#[test]
fn a_node_that_claims_a_gpu_it_does_not_have_is_outvoted() {
    // A stand-in GPU is real where its node's directory holds it: a job reads it there, and
    // a node without one answers as a GPU-less machine does.
    let gpus =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("gpus-{}", std::process::id()));
    let c = Cluster::start(ClusterOpts {
        nodes: 2,
        min_stake: 500,
        node_stake: Some(1000),
        node_gpus: Some(1),
        ctld_args: vec!["--slash=0.6".into()],
        ..ClusterOpts::default()
    });
    for n in ["node1", "node2"] {
        std::fs::create_dir_all(gpus.join(n)).unwrap();
        std::fs::write(gpus.join(n).join("gpu0"), "GPU-0 ready\n").unwrap();
    }
    let _liar = join_adversary(&c, "evil1", &["--node-gpus", "1"]);
    let script = format!(
        "cat {}/$SLURMD_NODENAME/gpu$CUDA_VISIBLE_DEVICES 2>/dev/null || echo no GPU here",
        gpus.display()
    );
    for _ in 0..15 {
        let id = c.submit(&["--replicas=2", "--gres=gpu:1", "--wrap", &script]).to_string();
        assert_eq!(c.wait_done(&id, MIN), "COMPLETED");
        assert_eq!(result(&c, &id), "GPU-0 ready\n", "job {id}");
        if status(&c, "evil1").1 > 0 {
            break;
        }
    }
    assert_caught(&c, "evil1");
    assert_honest_untouched(&c, &["node1", "node2"]);
    let _ = std::fs::remove_dir_all(&gpus);
}
