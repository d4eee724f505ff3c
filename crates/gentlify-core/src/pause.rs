//! The pause gate: "no new dispatch before instant T", set when a server says wait.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::Feedback;

/// Holds new dispatch until an instant. Lives in the [`Feedback`] handle
/// ([`Feedback::pause_gate`]); any layer can await it with [`PauseWait`] before sending.
///
/// The gate only moves forward: a shorter pause never shortens a longer one already set.
/// Reading it is one atomic load.
pub struct PauseGate {
    base: Instant,
    /// Nanoseconds after `base` until which dispatch is held; 0 = not paused.
    until_nanos: AtomicU64,
}

impl PauseGate {
    pub(crate) fn new() -> Self {
        PauseGate {
            base: Instant::now(),
            until_nanos: AtomicU64::new(0),
        }
    }

    /// Holds dispatch until `until`, unless it already holds until later.
    pub fn pause_until(&self, until: Instant) {
        let nanos = until.saturating_duration_since(self.base).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX).max(1);
        let before = self.until_nanos.fetch_max(nanos, Ordering::AcqRel);
        if nanos > before {
            tracing::debug!(
                pause_ms = until.saturating_duration_since(Instant::now()).as_millis() as u64,
                "gentlify pause gate set"
            );
        }
    }

    /// Holds dispatch for `duration` from now, unless it already holds until later. A duration
    /// too long to be an instant is ignored (callers clamp server-directed delays first).
    pub fn pause_for(&self, duration: Duration) {
        if let Some(until) = Instant::now().checked_add(duration) {
            self.pause_until(until);
        }
    }

    /// The instant until which dispatch is held, if that is still in the future.
    #[inline]
    pub fn paused_until(&self) -> Option<Instant> {
        // Checked on every request's way in: never paused is one load, inlined.
        let nanos = self.until_nanos.load(Ordering::Acquire);
        if nanos == 0 {
            return None;
        }
        self.paused_until_set(nanos)
    }

    fn paused_until_set(&self, nanos: u64) -> Option<Instant> {
        let until = self.base.checked_add(Duration::from_nanos(nanos))?;
        (until > Instant::now()).then_some(until)
    }

    /// How long dispatch is still held, if it is.
    pub fn remaining(&self) -> Option<Duration> {
        self.paused_until()
            .map(|until| until.saturating_duration_since(Instant::now()))
    }

    /// Lifts the pause at once.
    pub fn clear(&self) {
        self.until_nanos.store(0, Ordering::Release);
    }
}

impl fmt::Debug for PauseGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PauseGate")
            .field("remaining", &self.remaining())
            .finish()
    }
}

/// Waits until a handle's pause gate is open. Usable as a `Future`, or polled by hand from a
/// `poll_ready` with [`poll_wait`](PauseWait::poll_wait). Allocates only while a pause is in
/// force, and follows a pause that is extended while it waits.
///
/// ```
/// use std::time::Duration;
/// use gentlify_core::{Feedback, PauseWait};
/// use tokio::time::Instant;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let feedback = Feedback::new();
/// let start = Instant::now();
/// feedback.pause_gate().pause_for(Duration::from_secs(2));
/// PauseWait::new(feedback).await;
/// assert_eq!(start.elapsed(), Duration::from_secs(2));
/// # }
/// ```
pub struct PauseWait {
    feedback: Feedback,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl PauseWait {
    /// A waiter on `feedback`'s gate.
    pub fn new(feedback: Feedback) -> Self {
        PauseWait {
            feedback,
            sleep: None,
        }
    }

    /// `Ready` when the gate is open; registers a timer and returns `Pending` otherwise.
    pub fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let Some(until) = self.feedback.pause_gate().paused_until() else {
                self.sleep = None;
                return Poll::Ready(());
            };
            match &mut self.sleep {
                Some(sleep) => {
                    if sleep.deadline() != until {
                        sleep.as_mut().reset(until);
                    }
                }
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(until))),
            }
            if let Some(sleep) = &mut self.sleep {
                ready!(sleep.as_mut().poll(cx));
            }
        }
    }
}

impl Future for PauseWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().poll_wait(cx)
    }
}

impl fmt::Debug for PauseWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PauseWait")
            .field("waiting", &self.sleep.is_some())
            .finish()
    }
}
