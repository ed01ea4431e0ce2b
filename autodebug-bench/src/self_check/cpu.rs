//! The CPU phase: client and bare reader take turns over the same streams, process CPU taken around each.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::task::JoinSet;

use super::SelfCheckOptions;
use super::floor::floor_round;
use super::measure::{Tally, chat_body, lock, one_stream};
use crate::wire::WireClient;

pub(super) const CPU_CLOCK: &str = "getrusage(RUSAGE_SELF) (whole process)";

/// CPU seconds (user + system) of this whole process, every thread (children not included).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes one plain-data struct that we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

#[derive(Default)]
pub(super) struct CpuFigures {
    pub(super) events: u64,
    pub(super) content_chunks: u64,
    pub(super) cpu_s: f64,
    pub(super) wall_s: f64,
    pub(super) errors: BTreeMap<&'static str, u64>,
}

/// Output tokens of the CPU phase's streams, in turn: the lengths of ordinary benchmark
/// requests, so per-request costs (request, head, role/finish/usage chunks) weigh as they do there.
pub const CPU_STREAM_TOKENS: [u32; 4] = [64, 128, 256, 512];

/// Turns of client and bare reader in the CPU phase.
pub const CPU_ROUNDS: usize = 4;

/// The CPU phase's stream lengths per round: [`CPU_STREAM_TOKENS`] in turn (capped by
/// `cpu_tokens_per_request`, the last one cut) until they add up to `cpu_tokens`, dealt out to
/// [`CPU_ROUNDS`] rounds.
fn cpu_rounds(options: &SelfCheckOptions) -> Vec<Vec<u32>> {
    let mut rounds = vec![Vec::new(); CPU_ROUNDS];
    let mut left = options.cpu_tokens;
    let lengths = CPU_STREAM_TOKENS.iter().map(|&t| t.min(options.cpu_tokens_per_request)).cycle();
    for (i, tokens) in lengths.enumerate() {
        if left == 0 {
            break;
        }
        let tokens = u64::from(tokens).min(left);
        left -= tokens;
        rounds[i % CPU_ROUNDS].push(tokens as u32);
    }
    rounds
}

/// Runs the CPU phase on `runtime`: in each round the client streams its share, then the bare
/// reader streams the same lengths; process CPU is taken around each.
pub(super) fn cpu_phase(
    runtime: &tokio::runtime::Runtime,
    client: &Arc<WireClient>,
    authority: &str,
    options: &SelfCheckOptions,
) -> (CpuFigures, CpuFigures) {
    let deadline = Instant::now() + options.phase_limit;
    let mut totals = [CpuFigures::default(), CpuFigures::default()];
    for round in cpu_rounds(options) {
        let round = Arc::new(round);
        for (side, figures) in totals.iter_mut().enumerate() {
            let cpu_before = cpu_seconds();
            let started = Instant::now();
            let tally = if side == 0 {
                runtime.block_on(client_round(client, &round, options, deadline))
            } else {
                runtime.block_on(floor_round(authority, &round, options, deadline))
            };
            figures.wall_s += started.elapsed().as_secs_f64();
            figures.cpu_s += cpu_seconds() - cpu_before;
            figures.events += tally.events;
            figures.content_chunks += tally.content_chunks;
            for (class, count) in tally.errors {
                *figures.errors.entry(class).or_default() += count;
            }
        }
    }
    let [cpu, floor] = totals;
    (cpu, floor)
}

/// The client's share of a round: `cpu_streams` workers take the round's streams in order.
async fn client_round(
    client: &Arc<WireClient>,
    round: &Arc<Vec<u32>>,
    options: &SelfCheckOptions,
    deadline: Instant,
) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..options.cpu_streams.min(round.len()) {
        let (client, tally, next, round) = (client.clone(), tally.clone(), next.clone(), round.clone());
        let timeout = options.request_timeout;
        workers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(&tokens) = round.get(index) else { return };
                if Instant::now() >= deadline {
                    return;
                }
                let result = one_stream(&client, chat_body(16, tokens, index), timeout, None, None).await;
                lock(&tally).add(&result, true);
            }
        });
    }
    while workers.join_next().await.is_some() {}
    std::mem::take(&mut *lock(&tally))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn process_cpu_clock_advances_with_work() {
        let before = cpu_seconds();
        let mut x = 0u64;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds() > before);
    }
}
