//! The deployer suite: render, deploy, ready, logs, teardown, and a spec the engine refuses.

use std::time::Duration;

use super::Bounded;
use crate::{Deployer, Deployment, Error, ServiceSpec, shell_quote};

#[derive(Debug, Clone, Copy)]
pub struct DeployerConformance {
    /// Passed to `wait_ready` for the good spec (and the bad one, if it deploys).
    pub ready_timeout: Duration,
    /// Bound on every other call (`deploy`, `logs`, `teardown`), so a hang fails the suite.
    pub call_timeout: Duration,
}

impl Default for DeployerConformance {
    fn default() -> Self {
        DeployerConformance { ready_timeout: Duration::from_secs(60), call_timeout: Duration::from_secs(30) }
    }
}

/// Runs [`deployer_conformance_with`] with the default limits.
pub async fn deployer_conformance(deployer: &dyn Deployer, good: &ServiceSpec, bad: &ServiceSpec) {
    deployer_conformance_with(deployer, good, bad, DeployerConformance::default()).await
}

/// Checks the promises of [`Deployer`] with a spec that must start (`good`) and one that
/// must not (`bad`, e.g. `good` plus a flag the engine rejects):
///
/// - `render(good)` is non-empty and contains every flag (and value) of `good`;
/// - `deploy(good)` returns a deployment of this backend for exactly `good`, and
///   `wait_ready` gives an endpoint with an http(s) base URL and a model name;
/// - `logs` of a ready deployment are non-empty (polled briefly, since output may lag) and
///   honour `since_ns`;
/// - `teardown` succeeds twice; afterwards `logs` either answers or fails with a message,
///   and `wait_ready` fails instead of hanging;
/// - `deploy(bad)` or its `wait_ready` fails with an error whose message names a flag in which
///   `bad` differs from `good` (when there is one); tearing that down succeeds twice.
pub async fn deployer_conformance_with(
    deployer: &dyn Deployer,
    good: &ServiceSpec,
    bad: &ServiceSpec,
    limits: DeployerConformance,
) {
    let backend = deployer.name().to_string();
    assert!(!backend.trim().is_empty(), "Deployer::name() is empty");
    let bounded = |what: String, bound: Duration| Bounded { backend: backend.clone(), what, bound };

    // render
    let artifact = deployer.render(good).unwrap_or_else(|e| panic!("{backend}: render(good) failed: {e}"));
    assert!(!artifact.content.trim().is_empty(), "{backend}: render(good) produced an empty artifact");
    assert!(
        !artifact.target.is_empty() && !artifact.extension.is_empty(),
        "{backend}: artifact lacks target or extension: {artifact:?}"
    );
    for (flag, value) in good.flags.iter() {
        assert!(
            artifact.content.contains(flag),
            "{backend}: rendered artifact lacks flag `{flag}`:\n{}",
            artifact.content
        );
        if let Some(value) = value {
            assert!(
                artifact.content.contains(value) || artifact.content.contains(&shell_quote(value)),
                "{backend}: rendered artifact lacks the value `{value}` of `{flag}`:\n{}",
                artifact.content
            );
        }
    }

    // deploy + wait_ready
    let deployment = bounded("deploy(good)".into(), limits.call_timeout)
        .run(deployer.deploy(good))
        .await
        .unwrap_or_else(|e| panic!("{backend}: deploy(good) failed: {e}"));
    assert!(!deployment.id.is_empty(), "{backend}: deployment id is empty");
    assert_eq!(deployment.backend, backend, "{backend}: Deployment.backend differs from Deployer::name()");
    assert_eq!(&deployment.spec, good, "{backend}: Deployment.spec differs from the spec deployed");
    let endpoint = bounded("wait_ready(good)".into(), limits.ready_timeout + limits.call_timeout)
        .run(deployer.wait_ready(&deployment, limits.ready_timeout))
        .await
        .unwrap_or_else(|e| panic!("{backend}: good spec did not become ready: {e}"));
    assert!(
        endpoint.base_url.starts_with("http://") || endpoint.base_url.starts_with("https://"),
        "{backend}: endpoint base URL `{}` is not http(s)",
        endpoint.base_url
    );
    assert!(!endpoint.base_url.ends_with('/'), "{backend}: endpoint base URL `{}` ends with `/`", endpoint.base_url);
    assert!(!endpoint.model.is_empty(), "{backend}: endpoint model name is empty");

    // logs
    let mut lines = Vec::new();
    for _ in 0..50 {
        lines = bounded("logs(ready deployment)".into(), limits.call_timeout)
            .run(deployer.logs(&deployment, None))
            .await
            .unwrap_or_else(|e| panic!("{backend}: logs of a ready deployment failed: {e}"));
        if !lines.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!lines.is_empty(), "{backend}: a ready deployment has no log lines after 5 s");
    let since = lines[lines.len() / 2].time_ns;
    let later = bounded("logs(since)".into(), limits.call_timeout)
        .run(deployer.logs(&deployment, Some(since)))
        .await
        .unwrap_or_else(|e| panic!("{backend}: logs(since) failed: {e}"));
    assert!(!later.is_empty(), "{backend}: logs(since = a line's own stamp) lost that line");
    if let Some(early) = later.iter().find(|l| l.time_ns < since) {
        panic!("{backend}: logs(since {since}) returned a line stamped {}: {}", early.time_ns, early.text);
    }

    // teardown, twice
    teardown_twice(deployer, &deployment, "good", bounded("teardown(good)".into(), limits.call_timeout)).await;
    match bounded("logs after teardown".into(), limits.call_timeout).run(deployer.logs(&deployment, None)).await {
        Ok(_) => {}
        Err(e) => assert!(!e.to_string().trim().is_empty(), "{backend}: logs after teardown failed without a message"),
    }
    let after = bounded("wait_ready after teardown".into(), limits.call_timeout)
        .run(deployer.wait_ready(&deployment, Duration::from_secs(5)))
        .await;
    assert!(after.is_err(), "{backend}: wait_ready of a torn-down deployment succeeded: {after:?}");

    // bad spec
    let differing: Vec<&str> =
        bad.flags.iter().filter(|(name, value)| good.flags.get(name) != Some(*value)).map(|(name, _)| name).collect();
    let check_cause = |stage: &str, error: &Error| {
        let message = error.to_string();
        assert!(!message.trim().is_empty(), "{backend}: {stage} of the bad spec failed with an empty message");
        if !differing.is_empty() {
            assert!(
                differing.iter().any(|flag| message.contains(flag)),
                "{backend}: the error from {stage} of the bad spec names none of the flags that make it bad \
                 ({differing:?}):\n{message}"
            );
        }
    };
    match bounded("deploy(bad)".into(), limits.call_timeout).run(deployer.deploy(bad)).await {
        Err(error) => check_cause("deploy", &error),
        Ok(bad_deployment) => {
            let ready = bounded("wait_ready(bad)".into(), limits.ready_timeout + limits.call_timeout)
                .run(deployer.wait_ready(&bad_deployment, limits.ready_timeout))
                .await;
            match ready {
                Ok(endpoint) => {
                    let _ = deployer.teardown(&bad_deployment).await;
                    panic!("{backend}: the bad spec became ready at {}", endpoint.base_url);
                }
                Err(error) => check_cause("wait_ready", &error),
            }
            teardown_twice(deployer, &bad_deployment, "bad", bounded("teardown(bad)".into(), limits.call_timeout))
                .await;
        }
    }
}

async fn teardown_twice(deployer: &dyn Deployer, deployment: &Deployment, label: &str, bounded: Bounded) {
    for round in ["first", "second"] {
        bounded
            .run(deployer.teardown(deployment))
            .await
            .unwrap_or_else(|e| panic!("{}: {round} teardown of the {label} deployment failed: {e}", bounded.backend));
    }
}
