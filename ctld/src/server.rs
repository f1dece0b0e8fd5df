//! Assembles a controller: storage, replica, services, leader loops. Takes its listener and a
//! shutdown future, so tests can bind `127.0.0.1:0`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chorus_core::ClusterState;
use chorus_core::state::ClusterConfig;
use chorus_proto::MAX_MESSAGE_BYTES;
use chorus_proto::client::client_server::ClientServer;
use chorus_proto::node::node_service_server::NodeServiceServer;
use tokio::net::TcpListener;
use tracing::info;

use crate::client_service::ClientService;
use crate::leader;
use crate::nodes::{NodeApi, NodeHub};
use crate::replica::{self, ReplicaConfig};
use crate::storage::SledStorage;

#[derive(Debug, Clone)]
pub struct CtldConfig {
    pub state_dir: PathBuf,
    pub cluster: ClusterConfig,
    pub scheduler: String,
    pub node_timeout: Duration,
    pub snapshot_every: u64,
}

pub async fn serve(
    cfg: CtldConfig,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.state_dir)?;
    let store = SledStorage::open(&cfg.state_dir.join("raft"))?;
    let initial = ClusterState::new(cfg.cluster.clone());
    let (replica, _thread) = replica::start(
        store.clone(),
        initial,
        ReplicaConfig { snapshot_every: cfg.snapshot_every, ..Default::default() },
    )?;
    // Serve nothing before the log written before a restart is applied again: a read must
    // never show fewer jobs than were acknowledged.
    let recovered = raft::Storage::last_index(&store)?;
    let mut applied = replica.applied();
    while *applied.borrow_and_update() < recovered {
        applied.changed().await?;
    }
    info!(index = recovered, "state recovered");
    let scheduler: Arc<dyn chorus_core::plugin::Scheduler> =
        chorus_plugins::scheduler(&cfg.scheduler)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown scheduler `{}` (known: {:?})",
                    cfg.scheduler,
                    chorus_plugins::SCHEDULERS
                )
            })?
            .into();
    let validators = chorus_plugins::submit_chain(chorus_plugins::DEFAULT_SUBMIT_CHAIN)
        .map_err(anyhow::Error::msg)?;
    let hub = Arc::new(NodeHub::new());
    let clock: fn() -> u64 = crate::wall_clock;
    let addr = listener.local_addr()?.to_string();

    tokio::spawn(leader::schedule_loop(
        replica.clone(),
        Arc::clone(&scheduler),
        clock,
        Duration::from_millis(20),
        Duration::from_secs(1),
    ));
    tokio::spawn(leader::liveness_loop(replica.clone(), Arc::clone(&hub), clock, cfg.node_timeout));

    let client = ClientService {
        replica: replica.clone(),
        validators,
        scheduler,
        store: store.clone(),
        hub: Arc::clone(&hub),
        addr: addr.clone(),
        clock,
    };
    let nodes = NodeApi { replica, store, hub, clock };
    info!(%addr, "ctld serving");
    tonic::transport::Server::builder()
        .add_service(
            ClientServer::new(client)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            NodeServiceServer::new(nodes)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        // No Nagle: a reply's trailers must not wait for the client's delayed ACK (40 ms).
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    Ok(())
}
