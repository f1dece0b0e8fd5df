//! Replication policies: how many replicas a job starts with (its quorum), chosen per
//! partition or job by a `ReplicationSpec` (`fixed:N`, `adaptive[:N,TRUSTED_AFTER,SPOT]`).
//!
//! ```text
//!   replicate/fixed      always N
//!   replicate/adaptive   the node the scheduler picked first has agreed with verified
//!                        results `a` times in a row:
//!                          a < TRUSTED_AFTER       N (new nodes always run replicated)
//!                          otherwise               N with probability
//!                                                  max(SPOT, TRUSTED_AFTER / a), else 1
//!                        so trust is earned slowly, a patient liar must stay honest long to
//!                        be checked less, and no node is ever sure it is unchecked.
//! ```
//!
//! The coin is an argument (`draw`, from the job id and the cluster's seed): every controller
//! reaches the same quorum, and the node cannot tell a spot check from any other replica.

use chorus_core::JobId;
use chorus_core::trust::ReplicationSpec;

/// What a policy knows of the node the scheduler picked first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeRecord {
    /// Verified agreements in a row; a disagreement resets it to 0.
    pub agreements: u32,
}

pub trait ReplicationPolicy: Send + Sync {
    fn name(&self) -> &'static str;
    /// The job's quorum, given its first node's record and the job's coin (`draw`).
    fn quorum(&self, first: NodeRecord, draw: u32) -> u32;
}

/// `replicate/fixed`: every job as N replicas.
#[derive(Debug, Clone, Copy)]
pub struct Fixed(pub u32);

impl ReplicationPolicy for Fixed {
    fn name(&self) -> &'static str {
        "replicate/fixed"
    }

    fn quorum(&self, _: NodeRecord, _: u32) -> u32 {
        self.0.max(1)
    }
}

/// `replicate/adaptive` (module doc).
#[derive(Debug, Clone, Copy)]
pub struct Adaptive {
    pub replicas: u32,
    pub trusted_after: u32,
    pub spot_check_ppm: u32,
}

impl Adaptive {
    /// The chance, in millionths, that a job whose first node has `agreements` in a row is
    /// still replicated.
    pub fn check_ppm(&self, agreements: u32) -> u32 {
        if agreements < self.trusted_after || agreements == 0 {
            return 1_000_000;
        }
        let earned = (u64::from(self.trusted_after) * 1_000_000 / u64::from(agreements)) as u32;
        earned.max(self.spot_check_ppm).min(1_000_000)
    }
}

impl ReplicationPolicy for Adaptive {
    fn name(&self) -> &'static str {
        "replicate/adaptive"
    }

    fn quorum(&self, first: NodeRecord, draw: u32) -> u32 {
        if draw % 1_000_000 < self.check_ppm(first.agreements) { self.replicas.max(2) } else { 1 }
    }
}

/// The policy a spec names.
pub fn policy(spec: &ReplicationSpec) -> Box<dyn ReplicationPolicy> {
    match *spec {
        ReplicationSpec::Fixed(n) => Box::new(Fixed(n)),
        ReplicationSpec::Adaptive { replicas, trusted_after, spot_check_ppm } => {
            Box::new(Adaptive { replicas, trusted_after, spot_check_ppm })
        }
    }
}

/// The job's coin: a well-mixed number from the cluster's seed and the job id (splitmix64),
/// the same on every controller.
pub fn draw(seed: u64, job: JobId) -> u32 {
    let mut z = seed ^ u64::from(job).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as u32
}

/// Where `node` comes in a replicated job's order of nodes: the job's coin mixed with the
/// node's name (FNV-1a), so each job shuffles the nodes differently and, without the seed,
/// unpredictably.
pub fn rank(seed: u64, job: JobId, node: &str) -> u32 {
    let name = node
        .bytes()
        .fold(0xCBF2_9CE4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3));
    draw(seed ^ name, job)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADAPTIVE: Adaptive = Adaptive { replicas: 2, trusted_after: 20, spot_check_ppm: 50_000 };

    /// The share of 200 000 jobs a policy replicates, for a first node with `agreements`.
    fn replicated_share(p: &dyn ReplicationPolicy, agreements: u32) -> f64 {
        let n = 200_000;
        let replicated =
            (0..n).filter(|&job| p.quorum(NodeRecord { agreements }, draw(7, job)) > 1).count();
        replicated as f64 / f64::from(n)
    }

    #[test]
    fn fixed_always_runs_n() {
        assert_eq!(Fixed(3).quorum(NodeRecord { agreements: 1000 }, 0), 3);
        assert_eq!(policy(&ReplicationSpec::Fixed(2)).name(), "replicate/fixed");
    }

    #[test]
    fn new_nodes_always_run_replicated() {
        for agreements in [0, 1, 19] {
            assert_eq!(replicated_share(&ADAPTIVE, agreements), 1.0, "{agreements}");
        }
    }

    #[test]
    fn trust_is_earned_slowly_and_checks_never_stop() {
        // At the threshold every job is still checked; at twice it, half; then it falls to
        // the spot-check floor and stays there.
        assert_eq!(ADAPTIVE.check_ppm(20), 1_000_000);
        assert_eq!(ADAPTIVE.check_ppm(40), 500_000);
        assert_eq!(ADAPTIVE.check_ppm(400), 50_000);
        assert_eq!(ADAPTIVE.check_ppm(u32::MAX), 50_000);
        let share = replicated_share(&ADAPTIVE, 40);
        assert!((share - 0.5).abs() < 0.01, "{share}");
        let share = replicated_share(&ADAPTIVE, 1_000_000);
        assert!((share - 0.05).abs() < 0.005, "spot checks at the floor: {share}");
    }

    #[test]
    fn the_coin_is_the_same_everywhere_and_well_spread() {
        assert_eq!(draw(7, 42), draw(7, 42));
        assert_ne!(draw(7, 42), draw(8, 42), "the cluster's seed matters");
        // Consecutive job ids do not give runs of the same decision.
        let decisions: Vec<bool> = (0..64).map(|j| draw(7, j).is_multiple_of(2)).collect();
        assert!(decisions.windows(8).all(|w| w.iter().any(|d| *d) && w.iter().any(|d| !*d)));
    }
}
