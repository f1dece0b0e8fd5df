//! Assembles a controller: storage, replica, peer transport, services, leader loops. Takes
//! its listeners and a shutdown future, so tests can bind `127.0.0.1:0`.
//!
//! Both listeners speak TLS only. At every start the controller issues itself a certificate
//! from the cluster CA (`--ca-dir`) for the addresses it listens on: its server certificate
//! on both listeners, and its client certificate towards its peers.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chorus_core::ClusterState;
use chorus_core::state::ClusterConfig;
use chorus_proto::MAX_MESSAGE_BYTES;
use chorus_proto::client::client_server::ClientServer;
use chorus_proto::node::join_server::JoinServer;
use chorus_proto::node::node_service_server::NodeServiceServer;
use chorus_proto::peer::peer_server::PeerServer;
use chorus_proto::tls::{Ca, ClientCerts, client_tls, server_tls};
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tracing::info;

use crate::auth::{Gate, GateKind, Refusals};
use crate::client_service::ClientService;
use crate::join::JoinService;
use crate::leader;
use crate::nodes::{NodeApi, NodeHub};
use crate::peer::{MAX_PEER_MESSAGE_BYTES, PeerService, PeerTransport};
use crate::replica::{self, CoreConfig, ReplicaConfig};
use crate::storage::{Member, RaftStore, SledStorage};

/// How a controller starts the first time (ignored once its state directory holds a log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Founding {
    /// A group of its own, alone (the single-controller default).
    Alone,
    /// One of the founding members, all given the same list.
    Founders(Vec<Member>),
    /// Joins an existing group: waits, empty, for the leader to add it
    /// (`chorus controller add`).
    Join,
}

#[derive(Debug, Clone)]
pub struct CtldConfig {
    pub id: u64,
    pub state_dir: PathBuf,
    pub cluster: ClusterConfig,
    pub scheduler: String,
    pub node_timeout: Duration,
    pub snapshot_every: u64,
    pub founding: Founding,
    /// Raft's tick: elections take 10–20 ticks of silence, heartbeats go every 2.
    pub tick: Duration,
    /// The secret of adaptive replication's coin; `None`: a random one for this process (only
    /// the leader draws it, and the state machine checks only that the quorum is allowed).
    pub trust_seed: Option<u64>,
    /// The cluster CA (`ca.crt`, `ca.key`), the same for every controller of the group.
    pub ca_dir: PathBuf,
    /// Names and addresses clients reach this controller by, beyond those it listens on,
    /// `localhost` and its host name (its certificate names them all).
    pub tls_hosts: Vec<String>,
}

/// What this controller's certificate names: the hosts it listens on (unless unspecified),
/// loopback, its host name, and `extra`.
pub fn certificate_hosts(me: &Member, extra: &[String]) -> Vec<String> {
    let host = |addr: &str| -> Option<String> {
        let a: std::net::SocketAddr = addr.parse().ok()?;
        (!a.ip().is_unspecified()).then(|| a.ip().to_string())
    };
    let mut hosts: Vec<String> =
        [&me.client_addr, &me.peer_addr].iter().filter_map(|a| host(a)).collect();
    hosts.extend(["127.0.0.1", "::1", "localhost"].map(String::from));
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        hosts.push(h.trim().to_owned());
    }
    hosts.extend(extra.iter().cloned());
    hosts.retain(|h| !h.is_empty());
    let mut seen = std::collections::BTreeSet::new();
    hosts.retain(|h| seen.insert(h.clone()));
    hosts
}

/// The two listeners of a controller: clients and nodes on one, peers on the other.
pub struct Listeners {
    pub client: TcpListener,
    pub peer: TcpListener,
}

pub async fn serve(
    cfg: CtldConfig,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.state_dir)?;
    let ca = Arc::new(Ca::load(&cfg.ca_dir)?);
    let store = SledStorage::open(&cfg.state_dir.join("raft"))?;
    let me = Member {
        id: cfg.id,
        client_addr: listeners.client.local_addr()?.to_string(),
        peer_addr: listeners.peer.local_addr()?.to_string(),
    };
    let mine =
        ca.issue_controller(me.id, &certificate_hosts(&me, &cfg.tls_hosts), crate::wall_clock())?;
    let peer_tls = client_tls(ca.cert_pem(), Some((&mine.cert_pem, &mine.key_pem)));
    let founders = match &cfg.founding {
        Founding::Alone => vec![me.clone()],
        Founding::Founders(f) => {
            if !f.iter().any(|m| m.id == me.id) {
                anyhow::bail!("controller id {} is not among the initial controllers", me.id);
            }
            f.clone()
        }
        Founding::Join => vec![],
    };
    // Everything committed before a restart is applied again before anything is served: a
    // read must never show fewer jobs than were acknowledged.
    let recovered = store.hard_state().commit;

    let cell = Arc::new(OnceLock::new());
    let members_of = store.clone();
    let learned = crate::peer::AddressBook::default();
    let transport = PeerTransport::new(
        me.clone(),
        Arc::new(move || members_of.members().unwrap_or_default()),
        Arc::clone(&learned),
        Arc::clone(&cell),
        peer_tls.clone(),
    );
    let incarnation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let (replica, _thread) = replica::start(
        store.clone(),
        ClusterState::new(cfg.cluster.clone()),
        &founders,
        transport,
        ReplicaConfig {
            core: CoreConfig {
                incarnation,
                snapshot_every: cfg.snapshot_every,
                ..CoreConfig::new(me.id)
            },
            tick: cfg.tick,
            ..Default::default()
        },
    )?;
    let _ = cell.set(replica.clone());

    // Peers first: the group can elect no one without them.
    let peer_service = PeerService {
        replica: replica.clone(),
        me: me.clone(),
        cluster_name: cfg.cluster.cluster_name.clone(),
        learned,
    };
    let ca_pem = ca.cert_pem().to_owned();
    let refusals = Arc::new(Refusals::default());
    let clock: fn() -> u64 = crate::wall_clock;
    let gate =
        |kind| Gate { kind, replica: replica.clone(), refusals: Arc::clone(&refusals), clock };
    let (peer_stop, peer_stopped) = tokio::sync::oneshot::channel::<()>();
    let peer_server = tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(server_tls(&ca_pem, &mine, ClientCerts::Required))?
            .add_service(InterceptedService::new(
                PeerServer::new(peer_service)
                    .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES),
                gate(GateKind::Peer),
            ))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listeners.peer)
                    .with_nodelay(Some(true)),
                async {
                    let _ = peer_stopped.await;
                },
            ),
    );

    let mut applied = replica.applied();
    while *applied.borrow_and_update() < recovered {
        applied.changed().await?;
    }
    info!(index = recovered, "state recovered");
    let scheduler: Arc<dyn chorus_core::plugin::Scheduler> =
        chorus_plugins::scheduler(&cfg.scheduler, cfg.trust_seed.unwrap_or_else(rand::random))
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

    tokio::spawn(leader::schedule_loop(
        replica.clone(),
        Arc::clone(&scheduler),
        clock,
        Duration::from_millis(20),
        Duration::from_secs(1),
    ));
    tokio::spawn(leader::liveness_loop(replica.clone(), Arc::clone(&hub), clock, cfg.node_timeout));
    tokio::spawn(leader::verify_loop(replica.clone(), store.clone(), clock));

    let client = ClientService {
        replica: replica.clone(),
        validators,
        scheduler,
        store: store.clone(),
        hub: Arc::clone(&hub),
        me: me.clone(),
        clock,
        ca: Arc::clone(&ca),
        peer_tls,
    };
    let join = JoinService { replica: replica.clone(), ca, refusals: Arc::clone(&refusals), clock };
    let nodes =
        NodeApi { replica: replica.clone(), store, hub, clock, refusals: Arc::clone(&refusals) };
    info!(id = me.id, client = %me.client_addr, peer = %me.peer_addr, "ctld serving");
    let served = tonic::transport::Server::builder()
        .tls_config(server_tls(&ca_pem, &mine, ClientCerts::Optional))?
        .add_service(InterceptedService::new(
            ClientServer::new(client)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            gate(GateKind::Client),
        ))
        .add_service(InterceptedService::new(
            NodeServiceServer::new(nodes)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            gate(GateKind::Node),
        ))
        .add_service(JoinServer::new(join).max_decoding_message_size(64 * 1024))
        // No Nagle: a reply's trailers must not wait for the client's delayed ACK (40 ms).
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listeners.client).with_nodelay(Some(true)),
            shutdown,
        )
        .await;
    let _ = peer_stop.send(());
    let _ = peer_server.await;
    served?;
    Ok(())
}
