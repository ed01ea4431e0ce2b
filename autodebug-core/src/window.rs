use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A duration as people write it on a command line: `90` (seconds), `90s`, `1.5m`, `500ms`, `1h`;
/// positive and finite.
///
/// ```
/// use std::time::Duration;
/// use autodebug_core::parse_duration;
/// assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("20"), Ok(Duration::from_secs(20)));
/// assert!(parse_duration("0s").is_err() && parse_duration("5 min").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; write e.g. 30s, 2m, 500ms or 1h")),
    };
    match number.parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 => Ok(Duration::from_secs_f64(value * scale)),
        _ => Err(format!("{text:?} is not a positive duration; write e.g. 30s, 2m, 500ms or 1h")),
    }
}

/// A span of wall-clock time in UTC nanoseconds since the Unix epoch.
///
/// The benchmark records the exact window it ran in, and every telemetry source is asked
/// for that window, so metrics and profiles describe the same requests the client measured.
///
/// ```
/// use autodebug_core::TimeWindow;
/// let w = TimeWindow::new(1_000_000_000, 3_500_000_000);
/// assert_eq!(w.duration().as_millis(), 2500);
/// assert_eq!(TimeWindow::format_iso(0), "1970-01-01T00:00:00Z");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeWindow {
    pub start_ns: i128,
    pub end_ns: i128,
}

impl TimeWindow {
    pub fn new(start_ns: i128, end_ns: i128) -> Self {
        TimeWindow { start_ns, end_ns }
    }

    /// The current wall-clock time in ns since the epoch.
    pub fn now_ns() -> i128 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
    }

    pub fn duration(&self) -> Duration {
        Duration::from_nanos((self.end_ns - self.start_ns).max(0) as u64)
    }

    pub fn contains(&self, t_ns: i128) -> bool {
        t_ns >= self.start_ns && t_ns <= self.end_ns
    }

    /// ISO-8601 UTC with whole seconds, the form used in session file names.
    pub fn format_iso(t_ns: i128) -> String {
        let secs = t_ns.div_euclid(1_000_000_000) as i64;
        match time::OffsetDateTime::from_unix_timestamp(secs) {
            Ok(t) => format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ),
            Err(_) => format!("{secs}s"),
        }
    }

    /// Parses ISO-8601 (`2026-03-24T20:40:00Z`, with or without zone or fraction; no zone means UTC).
    pub fn parse_iso(text: &str) -> Option<i128> {
        use time::format_description::well_known::Rfc3339;
        if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
            return Some(t.unix_timestamp_nanos());
        }
        let with_zone = format!("{text}Z");
        time::OffsetDateTime::parse(&with_zone, &Rfc3339).ok().map(|t| t.unix_timestamp_nanos())
    }
}
