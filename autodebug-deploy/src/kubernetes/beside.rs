//! What a benchmark beside a Kubernetes service is: a `batch/v1` Job pinned to the node of the
//! service's pod (`nodeName`), one pod that runs the command once (`backoffLimit: 0`, `restartPolicy:
//! Never`), bounded by `activeDeadlineSeconds`, its token read from a Secret by reference so the
//! value is in neither the Job nor the pod's command line.
//!
//! Rendered only, for now: [`KubernetesDeployer`](super::KubernetesDeployer) does not yet apply
//! these objects (its `run_beside` refuses), so this is what it would submit, checked against the
//! real API types in the tests.

use autodebug_core::Result;
use autodebug_core::beside::BesideCommand;
use serde_yaml::{Mapping, Value};

use super::manifest::{MANAGED_BY_LABEL, MANAGER, RUN_LABEL};

/// The label that tells a benchmark Job from the service's own objects.
pub const ROLE_LABEL: &str = "autodebug/role";

/// The objects of one benchmark beside a service: the Job and, when the command carries
/// secrets, the Secret it reads them from.
#[derive(Debug, Clone)]
pub struct BesideJob {
    /// The `batch/v1` Job.
    pub job: Value,
    /// The `v1` Secret its pod reads the command's environment from; none without secrets.
    pub secret: Option<Value>,
}

impl BesideJob {
    /// The objects as multi-document YAML (Secret first: the Job's pod needs it to start).
    pub fn to_yaml(&self) -> Result<String> {
        let mut docs = Vec::new();
        for doc in self.secret.iter().chain([&self.job]) {
            docs.push(serde_yaml::to_string(doc).map_err(|e| {
                autodebug_core::Error::config("kubernetes beside job", format!("cannot be written as YAML: {e}"))
            })?);
        }
        Ok(docs.join("---\n"))
    }
}

fn map(entries: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    Value::Mapping(entries.into_iter().map(|(k, v)| (Value::from(k), v)).collect::<Mapping>())
}

fn strings(items: impl IntoIterator<Item = String>) -> Value {
    Value::Sequence(items.into_iter().map(Value::from).collect())
}

/// The Job (and Secret) that runs `command` with image `image` on `node`, beside the service of
/// run `run` that answers at `service_url` from there (the pod's own address). `reveal` writes the
/// secret values in (the objects applied); otherwise they are `***` (the trail's copy).
pub fn beside_job(
    run: &str,
    node: &str,
    image: &str,
    service_url: &str,
    command: &BesideCommand,
    reveal: bool,
) -> BesideJob {
    // Job names also label their pods (`job-name`), so they stay within a label's 63 characters.
    let mut name: String = format!("{run}-bench").chars().take(63).collect();
    while name.ends_with('-') {
        name.pop();
    }
    let secret_name: String = format!("{}-token", name.chars().take(57).collect::<String>());
    let labels = || {
        map([
            (MANAGED_BY_LABEL, Value::from(MANAGER)),
            (RUN_LABEL, Value::from(run)),
            (ROLE_LABEL, Value::from("bench")),
        ])
    };
    let env: Vec<Value> = command
        .env
        .iter()
        .map(|(key, _)| {
            map([
                ("name", Value::from(key.as_str())),
                (
                    "valueFrom",
                    map([(
                        "secretKeyRef",
                        map([("name", Value::from(secret_name.as_str())), ("key", Value::from(key.as_str()))]),
                    )]),
                ),
            ])
        })
        .collect();
    let mut container = vec![
        ("name", Value::from("bench")),
        ("image", Value::from(image)),
        ("command", strings([command.program.to_string_lossy().into_owned()])),
        ("args", strings(command.args_for(service_url))),
    ];
    if !env.is_empty() {
        container.push(("env", Value::Sequence(env)));
    }
    let deadline = command.timeout.as_secs().max(1);
    let job = map([
        ("apiVersion", Value::from("batch/v1")),
        ("kind", Value::from("Job")),
        ("metadata", map([("name", Value::from(name.as_str())), ("labels", labels())])),
        (
            "spec",
            map([
                ("backoffLimit", Value::from(0)),
                ("activeDeadlineSeconds", Value::from(deadline)),
                ("ttlSecondsAfterFinished", Value::from(600)),
                (
                    "template",
                    map([
                        ("metadata", map([("labels", labels())])),
                        (
                            "spec",
                            map([
                                ("nodeName", Value::from(node)),
                                ("restartPolicy", Value::from("Never")),
                                ("containers", Value::Sequence(vec![map(container)])),
                            ]),
                        ),
                    ]),
                ),
            ]),
        ),
    ]);
    let secret = (!command.env.is_empty()).then(|| {
        let data = command
            .env
            .iter()
            .map(|(key, value)| {
                let shown = if reveal { value.expose() } else { autodebug_core::secret::MASK };
                (Value::from(key.as_str()), Value::from(shown))
            })
            .collect::<Mapping>();
        map([
            ("apiVersion", Value::from("v1")),
            ("kind", Value::from("Secret")),
            ("metadata", map([("name", Value::from(secret_name.as_str())), ("labels", labels())])),
            ("type", Value::from("Opaque")),
            ("stringData", Value::Mapping(data)),
        ])
    });
    BesideJob { job, secret }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use autodebug_core::Secret;
    use autodebug_core::beside::{BenchBeside, TOKEN_ENV};
    use autodebug_core::{BenchPlan, Endpoint, Load, Workload};
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Secret as K8sSecret;

    use super::*;

    #[test]
    fn the_bench_job_is_a_real_job_on_the_service_node_with_the_token_by_reference() {
        let canary = "canary-k8s-beside-2c9f";
        let plan = BenchPlan::new("chat", Workload::new(16, 16), Load::Sequential, 4);
        let endpoint = Endpoint { token: Some(Secret::new(canary)), ..Endpoint::new("http://svc:8000", "qwen") };
        let mut command = BenchBeside::new("/usr/local/bin/autodebug").command(&plan, &endpoint).unwrap();
        command.timeout = Duration::from_secs(900);
        let rendered =
            beside_job("qwen-s1", "gpu-node-3", "ghcr.io/acme/autodebug:1", "http://10.1.2.3:8000", &command, false);

        let yaml = rendered.to_yaml().unwrap();
        assert!(!yaml.contains(canary), "{yaml}");
        let job: Job = serde_yaml::from_value(rendered.job.clone()).expect("a batch/v1 Job");
        let spec = job.spec.expect("spec");
        assert_eq!((spec.backoff_limit, spec.active_deadline_seconds), (Some(0), Some(900)));
        let pod = spec.template.spec.expect("pod spec");
        assert_eq!(pod.node_name.as_deref(), Some("gpu-node-3"), "pinned to the service pod's node");
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let container = &pod.containers[0];
        assert_eq!(container.command.as_deref(), Some(&["/usr/local/bin/autodebug".to_string()][..]));
        let args = container.args.clone().unwrap();
        assert!(args.windows(2).any(|w| w[0] == "--url" && w[1] == "http://10.1.2.3:8000"), "{args:?}");
        let env = container.env.clone().unwrap();
        let reference = env[0].value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).expect("by reference");
        assert_eq!((env[0].name.as_str(), reference.key.as_str()), (TOKEN_ENV, TOKEN_ENV));
        assert!(env[0].value.is_none(), "the value itself is in the Secret");
        let labels = job.metadata.labels.unwrap();
        assert_eq!(labels[RUN_LABEL], "qwen-s1");
        assert_eq!(job.metadata.name.as_deref(), Some("qwen-s1-bench"));

        let secret: K8sSecret = serde_yaml::from_value(rendered.secret.clone().unwrap()).expect("a v1 Secret");
        assert_eq!(secret.metadata.name.as_deref(), Some(reference.name.as_str()));
        assert_eq!(secret.string_data.unwrap()[TOKEN_ENV], "***");
        let applied = beside_job("qwen-s1", "gpu-node-3", "img", "http://10.1.2.3:8000", &command, true);
        let secret: K8sSecret = serde_yaml::from_value(applied.secret.unwrap()).unwrap();
        assert_eq!(secret.string_data.unwrap()[TOKEN_ENV], canary, "the applied Secret carries the value");
        let long = beside_job(&"r".repeat(70), "n", "img", "http://x:1", &command, false);
        let name = long.job["metadata"]["name"].as_str().unwrap().to_string();
        assert!(name.len() <= 63, "{name}");
    }
}
