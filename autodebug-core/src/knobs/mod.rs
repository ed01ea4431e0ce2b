//! Typed knob catalogs: which launch flags each engine has, their domains, defaults and risks,
//! for the platform the engine runs on ([`Platform`]), checked against the installed engine's own
//! argument list where it can be read ([`EngineArgs`]), and the rules between knobs the engine
//! enforces at startup ([`Constraint`]).

use serde::{Deserialize, Serialize};

use crate::{EngineKind, Error, LaunchFlags, ServiceSpec};

mod constraints;
mod deployment;
mod engine_args;
mod platform;

pub use constraints::{Cmp, Constraint, Operand, Unset, Verdict, model_context};
pub use deployment::{DeploymentKnobs, GPU_KNOB, IMAGE_KNOB};
pub use engine_args::{ArgCheck, EngineArg, EngineArgs};
pub use platform::Platform;

/// The values a knob may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Domain {
    /// A switch: present = true, absent = false.
    Switch,
    Int {
        min: i64,
        max: i64,
    },
    Float {
        min: f64,
        max: f64,
    },
    Choice {
        values: Vec<String>,
    },
}

/// A tunable setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Knob {
    /// The flag as the engine spells it, e.g. `--chunked-prefill-size`.
    pub flag: String,
    pub domain: Domain,
    /// The engine's default, as text (`None` = decided by the engine at startup).
    pub default: Option<String>,
    /// Values worth trying first in a search (a subset of the domain).
    #[serde(default)]
    pub candidates: Vec<String>,
    /// Changing it can alter model output (quantized KV cache, speculative decoding variants).
    #[serde(default)]
    pub quality_risk: bool,
    /// Another knob that must be set for this one to matter, as `(flag, value)`.
    #[serde(default)]
    pub requires: Option<(String, String)>,
    /// The switch's "off" spelling (`--no-enable-prefix-caching` for `--enable-prefix-caching`):
    /// the two never appear together, and a switch that is on by default is turned off with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negation: Option<String>,
    pub description: String,
}

impl Knob {
    fn new(flag: &str, domain: Domain, default: Option<&str>, description: &str) -> Self {
        Knob {
            flag: flag.to_string(),
            domain,
            default: default.map(str::to_string),
            candidates: Vec::new(),
            quality_risk: false,
            requires: None,
            negation: None,
            description: description.to_string(),
        }
    }

    fn candidates(mut self, values: &[&str]) -> Self {
        self.candidates = values.iter().map(|v| v.to_string()).collect();
        self
    }

    fn risky(mut self) -> Self {
        self.quality_risk = true;
        self
    }

    fn negated_by(mut self, flag: &str) -> Self {
        self.negation = Some(flag.to_string());
        self
    }

    /// Whether this switch is on when neither spelling is given.
    fn on_by_default(&self) -> bool {
        self.domain == Domain::Switch && self.default.as_deref().is_some_and(|d| d.eq_ignore_ascii_case("true"))
    }

    fn requires(mut self, flag: &str, value: &str) -> Self {
        self.requires = Some((flag.to_string(), value.to_string()));
        self
    }

    /// Checks one value against the domain; switches accept `true`/`false`.
    pub fn validate(&self, value: Option<&str>) -> Result<(), Error> {
        let bad = |message: String| Error::Knob { knob: self.flag.clone(), message };
        match (&self.domain, value) {
            (Domain::Switch, None) => Ok(()),
            (Domain::Switch, Some("true" | "false" | "True" | "False")) => Ok(()),
            (Domain::Switch, Some(v)) => Err(bad(format!("is a switch and takes no value, got `{v}`"))),
            (_, None) => Err(bad("needs a value".to_string())),
            (Domain::Int { min, max }, Some(v)) => match v.parse::<i64>() {
                Ok(n) if n >= *min && n <= *max => Ok(()),
                Ok(n) => Err(bad(format!("{n} is outside [{min}, {max}]"))),
                Err(_) => Err(bad(format!("`{v}` is not an integer"))),
            },
            (Domain::Float { min, max }, Some(v)) => match v.parse::<f64>() {
                Ok(x) if x >= *min && x <= *max => Ok(()),
                Ok(x) => Err(bad(format!("{x} is outside [{min}, {max}]"))),
                Err(_) => Err(bad(format!("`{v}` is not a number"))),
            },
            (Domain::Choice { values }, Some(v)) if values.iter().any(|c| c == v) => Ok(()),
            (Domain::Choice { values }, Some(v)) => Err(bad(format!("`{v}` is not one of {}", values.join(", ")))),
        }
    }
}

/// The knobs of one engine, plus flags the loop must leave alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchSpace {
    pub engine: EngineKind,
    pub knobs: Vec<Knob>,
    /// Flags that may appear in a spec but are never changed by a planner (model path, port...).
    pub fixed: Vec<String>,
    /// Rules between knobs the engine enforces at startup; [`validate`](Self::validate) refuses a
    /// spec that breaks one, and the search never proposes one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    /// The installed engine's version (`0.32.0`), named in refusals; `None` when not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    /// Flags every launch gets ahead of the plan's own (a deployer command template's
    /// `--max-model-len 1024`): the constraints read them where a spec does not set the flag,
    /// as the engine's argument parser, where the last occurrence wins, does.
    #[serde(default, skip_serializing_if = "LaunchFlags::is_empty")]
    pub launch_flags: LaunchFlags,
    /// The target CPU's cores when the catalog was fitted to a CPU ([`SearchSpace::for_platform`]):
    /// what thread counts are bounded by, and what the analyzer weighs the engine's threads against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<u32>,
}

impl SearchSpace {
    /// The built-in catalog for an engine.
    ///
    /// ```
    /// use autodebug_core::{EngineKind, SearchSpace};
    /// let space = SearchSpace::for_engine(EngineKind::Sglang);
    /// assert!(space.knob("--schedule-policy").is_some());
    /// assert!(space.knob("--rm-rf").is_none());
    /// ```
    pub fn for_engine(engine: EngineKind) -> Self {
        match engine {
            EngineKind::Sglang => sglang_space(),
            EngineKind::Vllm => vllm_space(),
            EngineKind::LlamaCpp => llamacpp_space(),
        }
    }

    /// The knobs of `engine` on `platform`: on a CPU, GPU-only knobs are gone, parallelism is bounded
    /// by the NUMA nodes, thread counts by the cores, and defaults are the engine's CPU defaults.
    ///
    /// ```
    /// use autodebug_core::{EngineKind, Platform, SearchSpace};
    /// let cpu = Platform::Cpu { cores: 2, numa_nodes: 1, bf16: false };
    /// let space = SearchSpace::for_platform(EngineKind::Vllm, &cpu);
    /// assert!(space.knob("--gpu-memory-utilization").is_none());
    /// assert_eq!(space.knob("--max-num-seqs").unwrap().default.as_deref(), Some("128"));
    /// let tp = space.knob("--tensor-parallel-size").unwrap();
    /// assert!(tp.validate(Some("2")).is_err(), "one NUMA node: nothing to split over");
    /// ```
    pub fn for_platform(engine: EngineKind, platform: &Platform) -> Self {
        let mut space = Self::for_engine(engine);
        if let Platform::Cpu { cores, numa_nodes, .. } = platform {
            space.fit_cpu(*cores, *numa_nodes);
        }
        space
    }

    fn fit_cpu(&mut self, cores: u32, numa_nodes: u32) {
        self.cpu_cores = Some(cores);
        const GPU_ONLY: &[&str] = &[
            "--gpu-memory-utilization",
            "--enforce-eager",
            "--kv-cache-dtype",
            "--mem-fraction-static",
            "--cuda-graph-max-bs",
            "--disable-cuda-graph",
            "--attention-backend",
        ];
        self.knobs.retain(|k| !GPU_ONLY.contains(&k.flag.as_str()));
        let bound = |knob: &mut Knob, max: i64| {
            knob.domain = Domain::Int { min: 1, max: max.max(1) };
            knob.candidates.retain(|c| c.parse::<i64>().is_ok_and(|n| (1..=max.max(1)).contains(&n)));
        };
        for knob in &mut self.knobs {
            match knob.flag.as_str() {
                "--tensor-parallel-size" | "--tp-size" => bound(knob, i64::from(numa_nodes)),
                "--threads" | "--threads-batch" => bound(knob, i64::from(cores)),
                _ => {}
            }
        }
        if self.engine == EngineKind::Vllm {
            vllm_cpu_defaults(self);
        }
    }

    pub fn knob(&self, flag: &str) -> Option<&Knob> {
        self.knobs.iter().find(|k| k.flag == flag)
    }

    /// The same catalog, naming `version` of the installed engine in its refusals.
    pub fn with_engine_version(mut self, version: impl Into<String>) -> Self {
        self.engine_version = Some(version.into());
        self
    }

    /// The engine and version as refusals name it: `vllm 0.32.0`.
    pub fn engine_text(&self) -> String {
        format!("{} {}", self.engine, self.engine_version.as_deref().unwrap_or("(version not read)"))
    }

    /// Every constraint that does not simply hold for `spec`: broken ones (the engine would
    /// refuse the spec) and ones that cannot be checked here, each with its explanation.
    pub fn check_constraints(&self, spec: &ServiceSpec) -> Vec<(&Constraint, Verdict)> {
        let engine = self.engine_text();
        let launched = self.as_launched(spec);
        self.constraints
            .iter()
            .map(|c| (c, c.check(self, &launched, &engine)))
            .filter(|(_, v)| *v != Verdict::Holds)
            .collect()
    }

    /// `spec` with the [`launch_flags`](Self::launch_flags) it does not set itself: what the
    /// engine is started with.
    pub fn as_launched<'a>(&self, spec: &'a ServiceSpec) -> std::borrow::Cow<'a, ServiceSpec> {
        let missing: Vec<(&str, Option<&str>)> =
            self.launch_flags.iter().filter(|(name, _)| spec.flags.get(name).is_none()).collect();
        if missing.is_empty() {
            return std::borrow::Cow::Borrowed(spec);
        }
        let mut launched = spec.clone();
        for (name, value) in missing {
            launched.flags.set(name, value.map(str::to_string));
        }
        std::borrow::Cow::Owned(launched)
    }

    /// Every launch also gets `flags` (see [`launch_flags`](Self::launch_flags)).
    pub fn with_launch_flags(mut self, flags: LaunchFlags) -> Self {
        self.launch_flags = flags;
        self
    }

    /// The constraints `spec` cannot be checked against (e.g. a hub model without
    /// `--max-model-len`), for a note or warning: they pass [`validate`](Self::validate), unchecked.
    pub fn unchecked_constraints(&self, spec: &ServiceSpec) -> Vec<String> {
        self.check_constraints(spec)
            .into_iter()
            .filter_map(|(_, v)| match v {
                Verdict::Unknown(text) => Some(text),
                _ => None,
            })
            .collect()
    }

    /// The knob a flag belongs to, by its own name or its negation.
    pub fn knob_for(&self, flag: &str) -> Option<&Knob> {
        self.knobs.iter().find(|k| k.flag == flag || k.negation.as_deref() == Some(flag))
    }

    /// Keeps only the knobs named (by flag), e.g. to narrow a search.
    pub fn restrict(mut self, flags: &[&str]) -> Self {
        self.knobs.retain(|k| flags.contains(&k.flag.as_str()));
        self
    }

    /// Checks every flag of `flags` against the catalog: known, and in its domain.
    pub fn validate_flags(&self, flags: &LaunchFlags) -> Result<(), Error> {
        for (name, value) in flags.iter() {
            if self.fixed.iter().any(|f| f == name) {
                continue;
            }
            match self.knob_for(name) {
                Some(knob) if knob.negation.as_deref() == Some(name) => {
                    if flags.contains(&knob.flag) {
                        return Err(Error::Knob {
                            knob: name.to_string(),
                            message: format!("contradicts `{}`: a configuration sets a switch one way only", knob.flag),
                        });
                    }
                    knob.validate(value)?
                }
                Some(knob) => knob.validate(value)?,
                None => {
                    return Err(Error::Knob {
                        knob: name.to_string(),
                        message: format!("is not a known {} flag in autodebug's catalog", self.engine),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn validate(&self, spec: &ServiceSpec) -> Result<(), Error> {
        if spec.engine != self.engine {
            return Err(Error::config("engine", format!("spec is for {}, catalog for {}", spec.engine, self.engine)));
        }
        self.validate_flags(&spec.flags)?;
        for (constraint, verdict) in self.check_constraints(spec) {
            if let Verdict::Broken(message) = verdict {
                let knob = match &constraint.left {
                    Operand::Knob { flag, .. } | Operand::ModelContext { flag } => flag.clone(),
                };
                return Err(Error::Knob { knob, message });
            }
        }
        Ok(())
    }

    /// The value a knob has in `flags`, falling back to its default; switches read `true`/`false`.
    pub fn effective(&self, flags: &LaunchFlags, flag: &str) -> Option<String> {
        let knob = self.knob(flag)?;
        let negated = knob.negation.as_deref().is_some_and(|n| flags.contains(n));
        match (&knob.domain, flags.get(flag)) {
            (Domain::Switch, _) if negated => Some("false".into()),
            (Domain::Switch, Some(None)) => Some("true".into()),
            (Domain::Switch, Some(Some(v))) => Some(v.to_ascii_lowercase()),
            (Domain::Switch, None) => Some(knob.on_by_default().to_string()),
            (_, Some(v)) => v.map(str::to_string),
            (_, None) => knob.default.clone(),
        }
    }

    /// Sets a knob in `flags` to `value` (`"true"`/`"false"` for switches), validating it.
    pub fn apply(&self, flags: &mut LaunchFlags, flag: &str, value: Option<&str>) -> Result<(), Error> {
        let knob = self.knob(flag).ok_or_else(|| Error::Knob {
            knob: flag.to_string(),
            message: format!("is not a known {} flag in autodebug's catalog", self.engine),
        })?;
        match (&knob.domain, value) {
            (Domain::Switch, Some("true")) | (Domain::Switch, None) => {
                if let Some(negation) = &knob.negation {
                    flags.remove(negation);
                }
                // On by default: the engine's own default says it, no flag needed.
                if knob.on_by_default() {
                    flags.remove(flag);
                } else {
                    flags.set(flag, None::<&str>);
                }
            }
            (Domain::Switch, Some("false")) => {
                flags.remove(flag);
                if let Some(negation) = &knob.negation {
                    flags.set(negation, None::<&str>);
                }
            }
            (_, None) => {
                flags.remove(flag);
            }
            (_, Some(v)) => {
                knob.validate(Some(v))?;
                flags.set(flag, Some(v));
            }
        }
        Ok(())
    }
}

fn int(min: i64, max: i64) -> Domain {
    Domain::Int { min, max }
}

fn float(min: f64, max: f64) -> Domain {
    Domain::Float { min, max }
}

fn choice(values: &[&str]) -> Domain {
    Domain::Choice { values: values.iter().map(|v| v.to_string()).collect() }
}

/// Flags that identify the service rather than tune it.
const FIXED_COMMON: &[&str] =
    &["--model-path", "--model", "--host", "--port", "--served-model-name", "--trust-remote-code", "--api-key"];

fn sglang_space() -> SearchSpace {
    use Domain::Switch;
    let knobs = vec![
        Knob::new(
            "--schedule-policy",
            choice(&["fcfs", "lpm", "random", "dfs-weight", "lof", "priority"]),
            Some("fcfs"),
            "Order of the waiting queue; lpm (longest prefix match) raises radix-cache reuse.",
        )
        .candidates(&["fcfs", "lpm"]),
        Knob::new(
            "--num-continuous-decode-steps",
            int(1, 64),
            Some("1"),
            "Decode steps per scheduler round-trip; amortizes scheduler overhead, delays new prefills.",
        )
        .candidates(&["1", "2", "4", "8", "16"]),
        Knob::new("--enable-mixed-chunk", Switch, None, "Mix chunked-prefill tokens into decode batches."),
        Knob::new(
            "--chunked-prefill-size",
            int(-1, 65536),
            None,
            "Max tokens per prefill chunk (-1 disables chunking); smaller lowers decode stalls and peak memory.",
        )
        .candidates(&["2048", "4096", "8192", "16384"]),
        Knob::new("--max-running-requests", int(1, 4096), None, "Cap on concurrently running requests.")
            .candidates(&["32", "64", "128", "256", "512"]),
        Knob::new(
            "--mem-fraction-static",
            float(0.3, 0.98),
            None,
            "Fraction of GPU memory for weights and KV pool; too high OOMs at startup.",
        )
        .candidates(&["0.8", "0.85", "0.88", "0.9", "0.92"]),
        Knob::new("--cuda-graph-max-bs", int(1, 1024), None, "Largest batch captured in a CUDA graph.")
            .candidates(&["32", "64", "128", "256"]),
        Knob::new("--disable-cuda-graph", Switch, None, "Run decode without CUDA graphs (slower launches)."),
        Knob::new("--disable-radix-cache", Switch, None, "Turn off prefix (radix) caching."),
        Knob::new("--disable-overlap-schedule", Switch, None, "Stop overlapping CPU scheduling with GPU work."),
        Knob::new(
            "--schedule-conservativeness",
            float(0.1, 2.0),
            Some("1.0"),
            "How cautiously new requests are admitted against KV capacity; lower admits more.",
        )
        .candidates(&["0.3", "0.5", "1.0", "1.3"]),
        Knob::new(
            "--speculative-algorithm",
            choice(&["NGRAM", "EAGLE", "EAGLE3", "STANDALONE"]),
            None,
            "Speculative decoding; NGRAM needs no draft model.",
        )
        .risky(),
        Knob::new("--speculative-num-draft-tokens", int(1, 16), None, "Draft tokens verified per step.")
            .candidates(&["2", "3", "4", "8"])
            .requires("--speculative-algorithm", "NGRAM"),
        Knob::new("--speculative-num-steps", int(1, 16), None, "Speculative steps per verify.")
            .candidates(&["1", "2", "3", "5"])
            .requires("--speculative-algorithm", "NGRAM"),
        Knob::new("--tp-size", int(1, 8), Some("1"), "Tensor parallel degree (needs that many GPUs).")
            .candidates(&["1", "2", "4", "8"]),
        Knob::new(
            "--kv-cache-dtype",
            choice(&["auto", "fp8_e5m2", "fp8_e4m3"]),
            Some("auto"),
            "KV cache precision; fp8 doubles capacity at some quality risk.",
        )
        .risky(),
        Knob::new(
            "--attention-backend",
            choice(&["fa3", "flashinfer", "triton", "torch_native"]),
            None,
            "Attention kernel implementation.",
        ),
    ];
    SearchSpace {
        engine: EngineKind::Sglang,
        knobs,
        fixed: FIXED_COMMON.iter().map(|s| s.to_string()).collect(),
        constraints: Vec::new(),
        engine_version: None,
        launch_flags: LaunchFlags::default(),
        cpu_cores: None,
    }
}

fn vllm_space() -> SearchSpace {
    use Domain::Switch;
    let knobs = vec![
        Knob::new("--max-num-seqs", int(1, 4096), Some("256"), "Cap on sequences per iteration.")
            .candidates(&["32", "64", "128", "256", "512"]),
        Knob::new(
            "--max-num-batched-tokens",
            int(16, 131072),
            Some("8192"),
            "Token budget per step; smaller favours ITL, larger TTFT and throughput.",
        )
        .candidates(&["2048", "4096", "8192", "16384"]),
        Knob::new(
            "--gpu-memory-utilization",
            float(0.3, 0.98),
            Some("0.9"),
            "Fraction of GPU memory vLLM may use; the rest is headroom.",
        )
        .candidates(&["0.85", "0.9", "0.92", "0.95"]),
        // On by default in the V1 engine; `--no-...` turns them off.
        Knob::new("--enable-prefix-caching", Switch, Some("true"), "Automatic prefix caching.")
            .negated_by("--no-enable-prefix-caching"),
        Knob::new(
            "--enable-chunked-prefill",
            Switch,
            Some("true"),
            "Split long prefills into chunks mixed with decode.",
        )
        .negated_by("--no-enable-chunked-prefill"),
        Knob::new(
            "--dtype",
            choice(&["auto", "bfloat16", "float16", "float32"]),
            Some("auto"),
            "Weight and activation precision; `auto` takes the model's (downcast to bf16 on a CPU), float32 avoids \
             emulated bf16 on CPUs without bf16 kernels.",
        ),
        Knob::new("--enforce-eager", Switch, None, "Disable CUDA graphs."),
        Knob::new("--tensor-parallel-size", int(1, 8), Some("1"), "Tensor parallel degree.")
            .candidates(&["1", "2", "4", "8"]),
        Knob::new(
            "--kv-cache-dtype",
            choice(&["auto", "fp8", "fp8_e5m2", "fp8_e4m3"]),
            Some("auto"),
            "KV cache precision.",
        )
        .risky(),
        Knob::new(
            "--speculative-config",
            choice(&[
                r#"{"method":"ngram","num_speculative_tokens":3,"prompt_lookup_max":4}"#,
                r#"{"method":"ngram","num_speculative_tokens":5,"prompt_lookup_max":4}"#,
            ]),
            None,
            "Speculative decoding as JSON; ngram needs no draft model.",
        )
        .risky(),
        Knob::new("--max-model-len", int(128, 1048576), None, "Longest context served."),
    ];
    SearchSpace {
        engine: EngineKind::Vllm,
        knobs,
        fixed: FIXED_COMMON.iter().map(|s| s.to_string()).collect(),
        constraints: constraints::vllm_constraints(),
        engine_version: None,
        launch_flags: LaunchFlags::default(),
        cpu_cores: None,
    }
}

fn llamacpp_space() -> SearchSpace {
    let knobs = vec![
        // Current llama-server picks its slots itself (`-1` = auto) and sizes the context from the model.
        Knob::new("--parallel", int(1, 64), None, "Server slots (concurrent sequences).")
            .candidates(&["1", "2", "4", "8"]),
        Knob::new("--threads", int(1, 256), None, "CPU threads for generation.").candidates(&["1", "2", "4"]),
        Knob::new("--threads-batch", int(1, 256), None, "CPU threads for prompt processing.")
            .candidates(&["1", "2", "4"]),
        Knob::new("--batch-size", int(1, 16384), Some("2048"), "Logical batch size.")
            .candidates(&["256", "512", "2048"]),
        Knob::new("--ubatch-size", int(1, 16384), Some("512"), "Physical batch size.")
            .candidates(&["128", "256", "512"]),
        Knob::new("--ctx-size", int(0, 1048576), None, "Context size shared by all slots.")
            .candidates(&["2048", "4096", "8192"]),
        Knob::new(
            "--cont-batching",
            Domain::Switch,
            Some("true"),
            "Continuous batching (on by default in current builds).",
        )
        .negated_by("--no-cont-batching"),
        Knob::new("--cache-reuse", int(0, 4096), Some("0"), "Min chunk size to reuse from cache via KV shifting.")
            .candidates(&["0", "64", "256"]),
        Knob::new("--flash-attn", choice(&["on", "off", "auto"]), Some("auto"), "Flash attention."),
    ];
    let mut fixed: Vec<String> = FIXED_COMMON.iter().map(|s| s.to_string()).collect();
    fixed.extend(["-m", "--metrics", "--alias", "--no-webui"].iter().map(|s| s.to_string()));
    SearchSpace {
        engine: EngineKind::LlamaCpp,
        knobs,
        fixed,
        constraints: Vec::new(),
        engine_version: None,
        launch_flags: LaunchFlags::default(),
        cpu_cores: None,
    }
}

/// vLLM's defaults when it runs on a CPU (`vllm-cpu`; the V1 engine picks them per platform and usage
/// context: 128 sequences and 2048 batched tokens for `vllm serve` on CPU), and the CPU engine's
/// environment knobs.
fn vllm_cpu_defaults(space: &mut SearchSpace) {
    for knob in &mut space.knobs {
        match knob.flag.as_str() {
            "--max-num-seqs" => {
                knob.default = Some("128".into());
                knob.candidates = ["4", "8", "16", "32", "64", "128", "256"].map(String::from).to_vec();
            }
            "--max-num-batched-tokens" => {
                knob.default = Some("2048".into());
                knob.candidates = ["512", "1024", "2048", "4096", "8192"].map(String::from).to_vec();
            }
            "--dtype" => knob.candidates = ["auto", "float32"].map(String::from).to_vec(),
            _ => {}
        }
    }
    space.knobs.push(
        Knob::new(
            "VLLM_CPU_KVCACHE_SPACE",
            int(1, 1024),
            None,
            "GiB of host memory for the CPU engine's KV cache (an environment variable).",
        )
        .candidates(&["1", "2", "4", "8"]),
    );
    space.knobs.push(Knob::new(
        "VLLM_CPU_OMP_THREADS_BIND",
        choice(&["auto", "nobind"]),
        Some("auto"),
        "How the CPU engine pins its OpenMP threads to cores (an environment variable).",
    ));
}
