//! `autodebug demo --render-as kubernetes`: the loop measures the simulator (a real child process
//! on loopback) while the trail holds, per iteration, the Kubernetes manifests that would run the
//! real engine; each file must parse as Kubernetes objects (k8s-openapi types).

use std::path::Path;
use std::process::{Command, Stdio};

use autodebug_deploy::kubernetes::k8s_openapi::api::apps::v1::Deployment;
use autodebug_deploy::kubernetes::k8s_openapi::api::core::v1::Service;
use serde::Deserialize;

const BIN: &str = env!("CARGO_BIN_EXE_autodebug");

fn kubernetes_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        name.starts_with("kubernetes-") && name.ends_with(".yaml")
    });
    files.sort();
    files
}

#[test]
fn demo_render_as_kubernetes_writes_manifests_that_parse_as_kubernetes_objects() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["demo", "--render-as", "kubernetes", "--iterations", "2", "--json", "--out"])
        .arg(out.path())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "demo failed: {}", String::from_utf8_lossy(&output.stdout));

    let files = kubernetes_files(out.path());
    assert_eq!(files.len(), 2, "one manifest file per iteration: {files:?}");
    let mut argument_lists = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let mut kinds = Vec::new();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if value.is_null() {
                continue;
            }
            let json = serde_json::to_value(&value).unwrap();
            let kind = json["kind"].as_str().unwrap_or_default().to_string();
            match kind.as_str() {
                "Deployment" => {
                    let deployment: Deployment = serde_json::from_value(json)
                        .unwrap_or_else(|e| panic!("{}: not a Deployment: {e}", file.display()));
                    let labels = deployment.metadata.labels.unwrap_or_default();
                    assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("autodebug"));
                    let pod = deployment.spec.template.spec.expect("pod spec");
                    let engine = &pod.containers[0];
                    let args = engine.args.clone().unwrap_or_default();
                    assert!(args.iter().any(|a| a == "sglang.launch_server"), "{}: {args:?}", file.display());
                    argument_lists.push(args);
                }
                "Service" => {
                    let service: Service = serde_json::from_value(json)
                        .unwrap_or_else(|e| panic!("{}: not a Service: {e}", file.display()));
                    assert!(service.spec.and_then(|s| s.selector).is_some_and(|s| s.contains_key("autodebug/run")));
                }
                other => panic!("{}: unexpected kind `{other}`", file.display()),
            }
            kinds.push(kind);
        }
        assert_eq!(kinds, ["Deployment", "Service"], "{}", file.display());
    }
    // The second iteration runs the planned configuration, so its engine arguments differ.
    assert_ne!(argument_lists[0], argument_lists[1], "the plan's changes did not reach the manifest");
}
