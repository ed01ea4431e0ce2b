//! The engine container's settings from the spec: resources, env (credentials from a Secret), port and probe.

use autodebug_core::{Error, Result, ServiceSpec};
use serde_yaml::{Mapping, Value};

use super::launch::Launch;
use super::yaml::{child, child_seq, key, mapping, text};
use super::{DEFAULT_PORT, GPU_RESOURCE, RenderOptions};
use crate::template::{is_env_name, looks_secret};

/// `16GB` (dstack style) → `16G`; Kubernetes quantities pass through.
fn quantity(text: &str) -> String {
    let t = text.trim();
    for (from, to) in [("GB", "G"), ("MB", "M"), ("TB", "T"), ("KB", "k"), ("GiB", "Gi"), ("MiB", "Mi"), ("TiB", "Ti")]
    {
        if let Some(number) = t.strip_suffix(from) {
            return format!("{}{to}", number.trim());
        }
    }
    t.to_string()
}

/// `2..8` → request 2, limit 8; `2..` → request 2; `2` → request 2.
fn range(text: &str) -> (Option<String>, Option<String>) {
    let nonempty = |s: &str| Some(s.trim()).filter(|s| !s.is_empty()).map(quantity);
    match text.split_once("..") {
        Some((low, high)) => (nonempty(low), nonempty(high)),
        None => (nonempty(text), None),
    }
}

pub(super) fn set_resources(container: &mut Mapping, spec: &ServiceSpec) {
    let had_resources = container.contains_key("resources");
    let resources = child(container, "resources");
    if let Some((_, count)) = spec.resources.gpu_name_and_count() {
        let count = Value::String(count.to_string());
        child(resources, "limits").insert(key(GPU_RESOURCE), count.clone());
        // Extended resources must request exactly their limit.
        if let Some(Value::Mapping(requests)) = resources.get_mut("requests")
            && requests.contains_key(GPU_RESOURCE)
        {
            requests.insert(key(GPU_RESOURCE), count);
        }
    }
    for (field, value) in [("cpu", &spec.resources.cpu), ("memory", &spec.resources.memory)] {
        let Some(value) = value else { continue };
        let (request, limit) = range(value);
        if let Some(request) = request {
            child(resources, "requests").insert(key(field), Value::String(request));
        }
        if let Some(limit) = limit {
            child(resources, "limits").insert(key(field), Value::String(limit));
        }
    }
    if !had_resources && resources.is_empty() {
        container.remove("resources");
    }
}

pub(super) fn merge_env(
    container: &mut Mapping,
    spec: &ServiceSpec,
    options: &RenderOptions,
    location: &str,
) -> Result<()> {
    let launch_env = spec.launch_env();
    if launch_env.is_empty() {
        return Ok(());
    }
    let env = child_seq(container, "env");
    for (name, value) in &launch_env {
        if !is_env_name(name) {
            return Err(Error::config(
                format!("{location}: env.{name}"),
                "not a valid environment variable name (letters, digits and `_`, not starting with a digit)",
            ));
        }
        let existing = env.iter().position(|e| e.get("name").and_then(Value::as_str) == Some(name.as_str()));
        let entry = if looks_secret(name) {
            // Credentials never enter the manifest: the pod reads them from a Secret.
            if let Some(i) = existing
                && env[i].get("valueFrom").is_some()
            {
                continue;
            }
            mapping(vec![
                ("name", text(name)),
                (
                    "valueFrom",
                    mapping(vec![(
                        "secretKeyRef",
                        mapping(vec![("name", text(&options.secret_name)), ("key", text(name))]),
                    )]),
                ),
            ])
        } else {
            mapping(vec![("name", text(name)), ("value", text(value))])
        };
        match existing {
            Some(i) => env[i] = entry,
            None => env.push(entry),
        }
    }
    Ok(())
}

pub(super) fn container_port(container: &Mapping, launch: &Launch) -> u16 {
    launch
        .port
        .or_else(|| {
            container
                .get("ports")
                .and_then(Value::as_sequence)
                .and_then(|p| p.first())
                .and_then(|p| p.get("containerPort"))
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
        })
        .unwrap_or(DEFAULT_PORT)
}

/// A `ports` entry and a readiness probe on `port`, unless the container has its own.
pub(super) fn add_port_and_probe(container: &mut Mapping, port: u16, options: &RenderOptions) {
    if !container.contains_key("ports") {
        container.insert(
            key("ports"),
            Value::Sequence(vec![mapping(vec![("name", text("http")), ("containerPort", Value::Number(port.into()))])]),
        );
    }
    if !container.contains_key("readinessProbe") {
        container.insert(
            key("readinessProbe"),
            mapping(vec![
                ("httpGet", mapping(vec![("path", text(&options.health_path)), ("port", Value::Number(port.into()))])),
                ("periodSeconds", Value::Number(5.into())),
                ("failureThreshold", Value::Number(3.into())),
            ]),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_ranges() {
        assert_eq!(range("16GB.."), (Some("16G".into()), None));
        assert_eq!(range("2..8"), (Some("2".into()), Some("8".into())));
        assert_eq!(range("64Gi"), (Some("64Gi".into()), None));
    }
}
