//! A run's limits in Dodo calls and time, and how long an item that changed nothing
//! waits before it is checked again.

use std::time::Instant;

use super::{ItemError, Limits};
use crate::time::SECONDS_PER_DAY;

/// Counts and paces a run's Dodo calls, and keeps its time budget.
pub(super) struct Budget {
    started: Instant,
    last_call: Option<Instant>,
    pub(super) calls: u32,
    /// Calls only the claims sweep may take, until it starts.
    reserved: u32,
    limits: Limits,
}

impl Budget {
    pub(super) fn new(limits: Limits) -> Self {
        Self {
            started: Instant::now(),
            last_call: None,
            calls: 0,
            reserved: limits.sweep_reserve.min(limits.max_dodo_calls / 2),
            limits,
        }
    }

    pub(super) fn left(&self) -> u32 {
        // The reserve keeps its time too: the items stop early enough for the sweep's
        // paced calls to fit in the run's time budget.
        let reserved_time = self.limits.min_call_interval * self.reserved;
        if self.started.elapsed() + reserved_time >= self.limits.time_budget {
            return 0;
        }
        self.limits
            .max_dodo_calls
            .saturating_sub(self.calls + self.reserved)
    }

    /// The sweep starts: the reserve, and whatever the items left, are its.
    pub(super) fn release_reserve(&mut self) {
        self.reserved = 0;
    }

    /// Takes one call, waiting out the pacing interval; `Err` when none is left.
    pub(super) async fn take(&mut self) -> Result<(), ItemError> {
        if self.left() == 0 {
            return Err(ItemError::OutOfBudget);
        }
        if let Some(last) = self.last_call {
            let wait = self.limits.min_call_interval.saturating_sub(last.elapsed());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        self.last_call = Some(Instant::now());
        self.calls += 1;
        Ok(())
    }
}

/// Checks that find nothing new (or fail) before an item is dropped: with the back-off
/// below, about six days.
pub(super) const MAX_ATTEMPTS: u32 = 10;

/// How long an item that changed nothing (or failed) waits: an hour, doubling with each
/// attempt, at most a day.
pub(super) fn defer_for(attempts: u32) -> i64 {
    (3600_i64 << attempts.min(5)).min(SECONDS_PER_DAY)
}
