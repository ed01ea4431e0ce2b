//! The built-in Deployment for specs that carry no Kubernetes manifest of their own.

use autodebug_core::{EngineKind, ServiceSpec};
use serde_yaml::Value;

use super::yaml::{mapping, text};
use super::{DEFAULT_PORT, ENGINE_CONTAINER, GPU_ANNOTATION, RUN_LABEL};
use crate::template::default_image;
use crate::template::{CommandTemplate, engine_command};

/// The built-in Deployment for specs without a base manifest; [`render`] adds the rest.
pub(super) fn builtin_deployment(spec: &ServiceSpec) -> Value {
    let image = spec.image.clone().unwrap_or_else(|| default_image(spec.engine).to_string());
    let (program, args) = engine_command(spec.engine);
    // The llama.cpp server image keeps its binary in /app, off PATH.
    let program = if spec.engine == EngineKind::LlamaCpp && image == default_image(EngineKind::LlamaCpp) {
        "/app/llama-server"
    } else {
        program
    };
    let command = CommandTemplate { program: program.into(), args: args.into_iter().map(String::from).collect() };
    let args: Vec<Value> = command.expand(spec, "0.0.0.0", DEFAULT_PORT).into_iter().map(Value::String).collect();
    let run_labels = || mapping(vec![(RUN_LABEL, text(&spec.name))]);
    let mut pod_metadata = vec![("labels", run_labels())];
    if let Some((gpu, _)) = spec.resources.gpu_name_and_count() {
        pod_metadata.push(("annotations", mapping(vec![(GPU_ANNOTATION, Value::String(gpu))])));
    }
    let mut container = vec![
        ("name", text(ENGINE_CONTAINER)),
        ("image", Value::String(image)),
        ("command", Value::Sequence(vec![text(program)])),
        ("args", Value::Sequence(args)),
        (
            "ports",
            Value::Sequence(vec![mapping(vec![
                ("name", text("http")),
                ("containerPort", Value::Number(DEFAULT_PORT.into())),
            ])]),
        ),
    ];
    let mut pod_spec = Vec::new();
    if spec.engine != EngineKind::LlamaCpp {
        // SGLang and vLLM share tensors between processes through /dev/shm, which is 64 MiB by default.
        container.push((
            "volumeMounts",
            Value::Sequence(vec![mapping(vec![("name", text("dshm")), ("mountPath", text("/dev/shm"))])]),
        ));
        pod_spec.push((
            "volumes",
            Value::Sequence(vec![mapping(vec![
                ("name", text("dshm")),
                ("emptyDir", mapping(vec![("medium", text("Memory"))])),
            ])]),
        ));
    }
    pod_spec.insert(0, ("containers", Value::Sequence(vec![mapping(container)])));
    mapping(vec![
        ("apiVersion", text("apps/v1")),
        ("kind", text("Deployment")),
        ("metadata", mapping(vec![("name", text(&spec.name))])),
        (
            "spec",
            mapping(vec![
                ("replicas", Value::Number(1.into())),
                ("strategy", mapping(vec![("type", text("Recreate"))])),
                ("selector", mapping(vec![("matchLabels", run_labels())])),
                ("template", mapping(vec![("metadata", mapping(pod_metadata)), ("spec", mapping(pod_spec))])),
            ]),
        ),
    ])
}
