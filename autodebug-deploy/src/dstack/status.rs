//! What a dstack run's state means for autodebug: ready (running, every probe's
//! `success_streak >= ready_after`), still coming up, or failed with dstack's own reason.

use super::api::{JobSubmission, Run};

/// Final job submission states. `terminating` is not one: dstack writes the final
/// `status_message` (such as `no fleets`) only when the job reaches `failed`, a few seconds later.
const FINISHED_JOB: &[&str] = &["terminated", "aborted", "failed", "done"];
/// Final run states.
const FINISHED_RUN: &[&str] = &["terminated", "failed", "done"];

#[derive(Debug, Clone, PartialEq)]
pub enum Readiness {
    /// Running with all probes passing; the service URL (full URL or server-relative path).
    Ready { service_url: String },
    /// Not yet: a short description such as `provisioning` or `running; probes 1/2`.
    Pending(String),
    /// Will not become ready: dstack's reason, e.g. `no fleets (failed_to_start_due_to_no_capacity: ...)`.
    Failed(String),
}

fn latest(job: &super::api::Job) -> Option<&JobSubmission> {
    job.job_submissions.last()
}

/// `no fleets (job failed_to_start_due_to_no_capacity: No matching fleet found...; run job_failed)`.
fn describe_failure(run: &Run, submission: Option<&JobSubmission>) -> String {
    let mut headline = String::new();
    let mut details = Vec::new();
    if let Some(s) = submission {
        headline = if s.status_message.is_empty() { s.status.clone() } else { s.status_message.clone() };
        if let Some(reason) = &s.termination_reason {
            match &s.termination_reason_message {
                Some(message) if !message.is_empty() => details.push(format!("job {reason}: {message}")),
                _ => details.push(format!("job {reason}")),
            }
        }
        if let Some(code) = s.exit_status {
            details.push(format!("exit status {code}"));
        }
        if let Some(error) = s.error.as_ref().filter(|e| !e.is_empty()) {
            details.push(format!("job error: {error}"));
        }
    }
    if headline.is_empty() || headline == "failed" || headline == "terminated" {
        let run_message = if run.status_message.is_empty() { &run.status } else { &run.status_message };
        if headline.is_empty() {
            headline = run_message.clone();
        }
    }
    if let Some(reason) = &run.termination_reason {
        details.push(format!("run {reason}"));
    }
    if let Some(error) = run.error.as_ref().filter(|e| !e.is_empty()) {
        details.push(format!("run error: {error}"));
    }
    if details.is_empty() { headline } else { format!("{headline} ({})", details.join("; ")) }
}

/// Judges a run as `/runs/get` returns it.
pub fn assess(run: &Run) -> Readiness {
    // A failed job fails the run, but the run may still read `terminating` for a while:
    // report the job's final reason at once.
    for job in &run.jobs {
        if let Some(s) = latest(job).filter(|s| FINISHED_JOB.contains(&s.status.as_str())) {
            return Readiness::Failed(describe_failure(run, Some(s)));
        }
    }
    if FINISHED_RUN.contains(&run.status.as_str()) {
        let submission = run.jobs.iter().filter_map(latest).next().or(run.latest_job_submission.as_ref());
        return Readiness::Failed(describe_failure(run, submission));
    }
    if let Some(s) = run.jobs.iter().filter_map(latest).find(|s| s.status == "terminating") {
        let reason = s.termination_reason.as_deref().unwrap_or("no reason yet");
        return Readiness::Pending(format!("terminating ({reason})"));
    }
    if run.status != "running" {
        let message = if run.status_message.is_empty() { &run.status } else { &run.status_message };
        return Readiness::Pending(message.clone());
    }
    let mut waiting = Vec::new();
    for job in &run.jobs {
        let Some(s) = latest(job) else {
            waiting.push(format!("{}: no submission yet", job.job_spec.job_name));
            continue;
        };
        if s.status != "running" {
            waiting.push(format!("{}: {}", job.job_spec.job_name, s.status));
            continue;
        }
        let total = job.job_spec.probes.len();
        let passing = job
            .job_spec
            .probes
            .iter()
            .enumerate()
            .filter(|(i, spec)| s.probes.get(*i).is_some_and(|p| p.success_streak >= spec.ready_after))
            .count();
        if passing < total {
            waiting.push(format!("{}: running; probes ready {passing}/{total}", job.job_spec.job_name));
        }
    }
    if run.jobs.is_empty() {
        waiting.push("no jobs yet".into());
    }
    match (&run.service, waiting.is_empty()) {
        (Some(service), true) => Readiness::Ready { service_url: service.url.clone() },
        (None, true) => Readiness::Pending("running; the server has not published the service URL yet".into()),
        (_, false) => Readiness::Pending(waiting.join(", ")),
    }
}

/// The service's base URL: `service_url` when it is a full URL (gateway), otherwise the path
/// joined to the server URL. No trailing slash, no `/v1`.
pub fn service_base_url(server_url: &str, service_url: &str) -> String {
    let joined = if service_url.starts_with("http://") || service_url.starts_with("https://") {
        service_url.to_string()
    } else {
        format!("{}/{}", server_url.trim_end_matches('/'), service_url.trim_start_matches('/'))
    };
    joined.trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(value: serde_json::Value) -> Run {
        serde_json::from_value(value).unwrap()
    }

    fn job(status: &str, streaks: &[u32], ready_after: &[u32]) -> serde_json::Value {
        serde_json::json!({
            "job_spec": {"job_name": "svc-0-0", "probes": ready_after.iter().map(|r| serde_json::json!({"url": "/health", "ready_after": r})).collect::<Vec<_>>()},
            "job_submissions": [{"id": "a", "status": status, "status_message": status,
                "probes": streaks.iter().map(|s| serde_json::json!({"success_streak": s})).collect::<Vec<_>>()}]
        })
    }

    #[test]
    fn running_with_probes_below_ready_after_is_pending() {
        let r = run(
            serde_json::json!({"status": "running", "jobs": [job("running", &[1], &[2])], "service": {"url": "/proxy/services/main/svc/"}}),
        );
        assert_eq!(assess(&r), Readiness::Pending("svc-0-0: running; probes ready 0/1".into()));
        let r = run(
            serde_json::json!({"status": "running", "jobs": [job("running", &[2, 5], &[2, 1])], "service": {"url": "/proxy/services/main/svc/"}}),
        );
        assert_eq!(assess(&r), Readiness::Ready { service_url: "/proxy/services/main/svc/".into() });
    }

    #[test]
    fn a_terminating_job_is_not_final_yet() {
        let mut j = job("terminating", &[], &[2]);
        j["job_submissions"][0]["termination_reason"] = "failed_to_start_due_to_no_capacity".into();
        let r = run(serde_json::json!({"status": "submitted", "jobs": [j]}));
        assert_eq!(assess(&r), Readiness::Pending("terminating (failed_to_start_due_to_no_capacity)".into()));
    }

    #[test]
    fn a_failed_job_fails_before_the_run_does() {
        let mut j = job("failed", &[], &[2]);
        j["job_submissions"][0]["status_message"] = "no fleets".into();
        j["job_submissions"][0]["termination_reason"] = "failed_to_start_due_to_no_capacity".into();
        j["job_submissions"][0]["termination_reason_message"] = "No matching fleet found.".into();
        let r = run(serde_json::json!({"status": "terminating", "termination_reason": "job_failed", "jobs": [j]}));
        let Readiness::Failed(reason) = assess(&r) else { panic!("not failed") };
        assert!(
            reason.starts_with("no fleets (job failed_to_start_due_to_no_capacity: No matching fleet found."),
            "{reason}"
        );
        assert!(reason.contains("run job_failed"), "{reason}");
    }

    #[test]
    fn service_url_path_or_full_url() {
        assert_eq!(
            service_base_url("http://127.0.0.1:3000/", "/proxy/services/main/svc/"),
            "http://127.0.0.1:3000/proxy/services/main/svc"
        );
        assert_eq!(
            service_base_url("http://127.0.0.1:3000", "https://svc.gw.example.com/"),
            "https://svc.gw.example.com"
        );
    }
}
