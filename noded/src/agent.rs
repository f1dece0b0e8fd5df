//! The agent's connection to the controller: register, heartbeat, follow the assignment
//! stream and reconcile it against what runs here, report every job that ends.
//!
//! Reconciliation is keyed by `(job, attempt)`: a launch seen again (re-sent after a
//! reconnect or a failover) never starts a second process. The agent is given every
//! controller of the group and follows the leader ([`Controllers`]): when the leader changes,
//! its assignment stream ends, and the agent registers with the new leader as a reconnect
//! (same session), which keeps every job it was given.
//!
//! Health checks (health.rs) run once before the first registration, whose request carries
//! the result, and then every interval in a task of their own that sends each result.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chorus_core::attest;
use chorus_core::job::{ExitStatus, GpuUsage, Usage};
use chorus_core::launch::LaunchSpec;
use chorus_core::node::Health;
use chorus_proto::leader::Controllers;
use chorus_proto::node::{self as pn, node_service_client::NodeServiceClient};
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::health::{Checker, Finding, HealthConfig};
use crate::inventory::GpuInventory;
use crate::runner::{self, Finished, ProcessGroup, RunnerConfig};

pub struct AgentConfig {
    pub name: String,
    /// `host:port` of every controller of the group.
    pub controllers: Vec<String>,
    pub cpus: u32,
    pub mem_mb: u64,
    /// Also what the runner samples for accounting (`runner.gpu_accounting`).
    pub gpus: Arc<dyn GpuInventory>,
    pub heartbeat: Duration,
    pub runner: RunnerConfig,
    pub health: HealthConfig,
    /// The node's ed25519 secret seed (identity.rs).
    pub key: [u8; 32],
    /// The cluster CA and the node's certificate (join.rs): every call is mutual TLS.
    pub tls: tonic::transport::ClientTlsConfig,
    /// How the agent acts on its assignments: [`Honest`] in `noded`.
    pub conduct: Arc<dyn Conduct>,
}

/// How an agent acts on what it is given. `noded` is [`Honest`]; the test adversaries of
/// `integration/` (`src/bin/adversary.rs`) lie through this seam, so that the cluster is
/// tested against nodes that run, sign and report exactly as real ones do, except where they
/// cheat. It gives an operator nothing it could not do by changing its own node's code.
pub trait Conduct: Send + Sync {
    /// Whether to run `launch` at all; if not, [`Conduct::fabricate`] says how it ended.
    fn runs(&self, _launch: &LaunchSpec) -> bool {
        true
    }
    /// The end of a launch not run: success, with empty output files.
    fn fabricate(&self, launch: &LaunchSpec) -> Finished {
        let output = |path: &str| runner::Output { path: path.into(), data: vec![], append: false };
        let mut outputs = vec![output(&launch.stdout_path)];
        if launch.stderr_path != launch.stdout_path {
            outputs.push(output(&launch.stderr_path));
        }
        Finished {
            job_id: launch.job_id,
            attempt: launch.attempt,
            replica: launch.replica,
            exit: ExitStatus::default(),
            cause: chorus_core::fsm::EndCause::Exited,
            usage: Usage::default(),
            outputs,
        }
    }
    /// What is reported of a replica that ended here (before it is signed).
    fn report(&self, _launch: &LaunchSpec, _finished: &mut Finished) {}
    /// Reports to send besides, for replicas this node was not given.
    fn also_report(&self, _finished: &Finished) -> Vec<Finished> {
        vec![]
    }
}

/// Runs what it is given and reports what happened.
#[derive(Debug, Clone, Copy, Default)]
pub struct Honest;

impl Conduct for Honest {}

type Key = (u32, u32);

struct Running {
    stop: watch::Sender<bool>,
    pg: ProcessGroup,
}

#[derive(Default)]
struct Jobs {
    running: HashMap<Key, Running>,
    /// Ended here, report not yet acknowledged or still listed by the controller.
    finished: HashSet<Key>,
}

/// Local wall-clock time as Slurm prints it (`2026-11-22T21:35:18`).
pub fn local_time(epoch: u64) -> String {
    let t = epoch as libc::time_t;
    // SAFETY: tm is plain data; localtime_r writes only into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to locals.
    unsafe { libc::localtime_r(&t, &mut tm) };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// How long one call keeps looking for a leader before the agent logs and starts over.
const PATIENCE: Duration = Duration::from_secs(30);

/// Calls `method` on the leader's node API with a clone of `req` for every attempt.
macro_rules! node_rpc {
    ($ctl:expr, $patience:expr, $method:ident, $req:expr) => {{
        let req = $req;
        let max = $ctl.max_message();
        $ctl.call($patience, |ch| {
            let req = req.clone();
            let mut c = NodeServiceClient::new(ch)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max);
            async move { c.$method(req).await }
        })
        .await
    }};
}

/// Runs the agent until `shutdown` resolves. Jobs keep running across controller outages.
pub async fn run(cfg: AgentConfig, shutdown: impl std::future::Future<Output = ()>) {
    let cfg = Arc::new(cfg);
    let jobs = Arc::new(Mutex::new(Jobs::default()));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Finished>();
    let kill_wait = Arc::new(Mutex::new(Duration::from_secs(30)));
    let gpus = cfg.gpus.gpus();
    // Lets the controller tell this process reconnecting from a restarted agent.
    let session: u64 = rand::random();
    info!(node = %cfg.name, cpus = cfg.cpus, mem_mb = cfg.mem_mb, gpus = gpus.len(), inventory = cfg.gpus.name(), "node agent starting");

    // As slurmd does, check health before registering: a node that starts sick registers
    // drained. Every registration carries the latest result.
    let checker = Arc::new(Checker::new(cfg.health.clone(), Arc::clone(&cfg.gpus), gpus.len()));
    tokio::pin!(shutdown);
    let first = tokio::select! {
        first = checker.run() => first,
        _ = &mut shutdown => {
            info!("node agent stopping");
            return;
        }
    };
    log_health(None, &first);
    let health = Arc::new(Mutex::new(first.0));
    let health_task = (!cfg.health.interval.is_zero()).then(|| {
        tokio::spawn(health_loop(Arc::clone(&cfg), checker, Arc::clone(&health), session))
    });

    // Reports go out in their own task, retried until the controller takes them.
    let reporter = {
        let cfg = Arc::clone(&cfg);
        tokio::spawn(async move {
            let mut ctl = Controllers::new(&cfg.controllers, cfg.tls.clone());
            while let Some(f) = done_rx.recv().await {
                let mut req = report(&cfg.name, &f, &cfg.key);
                loop {
                    match node_rpc!(ctl, PATIENCE, report, req.clone()) {
                        Ok(_) => break,
                        // Refused as malformed: the same report would be refused forever.
                        // The job's end matters more than its outputs and figures.
                        Err(e) if e.code() == tonic::Code::InvalidArgument => {
                            let Some(bare) = bare_report(&req, &cfg.key) else {
                                tracing::error!(job = f.job_id, error = %e, "even a bare report was refused: giving up on it");
                                break;
                            };
                            warn!(job = f.job_id, error = %e, "report refused as malformed: sending it without outputs and usage");
                            req = bare;
                        }
                        Err(e) => {
                            warn!(job = f.job_id, error = %e, "report not delivered, retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        })
    };

    let session = async {
        let mut ctl = Controllers::new(&cfg.controllers, cfg.tls.clone());
        loop {
            // Jobs that ended here but whose report has not been taken yet are still ours:
            // listing them keeps the controller from declaring them lost.
            let running: Vec<pn::RunningJob> = {
                let j = jobs.lock().expect("lock");
                j.running
                    .keys()
                    .chain(&j.finished)
                    .map(|(job_id, attempt)| pn::RunningJob { job_id: *job_id, attempt: *attempt })
                    .collect()
            };
            let reg = pn::RegisterRequest {
                name: cfg.name.clone(),
                addr: String::new(),
                hostname: nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                cpus: cfg.cpus,
                mem_mb: cfg.mem_mb,
                gpus: gpus
                    .iter()
                    .map(|g| pn::Gpu {
                        index: g.index,
                        uuid: g.uuid.clone(),
                        model: g.model.clone(),
                        memory_mb: g.memory_mb,
                        driver: g.driver.clone(),
                    })
                    .collect(),
                boot_time: crate::inventory::boot_time(),
                version: env!("CARGO_PKG_VERSION").into(),
                os: os_string(),
                running,
                session,
                health: Some((&*health.lock().expect("lock")).into()),
                public_key: chorus_core::attest::public_key(&cfg.key).to_vec(),
                key_proof: chorus_core::attest::registration_proof(&cfg.key, &cfg.name, session)
                    .to_vec(),
            };
            match node_rpc!(ctl, PATIENCE, register, reg) {
                Ok(r) => {
                    *kill_wait.lock().expect("lock") =
                        Duration::from_secs(u64::from(r.kill_wait_secs));
                    info!(cluster = %r.cluster_name, "registered");
                }
                Err(e) => {
                    warn!(error = %e, "registration refused, retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            let req = pn::AssignmentsRequest { name: cfg.name.clone() };
            let stream = match node_rpc!(ctl, PATIENCE, assignments, req) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "assignment stream refused, retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            follow(&cfg, &jobs, &kill_wait, &done_tx, ctl.clone(), stream).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = session => {},
        _ = &mut shutdown => info!("node agent stopping"),
    }
    reporter.abort();
    if let Some(t) = health_task {
        t.abort();
    }
}

/// Checks health every interval and sends each result, retrying until the controller takes it
/// or the next check is due (which sends its own).
async fn health_loop(
    cfg: Arc<AgentConfig>,
    checker: Arc<Checker>,
    latest: Arc<Mutex<Health>>,
    session: u64,
) {
    let mut ctl = Controllers::new(&cfg.controllers, cfg.tls.clone());
    let interval = cfg.health.interval;
    loop {
        tokio::time::sleep(interval).await;
        let (health, found) = checker.run().await;
        let before = std::mem::replace(&mut *latest.lock().expect("lock"), health.clone());
        log_health(Some(&before), &(health.clone(), found));
        let req =
            pn::HealthRequest { name: cfg.name.clone(), session, health: Some((&health).into()) };
        let give_up = tokio::time::Instant::now() + interval;
        loop {
            match node_rpc!(ctl, PATIENCE, health, req.clone()) {
                Ok(r) if r.known => break,
                // Not registered (yet, or again): the registration under way carries a result
                // that may be older than this one.
                Ok(_) if tokio::time::Instant::now() + Duration::from_secs(1) < give_up => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() + Duration::from_secs(1) < give_up => {
                    warn!(error = %e, "health report not delivered, retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    warn!(error = %e, "health report not delivered; the next check sends again");
                    break;
                }
            }
        }
    }
}

/// Logs a health result when it differs from the one before (`None`: the first).
fn log_health(before: Option<&Health>, (now, found): &(Health, Vec<Finding>)) {
    if before == Some(now) {
        return;
    }
    match now {
        Health::Healthy => info!("health checks pass"),
        Health::Unhealthy(reason) => {
            let failed: Vec<String> = found
                .iter()
                .filter_map(|f| f.problem.as_ref().map(|p| format!("{:?}: {p}", f.check)))
                .collect();
            warn!(%reason, ?failed, "health check failed: the controller drains this node");
        }
    }
}

/// Follows one assignment stream until it breaks or the controller forgets this node.
async fn follow(
    cfg: &Arc<AgentConfig>,
    jobs: &Arc<Mutex<Jobs>>,
    kill_wait: &Arc<Mutex<Duration>>,
    done_tx: &mpsc::UnboundedSender<Finished>,
    mut ctl: Controllers,
    mut stream: tonic::Streaming<pn::AssignmentSet>,
) {
    let mut beat = tokio::time::interval(cfg.heartbeat);
    loop {
        tokio::select! {
            msg = stream.message() => match msg {
                Ok(Some(set)) => {
                    if set.kill_wait_secs > 0 {
                        *kill_wait.lock().expect("lock") = Duration::from_secs(u64::from(set.kill_wait_secs));
                    }
                    let kw = *kill_wait.lock().expect("lock");
                    reconcile(cfg, jobs, kw, done_tx, set);
                }
                Ok(None) => { warn!("assignment stream ended"); return; }
                Err(e) => { warn!(error = %e, "assignment stream broke"); return; }
            },
            _ = beat.tick() => {
                let req = pn::HeartbeatRequest { name: cfg.name.clone() };
                match node_rpc!(ctl, Duration::from_secs(5), heartbeat, req) {
                    Ok(r) if !r.known => { warn!("controller does not know this node: registering again"); return; }
                    Ok(_) => {}
                    Err(e) => { warn!(error = %e, "heartbeat failed"); return; }
                }
            }
        }
    }
}

fn reconcile(
    cfg: &Arc<AgentConfig>,
    jobs: &Arc<Mutex<Jobs>>,
    kill_wait: Duration,
    done_tx: &mpsc::UnboundedSender<Finished>,
    set: pn::AssignmentSet,
) {
    let mut j = jobs.lock().expect("lock");
    let mut wanted = HashSet::new();
    for a in set.assignments {
        let Some(launch) = a.launch else { continue };
        let launch: LaunchSpec = match launch.try_into() {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "unusable assignment ignored");
                continue;
            }
        };
        let key = (launch.job_id, launch.attempt);
        wanted.insert(key);
        if let Some(r) = j.running.get(&key) {
            if a.stop {
                let _ = r.stop.send(true);
            }
            continue;
        }
        if j.finished.contains(&key) || a.stop {
            continue;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let pg = ProcessGroup::default();
        j.running.insert(key, Running { stop: stop_tx, pg: pg.clone() });
        let (rcfg, jobs2, done) = (cfg.runner.clone(), Arc::clone(jobs), done_tx.clone());
        let conduct = Arc::clone(&cfg.conduct);
        tokio::spawn(async move {
            let mut fin = if conduct.runs(&launch) {
                runner::run(Arc::new(rcfg), launch.clone(), kill_wait, pg, stop_rx).await
            } else {
                conduct.fabricate(&launch)
            };
            conduct.report(&launch, &mut fin);
            let more = conduct.also_report(&fin);
            let mut j = jobs2.lock().expect("lock");
            j.running.remove(&key);
            j.finished.insert(key);
            drop(j);
            for f in std::iter::once(fin).chain(more) {
                let _ = done.send(f);
            }
        });
    }
    // The controller no longer wants these: stop them (cancelled, node failed over, ...).
    for (key, r) in &j.running {
        if !wanted.contains(key) {
            let _ = r.stop.send(true);
        }
    }
    j.finished.retain(|k| wanted.contains(k));
    for s in set.signals {
        let sig = Signal::try_from(s.signal);
        for (key, r) in &j.running {
            if key.0 == s.job_id
                && let Ok(sig) = sig
            {
                r.pg.signal(sig);
            }
        }
    }
}

/// The report of a replica that ended here, signed with the node's key.
fn report(node: &str, f: &Finished, key: &[u8; 32]) -> pn::JobReport {
    use chorus_core::fsm::EndCause;
    use pn::job_report::Cause;
    let cause = match f.cause {
        EndCause::Exited => Cause::Exited,
        EndCause::TimeLimit => Cause::TimeLimit,
        EndCause::OutOfMemory => Cause::OutOfMemory,
        EndCause::Stopped => Cause::Stopped,
        EndCause::LaunchFailed => Cause::LaunchFailed,
    };
    let r = pn::JobReport {
        node: node.to_owned(),
        job_id: f.job_id,
        attempt: f.attempt,
        replica: f.replica,
        exit_code: f.exit.code,
        signal: f.exit.signal,
        cause: cause as i32,
        max_rss_kb: f.usage.max_rss_kb,
        user_cpu_ms: f.usage.user_cpu_ms,
        sys_cpu_ms: f.usage.sys_cpu_ms,
        gpu: f.usage.gpu.as_ref().map(Into::into),
        outputs: f
            .outputs
            .iter()
            .map(|o| pn::OutputData {
                path: o.path.clone(),
                data: o.data.clone(),
                append: o.append,
            })
            .collect(),
        ..Default::default()
    };
    signed(r, key)
}

/// `r` with its result digest (over exactly the files it carries) and the node's signature
/// over the attestation the controller will rebuild from it.
fn signed(mut r: pn::JobReport, key: &[u8; 32]) -> pn::JobReport {
    let exit = ExitStatus { code: r.exit_code, signal: r.signal };
    let files: Vec<(&str, &[u8])> =
        r.outputs.iter().map(|o| (o.path.as_str(), o.data.as_slice())).collect();
    let digest = attest::result_digest(exit, &files);
    let usage = Usage {
        max_rss_kb: r.max_rss_kb,
        user_cpu_ms: r.user_cpu_ms,
        sys_cpu_ms: r.sys_cpu_ms,
        gpu: r.gpu.map(|g| GpuUsage {
            mem_max_mb: g.mem_max_mb,
            mem_ave_mb: g.mem_ave_mb,
            util_max_pct: g.util_max_pct,
            util_ave_pct: g.util_ave_pct,
        }),
    };
    let attestation = attest::Attestation {
        job: r.job_id,
        replica: r.replica,
        node: r.node.clone(),
        digest,
        exit,
        usage,
    };
    r.digest = digest.to_vec();
    r.signature = attestation.sign(key).to_vec();
    r
}

/// `r` with only how the job ended: no outputs, no usage, signed again. `None` when `r` is
/// already bare.
fn bare_report(r: &pn::JobReport, key: &[u8; 32]) -> Option<pn::JobReport> {
    let bare = pn::JobReport {
        node: r.node.clone(),
        job_id: r.job_id,
        attempt: r.attempt,
        replica: r.replica,
        exit_code: r.exit_code,
        signal: r.signal,
        cause: r.cause,
        ..Default::default()
    };
    let bare = signed(bare, key);
    (bare != *r).then_some(bare)
}

fn os_string() -> String {
    nix::sys::utsname::uname()
        .map(|u| format!("{} {}", u.sysname().to_string_lossy(), u.release().to_string_lossy()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_refused_as_malformed_goes_again_bare_then_not_at_all() {
        let full = pn::JobReport {
            node: "n1".into(),
            job_id: 5,
            attempt: 1,
            exit_code: 3,
            cause: pn::job_report::Cause::Exited as i32,
            max_rss_kb: 1 << 40,
            outputs: vec![pn::OutputData { path: "relative".into(), ..Default::default() }],
            ..Default::default()
        };
        let key = [7; 32];
        let bare = bare_report(&full, &key).expect("a full report has a bare form");
        assert_eq!((bare.job_id, bare.attempt, bare.exit_code), (5, 1, 3), "how it ended stays");
        assert!(bare.outputs.is_empty() && bare.max_rss_kb == 0 && bare.gpu.is_none());
        assert_eq!(bare_report(&bare, &key), None, "a bare report refused is given up on");
    }

    #[test]
    fn a_report_carries_the_digest_of_its_files_and_the_nodes_signature() {
        let key = [9; 32];
        let f = Finished {
            job_id: 4,
            attempt: 0,
            replica: 1,
            exit: ExitStatus { code: 0, signal: 0 },
            cause: chorus_core::fsm::EndCause::Exited,
            usage: Usage { max_rss_kb: 100, ..Usage::default() },
            outputs: vec![crate::runner::Output {
                path: "/w/slurm-4.out".into(),
                data: b"hello\n".to_vec(),
                append: false,
            }],
        };
        let wire = report("n1", &f, &key);
        // What the controller rebuilds from the wire: it must verify with the node's key.
        let (core, _): chorus_proto::ReportWithOutputs = wire.try_into().expect("believed");
        assert_eq!(core.replica, 1);
        let public = attest::public_key(&key);
        assert_eq!(core.attestation().verify(&public, &core.signature), Ok(()));
        assert!(core.attestation().verify(&attest::public_key(&[1; 32]), &core.signature).is_err());
    }
}
