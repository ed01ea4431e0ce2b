//! Tests of flag parsing and the engine's derived settings.

use super::*;

fn args(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

#[test]
fn equals_form_and_space_form_agree() {
    let a =
        SimConfig::from_args(EngineKind::Sglang, "H100", "qwen1.5-0.5b", &args("--tp-size=2 --port 31000")).unwrap();
    let b =
        SimConfig::from_args(EngineKind::Sglang, "H100", "qwen1.5-0.5b", &args("--tp-size 2 --port=31000")).unwrap();
    assert_eq!((a.tp_size, a.port, a.gpu_count), (2, 31000, 2));
    assert_eq!((b.tp_size, b.port), (2, 31000));
}

#[test]
fn the_model_flag_names_the_model_loaded() {
    let config = SimConfig::from_args(
        EngineKind::Sglang,
        "H100",
        "qwen1.5-0.5b",
        &args("--model-path meta-llama/Llama-3.1-8B-Instruct"),
    )
    .unwrap();
    assert_eq!((config.model.name, config.context_length), ("llama-3.1-8b", 131072));
    let local =
        SimConfig::from_args(EngineKind::Sglang, "H100", "qwen1.5-0.5b", &args("--model-path /models/q")).unwrap();
    assert_eq!((local.model.name, local.served_model_name()), ("qwen1.5-0.5b", "/models/q"));
}

#[test]
fn gpu_count_must_cover_tp() {
    let err = SimConfig::from_args(EngineKind::Sglang, "H100:1", "qwen1.5-0.5b", &args("--tp-size 2")).unwrap_err();
    assert!(err.to_string().contains("needs 2 GPUs"), "{err}");
    let ok = SimConfig::from_args(EngineKind::Sglang, "2xH100", "qwen1.5-0.5b", &args("--tp-size 2")).unwrap();
    assert_eq!(ok.gpu_count, 2);
}

#[test]
fn vllm_positional_model_and_json_speculative_config() {
    let config = SimConfig::from_args(
        EngineKind::Vllm,
        "H100",
        "qwen1.5-0.5b",
        &[
            "Qwen/Qwen1.5-0.5B-Chat".to_string(),
            "--speculative-config".to_string(),
            r#"{"method":"ngram","num_speculative_tokens":5,"prompt_lookup_max":4}"#.to_string(),
            "--no-enable-prefix-caching".to_string(),
        ],
    )
    .unwrap();
    assert_eq!(config.speculative.as_ref().map(|s| s.draft_tokens), Some(5));
    assert!(!config.radix_cache);
    assert_eq!(config.model_path, "Qwen/Qwen1.5-0.5B-Chat");
    let err = SimConfig::from_args(EngineKind::Vllm, "H100", "qwen1.5-0.5b", &args("--speculative-config {oops"));
    assert!(err.is_err());
}

#[test]
fn ngram_turns_off_overlap_and_says_so() {
    let config = SimConfig::from_args(
        EngineKind::Sglang,
        "H100",
        "qwen1.5-0.5b",
        &args("--speculative-algorithm NGRAM --speculative-num-draft-tokens 3 --speculative-num-steps 3"),
    )
    .unwrap();
    assert!(!config.overlap_schedule);
    assert!(config.adjustments.iter().any(|line| line.contains("Overlap scheduler is disabled")));
    let eagle =
        SimConfig::from_args(EngineKind::Sglang, "H100", "qwen1.5-0.5b", &args("--speculative-algorithm EAGLE"));
    assert!(eagle.unwrap_err().to_string().contains("--speculative-draft-model-path"));
}
