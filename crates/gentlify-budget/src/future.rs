//! The response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use gentlify_core::{
    settle, BoxError, Dispatched, EndReason, Feedback, HoldKey, PauseWait, Slot, SlotBody, SlotEnd,
};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::budget::{OwnedReservation, Reserve, TokenBudget};
use crate::cost::TokenCost;
use crate::service::{record, Reservations};
use crate::usage::UsageBody;

pin_project! {
    /// The response future of [`Budgeted`](crate::Budgeted): waits for the pause gate, reserves
    /// the request's cost in each budget, sends it, and wraps the response's body.
    pub struct ResponseFuture<F, S, B> {
        #[pin]
        state: State<F>,
        waiting: Option<Waiting<S, B>>,
        slot: Slot,
        end: Option<SlotEnd>,
        dispatched: Option<Dispatched>,
        // The budgets, in the order they are reserved (one handle for the whole future).
        budgets: Arc<[TokenBudget]>,
        // The send instant, to rebase the server reports its response brings.
        sent: Option<tokio::time::Instant>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Waiting,
        Called {
            #[pin]
            future: F,
        },
    }
}

struct Waiting<S, B> {
    service: S,
    request: Option<http::Request<B>>,
    cost: TokenCost,
    feedback: Feedback,
    /// The waiter on the pause gate, made (with its clone of the handle) only when the gate is
    /// found closed.
    pause: Option<PauseWait>,
    reserve: Option<Reserve>,
    /// The reservations granted so far, in the order of the budgets.
    granted: Reservations,
    /// When the newest of them were granted, and how many were granted before then: the
    /// instants only grow, so the ones older than the dispatch are a prefix.
    newest: Option<(tokio::time::Instant, usize)>,
    key: HoldKey,
}

impl<S, B> Drop for Waiting<S, B> {
    fn drop(&mut self) {
        // Reservations of a request that was never sent go back whole.
        for reservation in self.granted.drain(..) {
            reservation.cancel();
        }
    }
}

impl<S, B> Waiting<S, B> {
    /// `Ready` when the pause gate is open, as [`PauseWait::poll_wait`].
    fn poll_gate(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.pause.is_none() {
            if self.feedback.pause_gate().paused_until().is_none() {
                return Poll::Ready(());
            }
            self.pause = Some(PauseWait::new(self.feedback.clone()));
        }
        match &mut self.pause {
            Some(pause) => pause.poll_wait(cx),
            None => Poll::Ready(()),
        }
    }

    fn grant(&mut self, reservation: OwnedReservation, now: tokio::time::Instant) {
        if self.newest.is_none_or(|(at, _)| at < now) {
            self.newest = Some((now, self.granted.len()));
        }
        self.granted.push(reservation);
    }
}

impl<F, S, B> ResponseFuture<F, S, B> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        service: S,
        request: http::Request<B>,
        cost: TokenCost,
        budgets: Arc<[TokenBudget]>,
        feedback: Feedback,
        slot: Slot,
        end: Option<SlotEnd>,
        key: HoldKey,
    ) -> Self {
        ResponseFuture {
            state: State::Waiting,
            waiting: Some(Waiting {
                service,
                request: Some(request),
                cost,
                pause: None,
                feedback,
                reserve: None,
                granted: Reservations::new(),
                newest: None,
                key,
            }),
            slot,
            end,
            dispatched: None,
            budgets,
            sent: None,
        }
    }
}

impl<F, S, B, ResBody, E> Future for ResponseFuture<F, S, B>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    S: Service<http::Request<B>, Future = F>,
    E: Into<BoxError>,
    ResBody: Body,
{
    type Output = Result<http::Response<SlotBody<UsageBody<ResBody>>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting => {
                    let waiting = this.waiting.as_mut().expect("polled after completion");
                    // Reserve only once the gate is open: a charge counts from when it is made,
                    // so it must be made when the request is really sent.
                    if waiting.granted.is_empty() && waiting.reserve.is_none() {
                        ready!(waiting.poll_gate(cx));
                    }
                    // One clock read per poll: the instant of every reservation granted in this
                    // poll, and of the dispatch when it follows in the same poll (no restamp).
                    let now = tokio::time::Instant::now();
                    while waiting.granted.len() < this.budgets.len() {
                        let budget = &this.budgets[waiting.granted.len()];
                        if waiting.reserve.is_none() {
                            // The lock-free path first, timed with this poll's reading: no
                            // `Reserve` (and its clone of the budget) unless it must wait.
                            if let Some(reservation) = budget.reserve_now(&waiting.cost, now) {
                                waiting.grant(reservation, now);
                                continue;
                            }
                        }
                        let reserve = waiting
                            .reserve
                            .get_or_insert_with(|| budget.reserve(waiting.cost));
                        match ready!(reserve.poll_reserve(cx)) {
                            Ok(reservation) => {
                                waiting.reserve = None;
                                waiting.grant(reservation, now);
                            }
                            Err(error) => {
                                waiting.reserve = None;
                                this.waiting.take();
                                if let Some(end) = this.end.take() {
                                    end.end(EndReason::Error);
                                }
                                return Poll::Ready(Err(error));
                            }
                        }
                    }
                    // A request that waited for its reservation may be granted while another
                    // response has paused the handle: it holds its reservations until the gate
                    // opens (they are restamped below to the instant it is really sent).
                    ready!(waiting.poll_gate(cx));
                    // Those granted in an earlier poll move to the dispatch instant.
                    let older = match waiting.newest {
                        Some((at, before)) if at >= now => before,
                        _ => waiting.granted.len(),
                    };
                    for reservation in &mut waiting.granted[..older] {
                        reservation.restamp();
                    }
                    let reservations = std::mem::take(&mut waiting.granted);
                    record(this.slot, waiting.key, this.slot.attempt(), reservations);
                    let request = waiting.request.take().expect("request sent once");
                    let dispatched = this
                        .dispatched
                        .insert(this.slot.dispatch_at(&waiting.feedback, now));
                    *this.sent = Some(now);
                    // A header layer inside on the same handle takes this dispatch's instant
                    // (the one the reservations were charged at) for its attempt, and dates its
                    // reports with it, rather than reading the clock a moment later.
                    let sending = dispatched.sending();
                    let future = waiting.service.call(request);
                    drop(sending);
                    // Dropped in place rather than taken out (a move of the whole state).
                    *this.waiting = None;
                    this.state.set(State::Called { future });
                }
                StateProj::Called { future } => {
                    let result = ready!(future.poll(cx));
                    if let (Ok(_), Some(sent)) = (&result, this.sent.take()) {
                        // A header layer below has just published what this response says.
                        for budget in this.budgets.iter() {
                            budget.response_heard(sent);
                        }
                    }
                    let slot = this.slot.clone();
                    let result = result.map(|response| UsageBody::wrap(response, slot));
                    let dispatched = this.dispatched.as_ref().expect("dispatched before called");
                    return Poll::Ready(settle(result, dispatched, this.end.take()));
                }
            }
        }
    }
}

impl<F, S, B> fmt::Debug for ResponseFuture<F, S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("waiting", &self.waiting.is_some())
            .field("slot", &self.slot)
            .finish()
    }
}
