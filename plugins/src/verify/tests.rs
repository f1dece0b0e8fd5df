//! verify/exact and verify/tolerance: golden cases, the tokenizer, agreement classes, and
//! properties.

use std::hash::{DefaultHasher, Hash, Hasher};

use chorus_core::verify::VerifySpec;
use proptest::prelude::*;

use super::*;
use crate::validator;

/// A result with owned files; `with` lends it out as a [`ReplicaResult`].
#[derive(Debug, Clone)]
struct Owned {
    exit_code: i32,
    files: Vec<(String, Vec<u8>)>,
}

impl Owned {
    fn new(exit_code: i32, files: &[(&str, &[u8])]) -> Self {
        let mut files: Vec<(String, Vec<u8>)> =
            files.iter().map(|(n, b)| ((*n).to_owned(), b.to_vec())).collect();
        files.sort();
        Self { exit_code, files }
    }

    fn stdout(text: &str) -> Self {
        Self::new(0, &[("stderr", b""), ("stdout", text.as_bytes())])
    }

    /// A stand-in for the node's blake3 digest: any function of the contents will do here.
    fn digest(&self) -> [u8; 32] {
        let mut h = DefaultHasher::new();
        (self.exit_code, &self.files).hash(&mut h);
        let x = h.finish().to_le_bytes();
        let mut d = [0; 32];
        for (i, b) in d.iter_mut().enumerate() {
            *b = x[i % 8];
        }
        d
    }

    fn with<R>(&self, f: impl FnOnce(ReplicaResult<'_>) -> R) -> R {
        let files: Vec<(&str, &[u8])> =
            self.files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        f(ReplicaResult { exit_code: self.exit_code, digest: self.digest(), files: &files })
    }
}

fn spec(s: &str) -> VerifySpec {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn agree(v: &dyn Validator, a: &Owned, b: &Owned) -> Result<(), Disagreement> {
    a.with(|ra| b.with(|rb| v.agree(&ra, &rb)))
}

/// `Ok(())` or the disagreement's one line.
fn verdict(v: &str, a: &Owned, b: &Owned) -> Result<(), String> {
    agree(&*validator(&spec(v)), a, b).map_err(|d| d.to_string())
}

/// (what, --verify, stdout of a, stdout of b, None if they agree else the one-line reason)
const GOLDEN: &[(&str, &str, &str, &str, Option<&str>)] = &[
    (
        "equal files",
        "tolerance:1e-6",
        "step 1 energy -1.234567890\n",
        "step 1 energy -1.234567890\n",
        None,
    ),
    ("9th digit, within 1e-6", "tolerance:1e-6", "e -1.23456789012\n", "e -1.23456790012\n", None),
    (
        "6th digit, beyond 1e-6",
        "tolerance:1e-6",
        "e -1.234567\n",
        "e -1.234577\n",
        Some(concat!(
            r#"file "stdout" line 1 token 2: "-1.234567" vs "-1.234577" "#,
            "(relative difference 8.1e-6)"
        )),
    ),
    (
        "integers differ",
        "tolerance:1e-6",
        "count 100\n",
        "count 101\n",
        Some(r#"file "stdout" line 1 token 2: "100" vs "101" (relative difference 9.9e-3)"#),
    ),
    ("integers within a loose tolerance", "tolerance:0.01", "count 100\n", "count 101\n", None),
    (
        "extra token",
        "tolerance:1e-6",
        "a 1 2\n",
        "a 1 2 3\n",
        Some(r#"file "stdout" line 1 token 4: "\n" vs "3""#),
    ),
    (
        "extra token at the end of the file",
        "tolerance:1e-6",
        "a 1 2",
        "a 1 2 3",
        Some(r#"file "stdout" line 1 token 4: end of file vs "3""#),
    ),
    ("blank runs are separators", "tolerance:0", "a  1\t2 \r\n", "a 1 2\n", None),
    (
        "leading blanks (re-padded columns)",
        "tolerance:1e-6",
        " 9.9999999 x\n",
        "10.0000000 x\n",
        None,
    ),
    (
        "blanks do not merge tokens",
        "tolerance:0",
        "ab\n",
        "a b\n",
        Some(r#"file "stdout" line 1 token 1: "ab" vs "a""#),
    ),
    (
        "blanks do not merge numbers",
        "tolerance:0.5",
        "12\n",
        "1 2\n",
        Some(r#"file "stdout" line 1 token 1: "12" vs "1" (relative difference 9.2e-1)"#),
    ),
    (
        "line breaks are significant",
        "tolerance:0",
        "a\nb\n",
        "a b\n",
        Some(r#"file "stdout" line 1 token 2: "\n" vs "b""#),
    ),
    (
        "a final line break is significant",
        "tolerance:0",
        "a\n",
        "a",
        Some(r#"file "stdout" line 1 token 2: "\n" vs end of file"#),
    ),
    ("1.0 vs 1.00", "tolerance:0", "x 1.0\n", "x 1.00\n", None),
    ("1 vs 1.0", "tolerance:0", "x 1\n", "x 1.0\n", None),
    ("1e3 vs 1000", "tolerance:0", "x 1e3\n", "x 1000\n", None),
    ("1E+03 vs 1000.", "tolerance:0", "x 1E+03\n", "x 1000.\n", None),
    ("+5 vs 5 vs 005", "tolerance:0", "+5 005\n", "5 5\n", None),
    ("negative zero", "tolerance:0", "-0.0 -0 -0e0\n", "0.0 0 0\n", None),
    (
        "nan agrees with nan, whatever its case or sign",
        "tolerance:0",
        "nan NaN -nan\n",
        "NAN nan nan\n",
        None,
    ),
    (
        "nan does not agree with a number",
        "tolerance:1",
        "x nan\n",
        "x 1.0\n",
        Some(r#"file "stdout" line 1 token 2: "nan" vs "1.0""#),
    ),
    ("inf agrees with inf", "tolerance:0", "inf -Infinity +INF\n", "infinity -inf inf\n", None),
    (
        "inf does not agree with -inf",
        "tolerance:1",
        "inf\n",
        "-inf\n",
        Some(r#"file "stdout" line 1 token 1: "inf" vs "-inf""#),
    ),
    (
        "inf does not agree with the largest finite number",
        "tolerance:1",
        "inf\n",
        "1.7976931348623157e308\n",
        Some(r#"file "stdout" line 1 token 1: "inf" vs "1.7976931348623157e308""#),
    ),
    (
        "integers beyond 2^53 are exact under tolerance:0",
        "tolerance:0",
        "9007199254740993\n",
        "9007199254740992\n",
        Some(concat!(
            r#"file "stdout" line 1 token 1: "9007199254740993" vs "9007199254740992" "#,
            "(relative difference 1.1e-16)"
        )),
    ),
    (
        "zero needs ABS",
        "tolerance:1e-6",
        "r 0.0\n",
        "r 1e-10\n",
        Some(r#"file "stdout" line 1 token 2: "0.0" vs "1e-10" (relative difference 1.0e0)"#),
    ),
    ("zero within ABS", "tolerance:1e-6,1e-9", "r 0.0\n", "r 1e-10\n", None),
    (
        "numbers inside punctuation",
        "tolerance:1e-6",
        "x=1.5, y=(2.0e-3);\n",
        "x=1.5000001, y=(2.0000001e-3);\n",
        None,
    ),
    ("a number ending a sentence", "tolerance:0", "value 1.5.\n", "value 1.50.\n", None),
    (
        "a version is text",
        "tolerance:1",
        "1.2.3\n",
        "1.2.4\n",
        Some(r#"file "stdout" line 1 token 1: "1.2.3" vs "1.2.4""#),
    ),
    (
        "a hash starting with digits is text",
        "tolerance:1",
        "3fa9c0\n",
        "3fa9c1\n",
        Some(r#"file "stdout" line 1 token 1: "3fa9c0" vs "3fa9c1""#),
    ),
    (
        "a number with a unit is text",
        "tolerance:1",
        "t 10ms\n",
        "t 10.0ms\n",
        Some(r#"file "stdout" line 1 token 2: "10ms" vs "10.0ms""#),
    ),
    (
        "an identifier is text",
        "tolerance:1",
        "x1 = 2\n",
        "x2 = 2\n",
        Some(r#"file "stdout" line 1 token 1: "x1" vs "x2""#),
    ),
    ("a number after non-ASCII text and punctuation", "tolerance:0", "µ=1.0\n", "µ=1.00\n", None),
    (
        "a number touching non-ASCII text is text",
        "tolerance:1",
        "5µs\n",
        "5.0µs\n",
        Some(r#"file "stdout" line 1 token 1: "5µs" vs "5.0µs""#),
    ),
    (
        "a sign after a word is text",
        "tolerance:1",
        "x-1\n",
        "x+1\n",
        Some(r#"file "stdout" line 1 token 1: "x-" vs "x+""#),
    ),
    ("a literal beyond f64 is text: equal", "tolerance:0", "1e400\n", "1e400\n", None),
    (
        "a literal beyond f64 is text: different spelling",
        "tolerance:1",
        "1e400\n",
        "1.0e400\n",
        Some(r#"file "stdout" line 1 token 1: "1e400" vs "1.0e400""#),
    ),
    (
        "a number vs text",
        "tolerance:1",
        "x 1.5\n",
        "x abc\n",
        Some(r#"file "stdout" line 1 token 2: "1.5" vs "abc""#),
    ),
    (
        "the place is counted by line",
        "tolerance:1e-6",
        "header\nb 1.0 2.0\nc\n",
        "header\nb 1.0 2.5\nc\n",
        Some(r#"file "stdout" line 2 token 3: "2.0" vs "2.5" (relative difference 2.0e-1)"#),
    ),
    (
        "exact text is exact",
        "tolerance:1",
        "converged\n",
        "Converged\n",
        Some(r#"file "stdout" line 1 token 1: "converged" vs "Converged""#),
    ),
    (
        "a big gap on both sides of 1",
        "tolerance:0.5",
        "0.1\n",
        "1.0\n",
        Some(r#"file "stdout" line 1 token 1: "0.1" vs "1.0" (relative difference 9.0e-1)"#),
    ),
];

#[test]
fn golden_tolerance_cases() {
    for (what, v, a, b, want) in GOLDEN {
        let (a, b) = (Owned::stdout(a), Owned::stdout(b));
        let want = want.map_or(Ok(()), |w| Err(w.to_owned()));
        assert_eq!(verdict(v, &a, &b), want, "{what}");
        // Agreement is symmetric; the message names the same place.
        let back = verdict(v, &b, &a);
        assert_eq!(back.is_ok(), want.is_ok(), "{what}, swapped: {back:?}");
    }
}

#[test]
fn exit_codes_must_match() {
    let (a, mut b) = (Owned::stdout("ok\n"), Owned::stdout("ok\n"));
    b.exit_code = 1;
    for v in ["exact", "tolerance:1"] {
        assert_eq!(verdict(v, &a, &b), Err("exit codes differ: 0 vs 1".to_owned()), "{v}");
    }
}

#[test]
fn exact_compares_digests() {
    let (a, b) = (Owned::stdout("1.0\n"), Owned::stdout("1.00\n"));
    assert_eq!(verdict("exact", &a, &a.clone()), Ok(()));
    let e = agree(&Exact, &a, &b).unwrap_err();
    assert!(matches!(e, Disagreement::Digest { .. }), "{e:?}");
    let shown = e.to_string();
    assert!(shown.starts_with("result digests differ: "), "{shown}");
    assert_eq!(shown.split(" vs ").count(), 2, "{shown}");
    // The same bytes under tolerance.
    assert_eq!(verdict("tolerance:0", &a, &b), Ok(()));
}

#[test]
fn exact_trusts_the_digest_not_the_files() {
    // verify/exact is as good as the digests the nodes report: equal digests are agreement.
    let a = Owned::stdout("1\n");
    let b = Owned::stdout("2\n");
    let d = a.digest();
    let (fa, fb) = (a.files_ref(), b.files_ref());
    let ra = ReplicaResult { exit_code: 0, digest: d, files: &fa };
    let rb = ReplicaResult { exit_code: 0, digest: d, files: &fb };
    assert_eq!(Exact.agree(&ra, &rb), Ok(()));
    assert!(validator(&spec("tolerance:0")).agree(&ra, &rb).is_err());
}

impl Owned {
    fn files_ref(&self) -> Vec<(&str, &[u8])> {
        self.files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect()
    }
}

#[test]
fn missing_and_extra_files() {
    let a = Owned::new(0, &[("out.dat", b"1\n"), ("stderr", b""), ("stdout", b"")]);
    let b = Owned::new(0, &[("result.csv", b"1\n"), ("stderr", b""), ("stdout", b"")]);
    assert_eq!(
        verdict("tolerance:1", &a, &b),
        Err(r#"file sets differ: only in a: "out.dat"; only in b: "result.csv";"#.to_owned())
    );
    let c = Owned::new(0, &[("stderr", b""), ("stdout", b"")]);
    assert_eq!(
        verdict("tolerance:1", &a, &c),
        Err(r#"file sets differ: only in a: "out.dat";"#.to_owned())
    );
}

#[test]
fn files_are_matched_by_name_whatever_their_order() {
    let a = Owned::new(0, &[("a", b"1.0"), ("b", b"2.0")]);
    let files_b: Vec<(&str, &[u8])> = vec![("b", b"2.00"), ("a", b"1.00")];
    a.with(|ra| {
        let rb = ReplicaResult { exit_code: 0, digest: [0; 32], files: &files_b };
        assert_eq!(validator(&spec("tolerance:0")).agree(&ra, &rb), Ok(()));
    });
}

#[test]
fn the_first_file_by_name_is_reported() {
    let a = Owned::new(0, &[("a", b"1"), ("b", b"2")]);
    let b = Owned::new(0, &[("a", b"3"), ("b", b"4")]);
    let e = verdict("tolerance:0", &a, &b).unwrap_err();
    assert!(e.starts_with(r#"file "a" line 1 token 1: "1" vs "3""#), "{e}");
}

#[test]
fn binary_files_compare_as_bytes() {
    let a = Owned::new(0, &[("w.bin", &[0xff, 0x00, 0x01, 0x02])]);
    let b = Owned::new(0, &[("w.bin", &[0xff, 0x00, 0x01, 0x03])]);
    assert_eq!(verdict("tolerance:1", &a, &a.clone()), Ok(()));
    assert_eq!(
        verdict("tolerance:1", &a, &b),
        Err(r#"file "w.bin" differs at byte 3 (compared as bytes; 4 vs 4 bytes)"#.to_owned())
    );
    let short = Owned::new(0, &[("w.bin", &[0xff, 0x00])]);
    assert_eq!(
        verdict("tolerance:1", &a, &short),
        Err(r#"file "w.bin" differs at byte 2 (compared as bytes; 4 vs 2 bytes)"#.to_owned())
    );
    // UTF-8 on one side only: bytes, even where the text would agree numerically.
    let text = Owned::new(0, &[("w.bin", b"1.0")]);
    let bin = Owned::new(0, &[("w.bin", b"1.00\xff")]);
    assert_eq!(
        verdict("tolerance:1", &text, &bin),
        Err(r#"file "w.bin" differs at byte 3 (compared as bytes; 3 vs 5 bytes)"#.to_owned())
    );
}

#[test]
fn long_tokens_are_shortened_around_their_difference_and_the_line_stays_one_line() {
    let x = "x".repeat(1000);
    let a = Owned::stdout(&format!("{x}a\n"));
    let b = Owned::stdout(&format!("{x}b\n"));
    let e = verdict("tolerance:0", &a, &b).unwrap_err();
    let tail = "x".repeat(16);
    assert_eq!(e, format!(r#"file "stdout" line 1 token 1: "...{tail}a" vs "...{tail}b""#));
    let a = Owned::stdout(&format!("a{x}\n"));
    let b = Owned::stdout(&format!("b{x}\n"));
    let e = verdict("tolerance:0", &a, &b).unwrap_err();
    let head = "x".repeat(63);
    assert_eq!(e, format!(r#"file "stdout" line 1 token 1: "a{head}..." vs "b{head}...""#));
    let names = Owned::new(0, &[("two\nlines", b"")]);
    let e = verdict("tolerance:0", &names, &Owned::new(0, &[])).unwrap_err();
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn registry_names() {
    assert_eq!(validator(&spec("exact")).name(), "verify/exact");
    assert_eq!(validator(&spec("tolerance:1e-6")).name(), "verify/tolerance");
    for s in ["exact", "tolerance:0"] {
        let v = validator(&spec(s));
        assert!(crate::VALIDATORS.contains(&v.name()));
        assert_eq!(v.name(), spec(s).validator_name());
    }
}

// ---- the tokenizer ----

fn tokens(s: &str) -> Vec<String> {
    Tokens::new(s)
        .map(|t| match t {
            Tok::Newline => "NL".to_owned(),
            Tok::Num(n) => format!("N({})", n.text),
            Tok::Text(t) => format!("T({t})"),
        })
        .collect()
}

#[test]
fn tokenizer_splits_numbers_text_and_lines() {
    for (input, want) in [
        ("", &[][..]),
        ("  \t\r ", &[]),
        ("a 1 -2.5e+3\n", &["T(a)", "N(1)", "N(-2.5e+3)", "NL"]),
        ("x=1.5,y=2", &["T(x=)", "N(1.5)", "T(,y=)", "N(2)"]),
        (
            "(.5) [5.] {-.5e-1}",
            &["T(()", "N(.5)", "T())", "T([)", "N(5.)", "T(])", "T({)", "N(-.5e-1)", "T(})"],
        ),
        ("1-2", &["N(1)", "T(-)", "N(2)"]),
        ("x-1", &["T(x-)", "N(1)"]),
        ("1e", &["T(1e)"]),
        ("1e+", &["T(1e+)"]),
        ("1e5.", &["N(1e5)", "T(.)"]),
        ("1.5.", &["N(1.5)", "T(.)"]),
        ("1.2.3", &["T(1.2.3)"]),
        ("1e-5.3", &["T(1e-5.3)"]),
        ("v1.2", &["T(v1.2)"]),
        ("a.5", &["T(a.5)"]),
        ("10ms", &["T(10ms)"]),
        ("0x1f", &["T(0x1f)"]),
        ("_1", &["T(_1)"]),
        ("1_000", &["T(1_000)"]),
        (
            "information nano inf nan -nan Infinity infinite",
            &[
                "T(information)",
                "T(nano)",
                "N(inf)",
                "N(nan)",
                "N(-nan)",
                "N(Infinity)",
                "T(infinite)",
            ],
        ),
        ("-", &["T(-)"]),
        ("- 1", &["T(-)", "N(1)"]),
        ("--1", &["T(-)", "N(-1)"]),
        ("+-1", &["T(+)", "N(-1)"]),
        (".", &["T(.)"]),
        ("...", &["T(...)"]),
        ("é1 é 1", &["T(é1)", "T(é)", "N(1)"]),
        ("1\n\n2", &["N(1)", "NL", "NL", "N(2)"]),
        ("1e400 -1e400 1e-400", &["T(1e400)", "T(-1e400)", "N(1e-400)"]),
    ] {
        assert_eq!(tokens(input), want, "{input:?}");
    }
}

#[test]
fn tokenizer_values() {
    fn num(s: &str) -> Num<'_> {
        match Tokens::new(s).next() {
            Some(Tok::Num(n)) => n,
            other => panic!("{s}: {other:?}"),
        }
    }
    assert_eq!(num("1e3").value, 1000.0);
    assert_eq!(num("1e3").int, None);
    assert_eq!(num("+42").int, Some(42));
    assert_eq!(num("-0").int, Some(0));
    assert_eq!(num("170141183460469231731687303715884105728").int, None, "beyond i128");
    assert!(num("-nan").value.is_nan());
    assert_eq!(num("-Infinity").value, f64::NEG_INFINITY);
    assert_eq!(num("5.").value, 5.0);
    assert_eq!(num("1.e2").value, 100.0);
}

#[test]
fn tokenizer_is_linear_on_adversarial_input() {
    // Not a benchmark: a quadratic tokenizer would take minutes here, a linear one well under
    // a second even unoptimised.
    const N: usize = 1 << 20;
    for unit in ["1", "1e", "-1e-", "1.", ".1", "1.2", "nan", "a1", "-", "1e-5.", "x-1 ", "9\n"] {
        let s = unit.repeat(N / unit.len());
        let count = Tokens::new(&s).count();
        assert!(count <= s.len(), "{unit}");
    }
}

// ---- classes ----

#[test]
fn classes_in_order_of_first_appearance() {
    let rs = ["1.0", "2.0", "1.0000001", "2.0000001", "3.0"].map(Owned::stdout);
    let v = validator(&spec("tolerance:1e-6"));
    assert_eq!(classes_of(&*v, &rs), vec![vec![0, 2], vec![1, 3], vec![4]]);
    assert_eq!(classes_of(&Exact, &rs), vec![vec![0], vec![1], vec![2], vec![3], vec![4]]);
    assert_eq!(classes_of(&*v, &[]), Vec::<Vec<usize>>::new());
}

#[test]
fn tolerance_is_not_transitive_and_classes_compare_with_the_first_member() {
    // With ABS 1: 0 ~ 0.8, 0.8 ~ 1.6, but 0 !~ 1.6.
    let v = validator(&spec("tolerance:0,1"));
    let rs = ["0", "0.8", "1.6"].map(Owned::stdout);
    assert!(agree(&*v, &rs[0], &rs[1]).is_ok());
    assert!(agree(&*v, &rs[1], &rs[2]).is_ok());
    assert!(agree(&*v, &rs[0], &rs[2]).is_err());
    // 1.6 is compared with 0 (its would-be class's first member), not with 0.8.
    assert_eq!(classes_of(&*v, &rs), vec![vec![0, 1], vec![2]]);
    // Another order, another (equally deterministic) answer: callers fix the order.
    let rs = ["0.8", "0", "1.6"].map(Owned::stdout);
    assert_eq!(classes_of(&*v, &rs), vec![vec![0, 1, 2]]);
}

fn classes_of(v: &dyn Validator, owned: &[Owned]) -> Vec<Vec<usize>> {
    let files: Vec<Vec<(&str, &[u8])>> = owned.iter().map(Owned::files_ref).collect();
    let rs: Vec<ReplicaResult<'_>> = owned
        .iter()
        .zip(&files)
        .map(|(o, f)| ReplicaResult { exit_code: o.exit_code, digest: o.digest(), files: f })
        .collect();
    classes(v, &rs)
}

// ---- properties ----

/// Text that is mostly numbers, signs, exponents, dots, words and blanks.
fn text() -> impl Strategy<Value = String> {
    "([0-9]{1,3}|[-+.eE]|nan|inf|x|ab|[ \t]{1,2}|\n|µ){0,24}"
}

fn tolerance_spec() -> impl Strategy<Value = VerifySpec> {
    (prop_oneof![Just(0.0), 1e-12..1.0f64], prop_oneof![Just(0.0), 1e-12..1.0f64])
        .prop_map(|(r, a)| VerifySpec::tolerance(r, a).unwrap())
}

fn result() -> impl Strategy<Value = Owned> {
    (
        -1..2i32,
        prop::collection::btree_map(
            prop_oneof![Just("stdout".to_owned()), Just("stderr".to_owned()), "[a-c]\\.out"],
            prop_oneof![
                3 => text().prop_map(String::into_bytes),
                1 => prop::collection::vec(any::<u8>(), 0..16),
            ],
            0..4,
        ),
    )
        .prop_map(|(exit_code, files)| Owned { exit_code, files: files.into_iter().collect() })
}

/// `n` numbers on lines of up to three, with `k`-th replaced by `x` when given.
fn numbers_text(values: &[f64], replace: Option<(usize, f64)>) -> String {
    let mut s = String::from("# energies\n");
    for (i, v) in values.iter().enumerate() {
        let v = match replace {
            Some((k, x)) if k == i => x,
            _ => *v,
        };
        s.push_str(&format!("{v:?}"));
        s.push(if i % 3 == 2 { '\n' } else { ' ' });
    }
    s
}

proptest! {
    #[test]
    fn a_result_agrees_with_itself(r in result(), tol in tolerance_spec()) {
        prop_assert_eq!(agree(&Exact, &r, &r.clone()), Ok(()));
        prop_assert_eq!(agree(&*validator(&tol), &r, &r.clone()), Ok(()));
    }

    #[test]
    fn agreement_is_symmetric(a in result(), b in result(), tol in tolerance_spec()) {
        let v = validator(&tol);
        prop_assert_eq!(agree(&*v, &a, &b).is_ok(), agree(&*v, &b, &a).is_ok());
    }

    #[test]
    fn texts_agreement_is_symmetric(a in text(), b in text(), tol in tolerance_spec()) {
        let v = validator(&tol);
        let (a, b) = (Owned::stdout(&a), Owned::stdout(&b));
        prop_assert_eq!(agree(&*v, &a, &b).is_ok(), agree(&*v, &b, &a).is_ok());
    }

    #[test]
    fn exact_agreement_implies_tolerance_agreement(
        a in result(), b in result(), same in any::<bool>(), tol in tolerance_spec(),
    ) {
        // Digests here are a function of the contents, as blake3's are.
        let b = if same { a.clone() } else { b };
        if agree(&Exact, &a, &b).is_ok() {
            prop_assert_eq!(agree(&*validator(&tol), &a, &b), Ok(()));
        }
    }

    #[test]
    fn a_number_moved_beyond_tolerance_disagrees_and_within_agrees(
        values in prop::collection::vec(-1e6..1e6f64, 1..12),
        k in any::<prop::sample::Index>(),
        tol in tolerance_spec(),
        up in any::<bool>(),
        scale in 1.5..100.0f64,
    ) {
        let (rel, abs) = match tol {
            VerifySpec::Tolerance { rel, abs } => (rel.get(), abs.get()),
            VerifySpec::Exact => unreachable!(),
        };
        let k = k.index(values.len());
        let v = values[k];
        let allowed = abs.max(rel * v.abs());
        let step = (allowed * scale).max(1e-300) * if up { 1.0 } else { -1.0 };
        let far = v + step + step.signum() * rel * v.abs() * scale;
        let limit = |x: f64| abs.max(rel * v.abs().max(x.abs()));
        prop_assume!((far - v).abs() > limit(far));
        let validator = validator(&tol);
        let a = Owned::stdout(&numbers_text(&values, None));
        let b = Owned::stdout(&numbers_text(&values, Some((k, far))));
        match agree(&*validator, &a, &b) {
            Err(Disagreement::Token { line, token, a: ta, b: tb, .. }) => {
                prop_assert_eq!(line, 2 + k / 3);
                prop_assert_eq!(token, 1 + k % 3);
                prop_assert_eq!(ta, Some(format!("{v:?}")));
                prop_assert_eq!(tb, Some(format!("{far:?}")));
            }
            other => prop_assert!(false, "{:?}", other),
        }
        let near = v + step / (2.0 * scale);
        if (near - v).abs() <= limit(near) {
            let c = Owned::stdout(&numbers_text(&values, Some((k, near))));
            prop_assert_eq!(agree(&*validator, &a, &c), Ok(()));
        }
    }

    #[test]
    fn classes_partition_and_each_member_agrees_with_its_first(
        rs in prop::collection::vec(
            prop_oneof![Just("1.0"), Just("1.5"), Just("2.0"), Just("x"), Just("1.0 x")]
                .prop_map(Owned::stdout),
            0..8,
        ),
        tol in tolerance_spec(),
    ) {
        let v = validator(&tol);
        let cs = classes_of(&*v, &rs);
        let mut all: Vec<usize> = cs.iter().flatten().copied().collect();
        all.sort_unstable();
        prop_assert_eq!(all, (0..rs.len()).collect::<Vec<_>>());
        for (ci, c) in cs.iter().enumerate() {
            prop_assert!(c.windows(2).all(|w| w[0] < w[1]));
            for &m in c {
                prop_assert!(agree(&*v, &rs[c[0]], &rs[m]).is_ok());
                // It did not fit an earlier class.
                for earlier in &cs[..ci] {
                    if m > earlier[0] {
                        prop_assert!(agree(&*v, &rs[earlier[0]], &rs[m]).is_err());
                    }
                }
            }
        }
        prop_assert!(cs.windows(2).all(|w| w[0][0] < w[1][0]));
    }

    #[test]
    fn tokens_cover_every_non_blank_byte_once(
        s in "\\PC{0,40}|([0-9]|[-+.eE]|nan|x|[ \t\r\n]){0,40}",
    ) {
        let mut joined = String::new();
        for t in Tokens::new(&s) {
            joined.push_str(match t {
                Tok::Newline => "\n",
                Tok::Num(n) => n.text,
                Tok::Text(t) => t,
            });
        }
        let bare: String =
            s.chars().filter(|c| !matches!(c, ' ' | '\t' | '\r' | '\x0b' | '\x0c')).collect();
        prop_assert_eq!(joined, bare);
    }
}

#[test]
fn replicas_that_ended_alike_agree_and_endings_never_mix() {
    use chorus_core::fsm::EndCause::{Exited, OutOfMemory, TimeLimit};
    let (ok, partial, other) =
        (Owned::stdout("1.0\n"), Owned::stdout("0.5\n"), Owned::stdout("0.9\n"));
    // (cause, signal, result) of replicas 0..6, in index order.
    let reports = [
        (Exited, 0, &ok),
        (TimeLimit, 15, &partial),
        (Exited, 0, &ok),
        (TimeLimit, 9, &other),
        (OutOfMemory, 9, &partial),
        (Exited, 9, &ok),
    ];
    let owned: Vec<Vec<(&str, &[u8])>> = reports
        .iter()
        .map(|(_, _, o)| o.files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect())
        .collect();
    let reported: Vec<Reported<'_>> = reports
        .iter()
        .zip(&owned)
        .map(|((cause, signal, o), files)| Reported {
            cause: *cause,
            signal: *signal,
            result: ReplicaResult { exit_code: o.exit_code, digest: o.digest(), files },
        })
        .collect();
    assert_eq!(
        classify(&Exact, &reported),
        vec![vec![0, 2], vec![1, 3], vec![4], vec![5]],
        "timed out twice with different partial output: one class; killed by a signal: \
         not the same as exiting; the OOM killer: a class of its own"
    );
}
