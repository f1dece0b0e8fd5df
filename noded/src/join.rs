//! Joining the cluster: the node's certificate, from its stored copy or from the controller.
//!
//! ```text
//!   start ──▶ keys/node.crt for this name and key, > 30 days left ──▶ use it
//!         ──▶ else, given a join token: Join{name, key, proof, token} over TLS that checks the
//!             controller by the cluster CA ──▶ keys/node.crt ──▶ use it
//!             (a controller not answering: try again; a refusal: stop, saying why)
//!         ──▶ else: stop, saying how to get a token
//! ```

use std::path::PathBuf;
use std::time::Duration;

use chorus_core::identity::{join_proof, token_hash};
use chorus_proto::leader::{Controllers, retryable};
use chorus_proto::node::{self as pn, join_client::JoinClient};
use chorus_proto::tls::client_tls;
use tracing::{info, warn};

use crate::identity::{StoredCert, save_cert, stored_cert};

pub struct JoinConfig {
    pub name: String,
    pub state_dir: PathBuf,
    /// The node's ed25519 secret seed (identity.rs).
    pub seed: [u8; 32],
    /// The cluster CA's certificate (PEM): the only one the node believes a controller by.
    pub ca_pem: String,
    pub controllers: Vec<String>,
    /// From `--join-token` or `--join-token-file`.
    pub token: Option<String>,
}

/// How long one attempt looks for a leader before the agent says so and tries again.
const PATIENCE: Duration = Duration::from_secs(30);

/// The node's certificate (PEM): the stored one if it still fits, else one from joining.
pub async fn certificate(cfg: &JoinConfig, now: u64) -> anyhow::Result<String> {
    let stored = stored_cert(&cfg.state_dir, &cfg.name, &cfg.seed, now);
    let token = match (stored, &cfg.token) {
        (StoredCert::Good(pem), _) => return Ok(pem),
        (StoredCert::Expiring(pem), None) => {
            warn!(
                "the node's certificate expires within 30 days: start noded with --join-token to renew it"
            );
            return Ok(pem);
        }
        (StoredCert::Expiring(_), Some(t)) => {
            info!("the node's certificate expires soon: joining again to renew it");
            t
        }
        (StoredCert::Unusable(why), Some(t)) => {
            info!(%why, "joining the cluster with the join token");
            t
        }
        (StoredCert::Unusable(why), None) => anyhow::bail!(
            "node {} has no certificate to speak to the controller with ({why}), and no join token: \
             ask an administrator for a join token for your operator (`chorus operator token OPERATOR`) \
             and start noded with --join-token-file FILE (or --join-token TOKEN)",
            cfg.name
        ),
    };
    let hash = token_hash(token);
    let req = pn::JoinRequest {
        name: cfg.name.clone(),
        public_key: chorus_core::attest::public_key(&cfg.seed).to_vec(),
        proof: join_proof(&cfg.seed, &cfg.name, &hash).to_vec(),
        token: token.trim().to_owned(),
    };
    let mut ctl = Controllers::new(&cfg.controllers, client_tls(&cfg.ca_pem, None));
    let reply = loop {
        let r = ctl
            .call(PATIENCE, |ch| {
                let req = req.clone();
                async move { JoinClient::new(ch).join(req).await }
            })
            .await;
        match r {
            Ok(reply) => break reply,
            Err(e) if retryable(&e) => {
                warn!(error = %e.message(), "no controller took the join yet, trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => anyhow::bail!("node {}: {}", cfg.name, e.message()),
        }
    };
    save_cert(&cfg.state_dir, &reply.certificate).map_err(anyhow::Error::msg)?;
    info!(operator = %reply.operator, "joined the cluster: certificate kept in {}", crate::identity::cert_path(&cfg.state_dir).display());
    Ok(reply.certificate)
}
