//! `autodebug telemetry fetch`: one telemetry source's snapshot for a window, as a table or JSON.

use std::process::ExitCode;
use std::time::Duration;

use autodebug_core::{
    Deployment, Endpoint, EngineKind, ServiceSpec, Target, TelemetrySnapshot, TelemetrySource, TimeWindow,
};
use autodebug_telemetry::prometheus::{PromQuery, PrometheusScrape, PrometheusServer};
use autodebug_telemetry::{GraphsignalSource, window_from_iso};

#[derive(clap::Subcommand)]
pub enum Args {
    /// Read one telemetry source for a window and print its signals.
    #[command(
        after_help = "Examples:\n  autodebug telemetry fetch --source prometheus --url http://prometheus:9090 --start 2026-03-24T20:40:00Z --end 2026-03-24T20:45:00Z --engine vllm\n  autodebug telemetry fetch --source graphsignal --start 2026-03-24T20:40:00Z --end 2026-03-24T20:45:00Z --json\n  autodebug telemetry fetch --source scrape --url http://127.0.0.1:30000 --duration 10s\n\n--source prometheus asks a Prometheus SERVER (PromQL over /api/v1/query_range) for a past window;\n--source scrape reads the service's own /metrics twice, --duration apart, from now."
    )]
    Fetch(FetchArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SourceKind {
    /// A Prometheus server's HTTP API (`--url` is the server).
    Prometheus,
    /// The Graphsignal debug-context API (`--url` overrides GRAPHSIGNAL_API_BASE).
    Graphsignal,
    /// The service's own `/metrics`, scraped at the start and end of a live window.
    Scrape,
}

#[derive(clap::Args)]
pub struct FetchArgs {
    #[arg(long, value_enum)]
    source: SourceKind,
    /// Prometheus server, Graphsignal API base, or the service's base URL for `scrape`.
    #[arg(long)]
    url: Option<String>,
    /// Window start, ISO-8601 (no zone means UTC); not for `scrape`.
    #[arg(long)]
    start: Option<String>,
    /// Window end, ISO-8601; not for `scrape`.
    #[arg(long)]
    end: Option<String>,
    /// Length of the live window for `scrape` (`10s`, `500ms`, `2m`).
    #[arg(long, default_value = "10s", value_parser = autodebug_core::parse_duration)]
    duration: Duration,
    /// The engine whose metric names the default PromQL queries use.
    #[arg(long, default_value = "sglang")]
    engine: EngineKind,
    /// Model name, substituted for `$model` in queries.
    #[arg(long, default_value = "")]
    model: String,
    /// A PromQL query as NAME=PROMQL (repeatable); replaces the default set.
    #[arg(long = "query")]
    queries: Vec<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

fn usage(message: impl Into<String>) -> autodebug_core::Error {
    autodebug_core::Error::config("autodebug telemetry fetch", message)
}

fn past_window(args: &FetchArgs) -> autodebug_core::Result<TimeWindow> {
    let (Some(start), Some(end)) = (&args.start, &args.end) else {
        return Err(usage("--start and --end are required for this source (ISO-8601, e.g. 2026-03-24T20:40:00Z)"));
    };
    let window = window_from_iso(start, end).map_err(|e| usage(e.to_string()))?;
    if window.end_ns <= window.start_ns {
        return Err(usage(format!("--end {end} is not after --start {start}")));
    }
    Ok(window)
}

pub async fn run(args: Args, _global: &crate::Global) -> autodebug_core::Result<ExitCode> {
    match args {
        Args::Fetch(args) => fetch(args).await,
    }
}

async fn fetch(args: FetchArgs) -> autodebug_core::Result<ExitCode> {
    let base_url = args.url.clone().unwrap_or_default();
    let deployment = Deployment {
        id: "cli".into(),
        backend: "cli".into(),
        spec: ServiceSpec::new("cli", args.engine, &args.model),
        started_ns: TimeWindow::now_ns(),
        details: Default::default(),
    };
    let endpoint = Endpoint::new(base_url.trim_end_matches("/metrics"), &args.model);
    let target = Target { deployment: &deployment, endpoint: &endpoint, logs: &[] };
    let snapshot = match args.source {
        SourceKind::Prometheus => {
            let url = args
                .url
                .as_deref()
                .ok_or_else(|| usage("--url is required: the Prometheus server, e.g. http://prometheus:9090"))?;
            let window = past_window(&args)?;
            let mut builder = PrometheusServer::builder(url);
            if let Some(token) = autodebug_core::Secret::from_env("PROMETHEUS_TOKEN") {
                builder = builder.bearer_token(token);
            }
            let queries = if args.queries.is_empty() {
                PromQuery::defaults_for(args.engine)
            } else {
                args.queries
                    .iter()
                    .map(|q| {
                        q.split_once('=')
                            .map(|(name, promql)| PromQuery::new(name.trim(), promql.trim()))
                            .ok_or_else(|| usage(format!("--query {q:?} is not NAME=PROMQL")))
                    })
                    .collect::<autodebug_core::Result<Vec<_>>>()?
            };
            for query in queries {
                builder = builder.query(query);
            }
            builder.build().fetch(&target, window).await?
        }
        SourceKind::Graphsignal => {
            let window = past_window(&args)?;
            let builder = match (GraphsignalSource::builder().from_env(), args.url.as_deref()) {
                (Ok(builder), Some(url)) => builder.api_base(url),
                (Ok(builder), None) => builder,
                // A self-hosted or simulated debug-context endpoint may need no key.
                (Err(_), Some(url)) => GraphsignalSource::builder().api_base(url),
                (Err(e), None) => return Err(e.into_core("graphsignal")),
            };
            builder.build().fetch(&target, window).await?
        }
        SourceKind::Scrape => {
            if args.url.is_none() {
                return Err(usage("--url is required: the service's base URL, e.g. http://127.0.0.1:30000"));
            }
            let source = PrometheusScrape::builder().build();
            let start = TimeWindow::now_ns();
            source.begin(&target).await?;
            tokio::time::sleep(args.duration).await;
            source.fetch(&target, TimeWindow::new(start, TimeWindow::now_ns())).await?
        }
    };
    if args.json {
        let mut value =
            serde_json::to_value(&snapshot).map_err(|e| usage(format!("cannot encode the snapshot: {e}")))?;
        if let Some(object) = value.as_object_mut() {
            // The raw bodies can be megabytes; the signals cite what matters.
            object.remove("raw");
        }
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    } else {
        print!("{}", render(&snapshot));
    }
    Ok(ExitCode::SUCCESS)
}

fn render(snapshot: &TelemetrySnapshot) -> String {
    let mut out = format!("source {}", snapshot.source);
    if let Some(w) = snapshot.window {
        out.push_str(&format!(
            ", window {} .. {} ({:.1} s)",
            TimeWindow::format_iso(w.start_ns),
            TimeWindow::format_iso(w.end_ns),
            w.duration().as_secs_f64()
        ));
    }
    out.push_str(&format!(", {} signals\n", snapshot.signals.len()));
    for signal in &snapshot.signals {
        let canonical = signal.canonical.as_deref().map(|c| format!("  [{c}]")).unwrap_or_default();
        out.push_str(&format!("  - {}{canonical}\n", signal.citation()));
    }
    for warning in &snapshot.warnings {
        out.push_str(&format!("warning: {warning}\n"));
    }
    out
}
