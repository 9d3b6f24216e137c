//! Crontab → `cron` crate. Users write standard crontab (minute first, Sunday = 0 or 7);
//! the `cron` crate wants seconds first and counts Sunday as 1, so numeric day-of-week
//! fields are rewritten into names, which mean the same thing to both.
//!
//! A schedule runs in a time zone (UTC unless the policy names one), with daylight-saving
//! changes handled the way ISC cron does for fixed times: a time skipped by the spring change
//! runs once, right after it; a time repeated by the autumn change runs once, the first time.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDateTime, TimeZone as _, Timelike, Utc};
use jiff::tz::{AmbiguousOffset, TimeZone};

/// A crontab schedule read in a time zone. Zones come from jiff (the system's tzdb, else the
/// copy bundled as bytes): chrono-tz's generated tables cost ~1 MB of relocated, resident data
/// in every process.
pub struct Cron {
    schedule: cron::Schedule,
    tz: TimeZone,
    /// As the user wrote it: what every message shows (the cron crate's own form is
    /// seconds-first with day names, which nobody wrote).
    written: String,
}

impl Cron {
    pub fn new(schedule: cron::Schedule, tz: TimeZone, written: &str) -> Self {
        Cron {
            schedule,
            tz,
            written: written.split_whitespace().collect::<Vec<_>>().join(" "),
        }
    }

    /// The schedule as written, the time zone when it is not UTC, and the next three runs.
    pub fn describe(&self) -> String {
        let zone = match self.tz.iana_name() {
            None | Some("UTC") => "UTC".to_owned(),
            Some(name) => name.to_owned(),
        };
        let next: Vec<String> = self
            .after(&Utc::now())
            .take(3)
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .collect();
        format!("\"{}\" {zone}; next {}", self.written, next.join(", "))
    }

    /// The instants the schedule fires after `t`, in order, each once.
    pub fn after(&self, t: &DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        // cron walks wall-clock times; they are kept as naive times (carried in a UTC value)
        // and placed on the real time line here, where gaps and repeats are known.
        let local = jiff::Timestamp::from_second(t.timestamp())
            .map(|ts| self.tz.to_datetime(ts))
            .ok();
        let wall = local
            .and_then(naive)
            .map_or(*t, |n| Utc.from_utc_datetime(&n));
        let mut last = *t;
        self.schedule.after(&wall).filter_map(move |w| {
            let at = instant(&self.tz, w.naive_utc())?;
            (at > last).then(|| {
                last = at;
                at
            })
        })
    }
}

fn naive(d: jiff::civil::DateTime) -> Option<NaiveDateTime> {
    chrono::NaiveDate::from_ymd_opt(d.year().into(), d.month() as u32, d.day() as u32)?.and_hms_opt(
        d.hour() as u32,
        d.minute() as u32,
        d.second() as u32,
    )
}

/// The real instant of wall-clock time `w` in `tz`: the first of two in a repeated hour, the
/// end of the gap for a time the clocks skipped.
fn instant(tz: &TimeZone, w: NaiveDateTime) -> Option<DateTime<Utc>> {
    let exists = |w: NaiveDateTime| {
        let civil = jiff::civil::DateTime::new(
            w.year() as i16,
            w.month() as i8,
            w.day() as i8,
            w.hour() as i8,
            w.minute() as i8,
            w.second() as i8,
            0,
        )
        .ok()?;
        let amb = tz.to_ambiguous_timestamp(civil);
        match amb.offset() {
            AmbiguousOffset::Gap { .. } => None,
            // Unambiguous, or the first of a repeated hour.
            _ => amb
                .earlier()
                .ok()
                .and_then(|ts| DateTime::from_timestamp(ts.as_second(), 0)),
        }
    };
    // Gaps last an hour, sometimes 30 minutes: the first wall-clock minute that exists again
    // is the moment of the change.
    exists(w).or_else(|| (1..=24 * 60).find_map(|m| exists(w + chrono::Duration::minutes(m))))
}

/// An IANA time zone name, e.g. `Europe/Paris`.
// The problem is a diagnostic's text (see the config module doc).
pub fn parse_timezone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| {
        format!(
            "unknown time zone `{name}` (an IANA name such as Europe/Paris or America/New_York)"
        )
    })
}

const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// The five crontab fields, in order, as messages name them.
const FIELDS: [&str; 5] = ["minute", "hour", "day of month", "month", "day of week"];

/// Parse a 5-field crontab, or an `@hourly`-style shorthand. Six fields are refused: the
/// usual six-field typo (a stray `*`) would otherwise read as seconds first and fire every
/// few seconds; runs that often are `interval = "30s"`.
// The problem is a diagnostic's text (see the config module doc).
pub fn parse_schedule(expr: &str) -> Result<cron::Schedule, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let native = match fields.len() {
        1 if expr.trim().starts_with('@') => expr.trim().to_owned(),
        5 => {
            // Each field alone first, so an error names the field and the user's own text
            // rather than the crate's seconds-first rewrite.
            for (i, f) in fields.iter().enumerate() {
                let mut probe = ["*"; 5];
                probe[i] = f;
                let dow = if i == 4 { crontab_dow(f)? } else { "*".to_owned() };
                let one = format!("0 {} {} {} {} {dow}", probe[0], probe[1], probe[2], probe[3]);
                if cron::Schedule::from_str(&one).is_err() {
                    return Err(format!(
                        "the {} field `{f}` of `{}` is not valid ({})",
                        FIELDS[i],
                        fields.join(" "),
                        ["0-59", "0-23", "1-31", "1-12 or JAN-DEC", "0-7 or SUN-SAT"][i]
                    ));
                }
            }
            format!(
                "0 {} {} {} {} {}",
                fields[0],
                fields[1],
                fields[2],
                fields[3],
                crontab_dow(fields[4])?
            )
        }
        n => {
            return Err(format!(
                "a crontab has 5 fields (minute hour day-of-month month day-of-week), `{}` has {n}; for runs more often than a minute, use interval = \"30s\"",
                fields.join(" ")
            ))
        }
    };
    cron::Schedule::from_str(&native)
        .map_err(|_| format!("`{}` is not a valid crontab", fields.join(" ")))
}

// The problem is a diagnostic's text (see the config module doc).
fn crontab_dow(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_owned());
    }
    let mut days = [false; 7];
    let mut named = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<usize>()
                    .map_err(|_| format!("bad step in day-of-week `{item}`"))?,
            ),
            None => (item, 1),
        };
        if range.chars().any(|c| c.is_ascii_alphabetic()) {
            named.push(item.to_owned()); // names already mean the same in both dialects
            continue;
        }
        let num = |s: &str| match s.parse::<usize>() {
            Ok(n) if n <= 7 => Ok(n),
            _ => Err(format!("day-of-week `{s}` is not 0-7")),
        };
        let (lo, hi) = match range {
            "*" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None if step > 1 => (num(r)?, 6),
                None => (num(r)?, num(r)?),
            },
        };
        if lo > hi || step == 0 {
            return Err(format!("bad day-of-week range `{item}`"));
        }
        for d in (lo..=hi).step_by(step) {
            days[d % 7] = true;
        }
    }
    named.extend(
        DAYS.iter()
            .zip(days)
            .filter(|(_, on)| *on)
            .map(|(n, _)| (*n).to_owned()),
    );
    Ok(named.join(","))
}

/// `30s`, `5m`, `2h`, `1d`.
// The problem is a diagnostic's text (see the config module doc).
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid interval `{s}` (e.g. \"30s\", \"5m\", \"1h\")"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("invalid interval `{s}`: unit must be s, m, h or d")),
    };
    // Far beyond any schedule, and far below what would overflow a timer.
    const MAX_SECS: u64 = 3650 * 86400;
    let secs = n
        .checked_mul(unit_secs)
        .filter(|s| *s <= MAX_SECS)
        .ok_or_else(|| format!("interval `{s}` is too long (at most 3650d)"))?;
    if secs == 0 {
        return Err("interval must be at least 1s".into());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike, Utc};

    #[test]
    fn intervals_are_bounded() {
        assert_eq!(parse_interval("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_interval("3650d"),
            Ok(Duration::from_secs(3650 * 86400))
        );
        assert!(parse_interval("3651d").unwrap_err().contains("too long"));
        assert!(
            parse_interval("18446744073709551615m")
                .unwrap_err()
                .contains("too long"),
            "no overflow"
        );
        assert!(parse_interval("0s").is_err());
    }

    fn next(expr: &str, n: usize) -> Vec<chrono::DateTime<Utc>> {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(); // a Thursday
        parse_schedule(expr)
            .unwrap()
            .after(&start)
            .take(n)
            .collect()
    }

    fn next_in(expr: &str, tz: &str, from: (u32, u32, u32), n: usize) -> Vec<String> {
        let start = Utc
            .with_ymd_and_hms(2026, from.0, from.1, from.2, 0, 0)
            .unwrap();
        let cron = Cron::new(
            parse_schedule(expr).unwrap(),
            parse_timezone(tz).unwrap(),
            expr,
        );
        cron.after(&start)
            .take(n)
            .map(|t| t.format("%m-%d %H:%M").to_string())
            .collect()
    }

    #[test]
    fn schedules_follow_their_time_zone_through_daylight_saving() {
        // 09:00 in Paris is 08:00 UTC in winter, 07:00 UTC in summer (from 29 March 2026).
        assert_eq!(
            next_in("0 9 * * *", "Europe/Paris", (3, 27, 12), 3),
            ["03-28 08:00", "03-29 07:00", "03-30 07:00"]
        );
        // 02:30 does not exist on 29 March in Paris (02:00 → 03:00): it runs once, at the change.
        assert_eq!(
            next_in("30 2 * * *", "Europe/Paris", (3, 28, 12), 2),
            ["03-29 01:00", "03-30 00:30"]
        );
        // Every 20 minutes across the gap: the skipped 02:00, 02:20, 02:40 make one run at 03:00.
        assert_eq!(
            next_in("*/20 * * * *", "Europe/Paris", (3, 29, 0), 4),
            ["03-29 00:20", "03-29 00:40", "03-29 01:00", "03-29 01:20"]
        );
        // 02:30 happens twice on 25 October (03:00 → 02:00): once, the first time (00:30 UTC).
        assert_eq!(
            next_in("30 2 * * *", "Europe/Paris", (10, 24, 12), 2),
            ["10-25 00:30", "10-26 01:30"]
        );
        // UTC stays UTC.
        assert_eq!(
            next_in("0 9 * * *", "UTC", (3, 28, 12), 2),
            ["03-29 09:00", "03-30 09:00"]
        );
        assert!(parse_timezone("Mars/Olympus").unwrap_err().contains("IANA"));
    }

    #[test]
    fn five_fields_are_minute_first() {
        let t = next("*/5 * * * *", 2);
        assert_eq!((t[0].minute(), t[1].minute(), t[0].second()), (5, 10, 0));
    }

    #[test]
    fn crontab_weekdays_mean_monday_to_friday() {
        let days: Vec<_> = next("0 12 * * 1-5", 5)
            .iter()
            .map(|d| d.weekday().to_string())
            .collect();
        assert_eq!(days, ["Thu", "Fri", "Mon", "Tue", "Wed"]);
        assert_eq!(next("0 12 * * 0", 1)[0].weekday().to_string(), "Sun");
        assert_eq!(next("0 12 * * 7", 1)[0].weekday().to_string(), "Sun");
    }

    #[test]
    fn shorthands_and_errors() {
        assert!(parse_schedule("@daily").is_ok());
        assert!(parse_schedule("* * *").unwrap_err().contains("has 3"));
        assert!(parse_schedule("0 12 * * 9").is_err());
    }

    /// The six-field typo that fired every 15 s during minutes 8-18 of January to May.
    #[test]
    fn six_fields_are_refused_and_errors_name_the_field_as_written() {
        let e = parse_schedule("*/15 8-18 * * 1-5 *").unwrap_err();
        assert!(
            e.contains("a crontab has 5 fields") && e.contains("`*/15 8-18 * * 1-5 *` has 6"),
            "{e}"
        );
        assert!(e.contains("interval"), "{e}");
        let e = parse_schedule("60 * * * *").unwrap_err();
        assert_eq!(
            e,
            "the minute field `60` of `60 * * * *` is not valid (0-59)"
        );
        let e = parse_schedule("0 25 * * *").unwrap_err();
        assert!(e.starts_with("the hour field `25`"), "{e}");
        let c = Cron::new(
            parse_schedule("*/15  8-18 * * 1-5").unwrap(),
            jiff::tz::TimeZone::UTC,
            "*/15  8-18 * * 1-5",
        );
        let said = c.describe();
        assert!(
            said.starts_with("\"*/15 8-18 * * 1-5\" UTC; next "),
            "{said}"
        );
        assert_eq!(said.matches(" UTC").count(), 4, "three next runs: {said}");
        assert_eq!(parse_interval("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_interval("5 parsecs").is_err());
    }
}
