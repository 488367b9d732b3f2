//! Pure: human durations (`90s`, `15m`, `6h`, `1d`, `2w`, `1h30m`).

use chrono::TimeDelta;

const FORMS: &str = "expected a positive duration such as `90s`, `15m`, `6h`, `1d`, `2w` \
                     or `1h30m` (units s, m, h, d, w, largest first)";

const UNITS: [(char, i64); 5] = [
    ('w', 7 * 86_400),
    ('d', 86_400),
    ('h', 3_600),
    ('m', 60),
    ('s', 1),
];

/// Parses a positive duration made of `<number><unit>` parts, units `w`, `d`,
/// `h`, `m`, `s` from largest to smallest, each at most once.
pub fn parse_duration(s: &str) -> Result<TimeDelta, String> {
    if s.is_empty() {
        return Err(format!("empty duration: {FORMS}"));
    }
    let mut total: i64 = 0;
    let mut last_unit = usize::MAX;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(format!("invalid duration `{s}`: {FORMS}"));
        }
        let number: i64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration `{s}` is too large: {FORMS}"))?;
        let after = &rest[digits..];
        let unit_len = after.len()
            - after
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let unit = &after[..unit_len];
        if unit.is_empty() {
            return Err(if after.is_empty() {
                format!("duration `{s}` lacks a unit: {FORMS}")
            } else {
                format!("invalid duration `{s}`: {FORMS}")
            });
        }
        let Some(index) = UNITS
            .iter()
            .position(|(u, _)| u.len_utf8() == unit.len() && unit.starts_with(*u))
        else {
            return Err(format!("unknown unit `{unit}` in duration `{s}`: {FORMS}"));
        };
        if last_unit != usize::MAX && index <= last_unit {
            return Err(format!(
                "units out of order or repeated in duration `{s}`: {FORMS}"
            ));
        }
        last_unit = index;
        total = number
            .checked_mul(UNITS[index].1)
            .and_then(|secs| total.checked_add(secs))
            .ok_or_else(|| format!("duration `{s}` is too large: {FORMS}"))?;
        rest = &after[unit_len..];
    }
    if total == 0 {
        return Err(format!("duration `{s}` is zero: {FORMS}"));
    }
    TimeDelta::try_seconds(total).ok_or_else(|| format!("duration `{s}` is too large: {FORMS}"))
}

/// The canonical text of a whole-second duration, e.g. `1d2h30m`
/// (`parse_duration` reads it back).
#[allow(dead_code)] // for renderers (plan, status); round-trip tested here
pub(crate) fn format_duration(d: TimeDelta) -> String {
    let mut secs = d.num_seconds();
    if secs <= 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in UNITS {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_parse_per_table() {
        let ok = [
            ("90s", 90),
            ("15m", 900),
            ("6h", 21_600),
            ("1d", 86_400),
            ("2w", 1_209_600),
            ("1h30m", 5_400),
            ("1w1d1h1m1s", 694_861),
            ("0h5m", 300),
        ];
        for (text, secs) in ok {
            assert_eq!(parse_duration(text), Ok(TimeDelta::seconds(secs)), "{text}");
        }
        let bad = [
            ("", "empty duration"),
            ("-5m", "invalid duration"),
            ("0s", "is zero"),
            ("0h0m", "is zero"),
            ("5y", "unknown unit `y`"),
            ("5ms", "unknown unit `ms`"),
            ("5min", "unknown unit `min`"),
            ("90", "lacks a unit"),
            ("30m1h", "out of order"),
            ("1h1h", "out of order"),
            ("1.5h", "invalid duration"),
            ("1 h", "invalid duration"),
            ("99999999999999999999s", "too large"),
            ("9999999999999999w", "too large"),
        ];
        for (text, expected) in bad {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains(expected), "{text}: {err}");
            assert!(
                err.contains("`1h30m`"),
                "{text}: message names the forms: {err}"
            );
        }
    }

    proptest! {
        #[test]
        fn formatting_then_parsing_round_trips(secs in 1i64..=10_000_000_000) {
            let d = TimeDelta::seconds(secs);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
