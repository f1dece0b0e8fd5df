//! `sbatch`'s command line and `#SBATCH` directives, parsed into typed options. Pure: the caller
//! reads the script (file, stdin or `--wrap`) and passes its text.
//!
//! ```text
//!   argv ──parse_command_line──▶ CommandLine { options, script, script_args, help/usage/version }
//!                                    │  caller reads `script` (or stdin, or builds the --wrap script)
//!   script bytes ──check_script──▶ Ok | "Batch script is empty!" | "This does not look like ..."
//!   script text ──parse_directives──▶ SbatchOptions from the #SBATCH lines
//!   merge(command line, directives) ──▶ SbatchOptions ──validate──▶ Ok | "--mem, --mem-per-cpu ..."
//!   any SbatchError ──slurm_message / exit_code──▶ the stderr lines and exit status Slurm gives
//! ```
//!
//! Both inputs go through one option engine that follows glibc `getopt_long` with the option
//! string Slurm 22.05 builds: it starts with `+`, so parsing stops at the first argument that is not
//! an option, and everything from there on is the script and its arguments (`sbatch job.sh -t`
//! submits `job.sh` with argument `-t`). Short options cluster (`-HQ`) and take attached or
//! separate values (`-n2`, `-n 2`); long options take `--opt=value` or `--opt value`; an option
//! whose argument is optional (`--exclusive`, `--nice`, `--get-user-env`, `--propagate`,
//! `-k/--no-kill`) only takes it attached. Long options may be shortened to any unambiguous prefix,
//! checked against the full 22.05 sbatch option table so that ambiguities list the same
//! possibilities, in the same order, as Slurm.
//!
//! Directives follow Slurm 22.05:
//! * a line that starts (column 0) with `#SBATCH` is a directive; `#SLURM` is accepted with
//!   Slurm's "Change from #SLURM to #SBATCH" complaint;
//! * any other line that is blank or whose first non-blank character is `#` is skipped (the `#!`
//!   line, indented `#SBATCH`, comments); the first other line ends the scan;
//! * a directive's text is split into words: whitespace separates, `"..."` and `'...'` group,
//!   `\` escapes the next character, an unquoted `#` starts a comment (even inside a word);
//! * the words of all directives form one argument list parsed as a whole, so a value may sit on
//!   the next directive line, and the first word that is not an option is refused with
//!   `Invalid directive found in batch script: WORD` (e.g. `#SBATCH --nice 0`);
//! * the options sbatch handles before reading the script (`--help`, `--usage`, `--version`,
//!   `-v`, `-Q`, `--wrap`) are accepted in directives and ignored, as in Slurm.
//!
//! Sources: `slurm-ref/observed/sbatch.txt` (exact texts and exit codes, cited at each error),
//! and Slurm 22.05.8's behaviour where nothing was observed (noted as such on each variant).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ParseError;
use super::array::{ArraySpec, parse_array_spec};
use super::dependency::{Dependency, parse_dependency};
use super::mem::parse_mem_mb;
use super::time::{TimeLimit, parse_time_limit};
use crate::trust::ReplicationSpec;
use crate::verify::VerifySpec;

/// Every option sbatch understands, typed. `None` = not given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SbatchOptions {
    /// `-J/--job-name`.
    pub job_name: Option<String>,
    /// `-t/--time`.
    pub time: Option<TimeLimit>,
    /// `-n/--ntasks`.
    pub ntasks: Option<u32>,
    /// `-c/--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// `-N/--nodes`: the minimum node count (`2` and `2-4` both give 2).
    pub nodes: Option<u32>,
    /// `-N/--nodes`: the maximum node count; `-N 2` means exactly two, so `Some(2)`. `None` when
    /// `-N` was not given or its maximum was 0 (`-N 2-0`: no maximum), as in Slurm.
    pub nodes_max: Option<u32>,
    /// `--ntasks-per-node` (also spelled `--tasks-per-node`).
    pub ntasks_per_node: Option<u32>,
    /// `--mem`, in MiB.
    pub mem_mb: Option<u64>,
    /// `--mem-per-cpu`, in MiB. Exclusive with `--mem`: see [`validate`].
    pub mem_per_cpu_mb: Option<u64>,
    /// `-p/--partition`.
    pub partition: Option<String>,
    /// `-o/--output` (pattern, unexpanded).
    pub output: Option<String>,
    /// `-e/--error` (pattern, unexpanded).
    pub error: Option<String>,
    /// `-D/--chdir` (as typed; Slurm makes it absolute against the submit directory).
    pub chdir: Option<String>,
    /// `-a/--array`.
    pub array: Option<ArraySpec>,
    /// `-d/--dependency`.
    pub dependency: Option<Dependency>,
    /// `-H/--hold`.
    pub hold: bool,
    /// `--export`, raw; see [`parse_export`].
    pub export: Option<String>,
    /// `-G/--gpus=[TYPE:]N`: GPUs for the whole job.
    pub gpus: Option<u32>,
    /// The GPU type named by `--gpus`, `--gpus-per-node`, `--gpus-per-task` or `--gres`
    /// (the last one given).
    pub gpu_type: Option<String>,
    /// `--gpus-per-node=[TYPE:]N`, and `--gres=gpu[:TYPE][:N]` (GRES counts are per node).
    pub gpus_per_node: Option<u32>,
    /// `--gpus-per-task=[TYPE:]N`.
    pub gpus_per_task: Option<u32>,
    /// `--test-only`.
    pub test_only: bool,
    /// `-W/--wait`.
    pub wait: bool,
    /// `--parsable`.
    pub parsable: bool,
    /// `--wrap` (command line only, as in Slurm).
    pub wrap: Option<String>,
    /// `--comment`.
    pub comment: Option<String>,
    /// `--open-mode=append|truncate`.
    pub open_mode: Option<OpenMode>,
    /// `-b/--begin`, raw: the CLI resolves it against the clock.
    pub begin: Option<String>,
    /// `--requeue` (`Some(true)`) / `--no-requeue` (`Some(false)`).
    pub requeue: Option<bool>,
    /// `--nice[=N]`; a bare `--nice` is 100, as in Slurm.
    pub nice: Option<i32>,
    /// `-Q/--quiet` (command line only, as in Slurm).
    pub quiet: bool,
    /// `--container`.
    pub container: Option<String>,
    /// `--replicas=N|fixed:N|adaptive[:N,TRUSTED_AFTER,SPOT]` (a Chorus extension).
    pub replicas: Option<ReplicationSpec>,
    /// `--verify=exact|tolerance:REL[,ABS]` (a Chorus extension).
    pub verify: Option<VerifySpec>,
    /// `--output-files=GLOB[,GLOB...]`, every time it is given (a Chorus extension).
    pub output_files: Vec<String>,
    /// Options accepted and stored but not acted on yet (`--account`, `--qos`, `--mail-type`,
    /// `--constraint`, `--exclusive`, `--nodelist`, `--exclude`, ...), keyed by long name. An
    /// option given without a value maps to `""`; `-v` counts (`"2"` for `-vv`).
    pub other: BTreeMap<String, String>,
}

/// `--open-mode`: how the job's output files are opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OpenMode {
    Append,
    Truncate,
}

/// What `sbatch`'s command line says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandLine {
    pub options: SbatchOptions,
    /// The script path as typed; `None` = read stdin, or `--wrap`.
    pub script: Option<String>,
    /// Everything after the script path, verbatim.
    pub script_args: Vec<String>,
    /// `-h/--help` was reached. Slurm prints the help at that point and exits 0, so options after
    /// it are not parsed and `options` holds only those before it.
    pub help: bool,
    /// `--usage` was reached (same rule as `help`).
    pub usage: bool,
    /// `-V/--version` was reached (same rule as `help`).
    pub version: bool,
}

/// The `#SBATCH` options of a script and the complaints Slurm prints while reading them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScriptDirectives {
    pub options: SbatchOptions,
    /// Complete stderr lines that do not stop the submission
    /// (`sbatch: error: Change from #SLURM to #SBATCH ...`).
    pub warnings: Vec<String>,
}

/// `--export`, typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Export {
    /// `ALL` (also what sbatch does without `--export`).
    All,
    /// `NONE`: only `SLURM_*` variables.
    None,
    /// `[ALL,]VAR[=value],...`: `all` when an `ALL` item was present; a variable without a value
    /// is copied from the submitting environment. `SLURM_*` variables are always passed.
    List { all: bool, vars: Vec<(String, Option<String>)> },
}

/// Why sbatch refuses its input. [`SbatchError::slurm_message`] gives Slurm's exact stderr text
/// and [`SbatchError::exit_code`] its exit status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SbatchError {
    /// An option sbatch does not have, as typed: `--bogus-option` (observed: `sbatch:
    /// unrecognized option '--bogus-option'`, exit 255) or `-z` (glibc: `invalid option -- 'z'`).
    #[error("unrecognized option '{0}'")]
    UnrecognizedOption(String),
    /// An option whose required value is missing: `-t` (observed: `sbatch: option requires an
    /// argument -- 't'`, exit 255) or `--time` (glibc: `option '--time' requires an argument`).
    #[error("option '{0}' requires an argument")]
    MissingArgument(String),
    /// `--hold=yes`: a value given to an option that takes none (`--hold`, full name).
    #[error("option '{0}' doesn't allow an argument")]
    UnexpectedArgument(String),
    /// A long-option prefix matching several options: `--par` (`--parsable`, `--partition`).
    #[error("option '{option}' is ambiguous")]
    Ambiguous {
        /// As typed, with any `=value`.
        option: String,
        /// Long names without dashes, in Slurm's option-table order.
        candidates: Vec<String>,
    },
    /// A value the option's parser refused. `option` is the long name without dashes.
    #[error("invalid --{option} value: {source}")]
    InvalidValue { option: String, source: ParseError },
    /// A count option that is not a positive integer (`--ntasks=abc`, `-c 0`): Slurm's
    /// `Invalid numeric value "abc" for --ntasks.`, exit 1. `option` is spelled with dashes.
    #[error("invalid numeric value \"{value}\" for {option}")]
    InvalidNumber { option: String, value: String },
    /// `-N abc`: Slurm's `"abc" is not a valid node count`, exit 255.
    #[error("\"{0}\" is not a valid node count")]
    InvalidNodeCount(String),
    /// `-N 3-2`: `Maximum node count 2 is less than minimum node count 3`, exit 255.
    #[error("maximum node count {max} is less than minimum node count {min}")]
    NodeCountRange { min: i64, max: i64 },
    /// `-N 0` / `-N 0-2`. Slurm's parser lets it through and its controller refuses zero-node
    /// jobs (`Node count specification invalid`); Chorus refuses at parse time with that text.
    #[error("node count specification invalid")]
    ZeroNodes,
    /// A word in the `#SBATCH` lines that is not an option (`#SBATCH --nice 0` gives `0`).
    #[error("invalid directive found in batch script: {0}")]
    InvalidDirective(String),
    /// A directive with an unterminated quote. Slurm 22.05 prints
    /// ``sbatch: fatal: FILE: line N: Unmatched `"` in [REST]`` (exit 1), REST being the line
    /// from where the unfinished word's scan began.
    #[error("{file}: line {line}: unmatched `{quote}` in [{rest}]")]
    UnmatchedQuote { file: String, line: usize, quote: char, rest: String },
    /// A directive word starting with `:` (Slurm's heterogeneous-job syntax). Slurm 22.05 prints
    /// ``sbatch: fatal: FILE: line N: Unexpected `:` in [REST]`` (exit 1).
    #[error("{file}: line {line}: unexpected `:` in [{rest}]")]
    UnexpectedColon { file: String, line: usize, rest: String },
    /// A heterogeneous job (`:` on the command line, `#SBATCH hetjob`): not supported by Chorus.
    #[error("heterogeneous jobs are not supported")]
    HetJobUnsupported,
    /// `--wrap` together with a script or script arguments (Slurm 22.05, exit 1).
    #[error("script arguments not permitted with --wrap option")]
    WrapWithScriptArgs,
    /// The script file could not be read (observed: `Unable to open file nosuch.sh`, exit 1).
    #[error("unable to open file {0}")]
    UnableToOpen(String),
    /// Observed: `sbatch: error: Batch script is empty!`, exit 1.
    #[error("batch script is empty")]
    EmptyScript,
    /// Slurm 22.05: `Batch script contains only whitespace!`, exit 1.
    #[error("batch script contains only whitespace")]
    WhitespaceScript,
    /// Observed: the three-line "This does not look like a batch script" text, exit 1.
    #[error("the first line of the batch script must start with #!")]
    NotABatchScript,
    /// Slurm 22.05: the controller does not take scripts containing NUL, exit 1.
    #[error("batch script contains a NUL character")]
    NulInScript,
    /// Slurm 22.05: `Batch script contains DOS line breaks (\r\n)`, exit 1.
    #[error("batch script contains DOS line breaks")]
    DosLineBreaks,
    /// More than one of `--mem`, `--mem-per-cpu`, `--mem-per-gpu`, from the command line and
    /// the directives together (Slurm 22.05: a `fatal`, exit 1).
    #[error("--mem, --mem-per-cpu, and --mem-per-gpu are mutually exclusive")]
    MemOptionsExclusive,
    /// `-v` with `-Q` (Slurm 22.05, exit 1).
    #[error("don't specify both --verbose (-v) and --quiet (-Q)")]
    VerboseAndQuiet,
}

const TRY_HELP: &str = "Try \"sbatch --help\" for more information";

/// Slurm's bound on `--nice`: `NICE_OFFSET - 3`.
const NICE_LIMIT: i64 = 0x8000_0000 - 3;

impl SbatchError {
    /// The exit status sbatch gives for this error.
    pub fn exit_code(&self) -> i32 {
        use SbatchError::*;
        match self {
            // getopt errors, `error(); exit(-1)` in option setters, directive words.
            UnrecognizedOption(_)
            | MissingArgument(_)
            | UnexpectedArgument(_)
            | Ambiguous { .. }
            | InvalidNodeCount(_)
            | NodeCountRange { .. }
            | InvalidDirective(_) => 255,
            InvalidValue { option, .. } => invalid_value_text(option).1,
            // parse_int's exit(1), fatal(), error_exit, and the controller's refusals.
            InvalidNumber { .. }
            | ZeroNodes
            | UnmatchedQuote { .. }
            | UnexpectedColon { .. }
            | HetJobUnsupported
            | WrapWithScriptArgs
            | UnableToOpen(_)
            | EmptyScript
            | WhitespaceScript
            | NotABatchScript
            | NulInScript
            | DosLineBreaks
            | MemOptionsExclusive
            | VerboseAndQuiet => 1,
        }
    }

    /// The exact lines sbatch prints on stderr, joined by `\n`, without a final newline.
    pub fn slurm_message(&self) -> String {
        use SbatchError::*;
        match self {
            UnrecognizedOption(opt) => match short_name(opt) {
                Some(c) => format!("sbatch: invalid option -- '{c}'\n{TRY_HELP}"),
                None => format!("sbatch: unrecognized option '{opt}'\n{TRY_HELP}"),
            },
            MissingArgument(opt) => match short_name(opt) {
                Some(c) => format!("sbatch: option requires an argument -- '{c}'\n{TRY_HELP}"),
                None => format!("sbatch: option '{opt}' requires an argument\n{TRY_HELP}"),
            },
            UnexpectedArgument(opt) => {
                format!("sbatch: option '{opt}' doesn't allow an argument\n{TRY_HELP}")
            }
            Ambiguous { option, candidates } => {
                let mut s = format!("sbatch: option '{option}' is ambiguous; possibilities:");
                for c in candidates {
                    s.push_str(&format!(" '--{c}'"));
                }
                s.push('\n');
                s.push_str(TRY_HELP);
                s
            }
            InvalidValue { option, source } if is_extension(option) => {
                format!("sbatch: error: Invalid --{option} specification: {}", source.why)
            }
            InvalidValue { option, .. } => invalid_value_text(option).0,
            InvalidNumber { option, value } => {
                format!("sbatch: error: Invalid numeric value \"{value}\" for {option}.")
            }
            InvalidNodeCount(v) => format!("sbatch: error: \"{v}\" is not a valid node count"),
            NodeCountRange { min, max } => format!(
                "sbatch: error: Maximum node count {max} is less than minimum node count {min}"
            ),
            ZeroNodes => {
                "sbatch: error: Batch job submission failed: Node count specification invalid"
                    .to_owned()
            }
            InvalidDirective(word) => {
                format!("sbatch: error: Invalid directive found in batch script: {word}")
            }
            UnmatchedQuote { file, line, quote, rest } => {
                format!("sbatch: fatal: {file}: line {line}: Unmatched `{quote}` in [{rest}]")
            }
            UnexpectedColon { file, line, rest } => {
                format!("sbatch: fatal: {file}: line {line}: Unexpected `:` in [{rest}]")
            }
            HetJobUnsupported => {
                "sbatch: error: Heterogeneous jobs are not supported by Chorus".to_owned()
            }
            WrapWithScriptArgs => {
                "sbatch: error: Script arguments not permitted with --wrap option".to_owned()
            }
            UnableToOpen(path) => format!("sbatch: error: Unable to open file {path}"),
            EmptyScript => "sbatch: error: Batch script is empty!".to_owned(),
            WhitespaceScript => "sbatch: error: Batch script contains only whitespace!".to_owned(),
            NotABatchScript => {
                "sbatch: error: This does not look like a batch script.  The first\n\
                 sbatch: error: line must start with #! followed by the path to an interpreter.\n\
                 sbatch: error: For instance: #!/bin/sh"
                    .to_owned()
            }
            NulInScript => "sbatch: error: The Slurm controller does not allow scripts that\n\
                 sbatch: error: contain a NULL character '\\0'."
                .to_owned(),
            DosLineBreaks => "sbatch: error: Batch script contains DOS line breaks (\\r\\n)\n\
                 sbatch: error: instead of expected UNIX line breaks (\\n)."
                .to_owned(),
            MemOptionsExclusive => {
                "sbatch: fatal: --mem, --mem-per-cpu, and --mem-per-gpu are mutually exclusive."
                    .to_owned()
            }
            VerboseAndQuiet => {
                "sbatch: error: don't specify both --verbose (-v) and --quiet (-Q)".to_owned()
            }
        }
    }
}

/// `-t` -> `Some('t')`; `--time` -> `None`.
fn short_name(opt: &str) -> Option<char> {
    if opt.starts_with("--") {
        return None;
    }
    let mut chars = opt.strip_prefix('-')?.chars();
    let c = chars.next()?;
    chars.next().is_none().then_some(c)
}

/// Text and exit code for a refused option value, by long option name.
fn invalid_value_text(option: &str) -> (String, i32) {
    const FAILED: &str = "sbatch: error: Batch job submission failed:";
    match option {
        // Observed: `--array=5-1` and `--dependency=whenever:1` pass sbatch's own parser and are
        // refused by the controller, exit 1.
        "array" => (format!("{FAILED} Invalid job array specification"), 1),
        "dependency" => (format!("{FAILED} Job dependency problem"), 1),
        // Not observed: Slurm passes GPU requests through as text and its controller refuses bad
        // ones with ESLURM_INVALID_GRES.
        "gpus" | "gpus-per-node" | "gpus-per-task" | "gres" => {
            (format!("{FAILED} Invalid generic resource (gres) specification"), 1)
        }
        "nice" => {
            (format!("sbatch: error: Invalid --nice value, out of range (+/- {NICE_LIMIT})"), 255)
        }
        // Observed for --time and --mem; Slurm uses the same form for the others.
        _ => (format!("sbatch: error: Invalid --{option} specification"), 255),
    }
}

// ---------------------------------------------------------------------------------------------
// The option table.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HasArg {
    No,
    Req,
    Opt,
}
use HasArg::{No, Opt, Req};

#[derive(Debug)]
struct OptSpec {
    /// Long name.
    name: &'static str,
    short: Option<char>,
    has_arg: HasArg,
    /// What it sets: the long name, except for aliases.
    key: &'static str,
}

const fn o(name: &'static str, short: Option<char>, has_arg: HasArg) -> OptSpec {
    OptSpec { name, short, has_arg, key: name }
}

/// sbatch's options in Slurm 22.05, in the order of Slurm's option table (which is the order
/// getopt lists ambiguous possibilities in).
static OPTIONS: &[OptSpec] = &[
    o("account", Some('A'), Req),
    o("acctg-freq", None, Req),
    o("array", Some('a'), Req),
    o("batch", None, Req),
    o("begin", Some('b'), Req),
    o("bb", None, Req),
    o("bbf", None, Req),
    o("cluster-constraint", None, Req),
    o("chdir", Some('D'), Req),
    o("cluster", None, Req),
    o("clusters", Some('M'), Req),
    o("comment", None, Req),
    o("container", None, Req),
    o("context", None, Req),
    o("contiguous", None, No),
    o("constraint", Some('C'), Req),
    o("core-spec", Some('S'), Req),
    o("cores-per-socket", None, Req),
    o("cpu-freq", None, Req),
    o("cpus-per-gpu", None, Req),
    o("cpus-per-task", Some('c'), Req),
    o("deadline", None, Req),
    o("delay-boot", None, Req),
    o("dependency", Some('d'), Req),
    o("distribution", Some('m'), Req),
    o("error", Some('e'), Req),
    o("exclude", Some('x'), Req),
    o("exclusive", None, Opt),
    o("export", None, Req),
    o("export-file", None, Req),
    o("extra-node-info", Some('B'), Req),
    o("get-user-env", None, Opt),
    o("gid", None, Req),
    o("gpu-bind", None, Req),
    o("gpu-freq", None, Req),
    o("gpus", Some('G'), Req),
    o("gpus-per-node", None, Req),
    o("gpus-per-socket", None, Req),
    o("gpus-per-task", None, Req),
    o("gres", None, Req),
    o("gres-flags", None, Req),
    o("help", Some('h'), No),
    o("hint", None, Req),
    o("hold", Some('H'), No),
    o("ignore-pbs", None, No),
    o("input", Some('i'), Req),
    o("job-name", Some('J'), Req),
    o("kill-on-invalid-dep", None, Req),
    o("licenses", Some('L'), Req),
    o("mail-type", None, Req),
    o("mail-user", None, Req),
    o("mcs-label", None, Req),
    o("mem", None, Req),
    o("mem-bind", None, Req),
    o("mem-per-cpu", None, Req),
    o("mem-per-gpu", None, Req),
    o("mincpus", None, Req),
    o("network", None, Req),
    o("nice", None, Opt),
    o("no-kill", Some('k'), Opt),
    o("no-requeue", None, No),
    o("nodefile", Some('F'), Req),
    o("nodelist", Some('w'), Req),
    o("nodes", Some('N'), Req),
    o("ntasks", Some('n'), Req),
    o("ntasks-per-core", None, Req),
    o("ntasks-per-gpu", None, Req),
    o("ntasks-per-node", None, Req),
    o("ntasks-per-socket", None, Req),
    o("ntasks-per-tres", None, Req),
    o("open-mode", None, Req),
    o("output", Some('o'), Req),
    o("overcommit", Some('O'), No),
    o("oversubscribe", Some('s'), No),
    o("parsable", None, No),
    o("partition", Some('p'), Req),
    o("power", None, Req),
    o("prefer", None, Req),
    o("priority", None, Req),
    o("profile", None, Req),
    o("propagate", None, Opt),
    o("qos", Some('q'), Req),
    o("quiet", Some('Q'), No),
    o("reboot", None, No),
    o("requeue", None, No),
    o("reservation", None, Req),
    o("signal", None, Req),
    o("sockets-per-node", None, Req),
    o("spread-job", None, No),
    o("switches", None, Req),
    OptSpec { name: "tasks-per-node", short: None, has_arg: Req, key: "ntasks-per-node" },
    o("test-only", None, No),
    o("thread-spec", None, Req),
    o("threads-per-core", None, Req),
    o("time", Some('t'), Req),
    o("time-min", None, Req),
    o("tmp", None, Req),
    o("uid", None, Req),
    o("use-min-nodes", None, No),
    o("verbose", Some('v'), No),
    o("version", Some('V'), No),
    o("usage", None, No),
    o("wait", Some('W'), No),
    o("wait-all-nodes", None, Req),
    o("wckey", None, Req),
    o("wrap", None, Req),
];

/// Chorus's own options (docs/trust-model.md). They match only when spelled out in full, so
/// every abbreviation of a Slurm option still means what it means to Slurm (`--out` is
/// `--output`, not ambiguous with `--output-files`).
static EXTENSIONS: &[OptSpec] =
    &[o("output-files", None, Req), o("replicas", None, Req), o("verify", None, Req)];

fn is_extension(option: &str) -> bool {
    EXTENSIONS.iter().any(|s| s.name == option)
}

/// Options sbatch handles in its first pass over the command line only; in directives they are
/// accepted and ignored.
const EARLY_PASS: &[&str] = &["help", "quiet", "usage", "verbose", "version", "wrap"];

/// Count options Slurm reads with `parse_int(name, arg, positive = true)`.
const POSITIVE_INT_OPTIONS: &[&str] = &[
    "cores-per-socket",
    "cpus-per-gpu",
    "mincpus",
    "ntasks-per-core",
    "ntasks-per-gpu",
    "ntasks-per-socket",
    "ntasks-per-tres",
    "sockets-per-node",
    "thread-spec",
    "threads-per-core",
];

// ---------------------------------------------------------------------------------------------
// The getopt engine.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    CommandLine,
    Directives,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Help,
    Usage,
    Version,
}

/// Finds a long option by exact name or unambiguous prefix, as glibc does: an exact match wins;
/// several prefix matches are ambiguous unless they all mean the same option.
fn match_long(body: &str) -> Result<(&'static OptSpec, Option<&str>), SbatchError> {
    let (name, attached) = match body.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (body, None),
    };
    if let Some(spec) = OPTIONS.iter().chain(EXTENSIONS).find(|s| s.name == name) {
        return Ok((spec, attached));
    }
    let mut found = OPTIONS.iter().filter(|s| s.name.starts_with(name));
    let Some(first) = found.next() else {
        return Err(SbatchError::UnrecognizedOption(format!("--{body}")));
    };
    let differing: Vec<&OptSpec> =
        found.filter(|s| s.has_arg != first.has_arg || s.key != first.key).collect();
    if differing.is_empty() {
        return Ok((first, attached));
    }
    let candidates =
        std::iter::once(first).chain(differing).map(|s| s.name.to_owned()).collect::<Vec<_>>();
    Err(SbatchError::Ambiguous { option: format!("--{body}"), candidates })
}

/// Runs getopt over `args` (no argv\[0\]), applying each option to `opts`. Returns the index of
/// the first argument that is not an option (past a `--`), or where `--help` & co. stopped it.
fn getopt(
    args: &[String],
    opts: &mut SbatchOptions,
    pass: Pass,
) -> Result<(usize, Option<Stop>), SbatchError> {
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        if arg == "--" {
            return Ok((i + 1, None));
        }
        if pass == Pass::CommandLine && arg == ":" {
            // Slurm's heterogeneous-job separator.
            return Err(SbatchError::HetJobUnsupported);
        }
        if let Some(body) = arg.strip_prefix("--") {
            i += 1;
            let (spec, attached) = match_long(body)?;
            let value = match spec.has_arg {
                No if attached.is_some() => {
                    return Err(SbatchError::UnexpectedArgument(format!("--{}", spec.name)));
                }
                No => None,
                Opt => attached,
                Req => match attached {
                    Some(v) => Some(v),
                    None if i < args.len() => {
                        i += 1;
                        Some(args[i - 1].as_str())
                    }
                    None => {
                        return Err(SbatchError::MissingArgument(format!("--{}", spec.name)));
                    }
                },
            };
            if let Some(stop) = apply(opts, spec, value, pass)? {
                return Ok((i, Some(stop)));
            }
        } else if arg.len() > 1 && arg.starts_with('-') {
            i += 1;
            let mut rest = &arg[1..];
            while let Some(c) = rest.chars().next() {
                rest = &rest[c.len_utf8()..];
                let Some(spec) = OPTIONS.iter().find(|s| s.short == Some(c)) else {
                    return Err(SbatchError::UnrecognizedOption(format!("-{c}")));
                };
                // A value is the rest of the cluster, else (required only) the next argument.
                let value = match spec.has_arg {
                    No => None,
                    Opt | Req if !rest.is_empty() => Some(std::mem::take(&mut rest)),
                    Opt => None,
                    Req if i < args.len() => {
                        i += 1;
                        Some(args[i - 1].as_str())
                    }
                    Req => return Err(SbatchError::MissingArgument(format!("-{c}"))),
                };
                if let Some(stop) = apply(opts, spec, value, pass)? {
                    return Ok((i, Some(stop)));
                }
            }
        } else {
            return Ok((i, None));
        }
    }
    Ok((i, None))
}

fn invalid(option: &str, source: ParseError) -> SbatchError {
    SbatchError::InvalidValue { option: option.to_owned(), source }
}

/// Applies one option. `value` is `Some` for every option with a required argument.
fn apply(
    opts: &mut SbatchOptions,
    spec: &OptSpec,
    value: Option<&str>,
    pass: Pass,
) -> Result<Option<Stop>, SbatchError> {
    let key = spec.key;
    if pass == Pass::Directives && EARLY_PASS.contains(&key) {
        return Ok(None);
    }
    let v = value.unwrap_or("");
    let text = || Some(v.to_owned());
    match key {
        "help" => return Ok(Some(Stop::Help)),
        "usage" => return Ok(Some(Stop::Usage)),
        "version" => return Ok(Some(Stop::Version)),
        "job-name" => opts.job_name = text(),
        "time" => opts.time = Some(parse_time_limit(v).map_err(|e| invalid(key, e))?),
        "ntasks" => opts.ntasks = Some(parse_positive_int("--ntasks", v)?),
        "cpus-per-task" => opts.cpus_per_task = Some(parse_positive_int("--cpus-per-task", v)?),
        "ntasks-per-node" => {
            opts.ntasks_per_node = Some(parse_positive_int("--ntasks-per-node", v)?);
        }
        "nodes" => {
            let (min, max) = parse_node_count(v)?;
            opts.nodes = Some(min);
            opts.nodes_max = max;
        }
        "mem" => opts.mem_mb = Some(parse_mem_mb(v).map_err(|e| invalid(key, e))?),
        "mem-per-cpu" => opts.mem_per_cpu_mb = Some(parse_mem_mb(v).map_err(|e| invalid(key, e))?),
        "partition" => opts.partition = text(),
        "output" => opts.output = text(),
        "error" => opts.error = text(),
        "chdir" => opts.chdir = text(),
        "array" => opts.array = Some(parse_array_spec(v).map_err(|e| invalid(key, e))?),
        "dependency" => opts.dependency = Some(parse_dependency(v).map_err(|e| invalid(key, e))?),
        "hold" => opts.hold = true,
        "export" => opts.export = text(),
        "gpus" | "gpus-per-node" | "gpus-per-task" => {
            let (gpu_type, n) = parse_typed_count(v).map_err(|e| invalid(key, e))?;
            match key {
                "gpus" => opts.gpus = Some(n),
                "gpus-per-node" => opts.gpus_per_node = Some(n),
                _ => opts.gpus_per_task = Some(n),
            }
            if gpu_type.is_some() {
                opts.gpu_type = gpu_type;
            }
        }
        "gres" => {
            let gres = parse_gres(v).map_err(|e| invalid(key, e))?;
            if let Some((gpu_type, n)) = gres.gpu {
                opts.gpus_per_node = Some(n);
                if gpu_type.is_some() {
                    opts.gpu_type = gpu_type;
                }
            }
            if gres.other.is_empty() {
                opts.other.remove(key);
            } else {
                opts.other.insert(key.to_owned(), gres.other.join(","));
            }
        }
        "test-only" => opts.test_only = true,
        "wait" => opts.wait = true,
        "parsable" => opts.parsable = true,
        "wrap" => opts.wrap = text(),
        "comment" => opts.comment = text(),
        "open-mode" => opts.open_mode = Some(parse_open_mode(v).map_err(|e| invalid(key, e))?),
        "begin" => opts.begin = text(),
        "requeue" => opts.requeue = Some(true),
        "no-requeue" => opts.requeue = Some(false),
        "nice" => opts.nice = Some(parse_nice(value).map_err(|e| invalid(key, e))?),
        "quiet" => opts.quiet = true,
        "container" => opts.container = text(),
        "replicas" => opts.replicas = Some(parse_replicas(v).map_err(|e| invalid(key, e))?),
        "verify" => opts.verify = Some(v.parse().map_err(|e| invalid(key, e))?),
        "output-files" => {
            opts.output_files.extend(parse_output_files(v).map_err(|e| invalid(key, e))?);
        }
        "verbose" => {
            let n = opts.other.get(key).and_then(|n| n.parse::<u32>().ok()).unwrap_or(0);
            opts.other.insert(key.to_owned(), n.saturating_add(1).to_string());
        }
        _ => {
            check_other(key, value)?;
            opts.other.insert(key.to_owned(), v.to_owned());
        }
    }
    Ok(None)
}

/// The checks Slurm makes, at parse time, on options Chorus stores untyped.
fn check_other(key: &str, value: Option<&str>) -> Result<(), SbatchError> {
    let v = value.unwrap_or("");
    let one_of = |choices: &[&str]| {
        if choices.iter().any(|c| c.eq_ignore_ascii_case(v)) {
            Ok(())
        } else {
            let why = format!("expected one of {}", choices.join(", "));
            Err(invalid(key, ParseError::new("option value", v, why)))
        }
    };
    match key {
        "exclusive" if value.is_some() => one_of(&["exclusive", "oversubscribe", "user", "mcs"]),
        "no-kill" if value.is_some() => one_of(&["set", "off", "no"]),
        "kill-on-invalid-dep" => one_of(&["yes", "no"]),
        "mail-type" => {
            const TYPES: &[&str] = &[
                "NONE",
                "ARRAY_TASKS",
                "BEGIN",
                "END",
                "FAIL",
                "INVALID_DEPEND",
                "REQUEUE",
                "ALL",
                "STAGE_OUT",
                "TIME_LIMIT",
                "TIME_LIMIT_90",
                "TIME_LIMIT_80",
                "TIME_LIMIT_50",
            ];
            // Slurm ignores unknown words as long as one is known.
            if v.split(',').any(|t| TYPES.iter().any(|k| k.eq_ignore_ascii_case(t))) {
                Ok(())
            } else {
                Err(invalid(key, ParseError::new("mail type", v, "no known mail type")))
            }
        }
        "time-min" => parse_time_limit(v).map(|_| ()).map_err(|e| invalid(key, e)),
        "mem-per-gpu" => parse_mem_mb(v).map(|_| ()).map_err(|e| invalid(key, e)),
        "core-spec" => parse_int("--core-spec", v, false).map(|_| ()),
        "wait-all-nodes" => match parse_int("--wait-all-nodes", v, false)? {
            0 | 1 => Ok(()),
            _ => Err(invalid(key, ParseError::new("option value", v, "expected 0 or 1"))),
        },
        _ if POSITIVE_INT_OPTIONS.contains(&key) => {
            parse_int(&format!("--{key}"), v, true).map(|_| ())
        }
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Value parsers.

/// C's `isspace` in the C locale.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// C's `strtol(s, &end, 10)`: the value (saturated) if any digits were read, and the rest.
/// Without digits the rest is the whole input, as `strtol` leaves `end` at the start.
fn strtol(s: &str) -> (Option<i64>, &str) {
    let t = s.trim_start_matches(is_c_space);
    let (negative, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return (None, s);
    }
    let magnitude = t[..digits]
        .bytes()
        .fold(0i64, |n, d| n.saturating_mul(10).saturating_add(i64::from(d - b'0')));
    (Some(if negative { -magnitude } else { magnitude }), &t[digits..])
}

/// Slurm's `parse_int`: a whole decimal integer, `> 0` when `positive`, else `>= 0`.
/// Chorus also refuses values beyond `i32::MAX`, which Slurm would silently truncate.
fn parse_int(option: &str, v: &str, positive: bool) -> Result<u32, SbatchError> {
    let bad = || SbatchError::InvalidNumber { option: option.to_owned(), value: v.to_owned() };
    match strtol(v) {
        (Some(n), "") if n >= i64::from(positive) && n <= i64::from(i32::MAX) => {
            u32::try_from(n).map_err(|_| bad())
        }
        // strtol of "" reads 0, refused when positive, accepted otherwise.
        (None, "") if !positive => Ok(0),
        _ => Err(bad()),
    }
}

fn parse_positive_int(option: &str, v: &str) -> Result<u32, SbatchError> {
    parse_int(option, v, true)
}

/// A node count as Slurm reads it: digits with an optional `k` (×1024) then `m` (×1048576)
/// suffix; -1 when there are no digits. Returns the count and what is left.
fn str_to_nodes(s: &str) -> (i64, &str) {
    match strtol(s) {
        (None, _) => (-1, s),
        (Some(mut n), mut rest) => {
            if let Some(r) = rest.strip_prefix(['k', 'K']) {
                n = n.saturating_mul(1024);
                rest = r;
            }
            if let Some(r) = rest.strip_prefix(['m', 'M']) {
                n = n.saturating_mul(1024 * 1024);
                rest = r;
            }
            (n, rest)
        }
    }
}

/// `-N`: `N` (exactly N), `MIN-MAX`, `MIN-` ... following Slurm's `verify_node_count`; then
/// Chorus refuses a zero minimum (see [`SbatchError::ZeroNodes`]).
fn parse_node_count(v: &str) -> Result<(u32, Option<u32>), SbatchError> {
    let blank = |s: &str| s.chars().all(is_c_space);
    let (min, max) = if let Some((min_s, max_s)) = v.split_once('-') {
        let (min, left) = str_to_nodes(min_s);
        if !blank(left) {
            return Err(SbatchError::InvalidNodeCount(min_s.to_owned()));
        }
        let (max, left) = str_to_nodes(max_s);
        if !blank(left) {
            return Err(SbatchError::InvalidNodeCount(max_s.to_owned()));
        }
        (if min < 0 { 1 } else { min }, max)
    } else {
        let (n, left) = str_to_nodes(v);
        if !blank(left) || n < 0 {
            return Err(SbatchError::InvalidNodeCount(v.to_owned()));
        }
        (n, n)
    };
    if max != 0 && max < min {
        return Err(SbatchError::NodeCountRange { min, max });
    }
    if min == 0 {
        return Err(SbatchError::ZeroNodes);
    }
    let to_u32 = |n: i64| {
        u32::try_from(n)
            .ok()
            .filter(|n| i32::try_from(*n).is_ok())
            .ok_or_else(|| SbatchError::InvalidNodeCount(v.to_owned()))
    };
    Ok((to_u32(min)?, if max == 0 { None } else { Some(to_u32(max)?) }))
}

/// `--nice[=N]`: like Slurm's `strtoll(arg, NULL, 10)`, so trailing text is ignored and no
/// digits read as 0; a bare `--nice` is 100; the magnitude is bounded by `NICE_OFFSET - 3`.
fn parse_nice(value: Option<&str>) -> Result<i32, ParseError> {
    let Some(v) = value else {
        return Ok(100);
    };
    let n = strtol(v).0.unwrap_or(0);
    if n.abs() > NICE_LIMIT {
        return Err(ParseError::new("nice value", v, format!("out of range (+/- {NICE_LIMIT})")));
    }
    i32::try_from(n).map_err(|_| ParseError::new("nice value", v, "out of range"))
}

/// `--open-mode`: Slurm looks only at the first letter (`a`/`t`, any case).
fn parse_open_mode(v: &str) -> Result<OpenMode, ParseError> {
    match v.as_bytes().first() {
        Some(b'a' | b'A') => Ok(OpenMode::Append),
        Some(b't' | b'T') => Ok(OpenMode::Truncate),
        _ => Err(ParseError::new("open mode", v, "expected append or truncate")),
    }
}

/// A GPU count: decimal digits only.
fn gpu_count(whole: &str, n: &str) -> Result<u32, ParseError> {
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::new("GPU count", whole, "expected a number of GPUs"));
    }
    n.parse().map_err(|_| ParseError::new("GPU count", whole, "too large"))
}

/// `--gpus`, `--gpus-per-node`, `--gpus-per-task`: `N` or `TYPE:N`.
fn parse_typed_count(v: &str) -> Result<(Option<String>, u32), ParseError> {
    match v.split_once(':') {
        None => Ok((None, gpu_count(v, v)?)),
        Some((t, n)) if !t.is_empty() && !n.contains(':') => {
            Ok((Some(t.to_owned()), gpu_count(v, n)?))
        }
        Some(_) => Err(ParseError::new("GPU specification", v, "expected [TYPE:]COUNT")),
    }
}

#[derive(Debug, Default)]
struct Gres {
    gpu: Option<(Option<String>, u32)>,
    other: Vec<String>,
}

/// `--gres=NAME[:TYPE][:COUNT],...`: the `gpu` item is typed, the others are kept as text.
fn parse_gres(v: &str) -> Result<Gres, ParseError> {
    let mut gres = Gres::default();
    for item in v.split(',') {
        let mut parts = item.split(':');
        let name = parts.next().unwrap_or("");
        if name.is_empty() {
            return Err(ParseError::new("GRES specification", v, "empty GRES name"));
        }
        if name != "gpu" {
            gres.other.push(item.to_owned());
            continue;
        }
        if gres.gpu.is_some() {
            return Err(ParseError::new("GRES specification", v, "more than one gpu item"));
        }
        let rest: Vec<&str> = parts.collect();
        let gpu = match rest.as_slice() {
            [] => (None, 1),
            [n] if n.bytes().all(|b| b.is_ascii_digit()) => (None, gpu_count(v, n)?),
            [t] => (Some((*t).to_owned()), 1),
            [t, n] if !t.is_empty() => (Some((*t).to_owned()), gpu_count(v, n)?),
            _ => return Err(ParseError::new("GRES specification", v, "expected gpu[:TYPE][:N]")),
        };
        gres.gpu = Some(gpu);
    }
    Ok(gres)
}

/// Splits `--export`'s list the way Slurm does: on commas outside quotes; an item wholly inside
/// matching quotes loses them; an item with an unbalanced quote is refused.
pub fn parse_export(s: &str) -> Result<Export, ParseError> {
    if s.eq_ignore_ascii_case("ALL") {
        return Ok(Export::All);
    }
    if s.eq_ignore_ascii_case("NONE") {
        return Ok(Export::None);
    }
    let mut items = Vec::new();
    let (mut single, mut double, mut start) = (false, false, 0);
    for (i, c) in s.char_indices() {
        match c {
            '\'' => single = !single,
            '"' => double = !double,
            ',' if !single && !double => {
                items.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if single || double {
        return Err(ParseError::new("--export list", s, "improperly formed environment variable"));
    }
    items.push(&s[start..]);

    let (mut all, mut vars) = (false, Vec::new());
    for item in items {
        let item = match item.as_bytes() {
            [q @ (b'\'' | b'"'), .., e] if q == e => &item[1..item.len() - 1],
            _ => item,
        };
        if item.is_empty() {
            continue;
        }
        if item.eq_ignore_ascii_case("ALL") {
            all = true;
        } else if let Some((name, value)) = item.split_once('=') {
            vars.push((name.to_owned(), Some(value.to_owned())));
        } else {
            vars.push((item.to_owned(), None));
        }
    }
    Ok(Export::List { all, vars })
}

// ---------------------------------------------------------------------------------------------
// Entry points.

/// Parses sbatch's argv (without argv\[0\]).
pub fn parse_command_line(args: &[String]) -> Result<CommandLine, SbatchError> {
    let mut options = SbatchOptions::default();
    let (optind, stop) = getopt(args, &mut options, Pass::CommandLine)?;
    let mut cl = CommandLine { options, ..CommandLine::default() };
    match stop {
        Some(Stop::Help) => cl.help = true,
        Some(Stop::Usage) => cl.usage = true,
        Some(Stop::Version) => cl.version = true,
        None => {
            let rest = &args[optind..];
            if cl.options.wrap.is_some() && !rest.is_empty() {
                return Err(SbatchError::WrapWithScriptArgs);
            }
            if let Some((script, script_args)) = rest.split_first() {
                cl.script = Some(script.clone());
                cl.script_args = script_args.to_vec();
            }
        }
    }
    Ok(cl)
}

/// Options from the `#SBATCH` lines of a script; see the module docs for the rules. Errors that
/// name the file (unmatched quotes) call it `stdin`; use [`parse_script_directives`] to name it.
pub fn parse_directives(script: &str) -> Result<SbatchOptions, SbatchError> {
    parse_script_directives("stdin", script).map(|d| d.options)
}

/// [`parse_directives`], naming the script (`file`: its base name, as Slurm prints it) and
/// returning the non-fatal complaints as well.
pub fn parse_script_directives(file: &str, script: &str) -> Result<ScriptDirectives, SbatchError> {
    let mut warnings = Vec::new();
    let mut words = Vec::new();
    for (index, line) in script.split('\n').enumerate() {
        let rest = if let Some(rest) = line.strip_prefix("#SBATCH") {
            rest
        } else if let Some(rest) = line.strip_prefix("#SLURM") {
            if warnings.is_empty() {
                warnings.push(
                    "sbatch: error: Change from #SLURM to #SBATCH in your script and verify the \
                     options are valid in sbatch"
                        .to_owned(),
                );
            }
            rest
        } else {
            match line.trim_start_matches(is_c_space).chars().next() {
                None | Some('#') => continue,
                Some(_) => break,
            }
        };
        let rest = rest.trim_start_matches(is_c_space);
        if is_hetjob_word(rest) {
            return Err(SbatchError::HetJobUnsupported);
        }
        split_directive(file, index + 1, rest, &mut words)?;
    }
    let mut options = SbatchOptions::default();
    let (optind, _) = getopt(&words, &mut options, Pass::Directives)?;
    if let Some(word) = words.get(optind) {
        return Err(SbatchError::InvalidDirective(word.clone()));
    }
    Ok(ScriptDirectives { options, warnings })
}

/// `hetjob` / `packjob` (any case) followed by whitespace or the end: Slurm's separator between
/// the components of a heterogeneous job.
fn is_hetjob_word(s: &str) -> bool {
    ["hetjob", "packjob"].iter().any(|w| {
        s.get(..w.len()).is_some_and(|head| head.eq_ignore_ascii_case(w))
            && s[w.len()..].chars().next().is_none_or(is_c_space)
    })
}

/// Splits the text after `#SBATCH` into words (Slurm's `get_argument`, repeated). A word that
/// comes out empty (`""`, or a comment) ends the line.
fn split_directive(
    file: &str,
    line: usize,
    text: &str,
    words: &mut Vec<String>,
) -> Result<(), SbatchError> {
    let mut pos = 0;
    loop {
        let start = pos;
        let rest = &text[pos..];
        let skipped = rest.len() - rest.trim_start_matches(is_c_space).len();
        pos += skipped;
        if is_hetjob_word(&text[pos..]) {
            // Slurm blanks the separator, which ends the line.
            return Ok(());
        }
        if text[pos..].starts_with(':') {
            let rest = text[start..].to_owned();
            return Err(SbatchError::UnexpectedColon { file: file.to_owned(), line, rest });
        }
        let mut word: Option<String> = None;
        let mut quote: Option<char> = None;
        let mut escaped = false;
        while let Some(c) = text[pos..].chars().next() {
            if quote.is_none() && is_c_space(c) {
                break;
            }
            pos += c.len_utf8();
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
                continue;
            } else if let Some(q) = quote {
                if c == q {
                    quote = None;
                    continue;
                }
            } else if c == '"' || c == '\'' {
                quote = Some(c);
                continue;
            } else if c == '#' {
                pos -= 1;
                break;
            }
            word.get_or_insert_with(String::new).push(c);
        }
        if let Some(q) = quote {
            let rest = text[start..].to_owned();
            return Err(SbatchError::UnmatchedQuote {
                file: file.to_owned(),
                line,
                quote: q,
                rest,
            });
        }
        match word {
            Some(w) => words.push(w),
            None => return Ok(()),
        }
    }
}

/// Command line wins over directives, field by field (and `other` key by key). Flags set in
/// either place stay set: sbatch has no option to clear them. `-N`'s minimum and maximum move
/// together.
pub fn merge(command_line: SbatchOptions, directives: SbatchOptions) -> SbatchOptions {
    let c = command_line;
    let d = directives;
    let (nodes, nodes_max) =
        if c.nodes.is_some() { (c.nodes, c.nodes_max) } else { (d.nodes, d.nodes_max) };
    let mut other = d.other;
    other.extend(c.other);
    SbatchOptions {
        job_name: c.job_name.or(d.job_name),
        time: c.time.or(d.time),
        ntasks: c.ntasks.or(d.ntasks),
        cpus_per_task: c.cpus_per_task.or(d.cpus_per_task),
        nodes,
        nodes_max,
        ntasks_per_node: c.ntasks_per_node.or(d.ntasks_per_node),
        mem_mb: c.mem_mb.or(d.mem_mb),
        mem_per_cpu_mb: c.mem_per_cpu_mb.or(d.mem_per_cpu_mb),
        partition: c.partition.or(d.partition),
        output: c.output.or(d.output),
        error: c.error.or(d.error),
        chdir: c.chdir.or(d.chdir),
        array: c.array.or(d.array),
        dependency: c.dependency.or(d.dependency),
        hold: c.hold || d.hold,
        export: c.export.or(d.export),
        gpus: c.gpus.or(d.gpus),
        gpu_type: c.gpu_type.or(d.gpu_type),
        gpus_per_node: c.gpus_per_node.or(d.gpus_per_node),
        gpus_per_task: c.gpus_per_task.or(d.gpus_per_task),
        test_only: c.test_only || d.test_only,
        wait: c.wait || d.wait,
        parsable: c.parsable || d.parsable,
        wrap: c.wrap.or(d.wrap),
        comment: c.comment.or(d.comment),
        open_mode: c.open_mode.or(d.open_mode),
        begin: c.begin.or(d.begin),
        requeue: c.requeue.or(d.requeue),
        nice: c.nice.or(d.nice),
        quiet: c.quiet || d.quiet,
        container: c.container.or(d.container),
        replicas: c.replicas.or(d.replicas),
        verify: c.verify.or(d.verify),
        output_files: if c.output_files.is_empty() { d.output_files } else { c.output_files },
        other,
    }
}

/// `--replicas`: a count (`2`, the same as `fixed:2`) or a replication policy.
pub fn parse_replicas(v: &str) -> Result<ReplicationSpec, ParseError> {
    let spec = if v.bytes().all(|b| b.is_ascii_digit()) && !v.is_empty() {
        format!("fixed:{v}")
    } else {
        v.to_owned()
    };
    spec.parse().map_err(|why: String| {
        let why = why.split_once(": ").map_or(why.as_str(), |(_, w)| w).to_owned();
        ParseError::new("replication", v, why)
    })
}

/// `--output-files`: comma-separated globs, each relative to the working directory and
/// staying inside it (no `..`), so a node can only be asked for files of the job's own.
pub fn parse_output_files(v: &str) -> Result<Vec<String>, ParseError> {
    let bad = |why: &str| ParseError::new("output files", v, why);
    let globs: Vec<String> = v.split(',').map(str::trim).map(String::from).collect();
    for g in &globs {
        if g.is_empty() {
            return Err(bad("an empty pattern"));
        }
        if g.starts_with('/') {
            return Err(bad("patterns are relative to the job's working directory"));
        }
        if g.split('/').any(|part| part == "..") {
            return Err(bad("patterns may not leave the working directory (`..`)"));
        }
    }
    Ok(globs)
}

/// The checks sbatch makes on the merged options before submitting.
pub fn validate(options: &SbatchOptions) -> Result<(), SbatchError> {
    let mem_options = [
        options.mem_mb.is_some(),
        options.mem_per_cpu_mb.is_some(),
        options.other.contains_key("mem-per-gpu"),
    ];
    if mem_options.iter().filter(|set| **set).count() > 1 {
        return Err(SbatchError::MemOptionsExclusive);
    }
    if options.quiet && options.other.contains_key("verbose") {
        return Err(SbatchError::VerboseAndQuiet);
    }
    Ok(())
}

/// Whether the script's first line starts with `#!`, as sbatch requires.
pub fn looks_like_batch_script(text: &str) -> bool {
    text.starts_with("#!")
}

/// sbatch's checks on the script it read, in its order: empty, only whitespace, no `#!`,
/// a NUL byte, DOS line breaks.
pub fn check_script(script: &[u8]) -> Result<(), SbatchError> {
    if script.is_empty() {
        Err(SbatchError::EmptyScript)
    } else if script.iter().all(|b| is_c_space(char::from(*b))) {
        Err(SbatchError::WhitespaceScript)
    } else if !script.starts_with(b"#!") {
        Err(SbatchError::NotABatchScript)
    } else if script.contains(&0) {
        Err(SbatchError::NulInScript)
    } else if script.windows(2).any(|w| w == b"\r\n") {
        Err(SbatchError::DosLineBreaks)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    fn cl(args: &[&str]) -> CommandLine {
        parse_command_line(&argv(args)).unwrap_or_else(|e| panic!("{args:?}: {e:?}"))
    }

    fn cl_err(args: &[&str]) -> SbatchError {
        parse_command_line(&argv(args)).expect_err("should be refused")
    }

    fn dir(script: &str) -> SbatchOptions {
        parse_directives(script).unwrap_or_else(|e| panic!("{script:?}: {e:?}"))
    }

    fn dir_err(script: &str) -> SbatchError {
        parse_directives(script).expect_err("should be refused")
    }

    // --- observed in sbatch.txt ---------------------------------------------------------------

    #[test]
    fn unrecognized_long_option_text_and_exit_255() {
        let e = cl_err(&["--bogus-option", "job.sh"]);
        assert_eq!(
            e.slurm_message(),
            "sbatch: unrecognized option '--bogus-option'\nTry \"sbatch --help\" for more information"
        );
        assert_eq!(e.exit_code(), 255);
    }

    #[test]
    fn option_after_script_goes_to_the_script() {
        let c = cl(&["job.sh", "-t"]);
        assert_eq!(c.script.as_deref(), Some("job.sh"));
        assert_eq!(c.script_args, ["-t"]);
        assert_eq!(c.options, SbatchOptions::default());
    }

    #[test]
    fn missing_argument_short_t_before_script() {
        let e = cl_err(&["-t"]);
        assert_eq!(e, SbatchError::MissingArgument("-t".into()));
        assert_eq!(
            e.slurm_message(),
            "sbatch: option requires an argument -- 't'\nTry \"sbatch --help\" for more information"
        );
        assert_eq!(e.exit_code(), 255);
    }

    #[test]
    fn time_abc_is_invalid_time_specification_255() {
        let e = cl_err(&["--time=abc", "job.sh"]);
        assert!(matches!(&e, SbatchError::InvalidValue { option, .. } if option == "time"));
        assert_eq!(e.slurm_message(), "sbatch: error: Invalid --time specification");
        assert_eq!(e.exit_code(), 255);
    }

    #[test]
    fn time_minus_5_is_accepted_as_slurm_does() {
        assert!(cl(&["--time=-5", "--wrap", "true"]).options.time.is_some());
    }

    #[test]
    fn time_values_observed() {
        assert_eq!(cl(&["-H", "--time=0:05"]).options.time, Some(TimeLimit::Minutes(1)));
        assert_eq!(cl(&["--time=90"]).options.time, Some(TimeLimit::Minutes(90)));
        assert_eq!(cl(&["--time=1-02:03:04"]).options.time, Some(TimeLimit::Minutes(1564)));
    }

    #[test]
    fn mem_lots_is_invalid_mem_specification_255() {
        let e = cl_err(&["--mem=lots", "--wrap", "true"]);
        assert_eq!(e.slurm_message(), "sbatch: error: Invalid --mem specification");
        assert_eq!(e.exit_code(), 255);
    }

    #[test]
    fn mem_999g_parses_and_is_left_to_the_scheduler() {
        assert_eq!(cl(&["--mem=999G"]).options.mem_mb, Some(999 * 1024));
    }

    #[test]
    fn dependency_whenever_is_job_dependency_problem_exit_1() {
        let e = cl_err(&["--dependency=whenever:1", "--wrap", "true"]);
        assert_eq!(
            e.slurm_message(),
            "sbatch: error: Batch job submission failed: Job dependency problem"
        );
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn dependency_afterok_accepted() {
        assert!(cl(&["--dependency=afterok:1", "--wrap", "true"]).options.dependency.is_some());
        assert!(cl(&["-d", "afterok:999999"]).options.dependency.is_some());
    }

    #[test]
    fn array_5_1_is_invalid_job_array_specification_exit_1() {
        let e = cl_err(&["--array=5-1", "--wrap", "true"]);
        assert_eq!(
            e.slurm_message(),
            "sbatch: error: Batch job submission failed: Invalid job array specification"
        );
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn array_with_throttle_accepted() {
        let a = cl(&["--array=0-3%2", "--wrap", "sleep 1"]).options.array.expect("array");
        assert_eq!(a.tasks, [0, 1, 2, 3]);
        assert_eq!(a.throttle, Some(2));
        assert_eq!(cl(&["--parsable", "--array=1-3"]).options.array.map(|a| a.count()), Some(3));
    }

    #[test]
    fn wrap_parsable_test_only_hold_wait_flags() {
        let c = cl(&["--test-only", "--parsable", "-H", "-W", "--wrap", "hostname"]);
        let o = &c.options;
        assert!(o.test_only && o.parsable && o.hold && o.wait);
        assert_eq!(o.wrap.as_deref(), Some("hostname"));
        assert_eq!(c.script, None);
        assert!(cl(&["--wait", "--wrap", "exit 3"]).options.wait);
    }

    #[test]
    fn job_name_with_spaces() {
        let c = cl(&["-H", "-J", "my job name", "--parsable", "--wrap", "true"]);
        assert_eq!(c.options.job_name.as_deref(), Some("my job name"));
    }

    #[test]
    fn begin_is_kept_raw() {
        assert_eq!(cl(&["--begin=now+3600"]).options.begin.as_deref(), Some("now+3600"));
    }

    #[test]
    fn no_script_means_stdin() {
        let c = cl(&[]);
        assert_eq!(c.script, None);
        assert!(c.script_args.is_empty());
    }

    #[test]
    fn partition_and_counts_parse_without_checking_the_cluster() {
        let o = cl(&["-p", "nosuch", "-c", "64", "-N", "5"]).options;
        assert_eq!(o.partition.as_deref(), Some("nosuch"));
        assert_eq!(o.cpus_per_task, Some(64));
        assert_eq!((o.nodes, o.nodes_max), (Some(5), Some(5)));
    }

    #[test]
    fn empty_script_text() {
        let e = check_script(b"").expect_err("empty");
        assert_eq!(e.slurm_message(), "sbatch: error: Batch script is empty!");
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn script_without_shebang_text() {
        let text = "echo \"no shebang line\"\n";
        assert!(!looks_like_batch_script(text));
        let e = check_script(text.as_bytes()).expect_err("no #!");
        assert_eq!(
            e.slurm_message(),
            "sbatch: error: This does not look like a batch script.  The first\n\
             sbatch: error: line must start with #! followed by the path to an interpreter.\n\
             sbatch: error: For instance: #!/bin/sh"
        );
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn unable_to_open_text() {
        let e = SbatchError::UnableToOpen("nosuch.sh".into());
        assert_eq!(e.slurm_message(), "sbatch: error: Unable to open file nosuch.sh");
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn observed_job_sh_directives() {
        let script = "#!/bin/bash\n#SBATCH --job-name=refjob\n#SBATCH --time=00:05:00\n\
                      echo \"hello from job $SLURM_JOB_ID on $SLURMD_NODENAME\"\n";
        assert!(looks_like_batch_script(script));
        assert_eq!(check_script(script.as_bytes()), Ok(()));
        let o = dir(script);
        assert_eq!(o.job_name.as_deref(), Some("refjob"));
        assert_eq!(o.time, Some(TimeLimit::Minutes(5)));
    }

    // --- script checks from Slurm 22.05 --------------------------------------------------------

    #[test]
    fn script_checks_whitespace_nul_dos() {
        assert_eq!(check_script(b" \n\t\n"), Err(SbatchError::WhitespaceScript));
        assert_eq!(check_script(b"#!/bin/sh\necho \0\n"), Err(SbatchError::NulInScript));
        assert_eq!(check_script(b"#!/bin/sh\r\necho\r\n"), Err(SbatchError::DosLineBreaks));
        assert_eq!(
            SbatchError::DosLineBreaks.slurm_message(),
            "sbatch: error: Batch script contains DOS line breaks (\\r\\n)\n\
             sbatch: error: instead of expected UNIX line breaks (\\n)."
        );
    }

    // --- getopt rules --------------------------------------------------------------------------

    #[test]
    fn long_option_value_separate_or_attached() {
        assert_eq!(cl(&["--partition", "debug"]).options.partition.as_deref(), Some("debug"));
        assert_eq!(cl(&["--partition=debug"]).options.partition.as_deref(), Some("debug"));
        // An attached empty value is a value.
        assert_eq!(cl(&["--comment="]).options.comment.as_deref(), Some(""));
        // A required value is taken even when it looks like an option.
        assert_eq!(cl(&["--comment", "--hold"]).options.comment.as_deref(), Some("--hold"));
        assert!(!cl(&["--comment", "--hold"]).options.hold);
    }

    #[test]
    fn short_option_value_attached_or_separate() {
        assert_eq!(cl(&["-n2"]).options.ntasks, Some(2));
        assert_eq!(cl(&["-n", "2"]).options.ntasks, Some(2));
        assert!(cl(&["-t", "-5"]).options.time.is_some());
    }

    #[test]
    fn short_flags_cluster() {
        let o = cl(&["-HQ"]).options;
        assert!(o.hold && o.quiet);
        let o = cl(&["-HWn4", "job.sh"]).options;
        assert!(o.hold && o.wait);
        assert_eq!(o.ntasks, Some(4));
        assert_eq!(cl(&["-vvv"]).options.other.get("verbose").map(String::as_str), Some("3"));
    }

    #[test]
    fn invalid_short_option_text() {
        let e = cl_err(&["-Hz"]);
        assert_eq!(e, SbatchError::UnrecognizedOption("-z".into()));
        assert_eq!(
            e.slurm_message(),
            "sbatch: invalid option -- 'z'\nTry \"sbatch --help\" for more information"
        );
        assert_eq!(e.exit_code(), 255);
    }

    #[test]
    fn long_prefix_matches_unique_option() {
        assert_eq!(cl(&["--parti=debug"]).options.partition.as_deref(), Some("debug"));
        assert_eq!(cl(&["--job", "x"]).options.job_name.as_deref(), Some("x"));
        assert!(cl(&["--pars"]).options.parsable);
        // An exact name wins over longer names it prefixes.
        assert_eq!(cl(&["--mem=1G"]).options.mem_mb, Some(1024));
        assert_eq!(cl(&["--tasks=3"]).options.ntasks_per_node, Some(3));
    }

    #[test]
    fn long_prefix_ambiguous_lists_possibilities() {
        let e = cl_err(&["--par", "x"]);
        assert_eq!(
            e,
            SbatchError::Ambiguous {
                option: "--par".into(),
                candidates: vec!["parsable".into(), "partition".into()]
            }
        );
        assert_eq!(
            e.slurm_message(),
            "sbatch: option '--par' is ambiguous; possibilities: '--parsable' '--partition'\n\
             Try \"sbatch --help\" for more information"
        );
        assert_eq!(e.exit_code(), 255);
        let e = cl_err(&["--ntasks-per=2"]);
        assert_eq!(
            e.slurm_message().lines().next(),
            Some(
                "sbatch: option '--ntasks-per=2' is ambiguous; possibilities: \
                 '--ntasks-per-core' '--ntasks-per-gpu' '--ntasks-per-node' \
                 '--ntasks-per-socket' '--ntasks-per-tres'"
            )
        );
    }

    #[test]
    fn long_option_missing_argument_text() {
        // The message names the option in full, however it was typed.
        let e = cl_err(&["--tim"]);
        assert!(matches!(e, SbatchError::Ambiguous { .. }), "--tim is also --time-min");
        let e = cl_err(&["--job-n"]);
        assert_eq!(e, SbatchError::MissingArgument("--job-name".into()));
        let e = cl_err(&["--time"]);
        assert_eq!(e, SbatchError::MissingArgument("--time".into()));
        assert_eq!(
            e.slurm_message(),
            "sbatch: option '--time' requires an argument\nTry \"sbatch --help\" for more information"
        );
    }

    #[test]
    fn flag_with_value_doesnt_allow_an_argument() {
        let e = cl_err(&["--hol=yes"]);
        assert_eq!(
            e.slurm_message(),
            "sbatch: option '--hold' doesn't allow an argument\n\
             Try \"sbatch --help\" for more information"
        );
        assert_eq!(e.exit_code(), 255);
    }

    #[test]
    fn double_dash_ends_options() {
        let c = cl(&["-H", "--", "-job.sh", "--time=5"]);
        assert!(c.options.hold);
        assert_eq!(c.script.as_deref(), Some("-job.sh"));
        assert_eq!(c.script_args, ["--time=5"]);
        assert_eq!(cl(&["--"]).script, None);
    }

    #[test]
    fn single_dash_is_the_script() {
        assert_eq!(cl(&["-"]).script.as_deref(), Some("-"));
    }

    #[test]
    fn script_args_are_verbatim() {
        let c = cl(&["-n", "1", "job.sh", "--bogus", "-x", "--", "a b"]);
        assert_eq!(c.script.as_deref(), Some("job.sh"));
        assert_eq!(c.script_args, ["--bogus", "-x", "--", "a b"]);
    }

    #[test]
    fn optional_argument_only_attached() {
        // `--nice 5`: nice without a value (100), then `5` is the script.
        let c = cl(&["--nice", "5"]);
        assert_eq!(c.options.nice, Some(100));
        assert_eq!(c.script.as_deref(), Some("5"));
        assert_eq!(cl(&["--nice=-5"]).options.nice, Some(-5));
        assert_eq!(
            cl(&["--exclusive"]).options.other.get("exclusive").map(String::as_str),
            Some("")
        );
        assert_eq!(
            cl(&["--exclusive=user"]).options.other.get("exclusive").map(String::as_str),
            Some("user")
        );
        assert_eq!(cl(&["-k"]).options.other.get("no-kill").map(String::as_str), Some(""));
        assert_eq!(cl(&["-koff"]).options.other.get("no-kill").map(String::as_str), Some("off"));
    }

    #[test]
    fn nice_out_of_range() {
        let e = cl_err(&["--nice=2147483646"]);
        assert_eq!(
            e.slurm_message(),
            "sbatch: error: Invalid --nice value, out of range (+/- 2147483645)"
        );
        assert_eq!(e.exit_code(), 255);
        assert_eq!(cl(&["--nice=-2147483645"]).options.nice, Some(-2_147_483_645));
    }

    #[test]
    fn exclusive_invalid_value() {
        let e = cl_err(&["--exclusive=bogus"]);
        assert_eq!(e.slurm_message(), "sbatch: error: Invalid --exclusive specification");
        assert_eq!(e.exit_code(), 255);
    }

    #[test]
    fn help_usage_version_stop_parsing() {
        let c = cl(&["-n2", "--help", "--bogus"]);
        assert!(c.help);
        assert_eq!(c.options.ntasks, Some(2));
        assert!(cl(&["--usage"]).usage);
        assert!(cl(&["-V"]).version);
        // An error before --help wins, as Slurm handles options in order.
        assert_eq!(cl_err(&["--bogus", "-h"]), SbatchError::UnrecognizedOption("--bogus".into()));
    }

    #[test]
    fn wrap_with_script_is_refused() {
        let e = cl_err(&["--wrap", "true", "job.sh"]);
        assert_eq!(
            e.slurm_message(),
            "sbatch: error: Script arguments not permitted with --wrap option"
        );
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn hetjob_colon_is_refused() {
        assert_eq!(cl_err(&["-N1", ":", "-N2", "job.sh"]), SbatchError::HetJobUnsupported);
        // After the script it is just an argument.
        assert_eq!(cl(&["job.sh", ":"]).script_args, [":"]);
    }

    // --- option values -------------------------------------------------------------------------

    #[test]
    fn ntasks_must_be_a_positive_number() {
        for bad in ["abc", "0", "-1", "2x", "", "99999999999"] {
            let e = cl_err(&["--ntasks", bad]);
            assert_eq!(
                e.slurm_message(),
                format!("sbatch: error: Invalid numeric value \"{bad}\" for --ntasks."),
            );
            assert_eq!(e.exit_code(), 1);
        }
        assert_eq!(cl(&["-n", "+3"]).options.ntasks, Some(3));
        assert_eq!(cl(&["-n", " 3"]).options.ntasks, Some(3));
    }

    #[test]
    fn cpus_per_task_and_ntasks_per_node_numbers() {
        assert_eq!(cl(&["-c", "4"]).options.cpus_per_task, Some(4));
        assert_eq!(
            cl_err(&["-c", "0"]).slurm_message(),
            "sbatch: error: Invalid numeric value \"0\" for --cpus-per-task."
        );
        assert_eq!(cl(&["--ntasks-per-node=2"]).options.ntasks_per_node, Some(2));
        assert_eq!(
            cl_err(&["--tasks-per-node=x"]).slurm_message(),
            "sbatch: error: Invalid numeric value \"x\" for --ntasks-per-node."
        );
        assert_eq!(
            cl_err(&["--threads-per-core=0"]).slurm_message(),
            "sbatch: error: Invalid numeric value \"0\" for --threads-per-core."
        );
    }

    #[test]
    fn nodes_count_and_range() {
        let n = |v: &str| {
            let o = cl(&["-N", v]).options;
            (o.nodes, o.nodes_max)
        };
        assert_eq!(n("2"), (Some(2), Some(2)));
        assert_eq!(n("2-2"), (Some(2), Some(2)));
        assert_eq!(n("2-4"), (Some(2), Some(4)));
        assert_eq!(n("2-0"), (Some(2), None));
        assert_eq!(n("-3"), (Some(1), Some(3)));
        assert_eq!(n("1k"), (Some(1024), Some(1024)));
        assert_eq!(cl(&["--nodes=2"]).options.nodes, Some(2));
    }

    #[test]
    fn nodes_invalid_texts() {
        let e = cl_err(&["-N", "abc"]);
        assert_eq!(e.slurm_message(), "sbatch: error: \"abc\" is not a valid node count");
        assert_eq!(e.exit_code(), 255);
        let e = cl_err(&["-N", "1-x"]);
        assert_eq!(e.slurm_message(), "sbatch: error: \"x\" is not a valid node count");
        let e = cl_err(&["-N", "3-2"]);
        assert_eq!(
            e.slurm_message(),
            "sbatch: error: Maximum node count 2 is less than minimum node count 3"
        );
        assert_eq!(e.exit_code(), 255);
    }

    #[test]
    fn nodes_zero_is_refused() {
        for v in ["0", "0-3"] {
            let e = cl_err(&["-N", v]);
            assert_eq!(e, SbatchError::ZeroNodes);
            assert_eq!(
                e.slurm_message(),
                "sbatch: error: Batch job submission failed: Node count specification invalid"
            );
            assert_eq!(e.exit_code(), 1);
        }
    }

    #[test]
    fn gpus_with_and_without_type() {
        let o = cl(&["--gpus=2"]).options;
        assert_eq!((o.gpus, o.gpu_type), (Some(2), None));
        let o = cl(&["-G", "a100:4"]).options;
        assert_eq!((o.gpus, o.gpu_type.as_deref()), (Some(4), Some("a100")));
        let o = cl(&["--gpus-per-node=v100:1", "--gpus-per-task=1"]).options;
        assert_eq!(o.gpus_per_node, Some(1));
        assert_eq!(o.gpus_per_task, Some(1));
        assert_eq!(o.gpu_type.as_deref(), Some("v100"));
        let e = cl_err(&["--gpus=lots"]);
        assert_eq!(
            e.slurm_message(),
            "sbatch: error: Batch job submission failed: Invalid generic resource (gres) specification"
        );
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn gres_gpu_is_per_node() {
        let o = cl(&["--gres=gpu:2"]).options;
        assert_eq!((o.gpus_per_node, o.gpu_type), (Some(2), None));
        let o = cl(&["--gres=gpu:tesla:2,license:1"]).options;
        assert_eq!((o.gpus_per_node, o.gpu_type.as_deref()), (Some(2), Some("tesla")));
        assert_eq!(o.other.get("gres").map(String::as_str), Some("license:1"));
        assert_eq!(cl(&["--gres=gpu"]).options.gpus_per_node, Some(1));
        assert_eq!(cl(&["--gres=gpu:a100"]).options.gpu_type.as_deref(), Some("a100"));
        assert!(cl_err(&["--gres=gpu:a:b:c"]).exit_code() == 1);
    }

    #[test]
    fn open_mode_first_letter() {
        assert_eq!(cl(&["--open-mode=append"]).options.open_mode, Some(OpenMode::Append));
        assert_eq!(cl(&["--open-mode=T"]).options.open_mode, Some(OpenMode::Truncate));
        let e = cl_err(&["--open-mode=x"]);
        assert_eq!(e.slurm_message(), "sbatch: error: Invalid --open-mode specification");
    }

    #[test]
    fn requeue_and_no_requeue() {
        assert_eq!(cl(&["--requeue"]).options.requeue, Some(true));
        assert_eq!(cl(&["--no-requeue"]).options.requeue, Some(false));
        assert_eq!(cl(&["--requeue", "--no-requeue"]).options.requeue, Some(false));
    }

    #[test]
    fn other_options_are_stored_by_long_name() {
        let o = cl(&[
            "-A",
            "acct",
            "-q",
            "high",
            "-C",
            "gpu",
            "-L",
            "lic:1",
            "-w",
            "node[1-2]",
            "-x",
            "node3",
            "--mail-type=END,FAIL",
            "--mail-user=a@b",
            "--reservation=r",
            "--signal=B:USR1@60",
        ])
        .options;
        let get = |k: &str| o.other.get(k).map(String::as_str);
        assert_eq!(get("account"), Some("acct"));
        assert_eq!(get("qos"), Some("high"));
        assert_eq!(get("constraint"), Some("gpu"));
        assert_eq!(get("licenses"), Some("lic:1"));
        assert_eq!(get("nodelist"), Some("node[1-2]"));
        assert_eq!(get("exclude"), Some("node3"));
        assert_eq!(get("mail-type"), Some("END,FAIL"));
        assert_eq!(get("mail-user"), Some("a@b"));
        assert_eq!(get("reservation"), Some("r"));
        assert_eq!(get("signal"), Some("B:USR1@60"));
    }

    #[test]
    fn mail_type_and_kill_on_invalid_dep_checked() {
        assert_eq!(
            cl_err(&["--mail-type=SOMETIMES"]).slurm_message(),
            "sbatch: error: Invalid --mail-type specification"
        );
        assert!(cl(&["--mail-type=sometimes,end"]).options.other.contains_key("mail-type"));
        assert_eq!(
            cl_err(&["--kill-on-invalid-dep=maybe"]).slurm_message(),
            "sbatch: error: Invalid --kill-on-invalid-dep specification"
        );
    }

    #[test]
    fn export_raw_and_typed() {
        assert_eq!(cl(&["--export=NONE"]).options.export.as_deref(), Some("NONE"));
        assert_eq!(parse_export("ALL"), Ok(Export::All));
        assert_eq!(parse_export("none"), Ok(Export::None));
        assert_eq!(
            parse_export("ALL,A=1,B"),
            Ok(Export::List {
                all: true,
                vars: vec![("A".into(), Some("1".into())), ("B".into(), None)]
            })
        );
        assert_eq!(
            parse_export("'A=x,y',B=\"1,2\""),
            Ok(Export::List {
                all: false,
                vars: vec![("A".into(), Some("x,y".into())), ("B".into(), Some("\"1,2\"".into()))]
            })
        );
        assert!(parse_export("A='x").is_err());
    }

    // --- directives ----------------------------------------------------------------------------

    #[test]
    fn directives_stop_at_first_command() {
        let o = dir("#!/bin/sh\n#SBATCH -J a\necho hi\n#SBATCH -p late\n");
        assert_eq!(o.job_name.as_deref(), Some("a"));
        assert_eq!(o.partition, None);
    }

    #[test]
    fn directives_skip_blank_and_comment_lines() {
        let o = dir(
            "#!/bin/sh\n\n   \n# a comment\n  # indented comment\n#SBATCH -J a\n\t\n#SBATCH -p b\n",
        );
        assert_eq!(o.job_name.as_deref(), Some("a"));
        assert_eq!(o.partition.as_deref(), Some("b"));
    }

    #[test]
    fn directive_must_start_the_line() {
        let o = dir("#!/bin/sh\n  #SBATCH -J indented\n#sbatch -p lower\n");
        assert_eq!(o, SbatchOptions::default());
    }

    #[test]
    fn directive_trailing_comment_dropped() {
        let o = dir("#!/bin/sh\n#SBATCH -J a # the name\n#SBATCH --time=5#five minutes\n");
        assert_eq!(o.job_name.as_deref(), Some("a"));
        assert_eq!(o.time, Some(TimeLimit::Minutes(5)));
    }

    #[test]
    fn directive_quotes_and_escapes() {
        let o = dir("#!/bin/sh\n#SBATCH -J \"my job\" --comment='a # b'\n");
        assert_eq!(o.job_name.as_deref(), Some("my job"));
        assert_eq!(o.comment.as_deref(), Some("a # b"));
        let o = dir("#!/bin/sh\n#SBATCH --job-name=\"it's\" --comment=a\\#b\n");
        assert_eq!(o.job_name.as_deref(), Some("it's"));
        assert_eq!(o.comment.as_deref(), Some("a#b"));
        let o = dir("#!/bin/sh\n#SBATCH --comment=x\"y z\"w\n");
        assert_eq!(o.comment.as_deref(), Some("xy zw"));
    }

    #[test]
    fn directive_several_options_per_line() {
        let o = dir("#!/bin/sh\n#SBATCH -N 2 -n4 --mem-per-cpu=200M -J two-nodes\n");
        assert_eq!((o.nodes, o.ntasks), (Some(2), Some(4)));
        assert_eq!(o.mem_per_cpu_mb, Some(200));
        assert_eq!(o.job_name.as_deref(), Some("two-nodes"));
    }

    #[test]
    fn directive_value_may_be_on_the_next_directive() {
        assert_eq!(dir("#!/bin/sh\n#SBATCH -J\n#SBATCH name\n").job_name.as_deref(), Some("name"));
    }

    #[test]
    fn directive_without_space_after_magic_word() {
        assert!(dir("#!/bin/sh\n#SBATCH--hold\n").hold);
    }

    #[test]
    fn directive_invalid_word_text_and_exit_255() {
        let e = dir_err("#!/bin/sh\n#SBATCH --mail-user=<e-mail> -p x\n#SBATCH this is prose\n");
        assert_eq!(e, SbatchError::InvalidDirective("this".into()));
        assert_eq!(
            e.slurm_message(),
            "sbatch: error: Invalid directive found in batch script: this"
        );
        assert_eq!(e.exit_code(), 255);
    }

    #[test]
    fn directive_nice_with_separate_value_is_invalid() {
        let e = dir_err("#!/bin/sh\n#SBATCH --nice 0\n");
        assert_eq!(e.slurm_message(), "sbatch: error: Invalid directive found in batch script: 0");
        assert_eq!(dir("#!/bin/sh\n#SBATCH --nice=0\n").nice, Some(0));
    }

    #[test]
    fn directive_unknown_option_is_getopt_error() {
        let e = dir_err("#!/bin/sh\n#SBATCH --bogus\n");
        assert_eq!(
            e.slurm_message(),
            "sbatch: unrecognized option '--bogus'\nTry \"sbatch --help\" for more information"
        );
        assert_eq!(e.exit_code(), 255);
        assert_eq!(dir_err("#!/bin/sh\n#SBATCH -t\n"), SbatchError::MissingArgument("-t".into()));
    }

    #[test]
    fn directive_bad_value_same_text_as_command_line() {
        let e = dir_err("#!/bin/sh\n#SBATCH --time=abc\n");
        assert_eq!(e.slurm_message(), "sbatch: error: Invalid --time specification");
    }

    #[test]
    fn directive_unmatched_quote_is_fatal() {
        let e = parse_script_directives("job.sh", "#!/bin/sh\n\n#SBATCH -J \"abc\n")
            .expect_err("unmatched");
        assert_eq!(e.slurm_message(), "sbatch: fatal: job.sh: line 3: Unmatched `\"` in [ \"abc]");
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn directive_empty_word_ends_the_line() {
        let o = dir("#!/bin/sh\n#SBATCH -p \"\" -J ignored\n#SBATCH x\n");
        // `""` ends the first line, so -p takes `x` from the next directive.
        assert_eq!(o.partition.as_deref(), Some("x"));
        assert_eq!(o.job_name, None);
    }

    #[test]
    fn directive_early_pass_options_are_ignored() {
        let o = dir("#!/bin/sh\n#SBATCH --help -v -Q --wrap=true --version --usage -J x\n");
        assert_eq!(o.job_name.as_deref(), Some("x"));
        assert_eq!(o.wrap, None);
        assert!(!o.quiet);
        assert!(o.other.is_empty());
    }

    #[test]
    fn directive_slurm_magic_word_warns() {
        let d = parse_script_directives("job.sh", "#!/bin/sh\n#SLURM -J a\n#SLURM -p b\n")
            .expect("parses");
        assert_eq!(d.options.job_name.as_deref(), Some("a"));
        assert_eq!(d.options.partition.as_deref(), Some("b"));
        assert_eq!(
            d.warnings,
            ["sbatch: error: Change from #SLURM to #SBATCH in your script and verify the options \
              are valid in sbatch"]
        );
    }

    #[test]
    fn directive_hetjob_is_refused() {
        assert_eq!(
            dir_err("#!/bin/sh\n#SBATCH -N1\n#SBATCH hetjob\n"),
            SbatchError::HetJobUnsupported
        );
    }

    #[test]
    fn directive_leading_colon_is_fatal() {
        let e = parse_script_directives("job.sh", "#!/bin/sh\n#SBATCH -N1 :x\n").expect_err(":");
        assert_eq!(e.slurm_message(), "sbatch: fatal: job.sh: line 2: Unexpected `:` in [ :x]");
    }

    #[test]
    fn directive_double_dash_then_word_is_invalid() {
        assert_eq!(dir_err("#!/bin/sh\n#SBATCH -- x\n"), SbatchError::InvalidDirective("x".into()));
        assert!(dir("#!/bin/sh\n#SBATCH -H --\n").hold);
    }

    // --- merge and validate --------------------------------------------------------------------

    #[test]
    fn command_line_wins_over_directives() {
        let d = dir("#!/bin/sh\n#SBATCH -J dir -p dirpart -N 2-4 -A dacct -q dqos --hold\n");
        let c = cl(&["-J", "cli", "-N", "3", "-A", "cacct", "job.sh"]).options;
        let m = merge(c, d);
        assert_eq!(m.job_name.as_deref(), Some("cli"));
        assert_eq!(m.partition.as_deref(), Some("dirpart"));
        assert_eq!((m.nodes, m.nodes_max), (Some(3), Some(3)));
        assert_eq!(m.other.get("account").map(String::as_str), Some("cacct"));
        assert_eq!(m.other.get("qos").map(String::as_str), Some("dqos"));
        assert!(m.hold);
    }

    #[test]
    fn mem_and_mem_per_cpu_are_exclusive_across_sources() {
        let m = merge(cl(&["--mem=1G"]).options, dir("#!/bin/sh\n#SBATCH --mem-per-cpu=100\n"));
        let e = validate(&m).expect_err("exclusive");
        assert_eq!(
            e.slurm_message(),
            "sbatch: fatal: --mem, --mem-per-cpu, and --mem-per-gpu are mutually exclusive."
        );
        assert_eq!(e.exit_code(), 1);
        assert_eq!(validate(&cl(&["--mem=1G", "--mem=2G"]).options), Ok(()));
        assert_eq!(
            validate(&cl(&["--mem-per-gpu=1G", "--mem-per-cpu=1G"]).options),
            Err(SbatchError::MemOptionsExclusive)
        );
    }

    #[test]
    fn verbose_and_quiet_conflict() {
        let e = validate(&cl(&["-v", "-Q"]).options).expect_err("conflict");
        assert_eq!(
            e.slurm_message(),
            "sbatch: error: don't specify both --verbose (-v) and --quiet (-Q)"
        );
    }

    // --- properties ----------------------------------------------------------------------------

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,12}",
            "-{1,2}[a-zA-Z-]{0,14}(=[ -~]{0,8})?",
            "-[a-zA-Z]{1,4}[0-9]{0,3}",
            Just("--".to_owned()),
            Just(":".to_owned()),
        ]
    }

    fn line() -> impl Strategy<Value = String> {
        prop_oneof![
            "#SBATCH[ \t]{0,2}[ -~]{0,30}",
            "#SBATCH -{1,2}[a-z-]{1,12}[= ]?[\"'\\\\# a-z0-9:-]{0,12}",
            "#SLURM [ -~]{0,20}",
            "[ #a-z]{0,10}",
            "\\PC{0,20}",
        ]
    }

    proptest! {
        #[test]
        fn command_line_never_panics(args in prop::collection::vec(word(), 0..8)) {
            if let Err(e) = parse_command_line(&args) {
                prop_assert!(!e.slurm_message().is_empty());
                prop_assert!(matches!(e.exit_code(), 1 | 255));
            }
        }

        #[test]
        fn directives_never_panic(lines in prop::collection::vec(line(), 0..8)) {
            let script = format!("#!/bin/sh\n{}\n", lines.join("\n"));
            if let Err(e) = parse_directives(&script) {
                prop_assert!(!e.slurm_message().is_empty());
            }
            let _ = check_script(script.as_bytes());
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse_directives(&text);
            let _ = parse_export(&text);
            let _ = check_script(text.as_bytes());
        }

        #[test]
        fn options_round_trip_through_argv_and_directives(
            job_name in proptest::option::of("[ -~]{0,16}"),
            comment in proptest::option::of("[ -~]{0,16}"),
            partition in proptest::option::of("[a-z0-9_]{1,8}"),
            ntasks in proptest::option::of(1u32..=i32::MAX as u32),
            cpus in proptest::option::of(1u32..=4096),
            nodes in proptest::option::of((1u32..=64, proptest::option::of(0u32..=64))),
            minutes in proptest::option::of(1u32..=100_000),
            nice in proptest::option::of(-2_147_483_645i32..=2_147_483_645),
            hold in any::<bool>(),
            requeue in proptest::option::of(any::<bool>()),
            account in proptest::option::of("[a-z]{1,8}"),
        ) {
            let mut args: Vec<String> = Vec::new();
            let mut push = |name: &str, value: Option<String>| match value {
                Some(v) => args.push(format!("--{name}={v}")),
                None => args.push(format!("--{name}")),
            };
            let mut want = SbatchOptions::default();
            if let Some(v) = &job_name { push("job-name", Some(v.clone())); want.job_name = Some(v.clone()); }
            if let Some(v) = &comment { push("comment", Some(v.clone())); want.comment = Some(v.clone()); }
            if let Some(v) = &partition { push("partition", Some(v.clone())); want.partition = Some(v.clone()); }
            if let Some(v) = ntasks { push("ntasks", Some(v.to_string())); want.ntasks = Some(v); }
            if let Some(v) = cpus { push("cpus-per-task", Some(v.to_string())); want.cpus_per_task = Some(v); }
            if let Some((min, max)) = nodes {
                let max = max.map(|m| m.max(min));
                match max {
                    Some(m) => push("nodes", Some(format!("{min}-{m}"))),
                    None => push("nodes", Some(min.to_string())),
                }
                want.nodes = Some(min);
                want.nodes_max = Some(max.unwrap_or(min));
            }
            if let Some(m) = minutes { push("time", Some(m.to_string())); want.time = Some(TimeLimit::Minutes(m)); }
            if let Some(n) = nice { push("nice", Some(n.to_string())); want.nice = Some(n); }
            if hold { push("hold", None); want.hold = true; }
            if let Some(r) = requeue {
                push(if r { "requeue" } else { "no-requeue" }, None);
                want.requeue = Some(r);
            }
            if let Some(a) = &account {
                push("account", Some(a.clone()));
                want.other.insert("account".into(), a.clone());
            }

            let parsed = parse_command_line(&args).expect("round trip parses");
            prop_assert_eq!(&parsed.options, &want);
            prop_assert_eq!(parsed.script, None);

            // The same options as directives, each value quoted for the directive splitter.
            let quote = |a: &str| match a.split_once('=') {
                Some((k, v)) => format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")),
                None => a.to_owned(),
            };
            let script = format!(
                "#!/bin/sh\n{}\nsrun true\n",
                args.iter().map(|a| format!("#SBATCH {}", quote(a))).collect::<Vec<_>>().join("\n")
            );
            prop_assert_eq!(parse_directives(&script).expect("directives parse"), want.clone());

            // Merging with nothing changes nothing, from either side.
            prop_assert_eq!(merge(want.clone(), SbatchOptions::default()), want.clone());
            prop_assert_eq!(merge(SbatchOptions::default(), want.clone()), want);
        }
    }
}
