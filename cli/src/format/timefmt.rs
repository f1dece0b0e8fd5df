//! Wall-clock times as Slurm's commands print them, in local time (or a fixed offset, for
//! tests and for callers that want UTC).
//!
//! ```text
//!   epoch 1795383318 ──iso──▶   "2026-11-22T21:35:18"       scontrol, squeue %V/%S, sacct Start
//!                    ──ctime──▶ "Sun Nov 22 21:35:18 2026"  the first line of squeue -l, sinfo -l
//! ```
//!
//! The time zone is an argument ([`Tz`]): `Tz::Local` asks libc's `localtime_r` (which honours
//! `TZ` and /etc/localtime), `Tz::Fixed` needs nothing from the machine.

use std::fmt::Write as _;

/// Which clock face to print times on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Tz {
    /// The machine's local time zone, as libc sees it.
    #[default]
    Local,
    /// A fixed offset east of UTC, in seconds (`Fixed(0)` is UTC).
    Fixed(i32),
}

/// A moment broken down into calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tm {
    pub year: i64,
    /// 1..=12.
    pub month: u32,
    /// 1..=31.
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0 = Sunday.
    pub weekday: u32,
}

/// Breaks `epoch` (seconds since 1970, UTC) down in time zone `tz`.
pub fn broken_down(epoch: u64, tz: Tz) -> Tm {
    let epoch = i64::try_from(epoch).unwrap_or(i64::MAX / 2);
    match tz {
        Tz::Fixed(offset) => civil(epoch + i64::from(offset)),
        Tz::Local => local(epoch).unwrap_or_else(|| civil(epoch)),
    }
}

/// `2026-11-22T21:35:18`: Slurm's timestamp format.
pub fn iso(epoch: u64, tz: Tz) -> String {
    let t = broken_down(epoch, tz);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// [`iso`] of a time that may not be known, `none` (`Unknown`, `N/A`, `None`) when it is not.
pub fn iso_or(epoch: Option<u64>, tz: Tz, none: &str) -> String {
    match epoch {
        Some(e) => iso(e, tz),
        None => none.to_owned(),
    }
}

/// `Sun Nov 22 21:35:18 2026`: the date line `squeue -l` and `sinfo -l` start with (C's
/// `ctime` layout, without its newline; the day of the month is padded with a space).
pub fn ctime(epoch: u64, tz: Tz) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let t = broken_down(epoch, tz);
    let mut out = String::new();
    let _ = write!(
        out,
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        DAYS[t.weekday as usize % 7],
        MONTHS[(t.month as usize + 11) % 12],
        t.day,
        t.hour,
        t.minute,
        t.second,
        t.year
    );
    out
}

/// Calendar fields of a count of seconds since 1970-01-01T00:00:00 (proleptic Gregorian).
fn civil(secs: i64) -> Tm {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days to civil date: the well-known era-based algorithm (eras of 400 years).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Tm {
        year,
        month: month as u32,
        day: day as u32,
        hour: (rem / 3_600) as u32,
        minute: (rem % 3_600 / 60) as u32,
        second: (rem % 60) as u32,
        // 1970-01-01 was a Thursday.
        weekday: (days + 4).rem_euclid(7) as u32,
    }
}

// `time_t` is 32 bits wide on some targets.
#[allow(clippy::useless_conversion)]
fn local(epoch: i64) -> Option<Tm> {
    let t: libc::time_t = epoch.try_into().ok()?;
    // SAFETY: `tm` is plain old data, so all-zero is a valid value; localtime_r only writes
    // into the `tm` we hand it and reads `t`, both of which live for the whole call.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return None;
        }
        tm
    };
    Some(Tm {
        year: i64::from(tm.tm_year) + 1900,
        month: u32::try_from(tm.tm_mon + 1).ok()?,
        day: u32::try_from(tm.tm_mday).ok()?,
        hour: u32::try_from(tm.tm_hour).ok()?,
        minute: u32::try_from(tm.tm_min).ok()?,
        second: u32::try_from(tm.tm_sec).ok()?,
        weekday: u32::try_from(tm.tm_wday).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UTC: Tz = Tz::Fixed(0);

    #[test]
    fn iso_prints_slurm_timestamps() {
        assert_eq!(iso(0, UTC), "1970-01-01T00:00:00");
        assert_eq!(iso(1_795_383_318, UTC), "2026-11-22T21:35:18");
        assert_eq!(iso(951_782_400, UTC), "2000-02-29T00:00:00");
        assert_eq!(iso(1_795_383_318, Tz::Fixed(3_600)), "2026-11-22T22:35:18");
    }

    #[test]
    fn ctime_prints_the_long_listing_date_line() {
        assert_eq!(ctime(1_795_383_321, UTC), "Sun Nov 22 21:35:21 2026");
        assert_eq!(ctime(1_793_577_600, UTC), "Mon Nov  2 00:00:00 2026");
    }

    #[test]
    fn unknown_times_print_the_placeholder() {
        assert_eq!(iso_or(None, UTC, "Unknown"), "Unknown");
        assert_eq!(iso_or(Some(0), UTC, "Unknown"), "1970-01-01T00:00:00");
    }

    #[test]
    fn local_time_agrees_with_libc() {
        // Whatever the machine's zone, the result is a valid calendar time.
        let t = broken_down(1_795_383_318, Tz::Local);
        assert!((1..=12).contains(&t.month) && (1..=31).contains(&t.day) && t.hour < 24);
    }
}
