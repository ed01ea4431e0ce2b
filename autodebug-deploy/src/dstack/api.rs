//! The dstack server REST API, the one the dstack CLI itself uses: every call is a POST with a
//! JSON body and `Authorization: Bearer <token>`. Only the fields autodebug reads are typed;
//! everything else in a response is ignored, so newer servers keep working.

use std::time::Duration;

use autodebug_core::{Error, Result};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::connection::Connection;

/// A run as `/runs/get` and `/runs/apply` return it (the fields autodebug needs).
#[derive(Debug, Clone, Deserialize)]
pub struct Run {
    pub status: String,
    /// When the server's run pipeline last processed the run. That pipeline also stamps each job
    /// of the run it processed with the same time, without pulling the job's output.
    #[serde(default)]
    pub last_processed_at: Option<String>,
    #[serde(default)]
    pub status_message: String,
    #[serde(default)]
    pub termination_reason: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub jobs: Vec<Job>,
    #[serde(default)]
    pub latest_job_submission: Option<JobSubmission>,
    #[serde(default)]
    pub service: Option<Service>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    pub job_spec: JobSpec,
    #[serde(default)]
    pub job_submissions: Vec<JobSubmission>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct JobSpec {
    #[serde(default)]
    pub job_name: String,
    #[serde(default)]
    pub probes: Vec<ProbeSpec>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProbeSpec {
    pub ready_after: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct JobSubmission {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub status_message: String,
    #[serde(default)]
    pub termination_reason: Option<String>,
    #[serde(default)]
    pub termination_reason_message: Option<String>,
    #[serde(default)]
    pub exit_status: Option<i64>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub probes: Vec<Probe>,
    /// When the server last processed the job. For a running job a pass pulls the runner's new
    /// output, but a pass that cannot reach the runner pulls nothing and still advances this: only
    /// together with the job's reachability events does it say the output was pulled.
    #[serde(default)]
    pub last_processed_at: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Probe {
    pub success_streak: u32,
}

/// `run.service`: `url` is a full URL behind a gateway, otherwise a path on the server.
#[derive(Debug, Clone, Deserialize)]
pub struct Service {
    pub url: String,
}

/// What `/runs/get_plan` answers (the fields autodebug needs; `current_resource` is passed back
/// to `/runs/apply` untouched).
#[derive(Debug, Clone, Deserialize)]
pub struct RunPlan {
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub current_resource: Value,
    #[serde(default)]
    pub job_plans: Vec<JobPlan>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct JobPlan {
    #[serde(default)]
    pub total_offers: u64,
}

/// One page of `/logs/poll`; `message` is base64 of the raw output bytes.
#[derive(Debug, Clone, Deserialize)]
pub struct LogPage {
    #[serde(default)]
    pub logs: Vec<LogEvent>,
    #[serde(default)]
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogEvent {
    pub timestamp: String,
    pub message: String,
}

/// One entry of `/api/events/list` (dstack's audit events: a job becoming unreachable, ready, ...).
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub message: String,
}

/// A dstack API client for one server and project.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    connection: Connection,
}

/// Joins the messages of a dstack error body: `{"detail": [{"msg", "code"}]}` or `{"detail": {"msg"}}`.
fn error_detail(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return body.trim().chars().take(500).collect();
    };
    let detail = &value["detail"];
    let items: Vec<&Value> = match detail {
        Value::Array(items) => items.iter().collect(),
        Value::Null => return body.trim().chars().take(500).collect(),
        other => vec![other],
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => s.clone(),
            _ => {
                let msg = item["msg"].as_str().unwrap_or("").to_string();
                match item["code"].as_str() {
                    Some(code) if !code.is_empty() && !msg.contains(code) => {
                        format!("{msg} ({code})")
                    }
                    _ => msg,
                }
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Client {
    pub fn new(connection: Connection, request_timeout: Duration) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| {
                Error::infrastructure(format!("cannot build an HTTP client for {}: {e}", connection.url)).caused_by(e)
            })?;
        Ok(Client { http, connection })
    }

    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    async fn post<T: DeserializeOwned>(&self, url: String, body: &Value) -> Result<T> {
        let response =
            self.http.post(&url).bearer_auth(self.connection.token.expose()).json(body).send().await.map_err(|e| {
                Error::deploy(format!(
                    "cannot reach the dstack server at {url}: {e}; check that `dstack server` runs there (or fix {})",
                    super::connection::env_vars::SERVER_URL
                ))
                .caused_by(e)
            })?;
        let status = response.status();
        let text = read_capped(response, &url).await?;
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(Error::config(
                super::connection::env_vars::TOKEN,
                format!(
                    "the dstack server at {url} refused the token ({status}: {}); set {} or fix the project's token in ~/.dstack/config.yml",
                    error_detail(&text),
                    super::connection::env_vars::TOKEN
                ),
            ));
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(Error::config(
                super::connection::env_vars::PROJECT,
                format!(
                    "{url}: {} (404); check the project name `{}` and the server URL",
                    error_detail(&text),
                    self.connection.project
                ),
            ));
        }
        if !status.is_success() {
            let message = format!("dstack server {url} answered {status}: {}", error_detail(&text));
            // A 4xx is the server refusing what was asked (a run spec it cannot take); a 5xx may pass.
            return Err(if status.is_server_error() { Error::deploy(message) } else { Error::rejected(message) });
        }
        // Some calls (`/runs/stop`) answer `null`: `T = Value` takes it as is.
        serde_json::from_str(&text).map_err(|e| {
            Error::infrastructure(format!(
                "dstack server {url} answered something autodebug cannot read ({e}); is it a dstack server?"
            ))
            .caused_by(e)
        })
    }

    /// `/api/server/get_info`: the server version.
    pub async fn server_version(&self) -> Result<String> {
        let info: Value = self.post(format!("{}/api/server/get_info", self.connection.url), &json!({})).await?;
        Ok(info["server_version"].as_str().unwrap_or("unknown").to_string())
    }

    /// GET `url` with the connection's token; `Ok(status)` when anything answered. The proxy of a
    /// service that was just marked running answers 404 "Service ... not found" for a few seconds.
    pub async fn probe(&self, url: &str) -> Result<u16> {
        let answer = self
            .http
            .get(url)
            .bearer_auth(self.connection.token.expose())
            .send()
            .await
            .map_err(|e| Error::deploy(format!("{url}: {e}")).caused_by(e))?;
        Ok(answer.status().as_u16())
    }

    /// `/fleets/list`: how many fleets the project has.
    pub async fn fleet_count(&self) -> Result<usize> {
        let fleets: Vec<Value> = self.post(self.connection.project_url("fleets/list"), &json!({})).await?;
        Ok(fleets.len())
    }

    /// `/runs/get_plan` with `{run_spec: {run_name, configuration}}`.
    pub async fn get_plan(&self, run_spec: &Value) -> Result<RunPlan> {
        self.post(self.connection.project_url("runs/get_plan"), &json!({ "run_spec": run_spec })).await
    }

    /// `/runs/apply` with `{plan: {run_spec, current_resource}, force}`.
    pub async fn apply(&self, run_spec: &Value, current_resource: &Value, force: bool) -> Result<Run> {
        let body = json!({ "plan": { "run_spec": run_spec, "current_resource": current_resource }, "force": force });
        self.post(self.connection.project_url("runs/apply"), &body).await
    }

    /// `/runs/get` with `{run_name}`.
    pub async fn get_run(&self, run_name: &str) -> Result<Run> {
        self.post(self.connection.project_url("runs/get"), &json!({ "run_name": run_name })).await
    }

    /// `/runs/stop` with `{runs_names, abort}`.
    pub async fn stop(&self, run_name: &str, abort: bool) -> Result<()> {
        let _: Value = self
            .post(self.connection.project_url("runs/stop"), &json!({ "runs_names": [run_name], "abort": abort }))
            .await?;
        Ok(())
    }

    /// `/api/events/list` with `{target_jobs: [job_id], limit}`: the job's events, newest first
    /// (a job submission's `id` is the job's id there). Not project-scoped: the server checks
    /// that the token's user may see the job's project.
    pub async fn job_events(&self, job_id: &str, limit: u32) -> Result<Vec<Event>> {
        let body = json!({ "target_jobs": [job_id], "limit": limit, "ascending": false });
        self.post(format!("{}/api/events/list", self.connection.url), &body).await
    }

    /// `/logs/poll` with `{run_name, job_submission_id, start_time, next_token, limit}`.
    pub async fn poll_logs(
        &self,
        run_name: &str,
        job_submission_id: &str,
        start_time: Option<&str>,
        next_token: Option<&str>,
        limit: u32,
    ) -> Result<LogPage> {
        let body = json!({
            "run_name": run_name,
            "job_submission_id": job_submission_id,
            "start_time": start_time,
            "next_token": next_token,
            "limit": limit,
        });
        self.post(self.connection.project_url("logs/poll"), &body).await
    }
}

/// The most of one answer read from the server: a page of logs or a run is far smaller; more is
/// a broken or hostile server, refused before it grows memory without bound.
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// The answer's body as text, at most [`MAX_ANSWER_BYTES`].
async fn read_capped(mut response: reqwest::Response, url: &str) -> Result<String> {
    let too_large = || {
        Error::deploy(format!(
            "{url}: the answer is larger than {} MiB; is this a dstack server?",
            MAX_ANSWER_BYTES >> 20
        ))
    };
    if response.content_length().is_some_and(|n| n > MAX_ANSWER_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Error::deploy(format!("{url}: reading the answer failed: {e}")).caused_by(e))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodebug_core::Secret;

    /// A loopback server whose answer is a chunked body that never ends.
    async fn endless_server() -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await;
            let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, "x".repeat(1 << 20));
            // Bounded, so the test ends even if the client never stops reading: 64 MiB.
            for _ in 0..64 {
                if socket.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn an_endless_answer_is_refused_at_the_cap() {
        let url = endless_server().await;
        let connection = Connection { url: url.clone(), project: "main".into(), token: Secret::new("t") };
        let client = Client::new(connection, Duration::from_secs(20)).unwrap();
        let err = client.server_version().await.unwrap_err().to_string();
        assert!(err.contains("larger than 32 MiB"), "{err}");
    }

    #[test]
    fn error_bodies_in_both_shapes_are_readable() {
        assert_eq!(
            error_detail(r#"{"detail":[{"msg":"Run not found","code":"resource_not_exists"}]}"#),
            "Run not found (resource_not_exists)"
        );
        assert_eq!(error_detail(r#"{"detail":{"msg":"Invalid token","code":null}}"#), "Invalid token");
        assert_eq!(error_detail("Internal Server Error"), "Internal Server Error");
    }
}
