//! Unix milliseconds to and from the RFC 3339 text people read (UTC only).

pub use holdpoint_shared::protocol::now_ms;

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `2026-11-25T12:03:04.123Z`.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86400));
    let s = secs.rem_euclid(86400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// Reads `2026-11-01`, `2026-11-01T12:00:00Z` (fractions and `+HH:MM`
/// offsets too), or an age such as `7d` or `24h` counted back from `now`.
pub fn parse_since(text: &str, now: i64) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(d) = crate::config::parse_duration(t)
        && t.ends_with(|c: char| c.is_ascii_alphabetic())
    {
        return Ok(now - d.as_millis() as i64);
    }
    let bad =
        || format!("`{t}` is neither a date (2026-11-01, 2026-11-01T12:00:00Z) nor an age (7d)");
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
    if t.len() < 10 || !t.is_char_boundary(10) {
        return Err(bad());
    }
    let (date, rest) = t.split_at(10);
    let parts: Vec<&str> = date.split('-').collect();
    if parts.len() != 3 {
        return Err(bad());
    }
    let (y, mo, d) = (num(parts[0])?, num(parts[1])?, num(parts[2])?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let mut ms = days_from_civil(y, mo, d) * 86_400_000;
    if rest.is_empty() {
        return Ok(ms);
    }
    let rest = rest.strip_prefix(['T', 't', ' ']).ok_or_else(bad)?;
    if rest.len() < 8 || !rest.is_char_boundary(8) {
        return Err(bad());
    }
    let (hms, mut tail) = rest.split_at(8);
    let hms: Vec<&str> = hms.split(':').collect();
    if hms.len() != 3 {
        return Err(bad());
    }
    ms += (num(hms[0])? * 3600 + num(hms[1])? * 60 + num(hms[2])?) * 1000;
    if let Some(frac) = tail.strip_prefix('.') {
        let end = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        let digits = &frac[..end];
        let mut f = digits.chars().take(3).collect::<String>();
        while f.len() < 3 {
            f.push('0');
        }
        ms += num(&f)?;
        tail = &frac[end..];
    }
    match tail {
        "Z" | "z" | "" => Ok(ms),
        off if (off.starts_with('+') || off.starts_with('-')) && off.len() == 6 => {
            let sign = if off.starts_with('-') { -1 } else { 1 };
            let h = num(&off[1..3])?;
            let m = num(&off[4..6])?;
            Ok(ms - sign * (h * 3600 + m * 60) * 1000)
        }
        _ => Err(bad()),
    }
}

/// `4m 05s`, `2h 10m`, `12s`: a short age for people.
pub fn human_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{}h {:02}m", s / 3600, (s / 60) % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        let ms = parse_since("2026-11-25T12:03:04.5Z", 0).unwrap();
        assert_eq!(rfc3339(ms), "2026-11-25T12:03:04.500Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            parse_since("2026-11-25T13:03:04+01:00", 0).unwrap(),
            parse_since("2026-11-25T12:03:04Z", 0).unwrap()
        );
        assert_eq!(
            parse_since("2024-02-29", 0).unwrap(),
            parse_since("2024-02-29T00:00:00Z", 0).unwrap()
        );
    }

    #[test]
    fn ages_count_back_from_now() {
        assert_eq!(
            parse_since("7d", 700_000_000).unwrap(),
            700_000_000 - 604_800_000
        );
        assert!(parse_since("yesterday", 0).is_err());
        assert!(parse_since("2026-13-01", 0).is_err());
    }
}
