//! Real-time OpenAI-compatible server over the engine model.
//!
//! [`serve`] starts the engine model on a dedicated OS thread that sleeps each step's simulated
//! duration (see `clock`), and serves, on a listener the caller bound:
//!
//! - `POST /v1/chat/completions`, `POST /v1/completions` (SSE streaming and non-streaming),
//!   `GET /v1/models`, with bearer auth when an API key is set;
//! - `GET /health`, and for SGLang `GET /get_server_info` (the startup options as JSON);
//! - `GET /metrics`: Prometheus text under the engine's real metric names;
//! - `GET /api/v1/debug_context/`: a Graphsignal-shaped debug context of the run.
//!
//! [`serve_twin`] serves a twin fitted to a real deployment ([`crate::twin`]) the same way: its
//! scheduler steps in real time behind the same API and metrics.
//!
//! [`run_cli`] is the `autodebug-sim` command line (also behind `autodebug sim serve`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use autodebug_sim::server::{ServeOptions, serve};
//! use autodebug_sim::{EngineKind, SimConfig};
//!
//! let flags = ["--enable-mixed-chunk".to_string()];
//! let config = SimConfig::from_args(EngineKind::Sglang, "H100", "qwen1.5-0.5b", &flags)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! println!("OpenAI API on http://{}/v1", listener.local_addr()?);
//! serve(config, listener, ServeOptions { seed: 7, ..ServeOptions::default() }).await?;
//! # Ok(())
//! # }
//! ```

mod cli;
mod clock;
mod engine_log;
mod faults;
mod graphsignal;
mod metrics;
mod openai;
pub mod rx_stamp;
mod telemetry;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

pub use cli::run_cli;
pub use clock::Clock;
pub use engine_log::{Level, format_line};
pub use graphsignal::DEPLOYMENT_TAG;
pub use metrics::format_go_float;
pub use openai::natural_length;

use clock::{EngineHandle, EngineThreadOptions, SteppedEngine, lock, spawn_engine_thread};
use engine_log::BatchLogger;
use graphsignal::ServerIdentity;
use telemetry::Telemetry;

use crate::twin::{Twin, TwinEngine, TwinError};

pub(crate) use crate::{
    Engine, EngineKind, EngineStats, SimConfig, SimError, SimRequest, StepKind, StepOutcome, tokenize,
};

/// How the server behaves, beyond the engine configuration.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Seeds the model's noise and the natural answer lengths (requests without `ignore_eos`).
    pub seed: u64,
    /// The served model name clients must send as `model`; the model's Hugging Face id by default.
    pub model_name: Option<String>,
    /// When set, `/v1/*` requires `Authorization: Bearer <key>`. Never logged.
    pub api_key: Option<String>,
    /// No sleeping: tokens come as fast as the client takes them (for benchmarking clients).
    pub fast: bool,
    /// Do not print engine-style log lines (startup banner, batch statistics).
    pub quiet: bool,
    /// A fault to play on the API, health and telemetry endpoints (chaos campaigns).
    pub fault: Option<autodebug_core::chaos::FaultClass>,
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The engine refused its configuration (bad flag, startup OOM...); the message reads like the engine's.
    #[error("{0}")]
    Engine(#[from] SimError),
    #[error("could not bind {address}: {source}; pick another --port or stop the process using it")]
    Bind { address: String, source: std::io::Error },
    /// The twin cannot serve this configuration (an unreadable flag, a budget nothing fits).
    #[error("{0}")]
    Twin(TwinError),
    #[error("could not start the engine thread: {0}")]
    EngineThread(std::io::Error),
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
}

/// Shared by every HTTP handler.
pub(crate) struct AppState {
    engine: EngineHandle,
    clock: Clock,
    telemetry: Arc<Mutex<Telemetry>>,
    identity: ServerIdentity,
    served_model_name: String,
    hf_id: String,
    max_context: u32,
    api_key: Option<String>,
    seed: u64,
    next_request_id: AtomicU64,
    created_unix_s: u64,
}

/// Starts the engine (printing its startup lines unless `quiet`), then serves on `listener`
/// until the task is dropped or the listener fails.
///
/// The listener is already bound, so a startup failure here happens after binding; a launcher
/// that must fail before binding calls [`start_engine`] first and then [`serve_engine`].
pub async fn serve(
    config: SimConfig,
    listener: tokio::net::TcpListener,
    options: ServeOptions,
) -> Result<(), ServerError> {
    let engine = start_engine(config, options.seed, options.quiet)?;
    serve_engine(engine, listener, options).await
}

/// Serves the reference target that client self-checks measure against (`autodebug bench
/// --self-check`): SGLang on an H100 with Qwen1.5-0.5B, seed 7, as `sim serve --engine sglang
/// --gpu H100 --model qwen1.5-0.5b --seed 7 --quiet` would, under `model_name`; `fast` streams
/// tokens as fast as the client reads them instead of pacing steps in real time.
pub async fn serve_reference(
    listener: tokio::net::TcpListener,
    fast: bool,
    model_name: String,
) -> Result<(), ServerError> {
    let config = SimConfig::from_args(EngineKind::Sglang, "H100", "qwen1.5-0.5b", &[])?;
    let options = ServeOptions { seed: 7, model_name: Some(model_name), fast, quiet: true, ..ServeOptions::default() };
    serve(config, listener, options).await
}

/// Starts the engine model and prints its startup lines (unless `quiet`); the error of a bad
/// configuration or a startup OOM is the engine-like message.
pub fn start_engine(config: SimConfig, seed: u64, quiet: bool) -> Result<Engine, ServerError> {
    let engine_kind = config.engine;
    let engine = Engine::start(config, seed)?;
    if !quiet {
        for line in engine.startup_log() {
            engine_log::emit(engine_kind, Level::Info, &line);
        }
    }
    Ok(engine)
}

/// Serves an already started engine on `listener`: prints the engine's ready line, then answers
/// requests until the task is dropped or the listener fails.
pub async fn serve_engine(
    engine: Engine,
    listener: tokio::net::TcpListener,
    options: ServeOptions,
) -> Result<(), ServerError> {
    let config = engine.config();
    let served = Served {
        identity: ServerIdentity {
            engine: config.engine,
            gpu: config.gpu.name.to_string(),
            gpu_count: config.gpu_count,
            model: config.model.hf_id.to_string(),
            startup_attributes: config.startup_attributes(),
        },
        args: config.args.clone(),
        max_context: config.model.max_context,
    };
    serve_stepped(engine, served, listener, options).await
}

/// Serves a twin fitted to a real deployment (`autodebug twin fit`) as that engine launched with
/// `flags`, in real time: each step lasts what the twin predicts, and prompts count as many
/// tokens as the fitted engine counted. It speaks the engine's own metrics and log lines (vLLM's,
/// SGLang's, or llama-server's `llamacpp:` families and `print_timing` lines).
pub async fn serve_twin(
    twin: &Twin,
    flags: &[String],
    listener: tokio::net::TcpListener,
    options: ServeOptions,
) -> Result<(), ServerError> {
    let engine = TwinEngine::start(twin, flags).map_err(ServerError::Twin)?;
    if !options.quiet {
        let fitted = twin.fitted_on.as_ref().map_or("unfitted".to_string(), |f| {
            format!("fitted on session {} ({} observations)", f.session, f.observations)
        });
        let line = format!(
            "twin of {} {fitted}; a client prompt token counts {:.2} engine tokens",
            twin.model,
            engine.prompt_scale()
        );
        engine_log::emit(twin.engine, Level::Info, &line);
        if !engine.unseen().is_empty() {
            let line = format!("never measured, served as the fitted defaults: {}", engine.unseen().join(", "));
            engine_log::emit(twin.engine, Level::Warning, &line);
        }
    }
    let context_flag = match twin.engine {
        EngineKind::Vllm => "--max-model-len",
        EngineKind::LlamaCpp => "--ctx-size",
        EngineKind::Sglang => "--context-length",
    };
    let served = Served {
        identity: ServerIdentity {
            engine: twin.engine,
            gpu: "twin".into(),
            gpu_count: 1,
            model: twin.model.clone(),
            startup_attributes: Vec::new(),
        },
        args: flags.to_vec(),
        max_context: flag_value(flags, context_flag).and_then(|v| v.parse().ok()).unwrap_or(TWIN_MAX_CONTEXT),
    };
    serve_stepped(engine, served, listener, options).await
}

/// A twin's context length unless its flags say: twins do not model KV capacity.
const TWIN_MAX_CONTEXT: u32 = 32_768;

/// Who the server says it is, and the launch flags it reports.
struct Served {
    identity: ServerIdentity,
    args: Vec<String>,
    max_context: u32,
}

async fn serve_stepped<E: SteppedEngine>(
    engine: E,
    served: Served,
    listener: tokio::net::TcpListener,
    options: ServeOptions,
) -> Result<(), ServerError> {
    let clock = Clock::new();
    let Served { identity, args, max_context } = served;
    let engine_kind = identity.engine;
    let served_model_name = options
        .model_name
        .clone()
        .or_else(|| flag_value(&args, "--served-model-name").map(str::to_string))
        .unwrap_or_else(|| identity.model.clone());
    let cuda_graph = !args.iter().any(|a| a == "--disable-cuda-graph" || a == "--enforce-eager");
    let cuda_graph_max_bs = flag_value(&args, "--cuda-graph-max-bs").and_then(|v| v.parse().ok()).unwrap_or(256);
    let hf_id = identity.model.clone();
    let started_unix_ns = clock.now_unix_ns();
    let telemetry = Arc::new(Mutex::new(Telemetry::new(
        engine_kind,
        served_model_name.clone(),
        cuda_graph,
        started_unix_ns,
        metrics::buckets_for(engine_kind),
    )));
    if engine_kind == EngineKind::Vllm {
        let prefix_caching = !args.iter().any(|a| a == "--no-enable-prefix-caching");
        lock(&telemetry).cache_config = vec![
            ("cache_dtype", flag_value(&args, "--kv-cache-dtype").unwrap_or("auto").to_string()),
            ("enable_prefix_caching", if prefix_caching { "True" } else { "False" }.to_string()),
            ("gpu_memory_utilization", flag_value(&args, "--gpu-memory-utilization").unwrap_or("0.9").to_string()),
        ];
    }
    let (handle, _thread) = spawn_engine_thread(
        engine,
        EngineThreadOptions {
            fast: options.fast,
            clock,
            telemetry: Arc::clone(&telemetry),
            logger: BatchLogger::new(engine_kind, !options.quiet, cuda_graph, cuda_graph_max_bs),
        },
    )
    .map_err(ServerError::EngineThread)?;
    let state = Arc::new(AppState {
        engine: handle,
        clock,
        telemetry,
        identity,
        served_model_name,
        hf_id,
        max_context,
        api_key: options.api_key.clone(),
        seed: options.seed,
        next_request_id: AtomicU64::new(1),
        created_unix_s: started_unix_ns / 1_000_000_000,
    });

    if !options.quiet {
        let (host, port) = match listener.local_addr() {
            Ok(address) => (address.ip().to_string(), address.port()),
            Err(_) => ("0.0.0.0".to_string(), 0),
        };
        for line in engine_log::ready_lines(engine_kind, &host, port) {
            engine_log::emit(engine_kind, Level::Info, &line);
        }
    }
    if options.fault == Some(autodebug_core::chaos::FaultClass::HostileLog) {
        for line in faults::hostile_lines() {
            engine_log::emit(engine_kind, Level::Warning, line);
        }
    }
    let mut router = router(state);
    if let Some(fault) = options.fault {
        router = router.layer(axum::middleware::from_fn_with_state(
            faults::FaultState::new(fault, engine_kind),
            faults::misbehave,
        ));
    }
    let listener = rx_stamp::StampedListener::new(listener);
    axum::serve(listener, router.into_make_service_with_connect_info::<rx_stamp::RxStamp>())
        .await
        .map_err(ServerError::Http)
}

fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/models", get(openai::models))
        .route("/health", get(health))
        .route("/health_generate", get(health))
        .route("/metrics", get(prometheus))
        .route("/api/v1/debug_context", get(debug_context))
        .route("/api/v1/debug_context/", get(debug_context));
    if state.identity.engine != EngineKind::Vllm {
        router = router.route("/get_server_info", get(server_info));
    }
    router.fallback(not_found).with_state(state)
}

fn flag_value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(i, arg)| {
        if arg == name {
            args.get(i + 1).map(String::as_str)
        } else {
            arg.strip_prefix(name).and_then(|rest| rest.strip_prefix('='))
        }
    })
}

async fn health() -> StatusCode {
    StatusCode::OK
}

async fn not_found() -> Response {
    openai::ApiError::not_found("no such route; see /v1/chat/completions, /v1/completions, /v1/models, /metrics", None)
        .into_response()
}

async fn prometheus(State(state): State<Arc<AppState>>) -> Response {
    let text = metrics::render(&lock(&state.telemetry));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

async fn server_info(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(error) = openai::authorize(&state, &headers) {
        return error.into_response();
    }
    let mut info = serde_json::Map::new();
    for (key, value) in &state.identity.startup_attributes {
        info.insert(key.clone(), typed_attribute(value));
    }
    info.insert("served_model_name".into(), Value::String(state.served_model_name.clone()));
    info.insert("model_path".into(), Value::String(state.hf_id.clone()));
    info.insert("version".into(), Value::String(format!("{}-sim", env!("CARGO_PKG_VERSION"))));
    let max_total = lock(&state.telemetry).gauges.max_total_tokens;
    info.insert("max_total_num_tokens".into(), json!(max_total));
    axum::Json(Value::Object(info)).into_response()
}

/// SGLang reports its options as Python values: booleans, numbers, `None`, strings.
fn typed_attribute(value: &str) -> Value {
    match value {
        "True" | "true" => Value::Bool(true),
        "False" | "false" => Value::Bool(false),
        "None" | "" => Value::Null,
        _ => {
            if let Ok(integer) = value.parse::<i64>() {
                json!(integer)
            } else if let Ok(float) = value.parse::<f64>() {
                json!(float)
            } else {
                Value::String(value.to_string())
            }
        }
    }
}

async fn debug_context(State(state): State<Arc<AppState>>, Query(query): Query<HashMap<String, String>>) -> Response {
    let telemetry = lock(&state.telemetry);
    let parsed = graphsignal::parse_query(
        query.get("start_time_ns").map(String::as_str),
        query.get("end_time_ns").map(String::as_str),
        query.get("tags").map(String::as_str),
        telemetry.started_unix_ns,
        state.clock.now_unix_ns(),
    );
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(message) => {
            return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": message}))).into_response();
        }
    };
    let payload = graphsignal::context_json(&telemetry, &state.identity, &parsed);
    drop(telemetry);
    let context = graphsignal::context_markdown(&payload, &state.identity, &parsed);
    axum::Json(json!({"context": context})).into_response()
}
