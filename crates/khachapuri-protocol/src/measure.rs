//! Sizes and durations as people write them (`64MiB`, `1GiB`, `250ms`, `5s`, `7d`): one reading for the
//! CLI's flags and the provider's settings, so `deploy --memory 64MiB` and `provider up --max-memory 128MiB`
//! mean the same thing. A bare number is bytes for a size and seconds for a duration.

use std::time::Duration;

/// Why a text is not a size or a duration; the caller adds which flag or setting it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeasureError {
    /// No number at the start.
    #[error("write {0}")]
    NoNumber(&'static str),
    /// A unit this reading does not know.
    #[error("unknown unit `{unit}`; use {known}")]
    UnknownUnit {
        /// The unit given.
        unit: String,
        /// The units known.
        known: &'static str,
    },
    /// Past what 64 bits hold.
    #[error("too large")]
    TooLarge,
}

/// A size: bytes, or with a unit: `512KiB`, `64MiB`, `1GiB` (also `K`, `M`, `G` for those, and `KB`, `MB`,
/// `GB` as powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, MeasureError> {
    let (n, unit) = number_and_unit(text)
        .ok_or(MeasureError::NoNumber("bytes or a size like 512KiB, 64MiB"))?;
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => {
            return Err(MeasureError::UnknownUnit {
                unit,
                known: "B, KiB, MiB or GiB",
            });
        }
    };
    n.checked_mul(scale).ok_or(MeasureError::TooLarge)
}

/// A duration: `250ms`, `90s` (or bare seconds), `30m`, `12h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, MeasureError> {
    let (n, unit) = number_and_unit(text).ok_or(MeasureError::NoNumber(
        "a number with a unit: 250ms, 90s, 30m, 12h, 7d",
    ))?;
    let ms = match unit.as_str() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => {
            return Err(MeasureError::UnknownUnit {
                unit,
                known: "ms, s, m, h or d",
            });
        }
    }
    .ok_or(MeasureError::TooLarge)?;
    Ok(Duration::from_millis(ms))
}

/// A size for people: `64 MiB`, `1 GiB`, `1536 B`; whole units only, so it parses back exactly.
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} B")
}

fn number_and_unit(text: &str) -> Option<(u64, String)> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    Some((digits.parse().ok()?, unit.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_like_people_write_them() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2 KB"), Ok(2000));
        assert_eq!(parse_size("16m"), Ok(16 << 20));
        assert!(matches!(
            parse_size("1PiB"),
            Err(MeasureError::UnknownUnit { .. })
        ));
        assert_eq!(parse_size("99999999999999GiB"), Err(MeasureError::TooLarge));
        assert!(matches!(parse_size("MiB"), Err(MeasureError::NoNumber(_))));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("").is_err());
        for bytes in [64 << 20, 1 << 30, 1536, 0, 3 << 10] {
            let shown = format_size(bytes);
            assert_eq!(parse_size(&shown), Ok(bytes), "{shown}");
        }
        assert_eq!(format_size(128 << 20), "128 MiB");
    }
}
