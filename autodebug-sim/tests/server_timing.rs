//! Real-time fidelity: the time per output token a client measures on a sequential stream is
//! the model's (within a loose bound: the machine is shared and noisy).

mod server_support;

use autodebug_sim::{Engine, EngineKind, SimConfig, SimRequest, tokenize};
use server_support::*;

const PROMPT_WORDS: usize = 31;
const OUTPUT_TOKENS: u32 = 150;

/// The model's own TPOT (virtual time) for the second of two sequential identical requests.
fn model_tpot_s(seed: u64) -> f64 {
    let config = SimConfig::from_args(EngineKind::Sglang, "H100", "qwen1.5-0.5b", &[]).expect("config");
    let mut engine = Engine::start(config, seed).expect("engine");
    let prompt = tokenize(&prompt(PROMPT_WORDS, "timing"));
    let mut tpot = f64::NAN;
    for id in 1..=2u64 {
        engine.submit(SimRequest { id, prompt: prompt.clone(), max_tokens: OUTPUT_TOKENS, ignore_eos: true });
        let (mut clock_ns, mut first_ns, mut last_ns) = (0u64, None, 0u64);
        for _ in 0..100_000 {
            if !engine.has_work() {
                break;
            }
            let outcome = engine.step();
            clock_ns += outcome.duration_ns;
            for event in outcome.events.iter().filter(|e| e.id == id) {
                if event.first {
                    first_ns = Some(clock_ns);
                }
                last_ns = clock_ns;
            }
        }
        tpot = (last_ns - first_ns.expect("a first token")) as f64 / 1e9 / f64::from(OUTPUT_TOKENS - 1);
    }
    tpot
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequential_stream_keeps_the_models_time_per_output_token() {
    let seed = 31;
    let expected = model_tpot_s(seed);
    let address = start(EngineKind::Sglang, &[], quiet(seed)).await;
    let client = reqwest::Client::new();
    let url = format!("http://{address}/v1/chat/completions");
    let body = chat_body("Qwen/Qwen1.5-0.5B-Chat", &prompt(PROMPT_WORDS, "timing"), OUTPUT_TOKENS, true);
    let mut measured = Vec::new();
    for _ in 0..3 {
        let events = stream(&client, &url, &body, None).await;
        let content = content_events(&events);
        let tokens: usize = content.iter().map(|e| content_text(e).split_whitespace().count()).sum();
        assert_eq!(tokens, OUTPUT_TOKENS as usize);
        let (first, last) = (content[0].received, content[content.len() - 1].received);
        measured.push((last - first).as_secs_f64() / f64::from(OUTPUT_TOKENS - 1));
    }
    // The first request is cold (no prefix cache); the later ones match the model's second request.
    measured.remove(0);
    measured.sort_by(|a, b| a.total_cmp(b));
    let best = measured[0];
    println!(
        "model TPOT {:.3} ms, measured {:?} ms",
        expected * 1e3,
        measured.iter().map(|m| m * 1e3).collect::<Vec<_>>()
    );
    let ratio = best / expected;
    assert!((0.6..=1.4).contains(&ratio), "measured TPOT {best:.6} s vs model {expected:.6} s (ratio {ratio:.2})");
}
