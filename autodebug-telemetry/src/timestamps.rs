//! ISO-8601 timestamps in, Unix nanoseconds out: the form APIs such as Graphsignal's take.

use autodebug_core::TimeWindow;

use crate::error::TelemetryError;

/// Parses ISO-8601 (`2026-03-24T20:40:00Z`, `2026-03-24T20:40:00.5+02:00`, or without a zone,
/// which means UTC) into nanoseconds since the Unix epoch.
///
/// ```
/// use autodebug_telemetry::iso_to_ns;
/// assert_eq!(iso_to_ns("1970-01-01T00:00:01Z").unwrap(), 1_000_000_000);
/// assert_eq!(iso_to_ns("1970-01-01T00:00:01.5").unwrap(), 1_500_000_000);
/// assert!(iso_to_ns("yesterday").is_err());
/// ```
pub fn iso_to_ns(text: &str) -> Result<i128, TelemetryError> {
    TimeWindow::parse_iso(text.trim()).ok_or_else(|| TelemetryError::Timestamp { text: text.to_string() })
}

/// A window between two ISO-8601 timestamps.
pub fn window_from_iso(start: &str, end: &str) -> Result<TimeWindow, TelemetryError> {
    Ok(TimeWindow::new(iso_to_ns(start)?, iso_to_ns(end)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_shift_the_instant() {
        let utc = iso_to_ns("2026-03-24T20:40:00Z").unwrap();
        let plus_two = iso_to_ns("2026-03-24T22:40:00+02:00").unwrap();
        assert_eq!(utc, plus_two);
        assert_eq!(iso_to_ns("2026-03-24T20:40:00").unwrap(), utc);
        let err = iso_to_ns("24/03/2026").unwrap_err().to_string();
        assert!(err.contains("24/03/2026") && err.contains("ISO-8601"), "{err}");
    }
}
