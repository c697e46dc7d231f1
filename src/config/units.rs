//! Human-friendly durations and sizes: `30`, `30s`, `500ms`, `5m`, `7d`; `1048576`, `1MiB`, `100MB`.

use std::time::Duration;

/// Parses a duration; a bare number is in `bare_unit` (the unit the variable's name ends in).
pub fn parse_duration(raw: &str, bare_unit: Duration) -> Result<Duration, String> {
    let s = raw.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 =
        num.parse().map_err(|_| format!("`{raw}` is not a duration (examples: 30, 500ms, 30s, 5m, 1h, 7d)"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("`{raw}` must be a non-negative duration"));
    }
    let unit_secs = match unit.trim() {
        "" => bare_unit.as_secs_f64(),
        "ms" => 0.001,
        "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        other => return Err(format!("`{raw}` has unknown unit `{other}` (use ms, s, m, h or d)")),
    };
    Ok(Duration::from_secs_f64(n * unit_secs))
}

/// Parses a byte size: bare bytes, or KB/MB/GB (powers of 1000) and KiB/MiB/GiB (powers of 1024).
pub fn parse_size(raw: &str) -> Result<u64, String> {
    let s = raw.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{raw}` is not a size (examples: 1048576, 512KiB, 100MiB, 1GB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => return Err(format!("`{raw}` has unknown unit `{other}` (use KiB, MiB, GiB, KB, MB, GB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("`{raw}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_bare_numbers_in_the_names_unit_and_suffixes() {
        assert_eq!(parse_duration("30", Duration::from_secs(1)), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("80", Duration::from_millis(1)), Ok(Duration::from_millis(80)));
        assert_eq!(parse_duration("500ms", Duration::from_secs(1)), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7d", Duration::from_secs(1)), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("1.5s", Duration::from_secs(1)), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon", Duration::from_secs(1)).is_err());
        assert!(parse_duration("5 fortnights", Duration::from_secs(1)).is_err());
    }

    #[test]
    fn sizes_accept_binary_and_decimal_units() {
        assert_eq!(parse_size("100MiB"), Ok(100 * 1024 * 1024));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("12 parsecs").is_err());
    }
}
