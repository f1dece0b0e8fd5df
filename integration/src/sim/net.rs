//! The faulty network between replicas: every raft message gets a random delay (so messages
//! overtake each other), and while faults are on it may be dropped or duplicated, or cut by a
//! partition. Decisions are drawn from the run's RNG; the world turns them into events.
//!
//! ```text
//!   send(msg) ──▶ dropped? ──▶ Fate::Lost (the sender hears "unreachable" for snapshots)
//!            └──▶ delay d ──▶ Fate::Deliver(at + d) [+ a duplicate at at + d']
//!   at delivery: receiver down, or on the other side of a partition ──▶ lost, unreachable
//! ```

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::Ms;

/// How messages are treated while faults are on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message arrives twice.
    pub duplicate: f64,
    /// Probability that a message is slow (up to `slow_ms`), which reorders it.
    pub slow: f64,
    pub slow_ms: Ms,
}

impl Faults {
    pub const NONE: Faults = Faults { drop: 0.0, duplicate: 0.0, slow: 0.0, slow_ms: 0 };
}

/// What happens to one message sent now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    Lost,
    /// Delivery delays, in ms from now: one, or two for a duplicate.
    Deliver(Vec<Ms>),
}

/// The network: the fault settings now in force and the current partition.
#[derive(Debug)]
pub struct Network {
    pub faults: Faults,
    /// Side of the partition of each replica (index = id - 1); all equal when healed.
    side: Vec<u8>,
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub partitions: u64,
}

impl Network {
    pub fn new(replicas: usize, faults: Faults) -> Self {
        Self { faults, side: vec![0; replicas], sent: 0, dropped: 0, duplicated: 0, partitions: 0 }
    }

    fn delay(&self, rng: &mut ChaCha8Rng) -> Ms {
        if self.faults.slow_ms > 0 && rng.gen_bool(self.faults.slow) {
            rng.gen_range(20..=self.faults.slow_ms)
        } else {
            rng.gen_range(1..=15)
        }
    }

    /// Decides the fate of a message sent now.
    pub fn send(&mut self, rng: &mut ChaCha8Rng) -> Fate {
        self.sent += 1;
        if rng.gen_bool(self.faults.drop) {
            self.dropped += 1;
            return Fate::Lost;
        }
        let mut delays = vec![self.delay(rng)];
        if rng.gen_bool(self.faults.duplicate) {
            self.duplicated += 1;
            delays.push(self.delay(rng));
        }
        Fate::Deliver(delays)
    }

    /// Whether `a` and `b` can talk now.
    pub fn connected(&self, a: u64, b: u64) -> bool {
        let side = |id: u64| self.side.get(id as usize - 1).copied();
        side(a) == side(b)
    }

    /// Splits the replicas in two at random: sometimes the given replica (the leader) alone.
    pub fn partition(&mut self, rng: &mut ChaCha8Rng, isolate: Option<u64>) -> String {
        self.partitions += 1;
        let n = self.side.len();
        match isolate {
            Some(id) => {
                self.side = vec![0; n];
                self.side[id as usize - 1] = 1;
            }
            None => {
                let cut = rng.gen_range(1..n);
                let mut ids: Vec<usize> = (0..n).collect();
                rand::seq::SliceRandom::shuffle(&mut ids[..], rng);
                self.side = vec![0; n];
                for &i in &ids[..cut] {
                    self.side[i] = 1;
                }
            }
        }
        format!("{:?}", self.side)
    }

    pub fn heal_partition(&mut self) {
        self.side.iter_mut().for_each(|s| *s = 0);
    }
}
