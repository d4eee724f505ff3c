//! Sliding windows of recorded calls, count-based and time-based, updated in O(1).

use std::time::Duration;

use tokio::time::Instant;

/// Calls, failures and slow calls recorded in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u32,
    pub(crate) failures: u32,
    pub(crate) slow: u32,
}

impl Counts {
    pub(crate) fn add(&mut self, failed: bool, slow: bool) {
        self.calls += 1;
        self.failures += u32::from(failed);
        self.slow += u32::from(slow);
    }

    fn add_counts(&mut self, other: Counts) {
        self.calls += other.calls;
        self.failures += other.failures;
        self.slow += other.slow;
    }

    fn sub_counts(&mut self, other: Counts) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
    }

    /// Failures over calls, `None` with no calls.
    pub(crate) fn failure_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| f64::from(self.failures) / f64::from(self.calls))
    }

    /// Slow calls over calls, `None` with no calls.
    pub(crate) fn slow_call_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| f64::from(self.slow) / f64::from(self.calls))
    }
}

/// The window the closed state judges the upstream by.
#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub(crate) fn count(size: usize) -> Self {
        Window::Count(CountWindow {
            ring: vec![0; size].into_boxed_slice(),
            next: 0,
            len: 0,
            totals: Counts::default(),
        })
    }

    pub(crate) fn time(length: Duration, buckets: usize, now: Instant) -> Self {
        Window::Time(TimeWindow {
            buckets: vec![Counts::default(); buckets].into_boxed_slice(),
            bucket_nanos: (length.as_nanos() / buckets as u128).max(1),
            base: now,
            head: 0,
            totals: Counts::default(),
        })
    }

    /// Records one call and returns the window's totals. `now` is called only by a time window
    /// (a count window needs no clock: a read per outcome is saved on the success path).
    pub(crate) fn record(
        &mut self,
        now: impl FnOnce() -> Instant,
        failed: bool,
        slow: bool,
    ) -> Counts {
        match self {
            Window::Count(w) => w.record(failed, slow),
            Window::Time(w) => w.record(now(), failed, slow),
        }
    }

    /// The window's totals at `now`.
    pub(crate) fn counts(&mut self, now: Instant) -> Counts {
        match self {
            Window::Count(w) => w.totals,
            Window::Time(w) => {
                w.advance(now);
                w.totals
            }
        }
    }

    /// Forgets every call.
    pub(crate) fn clear(&mut self, now: Instant) {
        match self {
            Window::Count(w) => {
                w.ring.fill(0);
                w.next = 0;
                w.len = 0;
                w.totals = Counts::default();
            }
            Window::Time(w) => {
                w.buckets.fill(Counts::default());
                w.base = now;
                w.head = 0;
                w.totals = Counts::default();
            }
        }
    }
}

const FAILED: u8 = 1;
const SLOW: u8 = 2;

/// The last `ring.len()` calls, one byte each, with running totals.
#[derive(Debug)]
pub(crate) struct CountWindow {
    ring: Box<[u8]>,
    next: usize,
    len: usize,
    totals: Counts,
}

impl CountWindow {
    fn record(&mut self, failed: bool, slow: bool) -> Counts {
        if self.len == self.ring.len() {
            let old = self.ring[self.next];
            self.totals.calls -= 1;
            self.totals.failures -= u32::from(old & FAILED != 0);
            self.totals.slow -= u32::from(old & SLOW != 0);
        } else {
            self.len += 1;
        }
        self.ring[self.next] = if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        self.totals.add(failed, slow);
        self.next = (self.next + 1) % self.ring.len();
        self.totals
    }
}

/// A ring of buckets, each `bucket_nanos` long; the bucket of epoch `e` is `buckets[e % len]`.
/// Moving forward clears at most `len` buckets, so an update is O(buckets), a constant.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[Counts]>,
    bucket_nanos: u128,
    base: Instant,
    /// The epoch of the newest bucket.
    head: u128,
    totals: Counts,
}

impl TimeWindow {
    fn epoch(&self, now: Instant) -> u128 {
        now.saturating_duration_since(self.base).as_nanos() / self.bucket_nanos
    }

    fn advance(&mut self, now: Instant) {
        let epoch = self.epoch(now);
        if epoch <= self.head {
            return;
        }
        let n = self.buckets.len() as u128;
        let steps = (epoch - self.head).min(n);
        for step in 1..=steps {
            let i = ((self.head + step) % n) as usize;
            let old = std::mem::take(&mut self.buckets[i]);
            self.totals.sub_counts(old);
        }
        self.head = epoch;
    }

    fn record(&mut self, now: Instant, failed: bool, slow: bool) -> Counts {
        self.advance(now);
        let i = (self.head % self.buckets.len() as u128) as usize;
        let mut one = Counts::default();
        one.add(failed, slow);
        self.buckets[i].add_counts(one);
        self.totals.add_counts(one);
        self.totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_window_keeps_only_the_last_calls() {
        let now = Instant::now();
        let mut w = Window::count(3);
        w.record(|| now, true, false);
        w.record(|| now, true, true);
        w.record(|| now, false, false);
        let c = w.record(|| now, false, false);
        assert_eq!(
            c,
            Counts {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        let c = w.record(|| now, false, false);
        assert_eq!(c.failures, 0);
        assert_eq!(c.slow, 0);
    }

    #[test]
    fn time_window_forgets_buckets_older_than_the_window() {
        let t0 = Instant::now();
        let mut w = Window::time(Duration::from_secs(10), 10, t0);
        w.record(|| t0, true, false);
        w.record(|| t0 + Duration::from_millis(5_500), true, false);
        assert_eq!(w.counts(t0 + Duration::from_millis(9_999)).failures, 2);
        assert_eq!(w.counts(t0 + Duration::from_secs(10)).failures, 1);
        assert_eq!(w.counts(t0 + Duration::from_secs(16)).failures, 0);
        w.record(|| t0 + Duration::from_secs(1_000), false, false);
        assert_eq!(w.counts(t0 + Duration::from_secs(1_000)).calls, 1);
    }
}
