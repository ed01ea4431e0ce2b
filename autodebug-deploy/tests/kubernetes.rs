//! The Kubernetes deployer against a mock API server.
//!
//! No API server can run here, so these tests use kube-rs's own pattern: a `tower-test` mock
//! service stands in for the HTTP connection (`tower_test::mock::pair`), a scripted "API server"
//! task asserts each request's method, path, query and body in order, and answers with
//! recorded-shape responses written from the Kubernetes API reference (`tests/fixtures/kubernetes`,
//! see its SOURCES.md). Every wait is bounded: a missing request fails after 10 s.

use std::pin::pin;
use std::time::Duration;

use autodebug_core::{Deployer, EngineKind, ServiceSpec};
use autodebug_deploy::kubernetes::k8s_openapi::api::apps::v1::Deployment as K8sDeployment;
use autodebug_deploy::kubernetes::k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use autodebug_deploy::kubernetes::kube;
use autodebug_deploy::kubernetes::kube::client::Body;
use autodebug_deploy::kubernetes::{KubernetesDeployer, ModelCache};
use http::{Method, Request, Response};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const STEP_BOUND: Duration = Duration::from_secs(10);

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/kubernetes/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

enum Reply {
    Fixture(&'static str),
    Text(String),
    /// The API server answers an apply with the object it stored: here, the request body.
    Echo,
}

struct Step {
    method: Method,
    path: String,
    /// `name=value` pairs (decoded) the query must hold.
    query: Vec<String>,
    status: u16,
    reply: Reply,
}

fn step(method: Method, path: &str, query: &[&str], status: u16, reply: Reply) -> Step {
    Step { method, path: path.into(), query: query.iter().map(|q| q.to_string()).collect(), status, reply }
}

/// What the mock API server saw.
#[derive(Debug)]
struct Seen {
    path: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn mock_client() -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// Plays the API server: answers `steps` in order, asserting each request against its step.
fn api_server(handle: Handle, steps: Vec<Step>) -> tokio::task::JoinHandle<Vec<Seen>> {
    tokio::spawn(async move {
        let mut handle = pin!(handle);
        let mut seen = Vec::new();
        for (i, step) in steps.into_iter().enumerate() {
            let next = tokio::time::timeout(STEP_BOUND, handle.next_request()).await;
            let (request, send) = next
                .unwrap_or_else(|_| panic!("request {i} ({} {}) never came", step.method, step.path))
                .expect("the client went away");
            let (parts, body) = request.into_parts();
            let body = body.collect_bytes().await.expect("request body").to_vec();
            assert_eq!(parts.method, step.method, "request {i}: {}", parts.uri);
            assert_eq!(parts.uri.path(), step.path, "request {i}: {}", parts.uri);
            let query: Vec<String> = parts.uri.query().unwrap_or("").split('&').map(percent_decode).collect();
            for wanted in &step.query {
                assert!(query.contains(wanted), "request {i} {}: query lacks `{wanted}`: {query:?}", parts.uri);
            }
            let reply = match step.reply {
                Reply::Fixture(name) => fixture(name).into_bytes(),
                Reply::Text(text) => text.into_bytes(),
                Reply::Echo => body.clone(),
            };
            let response = Response::builder().status(step.status).body(Body::from(reply)).expect("response");
            send.send_response(response);
            seen.push(Seen {
                path: parts.uri.path().to_string(),
                content_type: parts.headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string),
                body,
            });
        }
        seen
    })
}

fn deployer(client: kube::Client) -> KubernetesDeployer {
    KubernetesDeployer::builder()
        .client(client)
        .namespace("llm")
        .poll_interval(Duration::from_millis(10))
        .request_timeout(Duration::from_secs(5))
        .teardown_timeout(Duration::from_secs(2))
        .build()
        .expect("deployer")
}

fn spec() -> ServiceSpec {
    let mut spec = ServiceSpec::new("qwen-sglang", EngineKind::Sglang, "Qwen/Qwen1.5-0.5B-Chat")
        .with_flag("--schedule-policy", Some("lpm"))
        .with_flag("--chunked-prefill-size", Some("4096"))
        .with_flag("--enable-mixed-chunk", None)
        .with_gpu("H100:2");
    spec.env.push(("HF_TOKEN".into(), "hf_never_in_a_manifest".into()));
    spec.env.push(("SGLANG_LOG_LEVEL".into(), "info".into()));
    spec
}

const DEPLOYMENT_PATH: &str = "/apis/apps/v1/namespaces/llm/deployments/qwen-sglang";
const SERVICE_PATH: &str = "/api/v1/namespaces/llm/services/qwen-sglang";
const PODS_PATH: &str = "/api/v1/namespaces/llm/pods";
const POD_NAME: &str = "qwen-sglang-7d9f8b6c5d-x2k9p";
const SELECTOR: &str = "labelSelector=app.kubernetes.io/managed-by=autodebug,autodebug/run=qwen-sglang";

fn apply_steps() -> Vec<Step> {
    let apply = ["fieldManager=autodebug", "force=true"];
    vec![
        step(Method::PATCH, DEPLOYMENT_PATH, &apply, 200, Reply::Echo),
        step(Method::PATCH, SERVICE_PATH, &apply, 200, Reply::Echo),
    ]
}

async fn bounded<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), call).await.expect("the deployer call hung")
}

#[tokio::test]
async fn deploy_applies_deployment_and_service_with_planned_args_and_gpu_limits_on_a_mock_api_server() {
    let (client, handle) = mock_client();
    let server = api_server(handle, apply_steps());
    let spec = spec();
    let deployment = bounded(deployer(client).deploy(&spec)).await.expect("deploy");
    let seen = server.await.expect("mock API server");

    assert_eq!((deployment.id.as_str(), deployment.backend.as_str()), ("qwen-sglang", "kubernetes"));
    assert_eq!(deployment.spec, spec);
    assert_eq!(deployment.details["namespace"], "llm");
    assert_eq!(deployment.details["service"], "qwen-sglang");
    for request in &seen {
        assert_eq!(request.content_type.as_deref(), Some("application/apply-patch+yaml"), "{}", request.path);
        let text = String::from_utf8_lossy(&request.body);
        assert!(
            !text.contains("hf_never_in_a_manifest"),
            "a secret reached the API server in {}: {text}",
            request.path
        );
    }

    let applied: K8sDeployment = serde_json::from_slice(&seen[0].body).expect("the Deployment body is a Deployment");
    let labels = applied.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("autodebug"));
    assert_eq!(labels.get("autodebug/run").map(String::as_str), Some("qwen-sglang"));
    let pod = applied.spec.template.spec.as_ref().expect("pod spec");
    let container = &pod.containers[0];
    assert_eq!(container.command.as_deref(), Some(&["python3".to_string()][..]));
    let args = container.args.clone().unwrap_or_default().join(" ");
    assert_eq!(
        args,
        "-m sglang.launch_server --model-path Qwen/Qwen1.5-0.5B-Chat --host 0.0.0.0 --port 8000 \
         --schedule-policy lpm --chunked-prefill-size 4096 --enable-mixed-chunk"
    );
    let limits = container.resources.as_ref().and_then(|r| r.limits.clone()).unwrap_or_default();
    assert_eq!(limits.get("nvidia.com/gpu").map(|q| q.0.as_str()), Some("2"));
    let probe = container.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("readiness probe");
    assert_eq!(probe.path.as_deref(), Some("/health"));
    let env = container.env.clone().unwrap_or_default();
    let token = env.iter().find(|e| e.name == "HF_TOKEN").expect("HF_TOKEN");
    assert!(token.value.is_none());
    let key_ref = token.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).expect("secretKeyRef");
    assert_eq!((key_ref.name.as_str(), key_ref.key.as_str()), ("autodebug-secrets", "HF_TOKEN"));
    assert!(env.iter().any(|e| e.name == "SGLANG_LOG_LEVEL" && e.value.as_deref() == Some("info")));
    let pod_labels = applied.spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    assert_eq!(pod_labels.get("autodebug/run").map(String::as_str), Some("qwen-sglang"));

    let service: Service = serde_json::from_slice(&seen[1].body).expect("the Service body is a Service");
    let service_spec = service.spec.expect("service spec");
    assert_eq!(service_spec.selector.unwrap_or_default().get("autodebug/run").map(String::as_str), Some("qwen-sglang"));
    assert_eq!(service_spec.ports.unwrap_or_default()[0].port, 8000);
}

#[tokio::test]
async fn wait_ready_succeeds_when_the_mock_api_server_reports_available_replicas() {
    let (client, handle) = mock_client();
    let mut steps = apply_steps();
    steps.push(step(Method::GET, DEPLOYMENT_PATH, &[], 200, Reply::Fixture("deployment_progressing.json")));
    steps.push(step(Method::GET, PODS_PATH, &[SELECTOR], 200, Reply::Fixture("pods_running.json")));
    steps.push(step(Method::GET, DEPLOYMENT_PATH, &[], 200, Reply::Fixture("deployment_available.json")));
    let server = api_server(handle, steps);
    let deployer = deployer(client);
    let deployment = bounded(deployer.deploy(&spec())).await.expect("deploy");
    let endpoint = bounded(deployer.wait_ready(&deployment, Duration::from_secs(20))).await.expect("ready");
    server.await.expect("mock API server");
    assert_eq!(endpoint.base_url, "http://qwen-sglang.llm.svc.cluster.local:8000");
    assert_eq!(endpoint.model, "Qwen/Qwen1.5-0.5B-Chat");
    assert!(endpoint.token.is_none());
}

#[tokio::test]
async fn wait_ready_fails_fast_with_the_reason_on_crash_loop_back_off() {
    let (client, handle) = mock_client();
    let mut steps = apply_steps();
    steps.push(step(Method::GET, DEPLOYMENT_PATH, &[], 200, Reply::Fixture("deployment_progressing.json")));
    steps.push(step(Method::GET, PODS_PATH, &[SELECTOR], 200, Reply::Fixture("pods_crashloop.json")));
    steps.push(step(
        Method::GET,
        &format!("{PODS_PATH}/{POD_NAME}/log"),
        &["previous=true", "container=engine", "tailLines=20"],
        200,
        Reply::Fixture("previous_log.txt"),
    ));
    let server = api_server(handle, steps);
    let deployer = deployer(client);
    let deployment = bounded(deployer.deploy(&spec().with_flag("--bogus-flag", None))).await.expect("deploy");
    // A long timeout: only failing fast lets this return before the mock's bound.
    let err = bounded(deployer.wait_ready(&deployment, Duration::from_secs(600))).await.unwrap_err();
    server.await.expect("mock API server");
    assert!(matches!(err, autodebug_core::Error::Deploy { .. }), "{err:?}");
    let text = err.to_string();
    for wanted in ["CrashLoopBackOff", POD_NAME, "`engine`", "exit code 2", "unrecognized arguments: --bogus-flag"] {
        assert!(text.contains(wanted), "error lacks `{wanted}`: {text}");
    }
}

#[tokio::test]
async fn wait_ready_names_unschedulable_pods_once_their_grace_is_spent() {
    let (client, handle) = mock_client();
    let mut pods: serde_json::Value = serde_json::from_str(&fixture("pods_crashloop.json")).unwrap();
    let status = &mut pods["items"][0]["status"];
    *status = serde_json::json!({
        "phase": "Pending",
        "qosClass": "Burstable",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "lastTransitionTime": "2025-06-01T12:00:00Z",
            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."}]
    });
    let mut steps = apply_steps();
    steps.push(step(Method::GET, DEPLOYMENT_PATH, &[], 200, Reply::Fixture("deployment_progressing.json")));
    steps.push(step(Method::GET, PODS_PATH, &[SELECTOR], 200, Reply::Text(pods.to_string())));
    let server = api_server(handle, steps);
    let deployer = KubernetesDeployer::builder()
        .client(client)
        .namespace("llm")
        .unschedulable_grace(Duration::ZERO)
        .build()
        .expect("deployer");
    let deployment = bounded(deployer.deploy(&spec())).await.expect("deploy");
    let err = bounded(deployer.wait_ready(&deployment, Duration::from_secs(600))).await.unwrap_err().to_string();
    server.await.expect("mock API server");
    assert!(err.contains("Unschedulable") && err.contains("Insufficient nvidia.com/gpu"), "{err}");
}

#[tokio::test]
async fn logs_read_the_pod_log_endpoint_with_timestamps() {
    let (client, handle) = mock_client();
    let log_path = format!("{PODS_PATH}/{POD_NAME}/log");
    let mut steps = apply_steps();
    steps.push(step(Method::GET, PODS_PATH, &[SELECTOR], 200, Reply::Fixture("pods_running.json")));
    steps.push(step(
        Method::GET,
        &log_path,
        &["container=engine", "timestamps=true"],
        200,
        Reply::Fixture("pod_log.txt"),
    ));
    steps.push(step(Method::GET, PODS_PATH, &[SELECTOR], 200, Reply::Fixture("pods_running.json")));
    // The kubelet filters by whole seconds and may send more than asked: the deployer cuts exactly.
    steps.push(step(Method::GET, &log_path, &["timestamps=true"], 200, Reply::Fixture("pod_log.txt")));
    let server = api_server(handle, steps);
    let deployer = deployer(client);
    let deployment = bounded(deployer.deploy(&spec())).await.expect("deploy");

    let lines = bounded(deployer.logs(&deployment, None)).await.expect("logs");
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[0].text.starts_with("[2025-06-01 12:00:05] server_args="), "{:?}", lines[0]);
    assert!(lines.windows(2).all(|w| w[0].time_ns < w[1].time_ns), "{lines:?}");
    assert_eq!(lines[2].time_ns % 1_000_000_000, 1, "nanosecond stamp lost: {:?}", lines[2]);

    let since = lines[2].time_ns;
    let later = bounded(deployer.logs(&deployment, Some(since))).await.expect("logs since");
    let seen = server.await.expect("mock API server");
    assert_eq!(
        later.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
        [lines[2].text.as_str(), lines[3].text.as_str()]
    );
    assert!(seen.last().is_some_and(|s| s.path == log_path));
}

#[tokio::test]
async fn teardown_deletes_by_label_selector_and_is_idempotent() {
    let (client, handle) = mock_client();
    let deployments = "/apis/apps/v1/namespaces/llm/deployments";
    let services = "/api/v1/namespaces/llm/services";
    let empty = |kind: &str, api_version: &str| {
        Reply::Text(format!(
            r#"{{"kind":"{kind}","apiVersion":"{api_version}","metadata":{{"resourceVersion":"48500"}},"items":[]}}"#
        ))
    };
    let mut steps = apply_steps();
    // First teardown: both objects listed by label and deleted; the Service is already gone (404).
    steps.push(step(Method::GET, deployments, &[SELECTOR], 200, Reply::Fixture("deployments_list.json")));
    steps.push(step(Method::DELETE, DEPLOYMENT_PATH, &[], 200, Reply::Fixture("status_deleted.json")));
    steps.push(step(Method::GET, services, &[SELECTOR], 200, Reply::Fixture("services_list.json")));
    steps.push(step(Method::DELETE, SERVICE_PATH, &[], 404, Reply::Fixture("status_service_not_found.json")));
    steps.push(step(Method::GET, PODS_PATH, &[SELECTOR], 200, Reply::Fixture("pods_running.json")));
    steps.push(step(Method::GET, PODS_PATH, &[SELECTOR], 200, Reply::Fixture("pods_empty.json")));
    // Second teardown: nothing left.
    steps.push(step(Method::GET, deployments, &[SELECTOR], 200, empty("DeploymentList", "apps/v1")));
    steps.push(step(Method::GET, services, &[SELECTOR], 200, empty("ServiceList", "v1")));
    steps.push(step(Method::GET, PODS_PATH, &[SELECTOR], 200, Reply::Fixture("pods_empty.json")));
    // And a torn-down deployment never becomes ready.
    steps.push(step(Method::GET, DEPLOYMENT_PATH, &[], 404, Reply::Fixture("status_deployment_not_found.json")));
    let server = api_server(handle, steps);
    let deployer = deployer(client);
    let deployment = bounded(deployer.deploy(&spec())).await.expect("deploy");
    bounded(deployer.teardown(&deployment)).await.expect("first teardown");
    bounded(deployer.teardown(&deployment)).await.expect("second teardown");
    let err = bounded(deployer.wait_ready(&deployment, Duration::from_secs(5))).await.unwrap_err().to_string();
    let seen = server.await.expect("mock API server");
    assert!(err.contains("not found") && err.contains("qwen-sglang"), "{err}");
    let delete = seen.iter().find(|s| {
        s.path == DEPLOYMENT_PATH
            && !s.body.is_empty()
            && s.content_type.as_deref() != Some("application/apply-patch+yaml")
    });
    let delete = delete.map(|s| String::from_utf8_lossy(&s.body).to_string()).unwrap_or_default();
    assert!(delete.contains("Background"), "delete options: {delete}");
}

/// Rendered multi-document YAML → (kind, JSON) per object.
fn documents(yaml: &str) -> Vec<(String, serde_json::Value)> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("valid YAML"))
        .filter(|doc| !doc.is_null())
        .map(|doc| {
            let json = serde_json::to_value(&doc).expect("JSON");
            (json["kind"].as_str().unwrap_or_default().to_string(), json)
        })
        .collect()
}

#[test]
fn render_of_a_user_base_manifest_keeps_unrelated_fields() {
    let path = format!("{}/../examples/kubernetes-base.yaml", env!("CARGO_MANIFEST_DIR"));
    let mut spec = KubernetesDeployer::base_spec_from_file(&path).expect("base manifest");
    assert_eq!(
        (spec.name.as_str(), spec.engine, spec.model.as_str()),
        ("qwen-sglang", EngineKind::Sglang, "Qwen/Qwen1.5-0.5B-Chat")
    );
    assert_eq!(spec.flags.to_args(), ["--schedule-policy", "lpm", "--mem-fraction-static", "0.85"]);
    assert_eq!(spec.resources.gpu.as_deref(), Some("H100:1"));
    assert_eq!(spec.image.as_deref(), Some("lmsysorg/sglang:v0.4.6.post1-cu124"));

    spec.flags.set("--schedule-policy", Some("fcfs"));
    spec.flags.set("--cuda-graph-max-bs", Some("64"));
    spec.resources.gpu = Some("H100:2".into());
    let artifact = KubernetesDeployer::render_only().render(&spec).expect("render");
    assert_eq!((artifact.target.as_str(), artifact.extension.as_str()), ("kubernetes", "yaml"));

    let base = documents(&std::fs::read_to_string(&path).unwrap());
    let out = documents(&artifact.content);
    assert_eq!(out.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["ConfigMap", "Deployment", "Service"]);
    let strip_labels = |mut doc: serde_json::Value| {
        if let Some(labels) = doc["metadata"]["labels"].as_object_mut() {
            labels.remove("app.kubernetes.io/managed-by");
            labels.remove("autodebug/run");
            if labels.is_empty() {
                doc["metadata"].as_object_mut().unwrap().remove("labels");
            }
        }
        doc
    };
    assert_eq!(strip_labels(out[0].1.clone()), base[0].1, "the ConfigMap changed beyond labels");
    assert_eq!(strip_labels(out[2].1.clone()), base[2].1, "the Service changed beyond labels");
    assert_eq!(out[2].1["metadata"]["labels"]["autodebug/run"], "qwen-sglang");

    let (before, after) = (&base[1].1, &out[1].1);
    for pointer in [
        "/metadata/annotations",
        "/spec/selector",
        "/spec/strategy",
        "/spec/template/metadata/annotations",
        "/spec/template/spec/nodeSelector",
        "/spec/template/spec/tolerations",
        "/spec/template/spec/volumes",
        "/spec/template/spec/containers/0/image",
        "/spec/template/spec/containers/0/command",
        "/spec/template/spec/containers/0/ports",
        "/spec/template/spec/containers/0/env",
        "/spec/template/spec/containers/0/readinessProbe",
        "/spec/template/spec/containers/0/volumeMounts",
        "/spec/template/spec/containers/0/resources/requests",
    ] {
        assert_eq!(after.pointer(pointer), before.pointer(pointer), "`{pointer}` changed");
    }
    let args: Vec<&str> = after["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(
        args.join(" "),
        "--model-path Qwen/Qwen1.5-0.5B-Chat --host 0.0.0.0 --port 30000 --schedule-policy fcfs --mem-fraction-static 0.85 --cuda-graph-max-bs 64"
    );
    assert_eq!(after["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"], "2");
    assert_eq!(after["spec"]["template"]["metadata"]["labels"]["app"], "qwen-sglang");
    assert_eq!(after["spec"]["template"]["metadata"]["labels"]["autodebug/run"], "qwen-sglang");

    // Each object is a valid Kubernetes object of its kind.
    serde_json::from_value::<ConfigMap>(out[0].1.clone()).expect("ConfigMap");
    serde_json::from_value::<K8sDeployment>(out[1].1.clone()).expect("Deployment");
    serde_json::from_value::<Service>(out[2].1.clone()).expect("Service");

    // Rendering what was read, unchanged, gives the same knobs back.
    let again =
        KubernetesDeployer::base_spec_from_yaml(&artifact.content, "rendered").expect("rendered manifest reads back");
    assert_eq!((again.flags, again.resources.gpu), (spec.flags, Some("H100:2".to_string())));
}

#[test]
fn render_without_a_base_gives_valid_objects_for_every_engine() {
    let deployer = KubernetesDeployer::builder().model_cache(ModelCache::new("200Gi")).build().expect("deployer");
    for (engine, model, program, flag) in [
        (EngineKind::Sglang, "Qwen/Qwen1.5-0.5B-Chat", "python3", "--schedule-policy"),
        (EngineKind::Vllm, "Qwen/Qwen1.5-0.5B-Chat", "vllm", "--max-num-seqs"),
        (EngineKind::LlamaCpp, "/models/SmolLM2-135M.gguf", "/app/llama-server", "-np"),
    ] {
        let spec = ServiceSpec::new(format!("svc-{engine}"), engine, model).with_flag(flag, Some("4")).with_gpu("L4:1");
        let yaml = deployer.render(&spec).expect("render").content;
        let docs = documents(&yaml);
        assert_eq!(
            docs.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["PersistentVolumeClaim", "Deployment", "Service"],
            "{yaml}"
        );
        let claim: PersistentVolumeClaim = serde_json::from_value(docs[0].1.clone()).expect("PVC");
        assert!(
            !claim.metadata.labels.unwrap_or_default().contains_key("autodebug/run"),
            "the cache claim must outlive the run"
        );
        let deployment: K8sDeployment = serde_json::from_value(docs[1].1.clone()).expect("Deployment");
        let container = &deployment.spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(container.command.as_deref(), Some(&[program.to_string()][..]), "{yaml}");
        let args = container.args.clone().unwrap_or_default();
        assert!(args.contains(&model.to_string()) && args.windows(2).any(|w| w[0] == flag && w[1] == "4"), "{args:?}");
        let mounts = container.volume_mounts.clone().unwrap_or_default();
        assert!(mounts.iter().any(|m| m.name == "model-cache"), "{yaml}");
        let service: Service = serde_json::from_value(docs[2].1.clone()).expect("Service");
        assert_eq!(service.metadata.name.as_deref(), Some(spec.name.as_str()));
    }
}
