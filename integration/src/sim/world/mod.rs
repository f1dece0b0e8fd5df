//! The world of one run: the replicas, the network, the actors and the event queue, and the
//! loop that pops one event at a time, lets the replicas react, and checks every invariant.
//!
//! ```text
//!   queue.pop() ─▶ now = event time ─▶ handle(event) ─▶ ready() of each touched replica
//!        ▲                                   │              │ messages ─▶ Network ─▶ queue
//!        │                                   │              └ results ─▶ Reply ─▶ queue
//!        └──────── check() ◀─────────────────┘   (every step; quiescence after the heal)
//! ```
//!
//! Faults live in [`faults`], the per-step checks and the final report in [`checks`].

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::{Arc, Mutex};

use chorus_core::fsm::Command;
use chorus_core::job::JobSpec;
use chorus_core::plugin::Scheduler;
use chorus_core::state::{ClusterConfig, ClusterState};
use chorus_ctld::replica::{self, Core, CoreConfig, LogEntry, Output, ProposeError};
use chorus_ctld::storage::Member;
use raft::StateRole;
use raft::eraftpb::{Message, MessageType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod checks;
mod faults;

use super::actors::{Agent, Answer, Call, Client, ClientStep, Request};
use super::check::{Checker, Invariant, Violation};
use super::net::{Fate, Faults, Network};
use super::store::{Journal, SimStore};
use super::{Ms, Report, Sabotage, SimConfig};

/// Commands carry seconds since the epoch; the virtual clock starts here.
const EPOCH: u64 = 1_700_000_000;
const TICK_MS: Ms = 100;
/// How long a client or agent waits for an answer before it tries again.
const CALL_TIMEOUT: Ms = 3_000;

/// The run's settings, drawn from the seed where the configuration leaves them open.
#[derive(Debug, Clone)]
struct Params {
    replicas: usize,
    node_cpus: Vec<u32>,
    jobs: usize,
    snapshot_every: u64,
    faults: Faults,
    /// Probability that a client's or agent's call or its answer is lost.
    rpc_drop: f64,
    /// Probability, per agent wake, that its assignment stream breaks.
    stream_break: f64,
    crash_gap: (Ms, Ms),
    /// Whether crashes may take down a majority (no quorum until one comes back).
    majority_crash: bool,
    partition_gap: (Ms, Ms),
    agent_crash_gap: Option<(Ms, Ms)>,
}

impl Params {
    fn draw(cfg: &SimConfig, rng: &mut ChaCha8Rng) -> Self {
        let replicas = if rng.gen_bool(0.5) { 3 } else { 5 };
        let nodes = rng.gen_range(2..=4);
        let jobs = rng.gen_range(20..=60);
        let node_cpus = (0..cfg.nodes.unwrap_or(nodes)).map(|_| rng.gen_range(2..=4)).collect();
        // One seed in ten is a storm: a third of the messages lost.
        let drop = if rng.gen_bool(0.1) { 0.3 } else { rng.gen_range(0.0..0.15) };
        // One in five snapshots every few entries: installs race with appends.
        let snapshot_every =
            if rng.gen_bool(0.2) { rng.gen_range(2..=8) } else { rng.gen_range(10..=100) };
        Self {
            replicas: cfg.replicas.unwrap_or(replicas),
            node_cpus,
            jobs: cfg.jobs.unwrap_or(jobs),
            snapshot_every,
            faults: Faults {
                drop,
                duplicate: rng.gen_range(0.0..0.05),
                slow: rng.gen_range(0.0..0.2),
                slow_ms: 400,
            },
            rpc_drop: rng.gen_range(0.0..0.1),
            stream_break: 0.01,
            crash_gap: (1_000, 6_000),
            majority_crash: rng.gen_bool(0.2),
            partition_gap: (1_000, 6_000),
            agent_crash_gap: rng.gen_bool(0.3).then_some((4_000, 15_000)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Actor {
    Client(usize),
    Agent(usize),
}

#[derive(Debug)]
enum Event {
    Tick {
        replica: u64,
        incarnation: u64,
    },
    Deliver {
        msg: Box<Message>,
        from_incarnation: u64,
    },
    /// A message the network lost: its sender hears of it as a failed delivery.
    Lost {
        from: u64,
        from_incarnation: u64,
        to: u64,
        snapshot: bool,
    },
    Crash,
    Restart(u64),
    PartitionStart,
    PartitionEnd,
    AgentCrash,
    Heal,
    Schedule,
    Sabotage,
    ClientWake(usize),
    AgentWake(usize),
    Call {
        actor: Actor,
        call: Call,
    },
    Reply {
        actor: Actor,
        attempt: u64,
        answer: Answer,
    },
}

struct Queued {
    at: Ms,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    /// Earliest first (`BinaryHeap` is a max-heap), ties in scheduling order.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// One controller: its durable store, and its running `Core` when it is up.
struct Replica {
    id: u64,
    store: SimStore,
    core: Option<Core<SimStore>>,
    incarnation: u64,
    /// Proposals whose caller waits: seq → (caller, its attempt).
    waiting: BTreeMap<u64, (Actor, u64)>,
    /// The applied index whose state was last hashed (`None`: hash again).
    hashed: Option<u64>,
    /// Committed entries up to here were compared with the other replicas'.
    checked_commit: u64,
}

#[derive(Debug, Default)]
struct Stats {
    crashes: u64,
    cut: u64,
    snapshots: u64,
    acknowledged: usize,
}

pub(super) struct World {
    p: Params,
    cfg: SimConfig,
    rng: ChaCha8Rng,
    now: Ms,
    step: u64,
    seq: u64,
    queue: BinaryHeap<Queued>,
    healed: bool,
    net: Network,
    replicas: Vec<Replica>,
    clients: Vec<Client>,
    agents: Vec<Agent>,
    checker: Checker,
    journal: Arc<Mutex<Journal>>,
    scheduler: Box<dyn Scheduler>,
    stats: Stats,
    seed: u64,
}

fn initial_state() -> ClusterState {
    ClusterState::new(ClusterConfig::default())
}

fn job_spec(rng: &mut ChaCha8Rng, i: usize, node_cpus: &[u32]) -> JobSpec {
    let max = node_cpus.iter().copied().max().unwrap_or(1);
    let two = node_cpus.len() >= 2 && rng.gen_bool(0.15);
    JobSpec {
        user: "sim".into(),
        uid: 1000,
        gid: 1000,
        ntasks: Some(if two { 2 } else { rng.gen_range(1..=max) }),
        nodes: Some(if two { 2 } else { 1 }),
        ..JobSpec::new(format!("sim{i}"), "#!/bin/sh\ntrue\n", "/tmp")
    }
}

fn violation(invariant: Invariant, details: impl Into<String>) -> Violation {
    Violation::new(invariant, details)
}

impl World {
    pub(super) fn new(seed: u64, cfg: &SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let p = Params::draw(cfg, &mut rng);
        let journal = Arc::new(Mutex::new(Journal::default()));
        let members: Vec<Member> = (1..=p.replicas as u64)
            .map(|id| Member {
                id,
                client_addr: format!("ctl{id}:6817"),
                peer_addr: format!("ctl{id}:6819"),
            })
            .collect();
        let replicas = members
            .iter()
            .map(|m| {
                let store = SimStore::new(m.id, Arc::clone(&journal));
                replica::bootstrap(&store, &members).expect("bootstrap a memory store");
                Replica {
                    id: m.id,
                    store,
                    core: None,
                    incarnation: 0,
                    waiting: BTreeMap::new(),
                    hashed: None,
                    checked_commit: 0,
                }
            })
            .collect();
        let mut w = Self {
            net: Network::new(p.replicas, p.faults),
            cfg: cfg.clone(),
            now: 0,
            step: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            healed: false,
            replicas,
            clients: vec![],
            agents: vec![],
            checker: Checker::new(),
            journal,
            scheduler: chorus_plugins::scheduler("sched/fifo", seed)
                .expect("sched/fifo is compiled in"),
            stats: Stats::default(),
            seed,
            p,
            rng,
        };
        w.populate();
        w
    }

    /// Starts the replicas, creates agents and clients, and queues the first events.
    fn populate(&mut self) {
        for i in 0..self.replicas.len() {
            self.open(i);
        }
        for (i, cpus) in self.p.node_cpus.clone().into_iter().enumerate() {
            let target = self.random_replica();
            let mut agent = Agent::new(format!("node{}", i + 1), cpus, self.rng.r#gen(), target);
            agent.foreign = i == 0 && self.cfg.sabotage == Some(Sabotage::DoubleRun);
            self.agents.push(agent);
            let at = self.rng.gen_range(0..200);
            self.at(at, Event::AgentWake(i));
        }
        for i in 0..self.p.jobs {
            let spec = job_spec(&mut self.rng, i, &self.p.node_cpus);
            let target = self.random_replica();
            self.clients.push(Client::new(self.rng.r#gen(), spec, target));
            let at = self.rng.gen_range(200..self.cfg.fault_ms.max(201));
            self.at(at, Event::ClientWake(i));
        }
        self.at(300, Event::Schedule);
        let crash = self.gap(self.p.crash_gap);
        self.at(crash, Event::Crash);
        let part = self.gap(self.p.partition_gap);
        self.at(part, Event::PartitionStart);
        if let Some(g) = self.p.agent_crash_gap {
            let at = self.gap(g);
            self.at(at, Event::AgentCrash);
        }
        if self.cfg.sabotage == Some(Sabotage::DivergeState) {
            self.at(self.cfg.fault_ms / 2, Event::Sabotage);
        }
        self.at(self.cfg.fault_ms, Event::Heal);
    }

    pub(super) fn position(&self) -> (u64, Ms) {
        (self.step, self.now)
    }

    fn at(&mut self, at: Ms, event: Event) {
        self.seq += 1;
        self.queue.push(Queued { at, seq: self.seq, event });
    }

    fn after(&mut self, delay: Ms, event: Event) {
        self.at(self.now + delay, event);
    }

    fn gap(&mut self, (lo, hi): (Ms, Ms)) -> Ms {
        self.now + self.rng.gen_range(lo..hi)
    }

    fn random_replica(&mut self) -> u64 {
        self.rng.gen_range(1..=self.replicas.len() as u64)
    }

    fn now_secs(&self) -> u64 {
        EPOCH + self.now / 1000
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if self.cfg.trace {
            eprintln!("{:>9.3} #{:<6} {}", self.now as f64 / 1000.0, self.step, what());
        }
    }

    /// Runs until quiescent after the heal, or until an invariant fails.
    pub(super) fn run(&mut self) -> Result<Report, Violation> {
        let deadline = self.cfg.fault_ms + self.cfg.heal_deadline_ms;
        while let Some(q) = self.queue.pop() {
            self.now = q.at;
            self.step += 1;
            self.handle(q.event)?;
            self.check()?;
            if self.healed && self.quiescent()? {
                return Ok(self.report());
            }
            if self.now > deadline {
                return Err(violation(Invariant::Liveness, self.stuck()));
            }
        }
        Err(violation(Invariant::Liveness, "the event queue ran dry"))
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Tick { replica, incarnation } => self.tick(replica, incarnation)?,
            Event::Deliver { msg, from_incarnation } => self.deliver(*msg, from_incarnation)?,
            Event::Lost { from, from_incarnation, to, snapshot } => {
                self.unreachable(from, from_incarnation, to, snapshot)?;
            }
            Event::Crash => self.crash(),
            Event::Restart(id) => self.restart(id)?,
            Event::PartitionStart => self.partition_start(),
            Event::PartitionEnd => self.partition_end(),
            Event::AgentCrash => self.agent_crash(),
            Event::Heal => self.heal()?,
            Event::Schedule => self.schedule()?,
            Event::Sabotage => self.sabotage(),
            Event::ClientWake(i) => self.client_wake(i),
            Event::AgentWake(i) => self.agent_wake(i)?,
            Event::Call { actor, call } => self.call(actor, call)?,
            Event::Reply { actor, attempt, answer } => self.reply(actor, attempt, answer)?,
        }
        Ok(())
    }

    // ---- replicas -------------------------------------------------------------------

    fn idx(id: u64) -> usize {
        id as usize - 1
    }

    fn core(&mut self, id: u64) -> Option<&mut Core<SimStore>> {
        self.replicas.get_mut(Self::idx(id))?.core.as_mut()
    }

    /// (Re)opens replica `i` over its store with a fresh incarnation and election timeout.
    fn open(&mut self, i: usize) {
        let election_tick = self.rng.gen_range(10..20);
        let incarnation = self.rng.r#gen();
        let r = &mut self.replicas[i];
        let cfg = CoreConfig {
            id: r.id,
            incarnation,
            snapshot_every: self.p.snapshot_every,
            election_tick,
            max_election_tick: election_tick + 1,
            heartbeat_tick: 2,
        };
        let core = Core::open(r.store.clone(), initial_state(), cfg).expect("open a memory store");
        r.core = Some(core);
        r.incarnation = incarnation;
        r.hashed = None;
        let (id, jitter) = (r.id, self.rng.gen_range(0..TICK_MS));
        self.trace(|| format!("replica {id} starts (election tick {election_tick})"));
        self.after(jitter, Event::Tick { replica: id, incarnation });
    }

    fn tick(&mut self, id: u64, incarnation: u64) -> Result<(), Violation> {
        if self.replicas[Self::idx(id)].incarnation != incarnation {
            return Ok(());
        }
        let Some(core) = self.core(id) else { return Ok(()) };
        core.tick();
        self.ready(id)?;
        let next = self.rng.gen_range(TICK_MS - 10..=TICK_MS + 10);
        self.after(next, Event::Tick { replica: id, incarnation });
        Ok(())
    }

    /// Runs `ready()` until the replica has nothing more to do, and routes what it produced.
    fn ready(&mut self, id: u64) -> Result<(), Violation> {
        for _ in 0..8 {
            let Some(core) = self.core(id) else { return Ok(()) };
            let before = (core.applied(), core.commit());
            let out = core.ready().map_err(|e| {
                violation(Invariant::Crash, format!("replica {id}: storage error {e}"))
            })?;
            let after = (core.applied(), core.commit());
            let busy = before != after
                || !out.messages.is_empty()
                || out.role.is_some()
                || !out.results.is_empty();
            self.route(id, out)?;
            if !busy {
                break;
            }
        }
        Ok(())
    }

    fn route(&mut self, id: u64, out: Output) -> Result<(), Violation> {
        let r = &self.replicas[Self::idx(id)];
        let incarnation = r.incarnation;
        let hint = r.core.as_ref().map_or(0, |c| c.leader_id());
        if let Some((role, term)) = out.role {
            self.trace(|| format!("replica {id} is {role:?} in term {term}"));
            if role == StateRole::Leader {
                self.checker.leader(term, id)?;
            } else {
                // As the daemon's driver does: callers learn that their proposal's fate is open.
                let waiting = std::mem::take(&mut self.replicas[Self::idx(id)].waiting);
                for (actor, attempt) in waiting.into_values() {
                    let answer = Answer {
                        from: (id, incarnation),
                        leader_hint: hint,
                        result: Err(ProposeError::LeadershipLost),
                    };
                    self.answer(actor, attempt, answer);
                }
            }
        }
        for msg in out.messages {
            self.send(msg, incarnation);
        }
        for (seq, result) in out.results {
            if let Some((actor, attempt)) = self.replicas[Self::idx(id)].waiting.remove(&seq) {
                self.answer(
                    actor,
                    attempt,
                    Answer { from: (id, incarnation), leader_hint: hint, result },
                );
            }
        }
        Ok(())
    }

    fn send(&mut self, msg: Message, from_incarnation: u64) {
        let snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
        self.stats.snapshots += u64::from(snapshot);
        match self.net.send(&mut self.rng) {
            Fate::Lost => {
                let (from, to) = (msg.from, msg.to);
                // Only a lost snapshot is reported (the transport reports every snapshot's fate).
                if snapshot {
                    let d = self.rng.gen_range(1..50);
                    self.after(d, Event::Lost { from, from_incarnation, to, snapshot });
                }
            }
            Fate::Deliver(delays) => {
                for d in delays {
                    self.after(d, Event::Deliver { msg: Box::new(msg.clone()), from_incarnation });
                }
            }
        }
    }

    fn deliver(&mut self, msg: Message, from_incarnation: u64) -> Result<(), Violation> {
        let (from, to) = (msg.from, msg.to);
        let snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
        if !self.net.connected(from, to) || self.core(to).is_none() {
            self.stats.cut += 1;
            return self.unreachable(from, from_incarnation, to, snapshot);
        }
        let core = self.core(to).expect("checked above");
        // raft-rs refuses messages it must ignore (from an unknown peer): nothing to do.
        let _ = core.step(msg);
        self.ready(to)?;
        if snapshot {
            self.sender(from, from_incarnation, |c| c.report_snapshot(to, true));
            self.ready(from)?;
        }
        Ok(())
    }

    /// The sender of a lost message learns of it, as from a failed gRPC call.
    fn unreachable(
        &mut self,
        from: u64,
        inc: u64,
        to: u64,
        snapshot: bool,
    ) -> Result<(), Violation> {
        self.sender(from, inc, |c| {
            c.report_unreachable(to);
            if snapshot {
                c.report_snapshot(to, false);
            }
        });
        self.ready(from)
    }

    fn sender(&mut self, id: u64, incarnation: u64, f: impl FnOnce(&mut Core<SimStore>)) {
        let r = &mut self.replicas[Self::idx(id)];
        if r.incarnation == incarnation
            && let Some(c) = r.core.as_mut()
        {
            f(c);
        }
    }

    fn leader(&self) -> Option<u64> {
        self.replicas
            .iter()
            .find(|r| r.core.as_ref().is_some_and(|c| c.role() == StateRole::Leader))
            .map(|r| r.id)
    }

    // ---- the leader's scheduler, clients and agents ----------------------------------

    /// Every replica that believes it leads runs the scheduler and proposes its plan.
    fn schedule(&mut self) -> Result<(), Violation> {
        let now = self.now_secs();
        for id in 1..=self.replicas.len() as u64 {
            let Some(core) = self.core(id).filter(|c| c.role() == StateRole::Leader) else {
                continue;
            };
            let st = core.state();
            let plan = {
                let st = st.read().expect("state lock poisoned");
                if st.pending.is_empty() { None } else { Some(self.scheduler.plan(&st, now)) }
            };
            let Some(plan) = plan.filter(|p| !p.starts.is_empty() || !p.reasons.is_empty()) else {
                continue;
            };
            let core = self.core(id).expect("checked above");
            let _ =
                core.propose(&LogEntry { cmd: Command::ApplyPlan { plan, now }, blobs: vec![] });
            self.ready(id)?;
        }
        let next = self.rng.gen_range(300..600);
        self.after(next, Event::Schedule);
        Ok(())
    }

    fn client_wake(&mut self, i: usize) {
        if let Some((call, recheck)) = self.clients[i].wake(self.now, CALL_TIMEOUT) {
            self.dispatch(Actor::Client(i), call);
            self.at(recheck, Event::ClientWake(i));
        }
    }

    /// What the agent's assignment stream shows: the followed replica's state, while it is
    /// up in the same incarnation and leads.
    fn stream(&mut self, i: usize) -> Option<Arc<std::sync::RwLock<ClusterState>>> {
        let (id, incarnation) = self.agents[i].following()?;
        if !self.healed && self.rng.gen_bool(self.p.stream_break) {
            return None;
        }
        let r = &self.replicas[Self::idx(id)];
        let core = r
            .core
            .as_ref()
            .filter(|c| r.incarnation == incarnation && c.role() == StateRole::Leader)?;
        Some(core.state())
    }

    fn agent_wake(&mut self, i: usize) -> Result<(), Violation> {
        let stream = self.stream(i);
        let guard = stream.as_ref().map(|s| s.read().expect("state lock poisoned"));
        let (before, unwanted) = (self.agents[i].running_jobs(), self.agents[i].unwanted);
        let call = self.agents[i].wake(self.now, CALL_TIMEOUT, guard.as_deref(), &mut self.rng);
        drop(guard);
        let a = &self.agents[i];
        if a.unwanted > unwanted {
            let details = format!(
                "{} was told to stop a job it runs (was running {before:?}, now {:?})",
                a.name,
                a.running_jobs()
            );
            return Err(violation(Invariant::Revoked, details));
        }
        if self.cfg.trace && a.running_jobs() != before {
            self.trace(|| format!("{} runs {:?} (was {before:?})", a.name, a.running_jobs()));
        }
        if let Some(call) = call {
            self.trace(|| {
                format!(
                    "{} calls replica {}: {}",
                    self.agents[i].name,
                    call.to,
                    call.request.kind()
                )
            });
            self.dispatch(Actor::Agent(i), call);
        }
        let next = self.rng.gen_range(150..250);
        self.after(next, Event::AgentWake(i));
        Ok(())
    }

    /// Sends a call toward a replica over the (lossy, while faults last) client network.
    fn dispatch(&mut self, actor: Actor, call: Call) {
        if !self.healed && self.rng.gen_bool(self.p.rpc_drop) {
            return;
        }
        let d = self.rng.gen_range(1..20);
        self.after(d, Event::Call { actor, call });
    }

    fn answer(&mut self, actor: Actor, attempt: u64, answer: Answer) {
        if !self.healed && self.rng.gen_bool(self.p.rpc_drop) {
            return;
        }
        let d = self.rng.gen_range(1..20);
        self.after(d, Event::Reply { actor, attempt, answer });
    }

    /// A call reaches its replica: proposed there, or refused at once.
    fn call(&mut self, actor: Actor, call: Call) -> Result<(), Violation> {
        let now = self.now_secs();
        let id = call.to;
        let cmd = match call.request {
            Request::Submit { request, spec } => Command::SubmitOnce { request, spec, now },
            Request::Register(reg) => Command::RegisterNode { reg, now },
            Request::Report(report) => Command::JobEnded { report, now },
        };
        let incarnation = self.replicas[Self::idx(id)].incarnation;
        if self.replicas[Self::idx(id)].core.is_none() {
            let answer = Answer {
                from: (id, incarnation),
                leader_hint: 0,
                result: Err(ProposeError::Stopped),
            };
            self.answer(actor, call.attempt, answer);
            return Ok(());
        }
        let r = &mut self.replicas[Self::idx(id)];
        let core = r.core.as_mut().expect("checked above");
        match core.propose(&LogEntry { cmd, blobs: vec![] }) {
            Ok(seq) => {
                r.waiting.insert(seq, (actor, call.attempt));
                self.ready(id)
            }
            Err(e) => {
                let answer = Answer {
                    from: (id, incarnation),
                    leader_hint: core.leader_id(),
                    result: Err(e),
                };
                self.answer(actor, call.attempt, answer);
                Ok(())
            }
        }
    }

    fn reply(&mut self, actor: Actor, attempt: u64, answer: Answer) -> Result<(), Violation> {
        let n = self.replicas.len();
        match actor {
            Actor::Agent(i) => self.agents[i].reply(attempt, &answer, n, &mut self.rng),
            Actor::Client(i) => match self.clients[i].reply(attempt, &answer, n, &mut self.rng) {
                ClientStep::Ignored => {}
                ClientStep::Acked(job) => {
                    self.stats.acknowledged += 1;
                    self.checker.ack(self.clients[i].request, job)?;
                    self.trace(|| format!("client {i} acknowledged as job {job}"));
                }
                ClientStep::RetryIn(d) => self.after(d, Event::ClientWake(i)),
                ClientStep::Refused(why) => {
                    return Err(violation(
                        Invariant::Liveness,
                        format!("client {i}: a valid submission was refused: {why}"),
                    ));
                }
            },
        }
        Ok(())
    }
}
