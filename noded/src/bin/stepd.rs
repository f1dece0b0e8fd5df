//! `stepd`: runs one job's script for noded (stepd.rs). Not meant to be started by hand.

use clap::Parser;

fn main() {
    chorus_noded::stepd::main(chorus_noded::stepd::StepPlan::parse())
}
