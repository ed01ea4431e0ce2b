//! Kubernetes manifests: the user's multi-document YAML in, a [`ServiceSpec`] out
//! ([`spec_from_yaml`]), and back again with only the planned knobs changed ([`render`]).
//!
//! Without a base manifest the built-in one is a `Deployment` (one replica, `Recreate`, so a new
//! configuration never waits for a GPU its predecessor still holds) running the real engine
//! command from [`engine_command`](crate::template::engine_command), plus a `Service` in front of it.

mod builtin;
mod container;
mod launch;
mod names;
mod objects;
mod read;
mod yaml;

use autodebug_core::{Error, Result, ServiceSpec};
use serde_yaml::Value;

use crate::template::default_image;

use builtin::builtin_deployment;
use container::{add_port_and_probe, container_port, merge_env, set_resources};
use launch::{find_engine, rewrite_launch};
use names::{check_label_value, check_object_name};
use objects::{add_cache_claim, add_labels, find_or_add_service, label_other_objects};
use yaml::{base_documents, child, child_seq, key, kind_of, mapping, name_of, text};

pub use read::spec_from_yaml;
pub use yaml::parse_documents;

/// The container port when neither the base manifest nor the command names one.
pub const DEFAULT_PORT: u16 = 8000;
/// Field manager of every server-side apply, and value of [`MANAGED_BY_LABEL`].
pub const MANAGER: &str = "autodebug";
/// The standard label saying which tool manages an object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Label carrying the run (service) name; teardown deletes by it.
pub const RUN_LABEL: &str = "autodebug/run";
/// The extended resource NVIDIA's device plugin advertises.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Name of the engine container in the built-in manifest.
pub const ENGINE_CONTAINER: &str = "engine";
/// Pod-template annotation holding the GPU model (`H100`), which no standard label carries.
pub const GPU_ANNOTATION: &str = "autodebug/gpu";

/// A persistent volume claim for the model cache, kept across runs so weights download once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCache {
    pub claim_name: String,
    /// Requested size as a Kubernetes quantity (`200Gi`).
    pub size: String,
    pub storage_class: Option<String>,
    /// Where the engine container sees it (default: the Hugging Face cache).
    pub mount_path: String,
}

impl ModelCache {
    pub fn new(size: impl Into<String>) -> Self {
        ModelCache {
            claim_name: "autodebug-model-cache".into(),
            size: size.into(),
            storage_class: None,
            mount_path: "/root/.cache/huggingface".into(),
        }
    }
}

/// What a render needs besides the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// Secret that env vars with credential-like names (`HF_TOKEN`) are read from.
    pub secret_name: String,
    /// HTTP path of the readiness probe added when the engine container has none.
    pub health_path: String,
    pub model_cache: Option<ModelCache>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions { secret_name: "autodebug-secrets".into(), health_path: "/health".into(), model_cache: None }
    }
}

/// Rendered manifests and the facts a deployer needs about them.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The objects, in apply order.
    pub documents: Vec<Value>,
    pub deployment: String,
    pub service: String,
    pub container: String,
    pub service_port: u16,
    /// The model name clients put in requests (`--served-model-name`, else the model).
    pub served_model: String,
    /// The Deployment's own `metadata.namespace`, when the manifest sets one.
    pub namespace: Option<String>,
}
/// The complete manifests for `spec`: its base manifest (or the built-in one) with the engine
/// container's flags, image, GPU/CPU/memory, env, probe and labels set from `spec`. Every other
/// field and document of the user's manifest is kept as it was.
pub fn render(spec: &ServiceSpec, options: &RenderOptions) -> Result<Rendered> {
    let location = format!("service `{}` manifest", spec.name);
    check_label_value(&spec.name, &format!("service `{}`: name", spec.name))?;
    let (mut docs, from_base) = match base_documents(&spec.base) {
        Some(docs) => (docs, true),
        None => {
            check_object_name(&spec.name, &format!("service `{}`: name", spec.name))?;
            (vec![builtin_deployment(spec)], false)
        }
    };
    let run_labels = [(MANAGED_BY_LABEL, MANAGER), (RUN_LABEL, spec.name.as_str())];
    let index = docs
        .iter()
        .position(|d| kind_of(d) == Some("Deployment"))
        .ok_or_else(|| Error::config(&location, "no Deployment: autodebug runs the engine as an apps/v1 Deployment"))?;
    let deployment_name = name_of(&docs[index])
        .ok_or_else(|| Error::config(format!("{location}: Deployment metadata.name"), "missing"))?
        .to_string();
    let location = format!("{location}: Deployment `{deployment_name}`");
    let namespace =
        docs[index].get("metadata").and_then(|m| m.get("namespace")).and_then(Value::as_str).map(str::to_string);

    let Some(deployment) = docs[index].as_mapping_mut() else {
        return Err(Error::config(&location, "not a mapping"));
    };
    add_labels(child(deployment, "metadata"), &run_labels);
    let template = child(child(deployment, "spec"), "template");
    add_labels(child(template, "metadata"), &run_labels);
    let pod_labels = child(template, "metadata").get("labels").cloned().unwrap_or(Value::Null);
    let pod_spec = child(template, "spec");
    let containers = child_seq(pod_spec, "containers");
    let (container_index, launch) = find_engine(containers, &location)?;
    if let Some(engine) = launch.engine
        && engine != spec.engine
    {
        return Err(Error::config(
            format!("{location}: containers[{container_index}]"),
            format!("the container launches {engine} but the spec is for {}", spec.engine),
        ));
    }
    let Some(container) = containers[container_index].as_mapping_mut() else {
        return Err(Error::config(format!("{location}: containers[{container_index}]"), "not a mapping"));
    };
    let container_name = container.get("name").and_then(Value::as_str).unwrap_or(ENGINE_CONTAINER).to_string();
    if from_base {
        rewrite_launch(container, &launch, spec);
    }
    if let Some(image) = &spec.image {
        container.insert(key("image"), text(image));
    } else if !container.contains_key("image") {
        container.insert(key("image"), text(default_image(spec.engine)));
    }
    set_resources(container, spec);
    merge_env(container, spec, options, &location)?;
    let port = container_port(container, &launch);
    add_port_and_probe(container, port, options);
    if let Some(cache) = &options.model_cache {
        let mounted = container
            .get("volumeMounts")
            .and_then(Value::as_sequence)
            .is_some_and(|m| m.iter().any(|v| v.get("name").and_then(Value::as_str) == Some("model-cache")));
        if !mounted {
            child_seq(container, "volumeMounts")
                .push(mapping(vec![("name", text("model-cache")), ("mountPath", text(&cache.mount_path))]));
            child_seq(pod_spec, "volumes").push(mapping(vec![
                ("name", text("model-cache")),
                ("persistentVolumeClaim", mapping(vec![("claimName", text(&cache.claim_name))])),
            ]));
        }
    }

    label_other_objects(&mut docs, index, &run_labels);
    let (service, service_port) =
        find_or_add_service(&mut docs, &pod_labels, spec, &location, &deployment_name, &run_labels, port)?;
    if let Some(cache) = &options.model_cache {
        add_cache_claim(&mut docs, cache);
    }

    Ok(Rendered {
        documents: docs,
        deployment: deployment_name,
        service,
        container: container_name,
        service_port,
        served_model: launch.served_model.unwrap_or_else(|| spec.model.clone()),
        namespace,
    })
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// The manifests as multi-document YAML, headed by a comment saying where they came from.
pub fn to_yaml(spec: &ServiceSpec, rendered: &Rendered) -> Result<String> {
    let mut out = format!(
        "# Kubernetes manifests rendered by autodebug: {} {} ({})\n\
         # apply with: kubectl apply --server-side --field-manager={MANAGER} -f <this file>\n",
        spec.engine,
        one_line(&spec.model),
        if spec.flags.is_empty() { "engine defaults".to_string() } else { one_line(&spec.flags.to_command_line()) }
    );
    for doc in &rendered.documents {
        let body = serde_yaml::to_string(doc).map_err(|e| {
            Error::config(format!("service `{}` manifest", spec.name), format!("cannot write YAML: {e}"))
        })?;
        out.push_str("---\n");
        out.push_str(&body);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodebug_core::EngineKind;

    #[test]
    fn bad_names_are_refused_with_the_field() {
        let spec = ServiceSpec::new("Qwen_SGLang", EngineKind::Sglang, "m");
        let err = render(&spec, &RenderOptions::default()).unwrap_err().to_string();
        assert!(err.contains("Qwen_SGLang") && err.contains("name"), "{err}");
    }
}
