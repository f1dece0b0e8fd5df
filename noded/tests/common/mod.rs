//! What the runner tests share: a launch as ctld would send it, and running it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chorus_core::launch::LaunchSpec;
use chorus_noded::runner::{Finished, ProcessGroup, RunnerConfig, run};
use tokio::sync::watch;

/// A runner on node `node` keeping its state in `state`, with this build's stepd; no cgroups,
/// no namespaces.
pub fn config(node: &str, state: &Path) -> RunnerConfig {
    RunnerConfig::new(node, state, env!("CARGO_BIN_EXE_stepd").into())
}

/// A directory every job's user may enter (a job of root runs as a uid of its own).
pub fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    dir
}

/// A batch job running `script` (after `#!/bin/sh`) in `dir` as the current user, with its
/// output in `dir/slurm-<id>.out`.
pub fn launch(job_id: u32, dir: &Path, script: &str, cpus: u32, mem_mb: u64) -> LaunchSpec {
    let out = dir.join(format!("slurm-{job_id}.out")).display().to_string();
    LaunchSpec {
        job_id,
        attempt: 0,
        script: format!("#!/bin/sh\n{script}\n"),
        args: vec![],
        work_dir: dir.display().to_string(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        stdout_path: out.clone(),
        stderr_path: out,
        open_append: false,
        time_limit_secs: None,
        start_time: now(),
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        cpus,
        mem_mb,
        gpus: vec![],
        job_name: "t".into(),
        user: "u".into(),
        network: Default::default(),
        container: None,
        replica: 0,
        sandboxed: false,
        output_files: vec![],
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Runs a launch to its end, never asked to stop.
pub async fn go(cfg: &Arc<RunnerConfig>, l: LaunchSpec) -> Finished {
    let (_tx, rx) = watch::channel(false);
    run(Arc::clone(cfg), l, Duration::from_secs(1), ProcessGroup::default(), rx).await
}

/// What a job wrote to `dir/slurm-<id>.out`.
pub fn output(dir: &Path, job: u32) -> String {
    std::fs::read_to_string(dir.join(format!("slurm-{job}.out"))).unwrap_or_default()
}
