//! chorus-cli: Slurm's commands over Chorus, and `chorus` for operators.
//!
//! Every binary reads the client configuration named by `CHORUS_CONF` (as Slurm's commands
//! read `SLURM_CONF`; default `/etc/chorus/chorus.toml`), talks gRPC over TLS to a
//! controller, and prints what Slurm prints. The formatting is pure ([`format`]); this module
//! holds the I/O.
//!
//! ```text
//!   chorus.toml: controllers, ca (the cluster CA), and cert + key or token_file
//!     ──▶ Credentials: TLS trusting the CA only, showing the certificate, or a
//!         `authorization: Bearer` header on every call ──▶ Ctl::call ──▶ the leader
//! ```

pub mod credentials;
pub mod format;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chorus_core::job::Job;
use chorus_core::node::Node;
use chorus_core::state::ClusterConfig;
use chorus_proto::client::{self as pb, client_client::ClientClient};
use chorus_proto::leader::Controllers;
use serde::{Deserialize, Serialize};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig};
use tonic::{Code, Status};

/// The client configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientConf {
    pub cluster_name: String,
    /// `host:port` of each controller's client API (Slurm's `SlurmctldHost` lines). Any one
    /// that answers leads the client to the leader. `CHORUS_CONTROLLERS` (comma-separated)
    /// overrides it.
    pub controllers: Vec<String>,
    /// The cluster CA's certificate: controllers are believed by it only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// A client certificate from the cluster CA (`chorus user cert`) and its key...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// ... or a file holding a token an administrator issued (`chorus user token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The file it was read from: relative paths above are relative to its directory.
    #[serde(skip)]
    pub source: PathBuf,
}

/// How a client shows who it is: TLS that trusts the cluster CA (with the client's
/// certificate, if it has one), and a bearer token on every call otherwise.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub tls: ClientTlsConfig,
    pub bearer: Bearer,
}

/// Adds `authorization: Bearer TOKEN` to every call, when there is a token.
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub const DEFAULT_CONF: &str = "/etc/chorus/chorus.toml";

impl ClientConf {
    pub fn path() -> PathBuf {
        std::env::var_os("CHORUS_CONF").map(PathBuf::from).unwrap_or_else(|| DEFAULT_CONF.into())
    }

    pub fn load() -> anyhow::Result<Self> {
        let path = Self::path();
        Self::load_from(&path)
    }

    pub fn load_from(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read the Chorus configuration {}: {e} (set CHORUS_CONF, e.g. the line `chorus up` prints)",
                path.display()
            )
        })?;
        let mut conf: ClientConf =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        conf.source = path.to_owned();
        if let Ok(list) = std::env::var("CHORUS_CONTROLLERS") {
            conf.controllers = list
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(String::from)
                .collect();
        }
        if conf.controllers.is_empty() {
            anyhow::bail!("{}: no controllers listed", path.display());
        }
        Ok(conf)
    }

    /// A path from the file, relative to the file's directory.
    fn resolve(&self, p: &Path) -> PathBuf {
        match self.source.parent() {
            Some(dir) if !p.is_absolute() => dir.join(p),
            _ => p.to_owned(),
        }
    }

    fn read(&self, what: &str, p: &Path, private: bool) -> anyhow::Result<String> {
        let path = self.resolve(p);
        let r = if private {
            chorus_proto::tls::read_private(&path)
        } else {
            chorus_proto::tls::read_public(&path)
        };
        r.map_err(|e| anyhow::anyhow!("{} ({what}): {e}", self.source.display()))
    }

    /// The credentials the file names. None at all is an error that says how to get some.
    pub fn credentials(&self) -> anyhow::Result<Credentials> {
        let shown = &self.source;
        let Some(ca) = &self.ca else {
            anyhow::bail!(
                "{}: no `ca`: the cluster CA's certificate is needed to check the controllers \
                 (`chorus up` writes one; ask your administrator for it)",
                shown.display()
            );
        };
        let ca = self.read("ca", ca, false)?;
        match (&self.cert, &self.key, &self.token_file) {
            (Some(cert), Some(key), _) => {
                let cert = self.read("cert", cert, false)?;
                let key = self.read("key", key, true)?;
                let tls = chorus_proto::tls::client_tls(&ca, Some((&cert, &key)));
                Ok(Credentials { tls, bearer: Bearer::default() })
            }
            (None, None, Some(token)) => {
                let token = self.read("token_file", token, true)?;
                let value = format!("Bearer {}", token.trim()).parse().map_err(|_| {
                    anyhow::anyhow!("{}: token_file holds no token", shown.display())
                })?;
                let tls = chorus_proto::tls::client_tls(&ca, None);
                Ok(Credentials { tls, bearer: Bearer(Some(value)) })
            }
            (Some(_), None, _) | (None, Some(_), _) => anyhow::bail!(
                "{}: `cert` and `key` go together: give both, or neither",
                shown.display()
            ),
            (None, None, None) => anyhow::bail!(
                "{}: no credentials: set `cert` and `key` (a certificate from `chorus user cert`) \
                 or `token_file` (a token from `chorus user token`); ask your administrator for either",
                shown.display()
            ),
        }
    }
}

/// How long a command keeps looking for a leader before it gives up (Slurm's default
/// `MessageTimeout` is 10 s): long enough to ride out an election.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A client of the controller group: every call goes to the leader (see
/// [`chorus_proto::leader`]).
pub struct Ctl {
    pub controllers: Controllers,
    pub conf: ClientConf,
    pub bearer: Bearer,
}

type Client = ClientClient<InterceptedService<Channel, Bearer>>;

/// `rpc!(ctl, method, request)`: calls `method` on the leader through [`Ctl::call`], with a
/// clone of `request` for every attempt.
#[macro_export]
macro_rules! rpc {
    ($ctl:expr, $method:ident, $req:expr) => {{
        let req = $req;
        $ctl.call(|mut c| {
            let req = req.clone();
            async move { c.$method(req).await }
        })
        .await
    }};
}

impl Ctl {
    /// Reads the configuration. Connections are made by the first call.
    pub async fn connect() -> anyhow::Result<Self> {
        Self::with_conf(ClientConf::load()?)
    }

    /// A client of the controllers `conf` lists, with its credentials.
    pub fn with_conf(conf: ClientConf) -> anyhow::Result<Self> {
        Self::at(&conf.controllers.clone(), conf)
    }

    /// A client of the controllers at `addrs`, with the credentials of `conf`.
    pub fn at(addrs: &[String], conf: ClientConf) -> anyhow::Result<Self> {
        let creds = conf.credentials()?;
        Ok(Self { controllers: Controllers::new(addrs, creds.tls), conf, bearer: creds.bearer })
    }

    /// Calls the leader with `f`, following redirects and riding out elections.
    pub async fn call<T, F, Fut>(&mut self, mut f: F) -> Result<T, Status>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let max = self.controllers.max_message();
        let bearer = self.bearer.clone();
        self.controllers
            .call(PATIENCE, |ch| {
                f(ClientClient::with_interceptor(ch, bearer.clone())
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max))
            })
            .await
            .map_err(|s| {
                if s.code() == Code::Unavailable && s.message().starts_with("cannot connect") {
                    Status::unavailable(format!(
                        "Unable to contact slurm controller (connect failure): {}",
                        s.message()
                    ))
                } else {
                    s
                }
            })
    }

    pub async fn jobs(
        &mut self,
        ids: Vec<u32>,
        include_finished: bool,
    ) -> anyhow::Result<(Vec<Job>, u64)> {
        let req = pb::JobsRequest { job_ids: ids, include_finished };
        let r = rpc!(self, jobs, req)?;
        Ok((chorus_proto::decode_bincode(&r.jobs)?, r.now))
    }

    pub async fn nodes(&mut self) -> anyhow::Result<(Vec<Node>, u64)> {
        let r = rpc!(self, nodes, pb::NodesRequest {})?;
        Ok((chorus_proto::decode_bincode(&r.nodes)?, r.now))
    }

    pub async fn cluster(&mut self) -> anyhow::Result<(ClusterConfig, pb::ClusterReply)> {
        let r = rpc!(self, cluster, pb::ClusterRequest {})?;
        Ok((chorus_proto::decode_bincode(&r.config)?, r))
    }

    /// Fetches a finished job's output files and writes each where Slurm's naming puts it.
    /// A file already there with the same bytes (shared filesystem) is left alone.
    pub async fn fetch_outputs(&mut self, job: u32) -> anyhow::Result<Vec<String>> {
        let r = rpc!(self, output, pb::OutputRequest { job_id: job })?;
        let mut written = vec![];
        for f in r.files {
            let path = Path::new(&f.path);
            if std::fs::read(path)
                .is_ok_and(|old| old == f.data || (f.append && old.ends_with(&f.data)))
            {
                continue;
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            if f.append {
                use std::io::Write;
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?
                    .write_all(&f.data)?;
            } else {
                std::fs::write(path, &f.data)?;
            }
            written.push(f.path);
        }
        Ok(written)
    }
}

/// Asks every controller, directly and at once, what role it has: the configured ones and
/// any other the answering ones list as members.
pub async fn ping_all(conf: &ClientConf) -> anyhow::Result<Vec<format::controllers::Ping>> {
    let creds = conf.credentials()?;
    let ask = move |addr: String| {
        let creds = creds.clone();
        async move {
            let ep = match chorus_proto::tls::endpoint(&addr, &creds.tls) {
                Ok(ep) => {
                    ep.connect_timeout(Duration::from_secs(2)).timeout(Duration::from_secs(2))
                }
                Err(_) => return (addr, None),
            };
            let reply = match ep.connect().await {
                Ok(ch) => ClientClient::with_interceptor(ch, creds.bearer)
                    .controllers(pb::ControllersRequest {})
                    .await
                    .ok()
                    .map(tonic::Response::into_inner),
                Err(_) => None,
            };
            (addr, reply)
        }
    };
    let mut addrs = conf.controllers.clone();
    let mut answers = futures_join(addrs.iter().cloned().map(&ask)).await;
    // Members the configuration does not list (added later) are asked too.
    let extra: Vec<String> = answers
        .iter()
        .filter_map(|(_, r)| r.as_ref())
        .flat_map(|r| r.controllers.iter().map(|c| c.client_addr.clone()))
        .filter(|a| !addrs.contains(a))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    addrs.extend(extra.iter().cloned());
    answers.extend(futures_join(extra.into_iter().map(&ask)).await);
    Ok(answers
        .into_iter()
        .map(|(addr, r)| format::controllers::Ping {
            addr,
            role: r.map(|r| {
                let me = r.controllers.iter().find(|c| c.id == r.self_id);
                me.map_or_else(|| "follower".to_owned(), |c| c.role.clone())
            }),
        })
        .collect())
}

/// Runs futures concurrently and returns their outputs in order.
async fn futures_join<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = vec![];
    for h in handles {
        out.push(h.await.expect("ping task panicked"));
    }
    out
}

/// The message a gRPC error carries, for `sbatch: error: ...` lines.
pub fn status_message(e: &anyhow::Error) -> String {
    match e.downcast_ref::<tonic::Status>() {
        Some(s) => s.message().to_owned(),
        None => e.to_string(),
    }
}

/// The calling user: name, uid, gid.
pub fn current_user() -> (String, u32, u32) {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    (name, uid.as_raw(), gid.as_raw())
}

/// This host's short name (`SLURM_SUBMIT_HOST`).
pub fn short_hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().split('.').next().unwrap_or_default().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// `n` distinct loopback ports, free when chosen, for daemons started next (a local
/// cluster's controllers). They come from outside the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`) where it leaves room: a port from `bind(0)` is in that
/// range, so any outgoing connection (a controller dialling its peers) or another program's
/// `bind(0)` could take it before its daemon binds it, and the daemon would die at start-up.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    use rand::Rng;
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut f = s.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((f.next()??, f.next()??))
        })
        .unwrap_or((32768, 60999));
    // The unprivileged ports on either side of the ephemeral range, when there are enough.
    let mut spans: Vec<(u16, u16)> = vec![];
    if low > 11_000 {
        spans.push((10_000, low - 1));
    }
    if high < 64_000 {
        spans.push((high + 1, 65_535));
    }
    // Held until all are chosen, so the `n` are distinct.
    let mut held = vec![];
    let mut rng = rand::thread_rng();
    for _ in 0..n.saturating_mul(200) {
        if held.len() == n || spans.is_empty() {
            break;
        }
        let (a, b) = spans[rng.gen_range(0..spans.len())];
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", rng.gen_range(a..=b))) {
            held.push(l);
        }
    }
    // A machine whose ephemeral range covers everything: the kernel's choice.
    while held.len() < n {
        held.push(std::net::TcpListener::bind("127.0.0.1:0")?);
    }
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// Runs a command's async main on a small runtime and turns its result into an exit code.
/// A broken pipe (e.g. `squeue | head`) exits 0, as Slurm's commands do.
pub fn run_main(prog: &str, f: impl std::future::Future<Output = anyhow::Result<i32>>) -> ! {
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let code = match rt.block_on(f) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("{prog}: error: {}", status_message(&e));
            1
        }
    };
    std::process::exit(code)
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// `--version`: what every command prints.
pub fn print_version() -> anyhow::Result<i32> {
    print(concat!("chorus ", env!("CARGO_PKG_VERSION"), " (slurm-wlm 22.05 compatible)\n"))?;
    Ok(0)
}

/// Writes to stdout, reporting a broken pipe as an error `run_main` turns into exit 0.
pub fn print(s: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Parses job ids as Slurm's commands take them: `123`, `123_4`, `123_[1-3]`, comma lists.
/// Returns `(job or array id, Some(task))`.
pub fn parse_job_ids(list: &str) -> Result<Vec<(u32, Option<u32>)>, String> {
    let mut out = vec![];
    for item in list.split(',').filter(|s| !s.is_empty()) {
        let bad = || format!("Invalid job id: {item}");
        match item.split_once('_') {
            None => out.push((item.parse().map_err(|_| bad())?, None)),
            Some((id, task)) => {
                let id: u32 = id.parse().map_err(|_| bad())?;
                let task = task.trim_start_matches('[').trim_end_matches(']');
                if task == "*" {
                    out.push((id, None));
                    continue;
                }
                let spec = chorus_core::slurm::array::parse_array_spec(task).map_err(|_| bad())?;
                out.extend(spec.tasks.into_iter().map(|t| (id, Some(t))));
            }
        }
    }
    Ok(out)
}

/// Resolves `(id, task)` pairs to job ids using jobs the controller returned.
pub fn resolve_ids(pairs: &[(u32, Option<u32>)], jobs: &[Job]) -> Vec<u32> {
    let mut out = vec![];
    for (id, task) in pairs {
        match task {
            Some(t) => out.extend(jobs.iter().filter(|j| j.array == Some((*id, *t))).map(|j| j.id)),
            None => {
                let tasks: Vec<u32> = jobs
                    .iter()
                    .filter(|j| j.array.map(|a| a.0) == Some(*id))
                    .map(|j| j.id)
                    .collect();
                if tasks.is_empty() {
                    out.push(*id);
                } else {
                    out.extend(tasks);
                }
            }
        }
    }
    out
}

/// A moment as Slurm's commands take one (`sbatch --begin`, `sacct -S/-E`): `now`,
/// `now+N[unit]` / `now-N[unit]` (units: seconds, minutes, hours, days, weeks and their
/// abbreviations), or a local date/time ([`parse_local_time`]).
pub fn parse_time_arg(s: &str, now: u64) -> Option<u64> {
    let Some(rest) = s.strip_prefix("now") else { return parse_local_time(s, now) };
    if rest.is_empty() {
        return Some(now);
    }
    let (sign, rest) = rest.split_at_checked(1)?;
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let n: u64 = rest[..digits].parse().ok()?;
    let unit = match &rest[digits..] {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 604_800,
        _ => return None,
    };
    match sign {
        "+" => now.checked_add(n.checked_mul(unit)?),
        "-" => now.checked_sub(n.checked_mul(unit)?),
        _ => None,
    }
}

/// `YYYY-MM-DD[THH:MM[:SS]]` or `HH:MM[:SS]` (today, or tomorrow if past) in local time.
pub fn parse_local_time(s: &str, now: u64) -> Option<u64> {
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (Some(d), Some(t)),
        None if s.contains('-') => (Some(s), None),
        None => (None, Some(s)),
    };
    // SAFETY: tm is plain data; localtime_r/mktime read and write only it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t = now as libc::time_t;
    // SAFETY: valid pointers to locals.
    unsafe { libc::localtime_r(&t, &mut tm) };
    let nums =
        |x: &str, sep: char| -> Option<Vec<i32>> { x.split(sep).map(|p| p.parse().ok()).collect() };
    if let Some(d) = date {
        let v = nums(d, '-')?;
        let [y, m, day] = v[..] else { return None };
        (tm.tm_year, tm.tm_mon, tm.tm_mday) = (y - 1900, m - 1, day);
        (tm.tm_hour, tm.tm_min, tm.tm_sec) = (0, 0, 0);
    }
    if let Some(t) = time {
        let v = nums(t, ':')?;
        let (h, m, sec) = match v[..] {
            [h, m] => (h, m, 0),
            [h, m, s] => (h, m, s),
            _ => return None,
        };
        (tm.tm_hour, tm.tm_min, tm.tm_sec) = (h, m, sec);
    }
    tm.tm_isdst = -1;
    // SAFETY: tm is initialised above.
    let mut at = unsafe { libc::mktime(&mut tm) };
    if at < 0 {
        return None;
    }
    if date.is_none() && (at as u64) < now {
        at += 86_400;
    }
    Some(at as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_bindable_and_not_ephemeral() {
        let ports = free_ports(10).unwrap();
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), 10, "{ports:?}");
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let (low, high) = range.split_once(char::is_whitespace).unwrap();
        let (low, high): (u16, u16) = (low.trim().parse().unwrap(), high.trim().parse().unwrap());
        for p in ports {
            if low > 11_000 || high < 64_000 {
                assert!(!(low..=high).contains(&p), "{p} is in the ephemeral range {low}-{high}");
            }
            std::net::TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }

    #[test]
    fn relative_times_count_from_now() {
        assert_eq!(parse_time_arg("now", 1000), Some(1000));
        assert_eq!(parse_time_arg("now+60", 1000), Some(1060));
        assert_eq!(parse_time_arg("now+2minutes", 1000), Some(1120));
        assert_eq!(parse_time_arg("now-1hours", 10_000), Some(6400));
        assert_eq!(parse_time_arg("now+1fortnight", 1000), None);
        assert_eq!(parse_time_arg("now*3", 1000), None);
        assert_eq!(parse_time_arg("now-5days", 10), None, "before the epoch");
    }

    #[test]
    fn job_ids_take_slurms_forms() {
        assert_eq!(parse_job_ids("12").unwrap(), vec![(12, None)]);
        assert_eq!(parse_job_ids("12_3,14").unwrap(), vec![(12, Some(3)), (14, None)]);
        assert_eq!(
            parse_job_ids("12_[1-3]").unwrap(),
            vec![(12, Some(1)), (12, Some(2)), (12, Some(3))]
        );
        assert_eq!(parse_job_ids("12_*").unwrap(), vec![(12, None)]);
        assert!(parse_job_ids("abc").is_err());
        assert!(parse_job_ids("12_x").is_err());
    }
}
