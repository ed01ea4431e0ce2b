//! What the engine runs on: GPUs and their count, or a CPU with its cores, NUMA nodes and ISA.

use serde::{Deserialize, Serialize};

use crate::ServiceSpec;

/// The hardware a configuration is deployed on; it decides which knobs exist and their bounds
/// ([`SearchSpace::for_platform`](crate::SearchSpace::for_platform)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Platform {
    /// `count` GPUs named `name` (`H100`), from the service's `gpu` resource.
    Gpu { name: String, count: u32 },
    /// A CPU: tensor parallelism splits over NUMA nodes, threads over cores; `bf16` says whether the
    /// ISA has bf16 instructions (AVX512-BF16 or AMX), without which bf16 math is emulated.
    Cpu { cores: u32, numa_nodes: u32, bf16: bool },
}

impl Platform {
    /// The service's GPUs when it asks for some, else this host's CPU (a local engine without GPUs).
    pub fn of(spec: &ServiceSpec) -> Self {
        match spec.resources.gpu_name_and_count() {
            Some((name, count)) => Platform::Gpu { name, count },
            None => Platform::host_cpu(),
        }
    }

    /// This machine's CPU, read from the kernel (`/proc/cpuinfo`, `/sys/devices/system/node`).
    pub fn host_cpu() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX));
        let numa_nodes = std::fs::read_dir("/sys/devices/system/node")
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter(|e| {
                        let name = e.file_name();
                        let name = name.to_string_lossy();
                        name.strip_prefix("node")
                            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    })
                    .count()
            })
            .unwrap_or(0);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Platform::Cpu {
            cores,
            numa_nodes: u32::try_from(numa_nodes.max(1)).unwrap_or(1),
            bf16: cpu_flags_have_bf16(&cpuinfo),
        }
    }

    /// How many devices a tensor-parallel group can span.
    pub fn parallel_devices(&self) -> u32 {
        match self {
            Platform::Gpu { count, .. } => *count,
            Platform::Cpu { numa_nodes, .. } => *numa_nodes,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Platform::Gpu { name, count } => format!("{count}x {name}"),
            Platform::Cpu { cores, numa_nodes, bf16 } => format!(
                "CPU, {cores} cores, {numa_nodes} NUMA node{}, {}",
                if *numa_nodes == 1 { "" } else { "s" },
                if *bf16 { "bf16 instructions" } else { "no bf16 instructions" }
            ),
        }
    }
}

/// Whether a `/proc/cpuinfo` text lists a bf16 instruction set on its `flags` line.
fn cpu_flags_have_bf16(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "avx512_bf16" || f == "amx_bf16"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_is_read_from_the_flags_line_only() {
        assert!(cpu_flags_have_bf16("flags\t\t: fpu avx2 avx512f avx512_bf16\n"));
        assert!(!cpu_flags_have_bf16("flags\t\t: fpu avx2 avx512f\nmodel name: avx512_bf16 box\n"));
    }

    #[test]
    fn a_spec_with_gpus_runs_on_them() {
        let spec = ServiceSpec::new("s", crate::EngineKind::Vllm, "m").with_gpu("H100:80GB:2");
        assert_eq!(Platform::of(&spec), Platform::Gpu { name: "H100".into(), count: 2 });
        assert_eq!(Platform::of(&spec).parallel_devices(), 2);
    }

    #[test]
    fn the_host_cpu_has_at_least_one_core_and_node() {
        let Platform::Cpu { cores, numa_nodes, .. } = Platform::host_cpu() else { panic!("a CPU") };
        assert!(cores >= 1 && numa_nodes >= 1);
    }
}
