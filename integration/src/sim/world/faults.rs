//! The faults of the fault phase, and the heal that ends them.
//!
//! ```text
//!   Crash ──▶ drop a Core (its store stays) ──▶ Restart later: Core::open over the store
//!   PartitionStart ──▶ split the replicas (sometimes the leader alone) ──▶ PartitionEnd
//!   AgentCrash ──▶ an agent restarts with a new session; its jobs die with the old one
//!   Heal ──▶ no more faults, the partition heals, every replica comes back
//! ```

use raft::StateRole;
use rand::Rng;

use super::{Event, World};
use crate::sim::actors::Answer;
use crate::sim::check::Violation;
use crate::sim::net::Faults;
use chorus_ctld::replica::ProposeError;

impl World {
    pub(super) fn crash(&mut self) {
        if self.healed {
            return;
        }
        let up: Vec<u64> =
            self.replicas.iter().filter(|r| r.core.is_some()).map(|r| r.id).collect();
        let down = self.replicas.len() - up.len();
        let most = if self.p.majority_crash {
            self.replicas.len() - 1
        } else {
            (self.replicas.len() - 1) / 2
        };
        if down < most {
            let victim = match self.leader() {
                Some(l) if self.rng.gen_bool(0.5) => l,
                _ => up[self.rng.gen_range(0..up.len())],
            };
            self.kill(victim);
            let back = self.rng.gen_range(300..5_000);
            self.after(back, Event::Restart(victim));
        }
        let next = self.gap(self.p.crash_gap);
        self.at(next, Event::Crash);
    }

    /// Drops a replica's `Core` (its store survives); its callers see the connection reset.
    pub(super) fn kill(&mut self, id: u64) {
        self.trace(|| format!("replica {id} crashes"));
        self.stats.crashes += 1;
        let r = &mut self.replicas[Self::idx(id)];
        r.core = None;
        let incarnation = r.incarnation;
        for (actor, attempt) in std::mem::take(&mut r.waiting).into_values() {
            self.answer(
                actor,
                attempt,
                Answer {
                    from: (id, incarnation),
                    leader_hint: 0,
                    result: Err(ProposeError::Stopped),
                },
            );
        }
    }

    pub(super) fn restart(&mut self, id: u64) -> Result<(), Violation> {
        if self.replicas[Self::idx(id)].core.is_some() {
            return Ok(());
        }
        self.open(Self::idx(id));
        self.ready(id)
    }

    pub(super) fn partition_start(&mut self) {
        if self.healed {
            return;
        }
        let isolate = if self.rng.gen_bool(0.3) { self.leader() } else { None };
        let sides = self.net.partition(&mut self.rng, isolate);
        self.trace(|| format!("partition {sides}"));
        let len = self.rng.gen_range(500..5_000);
        self.after(len, Event::PartitionEnd);
    }

    pub(super) fn partition_end(&mut self) {
        self.net.heal_partition();
        self.trace(|| "partition healed".into());
        if !self.healed {
            let next = self.gap(self.p.partition_gap);
            self.at(next, Event::PartitionStart);
        }
    }

    pub(super) fn agent_crash(&mut self) {
        let Some(gap) = self.p.agent_crash_gap.filter(|_| !self.healed) else { return };
        let i = self.rng.gen_range(0..self.agents.len());
        let session = self.rng.r#gen();
        self.agents[i].restart(session);
        self.trace(|| format!("agent node{} restarts", i + 1));
        let next = self.gap(gap);
        self.at(next, Event::AgentCrash);
    }

    /// Faults stop: the network heals and every replica comes back.
    pub(super) fn heal(&mut self) -> Result<(), Violation> {
        self.trace(|| "heal: faults stop".into());
        self.healed = true;
        self.net.faults = Faults::NONE;
        self.net.heal_partition();
        for id in 1..=self.replicas.len() as u64 {
            self.restart(id)?;
        }
        Ok(())
    }

    /// Changes a follower's state machine behind raft's back, every second until the run
    /// ends ([`crate::sim::Sabotage::DivergeState`]): a crash or a snapshot may undo one
    /// change before another replica applies the same index, not all of them.
    pub(super) fn sabotage(&mut self) {
        let follower = self
            .replicas
            .iter()
            .find(|r| r.core.as_ref().is_some_and(|c| c.role() != StateRole::Leader));
        if let Some(core) = follower.and_then(|r| r.core.as_ref()) {
            core.state().write().expect("state lock poisoned").next_job_id += 1000;
        }
        self.after(1_000, Event::Sabotage);
    }
}
