//! A job's namespaces and view of the filesystem, set up by stepd (stepd.rs) before the job's
//! script runs. stepd is a fresh single-threaded process, so this is ordinary code.
//!
//! ```text
//!   unshare(NEWNS | NEWIPC | NEWUTS | NEWPID [| NEWNET])
//!   /                   private: no mount leaks back to the host
//!   /dev/shm            fresh tmpfs: no shared memory with other jobs or the host
//!   kept paths          the job's directory, and its working directory, where a cover
//!                       below would hide them, are bound aside (under the new /dev/shm) ...
//!   /tmp, /var/tmp      the job's own: JOB_DIR/tmp, gone with the job
//!   kept paths          ... bound back at their own paths, but for the job's directory:
//!   STATE_DIR           empty tmpfs: other jobs' directories and noded's data out of sight
//!                       (covered after the working directory, which may hold it)
//!   job directory       ... bound back last
//!   hostname            the node's name
//!   network             host: the node's; loopback: a namespace of its own with `lo` up;
//!                       none: a namespace of its own with nothing up
//!   (PID 1, after fork) /proc of the job's PID namespace: it sees only its own processes
//!   (--container)       JOB_DIR/rootfs: the bundle's root filesystem under an overlay
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use chorus_core::state::Network;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

/// What the job's view is made of.
#[derive(Debug, Clone)]
pub struct View<'a> {
    pub state_dir: &'a Path,
    pub job_dir: &'a Path,
    pub work_dir: &'a Path,
    pub hostname: &'a str,
    pub network: Network,
    /// An OCI bundle's root filesystem, kept visible like the working directory.
    pub container_rootfs: Option<&'a Path>,
}

/// Where a step failed, and why: what stepd reports to noded as a launch failure.
fn step<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> String {
    move |e| format!("{what}: {e}")
}

const NONE: Option<&str> = None;

fn bind(from: &Path, to: &Path) -> Result<(), String> {
    mount(Some(from), to, NONE, MsFlags::MS_BIND, NONE).map_err(step(format_args!(
        "binding {} on {}",
        from.display(),
        to.display()
    )))
}

fn tmpfs(at: &Path, mode: &str) -> Result<(), String> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(Some("tmpfs"), at, Some("tmpfs"), flags, Some(mode))
        .map_err(step(format_args!("mounting a tmpfs on {}", at.display())))
}

fn mkdir_p(p: &Path) -> Result<(), String> {
    std::fs::create_dir_all(p).map_err(step(format_args!("creating {}", p.display())))
}

/// Unshares the job's namespaces and builds its view. The caller goes on in the new mount,
/// IPC, UTS (and network) namespaces; its next child is PID 1 of the new PID namespace and
/// must call [`mount_proc`].
pub fn enter(v: &View) -> Result<(), String> {
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWPID;
    if v.network != Network::Host {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(step("unsharing namespaces"))?;
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
        .map_err(step("making / private"))?;
    tmpfs(Path::new("/dev/shm"), "mode=1777")?;

    let covers = [Path::new("/tmp"), Path::new("/var/tmp"), v.state_dir];
    let hidden = |p: &Path| covers.iter().any(|c| p.starts_with(c) && p != *c);
    let mut keep = vec![v.job_dir];
    for p in std::iter::once(v.work_dir).chain(v.container_rootfs) {
        if !p.starts_with(v.job_dir) && !keep.iter().any(|k| p.starts_with(k)) {
            keep.push(p);
        }
    }
    keep.retain(|p| hidden(p));
    let aside = Path::new("/dev/shm/.chorus-keep");
    let asides: Vec<PathBuf> = (0..keep.len()).map(|i| aside.join(i.to_string())).collect();
    for (k, a) in keep.iter().zip(&asides) {
        mkdir_p(a)?;
        bind(k, a)?;
    }

    // The job's /tmp is reached through its stand-in: covering /tmp may hide its real path.
    let tmp = v.job_dir.join("tmp");
    mkdir_p(&tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
        .map_err(step(format_args!("chmod {}", tmp.display())))?;
    let tmp_aside = aside.join("tmp");
    mkdir_p(&tmp_aside)?;
    bind(&tmp, &tmp_aside)?;
    for t in [Path::new("/tmp"), Path::new("/var/tmp")] {
        if t.is_dir() {
            bind(&tmp_aside, t)?;
        }
    }
    umount2(&tmp_aside, MntFlags::MNT_DETACH).map_err(step("unmounting /tmp's stand-in"))?;
    // Kept paths come back in order: those outside the state directory before it is
    // covered (one of them may hold it), the job's directory after.
    let (outside, inside): (Vec<_>, Vec<_>) =
        keep.iter().zip(&asides).partition(|(k, _)| !k.starts_with(v.state_dir));
    let back = |kept: Vec<(&&Path, &PathBuf)>| -> Result<(), String> {
        for (k, a) in kept {
            mkdir_p(k)?;
            bind(a, k)?;
            umount2(a, MntFlags::MNT_DETACH).map_err(step("unmounting a kept path's stand-in"))?;
        }
        Ok(())
    };
    back(outside)?;
    mkdir_p(v.state_dir)?;
    tmpfs(v.state_dir, "mode=0755")?;
    back(inside)?;
    std::fs::remove_dir_all(aside).map_err(step("removing the stand-ins"))?;

    nix::unistd::sethostname(v.hostname).map_err(step("setting the hostname"))?;
    if v.network == Network::Loopback {
        loopback_up().map_err(step("bringing the loopback interface up"))?;
    }
    Ok(())
}

/// Mounts the job's own `/proc`; called by PID 1 of its namespace.
pub fn mount_proc() -> Result<(), String> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), "/proc", Some("proc"), flags, NONE).map_err(step("mounting /proc"))
}

/// `ip link set lo up` in the current network namespace.
fn loopback_up() -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The root filesystem of a container job: an overlay at `at` with the bundle's `rootfs`
/// read-only below and a tmpfs above, so the runtime's mount points and the job's writes
/// never reach the bundle. Also hides a cgroup2 mount next to v1 controllers
/// (`/sys/fs/cgroup/unified`), which makes crun look for a v2 hierarchy that is not there.
pub fn container_root(rootfs: &Path, at: &Path) -> Result<(), String> {
    let text = rootfs.to_string_lossy();
    if text.contains([',', ':', '\\']) {
        return Err(format!(
            "{}: a bundle path with , : or \\ cannot be overlaid",
            rootfs.display()
        ));
    }
    let layers = at.with_extension("layers");
    mkdir_p(&layers)?;
    tmpfs(&layers, "mode=0755")?;
    let (upper, work) = (layers.join("upper"), layers.join("work"));
    mkdir_p(&upper)?;
    mkdir_p(&work)?;
    mkdir_p(at)?;
    let opts = format!("lowerdir={text},upperdir={},workdir={}", upper.display(), work.display());
    mount(Some("overlay"), at, Some("overlay"), MsFlags::empty(), Some(opts.as_str()))
        .map_err(step(format_args!("mounting the container's root on {}", at.display())))?;
    let unified = Path::new("/sys/fs/cgroup/unified");
    if unified.is_dir() {
        let _ = umount2(unified, MntFlags::MNT_DETACH);
    }
    Ok(())
}
