//! What the stack's types cost every request: its layers nest their futures and response bodies
//! by value, so every byte a part adds is moved again by each layer above it at each step.

mod common;

use std::mem::{size_of, size_of_val};

use gentlify::Throttle;
use tower::Service;

type Request = http::Request<String>;

fn sizes<S: Service<Request>>(_: &S) -> (usize, usize) {
    (size_of::<S::Future>(), size_of::<S::Response>())
}

/// `Throttle::new()`'s stack over a service answering 200.
macro_rules! default_stack {
    () => {
        tower::Layer::layer(
            &Throttle::new().build().unwrap(),
            tower::service_fn(|_: Request| async { common::ok() }),
        )
    };
}

/// The retry part of a default stack: under the breaker and the limiter, both on by default.
macro_rules! retry_part {
    ($stack:expr) => {{
        let gentlify::Toggled::On(breaker) = $stack.get_ref() else {
            panic!("the breaker is on by default");
        };
        let gentlify::Toggled::On(concurrency) = breaker.get_ref() else {
            panic!("the limiter is on by default");
        };
        concurrency.get_ref().get_ref()
    }};
}

/// The token budget's future holds the request while it waits for its windows and its body reads
/// the usage: several hundred bytes, which the retry, the limiter and the breaker above it would
/// move at every step, whether the budget is on or switched off (an enum is as large as its larger
/// side). Boxed, the budget adds at most a pointer and a tag to the stack under it.
#[test]
fn the_budget_part_adds_at_most_a_pointer_to_the_future_and_body_of_the_stack_under_it() {
    let stack = default_stack!();
    let budget_part = retry_part!(stack).get_ref();
    let gentlify::Toggled::Off(under_budget) = budget_part else {
        panic!("the budget is off until a limit is set");
    };

    let (budget_future, budget_response) = sizes(budget_part);
    let (under_future, under_response) = sizes(under_budget);
    assert!(
        budget_future <= under_future + 16,
        "the budget part's future is {budget_future} bytes, the stack under it {under_future}"
    );
    assert!(
        budget_response <= under_response + 16,
        "the budget part's response is {budget_response} bytes, the stack under it {under_response}"
    );
}

/// The whole stack's future is what its caller moves (into its own future, a task, a join set):
/// the futures of the layers under the limiter are boxed behind it, so it is the breaker's and the
/// limiter's records of the attempt, a pointer and the observer, and `Unpin`. (At most 128 bytes:
/// moved with a few registers' worth of stores, where the several hundred bytes behind the box
/// take a `memcpy` call at each move.)
#[test]
fn the_stack_future_is_a_box_its_caller_moves_cheaply() {
    fn unpin<S: Service<Request>>(_: &S)
    where
        S::Future: Unpin,
    {
    }
    let stack = default_stack!();
    let (future, _) = sizes(&stack);
    assert!(future <= 128, "the stack's future is {future} bytes");
    unpin(&stack);
}

/// The retry layer keeps a copy of the request to send again (a few hundred bytes with its
/// headers and URI); boxed, it adds a pointer to the retry's future rather than the request's
/// size, which every layer above would move again.
#[test]
fn the_retry_part_keeps_its_request_copy_behind_a_pointer() {
    let stack = default_stack!();
    let retry = retry_part!(stack);
    let (retry_future, _) = sizes(retry);
    let (under_future, _) = sizes(retry.get_ref());
    let service = size_of_val(retry.get_ref());
    assert!(
        retry_future < under_future + service + size_of::<Request>(),
        "the retry's future is {retry_future} bytes: the stack under it {under_future}, the \
         service it keeps {service}, a request {}",
        size_of::<Request>()
    );
}

/// The retry layer's future holds the request's state for every attempt (its copy of the request,
/// the client's future): it is behind a pointer, so the limiter and the breaker around it (and the
/// stack's future) move a few dozen bytes each while the future is built, not that state once
/// more each.
#[test]
fn the_limiter_part_holds_the_stack_under_it_behind_a_pointer() {
    let stack = default_stack!();
    let gentlify::Toggled::On(breaker) = stack.get_ref() else {
        panic!("the breaker is on by default");
    };
    let limiter_part = breaker.get_ref();
    let gentlify::Toggled::On(limiter) = limiter_part else {
        panic!("the limiter is on by default");
    };
    let (limiter_future, _) = sizes(limiter_part);
    let (under_future, _) = sizes(limiter.get_ref().get_ref());
    assert!(
        limiter_future <= 80 && under_future > 256,
        "the limiter part's future is {limiter_future} bytes, the stack under it {under_future}"
    );
}

/// The stack's response body is `Send` and `Sync` when the client's body is, whatever the
/// client's future (clients' futures are rarely `Sync`; `BoxBody::new` needs a `Sync` body).
#[test]
fn the_response_body_is_sync_when_the_clients_body_is_even_if_its_future_is_not() {
    use std::future::Future;
    use std::pin::Pin;

    type Unsync = Pin<
        Box<
            dyn Future<
                    Output = Result<
                        http::Response<http_body_util::Full<bytes::Bytes>>,
                        std::convert::Infallible,
                    >,
                > + Send,
        >,
    >;
    fn send_sync_body<S, B>(_: &S)
    where
        S: Service<Request, Response = http::Response<B>>,
        B: Send + Sync,
    {
    }
    let stack = tower::Layer::layer(
        &Throttle::new()
            .limit(gentlify::Limit::requests_per_second(1_000))
            .build()
            .unwrap(),
        tower::service_fn(|_: Request| -> Unsync { Box::pin(async { common::ok() }) }),
    );
    send_sync_body(&stack);
}
