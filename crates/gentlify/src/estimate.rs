//! The stack's token estimate, skipped when no budget counts tokens.

use gentlify_core::Dimension;

use crate::budget::{Estimate, TokenBudget, TokenCost};

/// The estimate a [`Throttle`](crate::Throttle) gives its budget layer: the configured estimate
/// `E` when one of the stack's budgets limits tokens (total, input or output), else a cost of
/// zero tokens without reading the request.
///
/// Estimating reads the request's JSON, the largest single cost of the success path; a stack
/// whose budgets count only requests (or that has no budget, the default until
/// [`tokens_per_minute`](crate::Throttle::tokens_per_minute) is set) does not need it.
#[derive(Debug, Clone)]
pub struct StackEstimate<E> {
    inner: E,
    counts_tokens: bool,
}

impl<E> StackEstimate<E> {
    pub(crate) fn new(inner: E, budgets: &[TokenBudget]) -> Self {
        let counts_tokens = budgets.iter().any(|budget| {
            [
                Dimension::Tokens,
                Dimension::InputTokens,
                Dimension::OutputTokens,
            ]
            .into_iter()
            .any(|d| budget.remaining(d).is_some())
        });
        StackEstimate {
            inner,
            counts_tokens,
        }
    }

    /// True when the estimate runs (some budget limits tokens).
    pub fn counts_tokens(&self) -> bool {
        self.counts_tokens
    }
}

impl<B, E: Estimate<B>> Estimate<B> for StackEstimate<E> {
    #[inline]
    fn estimate(&self, request: &http::Request<B>) -> TokenCost {
        if self.counts_tokens {
            self.inner.estimate(request)
        } else {
            TokenCost::default()
        }
    }
}
