//! The service, and how a request's charges are settled when its slot ends.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use gentlify_core::{BoxError, Feedback, Hold, HoldKey, Slot, SlotBody, SlotEnded};
use http_body::Body;
use smallvec::SmallVec;
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

/// The reservations of one attempt, in the order of the layer's budgets: inline for one budget,
/// the common case, so that an attempt allocates nothing for it.
pub(crate) type Reservations = SmallVec<[OwnedReservation; 1]>;

pub(crate) struct AttemptCharge {
    attempt: u32,
    reservations: Reservations,
}

/// Records the reservations of one attempt of the request in `slot`, in the layer's
/// [`BookHold`]: the first attempt through the layer puts it in the slot, a retry (whose request
/// is a clone made before this layer saw the first one, so only the shared slot links them)
/// adds to it.
pub(crate) fn record(slot: &Slot, key: HoldKey, attempt: u32, reservations: Reservations) {
    let mut charge = Some(AttemptCharge {
        attempt,
        reservations,
    });
    if slot.holds(key) {
        slot.with_hold_mut(key, |hold: &mut BookHold| {
            if let Some(charge) = charge.take() {
                hold.attempts.push(charge);
            }
        });
    }
    if let Some(charge) = charge {
        let mut attempts = SmallVec::new();
        attempts.push(charge);
        slot.hold(key, Box::new(BookHold { attempts }));
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
///
/// The hold lives in the request's slot under the layer's key: one allocation per logical
/// request, none per attempt for the first one.
pub(crate) struct BookHold {
    attempts: SmallVec<[AttemptCharge; 1]>,
}

impl Hold for BookHold {
    fn release(self: Box<Self>, ended: &SlotEnded<'_>) {
        // Read in place: the charges are not moved out of the box, which is freed whole.
        let attempts = &self.attempts;
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
                for r in &charge.reservations {
                    r.reconcile_in_place(actual);
                }
            }
        }
    }
}
