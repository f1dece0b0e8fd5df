//! The peer API: raft messages between the controllers of a group, on a listener of their
//! own (separate from the client and node APIs).
//!
//! ```text
//!   replica thread ──Transport::send(msgs)──▶ one queue + task per peer ──Deliver(batch)──▶ peer
//!                                               │ unreachable / failed snapshot
//!                                               └──▶ report_unreachable / report_snapshot
//!   peer ──Deliver(batch)──▶ PeerService ──decode (controllers only)──▶ ReplicaHandle::step
//! ```
//!
//! Both directions are mutual TLS with certificates from the cluster CA: a controller dials
//! its peers with its own certificate, and the peer listener takes only connections that
//! show one naming a controller (auth.rs, `GateKind::Peer`).
//!
//! Each peer has one task sending one batch at a time, so messages arrive in the order raft
//! produced them. A batch that cannot be delivered is dropped: raft resends what matters.
//! Raft messages are decoded only here, and only from peers (never from a node or a client):
//! rust-protobuf 2.x must not parse untrusted input (RUSTSEC-2024-0437).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chorus_proto::peer::peer_client::PeerClient;
use chorus_proto::peer::peer_server::Peer;
use chorus_proto::peer::{self as pp};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::sync::mpsc;
use tonic::transport::{Channel, ClientTlsConfig};
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use crate::replica::{ReplicaHandle, Transport};
use crate::storage::Member;

/// Raft messages carry log entries and whole snapshots (with job outputs).
pub const MAX_PEER_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

type Members = Arc<dyn Fn() -> Vec<Member> + Send + Sync>;

/// Peer addresses learned from incoming batches (`from_addr`), for controllers the
/// replicated member table does not name yet.
pub type AddressBook = Arc<Mutex<HashMap<u64, String>>>;

/// Sends raft messages to peers over gRPC.
pub struct PeerTransport {
    me: Member,
    queues: Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>,
    members: Members,
    learned: AddressBook,
    replica: Arc<OnceLock<ReplicaHandle>>,
    rt: tokio::runtime::Handle,
    tls: ClientTlsConfig,
}

impl PeerTransport {
    /// `members` names every controller's peer address; `replica` is set once the replica is
    /// started (the transport is handed to it, so it cannot exist before); `tls` carries this
    /// controller's certificate.
    pub fn new(
        me: Member,
        members: Members,
        learned: AddressBook,
        replica: Arc<OnceLock<ReplicaHandle>>,
        tls: ClientTlsConfig,
    ) -> Self {
        Self {
            me,
            queues: Mutex::new(HashMap::new()),
            members,
            learned,
            replica,
            rt: tokio::runtime::Handle::current(),
            tls,
        }
    }
}

impl Transport for PeerTransport {
    fn send(&self, msgs: Vec<Message>) {
        let mut queues = self.queues.lock().expect("peer queues lock poisoned");
        for m in msgs {
            let to = m.to;
            let q = queues.entry(to).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                let link = Link {
                    me: self.me.clone(),
                    to,
                    members: Arc::clone(&self.members),
                    learned: Arc::clone(&self.learned),
                    replica: Arc::clone(&self.replica),
                    client: None,
                    tls: self.tls.clone(),
                };
                self.rt.spawn(link.run(rx));
                tx
            });
            let _ = q.send(m);
        }
    }
}

/// The sending side of one peer.
struct Link {
    me: Member,
    to: u64,
    members: Members,
    learned: AddressBook,
    replica: Arc<OnceLock<ReplicaHandle>>,
    client: Option<PeerClient<Channel>>,
    tls: ClientTlsConfig,
}

impl Link {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Message>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < 4096 {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let snapshots = batch.iter().any(|m| m.get_msg_type() == MessageType::MsgSnapshot);
            let ok = self.deliver(&batch, snapshots).await;
            if let Some(r) = self.replica.get() {
                if !ok {
                    r.report_unreachable(self.to);
                }
                if snapshots {
                    r.report_snapshot(self.to, ok);
                }
            }
            if !ok {
                // Do not spin on a dead peer: what queued meanwhile goes in the next batch.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    async fn deliver(&mut self, batch: &[Message], snapshot: bool) -> bool {
        let messages: Vec<Vec<u8>> = match batch.iter().map(|m| m.write_to_bytes()).collect() {
            Ok(m) => m,
            Err(e) => {
                warn!(to = self.to, error = %e, "cannot encode raft messages");
                return false;
            }
        };
        let client = match self.client.clone() {
            Some(c) => c,
            None => match self.connect().await {
                Some(c) => c,
                None => return false,
            },
        };
        let mut req = Request::new(pp::RaftBatch {
            from: self.me.id,
            messages,
            from_addr: self.me.peer_addr.clone(),
        });
        req.set_timeout(if snapshot { Duration::from_secs(120) } else { Duration::from_secs(5) });
        match client.clone().deliver(req).await {
            Ok(_) => true,
            Err(e) => {
                debug!(to = self.to, error = %e, "raft batch not delivered");
                self.client = None;
                false
            }
        }
    }

    async fn connect(&mut self) -> Option<PeerClient<Channel>> {
        let known = (self.members)().into_iter().find(|m| m.id == self.to).map(|m| m.peer_addr);
        let learned = || self.learned.lock().expect("address book lock").get(&self.to).cloned();
        let Some(addr) = known.or_else(learned) else {
            debug!(to = self.to, "no address known for this controller");
            return None;
        };
        let ep = chorus_proto::tls::endpoint(&addr, &self.tls)
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        match ep.connect().await {
            Ok(ch) => {
                let c = PeerClient::new(ch)
                    .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
                self.client = Some(c.clone());
                Some(c)
            }
            Err(e) => {
                let error = chorus_proto::leader::chain(&e);
                debug!(to = self.to, %addr, %error, "controller unreachable");
                None
            }
        }
    }
}

/// The receiving side: hands raft messages to the replica.
pub struct PeerService {
    pub replica: ReplicaHandle,
    pub me: Member,
    pub cluster_name: String,
    pub learned: AddressBook,
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn deliver(
        &self,
        req: Request<pp::RaftBatch>,
    ) -> Result<Response<pp::DeliverReply>, Status> {
        let batch = req.into_inner();
        if !batch.from_addr.is_empty() {
            self.learned.lock().expect("address book lock").insert(batch.from, batch.from_addr);
        }
        for bytes in batch.messages {
            let msg = Message::parse_from_bytes(&bytes)
                .map_err(|e| Status::invalid_argument(format!("bad raft message: {e}")))?;
            if msg.to != self.me.id {
                return Err(Status::invalid_argument(format!(
                    "raft message for controller {} delivered to controller {}",
                    msg.to, self.me.id
                )));
            }
            self.replica.step(msg);
        }
        Ok(Response::new(pp::DeliverReply {}))
    }

    async fn identify(
        &self,
        _req: Request<pp::IdentifyRequest>,
    ) -> Result<Response<pp::Identity>, Status> {
        Ok(Response::new(pp::Identity {
            id: self.me.id,
            client_addr: self.me.client_addr.clone(),
            peer_addr: self.me.peer_addr.clone(),
            cluster_name: self.cluster_name.clone(),
        }))
    }
}
