//! `TryFrom` conversions: wire → domain, naming the field that was refused.

use chorus_core::attest::result_digest;
use chorus_core::fsm::{EndCause, JobReport, NodeRegistration};
use chorus_core::identity::{Role, User, check_name};
use chorus_core::job::{ExitStatus, GpuUsage, JobSpec, MemRequest, OutputFile, Usage};
use chorus_core::launch::LaunchSpec;
use chorus_core::node::{GpuInfo, Health, NodeResources, check_health_problem};
use chorus_core::slurm::array::parse_array_spec;
use chorus_core::slurm::dependency::parse_dependency;
use chorus_core::slurm::sbatch::{OpenMode, parse_output_files, parse_replicas};
use chorus_core::slurm::time::{format_time_limit, parse_time_limit};
use chorus_core::state::Network;

use crate::{client as pb, node as pn};

/// A message field that does not hold what it must.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct WireError {
    pub field: &'static str,
    pub why: String,
}

fn bad(field: &'static str, why: impl ToString) -> WireError {
    WireError { field, why: why.to_string() }
}

fn kv(v: Vec<pb::KeyValue>) -> Vec<(String, String)> {
    v.into_iter().map(|p| (p.key, p.value)).collect()
}

fn pkv<'a>(v: impl IntoIterator<Item = (&'a String, &'a String)>) -> Vec<pb::KeyValue> {
    v.into_iter().map(|(k, v)| pb::KeyValue { key: k.clone(), value: v.clone() }).collect()
}

const MAX_SCRIPT_BYTES: usize = 4 * 1024 * 1024;

impl TryFrom<pb::JobSpec> for JobSpec {
    type Error = WireError;

    fn try_from(p: pb::JobSpec) -> Result<Self, WireError> {
        if p.script.is_empty() {
            return Err(bad("script", "Batch script is empty!"));
        }
        if p.script.len() > MAX_SCRIPT_BYTES {
            return Err(bad("script", "Batch script is too large"));
        }
        if !p.work_dir.starts_with('/') {
            return Err(bad("work_dir", "must be an absolute path"));
        }
        if p.name.contains('\n') {
            return Err(bad("name", "must not contain a newline"));
        }
        let positive = |field, v: Option<u32>| match v {
            Some(0) => Err(bad(field, "must be at least 1")),
            v => Ok(v),
        };
        let mem = match (p.mem_per_node_mb, p.mem_per_cpu_mb) {
            (Some(_), Some(_)) => {
                return Err(bad("mem", "--mem and --mem-per-cpu are mutually exclusive"));
            }
            (Some(m), None) => Some(MemRequest::PerNode(m)),
            (None, Some(m)) => Some(MemRequest::PerCpu(m)),
            (None, None) => None,
        };
        Ok(JobSpec {
            name: p.name,
            user: p.user,
            uid: p.uid,
            gid: p.gid,
            partition: p.partition,
            script: p.script,
            script_args: p.script_args,
            work_dir: p.work_dir,
            submit_dir: p.submit_dir,
            submit_host: p.submit_host,
            env: kv(p.env),
            export_env: p.export_env,
            ntasks: positive("ntasks", p.ntasks)?,
            cpus_per_task: positive("cpus_per_task", p.cpus_per_task)?,
            ntasks_per_node: positive("ntasks_per_node", p.ntasks_per_node)?,
            nodes: positive("nodes", p.nodes)?,
            mem,
            gpus_per_node: p.gpus_per_node,
            gpu_type: p.gpu_type,
            time_limit: p
                .time_limit
                .map(|t| parse_time_limit(&t))
                .transpose()
                .map_err(|e| bad("time_limit", e))?,
            stdout: p.stdout,
            stderr: p.stderr,
            open_mode: if p.open_append { OpenMode::Append } else { OpenMode::Truncate },
            array: p
                .array
                .map(|a| parse_array_spec(&a))
                .transpose()
                .map_err(|e| bad("array", e))?,
            dependency: p
                .dependency
                .map(|d| parse_dependency(&d))
                .transpose()
                .map_err(|e| bad("dependency", e))?,
            hold: p.hold,
            begin: p.begin,
            comment: p.comment,
            requeue: p.requeue,
            nice: p.nice,
            other: kv(p.other).into_iter().collect(),
            replication: p
                .replicas
                .map(|r| parse_replicas(&r))
                .transpose()
                .map_err(|e| bad("replicas", e))?,
            verify: p.verify.map(|v| v.parse()).transpose().map_err(|e| bad("verify", e))?,
            output_files: output_globs(p.output_files)?,
        })
    }
}

impl From<&JobSpec> for pb::JobSpec {
    fn from(s: &JobSpec) -> Self {
        pb::JobSpec {
            name: s.name.clone(),
            user: s.user.clone(),
            uid: s.uid,
            gid: s.gid,
            partition: s.partition.clone(),
            script: s.script.clone(),
            script_args: s.script_args.clone(),
            work_dir: s.work_dir.clone(),
            submit_dir: s.submit_dir.clone(),
            submit_host: s.submit_host.clone(),
            env: pkv(s.env.iter().map(|(k, v)| (k, v))),
            export_env: s.export_env.clone(),
            ntasks: s.ntasks,
            cpus_per_task: s.cpus_per_task,
            ntasks_per_node: s.ntasks_per_node,
            nodes: s.nodes,
            mem_per_node_mb: match s.mem {
                Some(MemRequest::PerNode(m)) => Some(m),
                _ => None,
            },
            mem_per_cpu_mb: match s.mem {
                Some(MemRequest::PerCpu(m)) => Some(m),
                _ => None,
            },
            gpus_per_node: s.gpus_per_node,
            gpu_type: s.gpu_type.clone(),
            time_limit: s.time_limit.map(|t| format_time_limit(&t, true)),
            stdout: s.stdout.clone(),
            stderr: s.stderr.clone(),
            open_append: s.open_mode == OpenMode::Append,
            array: s.array.as_ref().map(|a| a.to_string()),
            dependency: s.dependency.as_ref().map(|d| d.to_string()),
            hold: s.hold,
            begin: s.begin,
            comment: s.comment.clone(),
            requeue: s.requeue,
            nice: s.nice,
            other: pkv(&s.other),
            replicas: s.replication.map(|r| r.to_string()),
            verify: s.verify.as_ref().map(|v| v.to_string()),
            output_files: s.output_files.clone(),
        }
    }
}

/// The most `--output-files` patterns a job may declare.
pub const MAX_OUTPUT_GLOBS: usize = 32;

/// `--output-files` patterns as the CLI (or the controller) sent them: checked again, each
/// relative and inside the working directory.
fn output_globs(globs: Vec<String>) -> Result<Vec<String>, WireError> {
    if globs.len() > MAX_OUTPUT_GLOBS {
        return Err(bad("output_files", format!("at most {MAX_OUTPUT_GLOBS} patterns")));
    }
    for g in &globs {
        parse_output_files(g).map_err(|e| bad("output_files", e))?;
    }
    Ok(globs)
}

const MAX_NAME: usize = 255;

/// GPUs one node may declare.
const MAX_GPUS: usize = 64;

fn node_name(field: &'static str, n: &str) -> Result<(), WireError> {
    let ok = !n.is_empty()
        && n.len() <= MAX_NAME
        && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(bad(field, "node names are 1-255 of [A-Za-z0-9._-]")) }
}

impl TryFrom<pn::RegisterRequest> for NodeRegistration {
    type Error = WireError;

    fn try_from(p: pn::RegisterRequest) -> Result<Self, WireError> {
        node_name("name", &p.name)?;
        if p.cpus == 0 || p.cpus > 1 << 16 {
            return Err(bad("cpus", "must be between 1 and 65536"));
        }
        if p.mem_mb == 0 {
            return Err(bad("mem_mb", "must be positive"));
        }
        if p.gpus.len() > MAX_GPUS {
            return Err(bad("gpus", format!("at most {MAX_GPUS} GPUs per node")));
        }
        let mut seen = std::collections::BTreeSet::new();
        if !p.gpus.iter().all(|g| seen.insert(g.index)) {
            return Err(bad("gpus", "GPU indices must be distinct"));
        }
        let public_key = match (p.public_key.is_empty(), p.key_proof.is_empty()) {
            (true, true) => None,
            _ => Some(
                chorus_core::attest::verify_registration(
                    &p.name,
                    p.session,
                    &p.public_key,
                    &p.key_proof,
                )
                .map_err(|e| bad("key_proof", e))?,
            ),
        };
        Ok(NodeRegistration {
            name: p.name,
            addr: p.addr,
            hostname: p.hostname,
            resources: NodeResources {
                cpus: p.cpus,
                mem_mb: p.mem_mb,
                gpus: p
                    .gpus
                    .into_iter()
                    .map(|g| GpuInfo {
                        index: g.index,
                        uuid: g.uuid,
                        model: g.model,
                        memory_mb: g.memory_mb,
                        driver: g.driver,
                    })
                    .collect(),
            },
            boot_time: p.boot_time,
            session: p.session,
            public_key,
            version: p.version,
            os: p.os,
            running: p.running.into_iter().map(|r| (r.job_id, r.attempt)).collect(),
        })
    }
}

/// A registration and the health check the agent ran before it (`None` from an agent that
/// checks nothing).
pub type CheckedRegistration = (NodeRegistration, Option<Health>);

impl TryFrom<pn::RegisterRequest> for CheckedRegistration {
    type Error = WireError;

    fn try_from(mut p: pn::RegisterRequest) -> Result<Self, WireError> {
        let health = p.health.take().map(Health::try_from).transpose()?;
        Ok((p.try_into()?, health))
    }
}

impl TryFrom<pn::Health> for Health {
    type Error = WireError;

    fn try_from(p: pn::Health) -> Result<Self, WireError> {
        if p.problem.is_empty() {
            return Ok(Health::Healthy);
        }
        check_health_problem(&p.problem).map_err(|why| bad("health.problem", why))?;
        Ok(Health::Unhealthy(p.problem))
    }
}

impl From<&Health> for pn::Health {
    fn from(h: &Health) -> Self {
        match h {
            Health::Healthy => pn::Health { problem: String::new() },
            Health::Unhealthy(p) => pn::Health { problem: p.clone() },
        }
    }
}

/// A node's health report, checked: who speaks (name and agent session) and what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub node: String,
    pub session: u64,
    pub health: Health,
}

impl TryFrom<pn::HealthRequest> for HealthReport {
    type Error = WireError;

    fn try_from(p: pn::HealthRequest) -> Result<Self, WireError> {
        node_name("name", &p.name)?;
        let health = p.health.ok_or_else(|| bad("health", "missing"))?.try_into()?;
        Ok(HealthReport { node: p.name, session: p.session, health })
    }
}

/// The most files one report may carry: stdout, stderr and every declared output.
pub const MAX_REPORTED_FILES: usize = 64;

/// A node's report, and the output bytes that travel with it (kept outside the state).
pub type ReportWithOutputs = (JobReport, Vec<Vec<u8>>);

impl TryFrom<pn::JobReport> for ReportWithOutputs {
    type Error = WireError;

    fn try_from(p: pn::JobReport) -> Result<Self, WireError> {
        node_name("node", &p.node)?;
        let cause = match pn::job_report::Cause::try_from(p.cause) {
            Ok(pn::job_report::Cause::Exited) => EndCause::Exited,
            Ok(pn::job_report::Cause::TimeLimit) => EndCause::TimeLimit,
            Ok(pn::job_report::Cause::OutOfMemory) => EndCause::OutOfMemory,
            Ok(pn::job_report::Cause::Stopped) => EndCause::Stopped,
            Ok(pn::job_report::Cause::LaunchFailed) => EndCause::LaunchFailed,
            Err(_) => return Err(bad("cause", format!("unknown value {}", p.cause))),
        };
        // Signals are 0-64, and 125 is what Slurm records for a job the OOM killer ended.
        if !(0..=255).contains(&p.exit_code) || !((0..=64).contains(&p.signal) || p.signal == 125) {
            return Err(bad("exit_code", "exit code must be 0-255 and signal 0-64 (or 125: OOM)"));
        }
        if p.outputs.len() > MAX_REPORTED_FILES {
            return Err(bad(
                "outputs",
                format!("at most {MAX_REPORTED_FILES} files: stdout, stderr and declared outputs"),
            ));
        }
        let mut outputs: Vec<OutputFile> = vec![];
        let mut data = vec![];
        for o in p.outputs {
            if !o.path.starts_with('/') {
                return Err(bad("outputs.path", "must be absolute"));
            }
            if outputs.iter().any(|f| f.path == o.path) {
                return Err(bad("outputs.path", format!("{} sent twice", o.path)));
            }
            outputs.push(OutputFile { path: o.path, len: o.data.len() as u64, append: o.append });
            data.push(o.data);
        }
        let exit = ExitStatus { code: p.exit_code, signal: p.signal };
        let digest: [u8; 32] =
            p.digest.as_slice().try_into().map_err(|_| bad("digest", "must be 32 bytes"))?;
        let files: Vec<(&str, &[u8])> =
            outputs.iter().zip(&data).map(|(f, d)| (f.path.as_str(), d.as_slice())).collect();
        // The controller believes the files, not the node's word about them.
        if result_digest(exit, &files) != digest {
            return Err(bad("digest", "does not match the exit status and outputs sent"));
        }
        if !p.signature.is_empty() && p.signature.len() != 64 {
            return Err(bad("signature", "must be 64 bytes (ed25519), or empty"));
        }
        let report = JobReport {
            job: p.job_id,
            attempt: p.attempt,
            node: p.node,
            exit,
            cause,
            replica: p.replica,
            digest,
            signature: p.signature,
            usage: Usage {
                max_rss_kb: p.max_rss_kb,
                user_cpu_ms: p.user_cpu_ms,
                sys_cpu_ms: p.sys_cpu_ms,
                gpu: p.gpu.map(GpuUsage::try_from).transpose()?,
            },
            outputs,
        };
        Ok((report, data))
    }
}

/// Most memory one GPU is believed to have, MiB (1 TiB; today's largest have under 300 GB).
const MAX_GPU_MEM_MB: u64 = 1 << 20;

impl TryFrom<pn::GpuUsage> for GpuUsage {
    type Error = WireError;

    /// Sums over at most [`MAX_GPUS`] GPUs, means no larger than peaks.
    fn try_from(p: pn::GpuUsage) -> Result<Self, WireError> {
        if p.util_max_pct > 100 * MAX_GPUS as u32 {
            return Err(bad(
                "gpu.util_max_pct",
                format!("at most 100 % for each of {MAX_GPUS} GPUs"),
            ));
        }
        if p.util_ave_pct > p.util_max_pct {
            return Err(bad("gpu.util_ave_pct", "the mean exceeds the peak"));
        }
        if p.mem_max_mb > MAX_GPU_MEM_MB * MAX_GPUS as u64 {
            return Err(bad(
                "gpu.mem_max_mb",
                format!("at most 1 TiB for each of {MAX_GPUS} GPUs"),
            ));
        }
        if p.mem_ave_mb > p.mem_max_mb {
            return Err(bad("gpu.mem_ave_mb", "the mean exceeds the peak"));
        }
        Ok(GpuUsage {
            mem_max_mb: p.mem_max_mb,
            mem_ave_mb: p.mem_ave_mb,
            util_max_pct: p.util_max_pct,
            util_ave_pct: p.util_ave_pct,
        })
    }
}

impl From<&GpuUsage> for pn::GpuUsage {
    fn from(g: &GpuUsage) -> Self {
        pn::GpuUsage {
            mem_max_mb: g.mem_max_mb,
            mem_ave_mb: g.mem_ave_mb,
            util_max_pct: g.util_max_pct,
            util_ave_pct: g.util_ave_pct,
        }
    }
}

impl From<&LaunchSpec> for pn::Launch {
    fn from(l: &LaunchSpec) -> Self {
        pn::Launch {
            job_id: l.job_id,
            attempt: l.attempt,
            script: l.script.clone(),
            args: l.args.clone(),
            work_dir: l.work_dir.clone(),
            env: l
                .env
                .iter()
                .map(|(k, v)| pn::KeyValue { key: k.clone(), value: v.clone() })
                .collect(),
            stdout_path: l.stdout_path.clone(),
            stderr_path: l.stderr_path.clone(),
            open_append: l.open_append,
            time_limit_secs: l.time_limit_secs.unwrap_or(0),
            start_time: l.start_time,
            uid: l.uid,
            gid: l.gid,
            cpus: l.cpus,
            mem_mb: l.mem_mb,
            gpus: l.gpus.clone(),
            job_name: l.job_name.clone(),
            user: l.user.clone(),
            network: l.network.to_string(),
            container: l.container.clone().unwrap_or_default(),
            replica: l.replica,
            sandboxed: l.sandboxed,
            output_files: l.output_files.clone(),
        }
    }
}

impl TryFrom<pn::Launch> for LaunchSpec {
    type Error = WireError;

    fn try_from(p: pn::Launch) -> Result<Self, WireError> {
        if !p.work_dir.starts_with('/') {
            return Err(bad("work_dir", "must be absolute"));
        }
        if !p.stdout_path.starts_with('/') || !p.stderr_path.starts_with('/') {
            return Err(bad("stdout_path", "output paths must be absolute"));
        }
        let network = match p.network.as_str() {
            "" => Network::Host,
            n => n.parse().map_err(|e: String| bad("network", &e))?,
        };
        let container = match p.container {
            c if c.is_empty() => None,
            c if c.starts_with('/') => Some(c),
            _ => return Err(bad("container", "the bundle's path must be absolute")),
        };
        Ok(LaunchSpec {
            job_id: p.job_id,
            attempt: p.attempt,
            script: p.script,
            args: p.args,
            work_dir: p.work_dir,
            env: p.env.into_iter().map(|kv| (kv.key, kv.value)).collect(),
            stdout_path: p.stdout_path,
            stderr_path: p.stderr_path,
            open_append: p.open_append,
            time_limit_secs: (p.time_limit_secs > 0).then_some(p.time_limit_secs),
            start_time: p.start_time,
            uid: p.uid,
            gid: p.gid,
            cpus: p.cpus,
            mem_mb: p.mem_mb,
            gpus: p.gpus,
            job_name: p.job_name,
            user: p.user,
            network,
            container,
            replica: p.replica,
            sandboxed: p.sandboxed,
            output_files: output_globs(p.output_files)?,
        })
    }
}

/// Encodes a core value for a read reply (controller → its CLI).
pub fn encode_bincode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).expect("in-memory encoding")
}

/// Decodes a read reply.
pub fn decode_bincode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, WireError> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| bad("bincode", e))
}

impl TryFrom<pb::UserIdentity> for User {
    type Error = WireError;

    fn try_from(p: pb::UserIdentity) -> Result<Self, WireError> {
        check_name("user", &p.name).map_err(|e| bad("user.name", e))?;
        let role = match (p.admin, p.operator.is_empty()) {
            (true, true) => Role::Admin,
            (false, true) => Role::User,
            (false, false) => {
                check_name("operator", &p.operator).map_err(|e| bad("user.operator", e))?;
                Role::Operator(p.operator)
            }
            (true, false) => return Err(bad("user", "an administrator acts for no one operator")),
        };
        Ok(User { name: p.name, uid: p.uid, gid: p.gid, role })
    }
}

impl From<&User> for pb::UserIdentity {
    fn from(u: &User) -> Self {
        pb::UserIdentity {
            name: u.name.clone(),
            uid: u.uid,
            gid: u.gid,
            admin: u.is_admin(),
            operator: u.operator().unwrap_or_default().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn req(name: &str, problem: Option<&str>) -> pn::HealthRequest {
        pn::HealthRequest {
            name: name.into(),
            session: 7,
            health: problem.map(|p| pn::Health { problem: p.into() }),
        }
    }

    #[test]
    fn a_registration_key_must_be_proven() {
        use chorus_core::attest::{public_key, registration_proof};
        let seed = [5u8; 32];
        let reg = |key: Vec<u8>, proof: Vec<u8>| pn::RegisterRequest {
            name: "node1".into(),
            cpus: 2,
            mem_mb: 1000,
            session: 9,
            public_key: key,
            key_proof: proof,
            ..Default::default()
        };
        let (key, proof) =
            (public_key(&seed).to_vec(), registration_proof(&seed, "node1", 9).to_vec());
        let ok = NodeRegistration::try_from(reg(key.clone(), proof.clone())).unwrap();
        assert_eq!(ok.public_key, Some(public_key(&seed)));
        assert_eq!(NodeRegistration::try_from(reg(vec![], vec![])).unwrap().public_key, None);
        let other = public_key(&[6u8; 32]).to_vec();
        for (k, p) in [(other, proof.clone()), (key.clone(), vec![]), (vec![1, 2], proof)] {
            assert_eq!(NodeRegistration::try_from(reg(k, p)).unwrap_err().field, "key_proof");
        }
    }

    #[test]
    fn a_health_report_is_checked_at_the_boundary() {
        let ok: HealthReport = req("node1", Some("ib0 down")).try_into().unwrap();
        assert_eq!(ok.health, Health::Unhealthy("ib0 down".into()));
        assert_eq!(ok.session, 7);
        let well: HealthReport = req("node1", Some("")).try_into().unwrap();
        assert_eq!(well.health, Health::Healthy);
        let field = |r: pn::HealthRequest| HealthReport::try_from(r).unwrap_err().field;
        assert_eq!(field(req("node1", None)), "health");
        assert_eq!(field(req("node 1", Some(""))), "name");
        assert_eq!(field(req("node1", Some("a\nb"))), "health.problem");
        assert_eq!(field(req("node1", Some(&"x".repeat(257)))), "health.problem");
    }

    #[test]
    fn health_round_trips_through_the_wire() {
        for h in [Health::Healthy, Health::Unhealthy("no /scratch".into())] {
            assert_eq!(Health::try_from(pn::Health::from(&h)).unwrap(), h);
        }
    }

    fn report(gpu: Option<pn::GpuUsage>) -> pn::JobReport {
        pn::JobReport {
            node: "node1".into(),
            job_id: 7,
            attempt: 0,
            max_rss_kb: 208,
            user_cpu_ms: 1500,
            sys_cpu_ms: 20,
            gpu,
            digest: result_digest(ExitStatus::default(), &[]).to_vec(),
            ..Default::default()
        }
    }

    fn output(path: &str, data: &str) -> pn::OutputData {
        pn::OutputData { path: path.into(), data: data.as_bytes().to_vec(), append: false }
    }

    #[test]
    fn a_report_is_believed_for_its_files_not_its_digest() {
        let files = [("/w/slurm-7.out", b"42\n".as_slice()), ("/w/result.txt", b"ok".as_slice())];
        let honest = pn::JobReport {
            outputs: vec![output("/w/slurm-7.out", "42\n"), output("/w/result.txt", "ok")],
            digest: result_digest(ExitStatus::default(), &files).to_vec(),
            replica: 1,
            ..report(None)
        };
        let (r, data) = ReportWithOutputs::try_from(honest.clone()).expect("valid");
        assert_eq!((r.replica, data.len()), (1, 2));
        // The same digest over other bytes: the node claims what it did not send.
        let mut lying = honest.clone();
        lying.outputs[1].data = b"ko".to_vec();
        assert_eq!(ReportWithOutputs::try_from(lying).unwrap_err().field, "digest");
        let twice = pn::JobReport {
            outputs: vec![output("/w/a", "1"), output("/w/a", "1")],
            ..honest.clone()
        };
        assert_eq!(ReportWithOutputs::try_from(twice).unwrap_err().field, "outputs.path");
        let short = pn::JobReport { digest: vec![0; 31], ..honest.clone() };
        assert_eq!(ReportWithOutputs::try_from(short).unwrap_err().field, "digest");
        let sig = pn::JobReport { signature: vec![1; 63], ..honest };
        assert_eq!(ReportWithOutputs::try_from(sig).unwrap_err().field, "signature");
    }

    #[test]
    fn output_globs_must_stay_inside_the_working_directory() {
        for ok in [vec![], vec!["out/*.csv".to_string()], vec!["a".into(), "b/**/c".into()]] {
            assert!(output_globs(ok.clone()).is_ok(), "{ok:?}");
        }
        for bad in ["/etc/passwd", "../x", "a/../../b", ""] {
            assert_eq!(output_globs(vec![bad.into()]).unwrap_err().field, "output_files", "{bad}");
        }
        assert!(output_globs(vec!["a".into(); MAX_OUTPUT_GLOBS + 1]).is_err());
    }

    /// Core → wire → bytes → wire → core.
    fn round_trip(p: pn::JobReport) -> Result<JobReport, WireError> {
        let bytes = p.encode_to_vec();
        let p = pn::JobReport::decode(bytes.as_slice()).expect("decodes");
        ReportWithOutputs::try_from(p).map(|(r, _)| r)
    }

    #[test]
    fn gpu_usage_survives_the_wire() {
        let g = GpuUsage {
            mem_max_mb: 36_266,
            mem_ave_mb: 30_000,
            util_max_pct: 200,
            util_ave_pct: 150,
        };
        let r = round_trip(report(Some((&g).into()))).expect("valid");
        assert_eq!(
            r.usage,
            Usage { max_rss_kb: 208, user_cpu_ms: 1500, sys_cpu_ms: 20, gpu: Some(g) }
        );
    }

    #[test]
    fn a_user_identity_names_one_role_at_most() {
        let p = |admin, operator: &str| pb::UserIdentity {
            name: "alice".into(),
            uid: 7,
            gid: 8,
            admin,
            operator: operator.into(),
        };
        let role = |admin, op| User::try_from(p(admin, op)).map(|u| u.role).map_err(|e| e.field);
        assert_eq!(role(false, ""), Ok(Role::User));
        assert_eq!(role(true, ""), Ok(Role::Admin));
        assert_eq!(role(false, "op1"), Ok(Role::Operator("op1".into())));
        assert_eq!(role(true, "op1"), Err("user"));
        assert_eq!(role(false, "op 1"), Err("user.operator"));
        let u = User::try_from(p(false, "op1")).unwrap();
        assert_eq!(pb::UserIdentity::from(&u), p(false, "op1"));
    }

    #[test]
    fn a_report_without_gpu_usage_has_none() {
        // Also what a node built before the field existed sends.
        let r = round_trip(report(None)).expect("valid");
        assert_eq!(r.usage.gpu, None);
        assert_eq!(r.usage.max_rss_kb, 208);
    }

    #[test]
    fn impossible_gpu_usage_is_refused_naming_the_field() {
        let ok =
            pn::GpuUsage { mem_max_mb: 1000, mem_ave_mb: 500, util_max_pct: 100, util_ave_pct: 50 };
        let field = |g: pn::GpuUsage| round_trip(report(Some(g))).map(|_| ()).map_err(|e| e.field);
        assert_eq!(field(ok), Ok(()));
        assert_eq!(field(pn::GpuUsage { util_ave_pct: 101, ..ok }), Err("gpu.util_ave_pct"));
        assert_eq!(field(pn::GpuUsage { mem_ave_mb: 1001, ..ok }), Err("gpu.mem_ave_mb"));
        assert_eq!(
            field(pn::GpuUsage { util_max_pct: 6401, util_ave_pct: 0, ..ok }),
            Err("gpu.util_max_pct")
        );
        assert_eq!(field(pn::GpuUsage { util_max_pct: 6400, ..ok }), Ok(()));
        assert_eq!(field(pn::GpuUsage { mem_max_mb: u64::MAX, ..ok }), Err("gpu.mem_max_mb"));
    }
}
