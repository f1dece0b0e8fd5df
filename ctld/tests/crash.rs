//! Is sled crash-safe for the raft log? A writer process appends entries and hard state
//! (and now and then overwrites a suffix with a newer term, or compacts behind a snapshot)
//! and says on stdout what each `persist` made durable. The test kills it with SIGKILL at
//! random moments, 200 times, reopens the store after each kill and checks that everything
//! reported durable is there and intact. The writer is this test binary itself, run again
//! with `CHORUS_CRASH_WRITER` set.
//!
//! ```text
//!   test ──spawn──▶ writer: open ─▶ persist ─▶ "durable FIRST LAST TERM COMMIT" ─▶ persist ─▶ …
//!     │                      ▲ SIGKILL after 5–120 ms
//!     └── reopen, check every claim ──┘ ×200
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chorus_ctld::storage::{RaftStore, SledStorage, SnapshotData};
use raft::Storage as _;
use raft::eraftpb::{Entry, HardState};
use rand::{Rng, SeedableRng};

const WRITER_ENV: &str = "CHORUS_CRASH_WRITER";
const KILLS: usize = 200;

/// The bytes of entry `index` written at `term`: anyone can recompute them.
fn payload(index: u64, term: u64) -> Vec<u8> {
    let seed = blake3::hash(format!("{index}/{term}").as_bytes());
    let len = 16 + (seed.as_bytes()[0] as usize) * 8;
    seed.as_bytes().iter().cycle().take(len).copied().collect()
}

fn entry(index: u64, term: u64) -> Entry {
    Entry { index, term, data: payload(index, term).into(), ..Default::default() }
}

/// The writer: appends forever, reporting each durable step on stdout.
fn writer(dir: &Path) {
    use std::io::Write;
    let s = SledStorage::open(dir).expect("open store");
    let mut out = std::io::stdout().lock();
    let mut term = s.hard_state().term.max(1);
    let mut last = s.last_index().unwrap();
    for round in 0u64.. {
        // Every 40th round, a new term replaces the last three entries (a new leader's
        // conflicting suffix); otherwise 1–8 new entries.
        let (first, to) = if round % 40 == 39 && last >= s.first_index().unwrap() + 3 {
            term += 1;
            (last - 2, last)
        } else {
            (last + 1, last + 1 + round % 8)
        };
        let entries: Vec<Entry> = (first..=to).map(|i| entry(i, term)).collect();
        let hs = HardState { term, vote: 1, commit: first - 1, ..Default::default() };
        s.persist(&entries, Some(&hs), true).expect("persist");
        last = to;
        writeln!(out, "durable {first} {to} {term} {}", first - 1).unwrap();
        out.flush().unwrap();
        if round % 97 == 96 && last > 20 {
            let at = last - 10;
            let data = SnapshotData { state: at.to_be_bytes().to_vec(), side: vec![] };
            s.create_snapshot(at, data.encode().unwrap()).expect("snapshot");
            writeln!(out, "snapshot {at}").unwrap();
            out.flush().unwrap();
        }
    }
}

/// What the writer has said so far.
#[derive(Default)]
struct Claims {
    /// index → term of every entry reported durable (a later overwrite replaces the suffix).
    terms: BTreeMap<u64, u64>,
    term: u64,
    commit: u64,
    snapshot: u64,
}

impl Claims {
    fn read(&mut self, line: &str) {
        let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|w| w.parse().ok()).collect();
        if line.starts_with("durable ") && f.len() == 4 {
            let (first, to, term, commit) = (f[0], f[1], f[2], f[3]);
            self.terms.split_off(&first);
            self.terms.extend((first..=to).map(|i| (i, term)));
            self.term = term;
            self.commit = commit;
        } else if line.starts_with("snapshot ") && f.len() == 1 {
            self.snapshot = f[0];
        }
    }

    /// Checks the reopened store against every claim.
    fn check(&self, s: &SledStorage, kill: usize) {
        let hs = s.hard_state();
        assert!(
            hs.term >= self.term,
            "kill {kill}: hard state term {} < claimed {}",
            hs.term,
            self.term
        );
        assert!(
            hs.commit >= self.commit,
            "kill {kill}: commit {} < claimed {}",
            hs.commit,
            self.commit
        );
        assert!(
            hs.commit <= s.last_index().unwrap(),
            "kill {kill}: commit {} beyond the last entry {}",
            hs.commit,
            s.last_index().unwrap()
        );
        let first = s.first_index().unwrap();
        let snap = s.load_snapshot().unwrap().map_or(0, |sn| sn.get_metadata().index);
        assert!(snap >= self.snapshot, "kill {kill}: snapshot {snap} < claimed {}", self.snapshot);
        assert_eq!(first, snap + 1, "kill {kill}: the log must start right after the snapshot");
        let Some((&last, _)) = self.terms.last_key_value() else { return };
        assert!(
            s.last_index().unwrap() >= last,
            "kill {kill}: last index {} < claimed {last}",
            s.last_index().unwrap()
        );
        let got = s.entries(first, last + 1, None, raft::GetEntriesContext::empty(false)).unwrap();
        for e in got {
            // Entries written but killed before they were reported are not claims.
            let Some(&claimed) = self.terms.get(&e.index) else { continue };
            // A write that landed but was killed before it was reported may have replaced
            // the claimed suffix with a newer term: newer is fine, older or damaged is not.
            assert!(
                e.term >= claimed,
                "kill {kill}: entry {} went back from term {claimed} to {}",
                e.index,
                e.term
            );
            assert!(
                e.term <= hs.term,
                "kill {kill}: entry {} has a term beyond the hard state's",
                e.index
            );
            assert_eq!(e, entry(e.index, e.term), "kill {kill}: entry {} damaged", e.index);
        }
    }
}

#[test]
fn sled_keeps_every_entry_it_reported_durable_across_200_kills() {
    if let Ok(dir) = std::env::var(WRITER_ENV) {
        writer(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let seed: u64 = std::env::var("CHORUS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash test seed {seed} (CHORUS_CRASH_SEED={seed} replays the kill times)");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut claims = Claims::default();
    let exe = std::env::current_exe().unwrap();
    for kill in 0..KILLS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "sled_keeps_every_entry_it_reported_durable_across_200_kills",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..120)));
        child.kill().unwrap();
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            claims.read(&line);
        }
        let s = SledStorage::open(dir.path())
            .unwrap_or_else(|e| panic!("kill {kill}: reopen failed: {e}"));
        claims.check(&s, kill);
    }
    assert!(
        claims.terms.len() > 100,
        "the writer wrote too little to prove anything: {}",
        claims.terms.len()
    );
    assert!(claims.snapshot > 0 && claims.term > 1, "no compaction or overwrite was exercised");
}
