//! `chorus operator balance` and `chorus node status`: operators' credits and their nodes'
//! stake, as the replicated state holds them (core/src/accounts.rs).

use std::fmt::Write as _;

use chorus_core::accounts::{Accounts, Entry};
use chorus_core::node::Node;

use super::timefmt::{Tz, iso};

/// One operator's account: balance and totals, each node's stake, the latest history.
pub fn balance(accounts: &Accounts, operator: &str, tz: Tz) -> Option<String> {
    let op = accounts.operators.get(operator)?;
    let mut out = format!(
        "Operator={operator} Balance={} Earned={} Slashed={}\n",
        op.balance, op.earned, op.slashed
    );
    for (node, bond) in &op.bonds {
        let unbonding: u64 = bond.unbonding.iter().map(|(a, _)| a).sum();
        let _ = write!(
            out,
            "   Node={node} Stake={} Agreements={} Earned={} Slashed={}",
            bond.stake, bond.agreements, bond.earned, bond.slashed
        );
        if unbonding > 0 {
            let last = bond.unbonding.iter().map(|(_, at)| *at).max().unwrap_or(0);
            let _ = write!(out, " Unbonding={unbonding} ReleasedBy={}", iso(last, tz));
        }
        out.push('\n');
    }
    for e in op.history.iter().rev().take(10) {
        let line = match e {
            Entry::Deposited { amount, at } => format!("{} deposited {amount}", iso(*at, tz)),
            Entry::Bonded { node, amount, at } => {
                format!("{} bonded {amount} to {node}", iso(*at, tz))
            }
            Entry::Unbonding { node, amount, release_at } => {
                format!("unbonding {amount} from {node}, released {}", iso(*release_at, tz))
            }
            Entry::Released { node, amount, at } => {
                format!("{} released {amount} from {node}", iso(*at, tz))
            }
            Entry::Paid { job, node, amount, at } => {
                format!("{} paid {amount} for job {job} on {node}", iso(*at, tz))
            }
            Entry::Slashed { job, node, amount, at } => {
                format!("{} slashed {amount} for job {job} on {node}", iso(*at, tz))
            }
        };
        let _ = writeln!(out, "   {line}");
    }
    Some(out)
}

/// A table of nodes: their operator, stake, record, and whether they may be given work.
pub fn node_status(
    nodes: &[Node],
    accounts: &Accounts,
    min_stake: u64,
    only: Option<&str>,
) -> String {
    let mut out = format!(
        "{:<16} {:<16} {:>12} {:>10} {:>10} {:>10} {}\n",
        "NODE", "OPERATOR", "STAKE", "AGREEMENTS", "EARNED", "SLASHED", "WORK"
    );
    for n in nodes.iter().filter(|n| only.is_none_or(|o| o == n.name)) {
        let operator = accounts.node_operator.get(&n.name).map_or("-", String::as_str);
        let bond = accounts.bond(&n.name);
        let stake = bond.map_or(0, |b| b.stake);
        let work = match (n.accepts_work(), accounts.has_stake(&n.name, min_stake)) {
            (true, true) => "yes".to_owned(),
            (false, _) => format!("no ({})", n.slurm_state().name()),
            (true, false) => format!("no (stake below {min_stake})"),
        };
        let _ = writeln!(
            out,
            "{:<16} {:<16} {:>12} {:>10} {:>10} {:>10} {work}",
            n.name,
            operator,
            stake,
            bond.map_or(0, |b| b.agreements),
            bond.map_or(0, |b| b.earned),
            bond.map_or(0, |b| b.slashed),
        );
    }
    out
}

/// A user's credits: what pays for its jobs' verified work.
pub fn user_balance(accounts: &Accounts, user: &str) -> Option<String> {
    let u = accounts.users.get(user)?;
    Some(format!("User={user} Balance={} Spent={} Owed={}\n", u.balance, u.spent, u.owed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operators_balance_shows_stake_unbonding_and_history() {
        let mut a = Accounts::default();
        a.deposit("acme", 1_000, 0).unwrap();
        a.bond_node("acme", "node1", 600, 60).unwrap();
        a.unbond_node("acme", "node1", 100, 120, 3600).unwrap();
        let text = balance(&a, "acme", Tz::Fixed(0)).unwrap();
        assert_eq!(
            text,
            "Operator=acme Balance=400 Earned=0 Slashed=0\n\
             \x20  Node=node1 Stake=500 Agreements=0 Earned=0 Slashed=0 Unbonding=100 \
             ReleasedBy=1970-01-01T01:02:00\n\
             \x20  unbonding 100 from node1, released 1970-01-01T01:02:00\n\
             \x20  1970-01-01T00:01:00 bonded 600 to node1\n\
             \x20  1970-01-01T00:00:00 deposited 1000\n"
        );
        assert_eq!(balance(&a, "nobody", Tz::Fixed(0)), None);
    }
}
