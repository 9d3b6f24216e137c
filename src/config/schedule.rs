//! Crontab → `cron` crate. Users write standard crontab (minute first, Sunday = 0 or 7);
//! the `cron` crate wants seconds first and counts Sunday as 1, so numeric day-of-week
//! fields are rewritten into names, which mean the same thing to both.

use std::str::FromStr;
use std::time::Duration;

const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Parse a 5-field crontab (or `@hourly`-style shorthand), or 6 fields with seconds first.
pub fn parse_schedule(expr: &str) -> Result<cron::Schedule, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let native = match fields.len() {
        1 if expr.trim().starts_with('@') => expr.trim().to_owned(),
        5 => format!("0 {} {} {} {} {}", fields[0], fields[1], fields[2], fields[3], crontab_dow(fields[4])?),
        6 => expr.trim().to_owned(),
        n => return Err(format!("expected 5 fields (crontab, minute first) or 6 (seconds first), got {n}")),
    };
    cron::Schedule::from_str(&native).map_err(|e| format!("invalid schedule `{expr}`: {e}"))
}

fn crontab_dow(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_owned());
    }
    let mut days = [false; 7];
    let mut named = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, s.parse::<usize>().map_err(|_| format!("bad step in day-of-week `{item}`"))?),
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
    named.extend(DAYS.iter().zip(days).filter(|(_, on)| *on).map(|(n, _)| (*n).to_owned()));
    Ok(named.join(","))
}

/// `30s`, `5m`, `2h`, `1d`.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid interval `{s}` (e.g. \"30s\", \"5m\", \"1h\")"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("invalid interval `{s}`: unit must be s, m, h or d")),
    };
    // Far beyond any schedule, and far below what would overflow a timer.
    const MAX_SECS: u64 = 3650 * 86400;
    let secs = n.checked_mul(unit_secs).filter(|s| *s <= MAX_SECS).ok_or_else(|| format!("interval `{s}` is too long (at most 3650d)"))?;
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
        assert_eq!(parse_interval("3650d"), Ok(Duration::from_secs(3650 * 86400)));
        assert!(parse_interval("3651d").unwrap_err().contains("too long"));
        assert!(parse_interval("18446744073709551615m").unwrap_err().contains("too long"), "no overflow");
        assert!(parse_interval("0s").is_err());
    }

    fn next(expr: &str, n: usize) -> Vec<chrono::DateTime<Utc>> {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(); // a Thursday
        parse_schedule(expr).unwrap().after(&start).take(n).collect()
    }

    #[test]
    fn five_fields_are_minute_first() {
        let t = next("*/5 * * * *", 2);
        assert_eq!((t[0].minute(), t[1].minute(), t[0].second()), (5, 10, 0));
    }

    #[test]
    fn crontab_weekdays_mean_monday_to_friday() {
        let days: Vec<_> = next("0 12 * * 1-5", 5).iter().map(|d| d.weekday().to_string()).collect();
        assert_eq!(days, ["Thu", "Fri", "Mon", "Tue", "Wed"]);
        assert_eq!(next("0 12 * * 0", 1)[0].weekday().to_string(), "Sun");
        assert_eq!(next("0 12 * * 7", 1)[0].weekday().to_string(), "Sun");
    }

    #[test]
    fn shorthands_and_errors() {
        assert!(parse_schedule("@daily").is_ok());
        assert!(parse_schedule("* * *").unwrap_err().contains("got 3"));
        assert!(parse_schedule("0 12 * * 9").is_err());
        assert_eq!(parse_interval("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_interval("5 parsecs").is_err());
    }
}
