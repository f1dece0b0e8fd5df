//! Verdicts on replicated jobs, and what they pay and cost (issue 6). Pure: the replicated
//! state machine applies them, the trust simulator drives them, both through the same code.
//!
//! ```text
//!   replicas report ──▶ validator (plugins/verify) partitions them into agreement classes
//!                        (computed once, on the leader, and proposed: every controller
//!                        applies the same classes)
//!   decide(classes, launched, policy)
//!     some replica still running                          ──▶ Wait
//!     a class has `quorum` members and a strict majority  ──▶ Agreed { winner, losers }
//!     otherwise, below max_replicas                       ──▶ MoreReplicas { n }
//!                                                             (nodes of yet other operators)
//!     otherwise                                           ──▶ Failed (no one paid, no charge)
//!   settle(verdict, ...)  Agreed: each winner paid its work; the user charged for the quorum;
//!                         the extra replicas a dispute needed are paid from the losers'
//!                         slashed stake; losers lose `slash_ppm` of their stake and their
//!                         reputation. Failed: nothing moves.
//! ```
//!
//! Amounts are integers (micro-credits): every controller computes the same settlement.

use serde::{Deserialize, Serialize};

/// How many replicas must agree, and how far a dispute may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorum {
    /// Replicas that must agree for a verdict (the job's `--replicas`; 1: a job run alone).
    pub quorum: u32,
    /// Most replicas one job may run, disputes included.
    pub max_replicas: u32,
}

/// What to do with a replicated job once its replicas have reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Replicas are still running.
    Wait,
    /// Results disagree and no class can win yet: run `n` more replicas, each on a node of an
    /// operator that has none of this job's replicas.
    MoreReplicas { n: u32 },
    /// The `winner` class is the job's result; the `losers` reported something else.
    Agreed { winner: Vec<u32>, losers: Vec<u32> },
    /// No majority after `max_replicas`: the job fails verification.
    Failed,
}

/// The verdict on a job with `launched` replicas, given the agreement `classes` of those that
/// reported (replica indices; each reported replica in exactly one class).
///
/// A class wins when it has at least `quorum` members and more than half of all reports: a
/// dispute is settled by replicas on yet other operators until one result has both, up to
/// `max_replicas`; at the limit a strict majority wins on its own. Deterministic in its
/// arguments; ties never win.
pub fn decide(classes: &[Vec<u32>], launched: u32, q: Quorum) -> Outcome {
    let reported: u32 = classes.iter().map(|c| c.len() as u32).sum();
    if reported < launched {
        return Outcome::Wait;
    }
    let Some(best) = largest(classes) else {
        // Nothing reported and nothing running: start the quorum.
        return Outcome::MoreReplicas { n: q.quorum.max(1) };
    };
    let size = classes[best].len() as u32;
    let majority = 2 * size > reported;
    let agreed = |classes: &[Vec<u32>]| {
        let losers = classes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != best)
            .flat_map(|(_, c)| c.iter().copied())
            .collect();
        Outcome::Agreed { winner: classes[best].clone(), losers }
    };
    if majority && size >= q.quorum.max(1) {
        return agreed(classes);
    }
    if launched < q.max_replicas {
        // Enough more that, should they all agree with the largest class, it would have a
        // quorum and a strict majority: size + n ≥ quorum and 2 (size + n) > reported + n.
        let for_quorum = q.quorum.saturating_sub(size);
        let for_majority = (reported + 1).saturating_sub(2 * size);
        let n = for_quorum.max(for_majority).max(1).min(q.max_replicas - launched);
        return Outcome::MoreReplicas { n };
    }
    if majority {
        return agreed(classes);
    }
    Outcome::Failed
}

/// The first class with the most members. Two classes of that size cannot hold a strict
/// majority between them, so a tie never wins.
fn largest(classes: &[Vec<u32>]) -> Option<usize> {
    let max = classes.iter().map(Vec::len).max().filter(|m| *m > 0)?;
    classes.iter().position(|c| c.len() == max)
}

/// How many replicas a job starts with (per partition, or `sbatch --replicas`): Slurm-style
/// text `fixed:N` or `adaptive[:N,TRUSTED_AFTER,SPOT]` (plugins/src/replication.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplicationSpec {
    /// Every job runs as `n` replicas.
    Fixed(u32),
    /// A job runs as `replicas` replicas, unless its first node has agreed with verified
    /// results `trusted_after` times in a row: then it may run alone, but is still
    /// replicated with probability `spot_check_ppm` millionths (never zero), so a trusted node
    /// never knows it is unchecked.
    Adaptive { replicas: u32, trusted_after: u32, spot_check_ppm: u32 },
}

impl ReplicationSpec {
    /// `adaptive` without parameters: 2 replicas, trusted after 20 agreements, 10 % spot checks.
    pub const ADAPTIVE: ReplicationSpec =
        ReplicationSpec::Adaptive { replicas: 2, trusted_after: 20, spot_check_ppm: 100_000 };
}

impl std::fmt::Display for ReplicationSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ReplicationSpec::Fixed(n) => write!(f, "fixed:{n}"),
            ReplicationSpec::Adaptive { replicas, trusted_after, spot_check_ppm } => {
                write!(f, "adaptive:{replicas},{trusted_after},{}", Ppm(spot_check_ppm))
            }
        }
    }
}

/// Millionths printed as the shortest decimal fraction (`100000` → `0.1`).
struct Ppm(u32);

impl std::fmt::Display for Ppm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (whole, frac) = (self.0 / 1_000_000, self.0 % 1_000_000);
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{frac:06}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl std::str::FromStr for ReplicationSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid replication policy `{s}`: {why}");
        let count = |t: &str, what: &str| -> Result<u32, String> {
            match t.trim().parse::<u32>() {
                Ok(n) if (1..=16).contains(&n) => Ok(n),
                _ => Err(bad(&format!("{what} must be a whole number from 1 to 16"))),
            }
        };
        let (name, args) = s.split_once(':').unwrap_or((s, ""));
        match (name, args) {
            ("fixed", n) => Ok(ReplicationSpec::Fixed(count(n, "the number of replicas")?)),
            ("adaptive", "") => Ok(ReplicationSpec::ADAPTIVE),
            ("adaptive", args) => {
                let a: Vec<&str> = args.split(',').collect();
                let [r, t, p] = a[..] else {
                    return Err(bad("expected adaptive:REPLICAS,TRUSTED_AFTER,SPOT_CHECK"));
                };
                let replicas = count(r, "REPLICAS")?;
                if replicas < 2 {
                    return Err(bad("adaptive replication needs REPLICAS of 2 or more"));
                }
                let trusted_after =
                    t.trim().parse().map_err(|_| bad("TRUSTED_AFTER must be a whole number"))?;
                let spot_check_ppm = parse_ppm(p.trim())
                    .ok_or_else(|| bad("SPOT_CHECK must be a fraction above 0 and at most 1"))?;
                Ok(ReplicationSpec::Adaptive { replicas, trusted_after, spot_check_ppm })
            }
            _ => Err(bad("expected fixed:N or adaptive[:REPLICAS,TRUSTED_AFTER,SPOT_CHECK]")),
        }
    }
}

/// `0.05` → 50000: a decimal fraction in (0, 1] with at most six decimals, exactly.
fn parse_ppm(s: &str) -> Option<u32> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 6 || !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u32 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let frac: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse().ok()? };
    let ppm = whole.checked_mul(1_000_000)?.checked_add(frac)?;
    (1..=1_000_000).contains(&ppm).then_some(ppm)
}

/// One replica as settlement sees it: its index and what its work is worth (its
/// resource-hours at the partition's rate), and the stake bonded to its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaRun {
    pub replica: u32,
    pub price: u64,
    pub stake: u64,
}

/// What a verdict moves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settlement {
    /// Credited to each winning replica's operator.
    pub paid: Vec<(u32, u64)>,
    /// Debited from the job's user.
    pub charged: u64,
    /// Taken from each losing replica's bonded stake.
    pub slashed: Vec<(u32, u64)>,
    /// Slashed stake left after paying for the dispute (burned: no one profits from a slash).
    pub burned: u64,
}

/// The money of a verdict. Every winner is paid its work in full. The user pays for the
/// first `quorum` winners, what the job would have cost undisputed; the extra winners a
/// dispute needed are paid from the losers' slashed stake, and the user covers only what
/// that stake cannot. A loser loses `slash_ppm` millionths of its stake. `Failed` (and
/// anything undecided) moves nothing.
pub fn settle(outcome: &Outcome, runs: &[ReplicaRun], quorum: u32, slash_ppm: u32) -> Settlement {
    let Outcome::Agreed { winner, losers } = outcome else { return Settlement::default() };
    let run = |r: u32| runs.iter().find(|x| x.replica == r).copied();
    let slashed: Vec<(u32, u64)> = losers
        .iter()
        .filter_map(|&r| run(r))
        .map(|x| (x.replica, (u128::from(x.stake) * u128::from(slash_ppm) / 1_000_000) as u64))
        .collect();
    let mut pool: u64 = slashed.iter().map(|(_, s)| s).sum();
    let mut winners: Vec<ReplicaRun> = winner.iter().filter_map(|&r| run(r)).collect();
    winners.sort_by_key(|x| x.replica);
    let mut charged = 0u64;
    for (i, w) in winners.iter().enumerate() {
        if (i as u32) < quorum.max(1) {
            charged += w.price;
        } else {
            let from_pool = w.price.min(pool);
            pool -= from_pool;
            charged += w.price - from_pool;
        }
    }
    let paid = winners.iter().map(|w| (w.replica, w.price)).collect();
    Settlement { paid, charged, slashed, burned: pool }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const R2: Quorum = Quorum { quorum: 2, max_replicas: 5 };

    fn agreed(winner: &[u32], losers: &[u32]) -> Outcome {
        Outcome::Agreed { winner: winner.to_vec(), losers: losers.to_vec() }
    }

    #[test]
    fn verdicts_of_a_job_replicated_twice() {
        // (classes of the reports, replicas launched) → outcome
        let cases: &[(&[&[u32]], u32, Outcome)] = &[
            (&[&[0]], 2, Outcome::Wait),
            (&[&[0, 1]], 2, agreed(&[0, 1], &[])),
            (&[&[0], &[1]], 2, Outcome::MoreReplicas { n: 1 }),
            (&[&[0, 2], &[1]], 3, agreed(&[0, 2], &[1])),
            // Three different answers: two more could still give one of them a majority.
            (&[&[0], &[1], &[2]], 3, Outcome::MoreReplicas { n: 2 }),
            (&[&[0, 3, 4], &[1], &[2]], 5, agreed(&[0, 3, 4], &[1, 2])),
            (&[&[0, 3], &[1, 4], &[2]], 5, Outcome::Failed),
            (&[&[0], &[1], &[2], &[3], &[4]], 5, Outcome::Failed),
        ];
        for (classes, launched, want) in cases {
            let classes: Vec<Vec<u32>> = classes.iter().map(|c| c.to_vec()).collect();
            assert_eq!(decide(&classes, *launched, R2), *want, "{classes:?} of {launched}");
        }
    }

    #[test]
    fn a_job_run_alone_is_decided_by_its_one_report() {
        let alone = Quorum { quorum: 1, max_replicas: 5 };
        assert_eq!(decide(&[vec![0]], 1, alone), agreed(&[0], &[]));
        assert_eq!(decide(&[], 0, alone), Outcome::MoreReplicas { n: 1 });
    }

    #[test]
    fn a_tie_never_wins_even_at_the_limit() {
        let four = Quorum { quorum: 2, max_replicas: 4 };
        assert_eq!(decide(&[vec![0, 2], vec![1, 3]], 4, four), Outcome::Failed);
        // Below the limit, one more replica can break it.
        let five = Quorum { quorum: 2, max_replicas: 5 };
        assert_eq!(decide(&[vec![0, 2], vec![1, 3]], 4, five), Outcome::MoreReplicas { n: 1 });
    }

    #[test]
    fn colluding_liars_in_the_quorum_win_which_is_what_distinct_operators_are_for() {
        // Two liars with the same wrong answer form a quorum on their own: nothing in the
        // results can tell. Placement on distinct operators and stake make this costly; the
        // trust simulator measures how often it happens.
        assert_eq!(decide(&[vec![0, 1]], 2, R2), agreed(&[0, 1], &[]));
    }

    #[test]
    fn winners_are_paid_the_user_pays_the_quorum_and_the_liar_pays_the_dispute() {
        let runs = [
            ReplicaRun { replica: 0, price: 100, stake: 10_000 },
            ReplicaRun { replica: 1, price: 100, stake: 10_000 },
            ReplicaRun { replica: 2, price: 100, stake: 10_000 },
        ];
        // Replica 1 lied; replica 2 was the tie-breaker. 10 % slash.
        let s = settle(&agreed(&[0, 2], &[1]), &runs, 2, 100_000);
        assert_eq!(
            s,
            Settlement {
                paid: vec![(0, 100), (2, 100)],
                charged: 200,
                slashed: vec![(1, 1000)],
                burned: 1000,
            }
        );
        // Three-way dispute settled by two more replicas: the two extra winners are paid
        // from the two losers' stake.
        let runs: Vec<ReplicaRun> =
            (0..5).map(|replica| ReplicaRun { replica, price: 100, stake: 500 }).collect();
        let s = settle(&agreed(&[0, 3, 4], &[1, 2]), &runs, 2, 100_000);
        assert_eq!((s.charged, s.burned), (200, 0), "100 of slashed stake paid replica 4");
        assert_eq!(s.slashed, vec![(1, 50), (2, 50)]);
        assert_eq!(s.paid.len(), 3);
        // Failing verification moves nothing: the user is not charged.
        assert_eq!(settle(&Outcome::Failed, &runs, 2, 100_000), Settlement::default());
    }

    #[test]
    fn replication_policies_parse_and_print_back() {
        for (text, spec) in [
            ("fixed:2", ReplicationSpec::Fixed(2)),
            ("adaptive", ReplicationSpec::ADAPTIVE),
            (
                "adaptive:3,50,0.05",
                ReplicationSpec::Adaptive {
                    replicas: 3,
                    trusted_after: 50,
                    spot_check_ppm: 50_000,
                },
            ),
            (
                "adaptive:2,0,1",
                ReplicationSpec::Adaptive {
                    replicas: 2,
                    trusted_after: 0,
                    spot_check_ppm: 1_000_000,
                },
            ),
        ] {
            let parsed: ReplicationSpec = text.parse().unwrap();
            assert_eq!(parsed, spec, "{text}");
            assert_eq!(parsed.to_string().parse::<ReplicationSpec>().unwrap(), spec);
        }
        assert_eq!(ReplicationSpec::ADAPTIVE.to_string(), "adaptive:2,20,0.1");
        for bad in [
            "fixed:0",
            "fixed:x",
            "adaptive:1,5,0.1",
            "adaptive:2,5,0",
            "adaptive:2,5,1.5",
            "adaptive:2,5",
            "adaptive:2,5,0.0000001",
            "random:2",
        ] {
            let e = bad.parse::<ReplicationSpec>().unwrap_err();
            assert!(e.starts_with(&format!("invalid replication policy `{bad}`: ")), "{e}");
        }
    }

    proptest! {
        /// When the honest replicas (class 0, one answer) outnumber all others together and
        /// reach the quorum, they win and none of them is slashed, however the liars split.
        #[test]
        fn an_honest_majority_is_never_slashed(
            honest in 2u32..6,
            liars in proptest::collection::vec(0u32..3, 0..5),
        ) {
            let liars: Vec<u32> = liars.into_iter().take(honest as usize - 1).collect();
            let mut next = 0u32;
            let mut take = |n: u32| { let c: Vec<u32> = (next..next + n).collect(); next += n; c };
            let mut classes = vec![take(honest)];
            // Liars in groups: the same wrong answer (colluders) or each their own.
            for (i, group) in liars.iter().enumerate() {
                let n = (*group).max(1);
                if i == 0 { classes.push(take(n)) } else { classes.push(take(1)) }
            }
            let reported: u32 = classes.iter().map(|c| c.len() as u32).sum();
            prop_assume!(2 * honest > reported);
            let q = Quorum { quorum: 2, max_replicas: reported.max(2) };
            match decide(&classes, reported, q) {
                Outcome::Agreed { winner, losers } => {
                    prop_assert_eq!(&winner, &classes[0]);
                    prop_assert!(losers.iter().all(|l| !classes[0].contains(l)));
                }
                other => prop_assert!(false, "no verdict for an honest majority: {:?}", other),
            }
        }

        /// Same reports, same verdict: the order classes are listed in changes nothing but
        /// which of two tied classes is named first, and ties never win.
        #[test]
        fn the_verdict_depends_on_the_classes_not_their_order(
            sizes in proptest::collection::vec(1u32..4, 1..5),
            launched_extra in 0u32..2,
        ) {
            let mut next = 0u32;
            let classes: Vec<Vec<u32>> =
                sizes.iter().map(|&n| { let c = (next..next + n).collect(); next += n; c }).collect();
            let mut reversed = classes.clone();
            reversed.reverse();
            let launched = next + launched_extra;
            let q = Quorum { quorum: 2, max_replicas: 7 };
            let (a, b) = (decide(&classes, launched, q), decide(&reversed, launched, q));
            match (&a, &b) {
                (Outcome::Agreed { winner: w1, .. }, Outcome::Agreed { winner: w2, .. }) => {
                    prop_assert_eq!(w1, w2)
                }
                _ => prop_assert_eq!(a, b),
            }
        }
    }
}
