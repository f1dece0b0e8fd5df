//! `scontrol`: show and change jobs, nodes and partitions, as Slurm's scontrol does.

use chorus_cli::format::scontrol::{ShowOpts, show_jobs, show_nodes, show_partitions};
use chorus_cli::{Ctl, current_user, print, run_main};
use chorus_core::slurm::hostlist;
use chorus_proto::client::{self as pb, control_request::Action};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    run_main("scontrol", control(args))
}

async fn control(args: Vec<String>) -> anyhow::Result<i32> {
    let mut one_liner = false;
    let mut words = vec![];
    for a in &args {
        match a.as_str() {
            "-o" | "--oneliner" => one_liner = true,
            "-d" | "--details" | "-Q" | "--quiet" => {}
            _ => words.push(a.as_str()),
        }
    }
    let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    match lower.as_slice() {
        ["show", "hostnames", ..] | ["show", "hostname", ..] => {
            let list = words
                .get(2)
                .map(|s| s.to_string())
                .or_else(|| std::env::var("SLURM_JOB_NODELIST").ok());
            let Some(list) = list else {
                eprintln!("scontrol: error: host list is empty");
                return Ok(1);
            };
            match hostlist::expand(&list) {
                Ok(h) => print(&h.iter().map(|x| format!("{x}\n")).collect::<String>())?,
                Err(e) => {
                    eprintln!("scontrol: error: {}", e.why);
                    return Ok(1);
                }
            }
            Ok(0)
        }
        ["show", "hostlist", ..] | ["show", "hostlistsorted", ..] => {
            let Some(list) = words.get(2) else {
                eprintln!("scontrol: error: host list is empty");
                return Ok(1);
            };
            let mut hosts = vec![];
            for part in list.split(',') {
                match hostlist::expand(part) {
                    Ok(h) => hosts.extend(h),
                    Err(e) => {
                        eprintln!("scontrol: error: {}", e.why);
                        return Ok(1);
                    }
                }
            }
            if lower[1] == "hostlistsorted" {
                hosts.sort();
            }
            print(&format!("{}\n", hostlist::compress(&hosts)))?;
            Ok(0)
        }
        ["show", what, rest @ ..] => show(what, rest.first().map(|_| words[2]), one_liner).await,
        ["hold" | "uhold" | "release" | "requeue", ..] => {
            let action = match lower[0] {
                "hold" => Action::Hold,
                "uhold" => Action::Uhold,
                "release" => Action::Release,
                _ => Action::Requeue,
            };
            act(action, &words[1..], vec![]).await
        }
        ["update", ..] => update(&words[1..]).await,
        ["ping"] => {
            let conf = chorus_cli::ClientConf::load()?;
            let pings = chorus_cli::ping_all(&conf).await?;
            print(&chorus_cli::format::controllers::ping(&pings))?;
            // Like Slurm's: failure when no controller that could lead answers.
            let leader = pings.iter().any(|p| matches!(p.role.as_deref(), Some("leader")));
            Ok(if leader { 0 } else { 1 })
        }
        ["version"] | ["-v"] | ["--version"] => chorus_cli::print_version(),
        [] => {
            eprintln!(
                "scontrol: error: no command given (show, hold, release, requeue, update, ping)"
            );
            Ok(1)
        }
        [other, ..] => {
            eprintln!("invalid keyword: {other}");
            Ok(1)
        }
    }
}

async fn show(what: &str, target: Option<&str>, one_liner: bool) -> anyhow::Result<i32> {
    let mut ctl = Ctl::connect().await?;
    let (cfg, _) = ctl.cluster().await?;
    let opts = ShowOpts { one_liner, def_mem_per_cpu: cfg.def_mem_per_cpu, ..ShowOpts::default() };
    match what {
        "job" | "jobs" | "jobid" => {
            let pairs = match target.map(chorus_cli::parse_job_ids).transpose() {
                Ok(p) => p.unwrap_or_default(),
                Err(_) => {
                    eprintln!("Invalid job id specified");
                    return Ok(1);
                }
            };
            let ids: Vec<u32> = pairs.iter().map(|p| p.0).collect();
            let (jobs, now) = ctl.jobs(ids, true).await?;
            let jobs: Vec<_> = if pairs.is_empty() {
                jobs
            } else {
                let wanted = chorus_cli::resolve_ids(&pairs, &jobs);
                jobs.into_iter().filter(|j| wanted.contains(&j.id)).collect()
            };
            if jobs.is_empty() {
                if target.is_some() {
                    eprintln!("slurm_load_jobs error: Invalid job id specified");
                    return Ok(1);
                }
                print("No jobs in the system\n")?;
                return Ok(0);
            }
            print(&show_jobs(&jobs, &opts, now))?;
        }
        "node" | "nodes" => {
            let (nodes, _) = ctl.nodes().await?;
            let nodes: Vec<_> = match target {
                Some(t) => {
                    let names = hostlist::expand(t).unwrap_or_else(|_| vec![t.to_owned()]);
                    nodes.into_iter().filter(|n| names.contains(&n.name)).collect()
                }
                None => nodes,
            };
            if nodes.is_empty() && target.is_some() {
                eprintln!("Node {} not found", target.unwrap_or_default());
                return Ok(1);
            }
            print(&show_nodes(&nodes, &cfg, &opts))?;
        }
        "partition" | "partitions" => {
            let (nodes, _) = ctl.nodes().await?;
            let mut cfg = cfg.clone();
            if let Some(t) = target {
                cfg.partitions.retain(|p| p.name == t);
                if cfg.partitions.is_empty() {
                    eprintln!("Partition {t} not found");
                    return Ok(1);
                }
            }
            print(&show_partitions(&cfg, &nodes, &opts))?;
        }
        other => {
            eprintln!("invalid entity: {other} for keyword: show");
            return Ok(1);
        }
    }
    Ok(0)
}

async fn act(action: Action, targets: &[&str], fields: Vec<pb::KeyValue>) -> anyhow::Result<i32> {
    let mut pairs = vec![];
    for t in targets.iter().flat_map(|t| t.split(',')) {
        match chorus_cli::parse_job_ids(t) {
            Ok(p) => pairs.extend(p),
            Err(_) => {
                eprintln!("Invalid job id specified for job {t}");
                return Ok(1);
            }
        }
    }
    if pairs.is_empty() {
        eprintln!("scontrol: error: no job id given");
        return Ok(1);
    }
    let mut ctl = Ctl::connect().await?;
    let ids: Vec<u32> = pairs.iter().map(|p| p.0).collect();
    let (jobs, _) = ctl.jobs(ids, true).await?;
    let resolved = chorus_cli::resolve_ids(&pairs, &jobs);
    let known: Vec<u32> =
        resolved.iter().copied().filter(|id| jobs.iter().any(|j| j.id == *id)).collect();
    if known.is_empty() {
        eprintln!("Invalid job id specified for job {}", targets.join(","));
        return Ok(1);
    }
    let (_, uid, _) = current_user();
    let req = pb::ControlRequest {
        action: action as i32,
        job_ids: known,
        fields,
        uid,
        node: String::new(),
        reason: String::new(),
        user: String::new(),
    };
    match chorus_cli::rpc!(ctl, control, req.clone()) {
        Ok(_) => Ok(0),
        Err(s) => {
            eprintln!("{}", s.message());
            Ok(1)
        }
    }
}

/// `scontrol update JobId=N Field=Value ...` and `update NodeName=X State=DRAIN|RESUME Reason=...`.
async fn update(words: &[&str]) -> anyhow::Result<i32> {
    let mut job = None;
    let mut node = None;
    let mut state = None;
    let mut reason = String::new();
    let mut fields = vec![];
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            eprintln!("scontrol: error: Invalid input: {w}");
            return Ok(1);
        };
        match k.to_ascii_lowercase().as_str() {
            "jobid" | "job" => job = Some(v.to_owned()),
            "nodename" | "node" => node = Some(v.to_owned()),
            "state" if node.is_some() => state = Some(v.to_ascii_uppercase()),
            "reason" => reason = v.to_owned(),
            _ => fields.push(pb::KeyValue { key: k.to_owned(), value: v.to_owned() }),
        }
    }
    if let Some(n) = node {
        let action = match state.as_deref() {
            Some("DRAIN") => Action::Drain,
            Some("RESUME") | Some("IDLE") => Action::Resume,
            other => {
                eprintln!("scontrol: error: Invalid node state specified: {}", other.unwrap_or(""));
                return Ok(1);
            }
        };
        let mut ctl = Ctl::connect().await?;
        let (user, uid, _) = current_user();
        let req = pb::ControlRequest {
            action: action as i32,
            job_ids: vec![],
            fields: vec![],
            uid,
            node: n,
            reason,
            user,
        };
        return match chorus_cli::rpc!(ctl, control, req.clone()) {
            Ok(_) => Ok(0),
            Err(s) => {
                eprintln!("{}", s.message());
                Ok(1)
            }
        };
    }
    let Some(job) = job else {
        eprintln!("scontrol: error: No job or node name given");
        return Ok(1);
    };
    act(Action::Update, &[job.as_str()], fields).await
}
