//! The hold phase: thousands of streams open at once, then all read to the end; and the descriptor limit it needs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::SelfCheckOptions;
use super::measure::{HoldGate, Tally, chat_body, lock, one_stream};
use crate::wire::WireClient;

/// Raises the soft `RLIMIT_NOFILE` towards `wanted` (the hard limit too, when privileged);
/// returns the soft limit in force afterwards.
pub(super) fn raise_fd_limit(wanted: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit read and write one plain-data struct that we own.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    let current = limit.rlim_cur as u64;
    if current >= wanted {
        return current;
    }
    let raised =
        libc::rlimit { rlim_cur: wanted as libc::rlim_t, rlim_max: limit.rlim_max.max(wanted as libc::rlim_t) };
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return wanted;
    }
    let to_hard = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &to_hard) } == 0 {
        return limit.rlim_max as u64;
    }
    current
}

pub(super) struct HoldFigures {
    pub(super) opened: usize,
    pub(super) held: usize,
    pub(super) errors: BTreeMap<&'static str, u64>,
}

pub(super) async fn hold_phase(client: &Arc<WireClient>, options: &SelfCheckOptions, streams: usize) -> HoldFigures {
    if streams == 0 {
        return HoldFigures { opened: 0, held: 0, errors: BTreeMap::new() };
    }
    let (release, release_rx) = tokio::sync::watch::channel(false);
    let gate = Arc::new(HoldGate { opened: AtomicUsize::new(0), resolved: AtomicUsize::new(0), release: release_rx });
    let tally = Arc::new(Mutex::new(Tally::default()));
    let completed = Arc::new(AtomicU64::new(0));
    // Connects in waves: a burst of thousands of SYNs overflows even a large accept queue.
    let connecting = Arc::new(tokio::sync::Semaphore::new(256));
    let mut streams_set = JoinSet::new();
    for index in 0..streams {
        let (client, gate, tally, completed, connecting) =
            (client.clone(), gate.clone(), tally.clone(), completed.clone(), connecting.clone());
        let timeout = options.request_timeout;
        streams_set.spawn(async move {
            let permit = connecting.acquire_owned().await.ok();
            let result = one_stream(&client, chat_body(8, 8, index), timeout, Some(&gate), permit).await;
            if result.error.is_none() {
                completed.fetch_add(1, Ordering::Relaxed);
            }
            lock(&tally).add(&result, false);
        });
    }
    let deadline = Instant::now() + options.phase_limit;
    while gate.resolved.load(Ordering::Acquire) < streams && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let opened_at_once = gate.opened.load(Ordering::Acquire);
    tokio::time::sleep(options.hold_for).await;
    let _ = release.send(true);
    let finish_by = Instant::now() + options.phase_limit;
    while !streams_set.is_empty() {
        match tokio::time::timeout_at(finish_by.into(), streams_set.join_next()).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                streams_set.abort_all();
                break;
            }
        }
    }
    let tally = std::mem::take(&mut *lock(&tally));
    let completed = completed.load(Ordering::Relaxed) as usize;
    // Held means open together *and* read to the end without an error afterwards.
    HoldFigures { opened: opened_at_once, held: opened_at_once.min(completed), errors: tally.errors }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_limit_is_at_least_what_was_in_force() {
        let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        assert!(raise_fd_limit(64) >= (limit.rlim_cur as u64).min(64));
    }
}
