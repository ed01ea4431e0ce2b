//! The OpenAI-compatible API over real loopback HTTP: chunk shape, usage, prefix caching,
//! non-streaming responses, model checks, auth and client disconnects.

mod server_support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use autodebug_sim::EngineKind;
use autodebug_sim::server::ServeOptions;
use serde_json::{Value, json};
use server_support::*;

const MODEL: &str = "Qwen/Qwen1.5-0.5B-Chat";

fn unix_ns_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

#[tokio::test]
async fn sglang_chat_stream_has_the_engine_chunk_shape_and_usage() {
    let address = start(EngineKind::Sglang, &[], quiet(1)).await;
    let client = reqwest::Client::new();
    let url = format!("http://{address}/v1/chat/completions");
    let before = unix_ns_now();
    let events = stream(&client, &url, &chat_body(MODEL, &prompt(31, "shape"), 20, true), None).await;
    let after = unix_ns_now();

    let first = events[0].json.as_ref().expect("first event is a chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(first["choices"][0]["delta"]["content"], "");
    assert!(events.last().is_some_and(|e| e.json.is_none()), "the stream ends with data: [DONE]");

    let mut previous_ts = 0u64;
    for chunk in events.iter().filter_map(|e| e.json.as_ref()) {
        assert!(chunk["id"].as_str().is_some_and(|id| id.starts_with("chatcmpl-")), "id in {chunk}");
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], MODEL);
        assert!(chunk["system_fingerprint"].is_null());
        assert!(
            chunk["created"].as_u64().is_some_and(|c| c >= before / 1_000_000_000 && c <= after / 1_000_000_000 + 1)
        );
        let ts = chunk["sim_ts_ns"].as_u64().expect("every chunk carries sim_ts_ns");
        assert!(ts >= before && ts <= after, "sim_ts_ns {ts} outside the request [{before}, {after}]");
        assert!(ts >= previous_ts, "sim_ts_ns goes backwards");
        if chunk["choices"].as_array().is_some_and(|c| !c.is_empty()) {
            let sent = chunk["sim_sent_ns"].as_u64().expect("every choice chunk carries sim_sent_ns");
            assert!(sent >= ts && sent <= after, "sim_sent_ns {sent} not in [sim_ts_ns {ts}, {after}]");
        }
        previous_ts = ts;
        assert_eq!(chunk["id"], first["id"], "one id per response");
    }

    let words: usize = content_events(&events).iter().map(|e| content_text(e).split_whitespace().count()).sum();
    assert_eq!(words, 20, "one word per token");
    let finish: Vec<&Value> = events
        .iter()
        .filter_map(|e| e.json.as_ref())
        .filter_map(|j| j["choices"].get(0))
        .map(|c| &c["finish_reason"])
        .filter(|r| !r.is_null())
        .collect();
    assert_eq!(finish, vec![&json!("length")]);

    let usage = usage(&events);
    assert_eq!(usage["prompt_tokens"], 31);
    assert_eq!(usage["completion_tokens"], 20);
    assert_eq!(usage["total_tokens"], 51);
    assert!(usage["prompt_tokens_details"]["cached_tokens"].as_u64().is_some());
}

#[tokio::test]
async fn a_repeated_prompt_is_served_from_the_prefix_cache() {
    let address = start(EngineKind::Sglang, &[], quiet(2)).await;
    let client = reqwest::Client::new();
    let url = format!("http://{address}/v1/chat/completions");
    let body = chat_body(MODEL, &prompt(31, "repeat"), 8, true);
    let first = usage(&stream(&client, &url, &body, None).await);
    let second = usage(&stream(&client, &url, &body, None).await);
    let cached_first = first["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(u64::MAX);
    let cached_second = second["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0);
    assert!(cached_second > cached_first, "second request cached {cached_second}, first {cached_first}");
    assert!(cached_second < 31, "at least one prompt token is always computed");
}

#[tokio::test]
async fn non_streaming_chat_and_completions_return_the_whole_answer() {
    let address = start(EngineKind::Sglang, &[], quiet(3)).await;
    let client = reqwest::Client::new();
    let chat: Value = client
        .post(format!("http://{address}/v1/chat/completions"))
        .json(&chat_body(MODEL, &prompt(12, "whole"), 9, false))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["choices"][0]["message"]["role"], "assistant");
    let text = chat["choices"][0]["message"]["content"].as_str().expect("content");
    assert_eq!(text.split_whitespace().count(), 9);
    assert_eq!(chat["usage"]["completion_tokens"], 9);
    assert_eq!(chat["usage"]["prompt_tokens"], 12);
    assert_eq!(chat["choices"][0]["finish_reason"], "length");

    let completion: Value = client
        .post(format!("http://{address}/v1/completions"))
        .json(&json!({"model": MODEL, "prompt": prompt(5, "plain"), "max_tokens": 4, "ignore_eos": true}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(completion["object"], "text_completion");
    assert!(completion["id"].as_str().is_some_and(|id| id.starts_with("cmpl-")));
    assert_eq!(completion["choices"][0]["text"].as_str().map(|t| t.split_whitespace().count()), Some(4));
    assert_eq!(completion["usage"]["prompt_tokens"], 5);

    let streamed = stream(
        &client,
        &format!("http://{address}/v1/completions"),
        &json!({"model": MODEL, "prompt": "a b c", "max_tokens": 6, "ignore_eos": true, "stream": true,
                "stream_options": {"include_usage": true}}),
        None,
    )
    .await;
    assert!(streamed.iter().filter_map(|e| e.json.as_ref()).all(|j| j["object"] == "text_completion"));
    assert_eq!(usage(&streamed)["completion_tokens"], 6);
}

#[tokio::test]
async fn without_ignore_eos_the_answer_length_is_deterministic_and_within_max_tokens() {
    let address = start(EngineKind::Sglang, &[], quiet(4)).await;
    let client = reqwest::Client::new();
    let url = format!("http://{address}/v1/chat/completions");
    let mut lengths = Vec::new();
    for _ in 0..2 {
        let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "tell me about the sea"}], "max_tokens": 600});
        let answer: Value = client.post(&url).json(&body).send().await.expect("send").json().await.expect("json");
        let tokens = answer["usage"]["completion_tokens"].as_u64().expect("usage");
        let reason = answer["choices"][0]["finish_reason"].as_str().expect("finish reason").to_string();
        assert!((1..=600).contains(&tokens));
        assert_eq!(reason, if tokens < 600 { "stop" } else { "length" });
        lengths.push(tokens);
    }
    assert_eq!(lengths[0], lengths[1], "same seed and prompt, same answer length");
}

#[tokio::test]
async fn a_wrong_model_name_is_a_404_openai_error() {
    let address = start(EngineKind::Sglang, &[], quiet(5)).await;
    let response = reqwest::Client::new()
        .post(format!("http://{address}/v1/chat/completions"))
        .json(&chat_body("gpt-4o", "hello there", 4, false))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.expect("json error");
    assert!(error["error"]["message"].as_str().is_some_and(|m| m.contains("gpt-4o")), "{error}");
    assert_eq!(error["error"]["code"], 404);
}

#[tokio::test]
async fn bearer_auth_guards_the_api_but_not_health() {
    let options = ServeOptions { api_key: Some("s3cret".into()), ..quiet(6) };
    let address = start(EngineKind::Sglang, &[], options).await;
    let client = reqwest::Client::new();
    let url = format!("http://{address}/v1/chat/completions");
    let body = chat_body(MODEL, "hello there", 3, false);
    let missing = client.post(&url).json(&body).send().await.expect("send");
    assert_eq!(missing.status(), 401);
    let wrong = client.post(&url).bearer_auth("nope").json(&body).send().await.expect("send");
    assert_eq!(wrong.status(), 401);
    let models = client.get(format!("http://{address}/v1/models")).send().await.expect("send");
    assert_eq!(models.status(), 401);
    let right = client.post(&url).bearer_auth("s3cret").json(&body).send().await.expect("send");
    assert_eq!(right.status(), 200);
    let health = client.get(format!("http://{address}/health")).send().await.expect("send");
    assert_eq!(health.status(), 200);
    let events = stream(&client, &url, &chat_body(MODEL, "hello there", 3, true), Some("s3cret")).await;
    assert_eq!(usage(&events)["completion_tokens"], 3);
}

#[tokio::test]
async fn models_and_server_info_describe_the_engine() {
    let address = start(EngineKind::Sglang, &["--enable-mixed-chunk"], quiet(7)).await;
    let client = reqwest::Client::new();
    let models: Value =
        client.get(format!("http://{address}/v1/models")).send().await.expect("send").json().await.expect("json");
    assert_eq!(models["data"][0]["id"], MODEL);
    let info: Value =
        client.get(format!("http://{address}/get_server_info")).send().await.expect("send").json().await.expect("json");
    assert_eq!(info["enable_mixed_chunk"], true, "{info}");

    let named = ServeOptions { model_name: Some("qwen-small".into()), ..quiet(7) };
    let vllm = start(EngineKind::Vllm, &[], named).await;
    let info = client.get(format!("http://{vllm}/get_server_info")).send().await.expect("send");
    assert_eq!(info.status(), 404, "vLLM has no /get_server_info");
    let events = stream(
        &client,
        &format!("http://{vllm}/v1/chat/completions"),
        &chat_body("qwen-small", "hi you", 5, true),
        None,
    )
    .await;
    let first = events[0].json.as_ref().expect("chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(first["model"], "qwen-small");
    assert_eq!(usage(&events)["completion_tokens"], 5);
}

#[tokio::test]
async fn a_client_disconnect_cancels_the_request() {
    use futures_util::StreamExt;
    let address = start(EngineKind::Sglang, &[], quiet(8)).await;
    let client = reqwest::Client::new();
    let response = client
        .post(format!("http://{address}/v1/chat/completions"))
        .json(&chat_body(MODEL, &prompt(10, "gone"), 20_000, true))
        .send()
        .await
        .expect("send");
    let mut body = response.bytes_stream();
    for _ in 0..3 {
        tokio::time::timeout(REQUEST_TIMEOUT, body.next()).await.expect("chunks arrive").expect("a chunk").expect("ok");
    }
    drop(body);

    let metrics_url = format!("http://{address}/metrics");
    let mut running = f64::NAN;
    for _ in 0..200 {
        let text = client.get(&metrics_url).send().await.expect("send").text().await.expect("text");
        running = text
            .lines()
            .find(|l| l.starts_with("sglang:num_running_reqs{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        if running == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(running, 0.0, "the engine still runs the abandoned request");
}

/// Every key of a real engine's chunk (llama.cpp's OpenAI-compatible stream) is in ours too.
#[tokio::test]
async fn chunks_carry_every_key_of_a_real_stream() {
    let fixture = include_str!("fixtures/llamacpp_smollm2_chat_stream.txt");
    let real: Vec<Value> = fixture
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("fixture chunk is JSON"))
        .collect();
    let address = start(EngineKind::Sglang, &[], quiet(9)).await;
    let ours = stream(
        &reqwest::Client::new(),
        &format!("http://{address}/v1/chat/completions"),
        &chat_body(MODEL, "a b c", 4, true),
        None,
    )
    .await;
    let ours: Vec<&Value> = ours.iter().filter_map(|e| e.json.as_ref()).collect();
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
    // Real role chunk, content chunk and usage chunk against ours, in that order.
    let pairs = [(&real[0], ours[0]), (&real[1], ours[1]), (real.last().expect("usage"), *ours.last().expect("usage"))];
    for (real_chunk, our_chunk) in pairs {
        for key in keys(real_chunk).iter().filter(|k| *k != "timings") {
            assert!(our_chunk.get(key).is_some(), "our chunk lacks `{key}`: {our_chunk}");
        }
        if let (Some(real_choice), Some(our_choice)) = (real_chunk["choices"].get(0), our_chunk["choices"].get(0)) {
            for key in keys(real_choice) {
                assert!(our_choice.get(&key).is_some(), "our choice lacks `{key}`: {our_choice}");
            }
        }
    }
    let real_usage = keys(&real.last().expect("usage")["usage"]);
    for key in real_usage {
        assert!(ours.last().expect("usage")["usage"].get(&key).is_some(), "usage lacks `{key}`");
    }
}
