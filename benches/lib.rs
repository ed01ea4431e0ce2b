//! Benchmarks live in this folder as harness binaries; this library holds what several share.

/// The median, the mean of the middle two for an even count; `None` for no values.
///
/// ```
/// assert_eq!(autodebug_benches::median(&mut [3.0, 1.0, 2.0, 10.0]), Some(2.5));
/// assert_eq!(autodebug_benches::median(&mut []), None);
/// ```
pub fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Splits an SSE body after each event's blank line: one read per event, as a server that
/// flushes every event delivers it.
///
/// ```
/// let reads = autodebug_benches::per_event_reads(b"data: a\n\ndata: b\n\n");
/// assert_eq!(reads, [&b"data: a\n\n"[..], &b"data: b\n\n"[..]]);
/// ```
pub fn per_event_reads(body: &[u8]) -> Vec<&[u8]> {
    let mut reads = Vec::new();
    let mut start = 0;
    for i in 1..body.len() {
        if body[i] == b'\n' && body[i - 1] == b'\n' {
            reads.push(&body[start..=i]);
            start = i + 1;
        }
    }
    if start < body.len() {
        reads.push(&body[start..]);
    }
    reads
}
