//! Joining: how a node agent gets the certificate every other node call needs.
//!
//! ```text
//!   noded ──Join{name, key, proof, token} (TLS: noded checks the controller by the CA)──▶
//!     leader only ─▶ name syntax ─▶ token: a live join token in the state? (no: refused,
//!     logged rate-limited, nothing proposed) ─▶ proof: the node holds the key ─▶
//!     propose JoinNode (fsm: the token again; the name keeps its first operator and key)
//!     ─▶ Ca::issue_node(name, key) ─▶ the certificate, and the operator it joined under
//! ```

use std::sync::Arc;

use chorus_core::fsm::Command;
use chorus_core::identity::{Grant, check_name, token_hash, verify_join};
use chorus_proto::node::{self as pn, join_server::Join};
use chorus_proto::tls::Ca;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::auth::Refusals;
use crate::client_service::{leader_only, status_of};
use crate::replica::{ProposeError, ReplicaHandle};

pub struct JoinService {
    pub replica: ReplicaHandle,
    pub ca: Arc<Ca>,
    pub refusals: Arc<Refusals>,
    pub clock: fn() -> u64,
}

/// What a node without an accepted join token is told.
const ASK: &str = "ask an administrator for a join token for your operator \
    (`chorus operator token OPERATOR`) and start noded with --join-token";

#[tonic::async_trait]
impl Join for JoinService {
    async fn join(&self, req: Request<pn::JoinRequest>) -> Result<Response<pn::JoinReply>, Status> {
        leader_only(&self.replica)?;
        let from =
            req.remote_addr().map_or_else(|| "unknown address".into(), |a| a.ip().to_string());
        let r = req.into_inner();
        check_name("node", &r.name).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let hash = token_hash(&r.token);
        let now = (self.clock)();
        // A wrong token costs no log entry: it is refused before anything is proposed.
        let grant = self.replica.read(|st| st.identities.token(&hash, now).cloned());
        let refuse = |why: String| {
            self.refusals.warn(&format!("join from {from}"), &format!("node {}: {why}", r.name));
            Status::unauthenticated(format!("join refused: {why}; {ASK}"))
        };
        match grant {
            Ok(Grant::Join { .. }) => {}
            Ok(Grant::User(_)) => {
                return Err(refuse("this token is a user's, not a join token".into()));
            }
            Err(e) => return Err(refuse(e.to_string())),
        }
        let key = verify_join(&r.name, &r.public_key, &hash, &r.proof)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let cmd = Command::JoinNode { node: r.name.clone(), token: hash, public_key: key, now };
        match self.replica.propose(cmd, vec![]).await {
            Ok(_) => {}
            Err(ProposeError::Rejected(why)) => {
                self.refusals
                    .warn(&format!("join from {from}"), &format!("node {}: {why}", r.name));
                return Err(Status::permission_denied(format!("join refused: {why}")));
            }
            Err(e) => return Err(status_of(&self.replica, e)),
        }
        let operator = self
            .replica
            .read(|st| st.identities.operator_of(&r.name).map(str::to_owned))
            .unwrap_or_default();
        let certificate =
            self.ca.issue_node(&r.name, &key, now).map_err(|e| Status::internal(e.to_string()))?;
        info!(node = %r.name, %operator, "node joined");
        Ok(Response::new(pn::JoinReply { certificate, operator }))
    }
}
