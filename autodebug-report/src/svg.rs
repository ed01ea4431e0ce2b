//! A small SVG writer: linear scales with readable ticks, a plot frame with axes and labels.
//!
//! Hand-written rather than drawn by a plotting library so the output is plain, inline-able SVG
//! with system fonts only: the report must open offline, and the same text must be usable as a
//! standalone file for slides.

use std::fmt::Write;

/// Colors used across the charts; colour-blind safe (Okabe–Ito).
pub const BLUE: &str = "#0072B2";
pub const ORANGE: &str = "#E69F00";
pub const GREEN: &str = "#009E73";
pub const RED: &str = "#D55E00";
pub const GREY: &str = "#888888";
pub const INK: &str = "#222222";
pub const GRID: &str = "#e4e4e4";

pub const FONT: &str = "system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', Arial, sans-serif";

/// Escapes text for SVG and HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A number as a tick or point label: few digits, no trailing zeros.
pub fn short_number(value: f64) -> String {
    let magnitude = value.abs();
    let text = if magnitude >= 1000.0 {
        format!("{value:.0}")
    } else if magnitude >= 100.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    };
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text }
}

/// Maps a data interval onto a pixel interval.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub lo: f64,
    pub hi: f64,
    pixel_lo: f64,
    pixel_hi: f64,
    /// Smallest tick step; 1 for counts such as iteration numbers.
    min_step: f64,
}

impl Scale {
    /// A scale covering `lo..hi`, widened to readable tick boundaries; a degenerate interval
    /// (one value) is widened around it so single points still land inside the frame.
    pub fn nice(lo: f64, hi: f64, pixel_lo: f64, pixel_hi: f64) -> Scale {
        let (mut lo, mut hi) = if lo.is_finite() && hi.is_finite() { (lo.min(hi), lo.max(hi)) } else { (0.0, 1.0) };
        if (hi - lo).abs() < f64::EPSILON * hi.abs().max(1.0) {
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            lo -= pad;
            hi += pad;
        }
        let step = tick_step(lo, hi);
        Scale { lo: (lo / step).floor() * step, hi: (hi / step).ceil() * step, pixel_lo, pixel_hi, min_step: 0.0 }
    }

    /// A scale over exactly `lo..hi` (for ratios, iteration numbers).
    pub fn exact(lo: f64, hi: f64, pixel_lo: f64, pixel_hi: f64) -> Scale {
        Scale { lo, hi, pixel_lo, pixel_hi, min_step: 0.0 }
    }

    /// Ticks at whole numbers only.
    pub fn integer_ticks(mut self) -> Scale {
        self.min_step = 1.0;
        self
    }

    pub fn map(&self, value: f64) -> f64 {
        let span = self.hi - self.lo;
        if span == 0.0 {
            return (self.pixel_lo + self.pixel_hi) / 2.0;
        }
        self.pixel_lo + (value - self.lo) / span * (self.pixel_hi - self.pixel_lo)
    }

    /// Tick positions: 4 to 10 round values inside the scale.
    pub fn ticks(&self) -> Vec<f64> {
        let step = tick_step(self.lo, self.hi).max(self.min_step);
        let first = (self.lo / step).ceil() as i64;
        let last = (self.hi / step).floor() as i64;
        (first..=last).take(50).map(|k| k as f64 * step).collect()
    }
}

/// A 1-2-5 step that gives about 5 ticks over the interval.
fn tick_step(lo: f64, hi: f64) -> f64 {
    let span = (hi - lo).abs().max(f64::MIN_POSITIVE);
    let raw = span / 5.0;
    let power = 10f64.powf(raw.log10().floor());
    let unit = raw / power;
    let nice = if unit < 1.5 {
        1.0
    } else if unit < 3.5 {
        2.0
    } else if unit < 7.5 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// A chart canvas: size, margins, title, axis labels and the two scales.
pub struct Frame {
    pub width: f64,
    pub height: f64,
    pub x: Scale,
    pub y: Scale,
    pub body: String,
    legend_x: f64,
}

/// Where the plotting area sits inside the canvas.
pub struct Layout {
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
}

impl Layout {
    pub fn chart() -> Layout {
        Layout { width: 640.0, height: 380.0, left: 72.0, right: 24.0, top: 64.0, bottom: 52.0 }
    }

    pub fn x_pixels(&self) -> (f64, f64) {
        (self.left, self.width - self.right)
    }

    pub fn y_pixels(&self) -> (f64, f64) {
        (self.height - self.bottom, self.top)
    }
}

impl Frame {
    /// Draws the background, title, grid, ticks and axis labels; the caller adds marks to `body`.
    pub fn new(layout: &Layout, x: Scale, y: Scale, title: &str, x_label: &str, y_label: &str) -> Frame {
        let mut body = String::new();
        let (x0, x1) = layout.x_pixels();
        let (y0, y1) = layout.y_pixels();
        let _ = write!(
            body,
            r##"<rect width="{w}" height="{h}" fill="#ffffff"/><text x="{tx}" y="26" font-size="16" font-weight="600" fill="{INK}">{title}</text>"##,
            w = layout.width,
            h = layout.height,
            tx = layout.left,
            title = escape(title)
        );
        for t in y.ticks() {
            let py = y.map(t);
            let _ = write!(
                body,
                r#"<line x1="{x0}" y1="{py:.1}" x2="{x1}" y2="{py:.1}" stroke="{GRID}"/><text x="{lx}" y="{ty:.1}" font-size="11" text-anchor="end" fill="{INK}">{label}</text>"#,
                lx = x0 - 6.0,
                ty = py + 4.0,
                label = short_number(t)
            );
        }
        for t in x.ticks() {
            let px = x.map(t);
            let _ = write!(
                body,
                r#"<line x1="{px:.1}" y1="{y0}" x2="{px:.1}" y2="{y1}" stroke="{GRID}"/><text x="{px:.1}" y="{ty}" font-size="11" text-anchor="middle" fill="{INK}">{label}</text>"#,
                ty = y0 + 16.0,
                label = short_number(t)
            );
        }
        let _ = write!(
            body,
            r#"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="{INK}"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="{INK}"/><text x="{cx:.1}" y="{xl}" font-size="12" text-anchor="middle" fill="{INK}">{x_label}</text><text transform="translate(16 {cy:.1}) rotate(-90)" font-size="12" text-anchor="middle" fill="{INK}">{y_label}</text>"#,
            cx = (x0 + x1) / 2.0,
            xl = layout.height - 12.0,
            cy = (y0 + y1) / 2.0,
            x_label = escape(x_label),
            y_label = escape(y_label)
        );
        Frame { width: layout.width, height: layout.height, x, y, body, legend_x: layout.left }
    }

    /// Adds a legend entry to the row under the title, after the entries already there.
    pub fn legend(&mut self, color: &str, label: &str, dashed: bool) {
        let x = self.legend_x;
        let y = 42.0;
        let dash = if dashed { r#" stroke-dasharray="5 3""# } else { "" };
        let _ = write!(
            self.body,
            r#"<line x1="{x}" y1="{y}" x2="{x2}" y2="{y}" stroke="{color}" stroke-width="2.5"{dash}/><text x="{tx}" y="{ty}" font-size="11" fill="{INK}">{label}</text>"#,
            x2 = x + 22.0,
            tx = x + 28.0,
            ty = y + 4.0,
            label = escape(label)
        );
        // Glyphs of an 11 px sans-serif average about 6 px wide.
        self.legend_x += 28.0 + label.chars().count() as f64 * 6.2 + 18.0;
    }

    /// The finished SVG document, with an accessible title.
    pub fn finish(self, title: &str) -> String {
        document(self.width, self.height, title, &self.body)
    }
}

/// Wraps drawn elements into a standalone SVG document (valid inline in HTML as well).
pub fn document(width: f64, height: f64, title: &str, body: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="{font}" role="img"><title>{title}</title>{body}</svg>"#,
        font = FONT.replace('\'', "&#39;"),
        title = escape(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_data() {
        let scale = Scale::nice(3.7, 187.2, 0.0, 100.0);
        assert!(scale.lo <= 3.7 && scale.hi >= 187.2);
        let ticks = scale.ticks();
        assert!((4..=11).contains(&ticks.len()), "{ticks:?}");
        let step = ticks[1] - ticks[0];
        let mantissa = step / 10f64.powf(step.log10().floor());
        assert!([1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-9), "{ticks:?}");
        for pair in ticks.windows(2) {
            assert!((pair[1] - pair[0] - step).abs() < 1e-9, "{ticks:?}");
        }
        for t in &ticks {
            assert!((t / step - (t / step).round()).abs() < 1e-9, "{ticks:?}");
        }
    }

    #[test]
    fn a_single_value_gets_a_nonempty_scale() {
        let scale = Scale::nice(42.0, 42.0, 0.0, 100.0);
        assert!(scale.lo < 42.0 && scale.hi > 42.0);
        let p = scale.map(42.0);
        assert!(p > 0.0 && p < 100.0);
    }

    #[test]
    fn escape_neutralizes_markup() {
        assert_eq!(escape(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn short_numbers_drop_trailing_zeros() {
        assert_eq!(short_number(200.0), "200");
        assert_eq!(short_number(1.5), "1.5");
        assert_eq!(short_number(0.25), "0.25");
        assert_eq!(short_number(12345.6), "12346");
    }
}
