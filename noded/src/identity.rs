//! The node's ed25519 key: made once, at first start, and kept in `STATE_DIR/keys/node.key`
//! (the 32-byte secret seed, mode 0600, in a 0700 directory). Jobs never see it: the state
//! directory is hidden from them (isolation.rs). The controller binds a node's name to the
//! first key it registers with, and checks attestations against it.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;

/// Where the key lives under a state directory.
pub fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join("keys").join("node.key")
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
