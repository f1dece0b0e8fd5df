//! Who is calling: every request's principal, from its TLS client certificate or its bearer
//! token, settled before any service sees the request.
//!
//! ```text
//!  client listener (TLS; a client certificate is checked when shown)
//!    Client ──Gate::Client: certificate ──▶ principal_of (the CA signed it: rustls checked)
//!                           no certificate ──▶ `authorization: Bearer T` ──▶ state's tokens
//!                           neither ──▶ UNAUTHENTICATED, saying what to bring
//!           ──▶ Caller in the request's extensions ──▶ ClientService: user(&req)?
//!    Node   ──Gate::Node: a node certificate only ──▶ NodeApi: the body's node == the caller's
//!    Join   ──(no gate: the join token is in the body) ──▶ JoinService
//!  peer listener (TLS; no client certificate, no connection)
//!    Peer   ──Gate::Peer: a controller certificate only
//! ```
//!
//! Refusals a peer can trigger at will are logged through [`Refusals`]: at most one line per
//! caller every [`REFUSAL_LOG_EVERY`], with the count of those held back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_core::identity::{Principal, User, token_hash};
use chorus_proto::tls::cert_info;
use tonic::service::Interceptor;
use tonic::{Request, Status};
use tracing::warn;

use crate::replica::ReplicaHandle;

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Certificate,
    Token,
}

impl Credential {
    pub fn as_str(self) -> &'static str {
        match self {
            Credential::Certificate => "certificate",
            Credential::Token => "token",
        }
    }
}

/// The authenticated caller of a request, put in its extensions by a [`Gate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    pub credential: Credential,
}

impl Caller {
    /// Marks `req` as coming from `principal` (what a gate does; tests call it directly).
    pub fn attach<T>(
        mut req: Request<T>,
        principal: Principal,
        credential: Credential,
    ) -> Request<T> {
        req.extensions_mut().insert(Caller { principal, credential });
        req
    }
}

/// What a client without an accepted credential is told.
pub const NO_CREDENTIALS: &str = "no credentials: a Chorus controller takes a client \
    certificate from the cluster CA (`chorus user cert`) or a token (`chorus user token`), \
    both issued by an administrator; name them in the client configuration (cert and key, \
    or token_file)";

/// The caller a gate attached. A service behind no gate is a bug, not a refusal.
pub fn caller<T>(req: &Request<T>) -> Result<&Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .ok_or_else(|| Status::internal("no caller: this service is not behind a gate"))
}

/// The calling user; a node or a controller has no business on the client API.
pub fn user<T>(req: &Request<T>) -> Result<User, Status> {
    match &caller(req)?.principal {
        Principal::User(u) => Ok(u.clone()),
        other => Err(Status::permission_denied(format!(
            "{other}'s certificate is not for client commands"
        ))),
    }
}

/// How often one caller's refusals are logged.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);
/// Callers remembered at most; beyond, the memory is cleared (and the next lines logged).
const REFUSAL_MEMORY: usize = 4096;

/// Rate-limited logging of refusals, per caller.
pub struct Refusals {
    seen: Mutex<HashMap<String, (Instant, u64)>>,
    every: Duration,
}

impl Default for Refusals {
    fn default() -> Self {
        Self { seen: Mutex::new(HashMap::new()), every: REFUSAL_LOG_EVERY }
    }
}

impl Refusals {
    /// Logs `why` for `who` unless a line for `who` went out within the interval; returns
    /// whether it was logged.
    pub fn warn(&self, who: &str, why: &str) -> bool {
        let mut seen = self.seen.lock().expect("refusals lock");
        if seen.len() >= REFUSAL_MEMORY && !seen.contains_key(who) {
            seen.clear();
        }
        let now = Instant::now();
        match seen.get_mut(who) {
            Some((at, held)) if now.duration_since(*at) < self.every => {
                *held += 1;
                false
            }
            entry => {
                let held_back = entry.map_or(0, |(_, held)| *held);
                seen.insert(who.to_owned(), (now, 0));
                warn!(caller = who, held_back, "refused: {why}");
                true
            }
        }
    }
}

/// Which service a gate stands before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateKind {
    /// Users, by certificate or token.
    Client,
    /// Node agents, by the certificate their Join gave them.
    Node,
    /// Controllers of the group, by their certificates.
    Peer,
}

/// Authenticates every request of one service and attaches its [`Caller`].
#[derive(Clone)]
pub struct Gate {
    pub kind: GateKind,
    pub replica: ReplicaHandle,
    pub refusals: Arc<Refusals>,
    pub clock: fn() -> u64,
}

impl Gate {
    fn refuse(&self, req: &Request<()>, status: Status) -> Status {
        let who =
            req.remote_addr().map_or_else(|| "unknown address".to_owned(), |a| a.ip().to_string());
        self.refusals.warn(&format!("{:?} call from {who}", self.kind), status.message());
        status
    }

    fn authenticate(&self, req: &Request<()>) -> Result<Caller, Status> {
        if let Some(certs) = req.peer_certs()
            && let Some(leaf) = certs.first()
        {
            let info = cert_info(leaf)
                .map_err(|e| Status::unauthenticated(format!("certificate not accepted: {e}")))?;
            if let Principal::Node(name) = &info.principal {
                // A node is what it joined as: a certificate for a key the state no longer
                // binds to the name is refused.
                let joined =
                    self.replica.read(|st| st.identities.nodes.get(name).map(|j| j.public_key));
                if joined.is_some_and(|k| k[..] != info.public_key[..]) {
                    return Err(Status::permission_denied(format!(
                        "node {name}'s certificate is for a key it did not join with"
                    )));
                }
            }
            return Ok(Caller { principal: info.principal, credential: Credential::Certificate });
        }
        let Some(header) = req.metadata().get("authorization") else {
            return Err(Status::unauthenticated(NO_CREDENTIALS));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization: expected `Bearer TOKEN`"))?;
        let hash = token_hash(token);
        let now = (self.clock)();
        let user = self.replica.read(|st| st.identities.user_token(&hash, now).cloned());
        match user {
            Ok(u) => Ok(Caller { principal: Principal::User(u), credential: Credential::Token }),
            Err(e) => Err(Status::unauthenticated(format!(
                "{e}: ask an administrator for a token (`chorus user token`)"
            ))),
        }
    }

    fn admit(&self, caller: &Caller) -> Result<(), Status> {
        match (self.kind, &caller.principal) {
            (GateKind::Client, Principal::User(_))
            | (GateKind::Node, Principal::Node(_))
            | (GateKind::Peer, Principal::Controller(_)) => Ok(()),
            (GateKind::Node, p) => Err(Status::permission_denied(format!(
                "{p} is not a node: the node API is for node agents"
            ))),
            (GateKind::Peer, p) => Err(Status::permission_denied(format!(
                "{p} is not a controller: the peer API is for the controllers of the group"
            ))),
            (GateKind::Client, p) => Err(Status::permission_denied(format!(
                "{p}'s certificate is not for client commands"
            ))),
        }
    }
}

impl Interceptor for Gate {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.authenticate(&req).map_err(|s| self.refuse(&req, s))?;
        self.admit(&caller).map_err(|s| self.refuse(&req, s))?;
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_callers_refusals_are_logged_once_per_interval() {
        let r = Refusals::default();
        assert!(r.warn("node node1", "spoke for node2"));
        assert!(!r.warn("node node1", "spoke for node2"), "within the interval: held back");
        assert!(r.warn("node node3", "spoke for node2"), "another caller has its own count");
        let r = Refusals { every: Duration::ZERO, ..Refusals::default() };
        assert!(r.warn("a", "x"));
        assert!(r.warn("a", "x"), "past the interval: logged again");
    }
}
