//! `sinfo`: partitions and nodes, in Slurm 22.05's layouts.
//!
//! ```text
//!   config.partitions × nodes ──group (per partition, nodes whose shown fields agree)──▶ rows
//!        -N: one row per (node, partition)   -s: one row per partition   -R: per reason
//!   rows ──layout: default | -l | -N | -N -l | -s | -R | -o "%P %a ..."──▶ text
//! ```
//!
//! Observed layouts (`slurm-ref/observed/sinfo.txt`, `scontrol.txt`): the default
//! `%#P %.5a %.10l %.6D %.6t %N`, `-s` `%#P %.5a %.10l %.16F %N`, `-R` `%20E %9u %19H %N`,
//! `-N -l` (a date line, then `%#N %.6D %.#P %.11T %4c %.8z %.6m %.8d %.6w %.8f %20E`).
//! `%#X` is as wide as the widest of its header and values (the node list at least one wider
//! than its header): that gives the observed `PARTITION` and `NODELIST ` widths.
//! Within a partition, rows go by decreasing node state (down, draining, drained, mixed,
//! allocated, idle), as observed (`drng` before `alloc`).
//!
//! Assumed, not observed: the `-l` layout
//! (`%#P %.5a %.10l %.10s %.4r %.8h %.10g %.6D %.11T %N`), the `-N` layout
//! (`%#N %.6D %.#P %6t`), and the headers of fields the captures do not show. Chorus knows
//! no free memory or CPU load (`N/A`); `%U` (the uid behind a reason) is `Unknown`, `%u`/`%H`
//! are who set the reason and when.

use std::collections::BTreeMap;

use chorus_core::node::{Node, NodeState, SlurmNodeState};
use chorus_core::slurm::time::format_duration;
use chorus_core::state::{ClusterConfig, Partition};

use super::scontrol::node_gres;
use super::timefmt::ctime;
use super::{Piece, Tz, fit, natural_cmp, node_list, parse_format};

/// `sinfo`'s default layout.
pub const DEFAULT_FORMAT: &str = "%#P %.5a %.10l %.6D %.6t %N";
/// `sinfo -l`.
pub const LONG_FORMAT: &str = "%#P %.5a %.10l %.10s %.4r %.8h %.10g %.6D %.11T %N";
/// `sinfo -N`.
pub const NODE_FORMAT: &str = "%#N %.6D %.#P %6t";
/// `sinfo -N -l`.
pub const NODE_LONG_FORMAT: &str = "%#N %.6D %.#P %.11T %4c %.8z %.6m %.8d %.6w %.8f %20E";
/// `sinfo -s`.
pub const SUMMARIZE_FORMAT: &str = "%#P %.5a %.10l %.16F %N";
/// `sinfo -R`.
pub const REASONS_FORMAT: &str = "%20E %9u %19H %N";

/// What the command line asked of the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinfoOpts {
    /// `false` with `-h`.
    pub header: bool,
    /// `-l`.
    pub long: bool,
    /// `-N`.
    pub node_oriented: bool,
    /// `-s`.
    pub summarize: bool,
    /// `-R`.
    pub reasons: bool,
    /// `-o`.
    pub format: Option<String>,
    pub tz: Tz,
}

impl Default for SinfoOpts {
    fn default() -> Self {
        Self {
            header: true,
            long: false,
            node_oriented: false,
            summarize: false,
            reasons: false,
            format: None,
            tz: Tz::Local,
        }
    }
}

/// One output line: some nodes of one partition (no partition for `-R`).
struct Group<'a> {
    part: Option<&'a Partition>,
    default: bool,
    nodes: Vec<&'a Node>,
}

/// The listing `sinfo` prints, every line ending in `\n`.
pub fn sinfo(config: &ClusterConfig, nodes: &[Node], opts: &SinfoOpts, now: u64) -> String {
    let fmt = match &opts.format {
        Some(f) => f.as_str(),
        None if opts.reasons => REASONS_FORMAT,
        None if opts.summarize => SUMMARIZE_FORMAT,
        None if opts.node_oriented && opts.long => NODE_LONG_FORMAT,
        None if opts.node_oriented => NODE_FORMAT,
        None if opts.long => LONG_FORMAT,
        None => DEFAULT_FORMAT,
    };
    let pieces = parse_format(fmt);
    let mut sorted: Vec<&Node> = nodes.iter().collect();
    sorted.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    let default_name = config.default_partition().map(|p| p.name.as_str());
    let in_part = |p: &Partition| -> Vec<&Node> {
        sorted.iter().copied().filter(|n| p.has_node(&n.name)).collect()
    };

    let mut groups: Vec<Group<'_>> = Vec::new();
    if opts.reasons {
        let mut by_reason: BTreeMap<String, Vec<&Node>> = BTreeMap::new();
        for n in sorted.iter().filter(|n| n.state != NodeState::Up) {
            by_reason.entry(n.reason.clone().unwrap_or_default()).or_default().push(n);
        }
        let mut v: Vec<Vec<&Node>> = by_reason.into_values().collect();
        v.sort_by(|a, b| natural_cmp(&a[0].name, &b[0].name));
        groups.extend(v.into_iter().map(|nodes| Group { part: None, default: false, nodes }));
    } else if opts.node_oriented {
        for n in &sorted {
            for p in config.partitions.iter().filter(|p| p.has_node(&n.name)) {
                let default = Some(p.name.as_str()) == default_name;
                groups.push(Group { part: Some(p), default, nodes: vec![n] });
            }
        }
    } else {
        for p in &config.partitions {
            let default = Some(p.name.as_str()) == default_name;
            let members = in_part(p);
            if opts.summarize || members.is_empty() {
                groups.push(Group { part: Some(p), default, nodes: members });
                continue;
            }
            let mut split: Vec<(String, Vec<&Node>)> = Vec::new();
            for n in members {
                let one = Group { part: Some(p), default, nodes: vec![n] };
                let key = group_key(&pieces, &one, opts.tz);
                match split.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => v.push(n),
                    None => split.push((key, vec![n])),
                }
            }
            split.sort_by(|(_, a), (_, b)| {
                state_rank(b[0].slurm_state())
                    .cmp(&state_rank(a[0].slurm_state()))
                    .then(natural_cmp(&a[0].name, &b[0].name))
            });
            groups.extend(split.into_iter().map(|(_, nodes)| Group {
                part: Some(p),
                default,
                nodes,
            }));
        }
    }

    // Widths of `%#X` fields: the widest of header and values.
    let widths: Vec<Option<usize>> = pieces
        .iter()
        .map(|p| match p {
            Piece::Field { letter, auto: true, .. } => {
                let mut w = header(*letter).len();
                for g in &groups {
                    w = w.max(value(*letter, g, opts.tz).chars().count());
                }
                if *letter == 'N' {
                    // Observed: `NODELIST ` is one wider than its header over `node1`.
                    w = w.max(header('N').len() + 1);
                }
                Some(w)
            }
            Piece::Field { width, .. } | Piece::Named { width, .. } => *width,
            Piece::Text(_) => None,
        })
        .collect();

    let mut out = String::new();
    if opts.header {
        if opts.long && opts.format.is_none() {
            out.push_str(&ctime(now, opts.tz));
            out.push('\n');
        }
        out.push_str(&render(&pieces, &widths, |c| header(c).to_owned()));
    }
    for g in &groups {
        out.push_str(&render(&pieces, &widths, |c| value(c, g, opts.tz)));
    }
    out
}

fn render(
    pieces: &[Piece],
    widths: &[Option<usize>],
    mut cell: impl FnMut(char) -> String,
) -> String {
    let mut line = String::new();
    for (p, w) in pieces.iter().zip(widths) {
        match p {
            Piece::Text(t) => line.push_str(t),
            Piece::Field { letter, right, .. } => {
                let v = cell(*letter);
                match w {
                    Some(w) => line.push_str(&fit(&v, *w, *right)),
                    None => line.push_str(&v),
                }
            }
            // sinfo has no Chorus fields: a named one is blank, as an unknown letter is.
            Piece::Named { right, .. } => {
                if let Some(w) = w {
                    line.push_str(&fit("", *w, *right));
                }
            }
        }
    }
    line.push('\n');
    line
}

/// Fields summed or listed over a row's nodes; the others decide which nodes share a row.
const AGGREGATES: &str = "NnoDCFA";

fn group_key(pieces: &[Piece], g: &Group<'_>, tz: Tz) -> String {
    let mut key = String::new();
    for p in pieces {
        if let Piece::Field { letter, .. } = p
            && !AGGREGATES.contains(*letter)
        {
            key.push_str(&value(*letter, g, tz));
            key.push('\u{1f}');
        }
    }
    key
}

/// Decreasing order of rows within a partition (Slurm sorts by state, flags weighing most).
fn state_rank(s: SlurmNodeState) -> u32 {
    match s {
        SlurmNodeState::Down => 5,
        SlurmNodeState::Draining => 4,
        SlurmNodeState::Drained => 3,
        SlurmNodeState::Mixed => 2,
        SlurmNodeState::Allocated => 1,
        SlurmNodeState::Idle => 0,
    }
}

fn header(letter: char) -> &'static str {
    match letter {
        'a' => "AVAIL",
        'A' => "NODES(A/I)",
        'b' => "ACTIVE_FEATURES",
        'c' => "CPUS",
        'C' => "CPUS(A/I/O/T)",
        'd' => "TMP_DISK",
        'D' => "NODES",
        'e' => "FREE_MEM",
        'E' => "REASON",
        'f' => "AVAIL_FEATURES",
        'F' => "NODES(A/I/O/T)",
        'g' => "GROUPS",
        'G' => "GRES",
        'h' => "OVERSUBS",
        'H' => "TIMESTAMP",
        'l' => "TIMELIMIT",
        'L' => "DEFAULTTIME",
        'm' => "MEMORY",
        'n' => "HOSTNAMES",
        'N' => "NODELIST",
        'o' => "NODE_ADDR",
        'O' => "CPU_LOAD",
        'P' | 'R' => "PARTITION",
        'r' => "ROOT",
        's' => "JOB_SIZE",
        't' | 'T' => "STATE",
        'u' | 'U' => "USER",
        'v' => "VERSION",
        'w' => "WEIGHT",
        'X' => "SOCKETS",
        'Y' => "CORES",
        'z' => "S:C:T",
        'Z' => "THREADS",
        _ => "",
    }
}

/// `2`, or `2+` when the row's nodes differ (the smallest, then `+`).
fn min_plus(values: impl Iterator<Item = u64>) -> String {
    let v: Vec<u64> = values.collect();
    match (v.iter().min(), v.iter().max()) {
        (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
        (Some(lo), Some(_)) => format!("{lo}+"),
        _ => "0".into(),
    }
}

fn value(letter: char, g: &Group<'_>, tz: Tz) -> String {
    let first = g.nodes.first();
    let state = first.map(|n| n.slurm_state());
    let other = |n: &Node| {
        matches!(
            n.slurm_state(),
            SlurmNodeState::Down | SlurmNodeState::Drained | SlurmNodeState::Draining
        )
    };
    match letter {
        'a' => g.part.map_or("n/a", |p| if p.up { "up" } else { "down" }).into(),
        'A' | 'F' => {
            let (mut a, mut i, mut o) = (0, 0, 0);
            for n in &g.nodes {
                match n.slurm_state() {
                    _ if other(n) => o += 1,
                    SlurmNodeState::Idle => i += 1,
                    _ => a += 1,
                }
            }
            if letter == 'A' {
                format!("{a}/{i}")
            } else {
                format!("{a}/{i}/{o}/{}", g.nodes.len())
            }
        }
        'b' | 'f' => "(null)".into(),
        'c' => min_plus(g.nodes.iter().map(|n| u64::from(n.resources.cpus))),
        'C' => {
            let (mut a, mut i, mut o, mut t) = (0, 0, 0, 0);
            for n in &g.nodes {
                let cpus = n.resources.cpus;
                t += cpus;
                a += n.alloc_cpus.min(cpus);
                if other(n) {
                    o += cpus - n.alloc_cpus.min(cpus);
                } else {
                    i += cpus - n.alloc_cpus.min(cpus);
                }
            }
            format!("{a}/{i}/{o}/{t}")
        }
        'd' => "0".into(),
        'D' => g.nodes.len().to_string(),
        'e' | 'O' => "N/A".into(),
        'E' => first.and_then(|n| n.reason.clone()).unwrap_or_else(|| "none".into()),
        'g' => "all".into(),
        'G' => first.map_or_else(|| "(null)".into(), |n| node_gres(n)),
        'h' => "NO".into(),
        'H' => first
            .and_then(|n| n.reason_set_by.as_ref())
            .map_or_else(|| "Unknown".into(), |(_, t)| super::timefmt::iso(*t, tz)),
        'u' => first
            .and_then(|n| n.reason_set_by.as_ref())
            .map_or_else(|| "Unknown".into(), |(user, _)| user.clone()),
        'U' => "Unknown".into(),
        'l' => g.part.map_or_else(
            || "n/a".into(),
            |p| {
                p.max_time_min
                    .map_or_else(|| "infinite".into(), |m| format_duration(u64::from(m) * 60))
            },
        ),
        'L' => g.part.map_or_else(
            || "n/a".into(),
            |p| {
                p.default_time_min
                    .or(p.max_time_min)
                    .map_or_else(|| "infinite".into(), |m| format_duration(u64::from(m) * 60))
            },
        ),
        'm' => min_plus(g.nodes.iter().map(|n| n.resources.mem_mb)),
        'n' => node_list(&g.nodes.iter().map(|n| n.hostname.as_str()).collect::<Vec<_>>()),
        'N' => node_list(&g.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>()),
        'o' => node_list(
            &g.nodes
                .iter()
                .map(|n| n.addr.rsplit_once(':').map_or(n.addr.as_str(), |(h, _)| h))
                .collect::<Vec<_>>(),
        ),
        'P' => g.part.map_or_else(String::new, |p| {
            if g.default { format!("{}*", p.name) } else { p.name.clone() }
        }),
        'R' => g.part.map_or_else(String::new, |p| p.name.clone()),
        'r' => "no".into(),
        's' => "1-infinite".into(),
        't' => state.map_or("n/a", SlurmNodeState::short_name).into(),
        'T' => state.map_or("n/a", SlurmNodeState::name).into(),
        'v' => first.map_or_else(|| "N/A".into(), |n| n.version.clone()),
        'w' => "1".into(),
        'X' => first.map_or_else(|| "0".into(), |n| n.resources.cpus.to_string()),
        'Y' | 'Z' => "1".into(),
        'z' => first.map_or_else(|| "0:0:0".into(), |n| format!("{}:1:1", n.resources.cpus)),
        _ => String::new(),
    }
}
