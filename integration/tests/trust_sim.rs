//! `trust-sim`'s measurements on small workloads (`chorus_integration::trust::sim`): what
//! replication, verdicts and settlement must give whatever the seed, through the production
//! state machine, scheduler and policies. Fixed seeds: every run replays.

use chorus_core::trust::ReplicationSpec;
use chorus_integration::trust::sim::{self, Metrics, SimConfig};

const FIXED2: ReplicationSpec = ReplicationSpec::Fixed(2);
const ADAPTIVE: ReplicationSpec = ReplicationSpec::ADAPTIVE;

/// 2000 jobs on 30 nodes.
fn small(policy: ReplicationSpec, liars: f64) -> SimConfig {
    SimConfig { jobs: 2000, nodes: 30, liars, policy, seed: 3, ..SimConfig::default() }
}

fn run(cfg: SimConfig) -> Metrics {
    let m = sim::run(&cfg);
    assert_eq!(m.agreed + m.failed + m.undecided, m.jobs, "{m}");
    assert_eq!(m.jobs, cfg.jobs, "{m}");
    m
}

#[test]
fn with_two_replicas_liars_that_do_not_collude_never_get_a_wrong_result_accepted() {
    let m = run(small(FIXED2, 0.1));
    assert_eq!(m.liars.nodes, 3);
    assert!(m.lies > 0, "{m}");
    assert_eq!(m.accepted_wrong, 0, "a lone wrong answer never makes a quorum of 2: {m}");
    assert_eq!(m.liars.earned, 0, "a liar is never paid: {m}");
    assert_eq!(m.liars.slashed_nodes, 3, "every liar is caught: {m}");
    assert_eq!(m.liars.drained, 3, "and drained once its stake is below the minimum: {m}");
    let per_node = |b: &sim::Books| b.replicas as f64 / f64::from(b.nodes);
    assert!(
        per_node(&m.liars) * 4.0 < per_node(&m.honest),
        "a drained liar gets no more work: {m}"
    );
}

#[test]
fn honest_nodes_are_never_slashed_unless_liars_collude() {
    let base = SimConfig { jobs: 1000, nodes: 20, seed: 5, ..SimConfig::default() };
    for cfg in sim::matrix(&base).into_iter().filter(|c| !c.collude && c.liars >= 0.1) {
        let m = run(cfg);
        assert_eq!(m.false_slash(), 0, "{m}");
        assert_eq!((m.honest.slashed, m.honest.drained), (0, 0), "{m}");
    }
}

#[test]
fn cheating_does_not_pay_under_two_replicas_or_the_adaptive_policy() {
    for policy in [FIXED2, ADAPTIVE] {
        for patient in [false, true] {
            let m = run(SimConfig { patient, ..small(policy, 0.1) });
            let (liar, honest) = (m.liars.net_per_job().unwrap(), m.honest.net_per_job().unwrap());
            assert!(liar < honest, "{m}");
            assert!(honest > 0.0, "honest work pays: {m}");
            if !patient {
                assert!(liar < 0.0, "a naive liar loses money on every job: {m}");
            }
        }
    }
}

#[test]
fn once_nodes_are_trusted_the_adaptive_policy_runs_fewer_replicas_than_two_each() {
    let fixed = run(small(FIXED2, 0.1));
    let adaptive = run(small(ADAPTIVE, 0.1));
    assert!(fixed.overhead() >= 2.0, "every job runs at least twice: {fixed}");
    assert!(adaptive.overhead() < 1.8, "trusted nodes run alone: {adaptive}");
    assert!(adaptive.overhead() > 1.0, "spot checks never stop: {adaptive}");
    assert_eq!(adaptive.accepted_wrong, 0, "naive liars are never trusted: {adaptive}");
}

#[test]
fn colluding_liars_in_one_quorum_win_which_replication_cannot_catch() {
    let m = run(SimConfig { collude: true, ..small(FIXED2, 0.3) });
    assert!(m.accepted_wrong > 0, "two colluders in a quorum of 2 agree: {m}");
    assert!(m.liars.earned > 0, "and are paid: {m}");
    assert!(m.false_slash() > 0, "an honest node outvoted 2 to 1 is slashed: {m}");
    // A third replica makes a cartel need three of its own in one job.
    let three = run(SimConfig { collude: true, ..small(ReplicationSpec::Fixed(3), 0.3) });
    assert!(three.accepted_wrong < m.accepted_wrong, "{three}\n{m}");
}

#[test]
fn patient_liars_compute_honestly_until_trusted_and_naive_ones_never_do() {
    let naive = run(small(ADAPTIVE, 0.3));
    assert_eq!(naive.liars.compute, 0, "{naive}");
    assert_eq!(naive.lies, naive.liars.replicas, "a naive liar lies on every replica: {naive}");
    let patient = run(SimConfig { patient: true, ..small(ADAPTIVE, 0.3) });
    assert!(patient.liars.compute > 0, "{patient}");
    assert!(patient.lies > 0 && patient.lies < patient.liars.replicas, "{patient}");
    assert!(patient.liars.slashed_nodes > 0, "spot checks catch them: {patient}");
}

#[test]
fn a_patient_liar_waits_until_the_adaptive_policy_may_run_it_alone() {
    // adaptive:2,20,0.1 checks every job of a node with 20 agreements, not every one with 21.
    assert_eq!(small(ADAPTIVE, 0.1).patience(), 21);
    assert_eq!(small(FIXED2, 0.1).patience(), 21, "under a fixed policy, the default's");
    let slow = "adaptive:2,50,0.05".parse().unwrap();
    assert_eq!(small(slow, 0.1).patience(), 51);
}

#[test]
fn a_run_replays_from_its_seed() {
    let cfg = SimConfig { jobs: 500, nodes: 12, collude: true, ..small(ADAPTIVE, 0.3) };
    let a = run(cfg.clone());
    assert_eq!(a, run(cfg.clone()));
    assert_eq!(a.line(), run(cfg.clone()).line());
    let other = run(SimConfig { seed: 4, ..cfg });
    assert_ne!((a.replica_secs, a.lies), (other.replica_secs, other.lies));
}

#[test]
fn the_table_has_a_row_for_each_policy_share_and_behaviour() {
    let rows = sim::matrix(&SimConfig::default());
    assert_eq!(rows.len(), 3 * 3 * 4);
    let table = sim::table(&[run(SimConfig { jobs: 200, nodes: 10, ..small(FIXED2, 0.1) })]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[2].starts_with("| naive | 10 % | `fixed:2` | 0.0000 | 0.0000 | "), "{table}");
}
