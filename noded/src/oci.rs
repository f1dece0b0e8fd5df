//! `sbatch --container=BUNDLE`: the job's script runs inside the submitter's OCI bundle,
//! through an OCI runtime (crun), as Slurm's `oci.conf` `RunTimeRun` does. See
//! docs/decisions/0002-oci-runtime.md for why crun, driven this way.
//!
//! ```text
//!   noded  reads BUNDLE/config.json (never writes into the bundle), and writes the job's
//!          own JOB_DIR/bundle/config.json (job_config below):
//!            root         JOB_DIR/rootfs: stepd mounts an overlay there (the bundle's rootfs
//!                         read-only below, a tmpfs above), so nothing is written into it
//!            process      the batch script (bound at /.chorus/script) and its arguments, the
//!                         job's environment over the bundle's, the job's working directory
//!                         (bound at its own path), the job's uid and gid, no capabilities,
//!                         no_new_privs, no terminal
//!            mounts       the bundle's, but for bind mounts (they would name host paths
//!                         with root's rights) and its /tmp and /dev/shm, which become the
//!                         job's private ones
//!            namespaces   pid, ipc, uts, mount; the network is the one stepd set up for
//!                         the partition. The script is the container's PID 1, as in Docker
//!                         and Slurm's crun: whatever it leaves behind ends with it (crun
//!                         would otherwise wait for it), and it gets scancel's SIGTERM only
//!                         if it traps it, else the SIGKILL after KillWait
//!            dropped      hooks (they run on the host as root), cgroupsPath and resources
//!                         (the job's cgroup is noded's), devices, sysctl, uid mappings
//!   stepd  its namespaces as for any job, then the overlay; the task execs, as root,
//!          crun --cgroup-manager=disabled --root JOB_DIR/crun run --bundle JOB_DIR/bundle ID
//!          crun creates the container in the job's cgroup and drops to the job's user
//! ```

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Where the job's script appears inside the container.
pub const SCRIPT_IN_CONTAINER: &str = "/.chorus/script";

/// The largest `config.json` read from a bundle.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// What the job brings to the bundle.
#[derive(Debug, Clone)]
pub struct JobInContainer<'a> {
    /// The batch script on the host.
    pub script: &'a Path,
    pub args: &'a [String],
    pub work_dir: &'a Path,
    pub env: &'a [(String, String)],
    pub uid: u32,
    pub gid: u32,
    pub hostname: &'a str,
    /// Where stepd mounts the container's root filesystem.
    pub rootfs: &'a Path,
}

/// A bundle the job cannot run in, and why (for the job's stderr).
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("container {bundle}: {why}")]
    Bad { bundle: String, why: String },
}

/// The bundle's `config.json` and the absolute path of its root filesystem.
pub fn read_bundle(bundle: &Path) -> Result<(Value, PathBuf), BundleError> {
    let bad = |why: String| BundleError::Bad { bundle: bundle.display().to_string(), why };
    let path = bundle.join("config.json");
    let meta = std::fs::metadata(&path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(bad(format!("config.json is over {MAX_CONFIG_BYTES} bytes")));
    }
    let text = std::fs::read(&path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let config: Value =
        serde_json::from_slice(&text).map_err(|e| bad(format!("config.json: {e}")))?;
    let root = config
        .pointer("/root/path")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("config.json has no root.path".into()))?;
    let rootfs = bundle.join(root);
    if !rootfs.is_dir() {
        return Err(bad(format!("root filesystem {} is not a directory", rootfs.display())));
    }
    Ok((config, rootfs))
}

/// The job's own `config.json`, made from the bundle's (see the module doc). Pure: tested on
/// data.
pub fn job_config(mut config: Value, job: &JobInContainer) -> Result<Value, String> {
    let obj = config.as_object_mut().ok_or("config.json is not a JSON object")?;
    obj.remove("hooks");
    obj.insert("hostname".into(), json!(job.hostname));
    obj.insert("root".into(), json!({ "path": job.rootfs, "readonly": false }));

    let process = obj.entry("process").or_insert_with(|| json!({}));
    let process = process.as_object_mut().ok_or("process is not an object")?;
    // The job's environment over the bundle's, keeping the bundle's order first.
    let mut env: Vec<(String, String)> = vec![];
    let bundle_env = process.get("env").and_then(Value::as_array).cloned().unwrap_or_default();
    let pairs = bundle_env
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .chain(job.env.iter().cloned());
    for (k, v) in pairs {
        match env.iter_mut().find(|(x, _)| *x == k) {
            Some(slot) => slot.1 = v,
            None => env.push((k, v)),
        }
    }
    let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut args = vec![SCRIPT_IN_CONTAINER.to_owned()];
    args.extend(job.args.iter().cloned());
    let caps = json!([]);
    for (k, v) in [
        ("terminal", json!(false)),
        ("user", json!({ "uid": job.uid, "gid": job.gid })),
        ("args", json!(args)),
        ("env", json!(env)),
        ("cwd", json!(job.work_dir)),
        ("noNewPrivileges", json!(true)),
        (
            "capabilities",
            json!({ "bounding": caps, "effective": caps, "inheritable": caps,
                    "permitted": caps, "ambient": caps }),
        ),
    ] {
        process.insert(k.into(), v);
    }
    for k in ["consoleSize", "rlimits", "oomScoreAdj", "apparmorProfile", "selinuxLabel"] {
        process.remove(k);
    }

    let mounts = obj.entry("mounts").or_insert_with(|| json!([]));
    let mounts = mounts.as_array_mut().ok_or("mounts is not an array")?;
    mounts.retain(|m| {
        let bind = m.get("type").and_then(Value::as_str) == Some("bind")
            || m.get("options")
                .and_then(Value::as_array)
                .is_some_and(|o| o.iter().any(|o| matches!(o.as_str(), Some("bind" | "rbind"))));
        let dest = m.get("destination").and_then(Value::as_str).unwrap_or("");
        !bind && !matches!(dest.trim_end_matches('/'), "/tmp" | "/dev/shm")
    });
    let private = ["rbind", "rw", "nosuid", "nodev"];
    mounts.extend([
        json!({ "destination": "/tmp", "type": "bind", "source": "/tmp", "options": private }),
        json!({ "destination": "/dev/shm", "type": "bind", "source": "/dev/shm", "options": private }),
        json!({ "destination": "/.chorus", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=755", "size=1m"] }),
        json!({ "destination": SCRIPT_IN_CONTAINER, "type": "bind", "source": job.script,
                "options": ["bind", "ro", "nosuid", "nodev"] }),
        json!({ "destination": job.work_dir, "type": "bind", "source": job.work_dir,
                "options": private }),
    ]);

    let linux = obj.entry("linux").or_insert_with(|| json!({}));
    let linux = linux.as_object_mut().ok_or("linux is not an object")?;
    let namespaces: Vec<Value> =
        ["pid", "ipc", "uts", "mount"].iter().map(|t| json!({ "type": t })).collect();
    linux.insert("namespaces".into(), json!(namespaces));
    for k in [
        "uidMappings",
        "gidMappings",
        "cgroupsPath",
        "resources",
        "devices",
        "sysctl",
        "intelRdt",
        "personality",
    ] {
        linux.remove(k);
    }
    Ok(config)
}

/// A bundle as a user would make one, for tests and an operator's smoke check: a busybox
/// root filesystem (Debian's busybox-static) and the config.json `crun spec` writes. The
/// error says what is missing; `scripts/deps.sh` installs both.
pub fn busybox_bundle(dir: &Path, crun: &Path) -> Result<PathBuf, String> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        return Err("no /bin/busybox (Debian's busybox-static)".into());
    }
    let io = |e: std::io::Error| e.to_string();
    let bundle = dir.join("bundle");
    let rootfs = bundle.join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(d)).map_err(io)?;
    }
    std::fs::copy(busybox, rootfs.join("bin/busybox")).map_err(io)?;
    let list = std::process::Command::new(busybox).arg("--list").output().map_err(io)?;
    for applet in String::from_utf8_lossy(&list.stdout).lines().filter(|a| *a != "busybox") {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).map_err(io)?;
    }
    std::fs::write(rootfs.join("etc/os-release"), "ID=busybox-bundle\n").map_err(io)?;
    let spec = std::process::Command::new(crun).arg("spec").current_dir(&bundle).output();
    match spec {
        Ok(o) if o.status.success() => Ok(bundle),
        Ok(o) => Err(format!("crun spec failed: {}", String::from_utf8_lossy(&o.stderr))),
        Err(e) => Err(format!("{}: {e}", crun.display())),
    }
}

/// Whether this kernel mounts overlays, which container jobs need: tried in a throwaway
/// mount namespace (util-linux's `unshare`).
pub fn overlay_usable(scratch: &Path) -> Result<(), String> {
    let d = |n: &str| scratch.join(n);
    for n in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir_all(d(n)).map_err(|e| e.to_string())?;
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        d("lower").display(),
        d("upper").display(),
        d("work").display()
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "mount", "-t", "overlay", "overlay", "-o", &opts])
        .arg(d("merged"))
        .output()
        .map_err(|e| format!("unshare: {e}"))?;
    let _ = std::fs::remove_dir_all(scratch);
    match out.status.success() {
        true => Ok(()),
        false => Err(format!("no overlay mounts: {}", String::from_utf8_lossy(&out.stderr).trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `crun spec` writes, trimmed, plus what a user might add.
    fn users_config() -> Value {
        json!({
            "ociVersion": "1.0.0",
            "process": {
                "terminal": true,
                "user": { "uid": 0, "gid": 0 },
                "args": ["sh"],
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        "TERM=xterm", "LANG=C.UTF-8"],
                "cwd": "/",
                "capabilities": { "bounding": ["CAP_SYS_ADMIN"] },
                "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            },
            "root": { "path": "rootfs", "readonly": true },
            "hostname": "crun",
            "mounts": [
                { "destination": "/proc", "type": "proc", "source": "proc" },
                { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs" },
                { "destination": "/host", "type": "none", "source": "/", "options": ["rbind"] },
                { "destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts" },
            ],
            "hooks": { "prestart": [{ "path": "/usr/bin/evil" }] },
            "linux": {
                "namespaces": [{ "type": "pid" }, { "type": "network" },
                               { "type": "mount", "path": "/proc/1/ns/mnt" }],
                "uidMappings": [{ "containerID": 0, "hostID": 0, "size": 1 }],
                "resources": { "memory": { "limit": 1 } },
                "cgroupsPath": "/evil",
                "maskedPaths": ["/proc/kcore"],
            }
        })
    }

    fn job() -> JobInContainer<'static> {
        JobInContainer {
            script: Path::new("/var/lib/chorus/noded/jobs/5.0/script"),
            args: &[],
            work_dir: Path::new("/home/u/run"),
            env: &[],
            uid: 2_000_000_000,
            gid: 2_000_000_000,
            hostname: "node1",
            rootfs: Path::new("/var/lib/chorus/noded/jobs/5.0/rootfs"),
        }
    }

    #[test]
    fn the_job_runs_its_script_as_its_user_without_privileges() {
        let env = [("SLURM_JOB_ID".to_owned(), "5".to_owned()), ("LANG".into(), "en_US".into())];
        let args = ["a".to_owned(), "b c".to_owned()];
        let c = job_config(users_config(), &JobInContainer { env: &env, args: &args, ..job() })
            .unwrap();
        let p = &c["process"];
        assert_eq!(p["args"], json!(["/.chorus/script", "a", "b c"]));
        assert_eq!(p["user"], json!({ "uid": 2_000_000_000u32, "gid": 2_000_000_000u32 }));
        assert_eq!(p["cwd"], "/home/u/run");
        assert_eq!(p["terminal"], false);
        assert_eq!(p["noNewPrivileges"], true);
        assert_eq!(p["capabilities"]["bounding"], json!([]));
        assert!(p.get("rlimits").is_none());
        assert_eq!(
            p["env"],
            json!([
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm",
                "LANG=en_US",
                "SLURM_JOB_ID=5"
            ]),
            "the job's variables over the bundle's"
        );
        assert_eq!(c["hostname"], "node1");
        assert_eq!(c["root"]["path"], "/var/lib/chorus/noded/jobs/5.0/rootfs");
    }

    #[test]
    fn nothing_of_the_bundle_reaches_the_host_with_roots_rights() {
        let c = job_config(users_config(), &job()).unwrap();
        assert!(c.get("hooks").is_none(), "hooks run on the host as root");
        let dests: Vec<&str> = c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            ["/proc", "/tmp", "/dev/shm", "/.chorus", "/.chorus/script", "/home/u/run"],
            "the bundle's binds of host paths are gone; /tmp is the job's private one"
        );
        let l = &c["linux"];
        assert_eq!(
            l["namespaces"],
            json!([{ "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }]),
            "no joining of other namespaces; the network is the partition's (stepd's)"
        );
        for gone in ["uidMappings", "resources", "cgroupsPath"] {
            assert!(l.get(gone).is_none(), "{gone}");
        }
        assert_eq!(l["maskedPaths"], json!(["/proc/kcore"]), "the rest is the bundle's");
    }

    #[test]
    fn a_config_that_is_not_an_object_is_refused() {
        assert!(job_config(json!([1, 2]), &job()).is_err());
        assert!(job_config(json!({ "process": 3 }), &job()).is_err());
    }
}
