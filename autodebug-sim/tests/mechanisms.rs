//! Each mechanism of the engine model, checked qualitatively: a knob moves the figure it
//! should, in the direction it should.

use std::time::Instant;

use autodebug_core::{Domain, SearchSpace};
use autodebug_sim::{Engine, EngineKind, SimConfig, SimError, SimRequest, SimWorkload, StepKind, simulate};

fn flags(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

fn sglang(gpu: &str, model: &str, args: &str) -> Result<SimConfig, SimError> {
    SimConfig::from_args(EngineKind::Sglang, gpu, model, &flags(args))
}

fn qwen(args: &str) -> SimConfig {
    sglang("H100", "qwen1.5-0.5b", args).expect("valid flags")
}

fn repeated() -> SimWorkload {
    SimWorkload::sequential(20, 31, 150).with_repeated_prompt()
}

fn metric(config: &SimConfig, workload: &SimWorkload, name: &str) -> f64 {
    let result = simulate(config, workload, 9);
    assert!(!result.failed, "{:?}", result.failure);
    result.metrics()[name]
}

#[test]
fn an_unknown_flag_fails_like_argparse() {
    let err = sglang("H100", "qwen1.5-0.5b", "--schedule-policy lpm --foo 3").unwrap_err();
    assert!(matches!(err, SimError::UnknownFlag { .. }));
    assert!(err.to_string().ends_with("error: unrecognized arguments: --foo 3"), "{err}");
    let err =
        SimConfig::from_args(EngineKind::Vllm, "H100", "qwen1.5-0.5b", &flags("--max-num-seqs 8 --bar")).unwrap_err();
    assert_eq!(err.to_string(), "vllm serve: error: unrecognized arguments: --bar");
}

#[test]
fn bad_values_fail_like_argparse() {
    let err = sglang("H100", "qwen1.5-0.5b", "--num-continuous-decode-steps many").unwrap_err();
    assert!(
        err.to_string().ends_with("error: argument --num-continuous-decode-steps: invalid int value: 'many'"),
        "{err}"
    );
    let err = sglang("H100", "qwen1.5-0.5b", "--schedule-policy fastest").unwrap_err();
    assert!(err.to_string().contains("invalid choice: 'fastest' (choose from"), "{err}");
    let err = sglang("H100", "qwen1.5-0.5b", "--tp-size").unwrap_err();
    assert!(err.to_string().ends_with("argument --tp-size: expected one argument"), "{err}");
    assert!(matches!(sglang("V100", "qwen1.5-0.5b", ""), Err(SimError::UnknownGpu(_))));
    assert!(matches!(sglang("H100", "gpt-5", ""), Err(SimError::UnknownModel(_))));
}

#[test]
fn every_catalog_flag_is_accepted_and_starts() {
    for engine in [EngineKind::Sglang, EngineKind::Vllm] {
        let space = SearchSpace::for_engine(engine);
        for knob in &space.knobs {
            let mut args = vec![knob.flag.clone()];
            match &knob.domain {
                Domain::Switch => {}
                Domain::Int { min, .. } => {
                    args.push(knob.candidates.first().cloned().unwrap_or(min.max(&1).to_string()))
                }
                Domain::Float { min, .. } => args.push(knob.candidates.first().cloned().unwrap_or(min.to_string())),
                Domain::Choice { values } => args.push(values[0].clone()),
            }
            let config = SimConfig::from_args(engine, "H100", "qwen1.5-0.5b", &args)
                .unwrap_or_else(|e| panic!("{engine} rejects {args:?}: {e}"));
            Engine::start(config, 1).unwrap_or_else(|e| panic!("{engine} {args:?} does not start: {e}"));
        }
        for fixed in ["--host", "--port", "--served-model-name", "--api-key"] {
            let value = if fixed == "--port" { "8123" } else { "x" };
            SimConfig::from_args(engine, "H100", "qwen1.5-0.5b", &[fixed.to_string(), value.to_string()])
                .unwrap_or_else(|e| panic!("{engine} rejects {fixed}: {e}"));
        }
    }
}

#[test]
fn the_api_key_never_shows_in_attributes_or_logs() {
    let config = qwen("--api-key sk-top-secret");
    let engine = Engine::start(config.clone(), 1).unwrap();
    let text = format!("{:?} {:?} {:?}", config.startup_attributes(), engine.startup_log(), config);
    assert!(!text.contains("sk-top-secret"));
}

#[test]
fn a_larger_memory_fraction_gives_a_larger_kv_pool_and_too_large_ooms() {
    let mut previous = 0;
    for fraction in ["0.6", "0.7", "0.8", "0.9"] {
        let engine = Engine::start(qwen(&format!("--mem-fraction-static {fraction}")), 1).unwrap();
        assert!(engine.stats().max_total_tokens > previous, "{fraction}");
        previous = engine.stats().max_total_tokens;
    }
    let err = Engine::start(qwen("--mem-fraction-static 0.98"), 1).unwrap_err();
    assert!(matches!(err, SimError::StartupOom { .. }), "{err}");
    assert!(err.to_string().contains("--mem-fraction-static"), "{err}");
    let result = simulate(&qwen("--mem-fraction-static 0.98"), &repeated(), 1);
    assert!(result.failed && result.failure.as_deref().is_some_and(|f| f.contains("out of memory")));
    assert_eq!(result.metrics()["error_rate"], 1.0);
}

#[test]
fn fp8_kv_cache_roughly_doubles_the_pool() {
    let auto = Engine::start(qwen(""), 1).unwrap().stats().max_total_tokens as f64;
    let fp8 = Engine::start(qwen("--kv-cache-dtype fp8_e5m2"), 1).unwrap().stats().max_total_tokens as f64;
    assert!((fp8 / auto - 2.0).abs() < 0.01, "{fp8} vs {auto}");
}

#[test]
fn seventy_b_needs_tensor_parallelism_on_a100_and_never_fits_one_l4() {
    let one = sglang("A100", "llama-3.1-70b", "").unwrap();
    assert!(matches!(Engine::start(one, 1), Err(SimError::StartupOom { .. })));
    let two = sglang("A100", "llama-3.1-70b", "--tp-size 2").unwrap();
    assert_eq!(two.gpu_count, 2);
    let engine = Engine::start(two, 1).expect("70B fits across two A100s");
    assert!(engine.stats().max_total_tokens > 4096);
    let l4 = sglang("L4", "llama-3.1-70b", "").unwrap();
    let err = Engine::start(l4, 1).unwrap_err();
    assert!(err.to_string().contains("CUDA out of memory"), "{err}");
}

#[test]
fn tensor_parallelism_speeds_up_a_memory_bound_decode_despite_all_reduce() {
    let workload = SimWorkload::sequential(4, 128, 64);
    let one = sglang("H100", "llama-3.1-8b", "").unwrap();
    let two = sglang("H100", "llama-3.1-8b", "--tp-size 2").unwrap();
    let (t1, t2) = (metric(&one, &workload, "tpot.mean"), metric(&two, &workload, "tpot.mean"));
    assert!(t2 < t1, "TP2 {t2} vs TP1 {t1}");
    assert!(t2 > t1 / 2.0, "all-reduce must cost something: TP2 {t2} vs TP1 {t1}");
}

#[test]
fn wrong_moves_hurt() {
    let base = metric(&qwen(""), &repeated(), "tpot.mean");
    for bad in ["--disable-cuda-graph", "--disable-overlap-schedule"] {
        let worse = metric(&qwen(bad), &repeated(), "tpot.mean");
        assert!(worse > base * 1.05, "{bad}: {worse} vs {base}");
    }
}

#[test]
fn huge_continuous_decode_steps_delay_new_requests_under_concurrency() {
    // Open loop, so new requests land in the middle of other requests' decode round trips.
    let workload = SimWorkload::sequential(200, 64, 128).with_arrival_rate(40.0);
    let base = metric(&qwen(""), &workload, "ttft.mean");
    let huge = metric(&qwen("--num-continuous-decode-steps 64"), &workload, "ttft.mean");
    assert!(huge > base * 2.0, "TTFT {huge} vs {base}");
}

#[test]
fn batching_raises_throughput_and_itl_grows_with_the_batch() {
    let single = SimWorkload::sequential(32, 64, 128);
    let config = qwen("");
    let sequential = simulate(&config, &single, 3);
    let mut previous_tpot = sequential.metrics()["tpot.mean"];
    let mut previous_throughput = sequential.output_throughput;
    for concurrency in [4, 8, 32] {
        let result = simulate(&config, &single.clone().with_concurrency(concurrency), 3);
        let tpot = result.metrics()["tpot.mean"];
        assert!(result.output_throughput > previous_throughput * 1.3, "c={concurrency}");
        assert!(tpot > previous_tpot, "c={concurrency}: ITL {tpot} vs {previous_tpot}");
        previous_tpot = tpot;
        previous_throughput = result.output_throughput;
    }
}

#[test]
fn a_kv_starved_config_queues_and_retracts_but_finishes_everything() {
    let config = sglang("L4", "llama-3.1-8b", "--schedule-conservativeness 0.3").unwrap();
    let pool = match Engine::start(config.clone(), 1) {
        Ok(engine) => engine.stats().max_total_tokens,
        Err(e) => panic!("{e}"),
    };
    let workload = SimWorkload::sequential(96, 256, 1024).with_concurrency(64);
    assert!((64 * (256 + 1024)) as u64 > pool, "the workload must overflow the pool of {pool}");
    let result = simulate(&config, &workload, 4);
    assert!(!result.failed, "{:?}", result.failure);
    assert!(result.stats.retractions > 0);
    assert_eq!(result.e2e_ms.len(), 96);
    assert_eq!(result.errors, 0);
    assert_eq!(result.output_tokens, 96 * 1024);
    let roomy = sglang("H100", "llama-3.1-8b", "").unwrap();
    assert_eq!(simulate(&roomy, &workload, 4).stats.retractions, 0);
}

#[test]
fn lpm_raises_prefix_reuse_on_a_shared_prefix_burst() {
    let workload = SimWorkload::sequential(48, 600, 32).with_shared_prefix(512).with_concurrency(16);
    let fcfs = simulate(&qwen(""), &workload, 8).cached_token_ratio;
    let lpm = simulate(&qwen("--schedule-policy lpm"), &workload, 8).cached_token_ratio;
    assert!(lpm > fcfs + 0.05, "lpm {lpm} vs fcfs {fcfs}");
    let off = simulate(&qwen("--disable-radix-cache"), &workload, 8).cached_token_ratio;
    assert_eq!(off, 0.0);
    let distinct = simulate(&qwen(""), &SimWorkload::sequential(16, 600, 32), 8).cached_token_ratio;
    assert_eq!(distinct, 0.0);
}

#[test]
fn mixed_chunks_keep_decodes_moving_during_long_prefills() {
    let workload = SimWorkload::sequential(48, 6000, 128).with_concurrency(8);
    let stall = metric(&qwen("--chunked-prefill-size 2048"), &workload, "tpot.mean");
    let mixed = metric(&qwen("--chunked-prefill-size 2048 --enable-mixed-chunk"), &workload, "tpot.mean");
    assert!(mixed < stall, "mixed {mixed} vs stalled {stall}");
}

#[test]
fn ngram_acceptance_follows_the_outputs_predictability_not_prefix_cache_hits() {
    let spec = "--speculative-algorithm NGRAM --speculative-num-draft-tokens 3 --speculative-num-steps 3";
    let rate = |config: &SimConfig, workload: &SimWorkload| {
        let stats = simulate(config, workload, 2).stats;
        stats.spec_accept_tokens as f64 / stats.spec_draft_tokens as f64
    };
    let sglang = qwen(spec);
    let fresh = rate(&sglang, &SimWorkload::sequential(20, 31, 150));
    // A 360-token system prompt every request shares is a prefix-cache hit, not a predictable answer.
    let shared_prefix = rate(&sglang, &SimWorkload::sequential(20, 400, 150).with_shared_prefix(360));
    // SGLang's trie keeps earlier answers, and the same prompt gets the same answer.
    let repeated_prompt = rate(&sglang, &repeated());
    // Answers that mostly repeat their own earlier text (code edits, templates).
    let copying = rate(&sglang, &SimWorkload::sequential(20, 31, 150).with_output_predictability(0.8));
    println!(
        "sglang ngram acceptance: fresh {fresh:.3}, shared prefix {shared_prefix:.3}, repeated prompt {repeated_prompt:.3}, copying {copying:.3}"
    );
    assert!(fresh < 0.2, "fresh text: {fresh}");
    assert!((shared_prefix - fresh).abs() < 0.05, "shared prefix {shared_prefix} vs fresh {fresh}");
    assert!(repeated_prompt > fresh + 0.5, "repeated {repeated_prompt} vs fresh {fresh}");
    assert!(copying > fresh + 0.5, "copying {copying} vs fresh {fresh}");

    // vLLM's prompt lookup sees only the request's own prompt and answer: another request's
    // identical answer does not help, its own repetition does.
    let vllm = SimConfig::from_args(
        EngineKind::Vllm,
        "H100",
        "qwen1.5-0.5b",
        &flags(r#"--speculative-config {"method":"ngram","num_speculative_tokens":3,"prompt_lookup_max":4}"#),
    )
    .expect("valid flags");
    let vllm_fresh = rate(&vllm, &SimWorkload::sequential(20, 31, 150));
    let vllm_repeated = rate(&vllm, &repeated());
    let vllm_copying = rate(&vllm, &SimWorkload::sequential(20, 31, 150).with_output_predictability(0.8));
    println!(
        "vllm ngram acceptance: fresh {vllm_fresh:.3}, repeated prompt {vllm_repeated:.3}, copying {vllm_copying:.3}"
    );
    assert!((vllm_repeated - vllm_fresh).abs() < 0.05, "vllm repeated {vllm_repeated} vs fresh {vllm_fresh}");
    assert!(vllm_copying > vllm_fresh + 0.5, "vllm copying {vllm_copying} vs fresh {vllm_fresh}");

    // On fresh text, drafting costs more than it returns, alone and in a big batch.
    let distinct = SimWorkload::sequential(20, 31, 150);
    assert!(metric(&sglang, &distinct, "tpot.mean") > metric(&qwen(""), &distinct, "tpot.mean"));
    let busy = SimWorkload::sequential(64, 64, 128).with_concurrency(32);
    assert!(metric(&sglang, &busy, "output_throughput") < metric(&qwen(""), &busy, "output_throughput"));
    // Where most of the answer is predictable it pays.
    let predictable = SimWorkload::sequential(20, 31, 150).with_output_predictability(0.9);
    assert!(metric(&sglang, &predictable, "tpot.mean") < metric(&qwen(""), &predictable, "tpot.mean"));
}

#[test]
fn noise_is_seeded() {
    let config = qwen("");
    let a = simulate(&config, &repeated(), 1).e2e_ms;
    let b = simulate(&config, &repeated(), 1).e2e_ms;
    let c = simulate(&config, &repeated(), 2).e2e_ms;
    assert_eq!(a, b);
    assert_ne!(a, c);
    let mut quiet = config.clone();
    quiet.noise = 0.0;
    let d = simulate(&quiet, &repeated(), 1).tpot_ms;
    let e = simulate(&quiet, &repeated(), 2).tpot_ms;
    assert_eq!(d, e);
}

#[test]
fn the_step_api_streams_every_token_once_and_frees_memory() {
    let mut engine = Engine::start(qwen("--num-continuous-decode-steps 4"), 5).unwrap();
    for id in 0..6u64 {
        let prompt = (0..40).map(|t| (t * 7 + id as u32 * 1000) + 1).collect();
        engine.submit(SimRequest { id, prompt, max_tokens: 33, ignore_eos: true });
    }
    engine.submit(SimRequest { id: 99, prompt: vec![1; 40], max_tokens: 1000, ignore_eos: true });
    engine.submit(SimRequest { id: 100, prompt: vec![], max_tokens: 5, ignore_eos: true });
    let mut tokens = [0u32; 6];
    let mut firsts = 0;
    let mut finished = 0;
    let mut kinds = Vec::new();
    let mut steps = 0;
    while engine.has_work() && steps < 10_000 {
        let outcome = engine.step();
        steps += 1;
        if steps == 3 {
            engine.cancel(99);
        }
        assert!(outcome.duration_ns > 0);
        assert!(outcome.forward_passes <= 4);
        kinds.push(outcome.kind);
        for event in outcome.events {
            if event.id == 100 {
                assert!(event.finished && event.new_tokens == 0, "an empty prompt is refused");
                continue;
            }
            if event.id == 99 {
                continue;
            }
            tokens[event.id as usize] += event.new_tokens;
            assert_eq!(tokens[event.id as usize], event.output_tokens_so_far);
            firsts += event.first as u32;
            finished += event.finished as u32;
        }
    }
    assert_eq!(tokens, [33; 6]);
    assert_eq!((firsts, finished), (6, 6));
    assert!(kinds.contains(&StepKind::Prefill) && kinds.contains(&StepKind::Decode));
    assert!(engine.stats().token_usage < 1e-9, "usage {}", engine.stats().token_usage);
    assert_eq!(engine.stats().requests_finished, 6);
    assert_eq!(engine.step().kind, StepKind::Idle);
}

#[test]
fn startup_logs_read_like_each_engine() {
    let sglang_log = Engine::start(qwen(""), 1).unwrap().startup_log().join("\n");
    for needle in [
        "Load weight end. type=Qwen2ForCausalLM, dtype=torch.bfloat16",
        "KV Cache is allocated. #tokens: ",
        "max_total_num_tokens=",
        "Capture cuda graph end.",
    ] {
        assert!(sglang_log.contains(needle), "{needle} missing from\n{sglang_log}");
    }
    let vllm = SimConfig::from_args(EngineKind::Vllm, "H100", "qwen1.5-0.5b", &flags("--max-model-len 4096")).unwrap();
    let vllm_log = Engine::start(vllm, 1).unwrap().startup_log().join("\n");
    for needle in [
        "Model loading took",
        "GPU KV cache size: ",
        "Maximum concurrency for 4,096 tokens per request: ",
        "Graph capturing finished in",
    ] {
        assert!(vllm_log.contains(needle), "{needle} missing from\n{vllm_log}");
    }
}

#[test]
fn vllm_serves_the_same_workloads() {
    let config = SimConfig::from_args(
        EngineKind::Vllm,
        "H100",
        "llama-3.1-8b",
        &flags("--max-num-seqs 64 --max-model-len 8192"),
    )
    .unwrap();
    let result =
        simulate(&config, &SimWorkload::sequential(64, 512, 128).with_concurrency(16).with_shared_prefix(256), 3);
    assert!(!result.failed, "{:?}", result.failure);
    assert_eq!(result.e2e_ms.len(), 64);
    assert!(result.cached_token_ratio > 0.3);
    let err = SimConfig::from_args(EngineKind::Vllm, "H100", "qwen1.5-0.5b", &[])
        .and_then(|c| Engine::start(c, 1))
        .map(|mut e| e.try_submit(SimRequest { id: 1, prompt: vec![1; 32768], max_tokens: 16, ignore_eos: true }));
    let message = err.unwrap().unwrap_err().to_string();
    assert!(message.contains("maximum context length is 32768 tokens"), "{message}");
}

#[test]
fn ten_thousand_requests_simulate() {
    let workload = SimWorkload::sequential(10_000, 200, 100).with_concurrency(64).with_shared_prefix(100);
    let started = Instant::now();
    let result = simulate(&qwen("--schedule-policy lpm"), &workload, 1);
    println!("10,000 requests in {:?} (virtual {:.1} s)", started.elapsed(), result.duration_s);
    assert_eq!(result.e2e_ms.len(), 10_000);
    let open = SimWorkload::sequential(2_000, 200, 100).with_arrival_rate(200.0);
    let result = simulate(&qwen(""), &open, 1);
    assert_eq!(result.e2e_ms.len(), 2_000);
    assert!((result.request_throughput - 200.0).abs() < 40.0, "{}", result.request_throughput);
}
