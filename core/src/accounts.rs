//! Operators' accounts, in the replicated state (issue 6, point 2): credits, the stake bonded
//! to each of their nodes, stake on its way out, and a history.
//!
//! ```text
//!   Deposit   credits → balance                            (an admin's command)
//!   Bond      balance → the node's stake                   (a node is one operator's)
//!   Unbond    stake → unbonding, released to the balance `unbond_delay_secs` later:
//!             stake a node could be slashed for cannot leave at once
//!   scheduling: a node with less than `min_stake` bonded gets no work
//! ```
//!
//! Amounts are integers (micro-credits). Every change is a pure function of the state and
//! the command, so every controller keeps the same books.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::job::JobId;

/// Entries of history kept per operator, newest last.
pub const HISTORY: usize = 100;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounts {
    pub operators: BTreeMap<String, Operator>,
    /// Node → the operator whose stake it holds.
    pub node_operator: BTreeMap<String, String>,
    /// Users' credits, which pay for their jobs' verified work.
    pub users: BTreeMap<String, User>,
}

/// A user's account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub balance: u64,
    /// Charged for verified work, in all.
    pub spent: u64,
    /// Charged beyond the balance: the user submits nothing to a priced partition until it is
    /// paid.
    pub owed: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    /// Credits free to bond or withdraw: deposits, earnings, released stake.
    pub balance: u64,
    pub bonds: BTreeMap<String, Bond>,
    /// Paid for verified work, in all.
    pub earned: u64,
    /// Lost to slashes, in all.
    pub slashed: u64,
    pub history: VecDeque<Entry>,
}

/// A node's stake.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bond {
    pub stake: u64,
    /// Verified agreements in a row (what the adaptive replication policy trusts).
    pub agreements: u32,
    /// Stake on its way back to the balance: `(amount, released at)`.
    pub unbonding: Vec<(u64, u64)>,
    /// Paid for this node's verified work, in all.
    pub earned: u64,
    /// Lost to this node's slashes, in all.
    pub slashed: u64,
}

/// One line of an operator's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    Deposited { amount: u64, at: u64 },
    Bonded { node: String, amount: u64, at: u64 },
    Unbonding { node: String, amount: u64, release_at: u64 },
    Released { node: String, amount: u64, at: u64 },
    Paid { job: JobId, node: String, amount: u64, at: u64 },
    Slashed { job: JobId, node: String, amount: u64, at: u64 },
}

/// Why an account change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("operator {0} has no account")]
    UnknownOperator(String),
    #[error("operator {operator} has {have} credits, {need} needed")]
    Balance { operator: String, have: u64, need: u64 },
    #[error("node {node} is bonded by operator {operator}")]
    NodeTaken { node: String, operator: String },
    #[error("node {node} has {have} staked, {need} asked to unbond")]
    Stake { node: String, have: u64, need: u64 },
    #[error("an amount must be above 0")]
    Zero,
}

impl Operator {
    fn log(&mut self, e: Entry) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(e);
    }

    /// Moves every unbonding amount due by `now` to the balance.
    fn release_due(&mut self, now: u64) {
        let mut released = vec![];
        for (node, bond) in &mut self.bonds {
            bond.unbonding.retain(|&(amount, at)| {
                let due = at <= now;
                if due {
                    released.push((node.clone(), amount));
                }
                !due
            });
        }
        for (node, amount) in released {
            self.balance += amount;
            self.log(Entry::Released { node, amount, at: now });
        }
    }
}

impl Accounts {
    /// Stake bonded to `node` now (not counting stake on its way out).
    pub fn stake_of(&self, node: &str) -> u64 {
        self.bond(node).map_or(0, |b| b.stake)
    }

    pub fn bond(&self, node: &str) -> Option<&Bond> {
        let op = self.node_operator.get(node)?;
        self.operators.get(op)?.bonds.get(node)
    }

    /// Whether `node` has the stake to be given work.
    pub fn has_stake(&self, node: &str, min_stake: u64) -> bool {
        min_stake == 0 || self.stake_of(node) >= min_stake
    }

    /// Credits `amount` to `operator`, opening its account if it has none.
    pub fn deposit(&mut self, operator: &str, amount: u64, now: u64) -> Result<(), AccountError> {
        if amount == 0 {
            return Err(AccountError::Zero);
        }
        let op = self.operators.entry(operator.to_owned()).or_default();
        op.release_due(now);
        op.balance += amount;
        op.log(Entry::Deposited { amount, at: now });
        Ok(())
    }

    /// The stake a verdict can take from `node`: bonded, and on its way out.
    pub fn slashable(&self, node: &str) -> u64 {
        self.bond(node).map_or(0, |b| b.stake + b.unbonding.iter().map(|(a, _)| a).sum::<u64>())
    }

    /// Verified agreements in a row of `node` (0 for a node no operator bonded).
    pub fn agreements(&self, node: &str) -> u32 {
        self.bond(node).map_or(0, |b| b.agreements)
    }

    fn bond_mut(&mut self, node: &str) -> Option<(&mut Operator, String)> {
        let op = self.node_operator.get(node)?;
        Some((self.operators.get_mut(op)?, node.to_owned()))
    }

    /// Credits `amount` to the operator of `node` for verified work on `job`; a node no
    /// operator bonded earns nothing (it has no account to be paid into).
    pub fn pay(&mut self, node: &str, job: JobId, amount: u64, now: u64) {
        let Some((op, node)) = self.bond_mut(node) else { return };
        op.release_due(now);
        op.balance += amount;
        op.earned += amount;
        if let Some(b) = op.bonds.get_mut(&node) {
            b.earned += amount;
        }
        op.log(Entry::Paid { job, node, amount, at: now });
    }

    /// One more verified agreement for `node` (what adaptive replication counts).
    pub fn agreed(&mut self, node: &str) {
        if let Some((op, node)) = self.bond_mut(node)
            && let Some(b) = op.bonds.get_mut(&node)
        {
            b.agreements = b.agreements.saturating_add(1);
        }
    }

    /// Takes `amount` from `node`'s stake (bonded first, then unbonding, newest first) for
    /// disagreeing with the verified result of `job`, and resets its record of agreements.
    /// Returns what was taken.
    pub fn slash(&mut self, node: &str, job: JobId, amount: u64, now: u64) -> u64 {
        let Some((op, node)) = self.bond_mut(node) else { return 0 };
        let Some(b) = op.bonds.get_mut(&node) else { return 0 };
        b.agreements = 0;
        let mut left = amount;
        let from_stake = left.min(b.stake);
        b.stake -= from_stake;
        left -= from_stake;
        for (a, _) in b.unbonding.iter_mut().rev() {
            let take = left.min(*a);
            *a -= take;
            left -= take;
        }
        b.unbonding.retain(|(a, _)| *a > 0);
        let taken = amount - left;
        b.slashed += taken;
        op.slashed += taken;
        op.log(Entry::Slashed { job, node, amount: taken, at: now });
        taken
    }

    /// Forgets `node`'s record of agreements (it lost a replica: trust starts over).
    pub fn reset_agreements(&mut self, node: &str) {
        if let Some((op, node)) = self.bond_mut(node)
            && let Some(b) = op.bonds.get_mut(&node)
        {
            b.agreements = 0;
        }
    }

    /// Credits a user's account, opening it (an admin's command).
    pub fn credit_user(&mut self, user: &str, amount: u64) -> Result<(), AccountError> {
        if amount == 0 {
            return Err(AccountError::Zero);
        }
        let u = self.users.entry(user.to_owned()).or_default();
        let repaid = amount.min(u.owed);
        u.owed -= repaid;
        u.balance += amount - repaid;
        Ok(())
    }

    /// Charges `user` for verified work: from the balance, and what it cannot cover is owed.
    pub fn charge_user(&mut self, user: &str, amount: u64) {
        if amount == 0 {
            return;
        }
        let u = self.users.entry(user.to_owned()).or_default();
        let paid = amount.min(u.balance);
        u.balance -= paid;
        u.owed += amount - paid;
        u.spent += amount;
    }

    /// Whether `user` may submit to a partition that charges: it has credits and owes none.
    pub fn user_can_pay(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.balance > 0 && u.owed == 0)
    }

    /// Moves `amount` of `operator`'s balance to `node`'s stake.
    pub fn bond_node(
        &mut self,
        operator: &str,
        node: &str,
        amount: u64,
        now: u64,
    ) -> Result<(), AccountError> {
        if amount == 0 {
            return Err(AccountError::Zero);
        }
        if let Some(owner) = self.node_operator.get(node).filter(|o| *o != operator) {
            return Err(AccountError::NodeTaken { node: node.into(), operator: owner.clone() });
        }
        let op = self
            .operators
            .get_mut(operator)
            .ok_or_else(|| AccountError::UnknownOperator(operator.into()))?;
        op.release_due(now);
        if op.balance < amount {
            let (have, need) = (op.balance, amount);
            return Err(AccountError::Balance { operator: operator.into(), have, need });
        }
        op.balance -= amount;
        op.bonds.entry(node.to_owned()).or_default().stake += amount;
        op.log(Entry::Bonded { node: node.into(), amount, at: now });
        self.node_operator.insert(node.to_owned(), operator.to_owned());
        Ok(())
    }

    /// Starts returning `amount` of `node`'s stake to its operator: it stays slashable until
    /// `now + delay`, then goes back to the balance.
    pub fn unbond_node(
        &mut self,
        operator: &str,
        node: &str,
        amount: u64,
        now: u64,
        delay: u64,
    ) -> Result<(), AccountError> {
        if amount == 0 {
            return Err(AccountError::Zero);
        }
        let op = self
            .operators
            .get_mut(operator)
            .ok_or_else(|| AccountError::UnknownOperator(operator.into()))?;
        op.release_due(now);
        let have = op.bonds.get(node).map_or(0, |b| b.stake);
        let bond = op
            .bonds
            .get_mut(node)
            .filter(|b| b.stake >= amount)
            .ok_or_else(|| AccountError::Stake { node: node.into(), have, need: amount })?;
        bond.stake -= amount;
        let release_at = now.saturating_add(delay);
        bond.unbonding.push((amount, release_at));
        op.log(Entry::Unbonding { node: node.into(), amount, release_at });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    #[test]
    fn stake_is_bonded_from_the_balance_and_gates_work() {
        let mut a = Accounts::default();
        a.deposit("acme", 1_000, 0).unwrap();
        assert!(!a.has_stake("node1", 500), "no stake, no work");
        assert!(a.has_stake("node1", 0), "a cluster without a minimum stake asks none");
        a.bond_node("acme", "node1", 600, 1).unwrap();
        assert!(a.has_stake("node1", 500));
        assert_eq!(a.operators["acme"].balance, 400);
        assert_eq!(
            a.bond_node("acme", "node1", 500, 2),
            Err(AccountError::Balance { operator: "acme".into(), have: 400, need: 500 })
        );
        a.deposit("rival", 1_000, 3).unwrap();
        assert_eq!(
            a.bond_node("rival", "node1", 100, 4),
            Err(AccountError::NodeTaken { node: "node1".into(), operator: "acme".into() }),
            "a node is one operator's"
        );
        assert_eq!(
            a.bond_node("nobody", "node9", 1, 5),
            Err(AccountError::UnknownOperator("nobody".into()))
        );
        assert_eq!(a.deposit("acme", 0, 6), Err(AccountError::Zero));
    }

    #[test]
    fn unbonded_stake_leaves_only_after_the_delay() {
        let mut a = Accounts::default();
        a.deposit("acme", 1_000, 0).unwrap();
        a.bond_node("acme", "node1", 1_000, 0).unwrap();
        a.unbond_node("acme", "node1", 400, 10, 7 * DAY).unwrap();
        assert_eq!(a.stake_of("node1"), 600, "no longer counts for work at once");
        assert_eq!(a.operators["acme"].balance, 0, "but is not spendable yet");
        assert_eq!(
            a.unbond_node("acme", "node1", 700, 11, 7 * DAY),
            Err(AccountError::Stake { node: "node1".into(), have: 600, need: 700 })
        );
        // The next touch of the account after the delay releases it.
        a.deposit("acme", 1, 10 + 7 * DAY - 1).unwrap();
        assert_eq!(a.operators["acme"].balance, 1);
        a.deposit("acme", 1, 10 + 7 * DAY).unwrap();
        assert_eq!(a.operators["acme"].balance, 402);
        let last: Vec<&Entry> = a.operators["acme"].history.iter().rev().take(2).collect();
        assert_eq!(
            last[1],
            &Entry::Released { node: "node1".into(), amount: 400, at: 10 + 7 * DAY }
        );
    }

    #[test]
    fn history_keeps_the_newest_entries() {
        let mut a = Accounts::default();
        for t in 0..(HISTORY as u64 + 10) {
            a.deposit("acme", 1, t).unwrap();
        }
        let h = &a.operators["acme"].history;
        assert_eq!(h.len(), HISTORY);
        assert_eq!(h.back(), Some(&Entry::Deposited { amount: 1, at: HISTORY as u64 + 9 }));
    }
}
