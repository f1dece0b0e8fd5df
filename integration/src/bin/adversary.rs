//! `adversary`: a node agent that cheats, for the end-to-end tests of the trust layer
//! (`tests/adversaries.rs`). It is `noded` (same flags, same join, sandbox, signing and
//! reports) with a conduct that lies as its flags say. It is not part of any production
//! binary.
//!
//! ```text
//!   --lie P            report a wrong result with probability P (stdout replaced)
//!   --wrong TEXT       the wrong result (colluders share it); default: one of its own
//!   --honest-first N   a patient liar: honest for its first N reports, then lying
//!   --skip             report success without running anything
//!   --foreign          also report on the job's other replicas, which it was not given
//! ```
//!
//! Hardware it does not have is claimed with noded's own `--node-cpus` / `--node-gpus`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use chorus_core::launch::LaunchSpec;
use chorus_noded::agent::Conduct;
use chorus_noded::runner::Finished;
use clap::Parser;
use rand::{Rng, SeedableRng};

#[derive(Debug, Parser)]
#[command(name = "adversary", about = "A node agent that cheats (tests only)")]
struct AdversaryArgs {
    /// Probability of reporting a wrong result.
    #[arg(long, default_value_t = 0.0)]
    lie: f64,
    /// The wrong result (what colluding liars agree on); default: one naming this node.
    #[arg(long)]
    wrong: Option<String>,
    /// Reports to make honestly before lying starts (a patient liar).
    #[arg(long, default_value_t = 0)]
    honest_first: u32,
    /// Report success without running anything.
    #[arg(long)]
    skip: bool,
    /// Also report on the job's other replicas.
    #[arg(long)]
    foreign: bool,
    /// Seed of the liar's coin.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    node: chorus_noded::daemon::Args,
}

struct Adversary {
    lie: f64,
    wrong: String,
    honest_first: u32,
    skip: bool,
    foreign: bool,
    reports: AtomicU32,
    coin: Mutex<rand_chacha::ChaCha8Rng>,
}

impl Conduct for Adversary {
    fn runs(&self, _launch: &LaunchSpec) -> bool {
        !self.skip
    }

    fn report(&self, _launch: &LaunchSpec, f: &mut Finished) {
        let n = self.reports.fetch_add(1, Ordering::SeqCst);
        let heads = self.coin.lock().expect("lock").gen_bool(self.lie.clamp(0.0, 1.0));
        if n < self.honest_first || !heads {
            return;
        }
        if let Some(stdout) = f.outputs.first_mut() {
            eprintln!("adversary: lying about job {} replica {}", f.job_id, f.replica);
            stdout.data = self.wrong.clone().into_bytes();
        }
    }

    fn also_report(&self, f: &Finished) -> Vec<Finished> {
        if !self.foreign {
            return vec![];
        }
        // The replicas on either side of its own: others', if the job has them.
        [f.replica.wrapping_sub(1), f.replica + 1]
            .into_iter()
            .filter(|r| *r != u32::MAX)
            .map(|replica| Finished { replica, ..f.clone() })
            .collect()
    }
}

fn main() -> anyhow::Result<()> {
    let a = AdversaryArgs::parse();
    let wrong = a.wrong.unwrap_or_else(|| format!("wrong, says {}\n", std::process::id()));
    let conduct = Adversary {
        lie: a.lie,
        wrong,
        honest_first: a.honest_first,
        skip: a.skip,
        foreign: a.foreign,
        reports: AtomicU32::new(0),
        coin: Mutex::new(rand_chacha::ChaCha8Rng::seed_from_u64(a.seed)),
    };
    chorus_noded::daemon::main(a.node, std::sync::Arc::new(conduct))
}
