//! Trace figures as citable [`Signal`]s, named like Graphsignal's `gpu.compute.*`.

use std::collections::BTreeMap;

use autodebug_core::{Signal, SignalKind, format_number};

use super::analyze::{LAUNCH_GAP_NS, TraceAnalysis};
use super::classify::KernelCategory;

/// The telemetry source name trace signals carry.
pub const SOURCE: &str = "trace";

/// A kernel name short enough for a citation: no `void `, no template or argument lists.
pub fn short_kernel_name(name: &str) -> String {
    let name = name.trim().trim_start_matches("void ").replace("(anonymous namespace)::", "");
    let end = name.find(['<', '(']).unwrap_or(name.len());
    let short = if end == 0 { name.as_str() } else { &name[..end] };
    short.chars().take(80).collect()
}

/// Signals for one or more analysed traces (e.g. every file in a window), summed across them:
/// the share of GPU kernel time per kernel class (`gpu.compute.gemm`...), GPU busy and idle
/// shares, memcpy and memset time (summed like kernel time) as shares of the GPU span
/// (`gpu.memcpy_share`, `gpu.memset_share`), communication overlap, the `top_kernels` heaviest
/// kernels and mean step time.
///
/// ```
/// use autodebug_telemetry::trace::{analyze_bytes, analysis_signals};
/// let a = analyze_bytes(br#"[{"ph":"X","cat":"kernel","name":"ampere_sgemm_128x64_tn","pid":0,"tid":7,"ts":0,"dur":75},
///                             {"ph":"X","cat":"kernel","name":"rms_norm_kernel","pid":0,"tid":7,"ts":80,"dur":25}]"#).unwrap();
/// let signals = analysis_signals(&[a], 5);
/// let gemm = signals.iter().find(|s| s.name == "gpu.compute.gemm").unwrap();
/// assert_eq!(gemm.as_f64(), Some(0.75));
/// assert!(gemm.citation().starts_with("Kernel `gpu.compute.gemm`: 75% of GPU kernel time"));
/// ```
pub fn analysis_signals(analyses: &[TraceAnalysis], top_kernels: usize) -> Vec<Signal> {
    let total_us: f64 = analyses.iter().map(|a| a.kernel_total_us).sum();
    let span_us: f64 = analyses.iter().map(|a| a.span_us).sum();
    let mut signals = Vec::new();
    if analyses.iter().all(|a| a.gpu_events == 0) {
        return signals;
    }
    let of_kernel_time = |us: f64| if total_us > 0.0 { us / total_us } else { 0.0 };
    let files = analyses.len();
    let mut categories: BTreeMap<KernelCategory, (u64, f64)> = BTreeMap::new();
    let mut kernels: BTreeMap<&str, (KernelCategory, u64, f64)> = BTreeMap::new();
    for analysis in analyses {
        for row in &analysis.categories {
            let entry = categories.entry(row.category).or_default();
            entry.0 += row.count;
            entry.1 += row.total_us;
        }
        for row in &analysis.kernels {
            let entry = kernels.entry(row.name.as_str()).or_insert((row.category, 0, 0.0));
            entry.1 += row.count;
            entry.2 += row.total_us;
        }
    }
    for (category, (count, us)) in &categories {
        let share = of_kernel_time(*us);
        signals.push(
            Signal::number(SOURCE, SignalKind::Kernel, &format!("gpu.compute.{category}"), share, "ratio")
                .with_count(*count as f64)
                .with_detail(format!(
                    "{}% of GPU kernel time ({} ms over {count} launches in {files} trace(s))",
                    format_number(share * 100.0),
                    format_number(us / 1e3)
                )),
        );
    }
    let busy_us: f64 = analyses.iter().map(|a| a.gpu_busy_us).sum();
    if span_us > 0.0 {
        let host_bound: f64 = analyses.iter().map(|a| a.idle_host_bound_us).sum();
        let host_gaps: u64 = analyses.iter().map(|a| a.idle_host_bound_gaps).sum();
        let launch: f64 = analyses.iter().map(|a| a.idle_launch_gap_us).sum();
        let launch_gaps: u64 = analyses.iter().map(|a| a.idle_launch_gaps).sum();
        let gap_us = LAUNCH_GAP_NS as f64 / 1e3;
        signals.push(
            Signal::number(SOURCE, SignalKind::Kernel, "gpu.busy_share", busy_us / span_us, "ratio").with_detail(
                format!(
                    "GPU busy {} ms of a {} ms GPU span",
                    format_number(busy_us / 1e3),
                    format_number(span_us / 1e3)
                ),
            ),
        );
        signals.push(
            Signal::number(SOURCE, SignalKind::Kernel, "gpu.idle.host_bound_share", host_bound / span_us, "ratio")
                .with_count(host_gaps as f64)
                .with_detail(format!(
                    "{}% of the GPU span idle in {host_gaps} gaps longer than {} µs ({} ms): the host did not keep the GPU fed",
                    format_number(host_bound / span_us * 100.0),
                    format_number(gap_us),
                    format_number(host_bound / 1e3)
                )),
        );
        signals.push(
            Signal::number(SOURCE, SignalKind::Kernel, "gpu.idle.launch_gap_share", launch / span_us, "ratio")
                .with_count(launch_gaps as f64)
                .with_detail(format!(
                    "{}% of the GPU span idle in {launch_gaps} launch gaps up to {} µs",
                    format_number(launch / span_us * 100.0),
                    format_number(gap_us)
                )),
        );
        let memcpy: (f64, u64) =
            (analyses.iter().map(|a| a.memcpy_us).sum(), analyses.iter().map(|a| a.memcpy_count).sum());
        let memset: (f64, u64) =
            (analyses.iter().map(|a| a.memset_us).sum(), analyses.iter().map(|a| a.memset_count).sum());
        for (kind, (us, count)) in [("memcpy", memcpy), ("memset", memset)] {
            if count == 0 {
                continue;
            }
            signals.push(
                Signal::number(SOURCE, SignalKind::Kernel, &format!("gpu.{kind}_share"), us / span_us, "ratio")
                    .with_count(count as f64)
                    .with_detail(format!(
                        "{kind} ran {} ms over {count} events, {}% of the GPU span (not counted as kernel time)",
                        format_number(us / 1e3),
                        format_number(us / span_us * 100.0)
                    )),
            );
        }
    }
    let comm: f64 = analyses.iter().flat_map(|a| &a.devices).map(|d| d.comm_us).sum();
    if comm > 0.0 {
        let overlap: f64 = analyses.iter().flat_map(|a| &a.devices).map(|d| d.comm_overlap_us).sum();
        signals.push(
            Signal::number(SOURCE, SignalKind::Kernel, "gpu.comm.overlap_share", overlap / comm, "ratio").with_detail(
                format!(
                    "{} ms of {} ms communication ran alongside compute",
                    format_number(overlap / 1e3),
                    format_number(comm / 1e3)
                ),
            ),
        );
    }
    let mut heaviest: Vec<(&str, (KernelCategory, u64, f64))> = kernels.into_iter().collect();
    heaviest.sort_by(|a, b| b.1.2.total_cmp(&a.1.2));
    for (name, (category, count, us)) in heaviest.into_iter().take(top_kernels) {
        signals.push(
            Signal::number(SOURCE, SignalKind::Kernel, "gpu.kernel", us / 1e3, "ms")
                .with_label("kernel", &short_kernel_name(name))
                .with_label("category", category.as_str())
                .with_count(count as f64)
                .with_detail(format!(
                    "{} ms over {count} launches ({} µs each, {}% of GPU kernel time)",
                    format_number(us / 1e3),
                    format_number(us / count.max(1) as f64),
                    format_number(of_kernel_time(us) * 100.0)
                )),
        );
    }
    let steps: Vec<f64> = analyses.iter().flat_map(|a| &a.steps).map(|s| s.cpu_us).collect();
    if !steps.is_empty() {
        let mean_ms = steps.iter().sum::<f64>() / steps.len() as f64 / 1e3;
        signals.push(
            Signal::number(SOURCE, SignalKind::Kernel, "gpu.step.mean_ms", mean_ms, "ms")
                .with_count(steps.len() as f64)
                .with_detail(format!("{} ms per step over {} annotated steps", format_number(mean_ms), steps.len())),
        );
    }
    signals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(
            short_kernel_name("void at::native::vectorized_elementwise_kernel<4, at::native::AddFunctor<float>>(int)"),
            "at::native::vectorized_elementwise_kernel"
        );
        assert_eq!(short_kernel_name("ampere_sgemm_32x32_sliced1x4_tn"), "ampere_sgemm_32x32_sliced1x4_tn");
        assert_eq!(short_kernel_name("void (anonymous namespace)::f<int>()"), "f");
    }
}
