//! The client API: sbatch, squeue, scancel, scontrol, sacct, sinfo, chorus.
//!
//! Every request is converted at the boundary (`TryFrom`), checked by the submit validator
//! chain, and proposed; the reply waits for the command to be applied. Changes are taken by
//! the leader only: a follower refuses them naming the leader ([`not_leader`]). Reads are
//! served by any controller after a ReadIndex round ([`ReplicaHandle::read_barrier`]).

use std::sync::Arc;
use std::time::Duration;

use chorus_core::fsm::{Applied, Command, JobUpdate};
use chorus_core::identity::{self, Denied, Grant, Token, User};
use chorus_core::job::{JobId, JobSpec};
use chorus_core::node::NodeState;
use chorus_core::plugin::{Scheduler, SubmitValidator};
use chorus_core::slurm::time::parse_time_limit;
use chorus_proto::client::{self as pb, client_server::Client, control_request::Action};
use chorus_proto::leader::not_leader;
use chorus_proto::{WireError, encode_bincode};
use raft::StateRole;
use tonic::{Request, Response, Status};

use crate::auth::{caller, user};
use crate::nodes::NodeHub;
use crate::replica::{Membership, ProposeError, ReplicaHandle};
use crate::storage::{Member, RaftStore, SledStorage};

pub struct ClientService {
    pub replica: ReplicaHandle,
    pub validators: Vec<Box<dyn SubmitValidator>>,
    pub scheduler: Arc<dyn Scheduler>,
    pub store: SledStorage,
    pub hub: Arc<NodeHub>,
    pub me: Member,
    pub clock: fn() -> u64,
    /// Signs users' certificates (`IssueCertificate`).
    pub ca: Arc<chorus_proto::tls::Ca>,
    /// What this controller shows its peers when it asks one who it is (`controller add`).
    pub peer_tls: tonic::transport::ClientTlsConfig,
}

fn denied(d: Denied) -> Status {
    Status::permission_denied(d.to_string())
}

/// The gRPC status of a refused proposal or read. Everything a client may retry elsewhere is
/// `UNAVAILABLE`, with the leader's address when this controller knows it.
pub fn status_of(replica: &ReplicaHandle, e: ProposeError) -> Status {
    match e {
        ProposeError::Rejected(r) => Status::failed_precondition(r.to_string()),
        ProposeError::NotLeader | ProposeError::NoQuorum | ProposeError::LeadershipLost => {
            match replica.leader_addr() {
                Some(l) if matches!(e, ProposeError::NotLeader) => not_leader(Some(&l)),
                _ => Status::unavailable(e.to_string()),
            }
        }
        ProposeError::Busy => Status::resource_exhausted(e.to_string()),
        ProposeError::Membership(_) => Status::failed_precondition(e.to_string()),
        ProposeError::Stopped | ProposeError::Storage(_) => Status::unavailable(e.to_string()),
    }
}

/// Refuses, naming the leader, unless this controller leads.
pub fn leader_only(replica: &ReplicaHandle) -> Result<(), Status> {
    serving(replica)?;
    if replica.is_leader() { Ok(()) } else { Err(not_leader(replica.leader_addr().as_deref())) }
}

/// A controller removed from its group answers nothing: clients go on to the others.
fn serving(replica: &ReplicaHandle) -> Result<(), Status> {
    if replica.status().removed {
        return Err(Status::unavailable("this controller was removed from its group"));
    }
    Ok(())
}

/// Waits for a ReadIndex round: what follows reads state no older than the request.
pub async fn fresh(replica: &ReplicaHandle) -> Result<(), Status> {
    serving(replica)?;
    replica.read_barrier().await.map_err(|e| status_of(replica, e))
}

fn wire(e: WireError) -> Status {
    Status::invalid_argument(e.why)
}

#[tonic::async_trait]
impl Client for ClientService {
    async fn submit(
        &self,
        req: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitReply>, Status> {
        let me = user(&req)?;
        leader_only(&self.replica)?;
        let req = req.into_inner();
        let mut spec: JobSpec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("missing spec"))?
            .try_into()
            .map_err(wire)?;
        // A job runs as whoever submitted it: the credential says who, never the request.
        (spec.user, spec.uid, spec.gid) = (me.name, me.uid, me.gid);
        let now = (self.clock)();
        self.replica.read(|st| {
            for v in &self.validators {
                v.check(st, &spec).map_err(|r| Status::failed_precondition(r.0))?;
            }
            chorus_core::fsm::check_submit(st, &spec)
                .map_err(|r| Status::failed_precondition(r.to_string()))?;
            Ok::<_, Status>(())
        })?;
        if req.test_only {
            let t = self.replica.read(|st| test_only(st, &*self.scheduler, spec, now))?;
            return Ok(Response::new(pb::SubmitReply { job_id: 0, test_only: Some(t) }));
        }
        let spec = Box::new(spec);
        let cmd = match <[u8; 16]>::try_from(req.request_id.as_slice()) {
            Ok(id) => Command::SubmitOnce { request: u128::from_be_bytes(id), spec, now },
            Err(_) if req.request_id.is_empty() => Command::Submit { spec, now },
            Err(_) => return Err(Status::invalid_argument("request_id must be 16 bytes")),
        };
        let applied =
            self.replica.propose(cmd, vec![]).await.map_err(|e| status_of(&self.replica, e))?;
        match applied {
            Applied::Submitted(ids) => {
                Ok(Response::new(pb::SubmitReply { job_id: ids[0], test_only: None }))
            }
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    async fn jobs(&self, req: Request<pb::JobsRequest>) -> Result<Response<pb::JobsReply>, Status> {
        user(&req)?;
        let req = req.into_inner();
        fresh(&self.replica).await?;
        let (jobs, now) = self.replica.read(|st| {
            let jobs: Vec<_> = if req.job_ids.is_empty() && req.include_finished {
                st.jobs.values().cloned().collect()
            } else if req.job_ids.is_empty() {
                // Only the indices: finished jobs pile up, the queue does not.
                st.pending.union(&st.active).map(|id| st.jobs[id].clone()).collect()
            } else {
                let mut out = vec![];
                for id in &req.job_ids {
                    // An array id names every task of the array.
                    match st.arrays.get(id) {
                        Some(tasks) => out.extend(tasks.iter().map(|t| st.jobs[t].clone())),
                        None => out.extend(st.jobs.get(id).cloned()),
                    }
                }
                out
            };
            (jobs, st.now)
        });
        let now = now.max((self.clock)());
        Ok(Response::new(pb::JobsReply { jobs: encode_bincode(&jobs), now }))
    }

    async fn nodes(
        &self,
        req: Request<pb::NodesRequest>,
    ) -> Result<Response<pb::NodesReply>, Status> {
        user(&req)?;
        fresh(&self.replica).await?;
        let nodes = self.replica.read(|st| st.nodes.values().cloned().collect::<Vec<_>>());
        Ok(Response::new(pb::NodesReply { nodes: encode_bincode(&nodes), now: (self.clock)() }))
    }

    async fn cluster(
        &self,
        req: Request<pb::ClusterRequest>,
    ) -> Result<Response<pb::ClusterReply>, Status> {
        user(&req)?;
        let config = self.replica.read(|st| st.config.clone());
        let role = if self.replica.is_leader() { "leader" } else { "follower" };
        Ok(Response::new(pb::ClusterReply {
            config: encode_bincode(&config),
            controller_addr: self.me.client_addr.clone(),
            role: role.into(),
            now: (self.clock)(),
        }))
    }

    async fn cancel(
        &self,
        req: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        let me = user(&req)?;
        leader_only(&self.replica)?;
        let req = req.into_inner();
        let jobs = self.expand_ids(&req.job_ids)?;
        self.may_touch(&me, &jobs)?;
        if req.signal != 0 {
            // A signal alone changes no state: it goes straight to the nodes running the jobs.
            let targets = self.replica.read(|st| {
                jobs.iter()
                    .filter_map(|id| st.jobs.get(id))
                    .filter(|j| st.active.contains(&j.id))
                    .flat_map(|j| {
                        let running = j.replicas.iter().filter(|r| r.is_running());
                        running.filter_map(|r| Some((j.id, r.batch_node()?.to_owned())))
                    })
                    .collect::<Vec<_>>()
            });
            for (job, node) in &targets {
                self.hub.signal(node, *job, req.signal);
            }
            return Ok(Response::new(pb::ActionReply {
                changed: targets.iter().map(|t| t.0).collect(),
            }));
        }
        let now = (self.clock)();
        let applied = self
            .replica
            .propose(Command::Cancel { jobs, uid: cancel_uid(&me), now }, vec![])
            .await
            .map_err(|e| status_of(&self.replica, e))?;
        Ok(Response::new(pb::ActionReply { changed: changed(applied) }))
    }

    async fn control(
        &self,
        req: Request<pb::ControlRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        let me = user(&req)?;
        leader_only(&self.replica)?;
        let req = req.into_inner();
        let now = (self.clock)();
        let action =
            Action::try_from(req.action).map_err(|_| Status::invalid_argument("unknown action"))?;
        let cmd = match action {
            Action::Drain | Action::Resume => {
                self.replica
                    .read(|st| identity::may_set_node(&me, &req.node, &st.identities))
                    .map_err(denied)?;
                let state = if action == Action::Drain { NodeState::Drain } else { NodeState::Up };
                let reason = (action == Action::Drain).then(|| req.reason.clone());
                Command::SetNodeState { node: req.node.clone(), state, reason, user: me.name, now }
            }
            _ => {
                let jobs = self.expand_ids(&req.job_ids)?;
                self.may_touch(&me, &jobs)?;
                match action {
                    Action::Hold => Command::Hold { jobs, admin: me.is_admin(), now },
                    Action::Uhold => Command::Hold { jobs, admin: false, now },
                    Action::Release => Command::Release { jobs, now },
                    Action::Requeue => Command::Requeue { jobs, now },
                    Action::Update => {
                        Command::Update { jobs, update: parse_update(&req.fields)?, now }
                    }
                    Action::Drain | Action::Resume => unreachable!("handled above"),
                }
            }
        };
        let applied =
            self.replica.propose(cmd, vec![]).await.map_err(|e| status_of(&self.replica, e))?;
        Ok(Response::new(pb::ActionReply { changed: changed(applied) }))
    }

    async fn output(
        &self,
        req: Request<pb::OutputRequest>,
    ) -> Result<Response<pb::OutputReply>, Status> {
        let me = user(&req)?;
        let id = req.into_inner().job_id;
        fresh(&self.replica).await?;
        let job = self
            .replica
            .read(|st| st.jobs.get(&id).cloned())
            .ok_or_else(|| Status::not_found("Invalid job id specified"))?;
        identity::may_touch_job(&me, &job).map_err(denied)?;
        if !job.state.is_terminal() {
            return Err(Status::failed_precondition(format!("job {id} has not finished")));
        }
        let replica = job.result_replica.unwrap_or(0);
        let data = self.store.outputs(id, replica).map_err(|e| Status::internal(e.to_string()))?;
        let files = job
            .outputs
            .iter()
            .zip(data)
            .map(|(f, data)| pb::OutputFile { path: f.path.clone(), data, append: f.append })
            .collect();
        Ok(Response::new(pb::OutputReply { files }))
    }

    async fn controllers(
        &self,
        req: Request<pb::ControllersRequest>,
    ) -> Result<Response<pb::ControllersReply>, Status> {
        user(&req)?;
        Ok(Response::new(self.group()))
    }

    async fn stake(
        &self,
        req: Request<pb::StakeRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        use pb::stake_request::Action as Stake;
        let me = user(&req)?;
        leader_only(&self.replica)?;
        let req = req.into_inner();
        let now = (self.clock)();
        let action =
            Stake::try_from(req.action).map_err(|_| Status::invalid_argument("unknown action"))?;
        let name_ok =
            |s: &str| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic());
        if action == Stake::CreditUser && !name_ok(&req.user) {
            return Err(Status::invalid_argument("user: 1 to 64 printable characters"));
        }
        if action != Stake::CreditUser && !name_ok(&req.operator) {
            return Err(Status::invalid_argument("operator: 1 to 64 printable characters"));
        }
        if matches!(action, Stake::Bond | Stake::Unbond) && !name_ok(&req.node) {
            return Err(Status::invalid_argument("node: 1 to 64 printable characters"));
        }
        let (operator, node, amount) = (req.operator, req.node, req.amount);
        if action == Stake::Deposit {
            identity::admin_only(&me, "depositing credits")
        } else {
            self.replica.read(|st| identity::may_stake(&me, &operator, &node, &st.identities))
        }
        .map_err(denied)?;
        let cmd = match action {
            Stake::Deposit => Command::Deposit { operator, amount, now },
            Stake::Bond => Command::Bond { operator, node, amount, now },
            Stake::Unbond => Command::Unbond { operator, node, amount, now },
            Stake::CreditUser => Command::CreditUser { user: req.user, amount, now },
        };
        self.replica.propose(cmd, vec![]).await.map_err(|e| status_of(&self.replica, e))?;
        Ok(Response::new(pb::ActionReply { changed: vec![] }))
    }

    async fn accounts(
        &self,
        req: Request<pb::AccountsRequest>,
    ) -> Result<Response<pb::AccountsReply>, Status> {
        user(&req)?;
        fresh(&self.replica).await?;
        let (accounts, min_stake) =
            self.replica.read(|st| (st.accounts.clone(), st.config.min_stake));
        Ok(Response::new(pb::AccountsReply {
            accounts: encode_bincode(&accounts),
            now: (self.clock)(),
            min_stake,
        }))
    }

    async fn change_controllers(
        &self,
        req: Request<pb::ChangeControllersRequest>,
    ) -> Result<Response<pb::ControllersReply>, Status> {
        identity::admin_only(&user(&req)?, "changing the controller group").map_err(denied)?;
        leader_only(&self.replica)?;
        let req = req.into_inner();
        let change = match (req.add_peer_addr.is_empty(), req.remove_id) {
            (false, 0) => Membership::Add(self.identify(&req.add_peer_addr).await?),
            (true, id) if id != 0 => {
                if !self.replica.status().voters.contains(&id) {
                    return Err(Status::not_found(format!("no controller {id} in the group")));
                }
                if id == self.me.id {
                    // A leader does not remove itself: it hands over first, and the client
                    // retries at the new leader.
                    let to = self.replica.status().voters.into_iter().find(|v| *v != id);
                    let Some(to) = to else {
                        return Err(Status::failed_precondition(
                            "cannot remove the last controller",
                        ));
                    };
                    self.replica.transfer_leader(to);
                    return Err(Status::unavailable(format!(
                        "controller {id} leads; leadership is moving to {to}, ask again there"
                    )));
                }
                Membership::Remove(id)
            }
            _ => {
                return Err(Status::invalid_argument(
                    "give either a peer address to add or an id to remove",
                ));
            }
        };
        self.replica.change_membership(change).await.map_err(|e| status_of(&self.replica, e))?;
        Ok(Response::new(self.group()))
    }

    async fn issue_token(
        &self,
        req: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssueTokenReply>, Status> {
        let me = user(&req)?;
        identity::admin_only(&me, "issuing tokens").map_err(denied)?;
        leader_only(&self.replica)?;
        let req = req.into_inner();
        let hash: [u8; 32] = req
            .hash
            .as_slice()
            .try_into()
            .map_err(|_| Status::invalid_argument("hash: 32 bytes expected"))?;
        let grant = match (req.join_operator.is_empty(), req.user) {
            (false, None) => Grant::Join { operator: req.join_operator },
            (true, Some(u)) => Grant::User(User::try_from(u).map_err(wire)?),
            _ => {
                return Err(Status::invalid_argument(
                    "give either an operator to join nodes for or a user",
                ));
            }
        };
        let now = (self.clock)();
        let expires = if req.ttl_secs == 0 { 0 } else { now.saturating_add(req.ttl_secs) };
        let token = Token { grant, expires, issued_by: me.name, issued_at: now };
        let cmd = Command::IssueToken { hash, token, now };
        self.replica.propose(cmd, vec![]).await.map_err(|e| status_of(&self.replica, e))?;
        Ok(Response::new(pb::IssueTokenReply { id: identity::token_id(&hash), expires }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        identity::admin_only(&user(&req)?, "revoking tokens").map_err(denied)?;
        leader_only(&self.replica)?;
        let cmd = Command::RevokeToken { id: req.into_inner().id, now: (self.clock)() };
        self.replica.propose(cmd, vec![]).await.map_err(|e| status_of(&self.replica, e))?;
        Ok(Response::new(pb::ActionReply { changed: vec![] }))
    }

    async fn issue_certificate(
        &self,
        req: Request<pb::IssueCertificateRequest>,
    ) -> Result<Response<pb::IssueCertificateReply>, Status> {
        identity::admin_only(&user(&req)?, "issuing certificates").map_err(denied)?;
        serving(&self.replica)?;
        let req = req.into_inner();
        let who = User::try_from(req.user.unwrap_or_default()).map_err(wire)?;
        let days = if req.days == 0 { chorus_proto::tls::LEAF_DAYS } else { req.days };
        let certificate = self
            .ca
            .issue_user(&who, &req.public_key, days, (self.clock)())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(user = %who, days, "user certificate issued");
        Ok(Response::new(pb::IssueCertificateReply {
            certificate,
            ca: self.ca.cert_pem().to_owned(),
        }))
    }

    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIReply>, Status> {
        let me = user(&req)?;
        let credential = caller(&req)?.credential.as_str().to_owned();
        Ok(Response::new(pb::WhoAmIReply { user: Some((&me).into()), credential }))
    }
}

/// The uid a cancellation is recorded with: an administrator's counts as root's, which the
/// state machine lets cancel any job.
fn cancel_uid(me: &User) -> u32 {
    if me.is_admin() { 0 } else { me.uid }
}

impl ClientService {
    /// The group as this controller sees it.
    fn group(&self) -> pb::ControllersReply {
        let st = self.replica.status();
        let controllers = self
            .replica
            .members()
            .into_iter()
            .map(|m| {
                let role = if m.id == st.leader_id {
                    "leader"
                } else if m.id == st.id && st.role == StateRole::Candidate {
                    "candidate"
                } else {
                    "follower"
                };
                let matched = st.progress.iter().find(|(id, _)| *id == m.id).map_or(0, |p| p.1);
                pb::Controller {
                    id: m.id,
                    client_addr: m.client_addr,
                    peer_addr: m.peer_addr,
                    role: role.into(),
                    matched,
                }
            })
            .collect();
        pb::ControllersReply {
            controllers,
            self_id: st.id,
            leader_id: st.leader_id,
            term: st.term,
            commit: st.commit,
            applied: st.applied,
        }
    }

    /// Asks the controller listening at `peer_addr` who it is, before proposing it.
    async fn identify(&self, peer_addr: &str) -> Result<Member, Status> {
        use chorus_proto::leader::chain;
        use chorus_proto::peer::peer_client::PeerClient;
        let ep = chorus_proto::tls::endpoint(peer_addr, &self.peer_tls)
            .map_err(|e| {
                Status::invalid_argument(format!("bad address {peer_addr}: {}", chain(&e)))
            })?
            .connect_timeout(Duration::from_secs(3));
        let ch = ep.connect().await.map_err(|e| {
            Status::failed_precondition(format!(
                "no controller answers at {peer_addr}: {}",
                chain(&e)
            ))
        })?;
        let who = PeerClient::new(ch)
            .identify(chorus_proto::peer::IdentifyRequest {})
            .await
            .map_err(|e| {
                Status::failed_precondition(format!(
                    "{peer_addr} did not identify: {}",
                    e.message()
                ))
            })?
            .into_inner();
        let cluster = self.replica.read(|st| st.config.cluster_name.clone());
        if who.cluster_name != cluster {
            return Err(Status::failed_precondition(format!(
                "{peer_addr} belongs to cluster `{}`, not `{cluster}`",
                who.cluster_name
            )));
        }
        if self.replica.status().voters.contains(&who.id) {
            return Err(Status::already_exists(format!(
                "controller {} is already in the group",
                who.id
            )));
        }
        Ok(Member { id: who.id, client_addr: who.client_addr, peer_addr: who.peer_addr })
    }

    /// Refuses unless `me` may touch every one of `jobs` (its own, or any for an admin).
    fn may_touch(&self, me: &User, jobs: &[JobId]) -> Result<(), Status> {
        self.replica.read(|st| {
            jobs.iter()
                .filter_map(|id| st.jobs.get(id))
                .try_for_each(|j| identity::may_touch_job(me, j))
                .map_err(denied)
        })
    }

    /// Array ids name every task; unknown ids are refused before anything is proposed.
    fn expand_ids(&self, ids: &[u32]) -> Result<Vec<JobId>, Status> {
        self.replica.read(|st| {
            let mut out = vec![];
            for id in ids {
                match (st.arrays.get(id), st.jobs.contains_key(id)) {
                    (Some(tasks), _) => out.extend(tasks),
                    (None, true) => out.push(*id),
                    (None, false) => return Err(Status::not_found("Invalid job id specified")),
                }
            }
            Ok(out)
        })
    }
}

fn changed(a: Applied) -> Vec<u32> {
    match a {
        Applied::Changed(v) | Applied::Started(v) | Applied::Submitted(v) => v,
        _ => vec![],
    }
}

fn parse_update(fields: &[pb::KeyValue]) -> Result<JobUpdate, Status> {
    let mut u = JobUpdate::default();
    fn num<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, Status> {
        v.parse().map_err(|_| Status::invalid_argument(format!("Invalid {k} value: {v}")))
    }
    for f in fields {
        let v = f.value.as_str();
        match f.key.to_ascii_lowercase().as_str() {
            "timelimit" => {
                u.time_limit = Some(
                    parse_time_limit(v)
                        .map_err(|_| Status::invalid_argument("Invalid TimeLimit value"))?,
                )
            }
            "jobname" | "name" => u.name = Some(v.into()),
            "partition" => u.partition = Some(v.into()),
            "comment" => u.comment = Some(v.into()),
            "nice" => u.nice = Some(num("Nice", v)?),
            "priority" => u.priority = Some(num("Priority", v)?),
            "numtasks" | "ntasks" => u.ntasks = Some(num("NumTasks", v)?),
            "cpuspertask" | "cpus/task" => u.cpus_per_task = Some(num("CPUsPerTask", v)?),
            other => {
                return Err(Status::invalid_argument(format!(
                    "Update of this parameter is not supported: {other}"
                )));
            }
        }
    }
    Ok(u)
}

/// `sbatch --test-only`: where and when the job would start if submitted now.
fn test_only(
    st: &chorus_core::ClusterState,
    sched: &dyn Scheduler,
    spec: JobSpec,
    now: u64,
) -> Result<pb::TestOnly, Status> {
    let mut trial = st.clone();
    let partition = chorus_core::fsm::check_submit(&trial, &spec)
        .map_err(|r| Status::failed_precondition(r.to_string()))?;
    let cpus = spec.num_cpus();
    let ids =
        match chorus_core::fsm::apply(&mut trial, Command::Submit { spec: Box::new(spec), now }) {
            Ok(Applied::Submitted(ids)) => ids,
            Ok(other) => return Err(Status::internal(format!("unexpected result {other:?}"))),
            Err(r) => return Err(Status::failed_precondition(r.to_string())),
        };
    let plan = sched.plan(&trial, now);
    let (start_time, nodes) = match plan.starts.iter().find(|p| p.job == ids[0]) {
        Some(p) => {
            let nodes: Vec<String> = p.replicas.iter().flatten().map(|a| a.node.clone()).collect();
            (now, chorus_core::slurm::hostlist::compress(&nodes))
        }
        // The earliest a running job is due to end is a lower bound on the start.
        None => (
            st.active.iter().filter_map(|id| st.jobs[id].deadline()).min().unwrap_or(now),
            String::new(),
        ),
    };
    Ok(pb::TestOnly { job_id: ids[0], start_time, cpus, nodes, partition })
}
