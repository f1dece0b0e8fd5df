//! Which user a job runs as on this node: never root.
//!
//! ```text
//!   --job-user auto    the submitter, when it is not root and this node knows its uid
//!                      (a cluster with shared accounts, as Slurm runs); otherwise a uid of
//!                      the job's own from --job-uids
//!   --job-user range   always a uid of the job's own: on a network of strangers a
//!                      submitter's uid means nothing here
//!   --job-user NAME    every job as that one (unprivileged) user
//! ```
//!
//! A uid of the job's own is leased from the range while the job runs and handed out again
//! as late as possible (round robin), so files a job left in a world-writable place are not
//! soon owned by the next job. Its group is the gid of the same number.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// How jobs get their user (`--job-user`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobUserMode {
    Auto,
    Range,
    /// One configured user: its uid and gid.
    Fixed {
        uid: u32,
        gid: u32,
    },
}

impl JobUserMode {
    /// `auto`, `range`, or a user name known to this node (not root).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "range" => Ok(Self::Range),
            name => {
                let user = nix::unistd::User::from_name(name)
                    .map_err(|e| format!("--job-user {name}: {e}"))?
                    .ok_or_else(|| format!("--job-user {name}: no such user on this node"))?;
                if user.uid.is_root() {
                    return Err(format!("--job-user {name}: jobs never run as root"));
                }
                Ok(Self::Fixed { uid: user.uid.as_raw(), gid: user.gid.as_raw() })
            }
        }
    }
}

/// `FIRST-LAST` (`--job-uids`): neither end 0, FIRST ≤ LAST.
pub fn parse_range(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{s}`: expected FIRST-LAST, e.g. 2000000000-2000065535");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u32, u32) =
        (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

/// The uid and gid a job runs as, and whether it is the job's own (leased) uid.
#[derive(Debug)]
pub struct JobUser {
    pub uid: u32,
    pub gid: u32,
    /// A uid leased for this job alone: given back when this is dropped.
    pub lease: Option<Lease>,
}

impl JobUser {
    /// Whether the job runs as a stranger to this node: not its submitter.
    pub fn is_stranger(&self, submitter_uid: u32) -> bool {
        self.uid != submitter_uid
    }
}

/// A leased uid; returned to the range on drop.
#[derive(Debug)]
pub struct Lease {
    uid: u32,
    pool: Arc<Mutex<Pool>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).in_use.remove(&self.uid);
    }
}

#[derive(Debug)]
struct Pool {
    first: u32,
    last: u32,
    next: u32,
    in_use: BTreeSet<u32>,
}

/// Hands out job users as `--job-user` says.
#[derive(Debug, Clone)]
pub struct JobUsers {
    mode: JobUserMode,
    pool: Arc<Mutex<Pool>>,
}

/// The default `--job-uids`: 65536 uids far above any account or systemd's ranges.
pub const DEFAULT_RANGE: (u32, u32) = (2_000_000_000, 2_000_065_535);

impl Default for JobUsers {
    fn default() -> Self {
        Self::new(JobUserMode::Auto, DEFAULT_RANGE)
    }
}

impl JobUsers {
    pub fn new(mode: JobUserMode, (first, last): (u32, u32)) -> Self {
        let pool = Pool { first, last, next: first, in_use: BTreeSet::new() };
        Self { mode, pool: Arc::new(Mutex::new(pool)) }
    }

    /// The user for a job submitted by `uid:gid`. Fails only when every uid of the range is
    /// taken by a running job.
    pub fn for_job(&self, uid: u32, gid: u32) -> Result<JobUser, String> {
        match self.mode {
            JobUserMode::Fixed { uid, gid } => Ok(JobUser { uid, gid, lease: None }),
            JobUserMode::Auto if uid != 0 && known(uid) => Ok(JobUser { uid, gid, lease: None }),
            JobUserMode::Auto | JobUserMode::Range => self.lease(),
        }
    }

    fn lease(&self) -> Result<JobUser, String> {
        let mut p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let size = u64::from(p.last - p.first) + 1;
        for _ in 0..size {
            let uid = p.next;
            p.next = if uid == p.last { p.first } else { uid + 1 };
            if p.in_use.insert(uid) {
                let lease = Lease { uid, pool: Arc::clone(&self.pool) };
                return Ok(JobUser { uid, gid: uid, lease: Some(lease) });
            }
        }
        Err(format!("all {size} job uids ({}-{}) are in use", p.first, p.last))
    }
}

/// Whether this node has an account with `uid`.
fn known(uid: u32) -> bool {
    matches!(nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)), Ok(Some(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_never_runs_its_jobs_as_root() {
        let users = JobUsers::new(JobUserMode::Auto, (5000, 5009));
        let u = users.for_job(0, 0).unwrap();
        assert_eq!((u.uid, u.gid), (5000, 5000));
        assert!(u.lease.is_some() && u.is_stranger(0));
    }

    #[test]
    fn auto_keeps_a_known_submitter_and_leases_for_strangers() {
        let users = JobUsers::new(JobUserMode::Auto, (5000, 5009));
        // nobody (65534) exists on Debian; a uid nobody has does not.
        let nobody = users.for_job(65534, 65534).unwrap();
        assert_eq!((nobody.uid, nobody.lease.is_none()), (65534, true));
        let stranger = users.for_job(123_456_789, 5).unwrap();
        assert_eq!(stranger.uid, 5000);
    }

    #[test]
    fn range_mode_leases_round_robin_and_runs_out_with_a_reason() {
        let users = JobUsers::new(JobUserMode::Range, (7, 9));
        let a = users.for_job(65534, 65534).unwrap();
        let b = users.for_job(65534, 65534).unwrap();
        assert_eq!((a.uid, b.uid), (7, 8));
        drop(a);
        // 7 is free again, but 9 comes first: a uid is reused as late as possible.
        let c = users.for_job(1, 1).unwrap();
        assert_eq!(c.uid, 9);
        let d = users.for_job(1, 1).unwrap();
        assert_eq!(d.uid, 7);
        let e = users.for_job(1, 1).unwrap_err();
        assert_eq!(e, "all 3 job uids (7-9) are in use");
        drop(b);
        assert_eq!(users.for_job(1, 1).unwrap().uid, 8);
    }

    #[test]
    fn a_fixed_user_must_exist_and_not_be_root() {
        assert_eq!(
            JobUserMode::parse("nobody").unwrap(),
            JobUserMode::Fixed { uid: 65534, gid: 65534 }
        );
        assert!(JobUserMode::parse("root").unwrap_err().contains("never run as root"));
        assert!(JobUserMode::parse("no-such-user-here").unwrap_err().contains("no such user"));
        assert_eq!(parse_range("10-20"), Ok((10, 20)));
        assert!(parse_range("0-20").is_err() && parse_range("20-10").is_err());
    }
}
