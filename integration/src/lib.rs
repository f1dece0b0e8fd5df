//! chorus-integration: a harness that runs the real binaries on loopback, the end-to-end
//! tests built on it (`tests/`), and the benchmark command (`src/bin/bench.rs`).
//!
//! ```text
//!   Cluster::start ──▶ `chorus up --dir TMP ...` ──▶ ctld + noded × N (real processes)
//!        │                     └── prints `export CHORUS_CONF=TMP/chorus.toml`
//!        └── run("sbatch", ...) with CHORUS_CONF set and the built binaries first on PATH
//! ```

pub mod sim;
pub mod trust;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The last `lines` lines of each log in `dir`, under its name.
fn log_tails(dir: &Path, lines: usize) -> String {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    logs.sort();
    let mut out = String::new();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        out += &format!("== {}\n", log.display());
        for l in &all[all.len().saturating_sub(lines)..] {
            out += l;
            out.push('\n');
        }
    }
    out
}

/// The directory holding the workspace's binaries (`target/debug` or `target/release`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CHORUS_BIN_DIR") {
        return d.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Fails with a clear message when the binaries have not been built.
pub fn require_binaries() -> PathBuf {
    let dir = bin_dir();
    for b in [
        "ctld",
        "noded",
        "chorus",
        "sbatch",
        "squeue",
        "scancel",
        "sacct",
        "scontrol",
        "sinfo",
        "adversary",
    ] {
        assert!(
            dir.join(b).exists(),
            "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
            dir.join(b).display()
        );
    }
    dir
}

/// Options for a local cluster.
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    pub nodes: u32,
    pub node_cpus: u32,
    pub node_mem: u64,
    pub node_gpus: Option<u32>,
    /// `UTIL:MEM` every stand-in GPU reports when sampled.
    pub node_gpu_fake_usage: Option<String>,
    /// Seconds between samples of a job's GPUs (`None`: noded's default).
    pub gpu_sample_every: Option<u64>,
    pub kill_wait: u32,
    /// 1, or 3 or 5 for a Raft group (`chorus up` restarts a controller that dies).
    pub controllers: u32,
    /// Entries between snapshots (`None`: the default).
    pub snapshot_every: Option<u64>,
    /// Seconds of silence before a node is marked DOWN (`None`: the default, 60).
    pub node_timeout: Option<u64>,
    /// Extra arguments for every `noded` (`chorus up --noded-arg`).
    pub noded_args: Vec<String>,
    /// Stake a node needs bonded to be given work (`chorus up --min-stake`).
    pub min_stake: u64,
    /// The partition's replication policy (`chorus up --replication`; `None`: fixed:1).
    pub replication: Option<String>,
    /// Extra arguments for every `ctld` (`chorus up --ctld-arg`).
    pub ctld_args: Vec<String>,
    /// Stake `chorus up` bonds to each node under an operator of its own (`None`: its
    /// default; `Some(0)`: none, nodes are left unbonded).
    pub node_stake: Option<u64>,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        Self {
            nodes: 2,
            node_cpus: 2,
            node_mem: 4000,
            node_gpus: None,
            node_gpu_fake_usage: None,
            gpu_sample_every: None,
            kill_wait: 2,
            controllers: 1,
            snapshot_every: None,
            node_timeout: None,
            noded_args: vec![],
            min_stake: 0,
            replication: None,
            ctld_args: vec![],
            node_stake: None,
        }
    }
}

/// A running `chorus up`, stopped (SIGTERM) when dropped.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    child: Child,
    bins: PathBuf,
}

impl Cluster {
    pub fn start(o: ClusterOpts) -> Self {
        let bins = require_binaries();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(bins.join("chorus"));
        cmd.args(["up", "--dir"])
            .arg(dir.path().join("state"))
            .args(["--nodes", &o.nodes.to_string()])
            .args(["--node-cpus", &o.node_cpus.to_string()])
            .args(["--node-mem", &o.node_mem.to_string()])
            .args(["--kill-wait", &o.kill_wait.to_string()])
            .args(["--controllers", &o.controllers.to_string()]);
        if let Some(g) = o.node_gpus {
            cmd.args(["--node-gpus", &g.to_string()]);
        }
        if let Some(u) = &o.node_gpu_fake_usage {
            cmd.args(["--node-gpu-fake-usage", u]);
        }
        if let Some(s) = o.gpu_sample_every {
            cmd.args(["--gpu-sample-every", &s.to_string()]);
        }
        if let Some(n) = o.snapshot_every {
            cmd.args(["--snapshot-every", &n.to_string()]);
        }
        if let Some(t) = o.node_timeout {
            cmd.args(["--node-timeout", &t.to_string()]);
        }
        if o.min_stake > 0 {
            cmd.args(["--min-stake", &o.min_stake.to_string()]);
        }
        for arg in &o.noded_args {
            cmd.arg(format!("--noded-arg={arg}"));
        }
        if let Some(s) = o.node_stake {
            cmd.args(["--node-stake", &s.to_string()]);
        }
        if let Some(r) = &o.replication {
            cmd.args(["--replication", r]);
        }
        for arg in &o.ctld_args {
            cmd.arg(format!("--ctld-arg={arg}"));
        }
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start chorus up");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(p) = line.strip_prefix("export CHORUS_CONF=") {
                    let _ = tx.send(PathBuf::from(p));
                }
            }
        });
        let conf = rx.recv_timeout(Duration::from_secs(90)).unwrap_or_else(|e| {
            // The temporary directory goes with the panic: what the daemons logged goes in it.
            panic!(
                "chorus up printed no `export CHORUS_CONF=` line in 90 s ({e}); its daemons' logs:\n{}",
                log_tails(&dir.path().join("state/log"), 20)
            )
        });
        Self { dir, conf, child, bins }
    }

    /// The cluster CA's directory (`ca.crt`, `ca.key`), as `chorus up` made it.
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("state/ca")
    }

    /// `(id, client address, peer address)` of each controller, as `chorus up` chose them.
    pub fn controllers(&self) -> Vec<(u64, String, String)> {
        let text = std::fs::read_to_string(self.dir.path().join("state/controllers"))
            .expect("chorus up lists its controllers");
        text.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?.parse().ok()?, f.next()?.to_owned(), f.next()?.to_owned()))
            })
            .collect()
    }

    /// A node agent's state directory (its key and certificate are under `keys/`).
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join("state/noded").join(node)
    }

    /// A client configuration for user `name` (uid `uid`) with a certificate the
    /// administrator issues through the controller; `role` adds `--admin` or
    /// `--operator OP`. Returns the configuration's path (for [`Cluster::run_as`]).
    pub fn user_conf(&self, name: &str, uid: u32, role: &[&str]) -> PathBuf {
        let dir = self.dir.path().join("users");
        let uid = uid.to_string();
        let mut args = vec!["user", "cert", name, "--uid", &uid];
        args.extend_from_slice(role);
        let out = dir.join(name).display().to_string();
        args.extend(["--out", &out]);
        let o = self.run("chorus", &args);
        assert!(o.status.success(), "chorus {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        self.conf_with(&format!("{name}.toml"), &String::from_utf8_lossy(&o.stdout))
    }

    /// This cluster's client configuration with its credential lines replaced by `lines`.
    pub fn conf_with(&self, file: &str, lines: &str) -> PathBuf {
        let base = std::fs::read_to_string(&self.conf).expect("chorus.toml");
        let kept: String = base
            .lines()
            .filter(|l| {
                !["ca", "cert", "key", "token_file"]
                    .iter()
                    .any(|k| l.starts_with(&format!("{k} =")))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let dir = self.dir.path().join("users");
        std::fs::create_dir_all(&dir).expect("users dir");
        let path = dir.join(file);
        std::fs::write(&path, format!("{kept}{lines}")).expect("write conf");
        path
    }

    /// Runs a CLI binary as the user of the client configuration `conf`.
    pub fn run_as(&self, conf: &Path, prog: &str, args: &[&str]) -> Output {
        let conf = conf.to_str().expect("a UTF-8 path");
        self.run_with(&self.work(), prog, args, &[("CHORUS_CONF", conf)])
    }

    /// Starts one more node agent, `bin` (`noded`, or the test `adversary`) named `name`,
    /// joined under `operator` with a join token issued now, as an operator's node joining
    /// from elsewhere would; `extra` goes to its command line. Stopped when dropped.
    pub fn join_agent(&self, bin: &str, name: &str, operator: &str, extra: &[&str]) -> Agent {
        let o = self.run("chorus", &["operator", "token", operator]);
        assert!(o.status.success(), "join token: {}", String::from_utf8_lossy(&o.stderr));
        let dir = self.node_dir(name);
        std::fs::create_dir_all(&dir).expect("node dir");
        let token = dir.join("join-token");
        write_private(&token, String::from_utf8_lossy(&o.stdout).trim());
        let controllers: Vec<String> = self.controllers().into_iter().map(|c| c.1).collect();
        let log = std::fs::File::create(self.dir.path().join(format!("state/log/{name}.log")))
            .expect("agent log");
        let mut cmd = Command::new(self.bins.join(bin));
        cmd.arg("--ca")
            .arg(self.ca_dir().join("ca.crt"))
            .arg("--join-token-file")
            .arg(&token)
            .args(["--name", name, "--controllers", &controllers.join(",")])
            .args(["--cgroup-parent", &format!("chorus/test-{}/{name}", std::process::id())])
            .arg("--state-dir")
            .arg(&dir)
            .args(["--heartbeat", "1"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        Agent { child: cmd.spawn().unwrap_or_else(|e| panic!("start {bin}: {e}")) }
    }

    /// Waits until node `name` is registered and in one of `states` (`sinfo -N` names).
    pub fn wait_node(&self, name: &str, states: &[&str], timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let o = self.run("sinfo", &["-h", "-N", "-o", "%N %T"]);
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let s = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_default()
                .trim()
                .to_owned();
            if states.contains(&s.as_str()) {
                return s;
            }
            assert!(start.elapsed() < timeout, "node {name} is {s:?} after {timeout:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A directory for a test's scripts and outputs (the submit directory).
    pub fn work(&self) -> PathBuf {
        let p = self.dir.path().join("work");
        std::fs::create_dir_all(&p).expect("work dir");
        p
    }

    /// Runs one of the CLI binaries in the work directory.
    pub fn run(&self, prog: &str, args: &[&str]) -> Output {
        self.run_in(&self.work(), prog, args)
    }

    pub fn run_in(&self, cwd: &Path, prog: &str, args: &[&str]) -> Output {
        self.run_with(cwd, prog, args, &[])
    }

    /// Runs a CLI binary with extra environment variables (what `--export` sees).
    pub fn run_with(&self, cwd: &Path, prog: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let path = format!("{}:{}", self.bins.display(), std::env::var("PATH").unwrap_or_default());
        Command::new(self.bins.join(prog))
            .args(args)
            .current_dir(cwd)
            .env("CHORUS_CONF", &self.conf)
            .env("PATH", path)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {prog}: {e}"))
    }

    /// `sbatch --parsable ARGS` → the job id.
    pub fn submit(&self, args: &[&str]) -> u32 {
        let mut a = vec!["--parsable"];
        a.extend_from_slice(args);
        let out = self.run("sbatch", &a);
        assert!(
            out.status.success(),
            "sbatch {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("job id")
    }

    /// `sacct`-style state of a job (or array task `12_3`), from `squeue -t all`.
    pub fn state(&self, job: &str) -> String {
        let out = self.run("squeue", &["-h", "-t", "all", "-j", job, "-o", "%T"]);
        String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").trim().to_owned()
    }

    /// Waits until `job` is in one of `states`; panics after `timeout`.
    pub fn wait_state(&self, job: &str, states: &[&str], timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let s = self.state(job);
            if states.contains(&s.as_str()) {
                return s;
            }
            assert!(
                start.elapsed() < timeout,
                "job {job} still {s:?} after {timeout:?}, wanted {states:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn wait_done(&self, job: &str, timeout: Duration) -> String {
        self.wait_state(
            job,
            &["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"],
            timeout,
        )
    }

    /// `scontrol show job -o` of a job, as key=value pairs.
    pub fn show_job(&self, job: &str) -> Vec<(String, String)> {
        let out = self.run("scontrol", &["show", "job", "-o", job]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect()
    }

    /// Waits until `scontrol show job` gives `key=value` (pending reasons are set by the
    /// scheduler's next pass, not by the submission itself).
    pub fn wait_field(&self, job: &str, key: &str, value: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            let v = self.field(job, key);
            if v == value {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "job {job}: {key}={v:?} after {timeout:?}, wanted {value:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn field(&self, job: &str, key: &str) -> String {
        self.show_job(job).into_iter().find(|(k, _)| k == key).map(|(_, v)| v).unwrap_or_default()
    }
}

impl Cluster {
    /// Processes whose command line mentions this cluster's state directory and `needle`
    /// (e.g. `noded`), found through /proc.
    pub fn daemon_pids(&self, needle: &str) -> Vec<i32> {
        let dir = self.dir.path().display().to_string();
        let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd);
                cmd.contains(&dir) && cmd.contains(needle) && !cmd.contains("chorus\0up")
            })
            .collect()
    }

    /// `scontrol ping`: `(role, client address, up)` of each controller.
    pub fn ping(&self) -> Vec<(String, String, bool)> {
        let out = self.run("scontrol", &["ping"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                // Slurmctld(ROLE) at ADDR is UP|DOWN
                let rest = l.strip_prefix("Slurmctld(")?;
                let (role, rest) = rest.split_once(") at ")?;
                let (addr, state) = rest.split_once(" is ")?;
                Some((role.to_owned(), addr.to_owned(), state == "UP"))
            })
            .collect()
    }

    /// Waits until every controller answers and one of them leads; returns the leader's
    /// client address.
    pub fn wait_group(&self, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let ping = self.ping();
            if !ping.is_empty()
                && ping.iter().all(|p| p.2)
                && let Some(l) = ping.iter().find(|p| p.0 == "leader" || p.0 == "primary")
            {
                return l.1.clone();
            }
            assert!(
                start.elapsed() < timeout,
                "controller group not whole after {timeout:?}: {ping:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The pid of the controller whose client API listens on `addr`.
    pub fn ctld_pid(&self, addr: &str) -> Option<i32> {
        self.daemon_pids(&format!("--listen\0{addr}\0")).into_iter().next()
    }

    /// Waits for `chorus up` to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node agent a test started ([`Cluster::join_agent`]), stopped (SIGTERM) when dropped.
pub struct Agent {
    child: Child,
}

impl Agent {
    /// Stops it now, as a node that goes away would.
    pub fn kill(&mut self) {
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("write a private file");
    f.write_all(text.as_bytes()).expect("write");
}

/// Writes an executable script into `dir`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write script");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}
