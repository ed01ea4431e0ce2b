//! The real-time clock: the engine model runs on its own OS thread and each step takes as long in
//! wall time as the model says it takes.
//!
//! The thread keeps an accumulated schedule of absolute deadlines, so the overshoot of one
//! `std::thread::sleep` is absorbed by the next step instead of adding up over a long stream.
//! It never spins: the benchmark client usually shares the machine's few cores with it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::engine_log::BatchLogger;
use super::telemetry::{FinishedRequest, StepPhase, StepRecord, Telemetry};
use super::{Engine, EngineStats, SimRequest, StepKind, StepOutcome};
use crate::twin::TwinEngine;

/// Falling further behind the schedule than this (a stalled machine) restarts the schedule at
/// "now" instead of replaying the missed steps back to back as a burst of tokens.
const MAX_SCHEDULE_LAG: Duration = Duration::from_millis(50);

/// How long the thread waits for new work when the model has requests but produced nothing
/// (all of them blocked), so that it neither spins nor stalls.
const BLOCKED_POLL: Duration = Duration::from_millis(1);

/// Maps monotonic instants to Unix nanoseconds from one anchor, so every timestamp the server
/// reports (chunks, metrics windows, debug context) comes from one consistent clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor: Instant,
    anchor_unix_ns: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let anchor_unix_ns = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        Clock { anchor: Instant::now(), anchor_unix_ns }
    }

    pub fn unix_ns(&self, at: Instant) -> u64 {
        match at.checked_duration_since(self.anchor) {
            Some(after) => self.anchor_unix_ns + after.as_nanos() as u64,
            None => self.anchor_unix_ns.saturating_sub(self.anchor.duration_since(at).as_nanos() as u64),
        }
    }

    pub fn now_unix_ns(&self) -> u64 {
        self.unix_ns(Instant::now())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// What the engine thread hands to one request's HTTP handler after a step.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    pub new_tokens: u32,
    pub finished: bool,
    pub prompt_tokens: u32,
    pub cached_tokens: u32,
    pub output_tokens: u32,
    /// When the step that produced these tokens ended, in Unix nanoseconds.
    pub produced_unix_ns: u64,
}

/// A request as the HTTP layer submits it.
#[derive(Debug)]
pub struct Submission {
    pub request: SimRequest,
    /// The `max_tokens` the client asked for; the engine may stop earlier (EOS).
    pub requested_max_tokens: u32,
    pub streaming: bool,
    pub arrived: Instant,
    pub sink: DeliverySink,
}

/// The engine thread's end of one request's delivery channel.
#[derive(Debug)]
pub struct DeliverySink {
    sender: UnboundedSender<Delivery>,
    /// Deliveries sent but not yet taken by the HTTP side; in fast mode the engine waits for
    /// them to be taken before its next step.
    undelivered: Arc<AtomicU32>,
}

impl DeliverySink {
    /// Returns false when the client is gone.
    fn send(&self, delivery: Delivery) -> bool {
        self.undelivered.fetch_add(1, Ordering::AcqRel);
        self.sender.send(delivery).is_ok()
    }

    fn backlog(&self) -> u32 {
        self.undelivered.load(Ordering::Acquire)
    }
}

/// The HTTP side's end of one request's delivery channel.
#[derive(Debug)]
pub struct DeliveryReceiver {
    receiver: UnboundedReceiver<Delivery>,
    undelivered: Arc<AtomicU32>,
    /// The engine thread, woken in fast mode once the backlog is taken.
    engine_thread: Option<Thread>,
}

impl DeliveryReceiver {
    pub async fn recv(&mut self) -> Option<Delivery> {
        let delivery = self.receiver.recv().await?;
        let left = self.undelivered.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        if left == 0
            && let Some(thread) = &self.engine_thread
        {
            thread.unpark();
        }
        Some(delivery)
    }
}

#[derive(Debug)]
pub enum Command {
    Submit(Submission),
    Cancel(u64),
}

/// The HTTP side's handle on the engine thread.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    commands: Sender<Command>,
    thread: Thread,
    fast: bool,
}

impl EngineHandle {
    /// A channel for one request's deliveries.
    pub fn delivery_channel(&self) -> (DeliverySink, DeliveryReceiver) {
        let (sender, receiver) = unbounded_channel();
        let undelivered = Arc::new(AtomicU32::new(0));
        let engine_thread = self.fast.then(|| self.thread.clone());
        (
            DeliverySink { sender, undelivered: Arc::clone(&undelivered) },
            DeliveryReceiver { receiver, undelivered, engine_thread },
        )
    }

    /// Returns false when the engine thread has stopped.
    pub fn submit(&self, submission: Submission) -> bool {
        self.commands.send(Command::Submit(submission)).is_ok()
    }

    pub fn cancel(&self, id: u64) {
        // The thread being gone means the request is gone too: nothing left to cancel.
        let _ = self.commands.send(Command::Cancel(id));
    }
}

/// What the engine thread steps: the built-in engine model, or a twin fitted to a real
/// deployment; the HTTP side cannot tell them apart.
pub trait SteppedEngine: Send + 'static {
    fn submit(&mut self, request: SimRequest);
    fn cancel(&mut self, id: u64);
    fn has_work(&self) -> bool;
    fn step(&mut self) -> StepOutcome;
    fn stats(&self) -> &EngineStats;
}

/// Both engines have these as inherent methods (their own public API); the trait forwards to them.
macro_rules! stepped_engine {
    ($($engine:ty),*) => {$(
        impl SteppedEngine for $engine {
            fn submit(&mut self, request: SimRequest) {
                <$engine>::submit(self, request)
            }
            fn cancel(&mut self, id: u64) {
                <$engine>::cancel(self, id)
            }
            fn has_work(&self) -> bool {
                <$engine>::has_work(self)
            }
            fn step(&mut self) -> StepOutcome {
                <$engine>::step(self)
            }
            fn stats(&self) -> &EngineStats {
                <$engine>::stats(self)
            }
        }
    )*};
}

stepped_engine!(Engine, TwinEngine);

/// Settings of the engine thread.
pub struct EngineThreadOptions {
    pub fast: bool,
    pub clock: Clock,
    pub telemetry: Arc<Mutex<Telemetry>>,
    pub logger: BatchLogger,
}

/// Starts the engine thread. It stops when every [`EngineHandle`] is dropped.
pub fn spawn_engine_thread<E: SteppedEngine>(
    engine: E,
    options: EngineThreadOptions,
) -> std::io::Result<(EngineHandle, JoinHandle<()>)> {
    let (commands, inbox) = mpsc::channel();
    let fast = options.fast;
    let thread = std::thread::Builder::new()
        .name("sim-engine".into())
        .spawn(move || EngineLoop::new(engine, inbox, options).run())?;
    Ok((EngineHandle { commands, thread: thread.thread().clone(), fast }, thread))
}

struct LiveRequest {
    sink: DeliverySink,
    streaming: bool,
    requested_max_tokens: u32,
    arrived: Instant,
    first_token_at: Option<Instant>,
    last_token_at: Option<Instant>,
    prompt_tokens: u32,
    cached_tokens: u32,
    output_tokens: u32,
}

struct EngineLoop<E> {
    engine: E,
    inbox: Receiver<Command>,
    fast: bool,
    clock: Clock,
    telemetry: Arc<Mutex<Telemetry>>,
    logger: BatchLogger,
    live: HashMap<u64, LiveRequest>,
    /// When the next step starts in the ideal timeline; `None` after an idle spell.
    schedule: Option<Instant>,
    // Per-step scratch space, reused so the hot loop does not allocate.
    finished_scratch: Vec<FinishedRequest>,
    /// This step's tokens, sent once its telemetry is recorded.
    deliveries: Vec<(u64, Delivery)>,
    queue_times_s: Vec<f64>,
    itl_observations: Vec<(f64, u32)>,
}

impl<E: SteppedEngine> EngineLoop<E> {
    fn new(engine: E, inbox: Receiver<Command>, options: EngineThreadOptions) -> EngineLoop<E> {
        EngineLoop {
            engine,
            inbox,
            fast: options.fast,
            clock: options.clock,
            telemetry: options.telemetry,
            logger: options.logger,
            live: HashMap::new(),
            schedule: None,
            finished_scratch: Vec::new(),
            deliveries: Vec::new(),
            queue_times_s: Vec::new(),
            itl_observations: Vec::new(),
        }
    }

    fn run(mut self) {
        loop {
            if !self.engine.has_work() {
                self.schedule = None;
                match self.inbox.recv() {
                    Ok(command) => self.handle(command),
                    Err(_) => return,
                }
            }
            loop {
                match self.inbox.try_recv() {
                    Ok(command) => self.handle(command),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            if !self.engine.has_work() {
                continue;
            }
            if self.fast && !self.wait_for_clients() {
                return;
            }
            self.step_once();
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Submit(submission) => {
                let id = submission.request.id;
                self.live.insert(
                    id,
                    LiveRequest {
                        sink: submission.sink,
                        streaming: submission.streaming,
                        requested_max_tokens: submission.requested_max_tokens,
                        arrived: submission.arrived,
                        first_token_at: None,
                        last_token_at: None,
                        prompt_tokens: submission.request.prompt.len() as u32,
                        cached_tokens: 0,
                        output_tokens: 0,
                    },
                );
                self.engine.submit(submission.request);
            }
            Command::Cancel(id) => {
                if let Some(request) = self.live.remove(&id) {
                    self.engine.cancel(id);
                    let aborted = self.finished_record(&request, Instant::now(), "abort");
                    let mut telemetry = lock(&self.telemetry);
                    telemetry.record_request(aborted);
                    telemetry.refresh_gauges(self.engine.stats());
                }
            }
        }
    }

    fn step_once(&mut self) {
        let outcome = self.engine.step();
        let started = match self.schedule {
            Some(planned) if Instant::now().saturating_duration_since(planned) < MAX_SCHEDULE_LAG => planned,
            _ => Instant::now(),
        };
        let deadline = started + Duration::from_nanos(outcome.duration_ns);
        if !self.fast {
            let now = Instant::now();
            if deadline > now {
                std::thread::sleep(deadline - now);
            }
        }
        self.schedule = Some(deadline);
        let produced_at = Instant::now();
        let produced_unix_ns = self.clock.unix_ns(produced_at);

        if matches!(outcome.kind, StepKind::Idle) && outcome.events.is_empty() && outcome.duration_ns == 0 {
            self.wait_while_blocked();
        }

        let mut first_tokens = 0u32;
        let mut new_prompt_tokens = 0u64;
        let mut cached_prompt_tokens = 0u64;
        self.queue_times_s.clear();
        self.itl_observations.clear();
        for event in &outcome.events {
            let Some(request) = self.live.get_mut(&event.id) else {
                continue;
            };
            let delivery = Delivery {
                new_tokens: event.new_tokens,
                finished: event.finished,
                prompt_tokens: event.prompt_tokens,
                cached_tokens: event.cached_tokens,
                output_tokens: event.output_tokens_so_far,
                produced_unix_ns,
            };
            request.prompt_tokens = event.prompt_tokens;
            request.cached_tokens = event.cached_tokens;
            request.output_tokens = event.output_tokens_so_far;
            if event.first || request.first_token_at.is_none() {
                request.first_token_at = Some(produced_at);
                first_tokens += 1;
                new_prompt_tokens += u64::from(event.prompt_tokens.saturating_sub(event.cached_tokens));
                cached_prompt_tokens += u64::from(event.cached_tokens);
                self.queue_times_s.push(started.saturating_duration_since(request.arrived).as_secs_f64());
            } else if let Some(last) = request.last_token_at {
                let per_token =
                    produced_at.saturating_duration_since(last).as_secs_f64() / f64::from(event.new_tokens.max(1));
                self.itl_observations.push((per_token, event.new_tokens.max(1)));
            }
            request.last_token_at = Some(produced_at);
            if event.finished {
                let request = &self.live[&event.id];
                let reason = if request.output_tokens < request.requested_max_tokens { "stop" } else { "length" };
                let record = self.finished_record(request, produced_at, reason);
                self.finished_scratch.push(record);
            }
            self.deliveries.push((event.id, delivery));
        }

        let stats = self.engine.stats();
        let record = StepRecord {
            start_unix_ns: self.clock.unix_ns(started),
            end_unix_ns: produced_unix_ns,
            run_batch_ns: outcome.cpu_overhead_ns + outcome.forward_ns,
            forward_ns: outcome.forward_ns,
            forward_passes: outcome.forward_passes,
            phase: StepPhase::of(&outcome.kind),
            batch_size: outcome.batch_size as u32,
            new_tokens: outcome.events.iter().map(|e| u64::from(e.new_tokens)).sum(),
            running: stats.running as u32,
            queued: stats.queued as u32,
            token_usage: stats.token_usage,
        };
        {
            let mut telemetry = lock(&self.telemetry);
            telemetry.record_step(&record, stats, first_tokens, new_prompt_tokens, cached_prompt_tokens);
            for queue_time in &self.queue_times_s {
                telemetry.record_queue_time(*queue_time);
            }
            for (per_token, count) in &self.itl_observations {
                telemetry.record_inter_token(*per_token, *count);
            }
            for finished in self.finished_scratch.drain(..) {
                self.logger.after_request(&finished);
                telemetry.record_request(finished);
            }
        }
        let gen_throughput = self.logger.after_step(
            &outcome,
            stats,
            &record,
            produced_at,
            first_tokens,
            new_prompt_tokens,
            cached_prompt_tokens,
        );
        if let Some(gen_throughput) = gen_throughput {
            lock(&self.telemetry).set_gen_throughput(gen_throughput);
        }
        // Tokens go out only now: a client that has read a request's last chunk and then scrapes
        // the metrics finds that request counted, as with a real engine.
        let mut aborted = Vec::new();
        let mut deliveries = std::mem::take(&mut self.deliveries);
        for (id, delivery) in deliveries.drain(..) {
            let finished = delivery.finished;
            let Some(request) = self.live.get(&id) else { continue };
            let client_gone = !request.sink.send(delivery);
            if (finished || client_gone)
                && let Some(request) = self.live.remove(&id)
                && !finished
            {
                self.engine.cancel(id);
                aborted.push(self.finished_record(&request, produced_at, "abort"));
            }
        }
        self.deliveries = deliveries;
        if !aborted.is_empty() {
            let mut telemetry = lock(&self.telemetry);
            for record in aborted {
                telemetry.record_request(record);
            }
            // The cancelled requests left the engine after this step's gauges were taken.
            telemetry.refresh_gauges(self.engine.stats());
        }
    }

    /// Fast mode: the next step waits until every client has taken the tokens of the previous
    /// one, so the engine runs exactly as fast as the clients read. Returns false when the
    /// server is gone.
    fn wait_for_clients(&mut self) -> bool {
        while self.live.values().any(|request| request.sink.backlog() > 0) {
            std::thread::park_timeout(BLOCKED_POLL);
            loop {
                match self.inbox.try_recv() {
                    Ok(command) => self.handle(command),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return false,
                }
            }
        }
        true
    }

    fn wait_while_blocked(&mut self) {
        match self.inbox.recv_timeout(BLOCKED_POLL) {
            Ok(command) => self.handle(command),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
        }
    }

    fn finished_record(&self, request: &LiveRequest, finished_at: Instant, reason: &'static str) -> FinishedRequest {
        let ttft_s = request.first_token_at.map(|first| first.saturating_duration_since(request.arrived).as_secs_f64());
        let tpot_s = match (request.first_token_at, request.last_token_at) {
            (Some(first), Some(last)) if request.output_tokens > 1 => {
                Some(last.saturating_duration_since(first).as_secs_f64() / f64::from(request.output_tokens - 1))
            }
            _ => None,
        };
        FinishedRequest {
            streaming: request.streaming,
            finished_unix_ns: self.clock.unix_ns(finished_at),
            ttft_s,
            tpot_s,
            e2e_s: finished_at.saturating_duration_since(request.arrived).as_secs_f64(),
            prompt_tokens: request.prompt_tokens,
            cached_tokens: request.cached_tokens,
            completion_tokens: request.output_tokens,
            finish_reason: reason,
        }
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain counters; the data is
/// still usable, and the server must keep serving.
pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
