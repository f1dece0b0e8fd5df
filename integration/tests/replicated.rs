//! Replicated execution end to end: real `ctld` and `noded` processes under `chorus up`,
//! each node under an operator of its own, jobs run as replicas, compared and paid.

use std::time::Duration;

use chorus_integration::{Cluster, ClusterOpts, script};

const MIN: Duration = Duration::from_secs(60);

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn three_nodes() -> Cluster {
    Cluster::start(ClusterOpts { nodes: 3, ..ClusterOpts::default() })
}

/// `chorus node status` rows: node → (operator, agreements, slashed).
fn node_status(c: &Cluster) -> Vec<(String, String, u32, u64)> {
    stdout(&c.run("chorus", &["node", "status"]))
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f[0].into(), f[1].into(), f.get(3)?.parse().ok()?, f.get(5)?.parse().ok()?))
        })
        .collect()
}

#[test]
fn sbatch_replicas_runs_twice_on_two_operators_and_returns_the_agreed_result() {
    let c = three_nodes();
    let w = c.work();
    script(
        &w,
        "rep.sh",
        "#!/bin/sh\n#SBATCH --replicas=2\n#SBATCH --output-files=result.txt\n\
         echo 42 > result.txt\necho done\n",
    );
    let id = c.submit(&["rep.sh"]).to_string();
    assert_eq!(c.wait_done(&id, MIN), "COMPLETED");
    let show = |k: &str| c.field(&id, k);
    assert_eq!(
        (show("Replicas"), show("Replication"), show("Verify"), show("Verdict")),
        ("2".into(), "fixed:2".into(), "exact".into(), "Agreed".into())
    );
    let agreed = show("AgreedNodes");
    assert!(agreed.starts_with("node["), "two nodes agreed: {agreed}");
    // squeue shows the job once, with its replica count.
    let q =
        stdout(&c.run("squeue", &["-h", "-t", "all", "-j", &id, "-O", "JobID,Replicas,Verdict"]));
    assert_eq!(q.lines().count(), 1, "{q}");
    assert_eq!(q.split_whitespace().collect::<Vec<_>>(), [id.as_str(), "2", "Agreed"]);
    let acct = stdout(&c.run(
        "sacct",
        &["-j", &id, "-X", "-P", "-n", "--format=JobID,State,Replicas,Verify,Verdict,AgreedNodes"],
    ));
    assert_eq!(acct.trim(), format!("{id}|COMPLETED|2|exact|Agreed|{agreed}"));
    // Replicas run sandboxed: nothing lands in the submit directory until it is fetched.
    let (out, result) = (w.join(format!("slurm-{id}.out")), w.join("result.txt"));
    assert!(!out.exists() && !result.exists(), "no replica wrote into the submit directory");
    let fetched = c.run("chorus", &["output", &id]);
    assert!(fetched.status.success(), "{}", String::from_utf8_lossy(&fetched.stderr));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "done\n");
    assert_eq!(std::fs::read_to_string(&result).unwrap(), "42\n", "the declared output");
    // Each replica ran under another operator, and both agreements count.
    let status = node_status(&c);
    let agreeing: Vec<_> = status.iter().filter(|s| s.2 == 1).collect();
    assert_eq!(agreeing.len(), 2, "{status:?}");
    assert_ne!(agreeing[0].1, agreeing[1].1, "distinct operators");
    assert!(status.iter().all(|s| s.3 == 0), "no one slashed: {status:?}");
}

#[test]
fn results_that_differ_in_the_last_digits_agree_only_within_a_tolerance() {
    let c = three_nodes();
    // Each node prints a slightly different number, as GPUs of different makes do.
    let body = "case $SLURMD_NODENAME in node1) echo 1.000001;; node2) echo 1.000002;; \
                *) echo 1.000003;; esac";
    let tolerant =
        c.submit(&["--replicas=2", "--verify=tolerance:1e-3", "--wrap", body]).to_string();
    let exact = c.submit(&["--replicas=2", "--wrap", body]).to_string();
    assert_eq!(c.wait_done(&tolerant, MIN), "COMPLETED");
    assert_eq!(c.field(&tolerant, "Verify"), "tolerance:1e-3");
    assert_eq!(c.field(&tolerant, "Verdict"), "Agreed");
    // Exactly, no two nodes agree: a third replica on the third operator cannot make a
    // majority, and there is no fourth operator.
    assert_eq!(c.wait_done(&exact, MIN), "FAILED");
    assert_eq!(
        (c.field(&exact, "Verdict"), c.field(&exact, "Reason"), c.field(&exact, "Replicas")),
        ("Failed".into(), "VerificationFailed".into(), "3".into())
    );
    assert!(node_status(&c).iter().all(|s| s.3 == 0), "no majority: no one is slashed");
}

#[test]
fn bad_trust_options_are_refused_with_a_reason() {
    let c = three_nodes();
    for (args, why) in [
        (vec!["--replicas=0", "--wrap", "true"], "Invalid --replicas specification"),
        (vec!["--verify=fuzzy", "--wrap", "true"], "Invalid --verify specification"),
        (vec!["--output-files=../x", "--wrap", "true"], "Invalid --output-files specification"),
    ] {
        let o = c.run("sbatch", &args);
        assert!(!o.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(why), "{args:?}: {err}");
    }
    // Nothing was submitted.
    assert_eq!(stdout(&c.run("squeue", &["-h", "-t", "all"])), "");
}

#[test]
fn verified_work_is_charged_to_the_user_paid_to_the_agreeing_nodes_and_shown() {
    // 1000 credits per CPU-second.
    let c = Cluster::start(ClusterOpts {
        nodes: 3,
        ctld_args: vec!["--price-cpu-hour=3600000".into()],
        ..ClusterOpts::default()
    });
    let (user, _, _) = chorus_cli::current_user();
    let poor = c.run("sbatch", &["--replicas=2", "--wrap", "true"]);
    let why = String::from_utf8_lossy(&poor.stderr);
    assert!(
        !poor.status.success() && why.contains(&format!("user {user} has no credits")),
        "a priced partition takes jobs only from users with credits: {why}"
    );
    let credit = c.run("chorus", &["user", "credit", &user, "1000000"]);
    assert!(credit.status.success(), "{}", String::from_utf8_lossy(&credit.stderr));

    let id = c.submit(&["--replicas=2", "--wrap", "sleep 2; echo ok"]).to_string();
    assert_eq!(c.wait_done(&id, MIN), "COMPLETED");
    let amount = |k: &str| -> u64 { c.field(&id, k).parse().unwrap_or_else(|_| panic!("{k}")) };
    let (paid, charged) = (amount("Paid"), amount("Charged"));
    // Two replicas of at least 2 s each at 1000 a second, undisputed: the user pays exactly
    // what the two agreeing nodes earn.
    assert!(paid >= 4000 && paid == charged, "Paid={paid} Charged={charged}");
    let acct =
        stdout(&c.run("sacct", &["-j", &id, "-X", "-P", "-n", "--format=JobID,Paid,Charged"]));
    assert_eq!(acct.trim(), format!("{id}|{paid}|{charged}"));
    let balance = stdout(&c.run("chorus", &["user", "balance", &user]));
    assert_eq!(
        balance.trim(),
        format!("User={user} Balance={} Spent={charged} Owed=0", 1_000_000 - charged)
    );
    // `chorus node status`: EARNED is what each agreeing node was paid, and adds up.
    let status = stdout(&c.run("chorus", &["node", "status"]));
    let earned: Vec<u64> = status
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(4).and_then(|e| e.parse().ok()).expect(l))
        .collect();
    assert_eq!(earned.iter().filter(|e| **e > 0).count(), 2, "{status}");
    assert_eq!(earned.iter().sum::<u64>(), paid, "{status}");
}
