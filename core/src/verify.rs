//! Replicated execution: how the results of a job's replicas are compared (`sbatch --verify=`).
//!
//! ```text
//!   --verify=              ──FromStr──▶ VerifySpec                          ──Display──▶
//!   "exact"                             Exact                                "exact"
//!   "tolerance:1e-6"                    Tolerance { rel: 1e-6, abs: 0 }      "tolerance:1e-6"
//!   "tolerance:0.001,1e-9"              Tolerance { rel: 1e-3, abs: 1e-9 }   "tolerance:1e-3,1e-9"
//!
//!   VerifySpec ──chorus_plugins::validator──▶ verify/exact | verify/tolerance
//!              ──chorus_plugins::verify::classes(results)──▶ agreement classes
//! ```
//!
//! A [`VerifySpec`] is recorded with the job (and may be a partition's default), so it goes
//! through the replicated log: it is `Eq + Hash` and serialisable. The two tolerances are kept
//! as [`Bound`]s: non-negative finite `f64`s stored as their bit patterns, with `-0` folded
//! into `0`, so that equality of the bits is equality of the numbers. They serialise as plain
//! numbers and are checked again when deserialised.
//!
//! The validators themselves (what "agree" means, token by token) live in
//! `chorus-plugins` (`verify/exact`, `verify/tolerance`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::slurm::ParseError;

const WHAT: &str = "--verify";
const SYNTAX: &str = "expected `exact` or `tolerance:REL[,ABS]`, e.g. tolerance:1e-6 or \
                      tolerance:0.001,1e-9";

/// How a job's replicas must agree.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VerifySpec {
    /// `exact`: the same exit code and the same result digest (every output byte equal).
    Exact,
    /// `tolerance:REL[,ABS]`: the same exit code and the same files, where numbers agree when
    /// `|a - b| <= max(abs, rel * max(|a|, |b|))` and all other text is equal.
    Tolerance { rel: Bound, abs: Bound },
}

impl VerifySpec {
    /// `Tolerance { rel, abs }`, or why not (negative, NaN or infinite values).
    pub fn tolerance(rel: f64, abs: f64) -> Result<Self, &'static str> {
        Ok(Self::Tolerance { rel: Bound::try_from(rel)?, abs: Bound::try_from(abs)? })
    }

    /// The validator's name: `verify/exact` or `verify/tolerance`.
    pub fn validator_name(&self) -> &'static str {
        match self {
            Self::Exact => "verify/exact",
            Self::Tolerance { .. } => "verify/tolerance",
        }
    }
}

/// A tolerance: a non-negative, finite `f64`, kept as its bit pattern (with `-0` stored as `0`)
/// so that it can be `Eq` and `Hash`. Serialises as a number; deserialising checks the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Bound(u64);

impl Bound {
    pub const ZERO: Bound = Bound(0);

    /// The value, as an `f64` (never negative, NaN or infinite).
    pub fn get(self) -> f64 {
        f64::from_bits(self.0)
    }
}

impl TryFrom<f64> for Bound {
    type Error = &'static str;

    fn try_from(v: f64) -> Result<Self, Self::Error> {
        if v.is_nan() {
            Err("a tolerance must be a number, not NaN")
        } else if v.is_infinite() {
            Err("a tolerance must be finite")
        } else if v < 0.0 {
            Err("a tolerance must not be negative")
        } else {
            // `-0.0 + 0.0` is `+0.0`: one bit pattern per value.
            Ok(Bound((v + 0.0).to_bits()))
        }
    }
}

impl From<Bound> for f64 {
    fn from(b: Bound) -> f64 {
        b.get()
    }
}

/// The shorter of the plain (`0.5`, `100`) and the exponent (`1e-6`, `1e3`) form, preferring
/// the plain one on a tie. Both of Rust's forms are the shortest text that reads back as the
/// same `f64`, so either round-trips.
impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = format!("{}", self.get());
        let exp = format!("{:e}", self.get());
        f.write_str(if exp.len() < plain.len() { &exp } else { &plain })
    }
}

impl fmt::Display for VerifySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact => f.write_str("exact"),
            Self::Tolerance { rel, abs } if *abs == Bound::ZERO => write!(f, "tolerance:{rel}"),
            Self::Tolerance { rel, abs } => write!(f, "tolerance:{rel},{abs}"),
        }
    }
}

/// Parses `sbatch --verify=` syntax: `exact` or `tolerance:REL[,ABS]` (keywords in any case;
/// REL and ABS non-negative finite decimals such as `1e-6` or `0.001`; ABS defaults to 0).
impl FromStr for VerifySpec {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let (kind, values) = match s.split_once(':') {
            Some((k, v)) => (k, Some(v)),
            None => (s, None),
        };
        if kind.eq_ignore_ascii_case("exact") {
            return match values {
                None => Ok(Self::Exact),
                Some(_) => Err(ParseError::new(WHAT, s, "`exact` takes no value")),
            };
        }
        if !kind.eq_ignore_ascii_case("tolerance") {
            return Err(ParseError::new(WHAT, s, SYNTAX));
        }
        let Some(values) = values else {
            return Err(ParseError::new(
                WHAT,
                s,
                "`tolerance` needs a relative tolerance: tolerance:REL[,ABS], e.g. tolerance:1e-6",
            ));
        };
        let mut parts = values.split(',');
        let rel = bound(s, "REL", parts.next().unwrap_or(""))?;
        let abs = match parts.next() {
            Some(a) => bound(s, "ABS", a)?,
            None => Bound::ZERO,
        };
        if parts.next().is_some() {
            return Err(ParseError::new(
                WHAT,
                s,
                "too many values: tolerance takes REL and at most one ABS",
            ));
        }
        Ok(Self::Tolerance { rel, abs })
    }
}

/// One of REL and ABS: what `f64::from_str` reads, if finite and not negative.
fn bound(input: &str, name: &str, v: &str) -> Result<Bound, ParseError> {
    if v.is_empty() {
        return Err(ParseError::new(WHAT, input, format!("{name} is missing")));
    }
    if v.starts_with('-') {
        return Err(ParseError::new(WHAT, input, format!("{name} `{v}` must not be negative")));
    }
    let x: f64 = v.parse().map_err(|_| {
        ParseError::new(
            WHAT,
            input,
            format!("{name} `{v}` is not a decimal number (e.g. 1e-6 or 0.001)"),
        )
    })?;
    if !x.is_finite() {
        // `inf`, `nan`, or a literal too large for an f64 (`1e999`).
        return Err(ParseError::new(
            WHAT,
            input,
            format!("{name} `{v}` must be a finite decimal number"),
        ));
    }
    Bound::try_from(x).map_err(|why| ParseError::new(WHAT, input, format!("{name} `{v}`: {why}")))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(s: &str) -> VerifySpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn tol(rel: f64, abs: f64) -> VerifySpec {
        VerifySpec::tolerance(rel, abs).unwrap()
    }

    #[test]
    fn verify_accepts_exact_and_tolerance() {
        for (input, want) in [
            ("exact", VerifySpec::Exact),
            ("EXACT", VerifySpec::Exact),
            ("tolerance:1e-6", tol(1e-6, 0.0)),
            ("tolerance:0.001", tol(0.001, 0.0)),
            ("tolerance:1e-6,1e-9", tol(1e-6, 1e-9)),
            ("Tolerance:1E-6,0", tol(1e-6, 0.0)),
            ("tolerance:0", tol(0.0, 0.0)),
            ("tolerance:0,0.5", tol(0.0, 0.5)),
            ("tolerance:.5", tol(0.5, 0.0)),
            ("tolerance:5.", tol(5.0, 0.0)),
            ("tolerance:+1e-3", tol(1e-3, 0.0)),
            ("tolerance:2", tol(2.0, 0.0)),
            // Underflows to zero: still a valid (if strict) tolerance.
            ("tolerance:1e-400", tol(0.0, 0.0)),
        ] {
            assert_eq!(parse(input), want, "{input}");
        }
    }

    #[test]
    fn verify_display_is_canonical() {
        for (input, shown) in [
            ("exact", "exact"),
            ("Exact", "exact"),
            ("tolerance:1e-6", "tolerance:1e-6"),
            ("tolerance:0.000001", "tolerance:1e-6"),
            ("tolerance:0.001", "tolerance:1e-3"),
            ("tolerance:1e-6,0", "tolerance:1e-6"),
            ("tolerance:1e-6,1e-12", "tolerance:1e-6,1e-12"),
            ("tolerance:0.5", "tolerance:0.5"),
            ("tolerance:1.5e-7", "tolerance:1.5e-7"),
            ("tolerance:100", "tolerance:100"),
            ("tolerance:1000", "tolerance:1e3"),
            ("tolerance:0", "tolerance:0"),
        ] {
            assert_eq!(parse(input).to_string(), shown, "{input}");
        }
    }

    #[test]
    fn verify_refuses_with_a_reason() {
        for (input, why) in [
            ("", "expected `exact` or `tolerance:REL[,ABS]`"),
            ("approx", "expected `exact` or `tolerance:REL[,ABS]`"),
            ("exact:1", "`exact` takes no value"),
            ("tolerance", "needs a relative tolerance"),
            ("tolerance:", "REL is missing"),
            ("tolerance:,1", "REL is missing"),
            ("tolerance:1e-6,", "ABS is missing"),
            ("tolerance:abc", "REL `abc` is not a decimal number"),
            ("tolerance:1e-6,x", "ABS `x` is not a decimal number"),
            ("tolerance:-1e-6", "REL `-1e-6` must not be negative"),
            ("tolerance:1e-6,-0", "ABS `-0` must not be negative"),
            ("tolerance:inf", "REL `inf` must be a finite decimal number"),
            ("tolerance:NaN", "REL `NaN` must be a finite decimal number"),
            ("tolerance:1e999", "REL `1e999` must be a finite decimal number"),
            ("tolerance:1,2,3", "too many values"),
            ("tolerance: 1e-6", "REL ` 1e-6` is not a decimal number"),
            ("tolerance:0x10", "REL `0x10` is not a decimal number"),
            ("tolerance:1_000", "REL `1_000` is not a decimal number"),
        ] {
            let e = input.parse::<VerifySpec>().expect_err(input);
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("invalid --verify `{input}`: ")), "{msg}");
            assert!(msg.contains(why), "{input}: {msg}");
        }
    }

    #[test]
    fn bound_folds_negative_zero_and_refuses_the_rest() {
        assert_eq!(Bound::try_from(-0.0).unwrap(), Bound::ZERO);
        assert_eq!(Bound::try_from(-0.0).unwrap().get().to_bits(), 0);
        assert!(Bound::try_from(-1e-300).is_err());
        assert!(Bound::try_from(f64::NAN).is_err());
        assert!(Bound::try_from(f64::INFINITY).is_err());
        assert_eq!(Bound::try_from(f64::MAX).unwrap().get(), f64::MAX);
    }

    #[test]
    fn verify_serialises_as_numbers_and_checks_them_on_the_way_in() {
        let spec = tol(1e-6, 0.5);
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(json, r#"{"Tolerance":{"rel":1e-6,"abs":0.5}}"#);
        assert_eq!(serde_json::from_str::<VerifySpec>(&json).unwrap(), spec);
        assert_eq!(serde_json::to_string(&VerifySpec::Exact).unwrap(), r#""Exact""#);
        let bad = r#"{"Tolerance":{"rel":-1.0,"abs":0.0}}"#;
        let e = serde_json::from_str::<VerifySpec>(bad).unwrap_err();
        assert!(e.to_string().contains("must not be negative"), "{e}");
    }

    #[test]
    fn validator_names() {
        assert_eq!(VerifySpec::Exact.validator_name(), "verify/exact");
        assert_eq!(tol(1e-6, 0.0).validator_name(), "verify/tolerance");
    }

    proptest! {
        #[test]
        fn display_round_trips(
            exact in any::<bool>(),
            rel in 0.0f64..=f64::MAX,
            abs in prop_oneof![
                Just(0.0f64),
                0.0f64..1e300,
                (-320i32..300).prop_map(|e| 10f64.powi(e)),
            ],
        ) {
            let spec = if exact { VerifySpec::Exact } else { tol(rel, abs) };
            let shown = spec.to_string();
            prop_assert_eq!(shown.parse::<VerifySpec>().unwrap(), spec, "{}", shown);
        }

        #[test]
        fn bits_round_trip(bits in any::<u64>()) {
            let x = f64::from_bits(bits);
            if let Ok(b) = Bound::try_from(x) {
                let back: VerifySpec = format!("tolerance:{b}").parse().unwrap();
                prop_assert_eq!(back, VerifySpec::Tolerance { rel: b, abs: Bound::ZERO });
            }
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,24}") {
            let _ = s.parse::<VerifySpec>();
        }
    }
}
