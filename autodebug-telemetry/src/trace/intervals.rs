//! Unions and intersections of time intervals (ns), the arithmetic behind busy, idle and overlap.

/// Merges `spans` (start, end) into sorted disjoint intervals.
pub(crate) fn union(mut spans: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    spans.retain(|&(s, e)| e >= s);
    spans.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// Total length of disjoint intervals.
pub(crate) fn length(merged: &[(i64, i64)]) -> i64 {
    // Saturating: the intervals come from a trace file, whose times may be anywhere in i64.
    merged.iter().fold(0i64, |total, (s, e)| total.saturating_add(e.saturating_sub(*s)))
}

/// Length of the intersection of two sorted disjoint interval lists.
pub(crate) fn overlap(a: &[(i64, i64)], b: &[(i64, i64)]) -> i64 {
    let (mut i, mut j, mut total) = (0, 0, 0i64);
    while i < a.len() && j < b.len() {
        let start = a[i].0.max(b[j].0);
        let end = a[i].1.min(b[j].1);
        if end > start {
            total = total.saturating_add(end.saturating_sub(start));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_and_overlap() {
        let u = union(vec![(5, 10), (0, 3), (2, 4), (10, 12), (20, 25)]);
        assert_eq!(u, vec![(0, 4), (5, 12), (20, 25)]);
        assert_eq!(length(&u), 16);
        let v = union(vec![(3, 6), (11, 21)]);
        assert_eq!(overlap(&u, &v), 1 + 1 + 1 + 1);
        assert_eq!(overlap(&u, &[]), 0);
    }
}
