//! `sbatch`: submit a batch script, as Slurm's sbatch does.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chorus_cli::{Ctl, current_user, print, run_main, short_hostname, status_message};
use chorus_core::job::{JobSpec, JobState, MemRequest};
use chorus_core::slurm::sbatch::{self, Export, OpenMode, SbatchError, SbatchOptions};
use chorus_proto::client as pb;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    run_main("sbatch", submit(args))
}

fn fail(e: SbatchError) -> anyhow::Result<i32> {
    eprintln!("{}", e.slurm_message());
    Ok(e.exit_code())
}

async fn submit(args: Vec<String>) -> anyhow::Result<i32> {
    let cl = match sbatch::parse_command_line(&args) {
        Ok(cl) => cl,
        Err(e) => return fail(e),
    };
    if cl.help || cl.usage {
        print(USAGE)?;
        return Ok(0);
    }
    if cl.version {
        return chorus_cli::print_version();
    }
    let (script, default_name) = match (&cl.options.wrap, &cl.script) {
        (Some(cmd), _) => (
            format!("#!/bin/sh\n# This script was created by sbatch --wrap.\n\n{cmd}\n")
                .into_bytes(),
            "wrap".to_owned(),
        ),
        (None, Some(path)) => match std::fs::read(path) {
            Ok(b) => {
                let base = Path::new(path)
                    .file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (b, base)
            }
            Err(_) => return fail(SbatchError::UnableToOpen(path.clone())),
        },
        (None, None) => {
            let mut b = vec![];
            std::io::stdin().read_to_end(&mut b)?;
            (b, "sbatch".to_owned())
        }
    };
    if let Err(e) = sbatch::check_script(&script) {
        return fail(e);
    }
    let text = String::from_utf8_lossy(&script).into_owned();
    let directives = if cl.options.wrap.is_some() {
        SbatchOptions::default()
    } else {
        match sbatch::parse_script_directives(&default_name, &text) {
            Ok(d) => {
                for w in &d.warnings {
                    eprintln!("{w}");
                }
                d.options
            }
            Err(e) => return fail(e),
        }
    };
    let opts = sbatch::merge(cl.options, directives);
    if let Err(e) = sbatch::validate(&opts) {
        return fail(e);
    }
    let spec = match build_spec(&opts, text, cl.script_args, default_name) {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("sbatch: error: {msg}");
            return Ok(1);
        }
    };
    let mut ctl = match Ctl::connect().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sbatch: error: Batch job submission failed: {}", status_message(&e));
            return Ok(1);
        }
    };
    // One id for every retry: a submission that reached a leader that then failed is
    // answered by the next leader, not created twice.
    let request_id = rand::random::<u128>().to_be_bytes().to_vec();
    let req =
        pb::SubmitRequest { spec: Some((&spec).into()), test_only: opts.test_only, request_id };
    let reply = match chorus_cli::rpc!(ctl, submit, req.clone()) {
        Ok(r) => r,
        Err(s) => {
            eprintln!("sbatch: error: Batch job submission failed: {}", s.message());
            return Ok(1);
        }
    };
    if let Some(t) = reply.test_only {
        let nodes = if t.nodes.is_empty() { "(null)".to_owned() } else { t.nodes };
        eprintln!(
            "sbatch: Job {} to start at {} using {} processors on nodes {} in partition {}",
            t.job_id,
            chorus_cli::format::timefmt::iso(t.start_time, chorus_cli::format::timefmt::Tz::Local),
            t.cpus,
            nodes,
            t.partition
        );
        return Ok(0);
    }
    let id = reply.job_id;
    if opts.parsable {
        print(&format!("{id}\n"))?;
    } else if !opts.quiet {
        print(&format!("Submitted batch job {id}\n"))?;
    }
    if opts.wait {
        return wait(&mut ctl, id).await;
    }
    Ok(0)
}

/// `--wait`: poll until every task has ended, bring the outputs home, exit with the job's code.
async fn wait(ctl: &mut Ctl, id: u32) -> anyhow::Result<i32> {
    loop {
        let (jobs, _) = ctl.jobs(vec![id], true).await?;
        if !jobs.is_empty() && jobs.iter().all(|j| j.state.is_terminal()) {
            let mut code = 0;
            for j in &jobs {
                ctl.fetch_outputs(j.id).await?;
                let c = match j.state {
                    JobState::Completed => 0,
                    _ if j.exit.code != 0 => j.exit.code,
                    _ => 1,
                };
                code = code.max(c);
            }
            return Ok(code);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn build_spec(
    o: &SbatchOptions,
    script: String,
    args: Vec<String>,
    default_name: String,
) -> Result<JobSpec, String> {
    let (user, uid, gid) = current_user();
    let cwd =
        std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    let work_dir: PathBuf = match &o.chdir {
        Some(d) => cwd.join(d),
        None => cwd.clone(),
    };
    let host_env: Vec<(String, String)> = std::env::vars().collect();
    let export = match &o.export {
        Some(e) => sbatch::parse_export(e)
            .map_err(|e| format!("Invalid --export specification: {}", e.why))?,
        None => Export::All,
    };
    let env = match &export {
        Export::All => host_env,
        Export::None => vec![],
        Export::List { all, vars } => {
            let mut env: BTreeMap<String, String> =
                if *all { host_env.into_iter().collect() } else { BTreeMap::new() };
            for (k, v) in vars {
                match v {
                    Some(v) => {
                        env.insert(k.clone(), v.clone());
                    }
                    None => {
                        if let Ok(v) = std::env::var(k) {
                            env.insert(k.clone(), v);
                        }
                    }
                }
            }
            env.into_iter().collect()
        }
    };
    let nodes = o.nodes.unwrap_or(1).max(1);
    let gpus_per_node = match (o.gpus_per_node, o.gpus, o.gpus_per_task) {
        (Some(n), _, _) => n,
        (None, Some(total), _) => total.div_ceil(nodes),
        (None, None, Some(per_task)) => per_task * o.ntasks.unwrap_or(nodes).div_ceil(nodes),
        _ => 0,
    };
    let begin = match &o.begin {
        Some(b) => Some(parse_begin(b)?),
        None => None,
    };
    let mut other = o.other.clone();
    if let Some(c) = &o.container {
        // The bundle is opened on the node: a relative path is the submit directory's.
        other.insert("container".into(), cwd.join(c).to_string_lossy().into_owned());
    }
    Ok(JobSpec {
        name: o.job_name.clone().unwrap_or(default_name),
        user,
        uid,
        gid,
        partition: o.partition.clone(),
        script,
        script_args: args,
        work_dir: work_dir.to_string_lossy().into_owned(),
        submit_dir: cwd.to_string_lossy().into_owned(),
        submit_host: short_hostname(),
        env,
        export_env: o.export.clone(),
        ntasks: o.ntasks,
        cpus_per_task: o.cpus_per_task,
        ntasks_per_node: o.ntasks_per_node,
        nodes: o.nodes,
        mem: match (o.mem_mb, o.mem_per_cpu_mb) {
            (Some(m), _) => Some(MemRequest::PerNode(m)),
            (None, Some(m)) => Some(MemRequest::PerCpu(m)),
            _ => None,
        },
        gpus_per_node,
        gpu_type: o.gpu_type.clone(),
        time_limit: o.time,
        stdout: o.output.clone(),
        stderr: o.error.clone(),
        open_mode: o.open_mode.unwrap_or(OpenMode::Truncate),
        array: o.array.clone(),
        dependency: o.dependency.clone(),
        hold: o.hold,
        begin,
        comment: o.comment.clone(),
        requeue: o.requeue.unwrap_or(true),
        nice: o.nice.unwrap_or(0),
        other,
        replication: o.replicas,
        verify: o.verify.clone(),
        output_files: o.output_files.clone(),
    })
}

/// `--begin`: a moment as Slurm's commands take it ([`chorus_cli::parse_time_arg`]).
fn parse_begin(s: &str) -> Result<u64, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    chorus_cli::parse_time_arg(s, now).ok_or_else(|| format!("Invalid time specification {s}"))
}

const USAGE: &str = "Usage: sbatch [OPTIONS(0)...] [ : [OPTIONS(N)...]] script(0) [args(0)...]\n\
\n\
Chorus accepts Slurm's sbatch options; see docs/slurm-compat.md for what each one does here.\n";
