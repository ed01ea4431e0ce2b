//! The TTFT phases: client TTFT against the simulator's stamps, split into request and response legs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::task::JoinSet;

use super::measure::{Tally, chat_body, lock, one_stream};
use super::{SelfCheckOptions, TtftLegs, mean_and_p99};
use crate::wire::WireClient;

pub(super) struct TtftFigures {
    pub(super) errors_ms: Vec<f64>,
    pub(super) request_legs_ms: Vec<f64>,
    pub(super) response_legs_ms: Vec<f64>,
    pub(super) read_lags_ms: Vec<f64>,
    pub(super) errors: BTreeMap<&'static str, u64>,
}

impl TtftFigures {
    /// Mean and p99 of the request leg, then of the response leg, ms.
    pub(super) fn legs(&self) -> TtftLegs {
        let (request_mean_ms, request_p99_ms) = mean_and_p99(&self.request_legs_ms);
        let (response_mean_ms, response_p99_ms) = mean_and_p99(&self.response_legs_ms);
        let (read_lag_mean_ms, read_lag_p99_ms) = mean_and_p99(&self.read_lags_ms);
        TtftLegs {
            request_mean_ms,
            request_p99_ms,
            response_mean_ms,
            response_p99_ms,
            read_lag_mean_ms,
            read_lag_p99_ms,
        }
    }
}

pub(super) async fn ttft_phase(
    client: &Arc<WireClient>,
    options: &SelfCheckOptions,
    concurrency: usize,
    requests: usize,
) -> TtftFigures {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + options.phase_limit;
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        let (client, tally, next) = (client.clone(), tally.clone(), next.clone());
        let timeout = options.request_timeout;
        workers.spawn(async move {
            // One unmeasured request per worker opens its connection: TTFT must not include connects.
            let warmup = one_stream(&client, chat_body(32, 16, 1_000_000 + worker), timeout, None, None).await;
            lock(&tally).add(&warmup, false);
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= requests || Instant::now() >= deadline {
                    return;
                }
                let result = one_stream(&client, chat_body(32, 16, index), timeout, None, None).await;
                lock(&tally).add(&result, true);
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let tally = std::mem::take(&mut *lock(&tally));
    TtftFigures {
        errors_ms: tally.errors_ms,
        request_legs_ms: tally.request_legs_ms,
        response_legs_ms: tally.response_legs_ms,
        read_lags_ms: tally.read_lags_ms,
        errors: tally.errors,
    }
}
