//! Result validators for replicated execution: do two replicas of a job agree?
//!
//! ```text
//!   replica results (exit code, digest, files by name), in a fixed order
//!        │
//!        ▼
//!   classes(validator, results) ── each result joins the first class whose FIRST member it
//!        │                         agrees with, else opens a new class
//!        ▼
//!   [[0, 2], [1]]   (indices; classes in order of first appearance)
//!
//!   verify/exact      exit codes equal ─▶ digests equal
//!   verify/tolerance  exit codes equal ─▶ same file names ─▶ per file (in name order):
//!                       bytes equal? ─▶ both UTF-8? ── no ──▶ first differing byte
//!                                                  └─ yes ─▶ token by token (below)
//! ```
//!
//! # How `verify/tolerance` reads a file
//!
//! A UTF-8 file is a stream of three kinds of token, found in one left-to-right pass that looks
//! at every byte a bounded number of times (O(n), no backtracking, no regex):
//!
//! * **line breaks** (`\n`). They are significant: both files must have the same lines.
//! * **numbers**: `[+-]` digits with an optional fraction and exponent (`42`, `-1.5`, `.5`,
//!   `5.`, `6.02e23`, `1E-9`) or `inf`, `infinity`, `nan` in any case. A number counts only
//!   on its own: the byte before it is not a letter, digit, `_`, `.` or non-ASCII byte, and the
//!   byte after it is none of those either (a `.` after it is allowed when no digit or letter
//!   follows, so `1.5.` at the end of a sentence is the number `1.5` and the text `.`). So
//!   `x1`, `10ms`, `1.2.3`, `0x1f` and `3fa9c0` are text, compared exactly: a hash or a
//!   version is never "close enough". A literal outside `f64`'s range (`1e400`) is text too.
//! * **text**: every other run of bytes up to a blank, a line break or a number.
//!
//! Numbers agree when `|a - b| <= max(ABS, REL * max(|a|, |b|))`, so `1.0`, `1.00` and `1`
//! agree, as do `1e3` and `1000`, and `-0` and `0` (the sign of zero is not significant).
//! Two plain integers (no `.`, no exponent) that fit in `i128` are compared exactly, so
//! `tolerance:0` tells `9007199254740993` from `9007199254740992` (equal as `f64`s); any other
//! pair is compared as `f64`s.
//! `inf` agrees only with `inf` of the same sign. **A `nan` agrees with any `nan`** (`nan`,
//! `NaN`, `-nan`) and with nothing else: both replicas failed to compute a number at the same
//! place, which is agreement (IEEE's `nan != nan` is a rule for arithmetic, not for whether two
//! runs printed the same thing). The sign glibc prints (`-nan`) is the NaN's sign bit, which
//! x86 and ARM set differently for the same computation, so it is ignored.
//!
//! **Blanks** (space, tab, `\r`, `\x0b`, `\x0c`) only separate tokens: how many there are, and
//! whether there are any between two tokens, does not matter. Fixed-width columns re-pad when a
//! number's width changes within tolerance (`%10.7f` prints ` 9.9999999` and `10.0000000`),
//! and `\r\n` vs `\n` says nothing about a result. Blanks cannot merge tokens: `ab` and `a b`
//! still disagree, as do `12` and `1 2`. Non-ASCII spaces are text. A job whose spacing matters
//! should use `verify/exact`.
//!
//! A file that is not valid UTF-8 on at least one side is compared as bytes.
//!
//! # Agreement is not transitive
//!
//! Under an absolute tolerance `t`, `1.0` agrees with `1.0 + 0.8t`, which agrees with
//! `1.0 + 1.6t`, but `1.0` does not agree with `1.0 + 1.6t`. Grouping by "agrees with some
//! member" would chain such results into one class however far apart its ends are, and which
//! result is the odd one out would depend on the order in which pairs were tried. [`classes`]
//! compares each result only with each class's first member, in the order the results are
//! given: every member is within tolerance of its class's first member (so members are within
//! about twice the tolerance of each other), and the same input order always gives the same
//! classes. Callers must therefore order the results by something fixed (replica index), never
//! by arrival time.

use std::cmp::Ordering;
use std::fmt;

use chorus_core::fsm::EndCause;
use chorus_core::job::{Job, ReplicaEnd};
use chorus_core::verify::Bound;

/// What one replica of a job produced, as its node reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaResult<'a> {
    pub exit_code: i32,
    /// blake3 over the result, computed by the node.
    pub digest: [u8; 32],
    /// `stdout`, `stderr` and the job's declared output files: name and contents, sorted by
    /// name (validators do not rely on the order).
    pub files: &'a [(&'a str, &'a [u8])],
}

/// Where two results differ; its `Display` is one line. `a` and `b` are the arguments of
/// [`Validator::agree`] in order (in [`classes`], `a` is the class's first member).
#[derive(Debug, Clone, PartialEq)]
pub enum Disagreement {
    ExitCode {
        a: i32,
        b: i32,
    },
    Digest {
        a: [u8; 32],
        b: [u8; 32],
    },
    /// File names present on one side only.
    FileSets {
        only_a: Vec<String>,
        only_b: Vec<String>,
    },
    /// A file compared as bytes (not UTF-8 on at least one side): the first differing byte
    /// (or the shorter length, when one is a prefix of the other).
    Bytes {
        file: String,
        offset: usize,
        len_a: usize,
        len_b: usize,
    },
    /// A file compared token by token: the first tokens that do not agree. `line` counts from
    /// 1; `token` is the token's place on its line, from 1, line breaks not counted. A token is
    /// `None` at the end of the file and `"\n"` for a line break; long tokens are shortened.
    Token {
        file: String,
        line: usize,
        token: usize,
        a: Option<String>,
        b: Option<String>,
        /// `|a - b| / max(|a|, |b|)` when both tokens are finite numbers.
        rel_diff: Option<f64>,
    },
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ExitCode { a, b } => write!(f, "exit codes differ: {a} vs {b}"),
            Self::Digest { a, b } => {
                write!(f, "result digests differ: {} vs {}", short_hex(a), short_hex(b))
            }
            Self::FileSets { only_a, only_b } => {
                f.write_str("file sets differ:")?;
                for (side, names) in [("a", only_a), ("b", only_b)] {
                    if !names.is_empty() {
                        let names: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
                        write!(f, " only in {side}: {};", names.join(", "))?;
                    }
                }
                Ok(())
            }
            Self::Bytes { file, offset, len_a, len_b } => write!(
                f,
                "file {file:?} differs at byte {offset} (compared as bytes; {len_a} vs {len_b} \
                 bytes)"
            ),
            Self::Token { file, line, token, a, b, rel_diff } => {
                let show = |t: &Option<String>| match t {
                    Some(t) => format!("{t:?}"),
                    None => "end of file".to_owned(),
                };
                write!(f, "file {file:?} line {line} token {token}: {} vs {}", show(a), show(b))?;
                match rel_diff {
                    Some(r) => write!(f, " (relative difference {r:.1e})"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for Disagreement {}

fn short_hex(d: &[u8; 32]) -> String {
    let mut s: String = d[..6].iter().map(|b| format!("{b:02x}")).collect();
    s.push_str("...");
    s
}

/// Decides whether two replicas' results agree. Agreement must be reflexive and symmetric
/// (whether, not where); it need not be transitive (see the module docs).
pub trait Validator: Send + Sync {
    /// The Slurm-style name: `verify/exact`, `verify/tolerance`.
    fn name(&self) -> &'static str;
    fn agree(&self, a: &ReplicaResult<'_>, b: &ReplicaResult<'_>) -> Result<(), Disagreement>;
}

/// `verify/exact`: equal exit codes and equal digests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Exact;

impl Validator for Exact {
    fn name(&self) -> &'static str {
        "verify/exact"
    }

    fn agree(&self, a: &ReplicaResult<'_>, b: &ReplicaResult<'_>) -> Result<(), Disagreement> {
        same_exit_code(a, b)?;
        if a.digest != b.digest {
            return Err(Disagreement::Digest { a: a.digest, b: b.digest });
        }
        Ok(())
    }
}

/// `verify/tolerance`: equal exit codes, the same file names, and each file equal up to the
/// numeric tolerance (see the module docs for how files are read). Ignores the digests.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    rel: f64,
    abs: f64,
}

impl Tolerance {
    pub fn new(rel: Bound, abs: Bound) -> Self {
        Self { rel: rel.get(), abs: abs.get() }
    }
}

impl Validator for Tolerance {
    fn name(&self) -> &'static str {
        "verify/tolerance"
    }

    fn agree(&self, a: &ReplicaResult<'_>, b: &ReplicaResult<'_>) -> Result<(), Disagreement> {
        same_exit_code(a, b)?;
        let mut fa: Vec<&(&str, &[u8])> = a.files.iter().collect();
        let mut fb: Vec<&(&str, &[u8])> = b.files.iter().collect();
        fa.sort_by_key(|f| f.0);
        fb.sort_by_key(|f| f.0);
        let (mut only_a, mut only_b) = (Vec::new(), Vec::new());
        let (mut i, mut j) = (0, 0);
        let mut pairs = Vec::with_capacity(fa.len().min(fb.len()));
        loop {
            let order = match (fa.get(i), fb.get(j)) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(x), Some(y)) => x.0.cmp(y.0),
            };
            match order {
                Ordering::Less => {
                    only_a.push(fa[i].0.to_owned());
                    i += 1;
                }
                Ordering::Greater => {
                    only_b.push(fb[j].0.to_owned());
                    j += 1;
                }
                Ordering::Equal => {
                    pairs.push((fa[i].0, fa[i].1, fb[j].1));
                    i += 1;
                    j += 1;
                }
            }
        }
        if !only_a.is_empty() || !only_b.is_empty() {
            return Err(Disagreement::FileSets { only_a, only_b });
        }
        pairs.into_iter().try_for_each(|(name, x, y)| self.file(name, x, y))
    }
}

impl Tolerance {
    fn file(&self, name: &str, a: &[u8], b: &[u8]) -> Result<(), Disagreement> {
        if a == b {
            return Ok(());
        }
        let (Ok(ta), Ok(tb)) = (std::str::from_utf8(a), std::str::from_utf8(b)) else {
            let offset = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
            return Err(Disagreement::Bytes {
                file: name.to_owned(),
                offset,
                len_a: a.len(),
                len_b: b.len(),
            });
        };
        let (mut xs, mut ys) = (Tokens::new(ta), Tokens::new(tb));
        let (mut line, mut token) = (1, 0);
        loop {
            let (x, y) = (xs.next(), ys.next());
            if let (Some(Tok::Newline), Some(Tok::Newline)) = (x, y) {
                line += 1;
                token = 0;
                continue;
            }
            token += 1;
            let rel_diff = match (x, y) {
                (None, None) => return Ok(()),
                (Some(Tok::Text(p)), Some(Tok::Text(q))) if p == q => continue,
                (Some(Tok::Num(p)), Some(Tok::Num(q))) => match self.numbers(&p, &q) {
                    Ok(()) => continue,
                    Err(r) => r,
                },
                _ => None,
            };
            let (a, b) = shown(x, y);
            return Err(Disagreement::Token { file: name.to_owned(), line, token, a, b, rel_diff });
        }
    }

    /// `Ok` when two numbers agree, else the relative difference (when both are finite).
    fn numbers(&self, a: &Num<'_>, b: &Num<'_>) -> Result<(), Option<f64>> {
        if a.text == b.text {
            return Ok(());
        }
        let within = |diff: f64, scale: f64| diff <= self.abs.max(self.rel * scale);
        let rel = |diff: f64, scale: f64| if scale == 0.0 { 0.0 } else { diff / scale };
        if let (Some(x), Some(y)) = (a.int, b.int) {
            let diff = x.abs_diff(y) as f64;
            let scale = x.unsigned_abs().max(y.unsigned_abs()) as f64;
            return if x == y || within(diff, scale) {
                Ok(())
            } else {
                Err(Some(rel(diff, scale)))
            };
        }
        let (x, y) = (a.value, b.value);
        if x.is_nan() || y.is_nan() {
            return if x.is_nan() && y.is_nan() { Ok(()) } else { Err(None) };
        }
        if x.is_infinite() || y.is_infinite() {
            return if x == y { Ok(()) } else { Err(None) };
        }
        let diff = (x - y).abs();
        let scale = x.abs().max(y.abs());
        if within(diff, scale) { Ok(()) } else { Err(Some(rel(diff, scale))) }
    }
}

fn same_exit_code(a: &ReplicaResult<'_>, b: &ReplicaResult<'_>) -> Result<(), Disagreement> {
    if a.exit_code != b.exit_code {
        return Err(Disagreement::ExitCode { a: a.exit_code, b: b.exit_code });
    }
    Ok(())
}

/// Partitions results into agreement classes (indices into `results`): in order of first
/// appearance, each result joins the first class whose first member it agrees with, or opens
/// a new class. Deterministic for a given order; see the module docs for why only the first
/// member is compared. At most `results.len() * classes` comparisons.
pub fn classes(validator: &dyn Validator, results: &[ReplicaResult<'_>]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, r) in results.iter().enumerate() {
        match out.iter_mut().find(|c| validator.agree(&results[c[0]], r).is_ok()) {
            Some(c) => c.push(i),
            None => out.push(vec![i]),
        }
    }
    out
}

/// A replica's report as the controller compares it: how it ended, and its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported<'a> {
    pub cause: EndCause,
    /// The signal that ended the script (0: it exited).
    pub signal: i32,
    pub result: ReplicaResult<'a>,
}

/// [`classes`] for whole reports: replicas that ended for different reasons never agree;
/// replicas stopped alike (the time limit, the OOM killer, a failed launch, a stop) agree
/// whatever their partial outputs say, since a job that times out everywhere timed out;
/// replicas that exited agree when their signal is the same and the validator says so.
pub fn classify(validator: &dyn Validator, reports: &[Reported<'_>]) -> Vec<Vec<usize>> {
    let agree = |a: &Reported<'_>, b: &Reported<'_>| {
        a.cause == b.cause
            && (a.cause != EndCause::Exited
                || (a.signal == b.signal && validator.agree(&a.result, &b.result).is_ok()))
    };
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        match out.iter_mut().find(|c| agree(&reports[c[0]], r)) {
            Some(c) => c.push(i),
            None => out.push(vec![i]),
        }
    }
    out
}

/// The agreement classes of `job`'s reported replicas, as `Command::Verdict` carries them
/// (replica indices, classes in order of first appearance), compared with the job's own
/// validator. `files(replica)` gives the bytes of a replica's output files, in the order of
/// its report (`ReplicaEnd::outputs`).
pub fn job_classes(job: &Job, mut files: impl FnMut(u32) -> Vec<Vec<u8>>) -> Vec<Vec<u32>> {
    let validator = crate::validator(&job.verify);
    let ended: Vec<(u32, &ReplicaEnd, Vec<Vec<u8>>)> = job
        .replicas
        .iter()
        .filter_map(|r| Some((r.index, r.ended()?)))
        .map(|(i, e)| (i, e, files(i)))
        .collect();
    let named: Vec<Vec<(&str, &[u8])>> = ended
        .iter()
        .map(|(_, e, data)| {
            e.outputs.iter().map(|f| f.path.as_str()).zip(data.iter().map(Vec::as_slice)).collect()
        })
        .collect();
    let reports: Vec<Reported<'_>> = ended
        .iter()
        .zip(&named)
        .map(|((_, e, _), files)| Reported {
            cause: e.cause,
            signal: e.exit.signal,
            result: ReplicaResult { exit_code: e.exit.code, digest: e.digest, files },
        })
        .collect();
    classify(&*validator, &reports)
        .into_iter()
        .map(|c| c.into_iter().map(|i| ended[i].0).collect())
        .collect()
}

// ---- the tokenizer ----

/// A number token: its text, its value, and its exact value when it is a plain integer.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Num<'a> {
    text: &'a str,
    value: f64,
    int: Option<i128>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok<'a> {
    Newline,
    Num(Num<'a>),
    Text(&'a str),
}

/// The most characters of a token a [`Disagreement`] repeats.
const SHOWN: usize = 64;

impl<'a> Tok<'a> {
    fn text(self) -> &'a str {
        match self {
            Tok::Newline => "\n",
            Tok::Num(n) => n.text,
            Tok::Text(t) => t,
        }
    }
}

/// Two tokens as a [`Disagreement`] shows them: at most [`SHOWN`] characters each, starting a
/// little before their first difference when they share a long prefix.
fn shown(a: Option<Tok<'_>>, b: Option<Tok<'_>>) -> (Option<String>, Option<String>) {
    let (a, b) = (a.map(Tok::text), b.map(Tok::text));
    let common = match (a, b) {
        (Some(x), Some(y)) => x.chars().zip(y.chars()).take_while(|(p, q)| p == q).count(),
        _ => 0,
    };
    let skip = if common > SHOWN / 2 { common - SHOWN / 4 } else { 0 };
    let clip = |t: &str| {
        let mut out = String::from(if skip > 0 { "..." } else { "" });
        let mut rest = t.chars().skip(skip);
        out.extend(rest.by_ref().take(SHOWN));
        if rest.next().is_some() {
            out.push_str("...");
        }
        out
    };
    (a.map(clip), b.map(clip))
}

/// Part of a word: a number touching one of these is text.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Blanks separate tokens and are otherwise ignored; `\n` is a token.
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | 0x0b | 0x0c)
}

/// The tokens of a UTF-8 text, in one pass.
struct Tokens<'a> {
    text: &'a str,
    i: usize,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, i: 0 }
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Tok<'a>;

    fn next(&mut self) -> Option<Tok<'a>> {
        let s = self.text.as_bytes();
        while self.i < s.len() && is_blank(s[self.i]) {
            self.i += 1;
        }
        let start = self.i;
        if *s.get(start)? == b'\n' {
            self.i += 1;
            return Some(Tok::Newline);
        }
        // Every byte is looked at once here, and a number's bytes at most twice more (its
        // scan, and its rescan when it ends a text token): linear.
        let mut i = start;
        loop {
            match candidate(s, i) {
                Some((end, true)) if i == start => {
                    self.i = end;
                    return Some(number(&self.text[start..end]));
                }
                Some((_, true)) => break,
                // A rejected number is text as a whole (nothing inside it can start one that
                // would be accepted, but `1e-5.3` should not become `1e-` and `5.3`).
                Some((end, false)) => i = end,
                None => i += 1,
            }
            if i >= s.len() || is_blank(s[i]) || s[i] == b'\n' {
                break;
            }
        }
        // `i` is at an ASCII byte or the end, so on a char boundary.
        self.i = i;
        Some(Tok::Text(&self.text[start..i]))
    }
}

/// A number that could start at `i`: its end, and whether it stands on its own (see the module
/// docs). `None` when none starts here.
fn candidate(s: &[u8], i: usize) -> Option<(usize, bool)> {
    if i > 0 && (is_word(s[i - 1]) || s[i - 1] == b'.') {
        return None;
    }
    let end = scan_number(s, i)?;
    let alone = match s.get(end) {
        None => true,
        Some(&b'.') => !s.get(end + 1).is_some_and(|&b| is_word(b)),
        Some(&b) => !is_word(b),
    };
    Some((end, alone))
}

/// The end of the longest number at `i`: `[+-]` then `inf`/`infinity`/`nan` (any case) or
/// `digits[.digits][e[+-]digits]`, `.digits[...]`, `digits.[...]`.
fn scan_number(s: &[u8], i: usize) -> Option<usize> {
    let digits = |mut j: usize| {
        while s.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        j
    };
    let mut j = i;
    if matches!(s.get(j), Some(b'+' | b'-')) {
        j += 1;
    }
    for word in [&b"infinity"[..], b"inf", b"nan"] {
        if s.get(j..j + word.len()).is_some_and(|w| w.eq_ignore_ascii_case(word)) {
            return Some(j + word.len());
        }
    }
    let int_end = digits(j);
    let mut end = int_end;
    if s.get(end) == Some(&b'.') {
        end = digits(end + 1);
    }
    if end - j == usize::from(end > int_end) {
        // No digit at all: nothing, or a lone `.`.
        return None;
    }
    if matches!(s.get(end), Some(b'e' | b'E')) {
        let mut k = end + 1;
        if matches!(s.get(k), Some(b'+' | b'-')) {
            k += 1;
        }
        let exp_end = digits(k);
        if exp_end > k {
            end = exp_end;
        }
    }
    Some(end)
}

/// The token for the text of a number `scan_number` found. A literal `f64` cannot hold
/// (`1e400`) is text, compared exactly.
fn number(text: &str) -> Tok<'_> {
    let spelled = text.as_bytes().last().is_some_and(u8::is_ascii_alphabetic);
    let plain = !spelled && !text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'));
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() || spelled => {
            Tok::Num(Num { text, value, int: plain.then(|| text.parse().ok()).flatten() })
        }
        _ => Tok::Text(text),
    }
}

#[cfg(test)]
mod tests;
