//! Many concurrent streams against one simulated server all finish, each with every token.

mod server_support;

use autodebug_sim::EngineKind;
use server_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_streams_all_finish() {
    let address = start(EngineKind::Sglang, &[], quiet(21)).await;
    let client = reqwest::Client::new();
    let url = format!("http://{address}/v1/chat/completions");
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let body = chat_body("Qwen/Qwen1.5-0.5B-Chat", &prompt(16 + i, &format!("load{i}-")), 30, true);
                let events = stream(&client, &url, &body, None).await;
                (
                    usage(&events),
                    content_events(&events).iter().map(|e| content_text(e).split_whitespace().count()).sum::<usize>(),
                )
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let (usage, words) = task.await.expect("stream task");
        assert_eq!(usage["completion_tokens"], 30, "stream {i}");
        assert_eq!(usage["prompt_tokens"], 16 + i as u64, "stream {i}");
        assert_eq!(words, 30, "stream {i}");
    }
    let metrics =
        client.get(format!("http://{address}/metrics")).send().await.expect("scrape").text().await.expect("text");
    let requests: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("sglang:num_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(requests, 20.0);
}

/// Fast mode (no sleeping, paced by the clients) still delivers every token of every stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_mode_delivers_every_token() {
    let options = autodebug_sim::server::ServeOptions { fast: true, ..quiet(22) };
    let address = start(EngineKind::Vllm, &[], options).await;
    let client = reqwest::Client::new();
    let url = format!("http://{address}/v1/completions");
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let body = serde_json::json!({"model": "Qwen/Qwen1.5-0.5B-Chat", "prompt": prompt(8, &format!("fast{i}-")),
                    "max_tokens": 2000, "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}});
                let events = stream(&client, &url, &body, None).await;
                let words: usize = content_events(&events).iter().map(|e| content_text(e).split_whitespace().count()).sum();
                (usage(&events)["completion_tokens"].as_u64(), words)
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("stream task"), (Some(2000), 2000));
    }
}
