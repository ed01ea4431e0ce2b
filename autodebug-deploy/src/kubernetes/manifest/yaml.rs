//! YAML plumbing of the manifests: building and walking values, and reading multi-document files.

use autodebug_core::{Error, Result};
use serde::Deserialize as _;
use serde_yaml::{Mapping, Value};

pub(super) fn key(name: &str) -> Value {
    Value::String(name.to_string())
}

pub(super) fn text(value: &str) -> Value {
    Value::String(value.to_string())
}

pub(super) fn mapping(pairs: Vec<(&str, Value)>) -> Value {
    Value::Mapping(pairs.into_iter().map(|(k, v)| (key(k), v)).collect())
}

/// The mapping under `name`, created (or replacing a non-mapping) when needed.
pub(super) fn child<'a>(map: &'a mut Mapping, name: &str) -> &'a mut Mapping {
    let slot = map.entry(key(name)).or_insert_with(|| Value::Mapping(Mapping::new()));
    if !slot.is_mapping() {
        *slot = Value::Mapping(Mapping::new());
    }
    match slot {
        Value::Mapping(m) => m,
        _ => unreachable!("just made a mapping"),
    }
}

/// The sequence under `name`, created when needed.
pub(super) fn child_seq<'a>(map: &'a mut Mapping, name: &str) -> &'a mut Vec<Value> {
    let slot = map.entry(key(name)).or_insert_with(|| Value::Sequence(Vec::new()));
    if !slot.is_sequence() {
        *slot = Value::Sequence(Vec::new());
    }
    match slot {
        Value::Sequence(s) => s,
        _ => unreachable!("just made a sequence"),
    }
}

pub(super) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(super) fn kind_of(doc: &Value) -> Option<&str> {
    doc.get("kind").and_then(Value::as_str)
}

pub(super) fn name_of(doc: &Value) -> Option<&str> {
    doc.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str)
}

fn is_object(doc: &Value) -> bool {
    doc.get("apiVersion").is_some_and(Value::is_string) && doc.get("kind").is_some_and(Value::is_string)
}

/// The documents of a base manifest held in `ServiceSpec.base`: a sequence of objects, a
/// `kind: List`, or one object. Anything else (nothing, or another platform's file such as a
/// dstack configuration) means the built-in manifests.
pub(super) fn base_documents(base: &Value) -> Option<Vec<Value>> {
    match base {
        Value::Sequence(items) if !items.is_empty() && items.iter().all(is_object) => Some(items.clone()),
        doc if is_object(doc) && kind_of(doc) == Some("List") => {
            doc.get("items").and_then(Value::as_sequence).filter(|items| items.iter().all(is_object)).cloned()
        }
        doc if is_object(doc) => Some(vec![doc.clone()]),
        _ => None,
    }
}

/// Reads multi-document YAML into Kubernetes objects (`kind: List` items are flattened).
pub fn parse_documents(text: &str, location: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let where_ = || format!("{location}: document {}", index + 1);
        let value =
            Value::deserialize(document).map_err(|e| Error::config(where_(), format!("not valid YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        if !is_object(&value) {
            return Err(Error::config(where_(), "not a Kubernetes object: expected `apiVersion` and `kind`"));
        }
        match base_documents(&value) {
            Some(items) => docs.extend(items),
            None => {
                return Err(Error::config(where_(), "a `kind: List` whose items are not all Kubernetes objects"));
            }
        }
    }
    if docs.is_empty() {
        return Err(Error::config(location, "no Kubernetes objects in the file"));
    }
    Ok(docs)
}
