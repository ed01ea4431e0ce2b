//! The installed engine's own argument list (`vllm serve --help=all`, `llama-server --help`), so a
//! flag the installed version lacks, or a value outside its choices, is refused before any deploy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{EngineKind, Error, LaunchFlags, SearchSpace, is_env_knob};

/// One argument as the engine's help prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineArg {
    /// The long spelling, e.g. `--max-num-seqs`.
    pub flag: String,
    /// Other spellings of the same argument (`-tp`, `--no-enable-prefix-caching`).
    pub aliases: Vec<String>,
    pub takes_value: bool,
    /// The values it accepts, when the help lists them (`{auto,bfloat16,...}`).
    pub choices: Vec<String>,
    /// `(default: ...)` as printed.
    pub default: Option<String>,
}

/// The arguments of one installed engine version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineArgs {
    pub engine: EngineKind,
    /// The version the engine reports (`0.32.0`), when it could be read.
    pub version: Option<String>,
    /// Every spelling (aliases included) to its argument.
    pub args: BTreeMap<String, EngineArg>,
}

/// The catalog held against the installed engine: what `autodebug engines check` prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArgCheck {
    /// Catalog knobs the installed engine does not have (renamed or removed).
    pub missing: Vec<String>,
    /// Catalog values the engine would refuse, as `(flag, value)`.
    pub refused_values: Vec<(String, String)>,
    /// Catalog knobs the engine has.
    pub present: Vec<String>,
    /// Engine arguments outside the catalog whose names say they shape performance.
    pub worth_tuning: Vec<String>,
    /// Catalog knobs whose default differs from the one the engine's help states, as
    /// `(flag, catalog default, engine default)`; the engine's word is the one that holds.
    pub different_defaults: Vec<(String, String, String)>,
}

impl EngineArgs {
    /// Reads an argparse-style help text: option lines start with `-` after at most a few spaces,
    /// spellings separated by `, `, a metavar or `{a,b}` / `[a|b]` choices after the name, and a
    /// `(default: ...)` somewhere in the description.
    ///
    /// ```
    /// use autodebug_core::{EngineArgs, EngineKind};
    /// let help = "options:\n  --dtype {auto,float32}\n                        Data type. (default: auto)\n  --enable-prefix-caching, --no-enable-prefix-caching\n                        Prefix caching. (default: None)\n";
    /// let args = EngineArgs::parse(EngineKind::Vllm, Some("0.32.0"), help);
    /// assert_eq!(args.get("--dtype").unwrap().choices, ["auto", "float32"]);
    /// assert!(args.get("--no-enable-prefix-caching").is_some());
    /// ```
    pub fn parse(engine: EngineKind, version: Option<&str>, help: &str) -> Self {
        let mut args = BTreeMap::new();
        let mut current: Option<EngineArg> = None;
        let mut description = String::new();
        let finish = |arg: Option<EngineArg>, description: &str, args: &mut BTreeMap<String, EngineArg>| {
            let Some(mut arg) = arg else { return };
            arg.default = default_in(description);
            for spelling in std::iter::once(arg.flag.clone()).chain(arg.aliases.clone()) {
                args.insert(spelling, arg.clone());
            }
        };
        for line in help.lines() {
            let indent = line.len() - line.trim_start().len();
            let trimmed = line.trim_start();
            if indent <= 4 && starts_like_option(trimmed) {
                finish(current.take(), &description, &mut args);
                description.clear();
                let (head, rest) = split_head(trimmed);
                current = parse_option_head(head);
                description.push_str(rest);
            } else if current.is_some() {
                description.push(' ');
                description.push_str(trimmed);
            }
        }
        finish(current.take(), &description, &mut args);
        EngineArgs { engine, version: version.map(str::to_string), args }
    }

    pub fn get(&self, flag: &str) -> Option<&EngineArg> {
        self.args.get(flag)
    }

    fn version_text(&self) -> String {
        format!("{} {}", self.engine, self.version.as_deref().unwrap_or("(version unknown)"))
    }

    /// Checks launch flags against the installed engine: each flag known, each value among its
    /// choices. Environment knobs are not arguments and pass.
    pub fn check_flags(&self, flags: &LaunchFlags) -> Result<(), Error> {
        for (name, value) in flags.iter().filter(|(n, _)| !is_env_knob(n)) {
            let Some(arg) = self.get(name) else {
                return Err(Error::Knob {
                    knob: name.to_string(),
                    message: format!(
                        "is not an argument of the installed {} (its own help does not list it); \
                         drop it or use the spelling that version has",
                        self.version_text()
                    ),
                });
            };
            if let Some(v) = value
                && !arg.choices.is_empty()
                && !arg.choices.iter().any(|c| c == v)
            {
                return Err(Error::Knob {
                    knob: name.to_string(),
                    message: format!(
                        "`{v}` is not accepted by the installed {} (choices: {})",
                        self.version_text(),
                        arg.choices.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }

    /// The catalog against this engine: knobs it lacks, values it refuses, and its arguments
    /// outside the catalog that look worth tuning.
    pub fn check_catalog(&self, space: &SearchSpace) -> ArgCheck {
        let mut check = ArgCheck::default();
        for knob in space.knobs.iter().filter(|k| !is_env_knob(&k.flag)) {
            let Some(arg) = self.get(&knob.flag) else {
                check.missing.push(knob.flag.clone());
                continue;
            };
            check.present.push(knob.flag.clone());
            if let (Some(ours), Some(theirs)) = (&knob.default, &arg.default) {
                let theirs_clean = theirs.trim_matches(|c| c == '\'' || c == '"');
                let undecided = matches!(theirs_clean, "None" | "none" | "-1" | "auto" | "")
                    && knob.domain != crate::Domain::Switch;
                if !undecided && !crate::rules::same_setting(ours, theirs_clean) && knob.domain != crate::Domain::Switch
                {
                    check.different_defaults.push((knob.flag.clone(), ours.clone(), theirs_clean.to_string()));
                }
            }
            if let crate::Domain::Choice { values } = &knob.domain
                && !arg.choices.is_empty()
            {
                for v in values.iter().filter(|v| !arg.choices.contains(v)) {
                    check.refused_values.push((knob.flag.clone(), v.clone()));
                }
            }
        }
        const PERFORMANCE_WORDS: &[&str] =
            &["batch", "seqs", "cache", "parallel", "chunk", "schedul", "thread", "specul", "compil", "eager", "dtype"];
        let mut seen = std::collections::BTreeSet::new();
        for arg in self.args.values() {
            if !seen.insert(arg.flag.clone()) || space.knob_for(&arg.flag).is_some() || space.fixed.contains(&arg.flag)
            {
                continue;
            }
            if PERFORMANCE_WORDS.iter().any(|w| arg.flag.contains(w)) {
                check.worth_tuning.push(arg.flag.clone());
            }
        }
        check
    }
}

fn starts_like_option(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next() == Some('-') && chars.next().is_some_and(|c| c == '-' || c.is_ascii_alphanumeric())
}

/// Splits an option line into its spellings and the description on the same line (two or more
/// spaces separate them, as argparse and llama.cpp print).
fn split_head(line: &str) -> (&str, &str) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b' ' && bytes[i + 1] == b' ' {
            // llama.cpp pads between `-t,` and `--threads`: a comma before the gap continues the head.
            if line[..i].trim_end().ends_with(',') {
                i += 1;
                continue;
            }
            return (&line[..i], line[i..].trim_start());
        }
        i += 1;
    }
    (line, "")
}

fn parse_option_head(head: &str) -> Option<EngineArg> {
    let mut spellings = Vec::new();
    let mut takes_value = false;
    let mut choices = Vec::new();
    for part in head.split(", ").map(str::trim).filter(|p| !p.is_empty()) {
        let mut words = part.split_whitespace();
        let Some(name) = words.next().filter(|n| n.starts_with('-')) else { continue };
        let name = name.split('=').next().unwrap_or(name);
        spellings.push(name.to_string());
        if let Some(meta) = words.next() {
            takes_value = true;
            let inner = meta.trim_start_matches(['{', '[', '<']).trim_end_matches(['}', ']', '>']);
            if meta.starts_with('{') || (meta.starts_with('[') && inner.contains('|')) {
                choices = inner.split([',', '|']).map(str::to_string).collect();
            }
        }
    }
    // The long spelling names the argument; short ones are aliases.
    let main = spellings.iter().position(|s| s.starts_with("--")).unwrap_or(0);
    let flag = spellings.get(main)?.clone();
    let aliases = spellings.into_iter().enumerate().filter(|(i, _)| *i != main).map(|(_, s)| s).collect();
    Some(EngineArg { flag, aliases, takes_value, choices, default: None })
}

fn default_in(description: &str) -> Option<String> {
    let start = description.rfind("(default:")? + "(default:".len();
    let end = description[start..].find(')')? + start;
    Some(description[start..end].trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VLLM_HELP: &str = include_str!("../../tests/fixtures/vllm_cpu/vllm_0.32.0_serve_help_all.txt");

    fn vllm() -> EngineArgs {
        EngineArgs::parse(EngineKind::Vllm, Some("0.32.0"), VLLM_HELP)
    }

    #[test]
    fn the_real_vllm_help_lists_its_arguments() {
        let args = vllm();
        let distinct: std::collections::BTreeSet<_> = args.args.values().map(|a| a.flag.clone()).collect();
        // SOURCES.md: 316 engine arguments in this version's help.
        assert!(distinct.len() >= 300, "{} arguments", distinct.len());
        let dtype = args.get("--dtype").unwrap();
        assert_eq!(dtype.choices, ["auto", "bfloat16", "float", "float16", "float32", "half"]);
        assert_eq!(args.get("-tp").unwrap().flag, "--tensor-parallel-size");
        assert_eq!(args.get("--tensor-parallel-size").unwrap().default.as_deref(), Some("1"));
        assert!(args.get("--no-enable-prefix-caching").is_some());
        assert!(args.get("--max-num-seqs").unwrap().takes_value);
        assert!(args.get("--frobnicate-widgets").is_none());
    }

    #[test]
    fn flags_the_version_lacks_or_values_it_refuses_are_named_with_the_version() {
        let args = vllm();
        let unknown = LaunchFlags::parse_args(&["--max-num-seqs", "16", "--frobnicate-widgets", "7"]).unwrap();
        let err = args.check_flags(&unknown).unwrap_err().to_string();
        assert!(err.contains("--frobnicate-widgets") && err.contains("vllm 0.32.0"), "{err}");
        let bad = LaunchFlags::parse_args(&["--dtype", "float8"]).unwrap();
        let err = args.check_flags(&bad).unwrap_err().to_string();
        assert!(err.contains("float8") && err.contains("float32"), "{err}");
        let good = LaunchFlags::parse_args(&["--dtype", "float32", "--no-enable-prefix-caching"]).unwrap();
        args.check_flags(&good).unwrap();
    }

    #[test]
    fn the_cpu_catalog_is_held_against_the_real_help() {
        let cpu = crate::Platform::Cpu { cores: 2, numa_nodes: 1, bf16: false };
        let check = vllm().check_catalog(&SearchSpace::for_platform(EngineKind::Vllm, &cpu));
        assert!(check.missing.is_empty(), "catalog knobs vLLM 0.32 lacks: {:?}", check.missing);
        assert!(check.refused_values.is_empty(), "{:?}", check.refused_values);
        assert!(check.different_defaults.is_empty(), "{:?}", check.different_defaults);
        assert!(check.present.iter().any(|f| f == "--max-num-seqs"));
        assert!(
            check.worth_tuning.iter().any(|f| f == "--async-scheduling" || f.contains("batch")),
            "{:?}",
            check.worth_tuning
        );
    }

    #[test]
    fn a_catalog_default_the_engine_contradicts_is_reported() {
        let help = "options:\n  --max-num-seqs MAX_NUM_SEQS\n                        seqs (default: 64)\n";
        let args = EngineArgs::parse(EngineKind::Vllm, Some("9.9"), help);
        let cpu = crate::Platform::Cpu { cores: 2, numa_nodes: 1, bf16: false };
        let check = args.check_catalog(&SearchSpace::for_platform(EngineKind::Vllm, &cpu));
        assert_eq!(check.different_defaults, [("--max-num-seqs".to_string(), "128".to_string(), "64".to_string())]);
    }

    #[test]
    fn llama_cpp_style_help_lines_parse() {
        let help = "-t,    --threads N                      number of threads (default: -1)\n\
                    -fa,   --flash-attn [on|off|auto]       set Flash Attention use (default: 'auto')\n\
                    -cb,   --cont-batching                  enable continuous batching (default: enabled)\n";
        let args = EngineArgs::parse(EngineKind::LlamaCpp, None, help);
        assert_eq!(args.get("-t").unwrap().flag, "--threads");
        assert_eq!(args.get("--flash-attn").unwrap().choices, ["on", "off", "auto"]);
        assert!(!args.get("--cont-batching").unwrap().takes_value);
        assert_eq!(args.get("--threads").unwrap().default.as_deref(), Some("-1"));
    }
}
