//! The service, and how a request's charges are settled when its slot ends.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use gentlify_core::{BoxError, Feedback, Hold, HoldKey, Slot, SlotBody, SlotEnded};
use http_body::Body;
use tower_service::Service;

use crate::budget::{OwnedReservation, TokenBudget};
use crate::cost::{Estimate, TokenCost};
use crate::future::ResponseFuture;
use crate::usage::UsageBody;
use crate::window::Actual;

/// The service of a [`TokenBudgetLayer`](crate::TokenBudgetLayer).
///
/// `poll_ready` is the inner service's; the reservation is made in the response future, because
/// it needs the request to estimate its cost. The response body is wrapped in a [`UsageBody`]
/// (which records the server's usage in the slot) inside a [`SlotBody`].
#[derive(Clone)]
pub struct Budgeted<S, E> {
    inner: S,
    budgets: Arc<[TokenBudget]>,
    feedback: Feedback,
    estimate: E,
    key: HoldKey,
}

impl<S, E> Budgeted<S, E> {
    pub(crate) fn new(
        inner: S,
        budgets: Arc<[TokenBudget]>,
        feedback: Feedback,
        estimate: E,
        key: HoldKey,
    ) -> Self {
        Budgeted {
            inner,
            budgets,
            feedback,
            estimate,
            key,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, E, ReqBody, ResBody> Service<http::Request<ReqBody>> for Budgeted<S, E>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    E: Estimate<ReqBody>,
    ResBody: Body,
{
    type Response = http::Response<SlotBody<UsageBody<ResBody>>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let (slot, end) = Slot::get_or_insert(request.extensions_mut(), &self.feedback);
        let cost = match request.extensions().get::<TokenCost>() {
            Some(cost) => *cost,
            None => self.estimate.estimate(&request),
        };
        // A retry's request is a clone of the one the retry layer was given, made before this
        // layer put the book in its extensions: the slot's hold is what finds the book of the
        // earlier attempts. Two books would each settle as if the other's attempts had gone
        // out unasked, charging every retried attempt again.
        let book = slot
            .with_hold_mut(self.key, |hold: &mut BookHold| hold.book.clone())
            .unwrap_or_else(|| {
                request
                    .extensions_mut()
                    .get_or_insert_with(ChargeBook::default)
                    .clone()
            });
        // The service that was made ready goes into the future; this one keeps a clone.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(
            service,
            request,
            cost,
            self.budgets.clone(),
            self.feedback.clone(),
            slot,
            end,
            book,
            self.key,
        )
    }
}

impl<S: fmt::Debug, E> fmt::Debug for Budgeted<S, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budgeted")
            .field("inner", &self.inner)
            .field("budgets", &self.budgets)
            .finish()
    }
}

/// The reservations of a logical request, per layer and attempt; travels in the request's
/// extensions so that retries find it.
#[derive(Clone, Default)]
pub(crate) struct ChargeBook(Arc<Mutex<Vec<LayerCharges>>>);

/// One layer's charges: its hold key, and what each attempt reserved.
type LayerCharges = (HoldKey, Vec<AttemptCharge>);

pub(crate) struct AttemptCharge {
    attempt: u32,
    reservations: Vec<OwnedReservation>,
}

impl ChargeBook {
    /// Records the reservations of one attempt; true when they are the first of `key` (the caller
    /// then puts a [`BookHold`] in the slot).
    pub(crate) fn record(
        &self,
        key: HoldKey,
        attempt: u32,
        reservations: Vec<OwnedReservation>,
    ) -> bool {
        let mut book = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let charge = AttemptCharge {
            attempt,
            reservations,
        };
        match book.iter_mut().find(|(k, _)| *k == key) {
            Some((_, attempts)) => {
                attempts.push(charge);
                false
            }
            None => {
                book.push((key, vec![charge]));
                true
            }
        }
    }

    pub(crate) fn hold(&self, key: HoldKey) -> Box<dyn Hold> {
        Box::new(BookHold {
            book: self.clone(),
            key,
        })
    }
}

/// Settles a layer's charges when the slot ends.
///
/// - The final attempt is reconciled with the real usage: the tokens the inner service recorded
///   ([`Slot::record_tokens`]) if any, else the usage read from the response, else the estimate
///   stands (a stream cut before its usage, a transport error, a cancellation).
/// - Earlier attempts keep their estimate: providers count failed requests, and a 429 reports no
///   usage.
/// - Attempts made below this layer (a retry layer between it and the client) never asked the
///   budget; each is charged the last attempt's estimate when the slot ends. Put the retry layer
///   above the budget (gentlify's default order) so that every attempt waits for the budget.
struct BookHold {
    book: ChargeBook,
    key: HoldKey,
}

impl Hold for BookHold {
    fn release(self: Box<Self>, ended: &SlotEnded<'_>) {
        let attempts = {
            let mut book = self.book.0.lock().unwrap_or_else(|e| e.into_inner());
            match book.iter().position(|(k, _)| *k == self.key) {
                Some(i) => book.swap_remove(i).1,
                None => return,
            }
        };
        let final_attempt = ended.attempts.saturating_sub(1);
        let actual = if ended.recorded_tokens > 0 {
            Some(Actual::Tokens(ended.recorded_tokens))
        } else {
            ended.usage.map(Actual::Usage)
        };
        let last = attempts.iter().map(|a| a.attempt).max().unwrap_or(0);
        for charge in attempts {
            if charge.attempt == last && last < final_attempt {
                let unasked = final_attempt - last;
                for r in &charge.reservations {
                    for _ in 0..unasked {
                        r.budget().charge_now(&r.cost());
                    }
                }
            }
            if charge.attempt != final_attempt {
                continue;
            }
            if let Some(actual) = actual {
                for r in charge.reservations {
                    r.reconcile(actual);
                }
            }
        }
    }
}
