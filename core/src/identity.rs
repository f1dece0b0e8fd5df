//! Who is speaking, and what they may do (issue 6, point 1: everyone identified).
//!
//! ```text
//!   client certificate (CA-signed)  ──SAN URIs──▶ Principal::from_uris ─┐
//!   bearer token ──token_hash──▶ Identities::user_token (replicated) ───┼─▶ Principal
//!   node certificate (from Join)    ──SAN URI───▶ Principal::Node       │
//!   controller certificate          ──SAN URI───▶ Principal::Controller ┘
//!
//!   Principal::User ──▶ may_touch_job / may_stake / may_set_node / admin_only ──▶ Ok | Denied
//!   noded ──Join{name, key, proof, token}──▶ Identities::join (fsm) ──▶ a node certificate
//! ```
//!
//! Everything here is pure. The TLS layer (chorus-proto's `tls`, ctld) verifies certificate
//! chains and hands the verified SAN URIs to [`Principal::from_uris`]; tokens are kept only
//! as hashes, in the replicated state, so every controller accepts the same ones and a
//! revoked token is refused everywhere once the revocation is applied.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::job::Job;

/// What a user may do beyond their own jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Their own jobs, and every read.
    User,
    /// As a user, and their operator's nodes and stake.
    Operator(String),
    /// Everything.
    Admin,
}

/// A person (or a script acting for one): the Unix identity jobs run as, and a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub role: Role,
}

impl User {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The operator this user acts for, if any.
    pub fn operator(&self) -> Option<&str> {
        match &self.role {
            Role::Operator(op) => Some(op),
            _ => None,
        }
    }
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (uid {}, gid {}", self.name, self.uid, self.gid)?;
        match &self.role {
            Role::User => write!(f, ")"),
            Role::Operator(op) => write!(f, ", operator {op})"),
            Role::Admin => write!(f, ", administrator)"),
        }
    }
}

/// Whoever holds an accepted credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Principal {
    User(User),
    /// A node agent, by the name its certificate was issued for.
    Node(String),
    /// A controller of the group, by its raft id.
    Controller(u64),
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::User(u) => write!(f, "user {u}"),
            Principal::Node(n) => write!(f, "node {n}"),
            Principal::Controller(id) => write!(f, "controller {id}"),
        }
    }
}

/// The URI scheme of Chorus identities in certificates' subject alternative names.
const SCHEME: &str = "chorus:";

/// Why a credential names no one, or a token cannot be issued or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate names no Chorus identity (no chorus: URI)")]
    Anonymous,
    #[error("the certificate names more than one Chorus identity")]
    Ambiguous,
    #[error("the certificate's identity `{0}` is malformed")]
    Malformed(String),
    #[error("{what} `{name}`: names are 1 to 64 of [A-Za-z0-9._@-]")]
    BadName { what: &'static str, name: String },
    #[error("token not accepted (unknown, revoked or expired)")]
    UnknownToken,
    #[error("this is a join token: it is for `noded --join-token`, not for commands")]
    JoinTokenForCommands,
    #[error("this token is not a join token")]
    NotAJoinToken,
    #[error("no token has the id {0}")]
    NoSuchToken(String),
    #[error("the id {0} names more than one token: give more of it")]
    AmbiguousTokenId(String),
    #[error("a token with this secret exists already")]
    DuplicateToken,
    #[error("node {node} joined under operator {operator}")]
    NodeOfAnotherOperator { node: String, operator: String },
    #[error("node {0} joined with another key")]
    KeyMismatch(String),
    #[error("the proof of the node's key does not verify")]
    BadProof,
}

/// Names of users, operators and nodes as certificates carry them: no escaping needed.
pub fn check_name(what: &'static str, name: &str) -> Result<(), IdentityError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if ok { Ok(()) } else { Err(IdentityError::BadName { what, name: name.to_owned() }) }
}

impl Principal {
    /// The URIs a certificate for this principal carries, one per fact.
    pub fn uris(&self) -> Vec<String> {
        match self {
            Principal::Node(n) => vec![format!("{SCHEME}node:{n}")],
            Principal::Controller(id) => vec![format!("{SCHEME}controller:{id}")],
            Principal::User(u) => {
                let mut v = vec![
                    format!("{SCHEME}user:{}", u.name),
                    format!("{SCHEME}uid:{}", u.uid),
                    format!("{SCHEME}gid:{}", u.gid),
                ];
                match &u.role {
                    Role::User => {}
                    Role::Operator(op) => v.push(format!("{SCHEME}role:operator:{op}")),
                    Role::Admin => v.push(format!("{SCHEME}role:admin")),
                }
                v
            }
        }
    }

    /// Reads the principal a (verified) certificate's URIs name. URIs of other schemes are
    /// ignored; a certificate naming two principals, or half of one, names none.
    pub fn from_uris<'a>(uris: impl IntoIterator<Item = &'a str>) -> Result<Self, IdentityError> {
        let (mut kind, mut user, mut uid, mut gid, mut role) = (None, None, None, None, None);
        let set = |slot: &mut Option<String>, v: &str| {
            if slot.replace(v.to_owned()).is_some() {
                Err(IdentityError::Ambiguous)
            } else {
                Ok(())
            }
        };
        for uri in uris {
            let Some(rest) = uri.strip_prefix(SCHEME) else { continue };
            let malformed = || IdentityError::Malformed(uri.to_owned());
            let (key, value) = rest.split_once(':').ok_or_else(malformed)?;
            match key {
                "node" | "controller" => set(&mut kind, rest)?,
                "user" => set(&mut user, value)?,
                "uid" => set(&mut uid, value)?,
                "gid" => set(&mut gid, value)?,
                "role" => set(&mut role, value)?,
                _ => return Err(malformed()),
            }
        }
        let malformed = |what: &str| IdentityError::Malformed(format!("{SCHEME}{what}"));
        match (kind, user) {
            (Some(_), Some(_)) => Err(IdentityError::Ambiguous),
            (None, None) => Err(IdentityError::Anonymous),
            (Some(k), None) => {
                if uid.is_some() || gid.is_some() || role.is_some() {
                    return Err(IdentityError::Ambiguous);
                }
                match k.split_once(':') {
                    Some(("node", name)) => {
                        check_name("node", name)?;
                        Ok(Principal::Node(name.to_owned()))
                    }
                    Some(("controller", id)) => match id.parse::<u64>() {
                        Ok(id) if id > 0 => Ok(Principal::Controller(id)),
                        _ => Err(malformed(&k)),
                    },
                    _ => Err(malformed(&k)),
                }
            }
            (None, Some(name)) => {
                check_name("user", &name)?;
                let num = |what: &str, v: Option<String>| {
                    v.as_deref()
                        .and_then(|v| v.parse::<u32>().ok())
                        .ok_or_else(|| malformed(&format!("{what}:{}", v.unwrap_or_default())))
                };
                let role = match role.as_deref() {
                    None => Role::User,
                    Some("admin") => Role::Admin,
                    Some(r) => match r.strip_prefix("operator:") {
                        Some(op) => {
                            check_name("operator", op)?;
                            Role::Operator(op.to_owned())
                        }
                        None => return Err(malformed(&format!("role:{r}"))),
                    },
                };
                Ok(Principal::User(User {
                    uid: num("uid", uid)?,
                    gid: num("gid", gid)?,
                    name,
                    role,
                }))
            }
        }
    }
}

/// The hash a token is known by: blake3 in derive-key mode, so it is no other hash of the
/// same bytes. Tokens are 256 random bits: a plain hash is enough to keep them secret.
pub fn token_hash(secret: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("chorus token v1");
    h.update(secret.trim().as_bytes());
    *h.finalize().as_bytes()
}

/// Bytes of a token's hash shown as its id (enough to tell tokens apart, not to guess one).
pub const TOKEN_ID_BYTES: usize = 6;

/// A token's id: the first bytes of its hash, in hex. Ids are shown and used to revoke.
pub fn token_id(hash: &[u8; 32]) -> String {
    hex(&hash[..TOKEN_ID_BYTES])
}

/// What a token lets its holder be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Grant {
    /// Join nodes under this operator (`noded --join-token`).
    Join { operator: String },
    /// Act as this user (`authorization: Bearer ...`).
    User(User),
}

/// A token the state knows, by its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub grant: Grant,
    /// Seconds since the epoch after which it is refused; 0: never.
    pub expires: u64,
    pub issued_by: String,
    pub issued_at: u64,
}

impl Token {
    pub fn live(&self, now: u64) -> bool {
        self.expires == 0 || now < self.expires
    }
}

/// A node that joined: the operator whose token it used, and the key its certificate is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinedNode {
    pub operator: String,
    pub public_key: [u8; 32],
    pub joined_at: u64,
}

/// The replicated part of identities: tokens (by hash) and the nodes that joined.
/// Certificates need no state: the CA's signature is their proof.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identities {
    pub tokens: BTreeMap<[u8; 32], Token>,
    pub nodes: BTreeMap<String, JoinedNode>,
}

impl Identities {
    /// Records a token by its hash, forgetting tokens that expired by `now`.
    pub fn issue(&mut self, hash: [u8; 32], token: Token, now: u64) -> Result<(), IdentityError> {
        match &token.grant {
            Grant::Join { operator } => check_name("operator", operator)?,
            Grant::User(u) => {
                check_name("user", &u.name)?;
                if let Some(op) = u.operator() {
                    check_name("operator", op)?;
                }
            }
        }
        self.tokens.retain(|_, t| t.live(now));
        if self.tokens.contains_key(&hash) {
            return Err(IdentityError::DuplicateToken);
        }
        self.tokens.insert(hash, token);
        Ok(())
    }

    /// Forgets the one token whose id starts with `id` (hex).
    pub fn revoke(&mut self, id: &str) -> Result<Token, IdentityError> {
        let id = id.to_ascii_lowercase();
        let matching: Vec<[u8; 32]> = self
            .tokens
            .keys()
            .filter(|h| !id.is_empty() && hex(&h[..]).starts_with(&id))
            .copied()
            .collect();
        match matching[..] {
            [] => Err(IdentityError::NoSuchToken(id)),
            [one] => Ok(self.tokens.remove(&one).expect("listed")),
            _ => Err(IdentityError::AmbiguousTokenId(id)),
        }
    }

    /// A live token's grant.
    pub fn token(&self, hash: &[u8; 32], now: u64) -> Result<&Grant, IdentityError> {
        self.tokens
            .get(hash)
            .filter(|t| t.live(now))
            .map(|t| &t.grant)
            .ok_or(IdentityError::UnknownToken)
    }

    /// The user a bearer token stands for.
    pub fn user_token(&self, hash: &[u8; 32], now: u64) -> Result<&User, IdentityError> {
        match self.token(hash, now)? {
            Grant::User(u) => Ok(u),
            Grant::Join { .. } => Err(IdentityError::JoinTokenForCommands),
        }
    }

    /// Joins `node` with `public_key` under the operator of the join token `hash`. A node
    /// keeps the operator and the key it first joined with; joining again with both (a lost
    /// certificate) is allowed. `known_key`: the key the node registered with before it ever
    /// joined, if any.
    pub fn join(
        &mut self,
        node: &str,
        public_key: [u8; 32],
        hash: &[u8; 32],
        known_key: Option<[u8; 32]>,
        now: u64,
    ) -> Result<String, IdentityError> {
        check_name("node", node)?;
        let operator = match self.token(hash, now)? {
            Grant::Join { operator } => operator.clone(),
            Grant::User(_) => return Err(IdentityError::NotAJoinToken),
        };
        if let Some(j) = self.nodes.get(node) {
            if j.operator != operator {
                return Err(IdentityError::NodeOfAnotherOperator {
                    node: node.to_owned(),
                    operator: j.operator.clone(),
                });
            }
            if j.public_key != public_key {
                return Err(IdentityError::KeyMismatch(node.to_owned()));
            }
            return Ok(operator);
        }
        if known_key.is_some_and(|k| k != public_key) {
            return Err(IdentityError::KeyMismatch(node.to_owned()));
        }
        self.nodes.insert(
            node.to_owned(),
            JoinedNode { operator: operator.clone(), public_key, joined_at: now },
        );
        Ok(operator)
    }

    /// The operator a node joined under.
    pub fn operator_of(&self, node: &str) -> Option<&str> {
        self.nodes.get(node).map(|j| j.operator.as_str())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Tags a join proof.
const JOIN_DOMAIN: &[u8] = b"chorus join v1\0";

fn join_bytes(node: &str, public_key: &[u8; 32], token: &[u8; 32]) -> Vec<u8> {
    let mut b = JOIN_DOMAIN.to_vec();
    b.extend_from_slice(&(node.len() as u64).to_le_bytes());
    b.extend_from_slice(node.as_bytes());
    b.extend_from_slice(public_key);
    b.extend_from_slice(token);
    b
}

/// A node's proof, when it joins, that it holds its key: a signature over its name, the key
/// and the hash of the join token it presents.
pub fn join_proof(seed: &[u8; 32], node: &str, token: &[u8; 32]) -> [u8; 64] {
    let key = SigningKey::from_bytes(seed);
    key.sign(&join_bytes(node, &key.verifying_key().to_bytes(), token)).to_bytes()
}

/// Checks a join proof; returns the key it proves.
pub fn verify_join(
    node: &str,
    public_key: &[u8],
    token: &[u8; 32],
    proof: &[u8],
) -> Result<[u8; 32], IdentityError> {
    let key: [u8; 32] = public_key.try_into().map_err(|_| IdentityError::BadProof)?;
    let verifying = VerifyingKey::from_bytes(&key).map_err(|_| IdentityError::BadProof)?;
    let sig: &[u8; 64] = proof.try_into().map_err(|_| IdentityError::BadProof)?;
    verifying
        .verify(&join_bytes(node, &key, token), &Signature::from_bytes(sig))
        .map_err(|_| IdentityError::BadProof)?;
    Ok(key)
}

/// Why a user may not do what they asked. Each says who may.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("Access/permission denied: job {job} belongs to {owner} (uid {uid})")]
    NotYourJob { job: u32, owner: String, uid: u32 },
    #[error("Access/permission denied: {what} is for administrators")]
    AdminOnly { what: &'static str },
    #[error("Access/permission denied: {user} acts for no operator")]
    NotAnOperator { user: String },
    #[error("Access/permission denied: you act for operator {yours}, not {asked}")]
    OtherOperator { yours: String, asked: String },
    #[error("Access/permission denied: node {node} is operator {owner}'s")]
    OtherOperatorsNode { node: String, owner: String },
    #[error("Access/permission denied: node {node} has not joined under any operator")]
    NodeNotJoined { node: String },
}

/// Cancel, signal, hold, release, update, requeue, output: the job's owner or an admin.
pub fn may_touch_job(user: &User, job: &Job) -> Result<(), Denied> {
    if user.is_admin() || job.spec.uid == user.uid {
        Ok(())
    } else {
        Err(Denied::NotYourJob { job: job.id, owner: job.spec.user.clone(), uid: job.spec.uid })
    }
}

/// What only administrators do (deposits, credentials, the controller group).
pub fn admin_only(user: &User, what: &'static str) -> Result<(), Denied> {
    if user.is_admin() { Ok(()) } else { Err(Denied::AdminOnly { what }) }
}

/// Drain or resume a node: an admin, or the operator the node joined under.
pub fn may_set_node(user: &User, node: &str, ids: &Identities) -> Result<(), Denied> {
    if user.is_admin() {
        return Ok(());
    }
    let Some(mine) = user.operator() else {
        return Err(Denied::NotAnOperator { user: user.name.clone() });
    };
    match ids.operator_of(node) {
        Some(owner) if owner == mine => Ok(()),
        Some(owner) => Err(Denied::OtherOperatorsNode { node: node.into(), owner: owner.into() }),
        None => Err(Denied::NodeNotJoined { node: node.into() }),
    }
}

/// Bond or unbond `operator`'s stake on `node`: an admin, or that operator for a node that
/// joined under it.
pub fn may_stake(user: &User, operator: &str, node: &str, ids: &Identities) -> Result<(), Denied> {
    if user.is_admin() {
        return Ok(());
    }
    match user.operator() {
        None => Err(Denied::NotAnOperator { user: user.name.clone() }),
        Some(mine) if mine != operator => {
            Err(Denied::OtherOperator { yours: mine.into(), asked: operator.into() })
        }
        Some(_) => may_set_node(user, node, ids),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobSpec;

    fn alice() -> User {
        User { name: "alice".into(), uid: 1001, gid: 100, role: Role::User }
    }

    fn with_role(role: Role) -> User {
        User { role, ..alice() }
    }

    #[test]
    fn every_principal_reads_back_from_its_uris() {
        for p in [
            Principal::User(alice()),
            Principal::User(with_role(Role::Admin)),
            Principal::User(with_role(Role::Operator("op1".into()))),
            Principal::Node("node-1.example".into()),
            Principal::Controller(3),
        ] {
            let uris = p.uris();
            assert_eq!(Principal::from_uris(uris.iter().map(String::as_str)), Ok(p));
        }
    }

    #[test]
    fn a_certificate_naming_two_principals_or_half_of_one_names_none() {
        let read = |uris: &[&str]| Principal::from_uris(uris.iter().copied());
        assert_eq!(read(&["https://example.org"]), Err(IdentityError::Anonymous));
        assert_eq!(read(&["chorus:node:a", "chorus:node:b"]), Err(IdentityError::Ambiguous));
        assert_eq!(read(&["chorus:node:a", "chorus:user:b"]), Err(IdentityError::Ambiguous));
        assert_eq!(read(&["chorus:node:a", "chorus:role:admin"]), Err(IdentityError::Ambiguous));
        assert!(matches!(
            read(&["chorus:user:a", "chorus:uid:1"]),
            Err(IdentityError::Malformed(_))
        ));
        assert!(matches!(
            read(&["chorus:user:a", "chorus:uid:1", "chorus:gid:1", "chorus:role:root"]),
            Err(IdentityError::Malformed(_))
        ));
        assert!(matches!(read(&["chorus:node:a b"]), Err(IdentityError::BadName { .. })));
        assert!(matches!(read(&["chorus:controller:0"]), Err(IdentityError::Malformed(_))));
        assert!(matches!(read(&["chorus:shell:x"]), Err(IdentityError::Malformed(_))));
    }

    #[test]
    fn a_token_is_known_by_its_hash_until_it_expires_or_is_revoked() {
        let mut ids = Identities::default();
        let hash = token_hash("secret-1");
        let grant = Grant::User(alice());
        let token =
            Token { grant: grant.clone(), expires: 100, issued_by: "root".into(), issued_at: 1 };
        ids.issue(hash, token.clone(), 1).unwrap();
        assert_eq!(ids.issue(hash, token.clone(), 2), Err(IdentityError::DuplicateToken));
        assert_eq!(ids.user_token(&token_hash("secret-1\n"), 50), Ok(&alice()), "a file's newline");
        assert_eq!(ids.user_token(&hash, 100), Err(IdentityError::UnknownToken), "expired");
        assert_eq!(ids.user_token(&token_hash("other"), 50), Err(IdentityError::UnknownToken));
        // Issuing another forgets the expired one.
        let other = token_hash("secret-2");
        ids.issue(other, Token { expires: 0, ..token.clone() }, 200).unwrap();
        assert!(!ids.tokens.contains_key(&hash));
        assert!(matches!(ids.revoke("ffff"), Err(IdentityError::NoSuchToken(_))));
        assert_eq!(ids.revoke(&token_id(&other)).map(|t| t.grant), Ok(grant));
        assert_eq!(ids.user_token(&other, 201), Err(IdentityError::UnknownToken), "revoked");
    }

    #[test]
    fn a_join_token_binds_a_node_to_its_operator_and_key_once() {
        let mut ids = Identities::default();
        let (t1, t2) = (token_hash("join-op1"), token_hash("join-op2"));
        let join = |op: &str| Token {
            grant: Grant::Join { operator: op.into() },
            expires: 0,
            issued_by: "root".into(),
            issued_at: 0,
        };
        ids.issue(t1, join("op1"), 0).unwrap();
        ids.issue(t2, join("op2"), 0).unwrap();
        assert_eq!(ids.user_token(&t1, 1), Err(IdentityError::JoinTokenForCommands));
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        assert_eq!(ids.join("node1", k1, &t1, None, 5), Ok("op1".into()));
        assert_eq!(ids.join("node1", k1, &t1, None, 6), Ok("op1".into()), "a lost certificate");
        assert_eq!(
            ids.join("node1", k1, &t2, None, 6),
            Err(IdentityError::NodeOfAnotherOperator {
                node: "node1".into(),
                operator: "op1".into()
            })
        );
        assert_eq!(
            ids.join("node1", k2, &t1, None, 6),
            Err(IdentityError::KeyMismatch("node1".into()))
        );
        assert_eq!(
            ids.join("node2", k2, &t2, Some(k1), 6),
            Err(IdentityError::KeyMismatch("node2".into())),
            "a name registered with another key before it joined"
        );
        assert_eq!(
            ids.join("node2", k2, &token_hash("nope"), None, 6),
            Err(IdentityError::UnknownToken)
        );
        assert_eq!(ids.operator_of("node1"), Some("op1"));
        assert_eq!(ids.operator_of("node2"), None);
    }

    #[test]
    fn a_join_proof_holds_for_its_node_key_and_token_only() {
        let seed = [5u8; 32];
        let key = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        let token = token_hash("t");
        let proof = join_proof(&seed, "node1", &token);
        assert_eq!(verify_join("node1", &key, &token, &proof), Ok(key));
        assert_eq!(verify_join("node2", &key, &token, &proof), Err(IdentityError::BadProof));
        assert_eq!(
            verify_join("node1", &key, &token_hash("u"), &proof),
            Err(IdentityError::BadProof)
        );
        assert_eq!(verify_join("node1", &[9u8; 32], &token, &proof), Err(IdentityError::BadProof));
        assert_eq!(verify_join("node1", &key, &token, &proof[..10]), Err(IdentityError::BadProof));
    }

    /// Job 7, bob's, with `uid`.
    fn job_of(uid: u32) -> Job {
        let spec = JobSpec {
            user: "bob".into(),
            uid,
            gid: uid,
            ..JobSpec::new("j", "#!/bin/sh\n", "/tmp")
        };
        let config = crate::state::ClusterConfig { first_job_id: 7, ..Default::default() };
        let mut st = crate::ClusterState::new(config);
        crate::fsm::apply(&mut st, crate::fsm::Command::Submit { spec: Box::new(spec), now: 1 })
            .expect("submitted");
        st.jobs[&7].clone()
    }

    #[test]
    fn users_touch_their_own_jobs_and_admins_every_job() {
        assert_eq!(may_touch_job(&alice(), &job_of(1001)), Ok(()));
        assert_eq!(
            may_touch_job(&alice(), &job_of(1002)),
            Err(Denied::NotYourJob { job: 7, owner: "bob".into(), uid: 1002 })
        );
        assert_eq!(may_touch_job(&with_role(Role::Admin), &job_of(1002)), Ok(()));
        let op = with_role(Role::Operator("op1".into()));
        assert!(may_touch_job(&op, &job_of(1002)).is_err(), "an operator is no admin");
        assert!(admin_only(&op, "deposits").is_err());
        assert_eq!(admin_only(&with_role(Role::Admin), "deposits"), Ok(()));
    }

    #[test]
    fn operators_act_on_their_own_nodes_only() {
        let mut ids = Identities::default();
        ids.nodes.insert(
            "node1".into(),
            JoinedNode { operator: "op1".into(), public_key: [0; 32], joined_at: 0 },
        );
        ids.nodes.insert(
            "node2".into(),
            JoinedNode { operator: "op2".into(), public_key: [0; 32], joined_at: 0 },
        );
        let op1 = with_role(Role::Operator("op1".into()));
        assert_eq!(may_stake(&op1, "op1", "node1", &ids), Ok(()));
        assert_eq!(
            may_stake(&op1, "op1", "node2", &ids),
            Err(Denied::OtherOperatorsNode { node: "node2".into(), owner: "op2".into() })
        );
        assert_eq!(
            may_stake(&op1, "op2", "node2", &ids),
            Err(Denied::OtherOperator { yours: "op1".into(), asked: "op2".into() })
        );
        assert_eq!(
            may_stake(&op1, "op1", "node9", &ids),
            Err(Denied::NodeNotJoined { node: "node9".into() })
        );
        assert_eq!(
            may_stake(&alice(), "op1", "node1", &ids),
            Err(Denied::NotAnOperator { user: "alice".into() })
        );
        assert_eq!(may_stake(&with_role(Role::Admin), "acme", "node2", &ids), Ok(()));
        assert_eq!(may_set_node(&op1, "node1", &ids), Ok(()));
        assert!(may_set_node(&op1, "node2", &ids).is_err());
        assert!(may_set_node(&alice(), "node1", &ids).is_err());
    }
}
