//! `metrics`-crate integration (feature `metrics`), enabled per stack with
//! [`Throttle::metrics(true)`](crate::Throttle::metrics).
//!
//! Every metric carries the label `stack`, the handle's name
//! ([`Throttle::name`](crate::Throttle::name); `"default"` without one).
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `gentlify_attempts_total` | counter | `stack`, `class` | attempts by outcome class (`success`, `overloaded`, `failure`, `fatal`, `cancelled`) |
//! | `gentlify_overloaded_total` | counter | `stack` | attempts the server refused as overloaded (429, 503, 529, `RESOURCE_EXHAUSTED`) |
//! | `gentlify_retries_total` | counter | `stack` | attempts after the first of their request |
//! | `gentlify_rejections_total` | counter | `stack`, `reason` | requests rejected locally (`circuit_open`, `acquire_timeout`, `queue_full`, `budget_wait_too_long`, `request_too_large`) |
//! | `gentlify_breaker_transitions_total` | counter | `stack`, `to` | breaker state changes |
//! | `gentlify_attempt_duration_seconds` | histogram | `stack` | from dispatch to response head (or error), per attempt |
//! | `gentlify_concurrency_limit` | gauge | `stack` | the adaptive limit |
//! | `gentlify_in_flight` | gauge | `stack` | requests holding a permit |
//! | `gentlify_open_slots` | gauge | `stack` | logical requests in progress |
//! | `gentlify_tokens_remaining` | gauge | `stack` | tokens left in the first budget with a token limit |
//!
//! # When gauges are set
//!
//! The `metrics` crate's gauges are pushed: a recorder keeps the last value set and cannot ask
//! the stack for a fresh one when it is read. The stack sets its gauges when it hears something
//! — after every attempt's outcome (published when the response's head arrives) and every quota
//! report from the headers — and they keep that value until the next. That leaves two gaps:
//! `gentlify_in_flight` and `gentlify_open_slots` change when a response's body ends (the permit
//! and the slot are held until then, and nothing is published at that moment), so after the last
//! attempt of a burst they count the bodies then still being read, until the next attempt; and a
//! limit set by hand, with no attempt after it, is not seen. For gauges that are exact when read,
//! spawn [`ThrottleLayer::record_gauges_every`](crate::ThrottleLayer::record_gauges_every) with
//! the scrape interval (it ends with the stack), or call
//! [`ThrottleLayer::record_gauges`](crate::ThrottleLayer::record_gauges) before each scrape.
//! Setting them at every slot's end instead would put that work on every request's path, for
//! every stack, whether its gauges are ever read or not.

use std::error::Error;

use gentlify_core::error::{
    AcquireTimeout, BudgetWaitTooLong, CircuitOpen, QueueFull, RequestTooLarge,
};
use gentlify_core::{Dimension, Feedback, Outcome};
use metrics::{counter, gauge, histogram, SharedString};

use crate::breaker::Transition;
use crate::budget::TokenBudget;
use crate::concurrency::ConcurrencySnapshot;

pub(crate) struct StackMetrics {
    stack: SharedString,
    budgets: Vec<TokenBudget>,
}

impl StackMetrics {
    pub(crate) fn new(stack: &str, budgets: Vec<TokenBudget>) -> Self {
        StackMetrics {
            stack: SharedString::from(stack.to_owned()),
            budgets,
        }
    }

    pub(crate) fn outcome(&self, outcome: &Outcome) {
        let stack = self.stack.clone();
        counter!("gentlify_attempts_total", "stack" => stack.clone(), "class" => outcome.class.as_str())
            .increment(1);
        if outcome.class.is_overloaded() {
            counter!("gentlify_overloaded_total", "stack" => stack.clone()).increment(1);
        }
        if outcome.attempt > 0 {
            counter!("gentlify_retries_total", "stack" => stack.clone()).increment(1);
        }
        histogram!("gentlify_attempt_duration_seconds", "stack" => stack)
            .record(outcome.latency.as_secs_f64());
    }

    pub(crate) fn rejected(&self, error: &(dyn Error + 'static)) {
        let reason = if error.is::<CircuitOpen>() {
            "circuit_open"
        } else if error.is::<AcquireTimeout>() {
            "acquire_timeout"
        } else if error.is::<QueueFull>() {
            "queue_full"
        } else if error.is::<BudgetWaitTooLong>() {
            "budget_wait_too_long"
        } else if error.is::<RequestTooLarge>() {
            "request_too_large"
        } else {
            "other"
        };
        counter!("gentlify_rejections_total", "stack" => self.stack.clone(), "reason" => reason)
            .increment(1);
    }

    pub(crate) fn transition(&self, transition: &Transition) {
        counter!(
            "gentlify_breaker_transitions_total",
            "stack" => self.stack.clone(),
            "to" => transition.to.as_str()
        )
        .increment(1);
    }

    pub(crate) fn gauges(&self, concurrency: &ConcurrencySnapshot, feedback: &Feedback) {
        let stack = self.stack.clone();
        gauge!("gentlify_concurrency_limit", "stack" => stack.clone())
            .set(concurrency.limit as f64);
        gauge!("gentlify_in_flight", "stack" => stack.clone()).set(concurrency.in_flight as f64);
        gauge!("gentlify_open_slots", "stack" => stack.clone()).set(feedback.open_slots() as f64);
        if let Some(remaining) = self
            .budgets
            .iter()
            .find_map(|b| b.remaining(Dimension::Tokens))
        {
            gauge!("gentlify_tokens_remaining", "stack" => stack).set(remaining as f64);
        }
    }
}
