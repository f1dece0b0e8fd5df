//! Slurm's user-facing syntax: parsers and formatters, each a pure function.
//!
//! Every parser returns a [`ParseError`] that names what was being parsed, so the CLI can
//! print Slurm's style of message (`sbatch: error: Invalid --time specification`).

pub mod array;
pub mod dependency;
pub mod hostlist;
pub mod mem;
pub mod pattern;
pub mod sbatch;
pub mod time;

/// A value a user typed that Slurm's syntax does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{input}`: {why}")]
pub struct ParseError {
    /// What was being parsed, e.g. "time limit", "array specification".
    pub what: &'static str,
    /// The text that was refused.
    pub input: String,
    /// Why, in words a user can act on.
    pub why: String,
}

impl ParseError {
    pub fn new(what: &'static str, input: &str, why: impl Into<String>) -> Self {
        Self { what, input: input.to_owned(), why: why.into() }
    }
}
