//! Output file name patterns for `sbatch -o/-e` (`slurm-%j.out`, `%x-%A_%a.log`).
//!
//! ```text
//!   "a_%A_%a_%j.txt", job 58 = task 2 of array 57 ──expand_pattern──▶ "a_57_2_58.txt"
//!   "o_%j_%x_%u_%N.txt" ──expand_pattern_for_display──▶ "o_56_pat_root_%N.txt"  (scontrol)
//! ```
//!
//! Observed in Slurm 22.05 (`output_files.txt`):
//! * `%j` job id (an array task's own id), `%x` job name, `%u` user name.
//! * `%N` gave `vm`: the *host name* of the node (NodeHostName), not its NodeName (`node1`).
//!   Callers pass whichever name they mean in [`PatternVars::first_node`].
//! * `%A` of a non-array job is its job id; `%a` of a non-array job is `4294967294` (Slurm's
//!   NO_VAL, [`NO_VAL`]). scontrol even shows a pending array's record as
//!   `slurm-82_4294967294.out`.
//! * `%%` is `%`; `%n` (node index) and `%t` (task) are `0` in a batch script; `%s` (step) is
//!   `batch`.
//! * `%5j` zero-pads to 5 digits (`00061`).
//! * scontrol's `StdOut=`/`StdErr=` expand only `%A %a %j %u %x` and leave everything else,
//!   `%%` and `%5j` included, as typed: [`expand_pattern_for_display`].
//!
//! Not observed, taken from Slurm's documentation and the behaviour of its file-name code:
//! widths are capped at 10; `%J` is `jobid.step` (so `61.batch` in a batch script); an unknown
//! specifier such as `%z` is kept as typed, but with a width (`%5z`) only the width's last digit
//! and the letter remain (`5z`); a pattern containing a backslash is not expanded at all, its
//! backslashes being removed (`\\` stays as one `\`).

/// Slurm's "no value" for 32-bit fields, printed for `%a` of a job that is not an array task.
pub const NO_VAL: u32 = 0xFFFF_FFFE;

/// Largest zero-padding width Slurm honours (`%12j` pads to 10).
pub const MAX_WIDTH: usize = 10;

/// The values a pattern can refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatternVars<'a> {
    /// `%j`: the job's own id (for an array task, the task's job id).
    pub job_id: u32,
    /// `%A` for an array task: the array's (master) job id.
    pub array_job_id: Option<u32>,
    /// `%a`: the array task index; `None` prints NO_VAL (4294967294).
    pub array_task_id: Option<u32>,
    /// `%x`.
    pub job_name: &'a str,
    /// `%u`.
    pub user: &'a str,
    /// `%N`: the first node's host name (Slurm printed the host name, see the module docs).
    pub first_node: &'a str,
    /// `%n`: the node's index within the job (0 for the batch script).
    pub node_index: u32,
    /// `%t`: the task's rank (0 for the batch script).
    pub task_id: u32,
}

/// The default `-o` pattern: `slurm-%j.out`, or `slurm-%A_%a.out` for an array.
pub fn default_output_pattern(is_array: bool) -> &'static str {
    if is_array { "slurm-%A_%a.out" } else { "slurm-%j.out" }
}

/// Expands a pattern for the batch script (step `batch`): what slurmstepd names the file.
pub fn expand_pattern(pattern: &str, v: &PatternVars) -> String {
    expand_pattern_for_step(pattern, v, "batch")
}

/// Expands a pattern for a given step: `batch`, `extern`, or a step number such as `0`
/// (`%s` is zero-padded only when it is a number).
pub fn expand_pattern_for_step(pattern: &str, v: &PatternVars, step: &str) -> String {
    if pattern.contains('\\') {
        return remove_backslashes(pattern);
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.get(i) {
            Some('%') => {
                out.push('%');
                i += 1;
            }
            Some(d) if d.is_ascii_digit() => {
                let start = i;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                let last_digit = chars[i - 1];
                let width = chars[start..i]
                    .iter()
                    .try_fold(0usize, |acc, d| {
                        acc.checked_mul(10)?.checked_add(d.to_digit(10)? as usize)
                    })
                    .map_or(MAX_WIDTH, |w| w.min(MAX_WIDTH));
                match chars.get(i).and_then(|spec| substitute(*spec, width, v, step)) {
                    Some(text) => {
                        out.push_str(&text);
                        i += 1;
                    }
                    // Unknown letter or end of pattern: Slurm keeps only the last digit.
                    None => out.push(last_digit),
                }
            }
            Some(spec) => match substitute(*spec, 0, v, step) {
                Some(text) => {
                    out.push_str(&text);
                    i += 1;
                }
                None => out.push('%'),
            },
            None => out.push('%'),
        }
    }
    out
}

/// The text for one specifier, `None` when the letter is not one.
fn substitute(spec: char, width: usize, v: &PatternVars, step: &str) -> Option<String> {
    let num = |n: u32| format!("{n:0width$}");
    Some(match spec {
        'j' => num(v.job_id),
        'J' => format!("{}.{step}", num(v.job_id)),
        'A' => match v.array_task_id {
            Some(_) => num(v.array_job_id.unwrap_or(v.job_id)),
            None => num(v.job_id),
        },
        'a' => num(v.array_task_id.unwrap_or(NO_VAL)),
        'n' => num(v.node_index),
        't' => num(v.task_id),
        's' => match step.parse::<u32>() {
            Ok(n) => num(n),
            Err(_) => step.to_owned(),
        },
        'N' => v.first_node.to_owned(),
        'u' => v.user.to_owned(),
        'x' => v.job_name.to_owned(),
        _ => return None,
    })
}

/// `\\` becomes `\`, any other `\` is dropped.
fn remove_backslashes(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
        } else if let Some(next) = chars.clone().next().filter(|n| *n == '\\') {
            out.push(next);
            chars.next();
        }
    }
    out
}

/// The partial expansion scontrol shows in `StdOut=`/`StdErr=`: `%A %a %j %u %x` are filled
/// in (without padding); everything else, `%%`, `%N`, `%5j` included, stays as typed.
pub fn expand_pattern_for_display(pattern: &str, v: &PatternVars) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some('%') => {
                out.push_str("%%");
                chars.next();
            }
            Some(spec @ ('A' | 'a' | 'j' | 'u' | 'x')) => {
                out.push_str(&substitute(spec, 0, v, "batch").expect("known specifier"));
                chars.next();
            }
            _ => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn job(job_id: u32) -> PatternVars<'static> {
        PatternVars {
            job_id,
            array_job_id: None,
            array_task_id: None,
            job_name: "refjob",
            user: "root",
            first_node: "vm",
            node_index: 0,
            task_id: 0,
        }
    }

    fn task(job_id: u32, array_job_id: u32, t: u32) -> PatternVars<'static> {
        PatternVars { array_job_id: Some(array_job_id), array_task_id: Some(t), ..job(job_id) }
    }

    #[test]
    fn default_name_as_observed() {
        assert_eq!(expand_pattern(default_output_pattern(false), &job(53)), "slurm-53.out");
    }

    #[test]
    fn default_name_for_an_array_as_observed() {
        // Job 54 is task 1 and job 55 task 0 of array 54.
        assert_eq!(
            expand_pattern(default_output_pattern(true), &task(55, 54, 0)),
            "slurm-54_0.out"
        );
        assert_eq!(
            expand_pattern(default_output_pattern(true), &task(54, 54, 1)),
            "slurm-54_1.out"
        );
    }

    #[test]
    fn output_j_x_u_n_as_observed() {
        let v = PatternVars { job_name: "pat", ..job(56) };
        assert_eq!(expand_pattern("o_%j_%x_%u_%N.txt", &v), "o_56_pat_root_vm.txt");
    }

    #[test]
    fn output_big_a_small_a_for_array_as_observed() {
        assert_eq!(expand_pattern("a_%A_%a_%j.txt", &task(58, 57, 2)), "a_57_2_58.txt");
        assert_eq!(expand_pattern("a_%A_%a_%j.txt", &task(57, 57, 3)), "a_57_3_57.txt");
    }

    #[test]
    fn output_big_a_small_a_for_non_array_as_observed() {
        assert_eq!(expand_pattern("na_%A_%a.txt", &job(59)), "na_59_4294967294.txt");
    }

    #[test]
    fn output_percent_n_t_s_as_observed() {
        assert_eq!(expand_pattern("p_%%_%n_%t_%s.txt", &job(60)), "p_%_0_0_batch.txt");
    }

    #[test]
    fn output_zero_padding_as_observed() {
        assert_eq!(expand_pattern("z_%5j.txt", &job(61)), "z_00061.txt");
    }

    #[test]
    fn output_x_log_as_observed() {
        assert_eq!(expand_pattern("%x.log", &job(71)), "refjob.log");
    }

    #[test]
    fn output_padding_is_capped_at_10() {
        assert_eq!(expand_pattern("%10j", &job(61)), "0000000061");
        assert_eq!(expand_pattern("%12j", &job(61)), "0000000061");
        assert_eq!(expand_pattern("%99999999999999999999999j", &job(61)), "0000000061");
        assert_eq!(expand_pattern("%4a", &task(9, 8, 7)), "0007");
        assert_eq!(expand_pattern("%3t", &job(1)), "000");
    }

    #[test]
    fn output_big_j_is_job_dot_step() {
        assert_eq!(expand_pattern("%J", &job(61)), "61.batch");
        assert_eq!(expand_pattern_for_step("%J-%s-%3s", &job(61), "2"), "61.2-2-002");
    }

    #[test]
    fn output_unknown_specifier_is_kept() {
        assert_eq!(expand_pattern("x%z.out", &job(1)), "x%z.out");
        assert_eq!(expand_pattern("x%5z", &job(1)), "x5z");
        assert_eq!(expand_pattern("x%", &job(1)), "x%");
        assert_eq!(expand_pattern("x%5", &job(1)), "x5");
        assert_eq!(expand_pattern("%%%j", &job(3)), "%3");
        assert_eq!(expand_pattern("%5%j", &job(3)), "53");
    }

    #[test]
    fn output_backslash_disables_expansion() {
        assert_eq!(expand_pattern(r"out\_%j", &job(3)), "out_%j");
        assert_eq!(expand_pattern(r"a\\b%j", &job(3)), r"a\b%j");
    }

    #[test]
    fn scontrol_stdout_as_observed() {
        let v = PatternVars { job_name: "pat", ..job(56) };
        assert_eq!(expand_pattern_for_display("o_%j_%x_%u_%N.txt", &v), "o_56_pat_root_%N.txt");
        assert_eq!(expand_pattern_for_display("a_%A_%a_%j.txt", &task(57, 57, 3)), "a_57_3_57.txt");
        assert_eq!(expand_pattern_for_display("na_%A_%a.txt", &job(59)), "na_59_4294967294.txt");
        assert_eq!(expand_pattern_for_display("p_%%_%n_%t_%s.txt", &job(60)), "p_%%_%n_%t_%s.txt");
        assert_eq!(expand_pattern_for_display("z_%5j.txt", &job(61)), "z_%5j.txt");
        assert_eq!(
            expand_pattern_for_display("slurm-%A_%a.out", &job(82)),
            "slurm-82_4294967294.out"
        );
    }

    proptest! {
        #[test]
        fn expand_pattern_never_panics(s in "\\PC{0,30}") {
            let _ = expand_pattern(&s, &job(1));
            let _ = expand_pattern_for_display(&s, &job(1));
        }

        #[test]
        fn text_without_percent_or_backslash_is_unchanged(s in "[^%\\\\]{0,30}") {
            prop_assert_eq!(expand_pattern(&s, &job(1)), s.clone());
            prop_assert_eq!(expand_pattern_for_display(&s, &job(1)), s);
        }
    }
}
