//! The one-line progress report `weir run` prints every second, and the small formatting helpers
//! it needs (human-sized numbers, durations, ISO-8601 UTC times, and reading RFC 3339 times
//! back). Everything here is a pure function of its inputs so the exact output is pinned by
//! table tests.

use std::time::Duration;

use weir_api::JobState;

/// What one progress line shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Time since the job started.
    pub elapsed: Duration,
    /// Job state.
    pub state: JobState,
    /// Source records per second.
    pub in_per_second: f64,
    /// Sink records per second.
    pub out_per_second: f64,
    /// Records read by sources so far.
    pub records_in: u64,
    /// Records written by sinks so far.
    pub records_out: u64,
    /// The job's current watermark (ms since the epoch), if any.
    pub watermark_ms: Option<i64>,
    /// Wall-clock time of the report (ms since the epoch), to compute the watermark lag.
    pub now_ms: i64,
    /// Job parallelism.
    pub parallelism: u32,
    /// Restarts so far.
    pub restarts: u64,
    /// The last completed checkpoint, if any, as [`format_checkpoint`] writes it
    /// (e.g. `#12 35ms 1.2MB 3s ago`), with `(N failed)` appended when checkpoints failed.
    pub last_checkpoint: Option<String>,
}

/// Formats a progress line, e.g.
/// `[0:12] RUNNING in 1.02M/s out 9.87k/s | total 12.3M/118k | wm 2026-03-01T10:00:07Z lag 5.0s | p2 restarts 0 ckpt #12 35ms 1.2MB 3s ago`.
pub fn format_progress(p: &Progress) -> String {
    format!(
        "[{}] {} in {}/s out {}/s | total {}/{} | wm {} | p{} restarts {} ckpt {}",
        format_elapsed(p.elapsed),
        p.state,
        human_count_f(p.in_per_second),
        human_count_f(p.out_per_second),
        human_count(p.records_in),
        human_count(p.records_out),
        format_watermark(p.watermark_ms, p.now_ms),
        p.parallelism,
        p.restarts,
        p.last_checkpoint.as_deref().unwrap_or("-"),
    )
}

/// The progress line's checkpoint part: `#12 35ms 1.2MB 3s ago` for the last completed
/// checkpoint (id, duration, state size, age), `-` when there is none, then ` (N failed)` when
/// checkpoints failed.
pub fn format_checkpoint(
    last: Option<(u64, Option<i64>, u64, i64)>,
    failed: u64,
    now_ms: i64,
) -> String {
    let mut s = match last {
        None => "-".to_string(),
        Some((id, duration_ms, size_bytes, completed_ms)) => {
            let took = duration_ms.map_or_else(
                || "?".to_string(),
                |d| format_lag(Duration::from_millis(d.max(0).unsigned_abs())),
            );
            let age =
                Duration::from_millis(now_ms.saturating_sub(completed_ms).max(0).unsigned_abs());
            format!(
                "#{id} {took} {} {} ago",
                human_bytes(size_bytes),
                format_age(age)
            )
        }
    };
    if failed > 0 {
        s.push_str(&format!(" ({failed} failed)"));
    }
    s
}

/// An age in whole units: `3s`, `2m05s`, `1h02m`, `3d`; the tenths of [`format_lag`] would make
/// the progress line jitter every second.
pub fn format_age(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else {
        format_lag(d)
    }
}

/// A byte count with two or three significant digits and a binary unit, written the way the
/// Flink web UI does: `512B`, `1.5KB`, `1.2MB`, `3.4GB` (1 KB = 1024 B).
pub fn human_bytes(n: u64) -> String {
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64;
    for unit in ["KB", "MB", "GB", "TB"] {
        v /= 1024.0;
        if v < 9.95 {
            return format!("{v:.1}{unit}");
        }
        if v < 1023.5 {
            return format!("{v:.0}{unit}");
        }
    }
    format!("{v:.0}TB")
}

/// The watermark as an ISO-8601 UTC time with its lag behind `now_ms`: `-` when there is none
/// yet, `end` once every input ended, `ahead` when event time runs before the wall clock.
pub fn format_watermark(wm: Option<i64>, now_ms: i64) -> String {
    match wm {
        None => "-".to_string(),
        Some(i64::MAX) => "end".to_string(),
        Some(wm) => {
            let lag = now_ms.saturating_sub(wm);
            let lag = if lag >= 0 {
                format!(
                    "lag {}",
                    format_lag(Duration::from_millis(lag.unsigned_abs()))
                )
            } else {
                format!(
                    "ahead {}",
                    format_lag(Duration::from_millis(lag.unsigned_abs()))
                )
            };
            format!("{} {lag}", iso8601_utc(wm))
        }
    }
}

/// `m:ss` below an hour, `h:mm:ss` above.
pub fn format_elapsed(d: Duration) -> String {
    let s = d.as_secs();
    if s < 3600 {
        format!("{}:{:02}", s / 60, s % 60)
    } else {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    }
}

/// A lag in the largest sensible unit: `850ms`, `5.0s`, `3m12s`, `2h05m`, `17d`.
pub fn format_lag(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, (s / 60) % 60)
    } else {
        format!("{}d", s / 86_400)
    }
}

/// A count with three significant digits and a k/M/G/T suffix: `999`, `1.23k`, `45.6M`.
pub fn human_count(n: u64) -> String {
    human_count_f(n as f64)
}

/// As [`human_count`] for rates; fractions below 1000 are rounded to whole numbers.
pub fn human_count_f(x: f64) -> String {
    if !x.is_finite() || x < 0.0 {
        return "?".to_string();
    }
    if x < 999.5 {
        return format!("{x:.0}");
    }
    let mut v = x;
    for unit in ["k", "M", "G", "T"] {
        v /= 1000.0;
        // Decide the precision after rounding so 999.96k becomes 1.00M, not 1000k.
        if v < 9.995 {
            return format!("{v:.2}{unit}");
        }
        if v < 99.95 {
            return format!("{v:.1}{unit}");
        }
        if v < 999.5 {
            return format!("{v:.0}{unit}");
        }
    }
    format!("{v:.0}T")
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC, proleptic Gregorian calendar).
/// Times outside years 0..=9999 are shown as raw milliseconds: such a watermark is a bug or a
/// sentinel, and a garbled date would hide that.
pub fn iso8601_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return format!("{ms}ms");
    }
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// A point in time written as RFC 3339 (`2026-11-24T12:00:00Z`, `2026-11-24T13:00:00.250+01:00`)
/// or as whole milliseconds since the Unix epoch (`1795521600000`), in milliseconds since the
/// epoch; `None` when it is neither. Fractions finer than a millisecond are cut off.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let b = s.as_bytes();
    // A fixed-width field of ASCII digits.
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    // RFC 3339 allows a lower-case `t` and, for readability, a space between date and time.
    let separated = at(4, b'-')
        && at(7, b'-')
        && matches!(b.get(10), Some(b'T' | b't' | b' '))
        && at(13, b':')
        && at(16, b':');
    if !separated {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if at(i, b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = num(start, (i - start).min(3))?;
        millis = frac * 10_i64.pow(3 - (i - start).min(3) as u32);
    }
    let offset_minutes = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && at(i + 3, b':') => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' {
                h * 60 + m
            } else {
                -(h * 60 + m)
            }
        }
        _ => return None,
    };
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    // Second 60 is a leap second, which RFC 3339 allows.
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m as u32, d as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_772_359_207_000; // 2026-03-01T10:00:07Z

    fn base() -> Progress {
        Progress {
            elapsed: Duration::from_secs(12),
            state: JobState::Running,
            in_per_second: 1_020_000.0,
            out_per_second: 9_870.0,
            records_in: 12_300_000,
            records_out: 118_000,
            watermark_ms: Some(T),
            now_ms: T + 5_000,
            parallelism: 2,
            restarts: 0,
            last_checkpoint: None,
        }
    }

    #[test]
    fn progress_lines() {
        let cases: Vec<(Progress, &str)> = vec![
            (
                base(),
                "[0:12] RUNNING in 1.02M/s out 9.87k/s | total 12.3M/118k | wm 2026-03-01T10:00:07Z lag 5.0s | p2 restarts 0 ckpt -",
            ),
            (
                Progress {
                    elapsed: Duration::ZERO,
                    in_per_second: 0.0,
                    out_per_second: 0.0,
                    records_in: 0,
                    records_out: 0,
                    watermark_ms: None,
                    parallelism: 1,
                    ..base()
                },
                "[0:00] RUNNING in 0/s out 0/s | total 0/0 | wm - | p1 restarts 0 ckpt -",
            ),
            (
                Progress {
                    elapsed: Duration::from_secs(3725),
                    state: JobState::Finished,
                    watermark_ms: Some(i64::MAX),
                    last_checkpoint: Some("#4 2s ago".into()),
                    restarts: 3,
                    ..base()
                },
                "[1:02:05] FINISHED in 1.02M/s out 9.87k/s | total 12.3M/118k | wm end | p2 restarts 3 ckpt #4 2s ago",
            ),
            (
                Progress {
                    now_ms: T - 1_500,
                    state: JobState::Cancelling,
                    ..base()
                },
                "[0:12] CANCELLING in 1.02M/s out 9.87k/s | total 12.3M/118k | wm 2026-03-01T10:00:07Z ahead 1.5s | p2 restarts 0 ckpt -",
            ),
            (
                Progress {
                    watermark_ms: Some(0),
                    now_ms: 20 * 86_400_000 + 5,
                    ..base()
                },
                "[0:12] RUNNING in 1.02M/s out 9.87k/s | total 12.3M/118k | wm 1970-01-01T00:00:00Z lag 20d | p2 restarts 0 ckpt -",
            ),
        ];
        for (p, want) in cases {
            assert_eq!(format_progress(&p), want);
        }
    }

    #[test]
    fn checkpoint_parts() {
        let now = T;
        for (last, failed, want) in [
            (None, 0, "-"),
            (None, 2, "- (2 failed)"),
            (
                Some((12, Some(35), 1_258_291, T - 3_400)),
                0,
                "#12 35ms 1.2MB 3s ago",
            ),
            (
                Some((7, Some(1_500), 800, T - 125_000)),
                1,
                "#7 1.5s 800B 2m05s ago (1 failed)",
            ),
            (Some((1, None, 0, T + 10)), 0, "#1 ? 0B 0s ago"),
        ] {
            assert_eq!(format_checkpoint(last, failed, now), want);
        }
    }

    #[test]
    fn human_byte_counts() {
        for (n, want) in [
            (0, "0B"),
            (1023, "1023B"),
            (1024, "1.0KB"),
            (1536, "1.5KB"),
            (10 * 1024, "10KB"),
            (1_258_291, "1.2MB"),
            (5 * 1024 * 1024 * 1024, "5.0GB"),
            (u64::MAX, "16777216TB"),
        ] {
            assert_eq!(human_bytes(n), want, "{n}");
        }
    }

    #[test]
    fn human_counts() {
        for (n, want) in [
            (0.0, "0"),
            (999.0, "999"),
            (999.6, "1.00k"),
            (1234.0, "1.23k"),
            (12_345.0, "12.3k"),
            (123_456.0, "123k"),
            (999_960.0, "1.00M"),
            (45_600_000.0, "45.6M"),
            (7.2e9, "7.20G"),
            (3.0e15, "3000T"),
            (f64::NAN, "?"),
        ] {
            assert_eq!(human_count_f(n), want, "{n}");
        }
        assert_eq!(human_count(1_000_000), "1.00M");
    }

    #[test]
    fn lags_and_elapsed() {
        for (ms, want) in [
            (850, "850ms"),
            (5_000, "5.0s"),
            (192_000, "3m12s"),
            (7_500_000, "2h05m"),
            (17 * 86_400_000 + 1, "17d"),
        ] {
            assert_eq!(format_lag(Duration::from_millis(ms)), want);
        }
        assert_eq!(format_elapsed(Duration::from_secs(59)), "0:59");
        assert_eq!(format_elapsed(Duration::from_secs(3600)), "1:00:00");
    }

    #[test]
    fn iso_times() {
        for (ms, want) in [
            (0, "1970-01-01T00:00:00Z"),
            (T, "2026-03-01T10:00:07Z"),
            (951_782_400_000, "2000-02-29T00:00:00Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (253_402_300_799_000, "9999-12-31T23:59:59Z"),
            (i64::MIN, "-9223372036854775808ms"),
        ] {
            assert_eq!(iso8601_utc(ms), want, "{ms}");
        }
    }

    #[test]
    fn times_are_read_as_rfc3339_or_epoch_milliseconds() {
        for (text, want) in [
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2026-03-01T10:00:07Z", Some(T)),
            ("2026-03-01t10:00:07z", Some(T)),
            ("2026-03-01 10:00:07Z", Some(T)),
            ("2026-03-01T11:30:07+01:30", Some(T)),
            ("2026-03-01T05:00:07-05:00", Some(T)),
            ("2026-03-01T10:00:07.25Z", Some(T + 250)),
            ("2026-03-01T10:00:07.123456789Z", Some(T + 123)),
            ("2000-02-29T00:00:00Z", Some(951_782_400_000)),
            ("1969-12-31T23:59:59Z", Some(-1_000)),
            ("1772359207000", Some(T)),
            (" 1772359207000 ", Some(T)),
            ("", None),
            ("yesterday", None),
            ("-5", None),
            ("2026-03-01", None),
            ("2026-03-01T10:00:07", None),
            ("2026-03-01T10:00Z", None),
            ("2026-03-01T10:00:07.Z", None),
            ("2026-03-01T10:00:07+0100", None),
            ("2026-03-01T10:00:07Zjunk", None),
            ("2026-02-29T00:00:00Z", None),
            ("2026-13-01T00:00:00Z", None),
            ("2026-04-31T00:00:00Z", None),
            ("2026-03-01T24:00:00Z", None),
            ("2026-03-01X10:00:07Z", None),
        ] {
            assert_eq!(parse_time_ms(text), want, "{text:?}");
        }
        // Every time this prints reads back as itself.
        for ms in [0, T, 951_782_400_000, 253_402_300_799_000] {
            assert_eq!(parse_time_ms(&iso8601_utc(ms)), Some(ms));
        }
    }
}
