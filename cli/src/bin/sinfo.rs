//! `sinfo`: partitions and nodes, as Slurm's sinfo shows them.

use chorus_cli::format::sinfo::{SinfoOpts, sinfo};
use chorus_cli::{Ctl, print, run_main};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "sinfo",
    disable_help_flag = true,
    disable_version_flag = true,
    infer_long_args = true
)]
struct Args {
    #[arg(short = 'h', long = "noheader")]
    noheader: bool,
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Node-oriented listing.
    #[arg(short = 'N', long = "Node")]
    node: bool,
    #[arg(short = 'l', long = "long")]
    long: bool,
    /// Summary by partition.
    #[arg(short = 's', long = "summarize")]
    summarize: bool,
    /// Why nodes are down or drained.
    #[arg(short = 'R', long = "list-reasons")]
    reasons: bool,
    #[arg(short = 'o', long = "format")]
    format: Option<String>,
    /// Only these partitions.
    #[arg(short = 'p', long = "partition")]
    partition: Option<String>,
    #[arg(short = 'V', long = "version")]
    version: bool,
}

fn main() {
    let a = Args::parse();
    run_main("sinfo", show(a))
}

async fn show(a: Args) -> anyhow::Result<i32> {
    if a.version {
        return chorus_cli::print_version();
    }
    let mut ctl = Ctl::connect().await?;
    let (mut cfg, _) = ctl.cluster().await?;
    let (nodes, now) = ctl.nodes().await?;
    if let Some(p) = &a.partition {
        cfg.partitions.retain(|x| p.split(',').any(|n| n == x.name));
    }
    let opts = SinfoOpts {
        header: !a.noheader,
        long: a.long,
        node_oriented: a.node,
        summarize: a.summarize,
        reasons: a.reasons,
        format: a.format,
        ..SinfoOpts::default()
    };
    print(&sinfo(&cfg, &nodes, &opts, now))?;
    Ok(0)
}
