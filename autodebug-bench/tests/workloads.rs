//! Workloads (datasets, ShareGPT, traces, multi-turn, tokenizer sizing), stop rules, ramp-up,
//! trials, goodput and the report files, against a loopback server that records what it got.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autodebug_bench::{
    LengthDist, PointReport, ReportFile, RequestSource, SCHEMA_VERSION, Slo, SseBenchmarker, Synthetic, Tokenizer,
    write_jsonl,
};
use autodebug_core::{BenchPlan, Benchmarker, Load, Workload};
use axum::Router;
use axum::extract::{Json, State};
use axum::response::Response;
use axum::routing::post;
use common::*;

/// What the server received: each request's body and when it arrived.
type Received = Arc<Mutex<Vec<(Instant, serde_json::Value)>>>;

/// A server that records bodies and answers `max_tokens` one-word chunks, `gap` apart.
async fn recording_server(gap: Duration) -> (String, Received) {
    async fn handle(
        State((received, gap)): State<(Received, Duration)>,
        Json(body): Json<serde_json::Value>,
    ) -> Response {
        let tokens = body["max_tokens"].as_u64().unwrap_or(1).clamp(1, 64) as usize;
        received.lock().unwrap().push((Instant::now(), body));
        streamed(move |sender| token_stream(sender, tokens, 1, gap, 7))
    }
    let received: Received = Arc::default();
    let router = Router::new()
        .route("/v1/chat/completions", post(handle))
        .route("/v1/completions", post(handle))
        .with_state((received.clone(), gap));
    (serve(router).await, received)
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn bodies(received: &Received) -> Vec<serde_json::Value> {
    received.lock().unwrap().iter().map(|(_, b)| b.clone()).collect()
}

#[tokio::test]
async fn sharegpt_dataset_sends_first_human_turn_with_answer_length() {
    let (base, received) = recording_server(Duration::from_millis(1)).await;
    let source = RequestSource::from_jsonl(&fixture("sharegpt_sample.jsonl"), Tokenizer::Approximate, 9).unwrap();
    let report = tokio::time::timeout(
        RUN_LIMIT,
        SseBenchmarker::default().run_source(&endpoint(&base), &plan(Load::Sequential, 3), &source),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.summary.succeeded, 3);
    let got = bodies(&received);
    // Read the fixture independently: the first human turn of each line, and its answer's words.
    let expected: Vec<(String, u64)> = std::fs::read_to_string(fixture("sharegpt_sample.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let turns = v["conversations"].as_array().unwrap();
            let human = turns.iter().position(|t| t["from"] == "human").unwrap();
            let answer = turns[human + 1]["value"].as_str().unwrap().split_whitespace().count() as u64;
            (turns[human]["value"].as_str().unwrap().to_string(), answer)
        })
        .collect();
    for (body, (prompt, answer_words)) in got.iter().zip(&expected) {
        assert_eq!(body["messages"][0]["content"], prompt.as_str());
        assert_eq!(body["max_tokens"], *answer_words);
    }
    assert!(report.context.workload.contains("sharegpt_sample.jsonl"), "{}", report.context.workload);
}

#[tokio::test]
async fn plain_dataset_cycles_and_uses_default_output_length() {
    let (base, received) = recording_server(Duration::ZERO).await;
    let source = RequestSource::from_jsonl(&fixture("prompts_sample.jsonl"), Tokenizer::Approximate, 11).unwrap();
    let mut plan = plan(Load::Sequential, 4);
    plan.chat = false;
    SseBenchmarker::default().run_source(&endpoint(&base), &plan, &source).await.unwrap();
    let got = bodies(&received);
    let lengths: Vec<u64> = got.iter().map(|b| b["max_tokens"].as_u64().unwrap()).collect();
    assert_eq!(lengths, vec![24, 11, 6, 24], "3 prompts, cycled; the second has no output_tokens");
    assert_eq!(got[3]["prompt"], got[0]["prompt"]);
    assert!(got[0]["prompt"].as_str().unwrap().starts_with("Summarize"));
}

#[tokio::test]
async fn trace_replay_follows_timestamps() {
    let (base, received) = recording_server(Duration::ZERO).await;
    let source = RequestSource::from_jsonl(&fixture("trace_sample.jsonl"), Tokenizer::Approximate, 1).unwrap();
    assert_eq!(source.len_limit(), Some(4));
    // The plan asks for more than the trace holds: the trace's length wins.
    let report =
        SseBenchmarker::default().run_source(&endpoint(&base), &plan(Load::Sequential, 100), &source).await.unwrap();
    assert_eq!(report.records.len(), 4);
    let got = received.lock().unwrap().clone();
    let offsets: Vec<f64> = got.iter().map(|(at, _)| at.duration_since(got[0].0).as_secs_f64() * 1e3).collect();
    // Offsets are taken from the first request's arrival, which also carries the connection's
    // set-up: on a loaded machine that alone has made a later request look ~7 ms early.
    for (offset, expected) in offsets.iter().zip([0.0, 150.0, 300.0, 600.0]) {
        assert!(*offset >= expected - 40.0 && *offset < expected + 120.0, "sent at {offsets:?}");
    }
    let words = |b: &serde_json::Value| b["messages"][0]["content"].as_str().unwrap().split_whitespace().count();
    assert_eq!(words(&got[0].1), 12, "prompt_tokens entries get a synthetic prompt of that size");
    assert_eq!(got[1].1["messages"][0]["content"], "tell me a short story about a cat");
    assert_eq!(got[3].1["max_tokens"], 6);
    assert_eq!(report.context.load, "trace timestamps, 100 requests");
}

#[tokio::test]
async fn multi_turn_resends_history_with_the_servers_answers() {
    let (base, received) = recording_server(Duration::ZERO).await;
    let base_workload = Synthetic::new(LengthDist::fixed(6), LengthDist::fixed(3));
    let source = RequestSource::MultiTurn { base: base_workload, turns: 3 };
    let report = SseBenchmarker::default()
        .run_source(&endpoint(&base), &plan(Load::Concurrent { concurrency: 2 }, 5), &source)
        .await
        .unwrap();
    assert_eq!(report.records.len(), 5, "5 turns of two 3-turn conversations, cut at the request count");
    let got = bodies(&received);
    let third_turns: Vec<&serde_json::Value> =
        got.iter().filter(|b| b["messages"].as_array().unwrap().len() == 5).collect();
    assert_eq!(third_turns.len(), 1, "conversation 0 has 3 turns, conversation 1 only 2 of its 3");
    let messages = third_turns[0]["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant", "user"]);
    // token_stream answers " w0_0 w1_0 w2_0" for 3 tokens: the server's own text comes back.
    assert_eq!(messages[1]["content"], " w0_0 w1_0 w2_0");
}

#[tokio::test]
async fn random_lengths_and_tokenizer_sizing() {
    let (base, received) = recording_server(Duration::ZERO).await;
    let tokenizer = Tokenizer::from_tokenizer_json(&fixture("tokenizer_sample.json")).unwrap();
    let mut synthetic = Synthetic::new(LengthDist::Uniform { min: 5, max: 40 }, LengthDist::Uniform { min: 2, max: 9 });
    synthetic.tokenizer = tokenizer.clone();
    let source = RequestSource::Synthetic(synthetic);
    SseBenchmarker::default().run_source(&endpoint(&base), &plan(Load::Sequential, 20), &source).await.unwrap();
    let got = bodies(&received);
    let vocab: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer_sample.json")).unwrap()).unwrap();
    let mut prompt_lengths = Vec::new();
    for body in &got {
        let prompt = body["messages"][0]["content"].as_str().unwrap();
        // Every word is one whole-word token of the vocabulary ("Ġ" + word).
        for word in prompt.split_whitespace() {
            assert!(vocab["model"]["vocab"].get(format!("\u{0120}{word}")).is_some(), "{word} not a vocab token");
        }
        prompt_lengths.push(tokenizer.count(prompt));
        assert!((2..=9).contains(&body["max_tokens"].as_u64().unwrap()));
    }
    assert!(prompt_lengths.iter().all(|n| (5..=40).contains(n)));
    prompt_lengths.sort();
    prompt_lengths.dedup();
    assert!(prompt_lengths.len() > 5, "lengths vary: {prompt_lengths:?}");
}

#[tokio::test]
async fn duration_stops_a_closed_loop_and_ramp_up_staggers_workers() {
    let (base, received) = recording_server(Duration::from_millis(10)).await;
    // 4 tokens × 10 ms ≈ 40+ ms a request; 1000 requests would take far longer than 400 ms.
    let mut plan = plan(Load::Concurrent { concurrency: 4 }, 1000).with_duration(Duration::from_millis(400));
    plan.workload = Workload::new(4, 4);
    plan = plan.with_ramp_up(Duration::from_millis(300));
    let started = Instant::now();
    let report = tokio::time::timeout(RUN_LIMIT, SseBenchmarker::default().run_plan(&endpoint(&base), &plan))
        .await
        .unwrap()
        .unwrap();
    let elapsed = started.elapsed();
    assert!(report.records.len() >= 4 && report.records.len() < 1000, "{} records", report.records.len());
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    let got = received.lock().unwrap().clone();
    // Workers start at 0, 75, 150 and 225 ms: in the first 60 ms only worker 0 sends (a request
    // takes 40+ ms), where all four would have without the ramp.
    let early = got.iter().filter(|(at, _)| at.duration_since(got[0].0) < Duration::from_millis(60)).count();
    assert!(early <= 2, "{early} requests in the first 60 ms");
    assert!(report.context.load.contains("ramp-up 300 ms") && report.context.load.contains("for 400 ms"));
}

#[tokio::test]
async fn trials_aggregate_through_the_benchmarker_trait_and_reports_are_written() {
    let (base, received) = recording_server(Duration::from_millis(2)).await;
    let plan = plan(Load::Concurrent { concurrency: 2 }, 6).with_trials(3);
    let bench = SseBenchmarker::default();
    let report = Benchmarker::run(&bench, &endpoint(&base), &plan).await.unwrap();
    assert_eq!(report.context.trials, 3);
    assert_eq!(report.records.len(), 18);
    assert_eq!(received.lock().unwrap().len(), 18);
    assert_eq!(report.records.iter().map(|r| r.index).collect::<Vec<_>>(), (0..18).collect::<Vec<_>>());
    // Trials draw fresh prompts: no prompt repeats across the 18 requests.
    let mut prompts: Vec<String> = bodies(&received).iter().map(|b| b["messages"][0]["content"].to_string()).collect();
    prompts.sort();
    prompts.dedup();
    assert_eq!(prompts.len(), 18);

    let run = bench.run_trials(&endpoint(&base), &plan, &RequestSource::from_workload(&plan.workload)).await.unwrap();
    let sum_trials: u64 = run.trials.iter().map(|t| t.summary.output_tokens).sum();
    assert_eq!(run.report.summary.output_tokens, sum_trials);
    let busy: f64 = run.trials.iter().map(|t| t.summary.duration_s).sum();
    assert!((run.report.summary.output_throughput - sum_trials as f64 / busy).abs() < 1e-6);

    let slo = Slo { ttft_ms: Some(10_000.0), tpot_ms: None, e2e_ms: None };
    let point = PointReport::from_run(&run, Some(slo), 0.95, 1);
    let stats = &point.trial_stats["output_throughput"];
    assert_eq!(stats.n, 3);
    assert!(stats.ci_low <= stats.mean && stats.mean <= stats.ci_high);
    assert_eq!(point.goodput.unwrap().good_requests, 18, "every request meets a 10 s TTFT bound");
    assert_eq!(point.context.concurrency, Some(2));

    let dir = tempdir();
    let file = ReportFile::new(vec![point], None);
    file.write_json(&dir.join("report.json")).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["schema_version"], SCHEMA_VERSION);
    assert_eq!(json["points"][0]["context"]["trials"], 3);
    assert_eq!(json["points"][0]["context"]["cache_state"], "cold");
    assert_eq!(json["points"][0]["trials"].as_array().unwrap().len(), 3);
    let lines = write_jsonl(&dir.join("records.jsonl"), &[&run]).unwrap();
    assert_eq!(lines, 18);
    let text = std::fs::read_to_string(dir.join("records.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!((last["trial"].as_u64(), last["output_tokens"].as_u64()), (Some(3), Some(8)));
    assert!(file.to_table().contains("test"), "{}", file.to_table());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh directory under the system temp dir (tempfile is not a dependency of this crate).
fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("autodebug-bench-test-{}-{:?}", std::process::id(), Instant::now()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn open_loop_duration_stops_scheduling() {
    let (base, _received) = recording_server(Duration::ZERO).await;
    let plan = BenchPlan {
        timeouts: short_timeouts(),
        ..BenchPlan::new(
            "rate",
            Workload::new(4, 2),
            Load::Rate { requests_per_s: 50.0, arrival: Default::default() },
            10_000,
        )
    }
    .with_duration(Duration::from_millis(300));
    let report = SseBenchmarker::default().run_plan(&endpoint(&base), &plan).await.unwrap();
    // About 15 arrivals in 300 ms at 50/s (Poisson): far below the 10,000 upper bound.
    assert!((3..60).contains(&report.records.len()), "{} records", report.records.len());
}
