//! Reading the user's manifest into a [`ServiceSpec`]: engine, flags, image, resources and env.

use autodebug_core::{Error, Result, ServiceSpec};
use serde_yaml::Value;

use super::GPU_ANNOTATION;
use super::GPU_RESOURCE;
use super::launch::{engine_from_image, find_engine};
use super::yaml::{kind_of, name_of, parse_documents, scalar_text};

fn pod_template(deployment: &Value) -> Option<&Value> {
    deployment.get("spec")?.get("template")
}

/// Reads a Kubernetes manifest (multi-document YAML with an `apps/v1` Deployment running the
/// engine) into a [`ServiceSpec`]: the engine and its flags from the engine container, image,
/// GPU count, CPU/memory requests and plain env values from their fields, all documents as `base`.
pub fn spec_from_yaml(text: &str, location: &str) -> Result<ServiceSpec> {
    let docs = parse_documents(text, location)?;
    let deployment = docs
        .iter()
        .find(|d| kind_of(d) == Some("Deployment"))
        .ok_or_else(|| Error::config(location, "no Deployment: autodebug runs the engine as an apps/v1 Deployment"))?;
    let name = name_of(deployment)
        .ok_or_else(|| Error::config(format!("{location}: Deployment metadata.name"), "missing"))?
        .to_string();
    let location = format!("{location}: Deployment `{name}`");
    let template = pod_template(deployment);
    let containers = template
        .and_then(|t| t.get("spec"))
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_sequence)
        .ok_or_else(|| Error::config(format!("{location}: spec.template.spec.containers"), "missing"))?;
    let (index, launch) = find_engine(containers, &location)?;
    let container = &containers[index];
    let image = container.get("image").and_then(Value::as_str).map(str::to_string);
    let engine = launch.engine.or_else(|| image.as_deref().and_then(engine_from_image)).ok_or_else(|| {
        Error::config(
            format!("{location}: containers[{index}]"),
            "cannot tell the engine: neither the command nor the image names sglang, vllm or llama.cpp",
        )
    })?;
    let env: Vec<(String, String)> = container
        .get("env")
        .and_then(Value::as_sequence)
        .map(|items| {
            items
                .iter()
                .filter_map(|e| Some((e.get("name")?.as_str()?.to_string(), scalar_text(e.get("value")?)?)))
                .collect()
        })
        .unwrap_or_default();
    let model =
        launch.model.clone().or_else(|| env.iter().find(|(n, _)| n == "MODEL_ID").map(|(_, v)| v.clone())).ok_or_else(
            || {
                Error::config(
                    format!("{location}: containers[{index}].args"),
                    "no model: pass --model-path (SGLang), --model or `vllm serve MODEL` (vLLM), or -m (llama.cpp)",
                )
            },
        )?;
    let mut spec = ServiceSpec::new(name, engine, model);
    spec.flags = launch.flags;
    spec.image = image;
    spec.env = env;
    let resources = container.get("resources");
    let limit = |field: &str| resources.and_then(|r| r.get("limits")).and_then(|l| l.get(field)).and_then(scalar_text);
    let request =
        |field: &str| resources.and_then(|r| r.get("requests")).and_then(|l| l.get(field)).and_then(scalar_text);
    if let Some(count) = limit(GPU_RESOURCE).or_else(|| request(GPU_RESOURCE)) {
        let gpu_name = template
            .and_then(|t| t.get("metadata"))
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(GPU_ANNOTATION))
            .or_else(|| {
                template
                    .and_then(|t| t.get("spec"))
                    .and_then(|s| s.get("nodeSelector"))
                    .and_then(|n| n.get("nvidia.com/gpu.product"))
            })
            .and_then(scalar_text)
            .unwrap_or_else(|| "gpu".into());
        spec.resources.gpu = Some(format!("{gpu_name}:{count}"));
    }
    spec.resources.cpu = request("cpu");
    spec.resources.memory = request("memory");
    spec.base = Value::Sequence(docs);
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_form_is_refused_with_a_fix() {
        let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers:\n      - name: s\n        image: i\n        command: [sh, -c]\n        args: [\"python3 -m sglang.launch_server --model-path m\"]\n";
        let err = spec_from_yaml(yaml, "k.yaml").unwrap_err().to_string();
        assert!(err.contains("k.yaml") && err.contains("exec-form"), "{err}");
    }
}
