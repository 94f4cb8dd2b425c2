//! The local stack's test clock, and what moving it does: everything due in between
//! happens, in time order — the simulator's renewals, declined charges and retries,
//! cancellations and delayed or retried webhooks, and the reconcile function's hourly
//! schedule (every whole hour of the clock, as EventBridge runs it in AWS) — before the
//! clock reaches the time asked for. Passes simply run out: access is computed from the
//! clock at each read.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use paywall::handlers::Reconciler;
use paywall::handlers::reconcile::Summary;
use paywall::time::{Clock, ClockWouldGoBack};

use crate::dodo_simulator::DodoSimulator;

const HOUR_MS: i64 = 3_600_000;

pub struct TimeMachine {
    clock: Clock,
    simulator: Option<DodoSimulator>,
    reconciler: Option<Reconciler>,
    /// The next whole hour at which reconcile runs (ms).
    next_reconcile_ms: Mutex<i64>,
    /// One move at a time: a request to advance and the background catch-up never
    /// interleave their steps.
    moving: tokio::sync::Mutex<()>,
    reconcile_runs: AtomicU64,
    last_reconcile: Mutex<Option<Summary>>,
    /// Wall time spent in reconcile runs and in the simulator's actions (µs).
    reconcile_micros: AtomicU64,
    simulator_micros: AtomicU64,
    /// Where the clock's position is kept (`make dev`'s `.local/clock.json`), written
    /// *before* the clock reaches it, so that a move cut short (a client that gives up, a
    /// Ctrl-C, a crash) never leaves state written at a time later than the saved one:
    /// after a restart the clock never goes back.
    clock_file: Option<PathBuf>,
    /// The largest lead over the wall clock saved so far (ms).
    saved_ahead_ms: Mutex<i64>,
}

/// What one move did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    pub simulator_actions: u64,
    pub reconcile_runs: u64,
}

impl TimeMachine {
    pub fn new(
        clock: Clock,
        simulator: Option<DodoSimulator>,
        reconciler: Option<Reconciler>,
    ) -> Self {
        let now = clock.now_millis();
        Self {
            next_reconcile_ms: Mutex::new((now.div_euclid(HOUR_MS) + 1) * HOUR_MS),
            clock,
            simulator,
            reconciler,
            moving: tokio::sync::Mutex::new(()),
            reconcile_runs: AtomicU64::new(0),
            last_reconcile: Mutex::new(None),
            reconcile_micros: AtomicU64::new(0),
            simulator_micros: AtomicU64::new(0),
            clock_file: None,
            saved_ahead_ms: Mutex::new(i64::MIN),
        }
    }

    /// Keeps the clock's position in `path` as it moves (see [`Self::save_position`]).
    pub fn with_clock_file(mut self, path: PathBuf) -> Self {
        self.clock_file = Some(path);
        // The lead it started with, read from that file (or none).
        *self
            .saved_ahead_ms
            .get_mut()
            .unwrap_or_else(|p| p.into_inner()) =
            self.clock.now_millis() - Clock::system().now_millis();
        self
    }

    /// Saves `at_ms` as the clock's position: its lead over the wall clock, which a
    /// restart adds to the wall clock. Only a lead larger than the one saved is written
    /// (a running clock that merely flows keeps its lead: no write every second).
    /// Written to a temporary file and renamed, so a kill mid-write never leaves half a
    /// file.
    fn save_position(&self, at_ms: i64) {
        let Some(path) = &self.clock_file else {
            return;
        };
        let ahead = at_ms.saturating_sub(Clock::system().now_millis()).max(0);
        let mut saved = self
            .saved_ahead_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // The monotonic and the wall clock drift apart by a few ms at most.
        if ahead <= saved.saturating_add(100) {
            return;
        }
        let text = serde_json::json!({ "ahead_of_wall_clock_ms": ahead }).to_string();
        let partial = path.with_extension("json.partial");
        match std::fs::write(&partial, text).and_then(|()| std::fs::rename(&partial, path)) {
            Ok(()) => *saved = ahead,
            Err(err) => tracing::warn!(error = %err, "could not save the test clock"),
        }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Whether the clock can be moved (a test clock; real Dodo runs on real time).
    pub fn can_move(&self) -> bool {
        self.clock.is_test() && self.simulator.is_some()
    }

    /// Wall time spent running reconcile, and the simulator's actions (with the
    /// webhooks they deliver), so far.
    pub fn time_spent(&self) -> (std::time::Duration, std::time::Duration) {
        (
            std::time::Duration::from_micros(self.reconcile_micros.load(Ordering::Relaxed)),
            std::time::Duration::from_micros(self.simulator_micros.load(Ordering::Relaxed)),
        )
    }

    pub fn reconcile_runs(&self) -> u64 {
        self.reconcile_runs.load(Ordering::Relaxed)
    }

    pub fn last_reconcile(&self) -> Option<Summary> {
        self.last_reconcile
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// When reconcile runs next (ms on the clock).
    pub fn next_reconcile_millis(&self) -> i64 {
        *self
            .next_reconcile_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Moves the clock to `target_ms`, running everything due on the way, in time order
    /// (Dodo's actions before a reconcile run due at the same moment). Answers once all
    /// of it has happened.
    pub async fn advance_to(&self, target_ms: i64) -> Result<Moved, ClockWouldGoBack> {
        let _one_move = self.moving.lock().await;
        let now = self.clock.now_millis();
        if target_ms < now {
            return Err(ClockWouldGoBack { now_millis: now });
        }
        let mut moved = Moved::default();
        loop {
            let next_simulator = self
                .simulator
                .as_ref()
                .and_then(DodoSimulator::next_due_millis);
            let next_reconcile = self
                .reconciler
                .as_ref()
                .map(|_| self.next_reconcile_millis());
            let simulator_first = match (next_simulator, next_reconcile) {
                (Some(s), Some(r)) => s <= r,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let at = if simulator_first {
                next_simulator
            } else {
                next_reconcile
            }
            .unwrap_or(target_ms);
            if at > target_ms {
                break;
            }
            // A running clock may already be past `at`; it never goes back.
            let at = at.max(self.clock.now_millis());
            self.save_position(at);
            let _ = self.clock.advance_to(at);
            let started = std::time::Instant::now();
            if simulator_first {
                if let Some(simulator) = &self.simulator
                    && simulator.run_next_due().await
                {
                    moved.simulator_actions += 1;
                }
                self.simulator_micros
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            } else {
                self.run_reconcile().await;
                self.reconcile_micros
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                moved.reconcile_runs += 1;
                *self
                    .next_reconcile_ms
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = at.saturating_add(HOUR_MS);
            }
        }
        let end = target_ms.max(self.clock.now_millis());
        self.save_position(end);
        let _ = self.clock.advance_to(end);
        Ok(moved)
    }

    /// Runs what is due by now (a running clock moves on its own).
    pub async fn catch_up(&self) -> Moved {
        let now = self.clock.now_millis();
        self.advance_to(now).await.unwrap_or_default()
    }

    async fn run_reconcile(&self) {
        let Some(reconciler) = &self.reconciler else {
            return;
        };
        let summary = reconciler.run(self.clock.now()).await;
        self.reconcile_runs.fetch_add(1, Ordering::Relaxed);
        let did_something = summary.subscriptions_refreshed
            + summary.payments_granted
            + summary.claims_applied
            + summary.checkouts_abandoned
            + summary.failed
            + summary.left_behind
            > 0;
        if did_something {
            tracing::info!(at = %self.clock.now().to_rfc3339(), summary = ?summary, "reconcile (test clock)");
        }
        *self
            .last_reconcile
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(summary);
    }
}
