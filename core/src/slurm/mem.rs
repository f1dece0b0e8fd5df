//! Memory sizes: `--mem=2G` in, `MinMemoryCPU=256M` / `mem=8000M` out.
//!
//! ```text
//!   "100" "100M" "2G" "1T" "512K" ──parse_mem_mb──▶ 100, 100, 2048, 1048576, 1  (MB)
//!   256 ──format_mem_mb──▶ "256M"    2048 ──▶ "2G"    8000 ──▶ "8000M"    0 ──▶ "0"
//! ```
//!
//! Observed in Slurm 22.05, all in megabytes:
//! * with a unit: scontrol `MinMemoryCPU=256M`, `TRES=cpu=1,mem=256M,node=1,billing=1`,
//!   `CfgTRES=cpu=2,mem=8000M`, partition `TRES=...,mem=16000M,...`, squeue `%m` / MIN_MEMORY
//!   `256M`, sacct `ReqMem` `256M`. The number is moved to a larger unit only while it divides
//!   exactly by 1024 (so 8000 stays `8000M`; 2048 would print `2G`): [`format_mem_mb`].
//! * without a unit: scontrol node `RealMemory=8000 AllocMem=512 FreeMem=23708`, and the
//!   environment (`SLURM_MEM_PER_NODE=100`, `SLURM_MEM_PER_CPU=256`): plain `mb.to_string()`.
//! * zero prints as `0` without a unit (`MinTmpDiskNode=0`).
//! * `--mem=lots` is refused (`Invalid --mem specification`).

use super::ParseError;

const WHAT: &str = "memory size";

/// Parses a memory size into megabytes: a whole number with an optional unit `K`, `M`, `G`
/// or `T` (any case; default `M`). Kilobytes round up to whole megabytes. `0` is accepted
/// (`--mem=0` asks for all of a node's memory).
pub fn parse_mem_mb(s: &str) -> Result<u64, ParseError> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = s.split_at(digits);
    if number.is_empty() {
        return Err(ParseError::new(WHAT, s, "expected a number of megabytes, e.g. 100, 100M, 2G"));
    }
    let n: u64 =
        number.parse().map_err(|_| ParseError::new(WHAT, s, "number too large".to_owned()))?;
    let too_large = || ParseError::new(WHAT, s, "too large");
    match unit.to_ascii_uppercase().as_str() {
        "" | "M" => Ok(n),
        "K" => Ok(n.div_ceil(1024)),
        "G" => n.checked_mul(1 << 10).ok_or_else(too_large),
        "T" => n.checked_mul(1 << 20).ok_or_else(too_large),
        _ => Err(ParseError::new(WHAT, s, format!("unknown unit `{unit}` (use K, M, G or T)"))),
    }
}

/// Megabytes as scontrol, squeue and TRES strings print them: `256M`, `2G`, `8000M`, `1T`, and
/// `0` for zero. See the module docs for where Slurm prints a bare number instead.
pub fn format_mem_mb(mb: u64) -> String {
    if mb == 0 {
        return "0".to_owned();
    }
    const UNITS: [char; 4] = ['M', 'G', 'T', 'P'];
    let mut n = mb;
    let mut unit = 0;
    while unit + 1 < UNITS.len() && n.is_multiple_of(1024) {
        n /= 1024;
        unit += 1;
    }
    format!("{n}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn mb(s: &str) -> u64 {
        parse_mem_mb(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn mem_units() {
        assert_eq!(mb("100"), 100);
        assert_eq!(mb("100M"), 100);
        assert_eq!(mb("100m"), 100);
        assert_eq!(mb("2G"), 2048);
        assert_eq!(mb("2g"), 2048);
        assert_eq!(mb("1T"), 1_048_576);
        assert_eq!(mb("0"), 0);
    }

    #[test]
    fn mem_kilobytes_round_up() {
        assert_eq!(mb("512K"), 1);
        assert_eq!(mb("1024K"), 1);
        assert_eq!(mb("1025k"), 2);
        assert_eq!(mb("0K"), 0);
    }

    #[test]
    fn mem_100m_as_observed() {
        // `sbatch --mem=100M` gave SLURM_MEM_PER_NODE=100.
        assert_eq!(mb("100M").to_string(), "100");
    }

    #[test]
    fn mem_lots_is_refused_as_observed() {
        let e = parse_mem_mb("lots").unwrap_err();
        assert_eq!(e.what, "memory size");
        assert_eq!(e.input, "lots");
    }

    #[test]
    fn mem_malformed_is_refused() {
        for s in [
            "",
            "-1",
            "-1G",
            "G",
            "1.5G",
            "1GB",
            "1 G",
            " 1",
            "1P",
            "+1",
            "99999999999999999999",
            "18014398509481984T",
        ] {
            assert!(parse_mem_mb(s).is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn scontrol_memory_as_observed() {
        assert_eq!(format_mem_mb(256), "256M");
        assert_eq!(format_mem_mb(512), "512M");
        assert_eq!(format_mem_mb(8000), "8000M");
        assert_eq!(format_mem_mb(16000), "16000M");
        assert_eq!(format_mem_mb(0), "0");
    }

    #[test]
    fn memory_moves_up_a_unit_only_when_exact() {
        assert_eq!(format_mem_mb(1024), "1G");
        assert_eq!(format_mem_mb(2048), "2G");
        assert_eq!(format_mem_mb(1536), "1536M");
        assert_eq!(format_mem_mb(1 << 20), "1T");
        assert_eq!(format_mem_mb(1 << 30), "1P");
        assert_eq!(format_mem_mb(1 << 40), "1024P");
    }

    proptest! {
        #[test]
        fn parse_of_format_is_identity(m in 1u64..(1 << 30)) {
            // Below 1P: `P` is printed but, like the brief's --mem syntax, not parsed.
            prop_assert_eq!(parse_mem_mb(&format_mem_mb(m)).unwrap(), m);
        }

        #[test]
        fn parse_mem_never_panics(s in "\\PC{0,12}") {
            let _ = parse_mem_mb(&s);
        }
    }
}
