//! What a node says about a replica it ran, and the proof it said it (issue 6, point 4).
//!
//! ```text
//!   node:  digest = result_digest(exit, [stdout, stderr, declared outputs])   (blake3)
//!          Attestation { job, replica, node, digest, exit, usage }.sign(node's ed25519 key)
//!   ctld:  attestation.verify(the key the node registered with, signature)
//!          + the replica was assigned to that node (the state machine's check)
//! ```
//!
//! The signed bytes are a fixed encoding of every field behind a domain tag, never a
//! serializer's output, so a change of serde format cannot change what a signature means.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::job::{ExitStatus, JobId, Usage};

/// Tags what is signed, so no other message a node signs can pass for an attestation.
const DOMAIN: &[u8] = b"chorus attestation v1\0";
/// Tags the digested result.
const RESULT_DOMAIN: &[u8] = b"chorus result v1\0";

/// The digest of a replica's result: its exit status and its files (`stdout`, `stderr`, and
/// the outputs the job declares), by name. Each name and content is length-prefixed, and the
/// files are taken in name order, so the same result always has the same digest and no two
/// different results share an encoding.
pub fn result_digest(exit: ExitStatus, files: &[(&str, &[u8])]) -> [u8; 32] {
    let mut sorted: Vec<&(&str, &[u8])> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = blake3::Hasher::new();
    h.update(RESULT_DOMAIN);
    h.update(&exit.code.to_le_bytes());
    h.update(&exit.signal.to_le_bytes());
    h.update(&(sorted.len() as u64).to_le_bytes());
    for (name, data) in sorted {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(&(data.len() as u64).to_le_bytes());
        h.update(data);
    }
    *h.finalize().as_bytes()
}

/// A node's statement about one replica it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    pub job: JobId,
    pub replica: u32,
    pub node: String,
    pub digest: [u8; 32],
    pub exit: ExitStatus,
    pub usage: Usage,
}

/// Why an attestation is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    #[error("the node's public key is malformed")]
    BadKey,
    #[error("the signature is malformed")]
    BadSignature,
    #[error("the signature does not match the attestation and the node's key")]
    Forged,
}

impl Attestation {
    /// What is signed: the domain tag, then every field in a fixed order and width.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(DOMAIN.len() + 128 + self.node.len());
        b.extend_from_slice(DOMAIN);
        b.extend_from_slice(&self.job.to_le_bytes());
        b.extend_from_slice(&self.replica.to_le_bytes());
        b.extend_from_slice(&(self.node.len() as u64).to_le_bytes());
        b.extend_from_slice(self.node.as_bytes());
        b.extend_from_slice(&self.digest);
        b.extend_from_slice(&self.exit.code.to_le_bytes());
        b.extend_from_slice(&self.exit.signal.to_le_bytes());
        let u = &self.usage;
        for v in [u.max_rss_kb, u.user_cpu_ms, u.sys_cpu_ms] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        match &u.gpu {
            None => b.push(0),
            Some(g) => {
                b.push(1);
                b.extend_from_slice(&g.mem_max_mb.to_le_bytes());
                b.extend_from_slice(&g.mem_ave_mb.to_le_bytes());
                b.extend_from_slice(&g.util_max_pct.to_le_bytes());
                b.extend_from_slice(&g.util_ave_pct.to_le_bytes());
            }
        }
        b
    }

    /// Signs with the node's key (its 32-byte secret seed).
    pub fn sign(&self, seed: &[u8; 32]) -> [u8; 64] {
        SigningKey::from_bytes(seed).sign(&self.signed_bytes()).to_bytes()
    }

    /// Checks `signature` against the node's public key.
    pub fn verify(&self, public_key: &[u8], signature: &[u8]) -> Result<(), AttestError> {
        let key: &[u8; 32] = public_key.try_into().map_err(|_| AttestError::BadKey)?;
        let key = VerifyingKey::from_bytes(key).map_err(|_| AttestError::BadKey)?;
        let sig: &[u8; 64] = signature.try_into().map_err(|_| AttestError::BadSignature)?;
        key.verify(&self.signed_bytes(), &Signature::from_bytes(sig))
            .map_err(|_| AttestError::Forged)
    }
}

/// Tags a registration proof.
const REGISTRATION_DOMAIN: &[u8] = b"chorus registration v1\0";

fn registration_bytes(node: &str, session: u64, public_key: &[u8; 32]) -> Vec<u8> {
    let mut b = REGISTRATION_DOMAIN.to_vec();
    b.extend_from_slice(&(node.len() as u64).to_le_bytes());
    b.extend_from_slice(node.as_bytes());
    b.extend_from_slice(&session.to_le_bytes());
    b.extend_from_slice(public_key);
    b
}

/// A node's proof that it holds the key it registers with: its signature over its name, its
/// agent session and the key.
pub fn registration_proof(seed: &[u8; 32], node: &str, session: u64) -> [u8; 64] {
    let key = public_key(seed);
    SigningKey::from_bytes(seed).sign(&registration_bytes(node, session, &key)).to_bytes()
}

/// Checks a registration proof; returns the key it proves.
pub fn verify_registration(
    node: &str,
    session: u64,
    public_key: &[u8],
    proof: &[u8],
) -> Result<[u8; 32], AttestError> {
    let key: [u8; 32] = public_key.try_into().map_err(|_| AttestError::BadKey)?;
    let verifying = VerifyingKey::from_bytes(&key).map_err(|_| AttestError::BadKey)?;
    let sig: &[u8; 64] = proof.try_into().map_err(|_| AttestError::BadSignature)?;
    verifying
        .verify(&registration_bytes(node, session, &key), &Signature::from_bytes(sig))
        .map_err(|_| AttestError::Forged)?;
    Ok(key)
}

/// The public key of a node's 32-byte secret seed, as it registers it.
pub fn public_key(seed: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(seed).verifying_key().to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::GpuUsage;
    use proptest::prelude::*;

    fn attestation() -> Attestation {
        Attestation {
            job: 42,
            replica: 1,
            node: "node3".into(),
            digest: result_digest(ExitStatus::default(), &[("stdout", b"3.14159\n")]),
            exit: ExitStatus::default(),
            usage: Usage { max_rss_kb: 9696, user_cpu_ms: 10, sys_cpu_ms: 2, gpu: None },
        }
    }

    #[test]
    fn a_signed_attestation_verifies_with_its_nodes_key_only() {
        let (seed, other) = ([7u8; 32], [8u8; 32]);
        let a = attestation();
        let sig = a.sign(&seed);
        assert_eq!(a.verify(&public_key(&seed), &sig), Ok(()));
        assert_eq!(a.verify(&public_key(&other), &sig), Err(AttestError::Forged));
        assert_eq!(a.verify(&[1, 2, 3], &sig), Err(AttestError::BadKey));
        assert_eq!(a.verify(&public_key(&seed), &sig[..10]), Err(AttestError::BadSignature));
    }

    #[test]
    fn changing_any_field_breaks_the_signature() {
        let seed = [7u8; 32];
        let a = attestation();
        let sig = a.sign(&seed);
        let key = public_key(&seed);
        let gpu = GpuUsage { mem_max_mb: 1, mem_ave_mb: 1, util_max_pct: 1, util_ave_pct: 1 };
        let changed = [
            Attestation { job: 43, ..a.clone() },
            Attestation { replica: 2, ..a.clone() },
            Attestation { node: "node4".into(), ..a.clone() },
            Attestation { digest: [0; 32], ..a.clone() },
            Attestation { exit: ExitStatus { code: 1, signal: 0 }, ..a.clone() },
            Attestation { usage: Usage { max_rss_kb: 1, ..a.usage }, ..a.clone() },
            Attestation { usage: Usage { gpu: Some(gpu), ..a.usage }, ..a.clone() },
        ];
        for c in changed {
            assert_eq!(c.verify(&key, &sig), Err(AttestError::Forged), "{c:?}");
        }
    }

    #[test]
    fn the_digest_covers_names_contents_and_exit_but_not_file_order() {
        let ok = ExitStatus::default();
        let d = result_digest(ok, &[("stdout", b"a"), ("stderr", b"")]);
        assert_eq!(d, result_digest(ok, &[("stderr", b""), ("stdout", b"a")]));
        assert_ne!(d, result_digest(ok, &[("stdout", b"b"), ("stderr", b"")]));
        assert_ne!(
            d,
            result_digest(ExitStatus { code: 1, signal: 0 }, &[("stdout", b"a"), ("stderr", b"")])
        );
        // Length prefixes: moving bytes between a name and its content changes the digest.
        assert_ne!(result_digest(ok, &[("ab", b"c")]), result_digest(ok, &[("a", b"bc")]));
    }

    #[test]
    fn a_registration_proves_the_key_for_that_node_and_session_only() {
        let seed = [9u8; 32];
        let key = public_key(&seed);
        let proof = registration_proof(&seed, "node1", 77);
        assert_eq!(verify_registration("node1", 77, &key, &proof), Ok(key));
        assert_eq!(verify_registration("node2", 77, &key, &proof), Err(AttestError::Forged));
        assert_eq!(verify_registration("node1", 78, &key, &proof), Err(AttestError::Forged));
        let other = public_key(&[1u8; 32]);
        assert_eq!(verify_registration("node1", 77, &other, &proof), Err(AttestError::Forged));
    }

    proptest! {
        #[test]
        fn different_files_never_share_a_digest(
            a in proptest::collection::vec(any::<u8>(), 0..64),
            b in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            prop_assume!(a != b);
            let ok = ExitStatus::default();
            prop_assert_ne!(result_digest(ok, &[("out", &a)]), result_digest(ok, &[("out", &b)]));
        }
    }
}
