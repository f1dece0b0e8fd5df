//! `trust-sim`'s model (issue 6, point 9): a population of honest nodes and liars runs a
//! workload through [`TrustCluster`], that is through the production `fsm::apply`,
//! `sched/fifo`, replication policies, validators, `trust::decide` and `trust::settle`, and
//! the books the state machine kept are read back as the measurements.
//!
//! ```text
//!   population: `nodes` nodes, each its own operator with `stake` bonded; `liars` of them
//!               (a seeded draw) lie
//!   loop ──▶ submit (keep 2 × nodes jobs pending; each job a seeded duration)
//!        ──▶ TrustCluster::schedule (sched/fifo: quorum by the policy, distinct operators)
//!              each replica started: the node decides now whether it lies (below)
//!        ──▶ advance the clock to the next replica's end ──▶ report it, signed (JobEnded)
//!        ──▶ TrustCluster::verdicts (verify/exact's classes ──▶ Verdict ──▶ decide/settle:
//!              more replicas, or paid, charged, slashed, drained below min_stake)
//!   until every job is decided (or nothing can run any more)
//!   measure: from the jobs' verdicts and the operators' accounts in the replicated state
//! ```
//!
//! # The population
//!
//! An honest node runs its replica and reports the job's true output. A liar does not run
//! it (it saves the compute cost) and reports a wrong output at the time an honest node
//! would have finished: it is paid by the time its replica held the node, so reporting
//! sooner would only cut its pay. A *naive* liar lies on every replica. A *patient* one is
//! honest while the adaptive policy would check every job it starts
//! ([`Adaptive::check_ppm`] of its agreements is 100 %: under `adaptive:2,20,0.1`, until 21
//! agreements in a row) and lies from then on; under a fixed policy it keeps to the
//! default adaptive policy's patience, since nothing tells it it is checked anyway. A
//! slash resets its record, so it is honest again until trusted again. Without
//! `collude` each liar's wrong output is its own; with it, every liar gives the same wrong
//! output for a job, so liars that make up a quorum agree and win.
//!
//! # The economy
//!
//! A CPU-second is worth `price_cpu_hour / 3600` credits (paid to agreeing replicas'
//! operators by `trust::settle`); honest work costs its operator `compute_cost_ppm` of that
//! price (power, hardware), lying costs nothing. A node's net earnings per job are
//! `(earned − slashed − compute cost) / replicas it ran`, from the accounts the state machine
//! kept (`earned`, `slashed`) and the compute cost counted here.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt;

use chorus_core::fsm::Command;
use chorus_core::job::{ExitStatus, JobId, JobSpec, Verdict};
use chorus_core::node::NodeState;
use chorus_core::state::ClusterConfig;
use chorus_core::trust::ReplicationSpec;
use chorus_plugins::replication::Adaptive;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::TrustCluster;

/// The smallest workload the issue asks a measurement to run.
pub const MIN_JOBS: u32 = 10_000;

/// One run: the population, the policy and the workload.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Jobs submitted (each needs one CPU for its duration).
    pub jobs: u32,
    /// Nodes, of one CPU each, each its own operator.
    pub nodes: u32,
    /// Share of the nodes that lie, from 0 to 1 (rounded to whole nodes).
    pub liars: f64,
    /// The partition's replication policy.
    pub policy: ReplicationSpec,
    /// Liars give the same wrong output.
    pub collude: bool,
    /// Liars are honest until the adaptive policy trusts them.
    pub patient: bool,
    /// Seeds the population, the durations and the scheduler's coin.
    pub seed: u64,
    /// Shortest and longest job, in seconds (uniform).
    pub durations: (u64, u64),
    pub economy: Economy,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            jobs: MIN_JOBS,
            nodes: 100,
            liars: 0.1,
            policy: ReplicationSpec::Fixed(2),
            collude: false,
            patient: false,
            seed: 1,
            durations: (60, 3600),
            economy: Economy::default(),
        }
    }
}

/// Prices, costs and stake (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Economy {
    /// Credits per CPU-hour of verified work (the partition's price).
    pub price_cpu_hour: u64,
    /// What honest work costs its operator, in millionths of its price.
    pub compute_cost_ppm: u32,
    /// Bonded by every node at the start.
    pub stake: u64,
    /// Below it, a node is drained and gets no work (`ClusterConfig::min_stake`).
    pub min_stake: u64,
    /// Share of its stake a losing replica's node loses (`ClusterConfig::slash_ppm`).
    pub slash_ppm: u32,
}

impl Default for Economy {
    fn default() -> Self {
        Self {
            price_cpu_hour: 3600,
            compute_cost_ppm: 500_000,
            stake: 100_000,
            min_stake: 50_000,
            slash_ppm: ClusterConfig::default().slash_ppm,
        }
    }
}

impl SimConfig {
    /// Liars in the population: the share of the nodes, rounded.
    pub fn liar_count(&self) -> u32 {
        ((self.liars * f64::from(self.nodes)).round() as u32).min(self.nodes)
    }

    /// Agreements in a row a patient liar waits for: until the adaptive policy (this run's,
    /// or the default one under a fixed policy) may run its jobs alone.
    pub fn patience(&self) -> u32 {
        let spec = match self.policy {
            ReplicationSpec::Fixed(_) => ReplicationSpec::ADAPTIVE,
            adaptive => adaptive,
        };
        let ReplicationSpec::Adaptive { replicas, trusted_after, spot_check_ppm } = spec else {
            unreachable!("ADAPTIVE is adaptive")
        };
        let policy = Adaptive { replicas, trusted_after, spot_check_ppm };
        (0..=u32::MAX).find(|&a| policy.check_ppm(a) < 1_000_000).unwrap_or(u32::MAX)
    }

    /// What the liars do, in a word: `naive`, `patient`, with `colluding` when they do.
    pub fn behaviour(&self) -> String {
        let kind = if self.patient { "patient" } else { "naive" };
        if self.collude { format!("{kind}, colluding") } else { kind.into() }
    }
}

/// What one class of nodes (honest, liars) ran, earned and lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Books {
    pub nodes: u32,
    /// Replicas its nodes ran (or pretended to).
    pub replicas: u64,
    /// Paid by verdicts (the operators' `earned`).
    pub earned: u64,
    /// Lost to slashes (the operators' `slashed`).
    pub slashed: u64,
    /// What the replicas its nodes really ran cost them.
    pub compute: u64,
    /// Nodes that lost some stake.
    pub slashed_nodes: u32,
    /// Nodes the state machine drained, their stake below the minimum.
    pub drained: u32,
}

impl Books {
    /// `(earned − slashed − compute) / replicas`; `None` when it ran none.
    pub fn net_per_job(&self) -> Option<f64> {
        let net = self.earned as f64 - self.slashed as f64 - self.compute as f64;
        (self.replicas > 0).then(|| net / self.replicas as f64)
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub config: SimConfig,
    pub jobs: u32,
    /// Jobs that ended with an agreed result (run alone, or by a verdict).
    pub agreed: u32,
    /// Agreed jobs whose result is wrong.
    pub accepted_wrong: u32,
    /// Jobs that failed verification (no majority).
    pub failed: u32,
    /// Jobs never decided: too few operators left that take work to run their quorum.
    pub undecided: u32,
    /// Replicas that reported a wrong output.
    pub lies: u64,
    /// CPU-seconds of every replica started.
    pub replica_secs: u64,
    /// CPU-seconds of every job, once.
    pub job_secs: u64,
    pub honest: Books,
    pub liars: Books,
    /// Virtual seconds from the first submission to the last report.
    pub makespan: u64,
}

impl Metrics {
    pub fn accepted_wrong_per_job(&self) -> f64 {
        f64::from(self.accepted_wrong) / f64::from(self.jobs.max(1))
    }

    /// Replica-seconds run / job-seconds needed (1: each job once).
    pub fn overhead(&self) -> f64 {
        self.replica_secs as f64 / self.job_secs.max(1) as f64
    }

    /// Honest nodes that lost any stake.
    pub fn false_slash(&self) -> u32 {
        self.honest.slashed_nodes
    }

    /// `accepted_wrong=X overhead=Y false_slash=Z liar_net=A honest_net=B` (`n/a` where a
    /// class ran nothing).
    pub fn line(&self) -> String {
        format!(
            "accepted_wrong={:.6} overhead={:.3} false_slash={} liar_net={} honest_net={}",
            self.accepted_wrong_per_job(),
            self.overhead(),
            self.false_slash(),
            net(self.liars.net_per_job()),
            net(self.honest.net_per_job()),
        )
    }
}

fn net(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".into(), |x| format!("{x:.1}"))
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let e = &c.economy;
        writeln!(
            f,
            "{} jobs of {}-{} s on {} nodes ({} liars, {}), policy {}, seed {}",
            self.jobs,
            c.durations.0,
            c.durations.1,
            c.nodes,
            self.liars.nodes,
            c.behaviour(),
            c.policy,
            c.seed
        )?;
        writeln!(
            f,
            "economy: {} credits per CPU-hour, honest work costs {} % of it, stake {}, \
             minimum {}, slash {} %",
            e.price_cpu_hour,
            e.compute_cost_ppm / 10_000,
            e.stake,
            e.min_stake,
            f64::from(e.slash_ppm) / 10_000.0
        )?;
        writeln!(
            f,
            "jobs: {} agreed ({} wrong), {} failed verification, {} undecided; {} wrong \
             reports; {:.1} virtual hours",
            self.agreed,
            self.accepted_wrong,
            self.failed,
            self.undecided,
            self.lies,
            self.makespan as f64 / 3600.0
        )?;
        for (name, b) in [("honest", &self.honest), ("liars", &self.liars)] {
            writeln!(
                f,
                "{name}: {} nodes, {} replicas, earned {}, slashed {} ({} nodes), compute {}, \
                 drained {}, net per job {}",
                b.nodes,
                b.replicas,
                b.earned,
                b.slashed,
                b.slashed_nodes,
                b.compute,
                b.drained,
                net(b.net_per_job())
            )?;
        }
        write!(f, "{}", self.line())
    }
}

/// A replica running, as the simulation knows it.
#[derive(Debug, Clone)]
struct Run {
    node: String,
    output: Vec<u8>,
    wrong: bool,
}

/// Runs one configuration to the end and measures it.
pub fn run(cfg: &SimConfig) -> Metrics {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let e = cfg.economy;
    let mut config =
        ClusterConfig { min_stake: e.min_stake, slash_ppm: e.slash_ppm, ..Default::default() };
    config.partitions[0].replication = cfg.policy;
    config.partitions[0].price_cpu_hour = e.price_cpu_hour;
    let mut c = TrustCluster::new(config, rng.r#gen());
    let names: Vec<String> = (1..=cfg.nodes).map(|i| format!("node{i:04}")).collect();
    let mut shuffled = names.clone();
    shuffled.shuffle(&mut rng);
    let liars: BTreeSet<String> = shuffled.into_iter().take(cfg.liar_count() as usize).collect();
    for (i, name) in names.iter().enumerate() {
        c.add_node(name, Some(&format!("op{:04}", i + 1)), e.stake, 1);
    }
    let user = "sim";
    c.apply(Command::CreditUser { user: user.into(), amount: u64::MAX / 4, now: c.now })
        .expect("credits");

    let patience = cfg.patience();
    let start = c.now;
    let mut duration: BTreeMap<JobId, u64> = BTreeMap::new();
    let mut runs: BTreeMap<(JobId, u32), Run> = BTreeMap::new();
    let mut ends: BinaryHeap<Reverse<(u64, JobId, u32)>> = BinaryHeap::new();
    let mut compute: BTreeMap<String, u64> = BTreeMap::new();
    let mut replicas: BTreeMap<String, u64> = BTreeMap::new();
    let (mut submitted, mut lies, mut replica_secs) = (0u32, 0u64, 0u64);
    loop {
        while submitted < cfg.jobs && c.state.pending.len() < 2 * cfg.nodes as usize {
            let job = c.submit(job_spec(user)).expect("the sim's user has credits");
            duration.insert(job, rng.gen_range(cfg.durations.0..=cfg.durations.1));
            submitted += 1;
        }
        for s in c.schedule() {
            let secs = duration[&s.job];
            let lying = liars.contains(&s.node)
                && (!cfg.patient || c.state.accounts.agreements(&s.node) >= patience);
            let output = match (lying, cfg.collude) {
                (false, _) => format!("job {}: the answer\n", s.job),
                (true, true) => format!("job {}: the cartel's answer\n", s.job),
                (true, false) => format!("job {}: {}'s answer\n", s.job, s.node),
            };
            if !lying {
                *compute.entry(s.node.clone()).or_default() += cost(&e, secs);
            }
            lies += u64::from(lying);
            replica_secs += secs;
            *replicas.entry(s.node.clone()).or_default() += 1;
            ends.push(Reverse((c.now + secs, s.job, s.replica)));
            let run = Run { node: s.node, output: output.into_bytes(), wrong: lying };
            runs.insert((s.job, s.replica), run);
        }
        let Some(&Reverse((at, _, _))) = ends.peek() else { break };
        c.advance(at - c.now);
        while let Some(&Reverse((t, job, replica))) = ends.peek() {
            if t != at {
                break;
            }
            ends.pop();
            let r = &runs[&(job, replica)];
            let ok = ExitStatus { code: 0, signal: 0 };
            c.report(&r.node.clone(), job, replica, ok, &r.output.clone())
                .unwrap_or_else(|e| panic!("job {job} replica {replica}: {e}"));
        }
        c.verdicts();
    }

    let (mut agreed, mut accepted_wrong, mut failed) = (0, 0, 0);
    for job in c.state.jobs.values() {
        match job.verdict {
            Verdict::Agreed => {
                agreed += 1;
                let result = job.result_replica.expect("an agreed job has a result");
                accepted_wrong += u32::from(runs[&(job.id, result)].wrong);
            }
            Verdict::Failed => failed += 1,
            _ => {}
        }
    }
    let (mut honest, mut liar) = (Books::default(), Books::default());
    for name in &names {
        let op = &c.state.accounts.operators[&c.state.accounts.node_operator[name]];
        let b = if liars.contains(name) { &mut liar } else { &mut honest };
        b.nodes += 1;
        b.replicas += replicas.get(name).copied().unwrap_or(0);
        b.earned += op.earned;
        b.slashed += op.slashed;
        b.compute += compute.get(name).copied().unwrap_or(0);
        b.slashed_nodes += u32::from(op.slashed > 0);
        b.drained += u32::from(c.state.nodes[name].state == NodeState::Drain);
    }
    Metrics {
        config: cfg.clone(),
        jobs: submitted,
        agreed,
        accepted_wrong,
        failed,
        undecided: submitted - agreed - failed,
        lies,
        replica_secs,
        job_secs: duration.values().sum(),
        honest,
        liars: liar,
        makespan: c.now - start,
    }
}

/// One job of the workload: one CPU, the partition's policy and validator.
fn job_spec(user: &str) -> JobSpec {
    JobSpec {
        user: user.into(),
        uid: 1000,
        gid: 1000,
        ..JobSpec::new("sim", "#!/bin/sh\n./compute\n", "/w")
    }
}

/// What `secs` of honest work on one CPU costs its operator.
fn cost(e: &Economy, secs: u64) -> u64 {
    let price = u128::from(secs) * u128::from(e.price_cpu_hour) / 3600;
    (price * u128::from(e.compute_cost_ppm) / 1_000_000) as u64
}

/// The policies, liar shares and behaviours of the measured table.
pub fn matrix(base: &SimConfig) -> Vec<SimConfig> {
    let policies =
        [ReplicationSpec::Fixed(2), ReplicationSpec::Fixed(3), ReplicationSpec::ADAPTIVE];
    let mut out = vec![];
    for (patient, collude) in [(false, false), (true, false), (false, true), (true, true)] {
        for liars in [0.01, 0.10, 0.30] {
            for policy in policies {
                out.push(SimConfig { liars, policy, patient, collude, ..base.clone() });
            }
        }
    }
    out
}

/// Runs `configs` on up to `threads` threads; the results in the order given.
pub fn run_all(configs: &[SimConfig], threads: usize) -> Vec<Metrics> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(vec![None; configs.len()]);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, configs.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(cfg) = configs.get(i) else { break };
                    let m = run(cfg);
                    done.lock().expect("no thread panicked holding it")[i] = Some(m);
                }
            });
        }
    });
    done.into_inner().expect("joined").into_iter().map(|m| m.expect("every run ran")).collect()
}

/// The measured table, in Markdown.
pub fn table(rows: &[Metrics]) -> String {
    let mut out = String::from(
        "| liars | share | policy | wrong accepted / job | failed / job | overhead | \
         honest slashed | liars drained | liar net / job | honest net / job |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in rows {
        let c = &m.config;
        out.push_str(&format!(
            "| {} | {:.0} % | `{}` | {:.4} | {:.4} | {:.2} | {} / {} | {} / {} | {} | {} |\n",
            c.behaviour(),
            c.liars * 100.0,
            c.policy,
            m.accepted_wrong_per_job(),
            f64::from(m.failed) / f64::from(m.jobs.max(1)),
            m.overhead(),
            m.honest.slashed_nodes,
            m.honest.nodes,
            m.liars.drained,
            m.liars.nodes,
            net(m.liars.net_per_job()),
            net(m.honest.net_per_job()),
        ));
    }
    out
}
