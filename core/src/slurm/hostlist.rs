//! Slurm host lists: `node[1-3,5]`, `other[01-02,10]` (`scontrol show hostnames|hostlist`,
//! `NodeList=`, `SLURM_JOB_NODELIST`).
//!
//! ```text
//!   "node[1-2],other[01-03]" ──expand──▶ node1 node2 other01 other02 other03
//!   node1 node2 node3 other01 other02 other10 ──compress──▶ "node[1-3],other[01-02,10]"
//! ```
//!
//! Observed in Slurm 22.05 (`scontrol.txt`): exactly the two examples above, whose input was
//! already in order. `compress` keeps the order it is given, as 22.05's `show hostlist` does as
//! far as we know (a separate `show hostlistsorted` appeared in a later release): a host joins
//! the bracket before it only when the two are adjacent in the input with the same prefix, and
//! a range only when its number is the next one up. That keeps `expand(compress(v)) == v` for
//! any list of plain host names.
//!
//! Zero padding: a range takes its width from its first number (`01-10` gives `01 ... 10`);
//! `compress` only puts a host in a range when printing its number at that width gives back
//! the same text. Only trailing digits count as the host's number (`a01b` stays as it is),
//! while `expand` accepts brackets anywhere (`a[01-03]b`) and several of them (a product, the
//! first bracket varying slowest).

use super::ParseError;

const WHAT: &str = "host list";

/// Our ceiling on how many names one expression may expand to, so that a typo like
/// `n[0-999999999]` is an error rather than an out-of-memory.
pub const MAX_EXPANDED_HOSTS: usize = 1 << 20;

/// Longest digit run we treat as a number (fits a `u64`).
const MAX_DIGITS: usize = 18;

/// Expands a host list. Items are separated by `,` or whitespace outside brackets; empty items
/// are skipped, so `""` expands to nothing.
pub fn expand(list: &str) -> Result<Vec<String>, ParseError> {
    let mut out = Vec::new();
    for item in split_top_level(list)? {
        expand_item(list, item, &mut out)?;
    }
    Ok(out)
}

fn split_top_level(list: &str) -> Result<Vec<&str>, ParseError> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in list.char_indices() {
        match c {
            '[' => {
                if depth > 0 {
                    return Err(ParseError::new(WHAT, list, "nested '[' is not allowed"));
                }
                depth += 1;
            }
            ']' => {
                if depth == 0 {
                    return Err(ParseError::new(WHAT, list, "']' without '['"));
                }
                depth -= 1;
            }
            ',' | ' ' | '\t' | '\n' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if depth > 0 {
        return Err(ParseError::new(WHAT, list, "'[' without ']'"));
    }
    items.push(&list[start..]);
    Ok(items.into_iter().filter(|s| !s.is_empty()).collect())
}

/// One piece of a host expression: literal text, or the numbers of one bracket.
enum Segment<'a> {
    Text(&'a str),
    Numbers(Vec<String>),
}

fn expand_item(list: &str, item: &str, out: &mut Vec<String>) -> Result<(), ParseError> {
    let mut segments = Vec::new();
    let mut rest = item;
    let mut total: usize = 1;
    while let Some(open) = rest.find('[') {
        let close = open + rest[open..].find(']').expect("brackets were checked to balance");
        if open > 0 {
            segments.push(Segment::Text(&rest[..open]));
        }
        let numbers = bracket_numbers(list, &rest[open + 1..close])?;
        total = total.saturating_mul(numbers.len());
        if total.saturating_add(out.len()) > MAX_EXPANDED_HOSTS {
            return Err(ParseError::new(
                WHAT,
                list,
                format!("expands to more than {MAX_EXPANDED_HOSTS} names"),
            ));
        }
        segments.push(Segment::Numbers(numbers));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        segments.push(Segment::Text(rest));
    }
    let mut names = vec![String::new()];
    for seg in &segments {
        names = match seg {
            Segment::Text(t) => names.into_iter().map(|n| n + t).collect(),
            Segment::Numbers(nums) => {
                names.iter().flat_map(|n| nums.iter().map(move |x| format!("{n}{x}"))).collect()
            }
        };
    }
    out.extend(names);
    Ok(())
}

/// `1-3,05,7` inside a bracket, as the texts the names will carry.
fn bracket_numbers(list: &str, inner: &str) -> Result<Vec<String>, ParseError> {
    if inner.is_empty() {
        return Err(ParseError::new(WHAT, list, "empty '[]'"));
    }
    let mut out = Vec::new();
    for part in inner.split(',') {
        let (lo_text, hi_text) = part.split_once('-').unwrap_or((part, part));
        let lo = bracket_number(list, lo_text)?;
        let hi = bracket_number(list, hi_text)?;
        if lo > hi {
            return Err(ParseError::new(WHAT, list, format!("range `{part}` is reversed")));
        }
        if (hi - lo) as usize >= MAX_EXPANDED_HOSTS - out.len() {
            return Err(ParseError::new(
                WHAT,
                list,
                format!("expands to more than {MAX_EXPANDED_HOSTS} names"),
            ));
        }
        let width = lo_text.len();
        out.extend((lo..=hi).map(|n| format!("{n:0width$}")));
    }
    Ok(out)
}

fn bracket_number(list: &str, text: &str) -> Result<u64, ParseError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::new(WHAT, list, format!("`{text}` in brackets is not a number")));
    }
    if text.len() > MAX_DIGITS {
        return Err(ParseError::new(WHAT, list, format!("number `{text}` is too long")));
    }
    Ok(text.parse().expect("at most 18 digits fit a u64"))
}

/// A run `lo..=hi` printed with `width` digits (zero padded).
struct Run {
    lo: u64,
    hi: u64,
    width: usize,
}

enum Group<'a> {
    Plain(&'a str),
    Numbered { prefix: &'a str, runs: Vec<Run> },
}

/// Splits `node012` into (`node`, `012`); `None` when there is no usable trailing number.
fn split_number(host: &str) -> Option<(&str, &str)> {
    let digits = host.bytes().rev().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > MAX_DIGITS {
        return None;
    }
    Some(host.split_at(host.len() - digits))
}

/// Compresses host names into Slurm's bracket form, keeping their order (see the module docs):
/// `node[1-3],other[01-02,10]`. An empty slice gives `""`.
pub fn compress(hosts: &[String]) -> String {
    let mut groups: Vec<Group> = Vec::new();
    for host in hosts {
        let Some((prefix, digits)) = split_number(host) else {
            groups.push(Group::Plain(host));
            continue;
        };
        let value: u64 = digits.parse().expect("at most 18 digits fit a u64");
        if let Some(Group::Numbered { prefix: p, runs }) = groups.last_mut()
            && *p == prefix
        {
            let last = runs.last_mut().expect("a numbered group has a run");
            if last.hi.checked_add(1) == Some(value)
                && format!("{value:0w$}", w = last.width) == digits
            {
                last.hi = value;
            } else {
                runs.push(Run { lo: value, hi: value, width: digits.len() });
            }
            continue;
        }
        groups.push(Group::Numbered {
            prefix,
            runs: vec![Run { lo: value, hi: value, width: digits.len() }],
        });
    }
    let mut out = String::new();
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match g {
            Group::Plain(h) => out.push_str(h),
            Group::Numbered { prefix, runs } => {
                out.push_str(prefix);
                let single = runs.len() == 1 && runs[0].lo == runs[0].hi;
                if !single {
                    out.push('[');
                }
                for (j, r) in runs.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    let w = r.width;
                    out.push_str(&format!("{:0w$}", r.lo));
                    if r.hi != r.lo {
                        out.push_str(&format!("-{:0w$}", r.hi));
                    }
                }
                if !single {
                    out.push(']');
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn exp(s: &str) -> Vec<String> {
        expand(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn show_hostnames_as_observed() {
        assert_eq!(
            exp("node[1-2],other[01-03]"),
            names(&["node1", "node2", "other01", "other02", "other03"])
        );
    }

    #[test]
    fn show_hostlist_as_observed() {
        let hosts = names(&["node1", "node2", "node3", "other01", "other02", "other10"]);
        assert_eq!(compress(&hosts), "node[1-3],other[01-02,10]");
    }

    #[test]
    fn expand_ranges_and_singles() {
        assert_eq!(exp("node[1-3,5]"), names(&["node1", "node2", "node3", "node5"]));
        assert_eq!(exp("n1,n2"), names(&["n1", "n2"]));
        assert_eq!(exp("node1"), names(&["node1"]));
        assert_eq!(exp(""), Vec::<String>::new());
        assert_eq!(exp("n1, n2"), names(&["n1", "n2"]));
    }

    #[test]
    fn expand_keeps_zero_padding_and_suffix() {
        assert_eq!(exp("a[01-03]b"), names(&["a01b", "a02b", "a03b"]));
        assert_eq!(exp("n[08-10]"), names(&["n08", "n09", "n10"]));
        assert_eq!(exp("n[9-10]"), names(&["n9", "n10"]));
        assert_eq!(exp("n[001-002]"), names(&["n001", "n002"]));
    }

    #[test]
    fn expand_several_brackets_is_a_product() {
        assert_eq!(exp("r[1-2]n[1-2]"), names(&["r1n1", "r1n2", "r2n1", "r2n2"]));
    }

    #[test]
    fn expand_refuses_malformed() {
        for s in [
            "node[1-3",
            "node]",
            "node[]",
            "node[a-b]",
            "node[3-1]",
            "n[1[2]]",
            "n[1-]",
            "n[-1]",
            "n[1,,2]",
            "n[1-2-3]",
            "n[0-99999999999]",
            "n[1234567890123456789]",
        ] {
            assert!(expand(s).is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn expand_refuses_huge_products() {
        assert!(expand("a[0-9999]b[0-9999]").is_err());
    }

    #[test]
    fn compress_keeps_order_and_does_not_merge_across_prefixes() {
        assert_eq!(compress(&names(&["n3", "n1", "n2"])), "n[3,1-2]");
        assert_eq!(compress(&names(&["n1", "m1", "n2"])), "n1,m1,n2");
        assert_eq!(compress(&names(&["n1", "n1"])), "n[1,1]");
    }

    #[test]
    fn compress_single_host_has_no_brackets() {
        assert_eq!(compress(&names(&["node1"])), "node1");
        assert_eq!(compress(&names(&["login"])), "login");
        assert_eq!(compress(&[]), "");
    }

    #[test]
    fn compress_padding_rules() {
        assert_eq!(compress(&names(&["n09", "n10"])), "n[09-10]");
        assert_eq!(compress(&names(&["n9", "n10"])), "n[9-10]");
        assert_eq!(compress(&names(&["n9", "n010"])), "n[9,010]");
        assert_eq!(compress(&names(&["n1", "n01"])), "n[1,01]");
    }

    #[test]
    fn compress_leaves_inner_numbers_alone() {
        assert_eq!(compress(&names(&["a01b", "a02b"])), "a01b,a02b");
    }

    fn arb_host() -> impl Strategy<Value = String> {
        ("[a-c]{1,2}(-[a-c])?", proptest::option::of("[0-9]{1,3}"))
            .prop_map(|(p, d)| format!("{p}{}", d.unwrap_or_default()))
    }

    fn arb_hosts() -> impl Strategy<Value = Vec<String>> {
        // Runs of consecutive numbers, so that ranges actually form.
        proptest::collection::vec(("[a-c]{1,2}", 0u64..120, 1usize..6, 0usize..4), 0..8)
            .prop_flat_map(|runs| {
                let hosts: Vec<String> = runs
                    .into_iter()
                    .flat_map(|(p, start, len, width)| {
                        (start..start + len as u64).map(move |n| format!("{p}{n:0width$}"))
                    })
                    .collect();
                proptest::collection::vec(arb_host(), 0..4).prop_map(move |extra| {
                    let mut v = hosts.clone();
                    v.extend(extra);
                    v
                })
            })
    }

    proptest! {
        #[test]
        fn expand_of_compress_is_identity(hosts in arb_hosts()) {
            prop_assert_eq!(expand(&compress(&hosts)).unwrap(), hosts);
        }

        #[test]
        fn compress_of_expand_is_identity_for_compressed_text(hosts in arb_hosts()) {
            let text = compress(&hosts);
            prop_assert_eq!(compress(&expand(&text).unwrap()), text);
        }

        #[test]
        fn expand_never_panics(s in "[a-c0-9,\\[\\]-]{0,24}") {
            let _ = expand(&s);
        }
    }
}
