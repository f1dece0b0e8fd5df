//! Time limits (`--time`, `TimeLimit=`) and the two ways Slurm prints a duration.
//!
//! ```text
//!   "1-02:03:04" ──parse_time_limit──▶ Minutes(1564)      (seconds round UP)
//!   "UNLIMITED"  ──parse_time_limit──▶ Unlimited
//!
//!   TimeLimit ──format_time_limit(hms=false)──▶ "5:00"      squeue TIME_LIMIT
//!             ──format_time_limit(hms=true)───▶ "00:05:00"  scontrol TimeLimit=
//!   seconds   ──format_duration───────────────▶ "0:03"      squeue TIME
//!             ──format_duration_hms───────────▶ "00:00:18"  scontrol RunTime=, sacct Elapsed
//! ```
//!
//! Observed in Slurm 22.05 (`slurm-ref/observed/sbatch.txt`, `squeue.txt`):
//! * `--time=0:05` gives `TimeLimit=00:01:00`, `--time=90` gives `01:30:00`,
//!   `--time=1-02:03:04` gives `1-02:04:00` (1564 minutes).
//! * `--time=abc` is refused (`Invalid --time specification`).
//! * `--time=-5` is *accepted*: Slurm reads `-5` as minus five days, rounds the seconds up
//!   towards zero and stores the result as an unsigned 32-bit minute count, so the job's
//!   `time_limit` became 4294960097 (= 2^32 - 7199). [`parse_time_limit`] reproduces that.
//! * Slurm documents that a limit of zero means "no limit", so `0` (and anything that rounds to
//!   zero minutes, e.g. `0:00`) parses to [`TimeLimit::Unlimited`].

use std::fmt::Write as _;

use super::ParseError;

const WHAT: &str = "time limit";

/// Largest minute count we accept. Slurm reserves 0xFFFFFFFE (NO_VAL) and 0xFFFFFFFF
/// (INFINITE) in its 32-bit minute fields.
pub const MAX_MINUTES: u32 = u32::MAX - 2;

/// A job's (or partition's) wall-clock limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TimeLimit {
    /// No limit (`UNLIMITED`, `INFINITE`, `0`).
    Unlimited,
    /// A limit in whole minutes (Slurm's resolution).
    Minutes(u32),
}

impl TimeLimit {
    /// The limit in seconds, `None` when unlimited.
    pub fn as_secs(&self) -> Option<u64> {
        match self {
            TimeLimit::Unlimited => None,
            TimeLimit::Minutes(m) => Some(u64::from(*m) * 60),
        }
    }

    /// The limit in minutes, `None` when unlimited.
    pub fn as_minutes(&self) -> Option<u32> {
        match self {
            TimeLimit::Unlimited => None,
            TimeLimit::Minutes(m) => Some(*m),
        }
    }
}

/// Parses a Slurm time limit: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`, `UNLIMITED` or
/// `INFINITE` (any case). Seconds are rounded up to whole minutes; fields are not range-checked
/// (`0:90` is 90 seconds, so 2 minutes), as in Slurm. A total of zero minutes means unlimited.
///
/// `-N` (digits only) is accepted the way Slurm 22.05 accepts it: see the module docs.
pub fn parse_time_limit(s: &str) -> Result<TimeLimit, ParseError> {
    if s.eq_ignore_ascii_case("unlimited") || s.eq_ignore_ascii_case("infinite") {
        return Ok(TimeLimit::Unlimited);
    }
    if s.is_empty() {
        return Err(ParseError::new(WHAT, s, "empty"));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_digit() || *c == '-' || *c == ':')) {
        return Err(ParseError::new(
            WHAT,
            s,
            format!(
                "unexpected character {c:?}; use minutes, minutes:seconds, hours:minutes:seconds, \
                 days-hours, days-hours:minutes, days-hours:minutes:seconds or UNLIMITED"
            ),
        ));
    }
    if let Some(days) = s.strip_prefix('-') {
        return negative_days(s, days);
    }
    let secs = match s.split_once('-') {
        Some((days, rest)) => {
            let days = field(s, days, "days")?;
            let hms = split_colons(s, rest)?;
            let (h, m, sec) = match hms.as_slice() {
                [h] => (*h, 0, 0),
                [h, m] => (*h, *m, 0),
                [h, m, sec] => (*h, *m, *sec),
                _ => unreachable!("split_colons returns 1..=3 fields"),
            };
            sum_secs(s, &[(days, 86_400), (h, 3_600), (m, 60), (sec, 1)])?
        }
        None => {
            let fields = split_colons(s, s)?;
            match fields.as_slice() {
                [m] => sum_secs(s, &[(*m, 60)])?,
                [m, sec] => sum_secs(s, &[(*m, 60), (*sec, 1)])?,
                [h, m, sec] => sum_secs(s, &[(*h, 3_600), (*m, 60), (*sec, 1)])?,
                _ => unreachable!("split_colons returns 1..=3 fields"),
            }
        }
    };
    let minutes = secs.div_ceil(60);
    if minutes == 0 {
        return Ok(TimeLimit::Unlimited);
    }
    match u32::try_from(minutes) {
        Ok(m) if m <= MAX_MINUTES => Ok(TimeLimit::Minutes(m)),
        _ => Err(ParseError::new(WHAT, s, format!("too large (at most {MAX_MINUTES} minutes)"))),
    }
}

/// Slurm 22.05 reads `-N` as `N` negative days, converts to minutes rounding towards zero
/// (`(-N*86400 + 59) / 60` in C integer arithmetic) and keeps the low 32 bits.
fn negative_days(input: &str, days: &str) -> Result<TimeLimit, ParseError> {
    if days.is_empty() || !days.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::new(WHAT, input, "misplaced '-'"));
    }
    let days = field(input, days, "days")?;
    let secs = -(i128::from(days)) * 86_400;
    let minutes = (secs + 59) / 60; // Rust's `/` truncates towards zero, like C's.
    let wrapped = minutes.rem_euclid(1 << 32) as u32;
    match wrapped {
        0 | u32::MAX => Ok(TimeLimit::Unlimited),
        m if m <= MAX_MINUTES => Ok(TimeLimit::Minutes(m)),
        _ => Err(ParseError::new(WHAT, input, "out of range")),
    }
}

/// Splits `H[:M[:S]]`-like text into 1 to 3 numeric fields.
fn split_colons(input: &str, part: &str) -> Result<Vec<u64>, ParseError> {
    let pieces: Vec<&str> = part.split(':').collect();
    if pieces.len() > 3 {
        return Err(ParseError::new(WHAT, input, "too many ':' fields (at most 3)"));
    }
    pieces.iter().map(|p| field(input, p, "field")).collect()
}

fn field(input: &str, text: &str, name: &str) -> Result<u64, ParseError> {
    if text.is_empty() {
        return Err(ParseError::new(WHAT, input, format!("empty {name}")));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::new(WHAT, input, format!("{name} `{text}` is not a number")));
    }
    text.parse::<u64>().map_err(|_| ParseError::new(WHAT, input, format!("{name} too large")))
}

fn sum_secs(input: &str, parts: &[(u64, u64)]) -> Result<u64, ParseError> {
    parts
        .iter()
        .try_fold(0u64, |acc, (v, unit)| v.checked_mul(*unit).and_then(|x| acc.checked_add(x)))
        .ok_or_else(|| ParseError::new(WHAT, input, "too large"))
}

fn split_secs(secs: u64) -> (u64, u64, u64, u64) {
    (secs / 86_400, secs % 86_400 / 3_600, secs % 3_600 / 60, secs % 60)
}

/// squeue's compact duration (`TIME`, `TIME_LIMIT`, `TIME_LEFT` columns):
/// `0:00`, `0:03`, `9:57`, `1:00:00`, `1-00:00:00`.
pub fn format_duration(secs: u64) -> String {
    let (d, h, m, s) = split_secs(secs);
    let mut out = String::new();
    if d > 0 {
        let _ = write!(out, "{d}-{h:02}:{m:02}:{s:02}");
    } else if h > 0 {
        let _ = write!(out, "{h}:{m:02}:{s:02}");
    } else {
        let _ = write!(out, "{m}:{s:02}");
    }
    out
}

/// scontrol's and sacct's duration (`RunTime=`, `TimeLimit=`, `Elapsed`):
/// `00:00:18`, `01:30:00`, `1-02:04:00`.
pub fn format_duration_hms(secs: u64) -> String {
    let (d, h, m, s) = split_secs(secs);
    if d > 0 { format!("{d}-{h:02}:{m:02}:{s:02}") } else { format!("{h:02}:{m:02}:{s:02}") }
}

/// A time limit as squeue (`hms == false`) or scontrol (`hms == true`) prints it;
/// both print `UNLIMITED` for no limit. (sinfo's TIMELIMIT column prints `infinite` instead.)
pub fn format_time_limit(t: &TimeLimit, hms: bool) -> String {
    match t.as_secs() {
        None => "UNLIMITED".to_owned(),
        Some(secs) if hms => format_duration_hms(secs),
        Some(secs) => format_duration(secs),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn mins(s: &str) -> TimeLimit {
        parse_time_limit(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn time_0_05_rounds_up_to_one_minute_as_observed() {
        assert_eq!(mins("0:05"), TimeLimit::Minutes(1));
        assert_eq!(format_time_limit(&mins("0:05"), true), "00:01:00");
    }

    #[test]
    fn time_90_is_minutes_as_observed() {
        assert_eq!(mins("90"), TimeLimit::Minutes(90));
        assert_eq!(format_time_limit(&mins("90"), true), "01:30:00");
    }

    #[test]
    fn time_days_hours_minutes_seconds_as_observed() {
        assert_eq!(mins("1-02:03:04"), TimeLimit::Minutes(1564));
        assert_eq!(format_time_limit(&mins("1-02:03:04"), true), "1-02:04:00");
    }

    #[test]
    fn time_all_documented_forms() {
        assert_eq!(mins("5"), TimeLimit::Minutes(5));
        assert_eq!(mins("5:30"), TimeLimit::Minutes(6));
        assert_eq!(mins("5:00"), TimeLimit::Minutes(5));
        assert_eq!(mins("2:03:00"), TimeLimit::Minutes(123));
        assert_eq!(mins("2:03:01"), TimeLimit::Minutes(124));
        assert_eq!(mins("1-2"), TimeLimit::Minutes(1440 + 120));
        assert_eq!(mins("1-2:3"), TimeLimit::Minutes(1440 + 123));
        assert_eq!(mins("0:90"), TimeLimit::Minutes(2));
    }

    #[test]
    fn time_unlimited_and_infinite_any_case() {
        for s in ["UNLIMITED", "unlimited", "Infinite", "INFINITE"] {
            assert_eq!(mins(s), TimeLimit::Unlimited, "{s}");
        }
    }

    #[test]
    fn time_zero_means_no_limit() {
        assert_eq!(mins("0"), TimeLimit::Unlimited);
        assert_eq!(mins("0:00"), TimeLimit::Unlimited);
        assert_eq!(mins("0-0"), TimeLimit::Unlimited);
    }

    #[test]
    fn time_minus_5_is_accepted_and_wraps_as_observed() {
        // squeue --json showed "time_limit": 4294960097 for `sbatch --time=-5`.
        assert_eq!(mins("-5"), TimeLimit::Minutes(4_294_960_097));
    }

    #[test]
    fn time_abc_is_refused_as_observed() {
        let e = parse_time_limit("abc").unwrap_err();
        assert_eq!(e.what, "time limit");
        assert_eq!(e.input, "abc");
    }

    #[test]
    fn time_malformed_is_refused() {
        for s in ["", "1:2:3:4", "1-", "-", "1-2-3", "1::2", ":5", "5:", "1-2:3:4:5", " 5", "--5"] {
            assert!(parse_time_limit(s).is_err(), "{s:?} should be refused");
        }
        assert!(parse_time_limit("99999999999999999999").is_err());
        assert!(parse_time_limit("4294967295").is_err());
    }

    #[test]
    fn squeue_durations_as_observed() {
        assert_eq!(format_duration(0), "0:00");
        assert_eq!(format_duration(3), "0:03");
        assert_eq!(format_duration(597), "9:57");
        assert_eq!(format_duration(300), "5:00");
        assert_eq!(format_duration(600), "10:00");
        assert_eq!(format_duration(65), "1:05");
        assert_eq!(format_duration(3600), "1:00:00");
        assert_eq!(format_duration(86_400), "1-00:00:00");
        assert_eq!(format_time_limit(&TimeLimit::Minutes(1), false), "1:00");
        assert_eq!(format_time_limit(&TimeLimit::Unlimited, false), "UNLIMITED");
    }

    #[test]
    fn scontrol_durations_as_observed() {
        assert_eq!(format_duration_hms(18), "00:00:18");
        assert_eq!(format_duration_hms(79), "00:01:19");
        assert_eq!(format_duration_hms(600), "00:10:00");
        assert_eq!(format_duration_hms(0), "00:00:00");
        assert_eq!(format_duration_hms(86_400), "1-00:00:00");
        assert_eq!(format_time_limit(&TimeLimit::Unlimited, true), "UNLIMITED");
        assert_eq!(format_time_limit(&TimeLimit::Minutes(7), true), "00:07:00");
    }

    #[test]
    fn as_secs_and_minutes() {
        assert_eq!(TimeLimit::Minutes(2).as_secs(), Some(120));
        assert_eq!(TimeLimit::Unlimited.as_secs(), None);
        assert_eq!(TimeLimit::Minutes(2).as_minutes(), Some(2));
    }

    proptest! {
        #[test]
        fn parse_time_limit_never_panics(s in "\\PC{0,24}") {
            let _ = parse_time_limit(&s);
        }

        #[test]
        fn parse_time_limit_never_panics_on_time_like_text(s in "[0-9:-]{0,16}") {
            let _ = parse_time_limit(&s);
        }

        #[test]
        fn hms_format_parses_back(m in 1u32..10_000_000) {
            let t = TimeLimit::Minutes(m);
            prop_assert_eq!(parse_time_limit(&format_time_limit(&t, true)).unwrap(), t);
            prop_assert_eq!(parse_time_limit(&format_time_limit(&t, false)).unwrap(), t);
        }
    }
}
