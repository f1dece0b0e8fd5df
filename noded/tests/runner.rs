//! The runner without containment: many launches at once.

mod common;

use std::sync::Arc;

use chorus_core::job::ExitStatus;
use chorus_noded::runner::RunnerConfig;
use common::{go, launch, output};

/// Many jobs launched at once on one node: none may fail to exec its own script because
/// another launch's fork held it open for writing (ETXTBSY, exit 126).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_launches_never_find_their_script_busy() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Arc::new(RunnerConfig {
        node_name: "n1".into(),
        state_dir: dir.path().join("state"),
        max_output_bytes: 1 << 20,
        cgroups: None,
        namespaces: false,
    });
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
