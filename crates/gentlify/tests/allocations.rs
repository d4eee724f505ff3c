//! What a part of the stack allocates per request, counted by an instrumented global allocator.
//!
//! One test only: the count is process-wide, and tests of one binary run on parallel threads.

use std::alloc::System;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use gentlify::toggle::Boxed;
use http_body::Body;
use http_body_util::Full;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::{service_fn, Service};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// [`Boxed`] puts the part's future on the heap and, once it has answered, the response's body in
/// the same cell: one allocation per request (the future's box and the body's box were two).
#[test]
fn a_boxed_part_allocates_one_cell_per_request_for_its_future_and_its_body() {
    // A service that allocates nothing: a ready future, a static body.
    let mut service = Boxed::new(service_fn(|_: ()| {
        std::future::ready(Ok::<_, Infallible>(http::Response::new(Full::new(
            Bytes::from_static(b"ok"),
        ))))
    }));
    let mut cx = Context::from_waker(Waker::noop());

    let region = Region::new(GLOBAL);
    assert!(service.poll_ready(&mut cx).is_ready());
    let mut future = service.call(());
    let Poll::Ready(Ok(response)) = Pin::new(&mut future).poll(&mut cx) else {
        panic!("the inner future is ready");
    };
    drop(future);
    let mut body = response.into_body();
    let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) else {
        panic!("the inner body has a frame ready");
    };
    let data = frame.into_data().unwrap();
    assert!(matches!(
        Pin::new(&mut body).poll_frame(&mut cx),
        Poll::Ready(None)
    ));
    assert!(body.is_end_stream());
    drop(body);
    let change = region.change();

    assert_eq!(data, Bytes::from_static(b"ok"), "the body is the inner one");
    assert_eq!(
        (change.allocations, change.deallocations),
        (1, 1),
        "one cell for the future and then the body, freed with the body"
    );
}
