//! The workspace's dependency direction, read from the crates' own manifests:
//! `cli -> {deploy, bench, telemetry, sim, llm, report} -> core`, no edge between siblings, so an
//! embedder of one backend compiles core and that backend only (ARCHITECTURE.md).

use std::path::Path;

const SIBLINGS: [&str; 6] = ["deploy", "bench", "telemetry", "sim", "llm", "report"];

/// The workspace crates a manifest names in its normal `[dependencies]` (dev- and build-
/// dependencies are not part of what an embedder compiles).
fn normal_workspace_dependencies(manifest: &str) -> Vec<String> {
    let mut in_dependencies = false;
    let mut found = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies =
                line == "[dependencies]" || (line.starts_with("[target.") && line.ends_with(".dependencies]"));
            continue;
        }
        if in_dependencies
            && let Some(name) = line.split(['=', '.', ' ']).next().filter(|n| n.starts_with("autodebug-"))
        {
            found.push(name.trim_start_matches("autodebug-").to_string());
        }
    }
    found
}

fn manifest_of(krate: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(format!("autodebug-{krate}")).join("Cargo.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn core_depends_on_no_workspace_crate() {
    assert_eq!(normal_workspace_dependencies(&manifest_of("core")), Vec::<String>::new());
}

#[test]
fn siblings_depend_on_core_only() {
    for sibling in SIBLINGS {
        let dependencies = normal_workspace_dependencies(&manifest_of(sibling));
        assert_eq!(dependencies, ["core"], "autodebug-{sibling} may depend on autodebug-core only");
    }
}

#[test]
fn the_manifest_reader_sees_a_sibling_edge() {
    let manifest = "[dependencies]\nautodebug-core.workspace = true\nautodebug-sim = { path = \"../autodebug-sim\" }\n\n[dev-dependencies]\nautodebug-llm.workspace = true\n";
    assert_eq!(normal_workspace_dependencies(manifest), ["core", "sim"]);
}
