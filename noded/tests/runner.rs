//! The runner without containment: many launches at once.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chorus_core::fsm::EndCause;
use chorus_core::job::{ExitStatus, GpuUsage};
use chorus_core::state::Network;
use chorus_noded::gpuacct::GpuAccounting;
use chorus_noded::inventory::{FakeInventory, FakeUsage};
use chorus_noded::runner::RunnerConfig;
use common::{config, go, launch, output, workdir};

/// Many jobs launched at once on one node: none may fail to exec its own script because
/// another launch's fork held it open for writing (ETXTBSY, exit 126).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_launches_never_find_their_script_busy() {
    let dir = workdir();
    let cfg = Arc::new(config("n1", &dir.path().join("state")));
    let runs: Vec<_> = (1..=200)
        .map(|id| {
            let script = format!("echo {id}");
            let (cfg, l) = (Arc::clone(&cfg), launch(id, dir.path(), &script, 1, 100));
            tokio::spawn(async move { go(&cfg, l).await })
        })
        .collect();
    for r in runs {
        let fin = r.await.unwrap();
        assert_eq!(fin.exit, ExitStatus::default(), "job {} ({:?})", fin.job_id, fin.cause);
        assert_eq!(output(dir.path(), fin.job_id), format!("{}\n", fin.job_id));
    }
}

/// A partition with a network of its own cannot run on a node without namespaces: the job
/// fails to launch, saying why, rather than run on the host's network.
#[tokio::test]
async fn a_network_partition_needs_namespaces() {
    let dir = workdir();
    let cfg = Arc::new(config("n1", &dir.path().join("state")));
    let mut l = launch(1, dir.path(), "echo ran", 1, 100);
    l.network = Network::Loopback;
    let fin = go(&cfg, l).await;
    assert_eq!(fin.cause, EndCause::LaunchFailed);
    let out = output(dir.path(), 1);
    assert!(
        out.contains(
            "couldn't start job 1: the partition's network is `loopback`, which needs namespaces"
        ),
        "{out}"
    );
}

/// A runner whose node has four stand-in GPUs reporting `usage` (or nothing), sampled `every`.
fn gpu_config(state: &Path, usage: Option<FakeUsage>, every: Duration) -> Arc<RunnerConfig> {
    let inventory =
        Arc::new(FakeInventory { count: 4, model: "fake".into(), devices: None, usage });
    Arc::new(RunnerConfig {
        gpu_accounting: Some(GpuAccounting { inventory, every }),
        ..config("n1", state)
    })
}

const BUSY: FakeUsage = FakeUsage { util_pct: 40, mem_used_mb: 1000 };

/// The GPUs a job was given are sampled while it runs; their use, summed over the job's two
/// GPUs, comes back with the job's usage.
#[tokio::test]
async fn gpu_use_of_a_job_is_sampled_while_it_runs() {
    let dir = workdir();
    let cfg = gpu_config(&dir.path().join("state"), Some(BUSY), Duration::from_millis(50));
    let mut l = launch(1, dir.path(), "sleep 0.5", 1, 100);
    l.gpus = vec![1, 3];
    let fin = go(&cfg, l).await;
    assert_eq!(fin.exit, ExitStatus::default(), "{:?}: {}", fin.cause, output(dir.path(), 1));
    let want = GpuUsage { mem_max_mb: 2000, mem_ave_mb: 2000, util_max_pct: 80, util_ave_pct: 80 };
    assert_eq!(fin.usage.gpu, Some(want));
}

/// A job without GPUs has no GPU use, even on a node whose GPUs are busy.
#[tokio::test]
async fn a_job_without_gpus_records_no_gpu_use() {
    let dir = workdir();
    let cfg = gpu_config(&dir.path().join("state"), Some(BUSY), Duration::from_millis(50));
    let fin = go(&cfg, launch(2, dir.path(), "sleep 0.3", 1, 100)).await;
    assert_eq!(fin.exit, ExitStatus::default());
    assert_eq!(fin.usage.gpu, None);
}

/// Where the GPUs cannot be read (NVML without a driver), the job runs as ever and records
/// no GPU use rather than zeros.
#[tokio::test]
async fn unreadable_gpus_record_nothing() {
    let dir = workdir();
    let cfg = gpu_config(&dir.path().join("state"), None, Duration::from_millis(50));
    let mut l = launch(3, dir.path(), "sleep 0.3", 1, 100);
    l.gpus = vec![0];
    let fin = go(&cfg, l).await;
    assert_eq!(fin.exit, ExitStatus::default());
    assert_eq!(fin.usage.gpu, None);
}

/// The first sample is taken one interval after the start: a job that ends sooner has none.
#[tokio::test]
async fn a_job_shorter_than_the_interval_has_no_sample() {
    let dir = workdir();
    let cfg = gpu_config(&dir.path().join("state"), Some(BUSY), Duration::from_secs(30));
    let mut l = launch(4, dir.path(), "true", 1, 100);
    l.gpus = vec![0];
    let fin = go(&cfg, l).await;
    assert_eq!(fin.exit, ExitStatus::default());
    assert_eq!(fin.usage.gpu, None);
}
