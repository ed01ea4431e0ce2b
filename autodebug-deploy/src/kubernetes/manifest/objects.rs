//! The objects around the engine's Deployment: run labels, the Service in front of it, the model cache's claim.

use autodebug_core::{Error, Result, ServiceSpec};
use serde_yaml::{Mapping, Value};

use super::names::check_object_name;
use super::yaml::{child, key, kind_of, mapping, name_of, text};
use super::{MANAGED_BY_LABEL, MANAGER, ModelCache, RUN_LABEL};

pub(super) fn add_labels(metadata: &mut Mapping, labels: &[(&str, &str)]) {
    let existing = child(metadata, "labels");
    for (name, value) in labels {
        existing.insert(key(name), text(value));
    }
}

/// Labels every object but the Deployment at `index`; claims get only `managed-by`, so teardown
/// keeps the cache.
pub(super) fn label_other_objects(docs: &mut [Value], index: usize, run_labels: &[(&str, &str)]) {
    for (i, doc) in docs.iter_mut().enumerate() {
        if i == index {
            continue;
        }
        let is_claim = kind_of(doc) == Some("PersistentVolumeClaim");
        if let Some(map) = doc.as_mapping_mut() {
            add_labels(child(map, "metadata"), if is_claim { &run_labels[..1] } else { run_labels });
        }
    }
}

/// The Service whose selector picks the engine's pods, or a new one named after the Deployment:
/// its name and port.
pub(super) fn find_or_add_service(
    docs: &mut Vec<Value>,
    pod_labels: &Value,
    spec: &ServiceSpec,
    location: &str,
    deployment_name: &str,
    run_labels: &[(&str, &str)],
    port: u16,
) -> Result<(String, u16)> {
    let selects_pods = |doc: &Value| {
        kind_of(doc) == Some("Service")
            && doc.get("spec").and_then(|s| s.get("selector")).and_then(Value::as_mapping).is_some_and(|selector| {
                !selector.is_empty() && selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
            })
    };
    let found = match docs.iter().find(|d| selects_pods(d)) {
        Some(doc) => {
            let name = name_of(doc)
                .ok_or_else(|| Error::config(format!("{location}: Service metadata.name"), "missing"))?
                .to_string();
            let service_port = doc
                .get("spec")
                .and_then(|s| s.get("ports"))
                .and_then(Value::as_sequence)
                .and_then(|p| p.first())
                .and_then(|p| p.get("port"))
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(port);
            (name, service_port)
        }
        None => {
            check_object_name(deployment_name, &format!("{location}: metadata.name (also names the Service)"))?;
            docs.push(mapping(vec![
                ("apiVersion", text("v1")),
                ("kind", text("Service")),
                (
                    "metadata",
                    mapping(vec![
                        ("name", text(deployment_name)),
                        ("labels", mapping(run_labels.iter().map(|(k, v)| (*k, text(v))).collect())),
                    ]),
                ),
                (
                    "spec",
                    mapping(vec![
                        ("selector", mapping(vec![(RUN_LABEL, text(&spec.name))])),
                        (
                            "ports",
                            Value::Sequence(vec![mapping(vec![
                                ("name", text("http")),
                                ("port", Value::Number(port.into())),
                                ("targetPort", Value::Number(port.into())),
                            ])]),
                        ),
                    ]),
                ),
            ]));
            (deployment_name.to_string(), port)
        }
    };
    Ok(found)
}

/// The model cache's claim, first in apply order, unless the manifest has one of that name.
pub(super) fn add_cache_claim(docs: &mut Vec<Value>, cache: &ModelCache) {
    if !docs
        .iter()
        .any(|d| kind_of(d) == Some("PersistentVolumeClaim") && name_of(d) == Some(cache.claim_name.as_str()))
    {
        let mut claim_spec = vec![
            ("accessModes", Value::Sequence(vec![text("ReadWriteOnce")])),
            ("resources", mapping(vec![("requests", mapping(vec![("storage", text(&cache.size))]))])),
        ];
        if let Some(class) = &cache.storage_class {
            claim_spec.push(("storageClassName", text(class)));
        }
        docs.insert(
            0,
            mapping(vec![
                ("apiVersion", text("v1")),
                ("kind", text("PersistentVolumeClaim")),
                (
                    "metadata",
                    mapping(vec![
                        ("name", text(&cache.claim_name)),
                        ("labels", mapping(vec![(MANAGED_BY_LABEL, text(MANAGER))])),
                    ]),
                ),
                ("spec", mapping(claim_spec)),
            ]),
        );
    }
}
