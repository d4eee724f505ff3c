//! The budget over the header feedback layer, on one handle: the reports the header layer reads
//! are re-dated to the send of their own attempt.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{json, Chunks};
use gentlify_budget::{Limit, TokenBudget, TokenBudgetLayer, TokenCost};
use gentlify_core::{BoxError, Dimension, Feedback};
use gentlify_headers::HeaderFeedbackLayer;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};

fn request(body: &str) -> http::Request<String> {
    let mut request = http::Request::new(body.to_string());
    request.extensions_mut().insert(TokenCost::new(0, 0));
    request
}

/// The cues of one attempt in flight, taken by the first layer that needs them.
type Cues = Arc<Mutex<HashMap<&'static str, oneshot::Receiver<()>>>>;

fn cue(cues: &Cues, body: &str) -> Option<oneshot::Receiver<()>> {
    let mut cues = cues.lock().unwrap();
    ["a", "b"]
        .into_iter()
        .find(|&name| name == body)
        .and_then(|name| cues.remove(name))
}

/// 60 RPM. Attempt A is sent at 0 s, three fast requests at 0.25 s, attempt B at 0.5 s, two fast
/// requests at 0.75 s. A's response reports 20 left, B's 15 (both full in 40 s). At 1 s, the
/// header layer reads `first`'s response head, 10 µs later the other's; a layer between the
/// header layer and the budget holds each response back, so that the budget hears `first`'s at
/// 1 s + 50 µs and the other's at 1 s + 60 µs: both reports were read within 1 ms of both
/// responses. Returns what the budget believes then.
async fn remaining_after_two_responses(a_first: bool) -> Option<u64> {
    let budget = TokenBudget::new([Limit::requests_per_minute(60)]).unwrap();
    let feedback = Feedback::new();
    let start = Instant::now();
    let (read_cues, heard_cues): (Cues, Cues) = Default::default();
    let mut read = HashMap::new();
    let mut heard = HashMap::new();
    for name in ["a", "b"] {
        let (tx, rx) = oneshot::channel();
        read.insert(name, tx);
        read_cues.lock().unwrap().insert(name, rx);
        let (tx, rx) = oneshot::channel();
        heard.insert(name, tx);
        heard_cues.lock().unwrap().insert(name, rx);
    }
    let (answered_tx, mut answered) = mpsc::unbounded_channel();
    let upstream = service_fn(move |req: http::Request<String>| {
        let cue = cue(&read_cues, req.body());
        let remaining = if req.body() == "a" { "20" } else { "15" };
        let answered = answered_tx.clone();
        async move {
            let Some(cue) = cue else {
                return json("{}");
            };
            cue.await.unwrap();
            answered.send(()).unwrap();
            Ok(http::Response::builder()
                .header("x-ratelimit-limit-requests", "60")
                .header("x-ratelimit-remaining-requests", remaining)
                .header("x-ratelimit-reset-requests", "40s")
                .body(Chunks::ok(["{}"]))
                .unwrap())
        }
    });
    let headers = HeaderFeedbackLayer::new()
        .feedback(feedback.clone())
        .layer(upstream);
    let between = service_fn(move |req: http::Request<String>| {
        let cue = cue(&heard_cues, req.body());
        let headers = headers.clone();
        async move {
            let response = headers.oneshot(req).await?;
            if let Some(cue) = cue {
                cue.await.unwrap();
            }
            Ok::<_, BoxError>(response)
        }
    });
    let svc = TokenBudgetLayer::new(budget.clone())
        .feedback(feedback.clone())
        .layer(between);

    let mut flights = HashMap::new();
    flights.insert("a", tokio::spawn(svc.clone().oneshot(request("a"))));
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_millis(250)).await;
    for _ in 0..3 {
        drop(svc.clone().oneshot(request("")).await.unwrap());
    }
    tokio::time::advance(Duration::from_millis(250)).await;
    flights.insert("b", tokio::spawn(svc.clone().oneshot(request("b"))));
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_millis(250)).await;
    for _ in 0..2 {
        drop(svc.clone().oneshot(request("")).await.unwrap());
    }
    tokio::time::advance(Duration::from_millis(250)).await;
    let order = if a_first { ["a", "b"] } else { ["b", "a"] };
    read.remove(order[0]).unwrap().send(()).unwrap();
    answered.recv().await.unwrap();
    tokio::time::advance(Duration::from_micros(10)).await;
    read.remove(order[1]).unwrap().send(()).unwrap();
    answered.recv().await.unwrap();
    tokio::time::advance(Duration::from_micros(40)).await;
    heard.remove(order[0]).unwrap().send(()).unwrap();
    let flight = flights.remove(order[0]).unwrap();
    drop(flight.await.unwrap().unwrap());
    tokio::time::advance(Duration::from_micros(10)).await;
    heard.remove(order[1]).unwrap().send(()).unwrap();
    let flight = flights.remove(order[1]).unwrap();
    drop(flight.await.unwrap().unwrap());
    assert_eq!(start.elapsed(), Duration::from_micros(1_000_060));
    budget.remaining(Dimension::Requests)
}

#[tokio::test(start_paused = true)]
async fn the_header_layer_s_reports_are_re_dated_to_their_own_attempt_s_send() {
    // B's report is the newer account: 15 left as of B's send (0.5 s), one a second of refill,
    // B itself and the two requests sent at 0.75 s not yet counted: 15 + 0.5 - 3 = 12, in
    // either order. (A guess by the reading instant believes 20 or 15.)
    assert_eq!(remaining_after_two_responses(true).await, Some(12));
    assert_eq!(remaining_after_two_responses(false).await, Some(12));
}
