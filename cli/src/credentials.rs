//! Making credentials: tokens (a random secret; the controllers learn only its hash) and
//! user certificates (the key is made here and never leaves; the controller, or the CA's
//! files for `--ca-dir` and `chorus up`, sign its public half).
//!
//! ```text
//!   chorus operator token OP ─▶ new_token ─▶ IssueToken{hash, join OP}   ─▶ print the secret
//!   chorus user token NAME   ─▶ new_token ─▶ IssueToken{hash, user}      ─▶ print the secret
//!   chorus user cert NAME    ─▶ new_client_key ─▶ IssueCertificate{user, public key}
//!                               (or Ca::issue_user with --ca-dir) ─▶ DIR/NAME.crt, NAME.key, ca.crt
//! ```

use std::path::{Path, PathBuf};

use chorus_core::identity::{Role, User, token_hash};
use chorus_proto::client as pb;
use chorus_proto::tls::{self, Ca, write_private};

use crate::{Ctl, rpc};

/// A new token: 256 random bits, in hex, behind a prefix that says what it is.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("chorus_{hex}")
}

/// `0` (never), `N` seconds, or `N` followed by s, m, h or d.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let bad = || format!("`{s}`: a duration is N, Ns, Nm, Nh or Nd (0: never expires)");
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let unit = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(unit).ok_or_else(bad)
}

/// The user a credential is for, from the command's flags.
pub fn user(name: &str, uid: u32, gid: Option<u32>, admin: bool, operator: Option<String>) -> User {
    let role = match (admin, operator) {
        (true, _) => Role::Admin,
        (false, Some(op)) => Role::Operator(op),
        (false, None) => Role::User,
    };
    User { name: name.to_owned(), uid, gid: gid.unwrap_or(uid), role }
}

/// Files a user certificate was written to.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl CertFiles {
    /// The lines of a client configuration that use these files.
    pub fn conf_lines(&self) -> String {
        format!(
            "ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            self.ca.display(),
            self.cert.display(),
            self.key.display()
        )
    }
}

fn write_cert(
    dir: &Path,
    name: &str,
    cert: &str,
    key_pem: &str,
    ca: &str,
) -> anyhow::Result<CertFiles> {
    std::fs::create_dir_all(dir)?;
    let files = CertFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
        ca: dir.join("ca.crt"),
    };
    write_private(&files.key, key_pem)?;
    std::fs::write(&files.cert, cert)?;
    std::fs::write(&files.ca, ca)?;
    Ok(files)
}

/// A certificate for `user` signed with the CA's own files (the CA's holder only).
pub fn cert_from_ca(
    ca: &Ca,
    user: &User,
    days: u64,
    dir: &Path,
    now: u64,
) -> anyhow::Result<CertFiles> {
    let (key_pem, spki) = tls::new_client_key()?;
    let cert = ca.issue_user(user, &spki, days, now)?;
    write_cert(dir, &user.name, &cert, &key_pem, ca.cert_pem())
}

/// A certificate for `user` signed by the controller (an administrator's call).
pub async fn cert_from_controller(
    ctl: &mut Ctl,
    user: &User,
    days: u64,
    dir: &Path,
) -> anyhow::Result<CertFiles> {
    let (key_pem, spki) = tls::new_client_key()?;
    let req = pb::IssueCertificateRequest { user: Some(user.into()), public_key: spki, days };
    let r = rpc!(ctl, issue_certificate, req)?;
    write_cert(dir, &user.name, &r.certificate, &key_pem, &r.ca)
}

/// Issues a token through the controller: a join token for `operator`'s nodes, or a user's.
/// Returns the secret and the controller's reply (id, expiry).
pub async fn issue_token(
    ctl: &mut Ctl,
    grant: Result<String, &User>,
    ttl_secs: u64,
) -> anyhow::Result<(String, pb::IssueTokenReply)> {
    let secret = new_token();
    let (join_operator, user) = match grant {
        Ok(op) => (op, None),
        Err(u) => (String::new(), Some(u.into())),
    };
    let req =
        pb::IssueTokenRequest { hash: token_hash(&secret).to_vec(), join_operator, user, ttl_secs };
    let r = rpc!(ctl, issue_token, req)?;
    Ok((secret, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_slurm_like_units_and_zero_means_never() {
        assert_eq!(parse_ttl("0"), Ok(0));
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("24h"), Ok(86_400));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }

    #[test]
    fn tokens_are_long_random_and_distinct() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with("chorus_") && a.len() == 7 + 64, "{a}");
    }

    #[test]
    fn a_certificate_from_the_cas_files_is_the_users_with_a_private_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create("t", 1_800_000_000).unwrap();
        let u = user("alice", 1001, None, false, Some("op1".into()));
        let files = cert_from_ca(&ca, &u, 30, dir.path(), 1_800_000_000).unwrap();
        let info = tls::cert_info_pem(&std::fs::read_to_string(&files.cert).unwrap()).unwrap();
        assert_eq!(info.principal, chorus_core::identity::Principal::User(u.clone()));
        assert_eq!(u.gid, 1001, "the gid defaults to the uid");
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(files.conf_lines().contains("alice.key"));
    }
}
