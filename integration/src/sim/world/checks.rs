//! The checks the world runs after every step, the quiescence test of the heal phase, and
//! the report of a passing run.
//!
//! ```text
//!   journal violations (log matching, found as entries were persisted)
//!   each up replica: leader? ─▶ Checker::leader   commit moved? ─▶ read the entries back,
//!                    Checker::committed          applied moved? ─▶ hash, Checker::state
//!   agents' running jobs ─▶ Checker::running
//!   after the heal: everyone caught up, every job finished ─▶ Checker::finale ─▶ Report
//! ```

use chorus_core::job::JobState;
use raft::{GetEntriesContext, StateRole, Storage};

use super::{Agent, World, violation};
use crate::sim::Report;
use crate::sim::check::{Invariant, Violation};
use crate::sim::store::entry_hash;

impl World {
    pub(super) fn check(&mut self) -> Result<(), Violation> {
        if let Some(v) = self.journal.lock().expect("journal lock poisoned").take_violations().pop()
        {
            return Err(v);
        }
        for i in 0..self.replicas.len() {
            let Some(core) = self.replicas[i].core.as_ref() else { continue };
            if core.role() == StateRole::Leader {
                self.checker.leader(core.term(), core.id())?;
            }
            self.check_committed(i)?;
            self.check_state(i)?;
        }
        let running = self.agents.iter().map(|a| (a.name.as_str(), a.running_jobs()));
        self.checker.running(running)
    }

    /// Reads the newly committed entries back from the store and compares them with every
    /// other replica's and with what was persisted.
    pub(super) fn check_committed(&mut self, i: usize) -> Result<(), Violation> {
        let r = &mut self.replicas[i];
        let Some(core) = r.core.as_ref() else { return Ok(()) };
        let commit = core.commit().min(r.store.last_index().unwrap_or(0));
        if commit <= r.checked_commit {
            return Ok(());
        }
        let low = (r.checked_commit + 1).max(r.store.first_index().unwrap_or(1));
        let entries = if low <= commit {
            r.store.entries(low, commit + 1, None, GetEntriesContext::empty(false)).map_err(
                |e| {
                    violation(
                        Invariant::Crash,
                        format!("replica {}: reading entries {low}..={commit}: {e}", r.id),
                    )
                },
            )?
        } else {
            vec![]
        };
        r.checked_commit = commit;
        let id = r.id;
        for e in entries {
            let h = entry_hash(&e);
            if self.journal.lock().expect("journal lock poisoned").entry(e.index, e.term) != Some(h)
            {
                return Err(violation(
                    Invariant::LogMatching,
                    format!(
                        "replica {id}'s store returns index {} term {} unlike what was persisted",
                        e.index, e.term
                    ),
                ));
            }
            self.checker.committed(id, e.index, e.term, h)?;
        }
        Ok(())
    }

    /// Hashes the state when the applied index moved and hands it to the checker.
    pub(super) fn check_state(&mut self, i: usize) -> Result<(), Violation> {
        let r = &mut self.replicas[i];
        let Some(core) = r.core.as_ref() else { return Ok(()) };
        let applied = core.applied();
        if r.hashed == Some(applied) {
            return Ok(());
        }
        r.hashed = Some(applied);
        let hash = blake3::hash(&core.state_bytes());
        let st = core.state();
        let st = st.read().expect("state lock poisoned");
        self.checker.state(r.id, applied, hash, &st)
    }

    /// After the heal: every replica up and caught up with one leader, every submission
    /// acknowledged, every job finished, every agent idle. Then the final checks.
    pub(super) fn quiescent(&mut self) -> Result<bool, Violation> {
        if self.clients.iter().any(|c| c.acked.is_none()) || !self.agents.iter().all(Agent::idle) {
            return Ok(false);
        }
        let Some(leader) = self.leader() else { return Ok(false) };
        let lc = self.replicas[Self::idx(leader)].core.as_ref().expect("leader is up");
        let (applied, commit) = (lc.applied(), lc.commit());
        let caught_up = self.replicas.iter().all(|r| {
            r.core.as_ref().is_some_and(|c| c.applied() == applied && c.commit() == commit)
        });
        let st = lc.state();
        let st = st.read().expect("state lock poisoned");
        if !caught_up
            || !st.pending.is_empty()
            || !st.active.is_empty()
            || st.jobs.len() < self.clients.len()
        {
            return Ok(false);
        }
        self.checker.finale(&st, self.clients.len())?;
        Ok(true)
    }

    /// Why the heal phase did not reach quiescence, for the failure message.
    pub(super) fn stuck(&self) -> String {
        let unacked = self.clients.iter().filter(|c| c.acked.is_none()).count();
        let mut s = format!(
            "not quiescent {} ms after the heal: {unacked} submissions unacknowledged",
            self.cfg.heal_deadline_ms
        );
        match self.leader() {
            None => s.push_str("; no leader"),
            Some(l) => {
                let st = self.replicas[Self::idx(l)].core.as_ref().expect("leader is up").state();
                let st = st.read().expect("state lock poisoned");
                let open: Vec<String> = st
                    .jobs
                    .values()
                    .filter(|j| !j.state.is_terminal())
                    .map(|j| format!("{}:{}@{:?}", j.id, j.state, j.alloc.first().map(|a| &a.node)))
                    .collect();
                s.push_str(&format!(
                    "; leader {l} has {} jobs, not finished: {open:?}",
                    st.jobs.len()
                ));
            }
        }
        for a in self.agents.iter().filter(|a| !a.idle()) {
            s.push_str(&format!(
                "; {} busy running {:?} following {:?}",
                a.name,
                a.running_jobs(),
                a.following()
            ));
        }
        s
    }

    pub(super) fn report(&self) -> Report {
        let leader = self.leader().expect("quiescent means a leader");
        let core = self.replicas[Self::idx(leader)].core.as_ref().expect("leader is up");
        let st = core.state();
        let st = st.read().expect("state lock poisoned");
        let terminal = st.jobs.values().filter(|j| j.state.is_terminal()).count();
        Report {
            seed: self.seed,
            replicas: self.replicas.len(),
            nodes: self.agents.len(),
            steps: self.step,
            virtual_ms: self.now,
            elections: self.checker.elections(),
            crashes: self.stats.crashes,
            partitions: self.net.partitions,
            messages: self.net.sent,
            dropped: self.net.dropped,
            duplicated: self.net.duplicated,
            cut: self.stats.cut,
            snapshots: self.stats.snapshots,
            submitted: self.clients.len(),
            acknowledged: self.stats.acknowledged,
            finished: terminal,
            node_fail: st.jobs.values().filter(|j| j.state == JobState::NodeFail).count(),
            client_retries: self.clients.iter().map(|c| c.retries).sum(),
            agent_restarts: self.agents.iter().map(|a| a.restarts).sum(),
            registrations: self.agents.iter().map(|a| a.registrations).sum(),
            applied: core.applied(),
            digest: blake3::hash(&core.state_bytes()).to_hex().to_string(),
        }
    }
}
