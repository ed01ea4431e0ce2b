//! Parsing engine flags into a [`SimConfig`] the way each engine's argparse does: the flags each
//! engine knows, and what each one sets.

use autodebug_core::{EngineKind, Secret};

use super::defaults::Explicit;
use super::errors::{bad, bad_choice, parse_float, parse_int, parse_positive, program};
use super::{AttentionBackend, KvCacheDtype, SchedulePolicy, SimConfig, SimError, Speculative, SpeculativeAlgorithm};
use crate::profiles::{GpuProfile, ModelProfile};

#[derive(Clone, Copy)]
enum Arity {
    Switch,
    Value,
}

const SGLANG_FLAGS: &[(&str, Arity)] = &[
    ("--model-path", Arity::Value),
    ("--model", Arity::Value),
    ("--tokenizer-path", Arity::Value),
    ("--host", Arity::Value),
    ("--port", Arity::Value),
    ("--served-model-name", Arity::Value),
    ("--trust-remote-code", Arity::Switch),
    ("--api-key", Arity::Value),
    ("--schedule-policy", Arity::Value),
    ("--num-continuous-decode-steps", Arity::Value),
    ("--enable-mixed-chunk", Arity::Switch),
    ("--chunked-prefill-size", Arity::Value),
    ("--max-prefill-tokens", Arity::Value),
    ("--max-running-requests", Arity::Value),
    ("--mem-fraction-static", Arity::Value),
    ("--cuda-graph-max-bs", Arity::Value),
    ("--disable-cuda-graph", Arity::Switch),
    ("--disable-radix-cache", Arity::Switch),
    ("--disable-overlap-schedule", Arity::Switch),
    ("--schedule-conservativeness", Arity::Value),
    ("--speculative-algorithm", Arity::Value),
    ("--speculative-num-draft-tokens", Arity::Value),
    ("--speculative-num-steps", Arity::Value),
    ("--speculative-eagle-topk", Arity::Value),
    ("--speculative-draft-model-path", Arity::Value),
    ("--tp-size", Arity::Value),
    ("--tp", Arity::Value),
    ("--kv-cache-dtype", Arity::Value),
    ("--attention-backend", Arity::Value),
    ("--context-length", Arity::Value),
    ("--enable-metrics", Arity::Switch),
    ("--enable-cache-report", Arity::Switch),
    ("--log-level", Arity::Value),
    ("--log-requests", Arity::Switch),
    ("--random-seed", Arity::Value),
    ("--dtype", Arity::Value),
    ("--show-time-cost", Arity::Switch),
    ("--watchdog-timeout", Arity::Value),
];

const VLLM_FLAGS: &[(&str, Arity)] = &[
    ("--model", Arity::Value),
    ("--model-path", Arity::Value),
    ("--tokenizer", Arity::Value),
    ("--host", Arity::Value),
    ("--port", Arity::Value),
    ("--served-model-name", Arity::Value),
    ("--trust-remote-code", Arity::Switch),
    ("--api-key", Arity::Value),
    ("--max-num-seqs", Arity::Value),
    ("--max-num-batched-tokens", Arity::Value),
    ("--gpu-memory-utilization", Arity::Value),
    ("--enable-prefix-caching", Arity::Switch),
    ("--no-enable-prefix-caching", Arity::Switch),
    ("--enable-chunked-prefill", Arity::Switch),
    ("--no-enable-chunked-prefill", Arity::Switch),
    ("--enforce-eager", Arity::Switch),
    ("--tensor-parallel-size", Arity::Value),
    ("-tp", Arity::Value),
    ("--kv-cache-dtype", Arity::Value),
    ("--speculative-config", Arity::Value),
    ("--max-model-len", Arity::Value),
    ("--dtype", Arity::Value),
    ("--seed", Arity::Value),
    ("--disable-log-requests", Arity::Switch),
    ("--enable-log-requests", Arity::Switch),
    ("--disable-log-stats", Arity::Switch),
    ("--uvicorn-log-level", Arity::Value),
    ("--block-size", Arity::Value),
    ("--swap-space", Arity::Value),
];

impl SimConfig {
    /// Parses engine flags the way the engine does; an unknown flag or a bad value is an error
    /// whose message reads like the engine's own (argparse style:
    /// `error: unrecognized arguments: --foo`). `gpu` may carry a count (`H100:2`, `H100:80GB:2`);
    /// without one the deployment gets as many GPUs as the tensor-parallel degree asks for.
    ///
    /// ```
    /// use autodebug_sim::{EngineKind, SimConfig};
    /// let args: Vec<String> = ["--schedule-policy", "lpm", "--enable-mixed-chunk"].iter().map(|s| s.to_string()).collect();
    /// let config = SimConfig::from_args(EngineKind::Sglang, "H100", "qwen1.5-0.5b", &args).unwrap();
    /// assert!(config.mixed_chunk);
    /// let bad = SimConfig::from_args(EngineKind::Sglang, "H100", "qwen1.5-0.5b", &["--foo".to_string()]);
    /// assert!(bad.unwrap_err().to_string().ends_with("error: unrecognized arguments: --foo"));
    /// ```
    pub fn from_args(engine: EngineKind, gpu: &str, model: &str, args: &[String]) -> Result<SimConfig, SimError> {
        if engine == EngineKind::LlamaCpp {
            return Err(SimError::UnsupportedEngine(engine));
        }
        let (gpu_profile, explicit_count) = parse_gpu(gpu)?;
        let model_profile = ModelProfile::lookup(model).ok_or_else(|| SimError::UnknownModel(model.to_string()))?;
        let mut config = SimConfig::defaults(engine, gpu_profile, model_profile, args);
        let mut explicit = Explicit::default();
        let flags = match engine {
            EngineKind::Vllm => VLLM_FLAGS,
            _ => SGLANG_FLAGS,
        };
        let prog = program(engine);
        let mut unknown = Vec::new();
        let mut index = 0;
        while index < args.len() {
            let arg = &args[index];
            index += 1;
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) if arg.starts_with('-') => (name, Some(value.to_string())),
                _ => (arg.as_str(), None),
            };
            let Some(&(_, arity)) = flags.iter().find(|(flag, _)| *flag == name) else {
                if !arg.starts_with('-') && engine == EngineKind::Vllm && index == 1 {
                    config.model_path = arg.clone();
                    continue;
                }
                unknown.push(arg.clone());
                // argparse also leaves the unknown flag's value unconsumed.
                while index < args.len() && !args[index].starts_with("--") {
                    unknown.push(args[index].clone());
                    index += 1;
                }
                continue;
            };
            let value = match arity {
                Arity::Switch => {
                    if let Some(value) = inline {
                        return Err(bad(prog, name, &value, format!("ignored explicit argument '{value}'")));
                    }
                    None
                }
                Arity::Value => match inline {
                    Some(value) => Some(value),
                    None if index < args.len() && !looks_like_flag(&args[index]) => {
                        index += 1;
                        Some(args[index - 1].clone())
                    }
                    None => return Err(bad(prog, name, "", "expected one argument".to_string())),
                },
            };
            config.apply(name, value.as_deref().unwrap_or(""), &mut explicit)?;
        }
        if !unknown.is_empty() {
            return Err(SimError::UnknownFlag { program: prog, args: unknown });
        }
        config.finish(explicit_count, &explicit)?;
        Ok(config)
    }

    fn apply(&mut self, flag: &str, value: &str, explicit: &mut Explicit) -> Result<(), SimError> {
        let prog = program(self.engine);
        match flag {
            "--model-path" | "--model" => self.model_path = value.to_string(),
            "--tokenizer-path"
            | "--tokenizer"
            | "--log-level"
            | "--dtype"
            | "--watchdog-timeout"
            | "--uvicorn-log-level"
            | "--block-size"
            | "--swap-space" => {}
            "--host" => self.host = value.to_string(),
            "--port" => self.port = parse_int(prog, flag, value)?,
            "--served-model-name" => self.served_model_name = Some(value.to_string()),
            "--trust-remote-code" => self.trust_remote_code = true,
            "--api-key" => self.api_key = Some(Secret::new(value)),
            "--schedule-policy" => {
                self.schedule_policy = SchedulePolicy::parse(value)
                    .ok_or_else(|| bad_choice(prog, flag, value, &SchedulePolicy::NAMES))?;
            }
            "--num-continuous-decode-steps" => {
                self.continuous_decode_steps = parse_int(prog, flag, value)?;
                if self.continuous_decode_steps == 0 {
                    return Err(bad(prog, flag, value, "must be at least 1".into()));
                }
            }
            "--enable-mixed-chunk" => self.mixed_chunk = true,
            "--chunked-prefill-size" => {
                let size: i64 = parse_int(prog, flag, value)?;
                self.chunked_prefill_size = if size <= 0 { None } else { Some(size as u32) };
                explicit.chunked_prefill_size = true;
            }
            "--max-prefill-tokens" => self.max_prefill_tokens = parse_positive(prog, flag, value)?,
            "--max-num-batched-tokens" => {
                let budget = parse_positive(prog, flag, value)?;
                self.max_prefill_tokens = budget;
                self.chunked_prefill_size = Some(budget);
            }
            "--max-running-requests" | "--max-num-seqs" => {
                self.max_running_requests = Some(parse_positive(prog, flag, value)?)
            }
            "--mem-fraction-static" | "--gpu-memory-utilization" => {
                let fraction: f64 = parse_float(prog, flag, value)?;
                if !(fraction > 0.0 && fraction <= 1.0) {
                    return Err(bad(prog, flag, value, format!("must be in (0, 1], got {fraction}")));
                }
                self.mem_fraction_static = fraction;
                explicit.mem_fraction = true;
            }
            "--cuda-graph-max-bs" => self.cuda_graph_max_bs = parse_positive(prog, flag, value)?,
            "--disable-cuda-graph" | "--enforce-eager" => self.cuda_graph = false,
            "--disable-radix-cache" | "--no-enable-prefix-caching" => self.radix_cache = false,
            "--enable-prefix-caching" => self.radix_cache = true,
            "--enable-chunked-prefill" => {}
            "--no-enable-chunked-prefill" => {
                self.chunked_prefill_size = None;
                self.mixed_chunk = false;
            }
            "--disable-overlap-schedule" => self.overlap_schedule = false,
            "--schedule-conservativeness" => {
                self.schedule_conservativeness = parse_float(prog, flag, value)?;
                if self.schedule_conservativeness <= 0.0 {
                    return Err(bad(prog, flag, value, "must be positive".into()));
                }
            }
            "--speculative-algorithm" => {
                let algorithm = match value {
                    "NGRAM" => SpeculativeAlgorithm::Ngram,
                    "EAGLE" => SpeculativeAlgorithm::Eagle,
                    "EAGLE3" => SpeculativeAlgorithm::Eagle3,
                    "STANDALONE" => SpeculativeAlgorithm::Standalone,
                    _ => {
                        return Err(bad_choice(
                            prog,
                            flag,
                            value,
                            &["EAGLE", "EAGLE3", "NEXTN", "STANDALONE", "NGRAM"],
                        ));
                    }
                };
                self.speculative = Some(Speculative { algorithm, draft_tokens: 0, num_steps: 0 });
            }
            "--speculative-num-draft-tokens" => explicit.draft_tokens = Some(parse_positive(prog, flag, value)?),
            "--speculative-num-steps" => explicit.num_steps = Some(parse_positive(prog, flag, value)?),
            "--speculative-eagle-topk" => {
                let _: u32 = parse_positive(prog, flag, value)?;
            }
            "--speculative-draft-model-path" => self.speculative_draft_model = Some(value.to_string()),
            "--speculative-config" => self.speculative = Some(parse_vllm_speculative(prog, flag, value)?),
            "--tp-size" | "--tp" | "--tensor-parallel-size" | "-tp" => {
                self.tp_size = parse_positive(prog, flag, value)?
            }
            "--kv-cache-dtype" => {
                self.kv_cache_dtype = match (self.engine, value) {
                    (_, "auto") => KvCacheDtype::Auto,
                    (_, "fp8_e5m2") => KvCacheDtype::Fp8E5m2,
                    (_, "fp8_e4m3") => KvCacheDtype::Fp8E4m3,
                    (EngineKind::Vllm, "fp8") => KvCacheDtype::Fp8E4m3,
                    (EngineKind::Vllm, _) => {
                        return Err(bad_choice(prog, flag, value, &["auto", "fp8", "fp8_e4m3", "fp8_e5m2"]));
                    }
                    _ => {
                        return Err(bad_choice(prog, flag, value, &["auto", "fp8_e5m2", "fp8_e4m3"]));
                    }
                };
            }
            "--attention-backend" => {
                self.attention_backend = match value {
                    "fa3" => AttentionBackend::Fa3,
                    "flashinfer" => AttentionBackend::Flashinfer,
                    "triton" => AttentionBackend::Triton,
                    "torch_native" => AttentionBackend::TorchNative,
                    _ => {
                        return Err(bad_choice(prog, flag, value, &["triton", "torch_native", "flashinfer", "fa3"]));
                    }
                };
            }
            "--context-length" | "--max-model-len" => {
                self.context_length = parse_positive(prog, flag, value)?;
                explicit.context_length = true;
            }
            "--enable-metrics" => self.enable_metrics = true,
            "--enable-cache-report" => self.enable_cache_report = true,
            "--random-seed" | "--seed" => self.random_seed = Some(parse_int(prog, flag, value)?),
            // Logging switches change nothing the model simulates.
            "--log-requests"
            | "--show-time-cost"
            | "--disable-log-requests"
            | "--enable-log-requests"
            | "--disable-log-stats" => {}
            _ => {
                return Err(SimError::UnknownFlag { program: prog, args: vec![flag.to_string()] });
            }
        }
        Ok(())
    }
}

fn parse_gpu(gpu: &str) -> Result<(&'static GpuProfile, Option<u32>), SimError> {
    let unknown = || SimError::UnknownGpu(gpu.to_string());
    let (count, name) = match gpu.split_once(['x', 'X']) {
        Some((n, rest)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => (n.parse::<u32>().ok(), rest),
        _ => (None, gpu),
    };
    let trailing = name.rsplit_once(':').and_then(|(_, last)| last.parse::<u32>().ok());
    let profile = GpuProfile::lookup(name).ok_or_else(unknown)?;
    let count = count.or(trailing);
    if count == Some(0) {
        return Err(unknown());
    }
    Ok((profile, count))
}

fn looks_like_flag(arg: &str) -> bool {
    arg.starts_with("--") || (arg.starts_with('-') && arg.parse::<f64>().is_err())
}

fn parse_vllm_speculative(program: &'static str, flag: &str, value: &str) -> Result<Speculative, SimError> {
    let json: serde_json::Value = serde_json::from_str(value)
        .map_err(|e| bad(program, flag, value, format!("invalid loads value: '{value}' ({e})")))?;
    let method = json.get("method").and_then(|m| m.as_str()).unwrap_or_default();
    let algorithm = match method {
        "ngram" => SpeculativeAlgorithm::Ngram,
        "eagle" => SpeculativeAlgorithm::Eagle,
        "eagle3" => SpeculativeAlgorithm::Eagle3,
        "draft_model" => SpeculativeAlgorithm::Standalone,
        other => {
            return Err(bad(
                program,
                flag,
                value,
                format!("unsupported speculative method '{other}' (use \"ngram\", \"eagle\", \"eagle3\")"),
            ));
        }
    };
    let tokens = json
        .get("num_speculative_tokens")
        .and_then(|n| n.as_u64())
        .filter(|n| (1..=64).contains(n))
        .ok_or_else(|| bad(program, flag, value, "needs \"num_speculative_tokens\": a positive integer".into()))?
        as u32;
    Ok(Speculative { algorithm, draft_tokens: tokens, num_steps: tokens })
}
