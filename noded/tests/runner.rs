//! The runner without containment: many launches at once.

mod common;

use std::sync::Arc;

use chorus_core::fsm::EndCause;
use chorus_core::job::ExitStatus;
use chorus_core::state::Network;
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
