//! A job's namespaces, entered between fork and exec: its own mount, IPC and UTS namespaces.
//!
//! ```text
//!   parent (noded): Namespaces::prepare: C strings and the user's groups: everything the
//!                   child needs, allocated up front
//!   child (pre_exec, syscalls only):
//!     unshare(NEWNS | NEWIPC | NEWUTS)
//!     / made private (no mount leaks back to the host)
//!     /dev/shm       fresh tmpfs: no shared memory with other jobs or the host
//!     job dir        bound aside to /dev/shm/.chorus-job for a moment ...
//!     STATE_DIR      empty tmpfs over noded's state directory (other jobs' scripts and
//!                    files, noded's own data) ...
//!     STATE_DIR/jobs/<id>.<attempt>   ... with the job's own directory bound back in
//!     hostname       the node's name
//!     setgroups / setgid / setuid: the job's user, last (mounting needs root)
//! ```

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What the child needs to enter the job's namespaces, prepared in the parent: after fork,
/// only async-signal-safe calls are allowed (no allocation).
pub struct Namespaces {
    state_dir: CString,
    jobs_dir: CString,
    job_dir: CString,
    hostname: Vec<u8>,
    user: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

impl Namespaces {
    /// `job_dir` must be inside `state_dir`. `user`: the uid and gid to become last, when the
    /// job does not run as root.
    pub fn prepare(
        state_dir: &Path,
        job_dir: &Path,
        node: &str,
        user: Option<(u32, u32)>,
    ) -> io::Result<Self> {
        let user = match user {
            Some((uid, gid)) => {
                let name = nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_default();
                let groups = CString::new(name)
                    .ok()
                    .and_then(|n| nix::unistd::getgrouplist(&n, gid.into()).ok())
                    .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
                    .unwrap_or_else(|| vec![gid]);
                Some((uid, gid, groups))
            }
            None => None,
        };
        Ok(Self {
            state_dir: cstr(state_dir)?,
            jobs_dir: cstr(&state_dir.join("jobs"))?,
            job_dir: cstr(job_dir)?,
            hostname: node.as_bytes().to_vec(),
            user,
        })
    }

    /// Enters the namespaces and drops to the job's user. For `pre_exec` only.
    ///
    /// # Safety
    /// Call only in a freshly forked child: it changes the calling process's namespaces,
    /// mounts and credentials.
    pub unsafe fn enter(&self) -> io::Result<()> {
        // On failure, say which step on the job's stderr (a plain write: no allocation).
        let check = |r: libc::c_int, step: &'static [u8]| {
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            // SAFETY: writing a static buffer to fd 2.
            unsafe { libc::write(2, step.as_ptr().cast(), step.len()) };
            Err(e)
        };
        let none = std::ptr::null::<libc::c_char>();
        // SAFETY: plain syscalls on pointers to NUL-terminated strings owned by `self`.
        unsafe {
            check(
                libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS),
                b"namespaces: unshare failed\n",
            )?;
            let private = libc::MS_REC | libc::MS_PRIVATE;
            check(
                libc::mount(none, c"/".as_ptr(), none, private, std::ptr::null()),
                b"namespaces: making / private failed\n",
            )?;
            let tmpfs = c"tmpfs".as_ptr();
            let flags = libc::MS_NOSUID | libc::MS_NODEV;
            check(
                libc::mount(
                    tmpfs,
                    c"/dev/shm".as_ptr(),
                    tmpfs,
                    flags,
                    c"mode=1777".as_ptr().cast(),
                ),
                b"namespaces: mounting /dev/shm failed\n",
            )?;
            // The job's directory is bound aside before the state directory is covered, then
            // bound back at its own path.
            let aside = c"/dev/shm/.chorus-job".as_ptr();
            check(libc::mkdir(aside, 0o700), b"namespaces: mkdir aside failed\n")?;
            check(
                libc::mount(self.job_dir.as_ptr(), aside, none, libc::MS_BIND, std::ptr::null()),
                b"namespaces: binding the job's directory aside failed\n",
            )?;
            let mode = c"mode=0755".as_ptr().cast();
            check(
                libc::mount(tmpfs, self.state_dir.as_ptr(), tmpfs, flags, mode),
                b"namespaces: hiding the state directory failed\n",
            )?;
            check(libc::mkdir(self.jobs_dir.as_ptr(), 0o755), b"namespaces: mkdir jobs failed\n")?;
            check(libc::mkdir(self.job_dir.as_ptr(), 0o700), b"namespaces: mkdir job failed\n")?;
            check(
                libc::mount(aside, self.job_dir.as_ptr(), none, libc::MS_BIND, std::ptr::null()),
                b"namespaces: binding the job's directory back failed\n",
            )?;
            check(libc::umount2(aside, libc::MNT_DETACH), b"namespaces: umount aside failed\n")?;
            check(libc::rmdir(aside), b"namespaces: rmdir aside failed\n")?;
            check(
                libc::sethostname(self.hostname.as_ptr().cast(), self.hostname.len()),
                b"namespaces: sethostname failed\n",
            )?;
            if let Some((uid, gid, groups)) = &self.user {
                check(libc::setgroups(groups.len(), groups.as_ptr()), b"setgroups failed\n")?;
                check(libc::setgid(*gid), b"setgid failed\n")?;
                check(libc::setuid(*uid), b"setuid failed\n")?;
            }
        }
        Ok(())
    }
}

/// Whether jobs can be put in namespaces here (root, and a kernel that allows it): checked
/// once at start by running `/bin/true` through the very same steps a job goes through, with
/// a throwaway job directory under `state_dir`.
pub fn probe(state_dir: &Path, node: &str) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        return Err("noded is not root: cannot create namespaces".into());
    }
    let job_dir = state_dir.join("jobs").join("probe");
    std::fs::create_dir_all(&job_dir).map_err(|e| format!("{}: {e}", job_dir.display()))?;
    let ns = Namespaces::prepare(state_dir, &job_dir, node, None).map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new("/bin/true");
    cmd.stderr(std::process::Stdio::null());
    // SAFETY: Namespaces::enter only makes syscalls on data prepared before the fork.
    unsafe { cmd.pre_exec(move || ns.enter()) };
    let status = cmd.status();
    let _ = std::fs::remove_dir(&job_dir);
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("the namespace probe exited {s}")),
        Err(e) => Err(format!("cannot enter new mount/IPC/UTS namespaces: {e}")),
    }
}
