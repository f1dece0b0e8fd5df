//! The controller group: `scontrol ping` and `chorus controller list`.
//!
//! Slurm prints `Slurmctld(primary) at HOST is UP` for its one controller, and `backup`
//! lines for the others. A single Chorus controller prints exactly that line. A Raft group
//! has no fixed primary, so each line names the role the controller itself reports
//! (`leader`, `follower`, `candidate`), keeping Slurm's `at ADDR is UP|DOWN` shape that
//! health checks grep for.

use chorus_proto::client as pb;

/// What `scontrol ping` learned of one controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    pub addr: String,
    /// The role it reports; `None` when it did not answer.
    pub role: Option<String>,
}

/// `scontrol ping`'s lines, one per controller, in configuration order.
pub fn ping(pings: &[Ping]) -> String {
    let mut out = String::new();
    for p in pings {
        let (role, up) = match (&p.role, pings.len()) {
            (Some(_), 1) => ("primary", "UP"),
            (None, 1) => ("primary", "DOWN"),
            (Some(r), _) => (r.as_str(), "UP"),
            (None, _) => ("unknown", "DOWN"),
        };
        out.push_str(&format!("Slurmctld({role}) at {} is {up}\n", p.addr));
    }
    out
}

/// `chorus controller list|add|remove`: the group as the answering controller sees it.
pub fn controllers(r: &pb::ControllersReply) -> String {
    let mut out = format!(
        "{:<4} {:<10} {:<22} {:<22} {:>10}\n",
        "ID", "ROLE", "CLIENT_ADDR", "PEER_ADDR", "MATCHED"
    );
    for c in &r.controllers {
        let matched = if r.self_id == r.leader_id { c.matched.to_string() } else { "-".into() };
        out.push_str(&format!(
            "{:<4} {:<10} {:<22} {:<22} {:>10}\n",
            c.id, c.role, c.client_addr, c.peer_addr, matched
        ));
    }
    out.push_str(&format!(
        "term {}, commit {}, applied {} (as seen by controller {})\n",
        r.term, r.commit, r.applied, r.self_id
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(addr: &str, role: Option<&str>) -> Ping {
        Ping { addr: addr.into(), role: role.map(str::to_owned) }
    }

    #[test]
    fn a_single_controller_pings_as_slurm_primary() {
        assert_eq!(ping(&[p("h:6817", Some("leader"))]), "Slurmctld(primary) at h:6817 is UP\n");
        assert_eq!(ping(&[p("h:6817", None)]), "Slurmctld(primary) at h:6817 is DOWN\n");
    }

    #[test]
    fn a_group_names_each_role() {
        let out = ping(&[p("a:1", Some("follower")), p("b:1", Some("leader")), p("c:1", None)]);
        assert_eq!(
            out,
            "Slurmctld(follower) at a:1 is UP\nSlurmctld(leader) at b:1 is UP\nSlurmctld(unknown) at c:1 is DOWN\n"
        );
    }
}
