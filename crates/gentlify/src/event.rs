//! The event callback: what a [`Throttle`](crate::Throttle) tells
//! [`on_event`](crate::Throttle::on_event), built as a [`Controller`] on the stack's handle.

use std::error::Error;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use gentlify_core::{Controller, Feedback, Outcome, QuotaReport};
use tokio::time::Instant;

use crate::breaker::Transition;
use crate::concurrency::AdaptiveConcurrencyLayer;

/// Something the stack did or heard, as given to [`Throttle::on_event`](crate::Throttle::on_event).
///
/// Events come from the task that caused them, often from inside the handle's publishing of an
/// outcome: a callback must be short and must not call back into the stack (send the event to a
/// channel or a counter instead). Nothing in an event carries a request's or a response's headers.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Event<'a> {
    /// One attempt's outcome (every attempt, retried or not), as published to the handle.
    Attempt(&'a Outcome),
    /// The server's own account of its limits, read from the response headers.
    Quota(&'a QuotaReport),
    /// The adaptive concurrency limit was cut.
    Deceleration {
        /// The limit after the cut.
        limit: usize,
        /// Cuts so far.
        decelerations: u64,
    },
    /// The adaptive concurrency limit rose (by one or more whole requests) since it was last
    /// reported: the server has been answering well.
    Reacceleration {
        /// The limit before.
        from: usize,
        /// The limit now.
        limit: usize,
    },
    /// The pause gate now holds new dispatch until `until` (a server named a delay or a reset).
    Pause {
        /// The instant dispatch resumes.
        until: Instant,
    },
    /// The circuit breaker changed state.
    Breaker(&'a Transition),
    /// A request was rejected locally (open circuit, acquire timeout, full queue, budget wait too
    /// long, request larger than a limit): it never reached the server.
    Rejected(&'a (dyn Error + Send + Sync + 'static)),
}

pub(crate) type Callback = Arc<dyn Fn(&Event<'_>) + Send + Sync>;

/// Turns what the handle hears into [`Event`]s (and metrics, with the `metrics` feature).
pub(crate) struct Observer {
    callbacks: Vec<Callback>,
    feedback: Feedback,
    concurrency: AdaptiveConcurrencyLayer,
    decelerations: AtomicU64,
    /// The limit last reported, to tell a rise from a cut.
    limit: AtomicUsize,
    paused_until: Mutex<Option<Instant>>,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: Option<crate::metrics::StackMetrics>,
}

impl Observer {
    pub(crate) fn new(
        callbacks: Vec<Callback>,
        feedback: Feedback,
        concurrency: AdaptiveConcurrencyLayer,
    ) -> Self {
        let snapshot = concurrency.snapshot();
        Observer {
            callbacks,
            feedback,
            concurrency,
            decelerations: AtomicU64::new(snapshot.decelerations),
            limit: AtomicUsize::new(snapshot.limit),
            paused_until: Mutex::new(None),
            #[cfg(feature = "metrics")]
            metrics: None,
        }
    }

    pub(crate) fn emit(&self, event: &Event<'_>) {
        for callback in &self.callbacks {
            callback(event);
        }
    }

    pub(crate) fn rejected(&self, error: &(dyn Error + Send + Sync + 'static)) {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            metrics.rejected(error);
        }
        self.emit(&Event::Rejected(error));
    }

    pub(crate) fn transition(&self, transition: &Transition) {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            metrics.transition(transition);
        }
        self.emit(&Event::Breaker(transition));
    }

    /// Reports a cut of the limit, a rise of the limit and a new pause, if any happened since
    /// last time.
    fn changes(&self) {
        let snapshot = self.concurrency.snapshot();
        let seen = self
            .decelerations
            .fetch_max(snapshot.decelerations, Ordering::AcqRel);
        let from = self.limit.swap(snapshot.limit, Ordering::AcqRel);
        if snapshot.decelerations > seen {
            self.emit(&Event::Deceleration {
                limit: snapshot.limit,
                decelerations: snapshot.decelerations,
            });
        } else if snapshot.limit > from {
            // The limiter logs its cuts itself; its rises are logged here, where they are seen.
            tracing::debug!(
                from,
                to = snapshot.limit,
                "gentlify concurrency reaccelerates"
            );
            self.emit(&Event::Reacceleration {
                from,
                limit: snapshot.limit,
            });
        }
        self.check_pause();
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            metrics.gauges(&snapshot, &self.feedback);
        }
    }

    /// Sets the metrics' gauges from the stack's state now.
    #[cfg(feature = "metrics")]
    pub(crate) fn record_gauges(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.gauges(&self.concurrency.snapshot(), &self.feedback);
        }
    }

    /// Reports a new pause, if the gate holds until later than last reported. Also called when
    /// a response leaves the stack: the header layer sets the gate after the attempt's outcome
    /// was published.
    pub(crate) fn check_pause(&self) {
        if let Some(until) = self.feedback.pause_gate().paused_until() {
            let new = {
                let mut last = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
                let new = last.is_none_or(|last| until > last);
                if new {
                    *last = Some(until);
                }
                new
            };
            if new {
                self.emit(&Event::Pause { until });
            }
        }
    }
}

impl Controller for Observer {
    fn on_outcome(&self, outcome: &Outcome) {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            metrics.outcome(outcome);
        }
        self.emit(&Event::Attempt(outcome));
        self.changes();
    }

    fn on_quota(&self, report: &QuotaReport) {
        self.emit(&Event::Quota(report));
        self.changes();
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observer")
            .field("callbacks", &self.callbacks.len())
            .field("feedback", &self.feedback)
            .finish()
    }
}
