//! What several CLI test files share: one store filled by a real `autodebug demo` run, where the
//! setup scripts cache the real engines, and a scripted OpenAI-compatible chat server for the
//! `llm` planner.

// Each test binary uses only part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// The store of a 3-iteration demo (simulator over loopback, ~15 s), run once per test binary.
pub fn demo_db() -> &'static Path {
    static DB: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, db) = DB.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_autodebug"))
            .args(["demo", "-q", "--iterations", "3", "--out"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "demo failed: {}", String::from_utf8_lossy(&out.stderr));
        let db = dir.path().join("autodebug.db");
        (dir, db)
    });
    db
}

/// Every file under `dir`, at any depth.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out
}

/// `bytes` (named `what` in the failure) hold none of `canaries`.
pub fn assert_no_canaries(what: &str, bytes: &[u8], canaries: &[&str]) {
    for canary in canaries {
        let found = bytes.windows(canary.len()).any(|w| w == canary.as_bytes());
        assert!(!found, "{what} shows `{canary}`:\n{}", String::from_utf8_lossy(bytes));
    }
}

/// Where `scripts/llama-server.sh` and `scripts/vllm-cpu.sh` cache engines and models
/// (`$AUTODEBUG_CACHE`, else `~/.cache/autodebug`).
pub fn engine_cache() -> PathBuf {
    match std::env::var_os("AUTODEBUG_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/autodebug"),
    }
}

/// A first iteration on a real llama.cpp `llama-server` measured something and cited the engine's
/// own evidence: a `llamacpp:` Prometheus metric and a line of its log.
pub fn assert_real_llamacpp_evidence(first: &autodebug_core::Iteration) {
    use autodebug_core::{IterationStatus, SignalKind};
    assert_eq!(first.status, IterationStatus::Ok, "{:?}", first.error);
    assert!(first.metrics["output_throughput"] > 0.0);
    let cited: Vec<&str> = first.analysis.cited.iter().map(|s| s.name.as_str()).collect();
    // The findings say what the analysis went without (a log that could not be read, a source that failed).
    let findings: Vec<&str> = first.analysis.findings.iter().map(|f| f.summary.as_str()).collect();
    assert!(cited.iter().any(|n| n.starts_with("llamacpp:")), "no llama.cpp metric cited: {cited:?}; {findings:?}");
    assert!(
        first.analysis.cited.iter().any(|s| s.kind == SignalKind::LogLine),
        "no log line cited: {cited:?}; {findings:?}"
    );
}

/// What the scripted chat server still has to say, and what it was asked.
#[derive(Default)]
pub struct ChatScript {
    /// The replies not yet given, in order.
    pub replies: Vec<String>,
    /// Each request's `Authorization` header, in order (`None`: the request had none).
    pub authorizations: Vec<Option<String>>,
}

/// A scripted OpenAI-compatible `/v1/chat/completions` on 127.0.0.1 with a port chosen at run
/// time: each call gets the next of `replies`, then 500s (so the `llm` planner falls back). It
/// lives as long as the returned runtime; the script shows what it was asked.
pub fn chat_server(replies: &[&str]) -> (tokio::runtime::Runtime, String, Arc<Mutex<ChatScript>>) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let script = Arc::new(Mutex::new(ChatScript {
        replies: replies.iter().map(|r| r.to_string()).collect(),
        ..ChatScript::default()
    }));
    let app = axum::Router::new().route("/v1/chat/completions", post(scripted_reply)).with_state(script.clone());
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (runtime, format!("http://{addr}"), script)
}

async fn scripted_reply(
    State(script): State<Arc<Mutex<ChatScript>>>,
    headers: HeaderMap,
    Json(_body): Json<Value>,
) -> Response {
    let reply = {
        let mut script = script.lock().unwrap();
        let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
        script.authorizations.push(authorization);
        if script.replies.is_empty() { None } else { Some(script.replies.remove(0)) }
    };
    match reply {
        Some(text) => Json(json!({
            "choices": [{"message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 60},
        }))
        .into_response(),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "the script has no more replies").into_response(),
    }
}
