//! The Kubernetes deployer: renders a Deployment + Service (+ an optional model-cache claim)
//! for SGLang, vLLM or llama.cpp and applies them with server-side apply through kube-rs.
//!
//! - [`KubernetesDeployer::base_spec_from_file`] reads the user's manifest (multi-document YAML
//!   with an `apps/v1` Deployment running the engine) into a [`ServiceSpec`]; `render` writes it
//!   back with only the planned knobs changed: the engine container's flags, image,
//!   `nvidia.com/gpu` limit, CPU/memory requests and env, plus the labels
//!   `app.kubernetes.io/managed-by: autodebug` and `autodebug/run: <name>`. Without a base it
//!   writes a complete Deployment (running [`engine_command`](crate::template::engine_command),
//!   readiness probe on `/health`, `Recreate` strategy, `/dev/shm` for SGLang/vLLM) and Service.
//! - `deploy` applies every object (`PATCH` with `application/apply-patch+yaml`, field manager
//!   `autodebug`, `force`: autodebug owns the knobs it sets); `wait_ready` follows the rollout
//!   like `kubectl rollout status` and fails fast with the pod's reason and message
//!   (`CrashLoopBackOff` with the engine's last output, `ImagePullBackOff`, a failed
//!   `ReplicaFailure`, ...), reporting `Unschedulable` pods in its timeout message; `logs` reads
//!   the pods' logs with their timestamps; `teardown` deletes by label selector (a `404` is
//!   fine) and waits, bounded, for the pods to go so the next configuration gets the GPUs.
//!   Model-cache claims only carry `managed-by`, so they outlive runs.
//!
//! The endpoint is the Service's cluster DNS name
//! (`http://<service>.<namespace>.svc.cluster.local:<port>`), which answers when autodebug runs
//! inside the cluster. From outside, expose the Service yourself (`kubectl port-forward
//! svc/<service> 8000:8000`, an ingress) and set [`base_url`](KubernetesDeployerBuilder::base_url),
//! e.g. `http://127.0.0.1:8000`; autodebug does not port-forward.
//!
//! Cluster access is kube-rs's own [`kube::Config::infer`] (`KUBECONFIG`, `~/.kube/config`, or
//! the in-cluster service account), resolved on first use. Env vars with credential-like names
//! (`HF_TOKEN`) are never written into manifests: the pod reads them from a Secret
//! (`kubectl create secret generic autodebug-secrets --from-literal=HF_TOKEN=...`).
//!
//! ```
//! use autodebug_core::{Deployer, EngineKind, ServiceSpec};
//! use autodebug_deploy::kubernetes::KubernetesDeployer;
//!
//! # fn main() -> autodebug_core::Result<()> {
//! let spec = ServiceSpec::new("qwen", EngineKind::Sglang, "Qwen/Qwen1.5-0.5B-Chat")
//!     .with_flag("--schedule-policy", Some("lpm"))
//!     .with_gpu("H100:2");
//! let yaml = KubernetesDeployer::render_only().render(&spec)?.content;
//! assert!(yaml.contains("sglang.launch_server"));
//! assert!(yaml.contains("nvidia.com/gpu: '2'"));
//! assert!(yaml.contains("autodebug/run: qwen"));
//! # Ok(()) }
//! ```

pub mod beside;
pub mod manifest;
pub mod status;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use autodebug_core::failure::start_failure_kind;
use autodebug_core::{
    Artifact, Deployer, Deployment, Endpoint, Error, ErrorKind, LogLine, Result, ServiceSpec, TimeWindow, async_trait,
};
use k8s_openapi::api::apps::v1::Deployment as K8sDeployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_yaml::Value;

pub use k8s_openapi;
pub use kube;
pub use manifest::{
    DEFAULT_PORT, GPU_RESOURCE, MANAGED_BY_LABEL, MANAGER, ModelCache, RUN_LABEL, RenderOptions, Rendered,
};

/// Environment variables read by [`KubernetesDeployerBuilder::from_env`].
pub mod env_vars {
    /// Namespace to deploy into (default: the kubeconfig context's, else `default`).
    pub const NAMESPACE: &str = "AUTODEBUG_K8S_NAMESPACE";
    /// Base URL the service answers on from here, with optional `{service}`, `{namespace}`, `{port}`.
    pub const BASE_URL: &str = "AUTODEBUG_K8S_BASE_URL";
    /// Secret holding credential env vars (default `autodebug-secrets`).
    pub const SECRET: &str = "AUTODEBUG_K8S_SECRET";
    /// Size of a model-cache claim to mount (`200Gi`); none when unset.
    pub const MODEL_CACHE: &str = "AUTODEBUG_K8S_MODEL_CACHE";
    /// Storage class of that claim.
    pub const STORAGE_CLASS: &str = "AUTODEBUG_K8S_STORAGE_CLASS";
}

/// Kinds that live outside namespaces: autodebug does not apply them (they are cluster-wide).
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "PersistentVolume",
    "StorageClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "RuntimeClass",
];
/// At most this many pods are read per `logs` call (the newest ones).
const MAX_LOG_PODS: usize = 4;
/// Lines of a crashed container's previous output quoted in a failure.
const CRASH_OUTPUT_LINES: i64 = 20;

/// Deploys services on Kubernetes. See the [module docs](self).
pub struct KubernetesDeployer {
    client: tokio::sync::OnceCell<kube::Client>,
    /// Whether a missing client may be built from the kubeconfig (false: render only).
    infer_client: bool,
    namespace: Option<String>,
    base_url: Option<String>,
    cluster_domain: String,
    options: RenderOptions,
    default_base: Value,
    poll_interval: Duration,
    request_timeout: Duration,
    teardown_timeout: Duration,
    unschedulable_grace: Option<Duration>,
    log_limit_bytes: i64,
}

/// Builds a [`KubernetesDeployer`].
pub struct KubernetesDeployerBuilder {
    client: Option<kube::Client>,
    namespace: Option<String>,
    base_url: Option<String>,
    cluster_domain: String,
    options: RenderOptions,
    default_base: Value,
    poll_interval: Duration,
    request_timeout: Duration,
    teardown_timeout: Duration,
    unschedulable_grace: Option<Duration>,
    log_limit_bytes: i64,
}

impl KubernetesDeployerBuilder {
    /// A ready client (tests pass one over a mock service); default: [`kube::Config::infer`].
    pub fn client(mut self, client: kube::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Namespace to deploy into (default: the client's, i.e. the kubeconfig context's).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Where the service answers from here (`http://127.0.0.1:8000` behind a port-forward);
    /// `{service}`, `{namespace}` and `{port}` are filled in. Default: the cluster DNS name.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// The cluster's DNS domain (default `cluster.local`).
    pub fn cluster_domain(mut self, domain: impl Into<String>) -> Self {
        self.cluster_domain = domain.into();
        self
    }

    /// Secret that credential env vars are read from (default `autodebug-secrets`).
    pub fn secret_name(mut self, name: impl Into<String>) -> Self {
        self.options.secret_name = name.into();
        self
    }

    /// Path of the readiness probe added when the engine container has none (default `/health`).
    pub fn health_path(mut self, path: impl Into<String>) -> Self {
        self.options.health_path = path.into();
        self
    }

    /// Mounts a persistent model cache (created when missing, kept by teardown).
    pub fn model_cache(mut self, cache: ModelCache) -> Self {
        self.options.model_cache = Some(cache);
        self
    }

    /// The manifest to render onto for specs that carry no Kubernetes `base` of their own.
    pub fn default_base(mut self, base: Value) -> Self {
        self.default_base = base;
        self
    }

    /// How often `wait_ready` and `teardown` ask the API server (default 2 s).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Bound on each API request (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long `teardown` waits for the pods to go (default 120 s; then it returns with a warning).
    pub fn teardown_timeout(mut self, timeout: Duration) -> Self {
        self.teardown_timeout = timeout;
        self
    }

    /// Fail `wait_ready` once a pod stayed unschedulable this long (default: wait for the
    /// whole timeout, since a cluster autoscaler may be adding a GPU node).
    pub fn unschedulable_grace(mut self, grace: Duration) -> Self {
        self.unschedulable_grace = Some(grace);
        self
    }

    /// Most bytes read per pod log in one `logs` call (default 16 MiB).
    pub fn log_limit_bytes(mut self, bytes: i64) -> Self {
        self.log_limit_bytes = bytes.max(1);
        self
    }

    /// Fills in what was not set from the `AUTODEBUG_K8S_*` variables ([`env_vars`]).
    pub fn from_env(mut self) -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        self.namespace = self.namespace.or_else(|| var(env_vars::NAMESPACE));
        self.base_url = self.base_url.or_else(|| var(env_vars::BASE_URL));
        if let Some(secret) = var(env_vars::SECRET) {
            self.options.secret_name = secret;
        }
        if self.options.model_cache.is_none()
            && let Some(size) = var(env_vars::MODEL_CACHE)
        {
            let mut cache = ModelCache::new(size);
            cache.storage_class = var(env_vars::STORAGE_CLASS);
            self.options.model_cache = Some(cache);
        }
        Ok(self)
    }

    pub fn build(self) -> Result<KubernetesDeployer> {
        if let Some(url) = &self.base_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(Error::config(
                env_vars::BASE_URL,
                format!(
                    "`{url}` is not an http(s) URL: give the address the Service answers on, e.g. http://127.0.0.1:8000"
                ),
            ));
        }
        if let Some(ns) = &self.namespace
            && (ns.is_empty()
                || ns.len() > 63
                || !ns.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        {
            return Err(Error::config(
                env_vars::NAMESPACE,
                format!("`{ns}` is not a valid namespace name: lowercase letters, digits and dashes"),
            ));
        }
        let cell = match self.client {
            Some(client) => tokio::sync::OnceCell::new_with(Some(client)),
            None => tokio::sync::OnceCell::new(),
        };
        Ok(KubernetesDeployer {
            client: cell,
            infer_client: true,
            namespace: self.namespace,
            base_url: self.base_url,
            cluster_domain: self.cluster_domain,
            options: self.options,
            default_base: self.default_base,
            poll_interval: self.poll_interval,
            request_timeout: self.request_timeout,
            teardown_timeout: self.teardown_timeout,
            unschedulable_grace: self.unschedulable_grace,
            log_limit_bytes: self.log_limit_bytes,
        })
    }
}

fn api_error(what: &str, error: kube::Error) -> Error {
    match error {
        kube::Error::Api(status) => {
            let hint = match status.code {
                401 => "; check the credentials of your kubeconfig context",
                403 => "; the kubeconfig user lacks permission for this (check with `kubectl auth can-i`)",
                _ => "",
            };
            let message =
                format!("Kubernetes API: {what}: {} ({} {}){hint}", status.message, status.code, status.reason);
            match status.code {
                401 | 403 => Error::infrastructure(message),
                // The API server refused the object itself (an invalid manifest, a quota).
                400..=499 => Error::rejected(message),
                _ => Error::deploy(message),
            }
        }
        other => Error::deploy(format!("Kubernetes API: {what}: {other}")).caused_by(other),
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

fn is_auth_failure(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 401 || status.code == 403)
}

/// `apiVersion` + `kind` → the resource kube-rs addresses.
fn api_resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

/// One log line with the kubelet's RFC 3339 stamp (`timestamps=true`) in front.
fn parse_log_line(line: &str, fallback_ns: i128) -> LogLine {
    let stamped = line.split_once(' ').and_then(|(stamp, text)| {
        time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|t| (t.unix_timestamp_nanos(), text))
    });
    match stamped {
        Some((time_ns, text)) => LogLine { time_ns, text: text.trim_end_matches('\r').to_string() },
        None => LogLine { time_ns: fallback_ns, text: line.trim_end_matches('\r').to_string() },
    }
}

impl KubernetesDeployer {
    pub fn builder() -> KubernetesDeployerBuilder {
        KubernetesDeployerBuilder {
            client: None,
            namespace: None,
            base_url: None,
            cluster_domain: "cluster.local".into(),
            options: RenderOptions::default(),
            default_base: Value::Null,
            poll_interval: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            teardown_timeout: Duration::from_secs(120),
            unschedulable_grace: None,
            log_limit_bytes: 16 << 20,
        }
    }

    /// A deployer configured by the `AUTODEBUG_K8S_*` variables, reaching the cluster of
    /// the kubeconfig (read on first use).
    pub fn from_env() -> Result<Self> {
        Self::builder().from_env()?.build()
    }

    /// Renders without a cluster: `render` works, `deploy` fails saying a cluster is needed.
    pub fn render_only() -> Self {
        let mut deployer = Self::builder().build().unwrap_or_else(|_| unreachable!("default settings are valid"));
        deployer.infer_client = false;
        deployer
    }

    /// Reads a Kubernetes manifest into a [`ServiceSpec`] (`base` = all its documents).
    pub fn base_spec_from_file(path: impl AsRef<Path>) -> Result<ServiceSpec> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        manifest::spec_from_yaml(&text, &path.display().to_string())
    }

    /// [`base_spec_from_file`](Self::base_spec_from_file) for text already read; `location` names it in errors.
    pub fn base_spec_from_yaml(text: &str, location: &str) -> Result<ServiceSpec> {
        manifest::spec_from_yaml(text, location)
    }

    /// The objects `deploy` would apply for `spec`, and what it needs to know about them.
    pub fn manifests(&self, spec: &ServiceSpec) -> Result<Rendered> {
        if spec.base.is_null() && !self.default_base.is_null() {
            let mut with_base = spec.clone();
            with_base.base = self.default_base.clone();
            return manifest::render(&with_base, &self.options);
        }
        manifest::render(spec, &self.options)
    }

    async fn client(&self) -> Result<kube::Client> {
        if let Some(client) = self.client.get() {
            return Ok(client.clone());
        }
        if !self.infer_client {
            return Err(Error::config(
                "kubeconfig",
                "this Kubernetes deployer only renders (render_only): build it with KubernetesDeployer::from_env() or .client(..) to deploy",
            ));
        }
        let client = self
            .client
            .get_or_try_init(|| async {
                let config = kube::Config::infer().await.map_err(|e| {
                    Error::config(
                        "kubeconfig",
                        format!("no Kubernetes configuration found ({e}): set KUBECONFIG or write ~/.kube/config, or run inside a cluster"),
                    )
                })?;
                kube::Client::try_from(config)
                    .map_err(|e| Error::config("kubeconfig", format!("cannot build a Kubernetes client: {e}")))
            })
            .await?;
        Ok(client.clone())
    }

    fn namespace_of(&self, deployment: &Deployment, client: &kube::Client) -> String {
        deployment
            .details
            .get("namespace")
            .cloned()
            .or_else(|| self.namespace.clone())
            .unwrap_or_else(|| client.default_namespace().to_string())
    }

    /// Label selector for everything one run applied.
    fn selector(deployment: &Deployment) -> String {
        let run = deployment.details.get("run").unwrap_or(&deployment.spec.name);
        format!("{MANAGED_BY_LABEL}={MANAGER},{RUN_LABEL}={run}")
    }

    async fn timed<T>(&self, what: &str, call: impl Future<Output = kube::Result<T>>) -> Result<kube::Result<T>> {
        tokio::time::timeout(self.request_timeout, call).await.map_err(|_| {
            Error::deploy(format!(
                "Kubernetes API: {what}: no answer within {:.0} s",
                self.request_timeout.as_secs_f64()
            ))
        })
    }

    async fn apply(&self, client: &kube::Client, namespace: &str, doc: &Value) -> Result<String> {
        let field = |name: &str| doc.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
        let (api_version, kind) = (field("apiVersion"), field("kind"));
        let name = doc.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).ok_or_else(|| {
            Error::config(format!("manifest: {kind}"), "an object without metadata.name cannot be applied")
        })?;
        if CLUSTER_SCOPED.contains(&kind.as_str()) {
            return Err(Error::config(
                format!("manifest: {kind} `{name}`"),
                "cluster-scoped objects are not applied by autodebug: apply it once yourself and remove it from the base manifest",
            ));
        }
        let namespace =
            doc.get("metadata").and_then(|m| m.get("namespace")).and_then(Value::as_str).unwrap_or(namespace);
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &api_resource(&api_version, &kind));
        let body = serde_json::to_value(doc)
            .map_err(|e| Error::config(format!("manifest: {kind} `{name}`"), format!("cannot encode as JSON: {e}")))?;
        let params = PatchParams::apply(MANAGER).force();
        let what = format!("apply {kind} `{name}` in namespace `{namespace}`");
        self.timed(&what, api.patch(name, &params, &Patch::Apply(&body))).await?.map_err(|e| api_error(&what, e))?;
        tracing::debug!(%kind, %name, %namespace, "applied");
        Ok(format!("{api_version}/{kind}"))
    }

    /// The last lines a crashed container wrote, as a quoted block (empty when unreadable).
    async fn previous_output(&self, pods: &Api<Pod>, failure: &status::PodFailure) -> String {
        let params = LogParams {
            container: failure.container.clone(),
            previous: true,
            tail_lines: Some(CRASH_OUTPUT_LINES),
            ..LogParams::default()
        };
        match self.timed("read previous log", pods.logs(&failure.pod, &params)).await {
            Ok(Ok(text)) if !text.trim().is_empty() => {
                let quoted: Vec<String> = text.lines().map(|l| format!("  | {l}")).collect();
                format!("\nlast output of the container:\n{}", quoted.join("\n"))
            }
            _ => String::new(),
        }
    }

    fn endpoint(&self, deployment: &Deployment, namespace: &str) -> Endpoint {
        let detail = |name: &str| deployment.details.get(name).cloned().unwrap_or_default();
        let service = deployment.details.get("service").cloned().unwrap_or_else(|| deployment.id.clone());
        let port = deployment.details.get("port").cloned().unwrap_or_else(|| DEFAULT_PORT.to_string());
        let url = match &self.base_url {
            Some(template) => {
                template.replace("{service}", &service).replace("{namespace}", namespace).replace("{port}", &port)
            }
            None => format!("http://{service}.{namespace}.svc.{}:{port}", self.cluster_domain),
        };
        let model = Some(detail("model")).filter(|m| !m.is_empty()).unwrap_or_else(|| deployment.spec.model.clone());
        Endpoint::new(url, model)
    }
}

#[async_trait]
impl Deployer for KubernetesDeployer {
    fn name(&self) -> &str {
        "kubernetes"
    }

    fn render(&self, spec: &ServiceSpec) -> Result<Artifact> {
        // A secret flag's value (`--api-key`) becomes `$(API_KEY)`, which Kubernetes expands from
        // the container's env, itself read from the Secret like every secret env entry.
        use autodebug_core::secret;
        let mut shown = secret::redact_spec_with(spec, |name| format!("$({})", secret::env_name_for(name)));
        for (flag, _) in spec.flags.iter().filter(|(n, v)| v.is_some() && secret::is_secret_name(n)) {
            let name = secret::env_name_for(flag);
            if !shown.env.iter().any(|(n, _)| *n == name) {
                shown.env.push((name, secret::MASK.to_string()));
            }
        }
        let rendered = self.manifests(&shown)?;
        Ok(Artifact {
            target: "kubernetes".into(),
            extension: "yaml".into(),
            content: secret::redact(&manifest::to_yaml(&shown, &rendered)?).into_owned(),
        })
    }

    async fn deploy(&self, spec: &ServiceSpec) -> Result<Deployment> {
        let rendered = self.manifests(spec)?;
        let client = self.client().await?;
        let namespace = rendered
            .namespace
            .clone()
            .or_else(|| self.namespace.clone())
            .unwrap_or_else(|| client.default_namespace().to_string());
        let started_ns = TimeWindow::now_ns();
        let mut kinds = Vec::new();
        for doc in &rendered.documents {
            let kind = self.apply(&client, &namespace, doc).await?;
            // Claims (the model cache) outlive the run, so teardown never looks for them.
            if !kind.ends_with("/PersistentVolumeClaim") && !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        tracing::info!(deployment = %rendered.deployment, %namespace, objects = rendered.documents.len(), "kubernetes objects applied");
        let mut details = BTreeMap::new();
        details.insert("namespace".into(), namespace);
        details.insert("deployment".into(), rendered.deployment.clone());
        details.insert("service".into(), rendered.service);
        details.insert("container".into(), rendered.container);
        details.insert("port".into(), rendered.service_port.to_string());
        details.insert("model".into(), rendered.served_model);
        details.insert("run".into(), spec.name.clone());
        details.insert("kinds".into(), kinds.join(","));
        Ok(Deployment {
            id: rendered.deployment,
            backend: "kubernetes".into(),
            spec: spec.clone(),
            started_ns,
            details,
        })
    }

    async fn wait_ready(&self, deployment: &Deployment, timeout: Duration) -> Result<Endpoint> {
        let client = self.client().await?;
        let namespace = self.namespace_of(deployment, &client);
        let name = &deployment.id;
        let deployments: Api<K8sDeployment> = Api::namespaced(client.clone(), &namespace);
        let pods: Api<Pod> = Api::namespaced(client, &namespace);
        let selector = ListParams::default().labels(&Self::selector(deployment));
        let started = Instant::now();
        let deadline = started + timeout;
        let mut unschedulable_since: Option<Instant> = None;
        let mut last: String;
        loop {
            let what = format!("read Deployment `{name}` in namespace `{namespace}`");
            match self.timed(&what, deployments.get(name)).await? {
                Ok(found) => match status::rollout(&found) {
                    status::Rollout::Available => {
                        let endpoint = self.endpoint(deployment, &namespace);
                        tracing::info!(deployment = %name, url = %endpoint.base_url, "kubernetes deployment ready");
                        return Ok(endpoint);
                    }
                    status::Rollout::Failed(reason) => {
                        return Err(Error::deploy(format!(
                            "Kubernetes Deployment `{name}` in namespace `{namespace}` failed: {reason}"
                        )));
                    }
                    status::Rollout::Progressing(what) => last = what,
                },
                Err(e) if is_not_found(&e) => {
                    return Err(Error::infrastructure(format!(
                        "Kubernetes Deployment `{name}` not found in namespace `{namespace}`: it was torn down or never applied"
                    )));
                }
                Err(e) if is_auth_failure(&e) => return Err(api_error(&what, e)),
                Err(e) => {
                    tracing::warn!(deployment = %name, error = %e, "could not read the deployment; retrying");
                    last = api_error(&what, e).to_string();
                }
            }
            match self.timed("list pods", pods.list(&selector)).await? {
                Ok(list) => match status::pods(&list.items) {
                    status::PodsState::Failed(failure) => {
                        // A crash is judged by the engine's own last words; a pod that never ran
                        // (an image that cannot be pulled, a bad volume) was refused as configured.
                        let (output, kind) = if failure.crashed {
                            let output = self.previous_output(&pods, &failure).await;
                            let logs: Vec<LogLine> =
                                output.lines().map(|text| LogLine { time_ns: 0, text: text.to_string() }).collect();
                            (output, start_failure_kind(&logs))
                        } else {
                            (String::new(), ErrorKind::RejectedConfig)
                        };
                        return Err(Error::Deploy {
                            message: format!(
                                "Kubernetes Deployment `{name}` in namespace `{namespace}` cannot start: {failure}{output}"
                            ),
                            kind,
                            source: None,
                        });
                    }
                    status::PodsState::Unschedulable { pod, message } => {
                        let since = *unschedulable_since.get_or_insert_with(|| {
                            tracing::warn!(%pod, %message, "pod is unschedulable; waiting (an autoscaler may add a node)");
                            Instant::now()
                        });
                        last = format!("{last}; pod `{pod}` is Unschedulable: {message}");
                        if self.unschedulable_grace.is_some_and(|grace| since.elapsed() >= grace) {
                            // No node has what the spec asks for (GPUs, memory).
                            return Err(Error::rejected(format!(
                                "Kubernetes Deployment `{name}` in namespace `{namespace}` cannot start: pod `{pod}` is Unschedulable: {message}"
                            )));
                        }
                    }
                    status::PodsState::Waiting(summary) => {
                        unschedulable_since = None;
                        last = format!("{last}; {summary}");
                    }
                },
                Err(e) if is_auth_failure(&e) => return Err(api_error("list pods", e)),
                Err(e) => {
                    tracing::warn!(deployment = %name, error = %e, "could not list pods; retrying")
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::NotReady {
                    name: name.clone(),
                    waited_s: started.elapsed().as_secs_f64(),
                    message: format!(
                        "{last}; see `kubectl -n {namespace} describe deployment {name}` and its pods' events"
                    ),
                });
            }
            tokio::time::sleep(self.poll_interval.min(deadline - now)).await;
        }
    }

    async fn logs(&self, deployment: &Deployment, since_ns: Option<i128>) -> Result<Vec<LogLine>> {
        let client = self.client().await?;
        let namespace = self.namespace_of(deployment, &client);
        let pods: Api<Pod> = Api::namespaced(client, &namespace);
        let what = format!("list pods of `{}` in namespace `{namespace}`", deployment.id);
        let mut found =
            match self.timed(&what, pods.list(&ListParams::default().labels(&Self::selector(deployment)))).await? {
                Ok(list) => list.items,
                Err(e) if is_not_found(&e) => return Ok(Vec::new()),
                Err(e) => return Err(api_error(&what, e)),
            };
        found.sort_by(|a, b| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp));
        let now = TimeWindow::now_ns();
        // The kubelet filters by whole seconds; the exact cut is made on the stamps below.
        let since_seconds = since_ns.map(|since| (((now - since).max(0) / 1_000_000_000) as i64 + 1).max(1));
        let container = deployment.details.get("container").cloned();
        let mut lines = Vec::new();
        for pod in found.iter().rev().take(MAX_LOG_PODS).rev() {
            let Some(pod_name) = pod.metadata.name.as_deref() else {
                continue;
            };
            let params = LogParams {
                container: container.clone(),
                timestamps: true,
                since_seconds,
                limit_bytes: Some(self.log_limit_bytes),
                ..LogParams::default()
            };
            let what = format!("read the log of pod `{pod_name}` in namespace `{namespace}`");
            match self.timed(&what, pods.logs(pod_name, &params)).await? {
                Ok(text) => {
                    let mut fallback = now;
                    for line in text.lines().filter(|l| !l.trim().is_empty()) {
                        let line = parse_log_line(line, fallback);
                        fallback = line.time_ns;
                        if since_ns.is_none_or(|since| line.time_ns >= since) {
                            lines.push(line);
                        }
                    }
                }
                // 404: the pod went away; 400: its container has not started yet.
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 400 => {}
                Err(e) => return Err(api_error(&what, e)),
            }
        }
        lines.sort_by_key(|l| l.time_ns);
        Ok(lines)
    }

    async fn teardown(&self, deployment: &Deployment) -> Result<()> {
        let client = self.client().await?;
        let namespace = self.namespace_of(deployment, &client);
        let selector = ListParams::default().labels(&Self::selector(deployment));
        let kinds = deployment.details.get("kinds").cloned().unwrap_or_else(|| "apps/v1/Deployment,v1/Service".into());
        for kind in kinds.split(',').filter(|k| !k.is_empty()) {
            let Some((api_version, kind)) = kind.rsplit_once('/') else {
                continue;
            };
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &namespace, &api_resource(api_version, kind));
            let what =
                format!("list {kind} objects labelled {RUN_LABEL}={} in namespace `{namespace}`", deployment.spec.name);
            let objects = match self.timed(&what, api.list(&selector)).await? {
                Ok(list) => list.items,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(api_error(&what, e)),
            };
            for object in objects {
                let Some(name) = object.metadata.name.as_deref() else {
                    continue;
                };
                let what = format!("delete {kind} `{name}` in namespace `{namespace}`");
                match self.timed(&what, api.delete(name, &DeleteParams::background())).await? {
                    Ok(_) => tracing::debug!(%kind, %name, "deleted"),
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(api_error(&what, e)),
                }
            }
        }
        // The next configuration needs the GPUs these pods hold.
        let pods: Api<Pod> = Api::namespaced(client, &namespace);
        let deadline = Instant::now() + self.teardown_timeout;
        loop {
            match self.timed("list pods", pods.list(&selector)).await? {
                Ok(list) if list.items.is_empty() => return Ok(()),
                Ok(list) => {
                    if Instant::now() >= deadline {
                        tracing::warn!(deployment = %deployment.id, pods = list.items.len(), "pods still terminating after teardown; continuing");
                        return Ok(());
                    }
                }
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) => return Err(api_error("list pods after teardown", e)),
            }
            tokio::time::sleep(self.poll_interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_keep_the_kubelet_stamp() {
        let line = parse_log_line("2025-06-01T12:00:00.123456789Z [2025] Decode batch. #running-req: 3", 7);
        assert_eq!(line.text, "[2025] Decode batch. #running-req: 3");
        assert_eq!(line.time_ns % 1_000_000_000, 123_456_789);
        assert_eq!(parse_log_line("no stamp here", 7), LogLine { time_ns: 7, text: "no stamp here".into() });
    }

    #[test]
    fn bad_base_url_names_the_variable() {
        let err = KubernetesDeployer::builder()
            .base_url("localhost:8000")
            .build()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(env_vars::BASE_URL) && err.contains("localhost:8000"), "{err}");
    }

    #[test]
    fn render_only_cannot_deploy_and_says_why() {
        let deployer = KubernetesDeployer::render_only();
        let spec = ServiceSpec::new("svc", autodebug_core::EngineKind::Vllm, "m");
        let err = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(deployer.deploy(&spec))
            .unwrap_err();
        assert!(err.to_string().contains("render_only"), "{err}");
    }
}
