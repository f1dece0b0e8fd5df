//! Job array specifications (`--array=0-15%4`) and the task-range strings Slurm prints.
//!
//! ```text
//!   "1-3,8,10-20:5%2" ──parse_array_spec──▶ tasks [1,2,3,8,10,15,20], throttle Some(2)
//!   ArraySpec   ──Display────────────▶ "1-3,8,10,15,20%2"   scontrol ArrayTaskId=, squeue %K
//!   [2,3]       ──format_task_ranges──▶ "2-3"               squeue JOBID: "4_[2-3%2]"
//!   [2,4,..,18] ──format_task_ranges──▶ "2-18:2"            one evenly stepped run
//! ```
//!
//! Observed in Slurm 22.05: squeue shows a pending array as `82_[0-5%2]`, scontrol as
//! `ArrayTaskId=0-5%2 ArrayTaskThrottle=2`; `--array=5-1` is refused
//! (`Invalid job array specification`); `MaxArraySize=100001` (so the largest index is 100000).
//!
//! How Slurm prints a task set (learnt from the expected values in Slurm's own unit tests of its
//! task-string formatter, not from its code): consecutive runs as `a-b`, single tasks as `a`,
//! joined by `,`; but when the whole set is one evenly stepped run with a step above 1 it is
//! printed `first-last:step` (`2-18:2`). A throttle is appended as `%N`. Clients cut long
//! strings to `SLURM_BITSTR_LEN` (see [`truncate_task_str`]).

use std::fmt;

use super::ParseError;

const WHAT: &str = "array specification";

/// Slurm's default `MaxArraySize`, as configured on the reference cluster (100001: indices
/// 0..=100000).
pub const DEFAULT_MAX_ARRAY_SIZE: u32 = 100_001;

/// The largest `MaxArraySize` Slurm allows. [`parse_array_spec_max`] clamps to it, which also
/// bounds the memory a spec can make us allocate.
pub const MAX_ARRAY_SIZE_LIMIT: u32 = 4_000_001;

/// Default length of the buffer Slurm's clients format task strings into
/// (`SLURM_BITSTR_LEN`); see [`truncate_task_str`].
pub const DEFAULT_BITSTR_LEN: usize = 64;

/// A parsed `--array` value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ArraySpec {
    /// Task indices, sorted ascending, without duplicates, never empty after parsing.
    pub tasks: Vec<u32>,
    /// `%N`: at most N tasks run at once. `None` when absent (or `%0`).
    pub throttle: Option<u32>,
}

impl ArraySpec {
    /// Number of tasks (`SLURM_ARRAY_TASK_COUNT`).
    pub fn count(&self) -> usize {
        self.tasks.len()
    }

    /// Lowest index (`SLURM_ARRAY_TASK_MIN`).
    pub fn min(&self) -> Option<u32> {
        self.tasks.first().copied()
    }

    /// Highest index (`SLURM_ARRAY_TASK_MAX`).
    pub fn max(&self) -> Option<u32> {
        self.tasks.last().copied()
    }
}

/// `ArrayTaskId=`-style string: task ranges plus `%N` when throttled, e.g. `0-5%2`.
impl fmt::Display for ArraySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_task_ranges(&self.tasks))?;
        if let Some(n) = self.throttle {
            write!(f, "%{n}")?;
        }
        Ok(())
    }
}

/// Parses `--array` with Slurm's default `MaxArraySize` (100001).
pub fn parse_array_spec(s: &str) -> Result<ArraySpec, ParseError> {
    parse_array_spec_max(s, DEFAULT_MAX_ARRAY_SIZE)
}

/// Parses `--array`: comma-separated `N`, `A-B` or `A-B:STEP` items, optionally followed by
/// `%THROTTLE`. Every index must be below `max_size` (Slurm's `MaxArraySize`; clamped to
/// [`MAX_ARRAY_SIZE_LIMIT`]). `%0` means no throttle (Slurm stores "no throttle" as 0).
pub fn parse_array_spec_max(s: &str, max_size: u32) -> Result<ArraySpec, ParseError> {
    let max_size = max_size.min(MAX_ARRAY_SIZE_LIMIT);
    if max_size == 0 {
        return Err(ParseError::new(WHAT, s, "job arrays are disabled (MaxArraySize=0)"));
    }
    let (body, throttle) = match s.split_once('%') {
        Some((body, t)) => {
            let t = number(s, t, "throttle")?;
            (body, (t > 0).then_some(t))
        }
        None => (s, None),
    };
    if body.is_empty() {
        return Err(ParseError::new(WHAT, s, "no task indices"));
    }
    // (lo, hi, step) per item; marked into a bitmap afterwards so that repeated or overlapping
    // items cost time proportional to their length, never extra memory.
    let mut items = Vec::new();
    for item in body.split(',') {
        if item.is_empty() {
            return Err(ParseError::new(WHAT, s, "empty item between commas"));
        }
        let (range, step) = match item.split_once(':') {
            Some((range, step)) => (range, number(s, step, "step")?),
            None => (item, 1),
        };
        if step == 0 {
            return Err(ParseError::new(WHAT, s, "step must be at least 1"));
        }
        let (lo, hi) = match range.split_once('-') {
            Some((lo, hi)) => (number(s, lo, "index")?, number(s, hi, "index")?),
            None if item.contains(':') => {
                return Err(ParseError::new(WHAT, s, format!("`{item}`: a step needs a range")));
            }
            None => {
                let n = number(s, range, "index")?;
                (n, n)
            }
        };
        if lo > hi {
            return Err(ParseError::new(WHAT, s, format!("range `{range}` is reversed")));
        }
        if hi >= max_size {
            return Err(ParseError::new(
                WHAT,
                s,
                format!(
                    "index {hi} is too large (MaxArraySize={max_size}, largest index {})",
                    max_size - 1
                ),
            ));
        }
        items.push((lo, hi, step));
    }
    let top = items.iter().map(|(_, hi, _)| *hi).max().unwrap_or(0) as usize;
    let mut set = vec![false; top + 1];
    for (lo, hi, step) in items {
        if step == 1 {
            set[lo as usize..=hi as usize].fill(true);
        } else {
            for t in (lo..=hi).step_by(step as usize) {
                set[t as usize] = true;
            }
        }
    }
    let tasks = (0..=top as u32).filter(|t| set[*t as usize]).collect();
    Ok(ArraySpec { tasks, throttle })
}

fn number(input: &str, text: &str, name: &str) -> Result<u32, ParseError> {
    if text.is_empty() {
        return Err(ParseError::new(WHAT, input, format!("empty {name}")));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::new(WHAT, input, format!("{name} `{text}` is not a number")));
    }
    text.parse().map_err(|_| ParseError::new(WHAT, input, format!("{name} `{text}` is too large")))
}

/// Formats task indices the way squeue and scontrol print them: `1-3,5,7-9`, or
/// `first-last:step` when the whole set is one evenly stepped run with a step above 1.
/// Unsorted input or duplicates are tolerated (sorted and deduplicated first).
pub fn format_task_ranges(tasks: &[u32]) -> String {
    let sorted;
    let tasks = if tasks.windows(2).all(|w| w[0] < w[1]) {
        tasks
    } else {
        let mut v = tasks.to_vec();
        v.sort_unstable();
        v.dedup();
        sorted = v;
        &sorted
    };
    if let [first, second, ..] = tasks {
        let step = second - first;
        let last = tasks[tasks.len() - 1];
        if step > 1 && tasks.windows(2).all(|w| w[1] - w[0] == step) {
            return format!("{first}-{last}:{step}");
        }
    }
    let mut out = String::new();
    let mut i = 0;
    while i < tasks.len() {
        let start = tasks[i];
        let mut end = start;
        while i + 1 < tasks.len() && tasks[i + 1] == end + 1 {
            end += 1;
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out
}

/// Cuts a task string the way Slurm's clients do when it does not fit a buffer of
/// `bitstr_len` bytes (NUL included): the first `bitstr_len - 4` characters followed by `...`.
/// `bitstr_len == 0` means no limit. (From Slurm's unit-test expectations: with a length of
/// 10, `2,4,6,8,12,14,16,18` prints as `2,4,6,...`; a throttle `%N` is appended after.)
pub fn truncate_task_str(s: &str, bitstr_len: usize) -> String {
    if bitstr_len == 0 || s.len() < bitstr_len || bitstr_len < 4 {
        return s.to_owned();
    }
    format!("{}...", &s[..bitstr_len - 4])
}

/// The string squeue and scontrol show for an array's (remaining) tasks, cut to
/// `bitstr_len` like Slurm's clients (use [`DEFAULT_BITSTR_LEN`]; 0 for no limit):
/// `0-5%2`, `2-3%2`.
pub fn format_array_task_str(tasks: &[u32], throttle: Option<u32>, bitstr_len: usize) -> String {
    let mut out = truncate_task_str(&format_task_ranges(tasks), bitstr_len);
    if let Some(n) = throttle {
        out.push_str(&format!("%{n}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn spec(s: &str) -> ArraySpec {
        parse_array_spec(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn array_range() {
        assert_eq!(spec("0-15").tasks, (0..=15).collect::<Vec<_>>());
        assert_eq!(spec("0-15").throttle, None);
    }

    #[test]
    fn array_list() {
        assert_eq!(spec("1,3,5").tasks, vec![1, 3, 5]);
    }

    #[test]
    fn array_step() {
        assert_eq!(spec("1-7:2").tasks, vec![1, 3, 5, 7]);
        assert_eq!(spec("1-8:3").tasks, vec![1, 4, 7]);
    }

    #[test]
    fn array_throttle() {
        let a = spec("0-15%4");
        assert_eq!(a.tasks.len(), 16);
        assert_eq!(a.throttle, Some(4));
    }

    #[test]
    fn array_mixed_items_with_throttle() {
        let a = spec("1-3,8,10-20:5%2");
        assert_eq!(a.tasks, vec![1, 2, 3, 8, 10, 15, 20]);
        assert_eq!(a.throttle, Some(2));
    }

    #[test]
    fn array_sorted_and_deduplicated() {
        assert_eq!(spec("5,1-3,2").tasks, vec![1, 2, 3, 5]);
    }

    #[test]
    fn array_throttle_zero_means_none() {
        assert_eq!(spec("1-3%0").throttle, None);
    }

    #[test]
    fn array_5_1_reversed_is_refused_as_observed() {
        let e = parse_array_spec("5-1").unwrap_err();
        assert_eq!(e.what, "array specification");
        assert!(e.why.contains("reversed"), "{}", e.why);
    }

    #[test]
    fn array_malformed_is_refused() {
        for s in [
            "", "%2", "1,", ",1", "1,,2", "1-", "-1", "a", "1-3:0", "1-3:", "5:2", "1-3%", "1-3%x",
            "1-3%2%3", " 1", "1-2-3", "1.5",
        ] {
            assert!(parse_array_spec(s).is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn array_index_must_be_below_max_array_size() {
        assert_eq!(spec("100000").tasks, vec![100_000]);
        assert!(parse_array_spec("100001").is_err());
        assert!(parse_array_spec("0-4000000").is_err());
        assert!(parse_array_spec_max("10", 10).is_err());
        assert_eq!(parse_array_spec_max("9", 10).unwrap().tasks, vec![9]);
        // The parameter is clamped to Slurm's own ceiling.
        assert!(parse_array_spec_max("4000001", u32::MAX).is_err());
        assert!(parse_array_spec_max("0", 0).is_err());
    }

    #[test]
    fn squeue_pending_array_as_observed() {
        // `sbatch --array=0-5%2` shows as 82_[0-5%2] / ArrayTaskId=0-5%2.
        assert_eq!(spec("0-5%2").to_string(), "0-5%2");
        // `--array=0-3%2` with tasks 0 and 1 gone: 4_[2-3%2].
        assert_eq!(format_array_task_str(&[2, 3], Some(2), DEFAULT_BITSTR_LEN), "2-3%2");
    }

    #[test]
    fn task_ranges_compact() {
        assert_eq!(format_task_ranges(&[1, 2, 3, 5, 7, 8, 9]), "1-3,5,7-9");
        assert_eq!(format_task_ranges(&[0, 1, 2]), "0-2");
        assert_eq!(format_task_ranges(&[5]), "5");
        assert_eq!(format_task_ranges(&[]), "");
        assert_eq!(format_task_ranges(&[3, 1, 2, 2]), "1-3");
    }

    #[test]
    fn task_ranges_match_slurm_unit_test_expectations() {
        assert_eq!(format_task_ranges(&[1, 2, 6, 7, 8, 11]), "1-2,6-8,11");
        let stepped: Vec<u32> = (2..=18).step_by(2).collect();
        assert_eq!(format_task_ranges(&stepped), "2-18:2");
        assert_eq!(format_task_ranges(&[2, 4, 5, 6, 8, 12, 14, 18]), "2,4-6,8,12,14,18");
        assert_eq!(format_task_ranges(&[2, 4, 6, 8, 12, 14, 16, 18]), "2,4,6,8,12,14,16,18");
        assert_eq!(
            format_array_task_str(&[2, 4, 6, 8, 12, 14, 16, 18], Some(9), 0),
            "2,4,6,8,12,14,16,18%9"
        );
    }

    #[test]
    fn stepped_array_displays_with_step() {
        assert_eq!(spec("1-7:2").to_string(), "1-7:2");
        assert_eq!(spec("1-7:2%3").to_string(), "1-7:2%3");
    }

    #[test]
    fn bitstr_len_truncation() {
        let tasks = [2, 4, 6, 8, 12, 14, 16, 18];
        assert_eq!(format_array_task_str(&tasks, None, 10), "2,4,6,...");
        assert_eq!(format_array_task_str(&tasks, Some(9), 10), "2,4,6,...%9");
        let many: Vec<u32> = (0..=50).step_by(2).filter(|t| *t != 10).collect();
        assert_eq!(
            format_array_task_str(&many, None, 65),
            "0,2,4,6,8,12,14,16,18,20,22,24,26,28,30,32,34,36,38,40,42,44,..."
        );
        assert_eq!(
            format_array_task_str(&many, None, DEFAULT_BITSTR_LEN),
            "0,2,4,6,8,12,14,16,18,20,22,24,26,28,30,32,34,36,38,40,42,44..."
        );
        assert_eq!(
            format_array_task_str(&many, None, 0),
            "0,2,4,6,8,12,14,16,18,20,22,24,26,28,30,32,34,36,38,40,42,44,46,48,50"
        );
    }

    #[test]
    fn count_min_max_for_env() {
        let a = spec("0-2");
        assert_eq!((a.count(), a.min(), a.max()), (3, Some(0), Some(2)));
    }

    proptest! {
        #[test]
        fn parse_of_format_task_ranges_is_identity(
            set in proptest::collection::btree_set(0u32..2000, 1..60),
            throttle in proptest::option::of(1u32..100),
        ) {
            let tasks: Vec<u32> = set.into_iter().collect();
            let a = ArraySpec { tasks: tasks.clone(), throttle };
            prop_assert_eq!(parse_array_spec(&format_task_ranges(&tasks)).unwrap().tasks, tasks);
            prop_assert_eq!(parse_array_spec(&a.to_string()).unwrap(), a);
        }

        #[test]
        fn parse_array_spec_never_panics(s in "[0-9,:%-]{0,20}") {
            if let Ok(a) = parse_array_spec(&s) {
                prop_assert!(!a.tasks.is_empty());
                prop_assert!(a.tasks.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }
}
