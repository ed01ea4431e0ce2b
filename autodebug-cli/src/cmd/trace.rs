//! `autodebug trace analyze`: where a PyTorch-profiler trace's GPU time went.

use std::path::PathBuf;
use std::process::ExitCode;

use autodebug_core::format_number;
use autodebug_telemetry::trace::{TraceAnalysis, analyze_file};

#[derive(clap::Subcommand)]
pub enum Args {
    /// Kernel classes, GPU busy/idle, stream overlap, operators and steps of a trace file.
    #[command(
        after_help = "Examples:\n  autodebug trace analyze worker0.pt.trace.json.gz\n  autodebug trace analyze trace.json --top 30\n  autodebug trace analyze trace.json.gz --json | jq '.kernels[0]'"
    )]
    Analyze(AnalyzeArgs),
}

#[derive(clap::Args)]
pub struct AnalyzeArgs {
    /// The trace: Chrome-trace JSON from torch.profiler, plain or gzipped (`.json`, `.json.gz`).
    file: PathBuf,
    /// Rows per table (kernels, operators, steps); with --json, limits those lists too.
    #[arg(long)]
    top: Option<usize>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, _global: &crate::Global) -> autodebug_core::Result<ExitCode> {
    match args {
        Args::Analyze(args) => analyze(args).await,
    }
}

async fn analyze(args: AnalyzeArgs) -> autodebug_core::Result<ExitCode> {
    let file = args.file.clone();
    let mut analysis = tokio::task::spawn_blocking(move || analyze_file(&file))
        .await
        .map_err(|e| autodebug_core::Error::telemetry("trace", format!("analysis task failed: {e}")))?
        .map_err(|e| e.into_core())?;
    if args.json {
        if let Some(top) = args.top {
            analysis.kernels.truncate(top);
            analysis.operators.truncate(top);
            analysis.steps.truncate(top);
        }
        let mut value = serde_json::to_value(&analysis)
            .map_err(|e| autodebug_core::Error::telemetry("trace", format!("cannot encode the analysis: {e}")))?;
        if let Some(object) = value.as_object_mut() {
            object.insert("file".into(), serde_json::Value::String(args.file.display().to_string()));
        }
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    } else {
        print!("{}", render(&args.file.display().to_string(), &analysis, args.top.unwrap_or(15)));
    }
    Ok(ExitCode::SUCCESS)
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1e3)
}

fn pct(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut all = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    all.extend(rows);
    let widths: Vec<usize> =
        (0..header.len()).map(|c| all.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &all {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str("  ");
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn truncate(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        name.to_string()
    } else {
        format!("{}…", name.chars().take(max - 1).collect::<String>())
    }
}

fn render(file: &str, a: &TraceAnalysis, top: usize) -> String {
    let mut out = format!(
        "trace {file}\n  format {}, platform {}, {} events, {} GPU events",
        a.format, a.platform, a.events, a.gpu_events
    );
    if let Some(d) = &a.distributed
        && let (Some(rank), Some(world)) = (d.rank, d.world_size)
    {
        out.push_str(&format!(", rank {rank} of {world}"));
    }
    out.push('\n');
    out.push_str(&format!(
        "\nGPU time (ms)\n  span {}  busy {} ({})  idle {}: host-bound {} in {} gaps, launch gaps {} in {} gaps\n",
        ms(a.span_us),
        ms(a.gpu_busy_us),
        pct(if a.span_us > 0.0 { a.gpu_busy_us / a.span_us } else { 0.0 }),
        ms(a.gpu_idle_us),
        ms(a.idle_host_bound_us),
        a.idle_host_bound_gaps,
        ms(a.idle_launch_gap_us),
        a.idle_launch_gaps,
    ));
    out.push_str(&format!(
        "  kernels {} in {} launches, memcpy {} in {}, memset {} in {} (streams overlapping count twice)\n",
        ms(a.kernel_total_us),
        a.kernel_count,
        ms(a.memcpy_us),
        a.memcpy_count,
        ms(a.memset_us),
        a.memset_count,
    ));
    if !a.categories.is_empty() {
        out.push_str("\nKernel classes\n");
        out.push_str(&table(
            &["class", "launches", "GPU ms", "share"],
            a.categories
                .iter()
                .map(|c| vec![c.category.to_string(), c.count.to_string(), ms(c.total_us), pct(c.share)])
                .collect(),
        ));
    }
    if !a.kernels.is_empty() {
        out.push_str(&format!("\nKernels (top {} of {})\n", top.min(a.kernels.len()), a.kernels.len()));
        out.push_str(&table(
            &["kernel", "class", "launches", "GPU ms", "share", "mean µs", "p50 µs", "max µs"],
            a.kernels
                .iter()
                .take(top)
                .map(|k| {
                    vec![
                        truncate(&k.name, 70),
                        k.category.to_string(),
                        k.count.to_string(),
                        ms(k.total_us),
                        pct(k.share),
                        format_number(k.mean_us),
                        format_number(k.p50_us),
                        format_number(k.max_us),
                    ]
                })
                .collect(),
        ));
    }
    if !a.streams.is_empty() {
        out.push_str("\nStreams\n");
        out.push_str(&table(
            &["device", "stream", "events", "busy ms", "compute ms", "comm ms", "comm overlapped ms"],
            a.streams
                .iter()
                .map(|s| {
                    vec![
                        s.device.to_string(),
                        s.stream.to_string(),
                        s.count.to_string(),
                        ms(s.busy_us),
                        ms(s.compute_us),
                        ms(s.comm_us),
                        ms(s.comm_overlap_us),
                    ]
                })
                .collect(),
        ));
    }
    let with_gpu: Vec<_> = a.operators.iter().filter(|o| o.kernels > 0).take(top).collect();
    if !with_gpu.is_empty() {
        out.push_str(&format!(
            "\nCPU operators by the GPU time they launched ({} of {} GPU events tied to an operator)\n",
            a.links.gpu_events_with_operator, a.gpu_events
        ));
        out.push_str(&table(
            &["operator", "calls", "kernels", "GPU ms"],
            with_gpu
                .iter()
                .map(|o| vec![truncate(&o.name, 70), o.calls.to_string(), o.kernels.to_string(), ms(o.gpu_us)])
                .collect(),
        ));
    }
    if !a.steps.is_empty() {
        let mean = a.steps.iter().map(|s| s.cpu_us).sum::<f64>() / a.steps.len() as f64;
        out.push_str(&format!("\nSteps ({} annotated, mean {} ms on the CPU)\n", a.steps.len(), ms(mean)));
        out.push_str(&table(
            &["step", "start ms", "CPU ms", "kernels", "GPU ms"],
            a.steps
                .iter()
                .take(top)
                .map(|s| vec![truncate(&s.name, 60), ms(s.start_us), ms(s.cpu_us), s.kernels.to_string(), ms(s.gpu_us)])
                .collect(),
        ));
    }
    for warning in &a.warnings {
        out.push_str(&format!("\nwarning: {warning}\n"));
    }
    out
}
