//! Job dependencies (`--dependency=afterok:1:2,afterany:3`) and how scontrol/squeue print them.
//!
//! ```text
//!   "afterok:1:2,singleton" ──parse_dependency──▶ Dependency { any: false,
//!                              conditions: [afterok [1, 2], singleton []] }
//!   Dependency ──Display──────────▶ "afterok:1,afterok:2,singleton"  (one item per job)
//!   Dependency ──format_with_state─▶ "afterok:72(unfulfilled)"  squeue %E, scontrol Dependency=
//! ```
//!
//! Slurm keeps a dependency as a flat list of (kind, job) items joined either all by `,` (every
//! item must be satisfied) or all by `?` (any one suffices); mixing the two is refused. So
//! `afterok:1:2?afternotok:3` means "1 ok, or 2 ok, or 3 not ok", and Display prints each job
//! as its own item, as scontrol does. Observed in Slurm 22.05: `DEPENDENCY` column
//! `afterok:72(unfulfilled)`; `Dependency=(null)` when there is none (the caller prints that);
//! `--dependency=whenever:1` is refused (`Job dependency problem`), while a dependency on a job
//! that does not exist is accepted at submit time (not this module's business).

use std::fmt;

use super::ParseError;

const WHAT: &str = "dependency";

/// The kind of a dependency item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DepKind {
    /// `after`: the job has started (or was cancelled).
    After,
    /// `afterok`: the job completed with exit code 0.
    AfterOk,
    /// `afternotok`: the job failed (non-zero exit, timeout, node failure, ...).
    AfterNotOk,
    /// `afterany`: the job terminated, however.
    AfterAny,
    /// `aftercorr`: the task with the same array index completed successfully.
    AfterCorr,
    /// `singleton`: no other job with the same name and user is running or suspended.
    Singleton,
}

impl DepKind {
    /// The keyword as Slurm prints it (lowercase).
    pub fn as_str(&self) -> &'static str {
        match self {
            DepKind::After => "after",
            DepKind::AfterOk => "afterok",
            DepKind::AfterNotOk => "afternotok",
            DepKind::AfterAny => "afterany",
            DepKind::AfterCorr => "aftercorr",
            DepKind::Singleton => "singleton",
        }
    }

    /// Looks a keyword up, ignoring case.
    pub fn from_keyword(s: &str) -> Option<DepKind> {
        [
            DepKind::After,
            DepKind::AfterOk,
            DepKind::AfterNotOk,
            DepKind::AfterAny,
            DepKind::AfterCorr,
            DepKind::Singleton,
        ]
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for DepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job named in a dependency: `123`, or one array task `123_4`. `123_*` (the whole array)
/// parses to `task: None`, which is what a bare array job id means too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct JobRef {
    pub job_id: u32,
    pub task: Option<u32>,
}

impl fmt::Display for JobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.task {
            Some(t) => write!(f, "{}_{t}", self.job_id),
            None => write!(f, "{}", self.job_id),
        }
    }
}

/// Parses `123`, `123_4` or `123_*`. Job id 0 is refused.
pub fn parse_job_ref(s: &str) -> Result<JobRef, ParseError> {
    job_ref(s, s)
}

fn job_ref(input: &str, s: &str) -> Result<JobRef, ParseError> {
    let (job, task) = match s.split_once('_') {
        Some((job, "*")) => (job, None),
        Some((job, task)) => (job, Some(number(input, task, "array task id")?)),
        None => (s, None),
    };
    let job_id = number(input, job, "job id")?;
    if job_id == 0 {
        return Err(ParseError::new(WHAT, input, "job id 0 is not valid"));
    }
    Ok(JobRef { job_id, task })
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

/// One `kind:job[:job...]` clause. `jobs` is empty for `singleton` and never empty otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct DepCondition {
    pub kind: DepKind,
    pub jobs: Vec<JobRef>,
}

/// A whole `--dependency` value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Dependency {
    /// `true` when the clauses were separated by `?` (any one item suffices), `false` for `,`
    /// (all items must be satisfied).
    pub any: bool,
    pub conditions: Vec<DepCondition>,
}

impl Dependency {
    /// The separator Slurm prints between items: `?` or `,`.
    pub fn separator(&self) -> char {
        if self.any { '?' } else { ',' }
    }

    /// The flat item list Slurm works with: one (kind, job) per job, `None` for `singleton`.
    pub fn items(&self) -> impl Iterator<Item = (DepKind, Option<&JobRef>)> + '_ {
        self.conditions.iter().flat_map(|c| {
            let jobs: Vec<Option<&JobRef>> =
                if c.jobs.is_empty() { vec![None] } else { c.jobs.iter().map(Some).collect() };
            jobs.into_iter().map(move |j| (c.kind, j))
        })
    }

    /// The same dependency with one condition per job, and `any: false` when there is only one
    /// item (both separators mean the same then): what parsing [`fmt::Display`]'s text gives.
    pub fn normalized(&self) -> Dependency {
        let conditions: Vec<DepCondition> = self
            .items()
            .map(|(kind, job)| DepCondition { kind, jobs: job.copied().into_iter().collect() })
            .collect();
        Dependency { any: self.any && conditions.len() > 1, conditions }
    }

    /// The text squeue's `%E` and scontrol's `Dependency=` show: every item followed by its
    /// state, e.g. `afterok:72(unfulfilled)`, `afterok:1_*(unfulfilled)?singleton(failed)`.
    /// `status` is asked about each item.
    pub fn format_with_state(
        &self,
        mut status: impl FnMut(DepKind, Option<&JobRef>) -> ItemStatus,
    ) -> String {
        let mut out = String::new();
        for (i, (kind, job)) in self.items().enumerate() {
            if i > 0 {
                out.push(self.separator());
            }
            let st = status(kind, job);
            out.push_str(&format_condition_status(kind, job, st.whole_array, st.state));
        }
        out
    }
}

/// Where a dependency item stands, as Slurm prints it in parentheses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DepState {
    Unfulfilled,
    Fulfilled,
    Failed,
}

impl DepState {
    pub fn as_str(&self) -> &'static str {
        match self {
            DepState::Unfulfilled => "unfulfilled",
            DepState::Fulfilled => "fulfilled",
            DepState::Failed => "failed",
        }
    }
}

/// What [`Dependency::format_with_state`] needs to know about one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ItemStatus {
    pub state: DepState,
    /// The job is an array and the item covers all its tasks: printed `123_*`.
    pub whole_array: bool,
}

/// One item with its state: `afterok:72(unfulfilled)`, `afterany:5_*(fulfilled)`,
/// `singleton(unfulfilled)`. `whole_array` prints a task-less job as `ID_*`.
pub fn format_condition_status(
    kind: DepKind,
    job: Option<&JobRef>,
    whole_array: bool,
    state: DepState,
) -> String {
    let mut out = String::from(kind.as_str());
    if let Some(j) = job {
        out.push(':');
        out.push_str(&j.to_string());
        if whole_array && j.task.is_none() {
            out.push_str("_*");
        }
    }
    out.push('(');
    out.push_str(state.as_str());
    out.push(')');
    out
}

/// The normalized spec: one `kind:job` item per job, joined by `,` or `?`
/// (`afterok:1:2` prints as `afterok:1,afterok:2`).
impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (kind, job)) in self.items().enumerate() {
            if i > 0 {
                write!(f, "{}", self.separator())?;
            }
            f.write_str(kind.as_str())?;
            if let Some(j) = job {
                write!(f, ":{j}")?;
            }
        }
        Ok(())
    }
}

/// Parses `--dependency`: clauses `after|afterok|afternotok|afterany|aftercorr:JOB[:JOB...]`
/// or `singleton`, all separated by `,` or all by `?`. Keywords ignore case. `JOB` is `123`,
/// `123_4` or `123_*`. `after:JOB+MINUTES` is not supported and refused.
pub fn parse_dependency(s: &str) -> Result<Dependency, ParseError> {
    if s.is_empty() {
        return Err(ParseError::new(WHAT, s, "empty"));
    }
    let has_comma = s.contains(',');
    let has_any = s.contains('?');
    if has_comma && has_any {
        return Err(ParseError::new(WHAT, s, "cannot mix ',' (all of) and '?' (any of)"));
    }
    let any = has_any;
    let sep = if any { '?' } else { ',' };
    let mut conditions = Vec::new();
    for clause in s.split(sep) {
        if clause.is_empty() {
            return Err(ParseError::new(WHAT, s, format!("empty clause between '{sep}'")));
        }
        let mut parts = clause.split(':');
        let keyword = parts.next().unwrap_or_default();
        let kind = DepKind::from_keyword(keyword).ok_or_else(|| {
            ParseError::new(
                WHAT,
                s,
                format!(
                    "unknown dependency type `{keyword}` (expected after, afterok, afternotok, \
                     afterany, aftercorr or singleton)"
                ),
            )
        })?;
        let jobs = parts
            .map(|j| {
                if j.contains('+') {
                    Err(ParseError::new(WHAT, s, format!("`{j}`: `+time` is not supported")))
                } else {
                    job_ref(s, j)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        match (kind, jobs.is_empty()) {
            (DepKind::Singleton, false) => {
                return Err(ParseError::new(WHAT, s, "singleton takes no job ids"));
            }
            (DepKind::Singleton, true) => {}
            (_, true) => {
                return Err(ParseError::new(WHAT, s, format!("`{keyword}` needs a job id")));
            }
            (_, false) => {}
        }
        conditions.push(DepCondition { kind, jobs });
    }
    Ok(Dependency { any, conditions })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn dep(s: &str) -> Dependency {
        parse_dependency(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn job(job_id: u32) -> JobRef {
        JobRef { job_id, task: None }
    }

    #[test]
    fn afterok_with_two_jobs() {
        assert_eq!(
            dep("afterok:1:2"),
            Dependency {
                any: false,
                conditions: vec![DepCondition {
                    kind: DepKind::AfterOk,
                    jobs: vec![job(1), job(2)]
                }]
            }
        );
    }

    #[test]
    fn comma_means_all_of() {
        let d = dep("afterany:5,afterok:6");
        assert!(!d.any);
        assert_eq!(d.conditions.len(), 2);
        assert_eq!(d.conditions[0].kind, DepKind::AfterAny);
        assert_eq!(d.conditions[1].jobs, vec![job(6)]);
    }

    #[test]
    fn question_mark_means_any_of() {
        let d = dep("afterok:1?afternotok:2");
        assert!(d.any);
        assert_eq!(d.conditions[1].kind, DepKind::AfterNotOk);
        assert_eq!(d.to_string(), "afterok:1?afternotok:2");
    }

    #[test]
    fn singleton_and_after() {
        assert_eq!(
            dep("singleton").conditions[0],
            DepCondition { kind: DepKind::Singleton, jobs: vec![] }
        );
        assert_eq!(dep("after:3").conditions[0].kind, DepKind::After);
        assert_eq!(dep("aftercorr:3").conditions[0].kind, DepKind::AfterCorr);
        assert_eq!(dep("AfterOK:3").conditions[0].kind, DepKind::AfterOk);
    }

    #[test]
    fn array_task_references() {
        assert_eq!(
            dep("afterok:1_4").conditions[0].jobs,
            vec![JobRef { job_id: 1, task: Some(4) }]
        );
        assert_eq!(dep("afterok:1_*").conditions[0].jobs, vec![job(1)]);
    }

    #[test]
    fn mixing_comma_and_question_mark_is_refused() {
        assert!(parse_dependency("afterok:1,afterok:2?afterok:3").is_err());
    }

    #[test]
    fn whenever_is_refused_as_observed() {
        let e = parse_dependency("whenever:1").unwrap_err();
        assert_eq!(e.what, "dependency");
        assert!(e.why.contains("whenever"), "{}", e.why);
    }

    #[test]
    fn malformed_is_refused() {
        for s in [
            "",
            "afterok",
            "afterok:",
            "afterok:1:",
            "afterok:x",
            "afterok:0",
            "singleton:1",
            "afterok:1,",
            ",afterok:1",
            "afterok:1??afterok:2",
            "after:1+5",
            "afterok:1_",
            "afterok:1_x",
            "afterok: 1",
            "afterok:99999999999",
        ] {
            assert!(parse_dependency(s).is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn display_prints_one_item_per_job() {
        assert_eq!(dep("afterok:1:2").to_string(), "afterok:1,afterok:2");
        assert_eq!(dep("afterany:5,singleton").to_string(), "afterany:5,singleton");
        assert_eq!(dep("afterok:1_4").to_string(), "afterok:1_4");
    }

    #[test]
    fn squeue_dependency_column_as_observed() {
        let d = dep("afterok:72");
        let shown = d.format_with_state(|_, _| ItemStatus {
            state: DepState::Unfulfilled,
            whole_array: false,
        });
        assert_eq!(shown, "afterok:72(unfulfilled)");
    }

    #[test]
    fn whole_array_items_print_with_star() {
        assert_eq!(
            format_condition_status(DepKind::AfterOk, Some(&job(1)), true, DepState::Unfulfilled),
            "afterok:1_*(unfulfilled)"
        );
        assert_eq!(
            format_condition_status(DepKind::Singleton, None, false, DepState::Failed),
            "singleton(failed)"
        );
        let d = dep("afterok:1?afterany:2_3");
        let shown = d.format_with_state(|_, j| ItemStatus {
            state: DepState::Fulfilled,
            whole_array: j.is_some_and(|j| j.job_id == 1),
        });
        assert_eq!(shown, "afterok:1_*(fulfilled)?afterany:2_3(fulfilled)");
    }

    #[test]
    fn job_ref_parse() {
        assert_eq!(parse_job_ref("82_4").unwrap(), JobRef { job_id: 82, task: Some(4) });
        assert_eq!(parse_job_ref("82").unwrap(), job(82));
        assert!(parse_job_ref("abc").is_err());
    }

    fn arb_kind() -> impl Strategy<Value = DepKind> {
        prop_oneof![
            Just(DepKind::After),
            Just(DepKind::AfterOk),
            Just(DepKind::AfterNotOk),
            Just(DepKind::AfterAny),
            Just(DepKind::AfterCorr),
            Just(DepKind::Singleton),
        ]
    }

    fn arb_condition() -> impl Strategy<Value = DepCondition> {
        let job = (1u32..1_000_000, proptest::option::of(0u32..1000))
            .prop_map(|(job_id, task)| JobRef { job_id, task });
        (arb_kind(), proptest::collection::vec(job, 1..4)).prop_map(|(kind, jobs)| DepCondition {
            kind,
            jobs: if kind == DepKind::Singleton { vec![] } else { jobs },
        })
    }

    proptest! {
        #[test]
        fn parse_of_display_is_normalized(
            any in any::<bool>(),
            conditions in proptest::collection::vec(arb_condition(), 1..5),
        ) {
            let d = Dependency { any, conditions };
            prop_assert_eq!(parse_dependency(&d.to_string()).unwrap(), d.normalized());
        }

        #[test]
        fn parse_dependency_never_panics(s in "[a-z0-9:,?_*+]{0,30}") {
            let _ = parse_dependency(&s);
        }
    }
}
