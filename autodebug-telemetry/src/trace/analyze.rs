//! Folds the event stream into the figures of a [`TraceAnalysis`]: kernel and category tables,
//! GPU busy/idle, per-stream compute/communication overlap, operators → kernels, and steps.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::classify::KernelCategory;
use super::intervals;
use super::parse::{DistributedInfo, Event, Header, Id};

/// A GPU idle gap up to this long is the launch pipeline itself (the next kernel was queued but
/// the hardware had not started it); a longer gap means the host did not feed the GPU in time.
pub const LAUNCH_GAP_NS: i64 = 10_000;

/// Everything the analysis of one trace found. Times are microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceAnalysis {
    /// `kineto` (schemaVersion present, lower-case categories) or `legacy` (2021 format).
    pub format: String,
    /// `cuda`, `rocm` or `cpu` (no GPU events).
    pub platform: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distributed: Option<DistributedInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_properties: Option<usize>,
    /// Wall-clock ns of the first and last event, when the trace says how its clock maps to
    /// wall time (`baseTimeNanoseconds`, or the 2021 format's epoch timestamps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_start_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_end_ns: Option<i64>,
    pub events: u64,
    /// Kernels, memcpy and memset events together: `kernel_count + memcpy_count + memset_count`.
    pub gpu_events: u64,
    /// From the first to the last GPU event (summed over devices); 0 when no GPU ran.
    pub span_us: f64,
    /// From the first to the last event of any kind.
    pub trace_span_us: f64,
    /// Sum of kernel durations, overlapping streams counted twice. Memcpy and memset are data
    /// movement, not kernel work, so they are totalled apart ([`memcpy_us`](Self::memcpy_us),
    /// [`memset_us`](Self::memset_us)) and appear in neither `kernels` nor `categories`.
    pub kernel_total_us: f64,
    /// Kernel launches, the sum of `count` over all of `kernels` (before any `--top` cut).
    #[serde(default)]
    pub kernel_count: u64,
    /// Sum of memcpy durations (host/device and device/device copies).
    #[serde(default)]
    pub memcpy_us: f64,
    #[serde(default)]
    pub memcpy_count: u64,
    /// Sum of memset durations.
    #[serde(default)]
    pub memset_us: f64,
    #[serde(default)]
    pub memset_count: u64,
    /// Time at least one GPU event (kernel, memcpy or memset) ran, summed over devices.
    pub gpu_busy_us: f64,
    /// `span_us - gpu_busy_us`.
    pub gpu_idle_us: f64,
    /// Idle gaps longer than [`LAUNCH_GAP_NS`]: the host did not keep the GPU fed.
    pub idle_host_bound_us: f64,
    pub idle_host_bound_gaps: u64,
    /// Idle gaps up to [`LAUNCH_GAP_NS`]: back-to-back launch latency.
    pub idle_launch_gap_us: f64,
    pub idle_launch_gaps: u64,
    pub categories: Vec<CategoryRow>,
    pub kernels: Vec<KernelRow>,
    pub devices: Vec<DeviceRow>,
    pub streams: Vec<StreamRow>,
    pub operators: Vec<OperatorRow>,
    pub steps: Vec<StepRow>,
    pub links: Links,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// GPU time of one kernel class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryRow {
    pub category: KernelCategory,
    pub count: u64,
    pub total_us: f64,
    /// Share of `kernel_total_us`, 0..1.
    pub share: f64,
}

/// One kernel name (all its launches).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelRow {
    pub name: String,
    pub category: KernelCategory,
    pub count: u64,
    pub total_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub max_us: f64,
    pub share: f64,
}

/// Busy, idle and overlap on one GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRow {
    pub device: i64,
    pub span_us: f64,
    pub busy_us: f64,
    pub idle_us: f64,
    /// Time any compute kernel ran.
    pub compute_us: f64,
    /// Time any communication kernel ran.
    pub comm_us: f64,
    /// Time communication ran while compute ran too (hidden communication).
    pub comm_overlap_us: f64,
}

/// One stream of one GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRow {
    pub device: i64,
    pub stream: i64,
    pub count: u64,
    pub busy_us: f64,
    pub compute_us: f64,
    pub comm_us: f64,
    /// Of this stream's communication, the time compute ran on the device at the same moment.
    pub comm_overlap_us: f64,
}

/// A CPU operator and the GPU work it launched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorRow {
    pub name: String,
    /// Times the operator ran on the CPU (nested calls count at every level).
    pub calls: u64,
    pub kernels: u64,
    pub gpu_us: f64,
}

/// One step annotation (`ProfilerStep#N`, `step[DECODE bs=32]`, `execute_context_...`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRow {
    pub name: String,
    /// Start relative to the first event of the trace.
    pub start_us: f64,
    pub cpu_us: f64,
    /// GPU events launched while the step ran on the CPU.
    pub kernels: u64,
    pub gpu_us: f64,
}

/// How much of the GPU work could be tied back to the CPU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Links {
    /// Flow events (`ac2g`, legacy `async`/`launch`) seen, start and finish halves together.
    pub flow_events: u64,
    /// GPU events whose launching runtime call was found (by correlation id or flow).
    pub gpu_events_with_launch: u64,
    /// GPU events tied to a CPU operator (by external id).
    pub gpu_events_with_operator: u64,
}

struct GpuSpan {
    start: i64,
    end: i64,
    device: i64,
    stream: i64,
    kernel: u32,
    correlation: Option<i64>,
    external: Option<i64>,
}

struct KernelStat {
    name: String,
    category: KernelCategory,
    durations: Vec<i64>,
}

struct Step {
    name: String,
    start: i64,
    end: i64,
}

/// Launch facts of a runtime call, by correlation id.
struct Launch {
    ts: i64,
    external: Option<i64>,
}

/// Receives events one by one; [`Accumulator::finish`] turns them into a [`TraceAnalysis`].
#[derive(Default)]
pub(crate) struct Accumulator {
    events: u64,
    first_ts: Option<i64>,
    last_end: Option<i64>,
    legacy_categories: bool,
    spans: Vec<GpuSpan>,
    kernel_ids: HashMap<String, u32>,
    kernels: Vec<KernelStat>,
    launches: HashMap<i64, Launch>,
    flow_starts: HashMap<i64, i64>,
    flow_finishes: HashMap<(i64, i64, i64), i64>,
    flow_events: u64,
    operator_ids: HashMap<String, u32>,
    operator_names: Vec<String>,
    operator_calls: Vec<u64>,
    operator_by_external: HashMap<i64, u32>,
    steps: Vec<Step>,
}

fn is_step_annotation(name: &str) -> bool {
    name.starts_with("ProfilerStep#")
        || name.starts_with("step[")
        || (name.starts_with("execute_") && name.contains("context"))
}

impl Accumulator {
    pub(crate) fn push(&mut self, event: Event<'_>) {
        self.events += 1;
        let ph = event.ph.as_deref().unwrap_or("");
        let ts = event.ts.map(|t| t.ns());
        match ph {
            "X" => {
                let Some(ts) = ts else { return };
                // Times and sums saturate throughout: a trace is the profiled program's (or
                // anyone's) file, and timestamps near i64::MAX must not overflow the arithmetic.
                let end = ts.saturating_add(event.dur.map(|d| d.ns()).unwrap_or(0).max(0));
                self.first_ts = Some(self.first_ts.map_or(ts, |f| f.min(ts)));
                self.last_end = Some(self.last_end.map_or(end, |l| l.max(end)));
                self.complete_event(event, ts, end);
            }
            "s" | "f" => self.flow_event(&event, ts),
            _ => {}
        }
    }

    fn complete_event(&mut self, event: Event<'_>, ts: i64, end: i64) {
        let cat = event.cat.as_deref().unwrap_or("");
        let name = event.name.as_deref().unwrap_or("");
        match cat {
            "kernel" | "gpu_memcpy" | "gpu_memset" | "Kernel" | "Memcpy" | "Memset" => {
                if matches!(cat, "Kernel" | "Memcpy" | "Memset") {
                    self.legacy_categories = true;
                }
                let args = event.args.unwrap_or_default();
                let kernel = match self.kernel_ids.get(name) {
                    Some(&id) => id,
                    None => {
                        let id = self.kernels.len() as u32;
                        self.kernels.push(KernelStat {
                            name: name.to_string(),
                            category: KernelCategory::classify(cat, name),
                            durations: Vec::new(),
                        });
                        self.kernel_ids.insert(name.to_string(), id);
                        id
                    }
                };
                self.kernels[kernel as usize].durations.push(end - ts);
                let device = args
                    .device
                    .as_ref()
                    .and_then(Id::as_i64)
                    .or_else(|| event.pid.as_ref().and_then(Id::as_i64))
                    .unwrap_or(0);
                let stream = args
                    .stream
                    .as_ref()
                    .and_then(Id::as_i64)
                    .or_else(|| event.tid.as_ref().and_then(Id::as_i64))
                    .unwrap_or(0);
                let mut correlation = args.correlation.as_ref().and_then(Id::as_i64);
                if correlation.is_none() {
                    let key = (
                        event.pid.as_ref().and_then(Id::as_i64).unwrap_or(0),
                        event.tid.as_ref().and_then(Id::as_i64).unwrap_or(0),
                        ts,
                    );
                    correlation = self.flow_finishes.get(&key).copied();
                }
                self.spans.push(GpuSpan {
                    start: ts,
                    end,
                    device,
                    stream,
                    kernel,
                    correlation,
                    external: args.external(),
                });
            }
            "cuda_runtime" | "Runtime" | "cuda_driver" => {
                if matches!(cat, "Runtime") {
                    self.legacy_categories = true;
                }
                if let Some(args) = event.args
                    && let Some(correlation) = args.correlation.as_ref().and_then(Id::as_i64)
                {
                    self.launches.insert(correlation, Launch { ts, external: args.external() });
                }
            }
            "gpu_user_annotation" => {}
            _ => {
                if matches!(cat, "cpu_op" | "Operator") {
                    let op = match self.operator_ids.get(name) {
                        Some(&id) => id,
                        None => {
                            let id = self.operator_names.len() as u32;
                            self.operator_names.push(name.to_string());
                            self.operator_calls.push(0);
                            self.operator_ids.insert(name.to_string(), id);
                            id
                        }
                    };
                    self.operator_calls[op as usize] += 1;
                    if let Some(external) = event.args.as_ref().and_then(|a| a.external()) {
                        self.operator_by_external.insert(external, op);
                    }
                }
                if is_step_annotation(name) {
                    self.steps.push(Step { name: name.to_string(), start: ts, end });
                }
            }
        }
    }

    fn flow_event(&mut self, event: &Event<'_>, ts: Option<i64>) {
        let cat = event.cat.as_deref().unwrap_or("");
        if !matches!(cat, "ac2g" | "async" | "async_gpu") {
            return;
        }
        self.flow_events += 1;
        let (Some(id), Some(ts)) = (event.id.as_ref().and_then(Id::as_i64), ts) else { return };
        if event.ph.as_deref() == Some("s") {
            self.flow_starts.insert(id, ts);
        } else {
            let pid = event.pid.as_ref().and_then(Id::as_i64).unwrap_or(0);
            let tid = event.tid.as_ref().and_then(Id::as_i64).unwrap_or(0);
            self.flow_finishes.insert((pid, tid, ts), id);
        }
    }

    pub(crate) fn finish(mut self, header: Header) -> TraceAnalysis {
        let mut out = TraceAnalysis {
            format: if header.schema_version.is_none() || self.legacy_categories { "legacy" } else { "kineto" }
                .to_string(),
            platform: if self.spans.is_empty() {
                "cpu"
            } else if header.rocm {
                "rocm"
            } else {
                "cuda"
            }
            .to_string(),
            schema_version: header.schema_version.clone(),
            trace_name: header.trace_name.clone(),
            distributed: header.distributed.clone(),
            device_properties: header.device_count,
            events: self.events,
            gpu_events: self.spans.len() as u64,
            ..Default::default()
        };
        let first = self.first_ts.unwrap_or(0);
        let last = self.last_end.unwrap_or(first);
        out.trace_span_us = us(last.saturating_sub(first));
        self.wall_clock(&header, first, last, &mut out);

        // A flow's finish half may come before its kernel in the file; resolve those now.
        for span in self.spans.iter_mut().filter(|s| s.correlation.is_none()) {
            span.correlation = self.flow_finishes.get(&(span.device, span.stream, span.start)).copied();
        }
        let launch_ts: Vec<Option<i64>> = self
            .spans
            .iter()
            .map(|s| {
                s.correlation
                    .and_then(|c| self.launches.get(&c).map(|l| l.ts).or_else(|| self.flow_starts.get(&c).copied()))
            })
            .collect();
        out.links.flow_events = self.flow_events;
        out.links.gpu_events_with_launch = launch_ts.iter().filter(|t| t.is_some()).count() as u64;

        self.kernel_tables(&mut out);
        self.busy_idle(&mut out);
        self.operators(&mut out);
        self.steps_table(&launch_ts, first, &mut out);
        if self.spans.is_empty() {
            out.warnings.push("the trace has no GPU events (kernel, memcpy, memset): CPU-only profile".into());
        } else if out.links.gpu_events_with_launch == 0 {
            out.warnings.push("no GPU event could be tied to its launch (no correlation ids or flows)".into());
        }
        out
    }

    fn wall_clock(&self, header: &Header, first: i64, last: i64, out: &mut TraceAnalysis) {
        if self.first_ts.is_none() {
            return;
        }
        // Kineto clocks are relative to `baseTimeNanoseconds`; 2021 traces used epoch
        // microseconds directly (anything after 2001 in ns is above 1e18).
        let base = match header.base_time_ns {
            Some(base) => Some(base),
            None if first > 1_000_000_000_000_000_000 => Some(0),
            None => None,
        };
        if let Some(base) = base {
            out.wall_start_ns = Some(base.saturating_add(first));
            out.wall_end_ns = Some(base.saturating_add(last));
        }
    }

    fn kernel_tables(&mut self, out: &mut TraceAnalysis) {
        let (mut kernel_ns, mut memcpy_ns, mut memset_ns) = (0i64, 0i64, 0i64);
        for stat in &self.kernels {
            let (total_ns, count) = match stat.category {
                KernelCategory::Memcpy => (&mut memcpy_ns, &mut out.memcpy_count),
                KernelCategory::Memset => (&mut memset_ns, &mut out.memset_count),
                _ => (&mut kernel_ns, &mut out.kernel_count),
            };
            *total_ns = total_ns.saturating_add(saturating_sum(&stat.durations));
            *count += stat.durations.len() as u64;
        }
        out.kernel_total_us = us(kernel_ns);
        out.memcpy_us = us(memcpy_ns);
        out.memset_us = us(memset_ns);
        let share = |ns: i64| if kernel_ns > 0 { ns as f64 / kernel_ns as f64 } else { 0.0 };
        let mut by_category: HashMap<KernelCategory, (u64, i64)> = HashMap::new();
        for stat in self.kernels.iter_mut().filter(|k| k.category.is_kernel()) {
            stat.durations.sort_unstable();
            let count = stat.durations.len() as u64;
            let sum = saturating_sum(&stat.durations);
            let entry = by_category.entry(stat.category).or_default();
            entry.0 += count;
            entry.1 = entry.1.saturating_add(sum);
            out.kernels.push(KernelRow {
                name: stat.name.clone(),
                category: stat.category,
                count,
                total_us: us(sum),
                mean_us: if count > 0 { us(sum) / count as f64 } else { 0.0 },
                p50_us: stat.durations.get(stat.durations.len().saturating_sub(1) / 2).map_or(0.0, |&d| us(d)),
                max_us: stat.durations.last().map_or(0.0, |&d| us(d)),
                share: share(sum),
            });
        }
        out.kernels.sort_by(|a, b| b.total_us.total_cmp(&a.total_us).then_with(|| a.name.cmp(&b.name)));
        out.categories = KernelCategory::ALL
            .iter()
            .filter_map(|c| {
                by_category.get(c).map(|&(count, ns)| CategoryRow {
                    category: *c,
                    count,
                    total_us: us(ns),
                    share: share(ns),
                })
            })
            .collect();
        out.categories.sort_by(|a, b| b.total_us.total_cmp(&a.total_us));
    }

    fn busy_idle(&self, out: &mut TraceAnalysis) {
        let mut devices: Vec<i64> = self.spans.iter().map(|s| s.device).collect();
        devices.sort_unstable();
        devices.dedup();
        for device in devices {
            let on_device = || self.spans.iter().filter(move |s| s.device == device);
            let category = |s: &GpuSpan| self.kernels[s.kernel as usize].category;
            let busy = intervals::union(on_device().map(|s| (s.start, s.end)).collect());
            let compute =
                intervals::union(on_device().filter(|s| category(s).is_compute()).map(|s| (s.start, s.end)).collect());
            let comm = intervals::union(
                on_device()
                    .filter(|s| category(s) == KernelCategory::Communication)
                    .map(|s| (s.start, s.end))
                    .collect(),
            );
            let span = match (busy.first(), busy.last()) {
                (Some(f), Some(l)) => l.1.saturating_sub(f.0),
                _ => 0,
            };
            let busy_ns = intervals::length(&busy);
            for pair in busy.windows(2) {
                let gap = pair[1].0.saturating_sub(pair[0].1);
                if gap <= LAUNCH_GAP_NS {
                    out.idle_launch_gap_us += us(gap);
                    out.idle_launch_gaps += 1;
                } else {
                    out.idle_host_bound_us += us(gap);
                    out.idle_host_bound_gaps += 1;
                }
            }
            out.devices.push(DeviceRow {
                device,
                span_us: us(span),
                busy_us: us(busy_ns),
                idle_us: us(span.saturating_sub(busy_ns)),
                compute_us: us(intervals::length(&compute)),
                comm_us: us(intervals::length(&comm)),
                comm_overlap_us: us(intervals::overlap(&comm, &compute)),
            });
            let mut streams: Vec<i64> = on_device().map(|s| s.stream).collect();
            streams.sort_unstable();
            streams.dedup();
            for stream in streams {
                let on_stream = || on_device().filter(move |s| s.stream == stream);
                let stream_comm = intervals::union(
                    on_stream()
                        .filter(|s| category(s) == KernelCategory::Communication)
                        .map(|s| (s.start, s.end))
                        .collect(),
                );
                out.streams.push(StreamRow {
                    device,
                    stream,
                    count: on_stream().count() as u64,
                    busy_us: us(intervals::length(&intervals::union(on_stream().map(|s| (s.start, s.end)).collect()))),
                    compute_us: us(intervals::length(&intervals::union(
                        on_stream().filter(|s| category(s).is_compute()).map(|s| (s.start, s.end)).collect(),
                    ))),
                    comm_us: us(intervals::length(&stream_comm)),
                    comm_overlap_us: us(intervals::overlap(&stream_comm, &compute)),
                });
            }
        }
        out.span_us = out.devices.iter().map(|d| d.span_us).sum();
        out.gpu_busy_us = out.devices.iter().map(|d| d.busy_us).sum();
        out.gpu_idle_us = out.devices.iter().map(|d| d.idle_us).sum();
    }

    fn operators(&self, out: &mut TraceAnalysis) {
        let mut kernels = vec![0u64; self.operator_names.len()];
        let mut gpu_ns = vec![0i64; self.operator_names.len()];
        for span in &self.spans {
            let external =
                span.external.or_else(|| span.correlation.and_then(|c| self.launches.get(&c)).and_then(|l| l.external));
            if let Some(&op) = external.and_then(|e| self.operator_by_external.get(&e)) {
                kernels[op as usize] += 1;
                gpu_ns[op as usize] = gpu_ns[op as usize].saturating_add(span.end.saturating_sub(span.start));
                out.links.gpu_events_with_operator += 1;
            }
        }
        out.operators = self
            .operator_names
            .iter()
            .enumerate()
            .map(|(i, name)| OperatorRow {
                name: name.clone(),
                calls: self.operator_calls[i],
                kernels: kernels[i],
                gpu_us: us(gpu_ns[i]),
            })
            .collect();
        out.operators.sort_by(|a, b| {
            b.gpu_us.total_cmp(&a.gpu_us).then(b.calls.cmp(&a.calls)).then_with(|| a.name.cmp(&b.name))
        });
    }

    fn steps_table(&self, launch_ts: &[Option<i64>], first: i64, out: &mut TraceAnalysis) {
        if self.steps.is_empty() {
            return;
        }
        // GPU work belongs to the step that launched it; sort by launch time once, then each
        // step is a binary search and a prefix-sum difference.
        let mut launched: Vec<(i64, i64)> = self
            .spans
            .iter()
            .zip(launch_ts)
            .map(|(s, t)| (t.unwrap_or(s.start), s.end.saturating_sub(s.start)))
            .collect();
        launched.sort_unstable();
        let mut prefix = Vec::with_capacity(launched.len() + 1);
        prefix.push(0i64);
        for (_, dur) in &launched {
            prefix.push(prefix.last().copied().unwrap_or(0).saturating_add(*dur));
        }
        let mut steps: Vec<&Step> = self.steps.iter().collect();
        steps.sort_by_key(|s| s.start);
        for step in steps {
            let lo = launched.partition_point(|&(t, _)| t < step.start);
            let hi = launched.partition_point(|&(t, _)| t <= step.end);
            out.steps.push(StepRow {
                name: step.name.clone(),
                start_us: us(step.start.saturating_sub(first)),
                cpu_us: us(step.end.saturating_sub(step.start)),
                kernels: (hi - lo) as u64,
                gpu_us: us(prefix[hi].saturating_sub(prefix[lo])),
            });
        }
    }
}

fn saturating_sum(values: &[i64]) -> i64 {
    values.iter().fold(0i64, |sum, v| sum.saturating_add(*v))
}

fn us(ns: i64) -> f64 {
    ns as f64 / 1000.0
}
