//! chorus-proto: the gRPC API and the only place wire data becomes domain data.
//!
//! ```text
//!   client ──pb::client::JobSpec──▶ TryFrom ──▶ chorus_core::JobSpec   (re-parses Slurm syntax)
//!   noded  ──pb::node::*──────────▶ TryFrom ──▶ NodeRegistration, JobReport, HealthReport
//!                                                (names the bad field)
//!   ctld   ──LaunchSpec───────────▶ pb::node::Launch ──▶ TryFrom ──▶ LaunchSpec (noded side)
//! ```
//!
//! Read replies (job and node listings) carry bincode-encoded core types: they flow from the
//! controller to its own CLI only, never from an untrusted party, and the message size limit
//! bounds them. Everything a node or a user sends is an explicit protobuf message.

pub mod client {
    tonic::include_proto!("chorus.client.v1");
}

pub mod node {
    tonic::include_proto!("chorus.node.v1");
}

pub mod peer {
    tonic::include_proto!("chorus.peer.v1");
}

pub mod leader;
pub mod tls;

mod convert;

pub use convert::{
    CheckedRegistration, HealthReport, MAX_OUTPUT_GLOBS, MAX_REPORTED_FILES, ReportWithOutputs,
    WireError, decode_bincode, encode_bincode,
};

/// The largest message any Chorus service accepts or sends (job outputs travel in reports).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
