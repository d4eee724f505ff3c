//! The layer.

use std::fmt;
use std::sync::Arc;

use gentlify_core::{Feedback, HoldKey};
use tower_layer::Layer;

use crate::budget::TokenBudget;
use crate::cost::JsonEstimate;
use crate::service::Budgeted;

/// Makes every request draw on one or more [`TokenBudget`]s before it is sent: its cost is
/// estimated, reserved (waiting first come, first served when the budget is short), and
/// reconciled with the real usage when the request's slot ends.
///
/// The estimate comes from the request's [`TokenCost`](crate::TokenCost) extension when it has
/// one, else from the layer's estimator: [`JsonEstimate`] by default (for bodies implementing
/// [`RequestBytes`](crate::RequestBytes)), or any [`Estimate`](crate::Estimate) given to
/// [`estimate`](TokenBudgetLayer::estimate), closures included.
///
/// A layer may draw on several budgets: one shared with other stacks (the organisation's TPM) and
/// one of its own (this model's RPM). It reserves in each in the order they were added, and
/// charges them all at the instant the request is sent.
///
/// ```
/// use std::convert::Infallible;
/// use gentlify_budget::{Limit, TokenBudget, TokenBudgetLayer};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let org = TokenBudget::new([Limit::tokens_per_minute(200_000)]).unwrap();
/// let chat_rpm = TokenBudget::new([Limit::requests_per_minute(500)]).unwrap();
///
/// let chat = ServiceBuilder::new()
///     .layer(TokenBudgetLayer::new(org.clone()).with_budget(chat_rpm))
///     .service_fn(|_req: http::Request<String>| async {
///         Ok::<_, Infallible>(http::Response::new(String::from("{}")))
///     });
/// let embeddings = ServiceBuilder::new()
///     .layer(TokenBudgetLayer::new(org.clone()))
///     .service_fn(|_req: http::Request<String>| async {
///         Ok::<_, Infallible>(http::Response::new(String::new()))
///     });
/// let body = r#"{"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#.to_string();
/// let response = chat.oneshot(http::Request::new(body)).await.unwrap();
/// # drop((response, embeddings));
/// # }
/// ```
#[derive(Clone)]
pub struct TokenBudgetLayer<E = JsonEstimate> {
    budgets: Arc<[TokenBudget]>,
    feedback: Feedback,
    estimate: E,
    key: HoldKey,
}

impl TokenBudgetLayer {
    /// A layer drawing on `budget`, with the built-in [`JsonEstimate`] and a handle of its own.
    pub fn new(budget: TokenBudget) -> Self {
        TokenBudgetLayer {
            budgets: Arc::from([budget]),
            feedback: Feedback::new(),
            estimate: JsonEstimate::new(),
            key: HoldKey::unique(),
        }
    }
}

impl<E> TokenBudgetLayer<E> {
    /// Also draws on `budget` (limits of this stack's own, say).
    pub fn with_budget(mut self, budget: TokenBudget) -> Self {
        let mut budgets = self.budgets.to_vec();
        budgets.push(budget);
        self.budgets = budgets.into();
        self
    }

    /// Shares `feedback` with the other layers of the stack: the budgets then hear the server's
    /// quota reports, honour the pause gate, and show in the handle's snapshots.
    pub fn feedback(mut self, feedback: Feedback) -> Self {
        self.feedback = feedback;
        self
    }

    /// Estimates requests without a [`TokenCost`](crate::TokenCost) extension with `estimate`.
    pub fn estimate<E2>(self, estimate: E2) -> TokenBudgetLayer<E2> {
        TokenBudgetLayer {
            budgets: self.budgets,
            feedback: self.feedback,
            estimate,
            key: self.key,
        }
    }

    /// The budgets, in the order they are reserved.
    pub fn budgets(&self) -> &[TokenBudget] {
        &self.budgets
    }
}

impl<S, E: Clone> Layer<S> for TokenBudgetLayer<E> {
    type Service = Budgeted<S, E>;

    fn layer(&self, inner: S) -> Self::Service {
        for budget in self.budgets.iter() {
            budget.register(&self.feedback);
        }
        Budgeted::new(
            inner,
            self.budgets.clone(),
            self.feedback.clone(),
            self.estimate.clone(),
            self.key,
        )
    }
}

impl<E> fmt::Debug for TokenBudgetLayer<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenBudgetLayer")
            .field("budgets", &self.budgets)
            .field("feedback", &self.feedback)
            .finish()
    }
}
