//! The node's ed25519 key: made once, at first start, and kept in `STATE_DIR/keys/node.key`
//! (the 32-byte secret seed, mode 0600, in a 0700 directory). Jobs never see it: the state
//! directory is hidden from them (isolation.rs). The controller binds a node's name to the
//! first key it registers with, and checks attestations against it.
//!
//! Beside it, `STATE_DIR/keys/node.crt`: the certificate the controller issued when the node
//! joined (join.rs), for this key and naming this node; every call to the controller shows
//! it (mutual TLS).

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;

/// Where the key lives under a state directory.
pub fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join("keys").join("node.key")
}

/// Where the node's certificate lives under a state directory.
pub fn cert_path(state_dir: &Path) -> PathBuf {
    state_dir.join("keys").join("node.crt")
}

/// Why a stored certificate cannot be used as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredCert {
    /// For this node and key, with more than [`RENEW_BEFORE_SECS`] left.
    Good(String),
    /// For this node and key, but expiring soon (or expired): join again if a token is given.
    Expiring(String),
    /// None, or for another name or key: joining is the only way.
    Unusable(String),
}

/// A certificate with less than this left is renewed when the node is given a join token.
pub const RENEW_BEFORE_SECS: i64 = 30 * 86_400;

/// Reads the stored certificate and says whether it fits `name`, `seed` and `now`.
pub fn stored_cert(state_dir: &Path, name: &str, seed: &[u8; 32], now: u64) -> StoredCert {
    let path = cert_path(state_dir);
    let Ok(pem) = std::fs::read_to_string(&path) else {
        return StoredCert::Unusable(format!("no certificate in {}", path.display()));
    };
    let info = match chorus_proto::tls::cert_info_pem(&pem) {
        Ok(i) => i,
        Err(e) => return StoredCert::Unusable(format!("{}: {e}", path.display())),
    };
    if info.principal != chorus_core::identity::Principal::Node(name.to_owned()) {
        return StoredCert::Unusable(format!(
            "{} names {}, not node {name}",
            path.display(),
            info.principal
        ));
    }
    if info.public_key[..] != chorus_core::attest::public_key(seed)[..] {
        return StoredCert::Unusable(format!("{} is for another key", path.display()));
    }
    if info.not_after - (now as i64) < RENEW_BEFORE_SECS {
        return StoredCert::Expiring(pem);
    }
    StoredCert::Good(pem)
}

/// Keeps the certificate a join gave.
pub fn save_cert(state_dir: &Path, pem: &str) -> Result<(), String> {
    let path = cert_path(state_dir);
    std::fs::write(&path, pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// The node's secret seed: read from its file, or made and written there the first time.
/// A key file others may read, or of the wrong size, is an error that says so.
pub fn load_or_create(state_dir: &Path) -> Result<[u8; 32], String> {
    let path = key_path(state_dir);
    let dir = path.parent().expect("a file in keys/");
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let shown = path.display();
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
        Ok(mut f) => {
            let mut seed = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut seed);
            f.write_all(&seed).and_then(|()| f.sync_all()).map_err(|e| format!("{shown}: {e}"))?;
            Ok(seed)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut f = std::fs::File::open(&path).map_err(|e| format!("{shown}: {e}"))?;
            let mode = f.metadata().map_err(|e| format!("{shown}: {e}"))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(format!(
                    "{shown} is readable by others (mode {:o}): chmod 600 it",
                    mode & 0o777
                ));
            }
            let mut seed = [0u8; 32];
            let mut rest = vec![];
            f.read_exact(&mut seed).map_err(|_| format!("{shown}: not a 32-byte key"))?;
            f.read_to_end(&mut rest).map_err(|e| format!("{shown}: {e}"))?;
            if !rest.is_empty() {
                return Err(format!("{shown}: not a 32-byte key"));
            }
            Ok(seed)
        }
        Err(e) => Err(format!("{shown}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_kept_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        assert_eq!(load_or_create(dir.path()).unwrap(), first, "the same key after a restart");
        let meta = std::fs::metadata(key_path(dir.path())).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap(), first, "every node its own key");
    }

    #[test]
    fn a_stored_certificate_is_used_only_for_its_node_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let seed = load_or_create(dir.path()).unwrap();
        let now = 1_800_000_000;
        assert!(matches!(stored_cert(dir.path(), "node1", &seed, now), StoredCert::Unusable(_)));
        let ca = chorus_proto::tls::Ca::create("t", now).unwrap();
        let key = chorus_core::attest::public_key(&seed);
        save_cert(dir.path(), &ca.issue_node("node1", &key, now).unwrap()).unwrap();
        assert!(matches!(stored_cert(dir.path(), "node1", &seed, now), StoredCert::Good(_)));
        let later = now + 340 * 86_400;
        assert!(matches!(stored_cert(dir.path(), "node1", &seed, later), StoredCert::Expiring(_)));
        let why = |s| match s {
            StoredCert::Unusable(why) => why,
            other => panic!("{other:?}"),
        };
        assert!(why(stored_cert(dir.path(), "node2", &seed, now)).contains("not node node2"));
        assert!(why(stored_cert(dir.path(), "node1", &[1u8; 32], now)).contains("another key"));
    }

    #[test]
    fn a_key_others_can_read_or_of_the_wrong_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path()).unwrap();
        let path = key_path(dir.path());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create(dir.path()).unwrap_err().contains("readable by others"));
        std::fs::write(&path, b"short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_or_create(dir.path()).unwrap_err().contains("not a 32-byte key"));
    }
}
