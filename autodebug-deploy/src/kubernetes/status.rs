//! Reading readiness and failure out of a Deployment's status and its pods, the way
//! `kubectl rollout status` and `kubectl describe pod` would.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// Container waiting reasons that will not clear up by waiting: the pod must change first.
pub const FATAL_WAITING_REASONS: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "PreCreateHookError",
    "PostStartHookError",
];

/// How far a Deployment's rollout has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Every wanted replica runs the current template and is available.
    Available,
    /// Still rolling out; what it waits for.
    Progressing(String),
    /// The controller gave up (progress deadline, replica failure); its reason and message.
    Failed(String),
}

/// The rollout state of `deployment`, after `kubectl rollout status`.
pub fn rollout(deployment: &Deployment) -> Rollout {
    let wanted = deployment.spec.replicas.unwrap_or(1);
    if wanted == 0 {
        return Rollout::Failed("the Deployment is scaled to 0 replicas".into());
    }
    let Some(status) = &deployment.status else {
        return Rollout::Progressing("the Deployment has no status yet".into());
    };
    let generation = deployment.metadata.generation.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation {
        return Rollout::Progressing(format!("waiting for the controller to observe generation {generation}"));
    }
    for condition in status.conditions.iter().flatten() {
        let reason = condition.reason.as_deref().unwrap_or("");
        let message = condition.message.as_deref().unwrap_or("");
        let (kind, state) = (condition.type_.as_deref(), condition.status.as_deref());
        if kind == Some("Progressing") && state == Some("False") && reason == "ProgressDeadlineExceeded" {
            return Rollout::Failed(format!("{reason}: {message}"));
        }
        if kind == Some("ReplicaFailure") && state == Some("True") {
            return Rollout::Failed(format!("{reason}: {message}"));
        }
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < wanted {
        Rollout::Progressing(format!("{updated} of {wanted} replicas updated"))
    } else if total > updated {
        Rollout::Progressing(format!("{} old replicas pending termination", total - updated))
    } else if available < updated {
        Rollout::Progressing(format!("{available} of {updated} updated replicas available"))
    } else {
        Rollout::Available
    }
}

/// A pod that will not become ready without a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFailure {
    pub pod: String,
    pub container: Option<String>,
    /// `CrashLoopBackOff`, `ImagePullBackOff`, `Evicted`...
    pub reason: String,
    pub message: String,
    /// How the container last ended (`Error, exit code 2`), when it did.
    pub last_exit: Option<String>,
    /// Whether the container ran and ended, so its previous output explains why.
    pub crashed: bool,
}

impl std::fmt::Display for PodFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pod `{}`", self.pod)?;
        if let Some(container) = &self.container {
            write!(f, " container `{container}`")?;
        }
        write!(f, ": {}", self.reason)?;
        if !self.message.is_empty() {
            write!(f, " ({})", self.message)?;
        }
        if let Some(exit) = &self.last_exit {
            write!(f, "; last exit: {exit}")?;
        }
        Ok(())
    }
}

/// What the pods of a deployment say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodsState {
    Failed(PodFailure),
    /// No node fits the pod (`0/3 nodes are available: 3 Insufficient nvidia.com/gpu`).
    Unschedulable {
        pod: String,
        message: String,
    },
    /// Starting; a short summary (`pod x: ContainerCreating`).
    Waiting(String),
}

fn last_exit(status: &ContainerStatus) -> Option<String> {
    let terminated = status.last_state.as_ref()?.terminated.as_ref()?;
    Some(format!(
        "{}, exit code {}{}",
        terminated.reason.as_deref().unwrap_or("terminated"),
        terminated.exit_code,
        terminated.message.as_deref().map(|m| format!(": {}", m.trim())).unwrap_or_default()
    ))
}

/// Looks through `pods` (terminating ones are ignored) for a reason they cannot start.
pub fn pods(pods: &[Pod]) -> PodsState {
    let live: Vec<&Pod> = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    if live.is_empty() {
        return PodsState::Waiting("no pods yet".into());
    }
    let mut unschedulable = None;
    let mut summary = Vec::new();
    for pod in live {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(status) = &pod.status else {
            summary.push(format!("pod `{name}`: no status yet"));
            continue;
        };
        if status.phase.as_deref() == Some("Failed") {
            return PodsState::Failed(PodFailure {
                pod: name,
                container: None,
                reason: status.reason.clone().unwrap_or_else(|| "Failed".into()),
                message: status.message.clone().unwrap_or_default(),
                last_exit: None,
                crashed: false,
            });
        }
        let containers =
            status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
        let mut waiting_on = Vec::new();
        for container in containers {
            let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
                continue;
            };
            let reason = waiting.reason.clone().unwrap_or_default();
            if FATAL_WAITING_REASONS.contains(&reason.as_str()) {
                let exit = last_exit(container);
                return PodsState::Failed(PodFailure {
                    pod: name,
                    container: Some(container.name.clone()),
                    crashed: exit.is_some() || container.restart_count > 0,
                    reason,
                    message: waiting.message.clone().unwrap_or_default(),
                    last_exit: exit,
                });
            }
            waiting_on.push(format!("{} {reason}", container.name));
        }
        let not_scheduled =
            status.conditions.iter().flatten().find(|c| {
                c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
            });
        if let Some(condition) = not_scheduled {
            unschedulable.get_or_insert_with(|| (name.clone(), condition.message.clone().unwrap_or_default()));
        }
        let phase = status.phase.as_deref().unwrap_or("Unknown");
        summary.push(if waiting_on.is_empty() {
            format!("pod `{name}`: {phase}")
        } else {
            format!("pod `{name}`: {phase}, waiting: {}", waiting_on.join(", "))
        });
    }
    match unschedulable {
        Some((pod, message)) => PodsState::Unschedulable { pod, message },
        None => PodsState::Waiting(summary.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(json: serde_json::Value) -> Deployment {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn rollout_follows_kubectl() {
        let base = |status: serde_json::Value| {
            deployment(serde_json::json!({
                "metadata": {"name": "d", "generation": 2},
                "spec": {"replicas": 1, "selector": {}, "template": {}},
                "status": status
            }))
        };
        assert!(
            matches!(rollout(&base(serde_json::json!({"observedGeneration": 1}))), Rollout::Progressing(m) if m.contains("generation 2"))
        );
        assert!(matches!(
            rollout(&base(serde_json::json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1}))),
            Rollout::Progressing(m) if m.contains("old replicas")
        ));
        assert_eq!(
            rollout(&base(
                serde_json::json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1})
            )),
            Rollout::Available
        );
        let failed = base(serde_json::json!({"observedGeneration": 2, "conditions": [
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "exceeded quota: gpu-quota"}
        ]}));
        assert!(
            matches!(rollout(&failed), Rollout::Failed(m) if m.contains("FailedCreate") && m.contains("gpu-quota"))
        );
    }

    #[test]
    fn terminating_pods_are_ignored_and_unschedulable_is_reported() {
        let pods: Vec<Pod> = serde_json::from_value(serde_json::json!([
            {"metadata": {"name": "old", "deletionTimestamp": "2025-01-01T00:00:00Z"},
             "status": {"phase": "Running", "containerStatuses": [{"name": "engine", "image": "i", "imageID": "", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}},
            {"metadata": {"name": "new"},
             "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}]}}
        ]))
        .unwrap();
        assert_eq!(
            super::pods(&pods),
            PodsState::Unschedulable {
                pod: "new".into(),
                message: "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.".into()
            }
        );
    }
}
