//! `noded`: the Chorus node agent (its flags and start-up are `chorus_noded::daemon`).

use std::sync::Arc;

use chorus_noded::agent::Honest;
use chorus_noded::daemon::{Args, main as daemon};
use clap::Parser;

fn main() -> anyhow::Result<()> {
    daemon(Args::parse(), Arc::new(Honest))
}
