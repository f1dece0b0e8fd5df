//! Following the leader of a controller group, for every client (the CLI, `noded`).
//!
//! ```text
//!   call(f) ──▶ current controller ──ok──────────────────────────▶ reply
//!                    │ UNAVAILABLE + `chorus-leader: ADDR` ──▶ retry at ADDR
//!                    │ UNAVAILABLE / no answer ──────────────▶ retry at the next one (backoff)
//!                    └ any other error ──────────────────────▶ the caller's
//! ```
//!
//! A follower refuses what only the leader may do with `UNAVAILABLE` and, when it knows the
//! leader, that leader's client address in the response metadata [`LEADER_HEADER`]
//! (Slurm's commands likewise walk the `SlurmctldHost` list). Retrying is safe for reads,
//! and for submissions because they carry a request id the controller applies once.

use std::future::Future;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, ClientTlsConfig};
use tonic::{Code, Status};

use crate::tls::https;

/// Metadata key of a follower's refusal: the leader's client address.
pub const LEADER_HEADER: &str = "chorus-leader";

/// The longest one attempt at one controller may take before the next is tried.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(6);
/// Even with little patience left, an attempt gets this long.
const MIN_ATTEMPT: Duration = Duration::from_millis(500);

/// The refusal a follower sends: `UNAVAILABLE`, naming the leader when it knows one.
pub fn not_leader(leader: Option<&str>) -> Status {
    let mut s = Status::unavailable(match leader {
        Some(l) => format!("this controller is not the leader; the leader is {l}"),
        None => "this controller is not the leader, and no leader is known yet".into(),
    });
    if let Some(v) = leader.and_then(|l| l.parse().ok()) {
        s.metadata_mut().insert(LEADER_HEADER, v);
    }
    s
}

/// The leader a refusal names, if any.
pub fn leader_hint(s: &Status) -> Option<String> {
    s.metadata().get(LEADER_HEADER)?.to_str().ok().map(str::to_owned)
}

/// An error and every error it came from, in one line: TLS failures hide under "transport
/// error".
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
        next = s.source();
    }
    out
}

/// A failed call's status, rewritten when TLS is why: a certificate one side refused is
/// refused again wherever the call is retried, and its cause is what the user must read.
/// Only transport failures are rewritten; a controller's own answer is kept.
pub fn tls_refusal(s: Status) -> Status {
    if !matches!(s.code(), Code::Unavailable | Code::Unknown) {
        return s;
    }
    let text = match std::error::Error::source(&s) {
        Some(src) => format!("{}: {}", s.message(), chain(src)),
        None => s.message().to_owned(),
    };
    if let Some(i) = text.find("received fatal alert") {
        // The controller ended the handshake: it did not take our certificate.
        Status::unauthenticated(format!(
            "certificate not accepted by the controller ({}): a client certificate must come \
             from this cluster's CA and be valid (`chorus user cert`)",
            &text[i..]
        ))
    } else if let Some(i) = text.find("invalid peer certificate") {
        Status::unauthenticated(format!(
            "the controller's certificate is not from the cluster CA this client trusts ({}): \
             check `ca` in the client configuration",
            &text[i..]
        ))
    } else {
        s
    }
}

/// Whether trying again (elsewhere) may succeed: no leader here, or nobody answered.
pub fn retryable(s: &Status) -> bool {
    match s.code() {
        Code::Unavailable => true,
        // A connection that breaks mid-call (a controller killed) surfaces as UNKNOWN.
        Code::Unknown => {
            let m = s.message();
            m.contains("transport")
                || m.contains("connection")
                || m.contains("h2 protocol")
                || m.contains("operation was canceled")
        }
        // The connection went away under the call before any answer: a controller that
        // stopped, or (TLS 1.3) one that refused our certificate after the handshake seemed
        // done and closed before its alert was read. A new connection tells which.
        Code::Cancelled => s.message().contains("operation was canceled"),
        _ => false,
    }
}

/// The controllers a client knows, and a connection to the one it believes leads.
#[derive(Debug, Clone)]
pub struct Controllers {
    addrs: Vec<String>,
    current: usize,
    channel: Option<Channel>,
    max_message: usize,
    tls: ClientTlsConfig,
}

impl Controllers {
    /// `addrs`: `host:port` (or URLs) of the controllers, as configured; `tls`: the cluster
    /// CA to check them by, and the client's certificate if it has one
    /// ([`crate::tls::client_tls`]).
    pub fn new(addrs: &[String], tls: ClientTlsConfig) -> Self {
        Self {
            addrs: addrs.iter().map(|a| https(a)).collect(),
            current: 0,
            channel: None,
            max_message: crate::MAX_MESSAGE_BYTES,
            tls,
        }
    }

    /// The same controllers, reached with another TLS configuration (a node that just
    /// joined, now with its certificate).
    pub fn with_tls(&self, tls: ClientTlsConfig) -> Self {
        Self { channel: None, tls, ..self.clone() }
    }

    /// The controller the next call goes to.
    pub fn current(&self) -> &str {
        &self.addrs[self.current]
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    pub fn max_message(&self) -> usize {
        self.max_message
    }

    async fn channel(&mut self) -> Result<Channel, Status> {
        if let Some(ch) = &self.channel {
            return Ok(ch.clone());
        }
        let ep = crate::tls::endpoint(self.current(), &self.tls)
            .map_err(|e| {
                Status::invalid_argument(format!("bad controller address: {}", chain(&e)))
            })?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true);
        let ch = ep.connect().await.map_err(|e| {
            tls_refusal(Status::unavailable(format!(
                "cannot connect to {}: {}",
                self.current(),
                chain(&e)
            )))
        })?;
        self.channel = Some(ch.clone());
        Ok(ch)
    }

    fn go_to(&mut self, leader: &str) {
        let leader = https(leader);
        self.current = match self.addrs.iter().position(|a| *a == leader) {
            Some(i) => i,
            None => {
                // A controller added after this client read its configuration.
                self.addrs.push(leader);
                self.addrs.len() - 1
            }
        };
        self.channel = None;
    }

    fn next(&mut self) {
        self.current = (self.current + 1) % self.addrs.len();
        self.channel = None;
    }

    /// Calls `f` on the leader: follows redirects, and tries the next controller when one
    /// does not answer, until `patience` is spent. Then the last error is returned.
    pub async fn call<T, F, Fut>(&mut self, patience: Duration, mut f: F) -> Result<T, Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + patience;
        let mut backoff = Duration::from_millis(50);
        loop {
            // One controller that takes a request and never answers must not hold the call:
            // after a while, the next one is tried.
            let attempt = ATTEMPT_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
            let result = match self.channel().await {
                Ok(ch) => match tokio::time::timeout(attempt.max(MIN_ATTEMPT), f(ch)).await {
                    Ok(r) => r.map(tonic::Response::into_inner).map_err(tls_refusal),
                    Err(_) => Err(Status::unavailable(format!(
                        "{} did not answer within {attempt:?}",
                        self.current()
                    ))),
                },
                Err(e) => Err(e),
            };
            let err = match result {
                Ok(v) => return Ok(v),
                Err(e) if retryable(&e) => e,
                Err(e) => return Err(e),
            };
            if Instant::now() >= deadline {
                return Err(err);
            }
            match leader_hint(&err) {
                Some(leader) if https(&leader) != self.current() => self.go_to(&leader),
                _ => {
                    self.next();
                    // A whole round without an answer: an election is under way, or all
                    // are down. Wait a little before the next round.
                    if self.current == 0 || self.addrs.len() == 1 {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> ClientTlsConfig {
        let ca = crate::tls::Ca::create("test", 1_800_000_000).unwrap();
        crate::tls::client_tls(ca.cert_pem(), None)
    }

    #[test]
    fn a_refused_certificate_is_not_retried_and_says_why() {
        let s = tls_refusal(Status::unknown("transport error: received fatal alert: UnknownCA"));
        assert_eq!(s.code(), Code::Unauthenticated);
        assert!(s.message().starts_with("certificate not accepted"), "{}", s.message());
        assert!(s.message().contains("UnknownCA"), "{}", s.message());
        assert!(!retryable(&s));
        let theirs = tls_refusal(Status::unavailable("invalid peer certificate: UnknownIssuer"));
        assert!(theirs.message().contains("check `ca`"), "{}", theirs.message());
        let answer = tls_refusal(Status::unauthenticated("no credentials: ... certificate ..."));
        assert!(answer.message().starts_with("no credentials"), "the controller's own answer");
        let plain = tls_refusal(Status::unavailable("connection refused"));
        assert_eq!(plain.code(), Code::Unavailable);
    }

    #[test]
    fn a_refusal_names_the_leader() {
        let s = not_leader(Some("127.0.0.1:6818"));
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(leader_hint(&s).as_deref(), Some("127.0.0.1:6818"));
        assert!(retryable(&s));
        assert_eq!(leader_hint(&not_leader(None)), None);
    }

    #[test]
    fn only_unavailability_is_retried() {
        assert!(!retryable(&Status::failed_precondition("Invalid job id specified")));
        assert!(!retryable(&Status::invalid_argument("bad")));
        assert!(retryable(&Status::unknown("transport error")));
        assert!(retryable(&Status::cancelled("operation was canceled")));
        assert!(!retryable(&Status::cancelled("the client gave up")));
    }

    #[test]
    fn a_redirect_to_an_unknown_controller_is_remembered() {
        let mut c = Controllers::new(&["127.0.0.1:1".into(), "127.0.0.1:2".into()], tls());
        c.go_to("127.0.0.1:2");
        assert_eq!(c.current(), "https://127.0.0.1:2");
        c.go_to("127.0.0.1:3");
        assert_eq!(c.current(), "https://127.0.0.1:3");
        assert_eq!(c.addrs().len(), 3);
        c.next();
        assert_eq!(c.current(), "https://127.0.0.1:1");
    }

    #[tokio::test]
    async fn nobody_answering_is_an_error_after_patience() {
        // Port 1 on loopback: refused at once.
        let mut c = Controllers::new(&["127.0.0.1:1".into()], tls());
        let started = Instant::now();
        let r: Result<(), Status> =
            c.call(Duration::from_millis(300), |_ch| async { Ok(tonic::Response::new(())) }).await;
        assert_eq!(r.unwrap_err().code(), Code::Unavailable);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
