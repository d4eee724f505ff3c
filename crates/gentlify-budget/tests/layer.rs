//! The layer's behaviour, through its public API, in virtual time.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{json, sse, tpm, Chunks};
use gentlify_budget::{Limit, TokenBudget, TokenBudgetLayer, TokenCost};
use gentlify_core::error::{BudgetWaitTooLong, RequestTooLarge};
use gentlify_core::{Dimension, Feedback, Quota, QuotaReport, Slot};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

fn request(input: u64, output: u64) -> http::Request<String> {
    let mut request = http::Request::new(String::new());
    request
        .extensions_mut()
        .insert(TokenCost::new(input, output));
    request
}

/// A handle on which `budget`'s layer listens (the layer itself is not called).
fn hearing(budget: &TokenBudget) -> Feedback {
    let feedback = Feedback::new();
    let _svc = TokenBudgetLayer::new(budget.clone())
        .feedback(feedback.clone())
        .layer(service_fn(|_req: http::Request<String>| async {
            json("{}")
        }));
    feedback
}

#[tokio::test(start_paused = true)]
async fn unused_tokens_return_when_the_json_usage_is_smaller() {
    let budget = tpm(10_000);
    let svc = TokenBudgetLayer::new(budget.clone()).layer(service_fn(|_req| async {
        json(r#"{"choices":[],"usage":{"prompt_tokens":100,"completion_tokens":50}}"#)
    }));
    let response = svc.oneshot(request(1_000, 2_000)).await.unwrap();
    assert_eq!(budget.remaining(Dimension::Tokens), Some(7_000));
    response.into_body().collect().await.unwrap();
    assert_eq!(budget.remaining(Dimension::Tokens), Some(9_850));
}

#[tokio::test(start_paused = true)]
async fn overruns_are_charged() {
    let budget = tpm(10_000);
    let svc = TokenBudgetLayer::new(budget.clone()).layer(service_fn(|_req| async {
        json(r#"{"usage":{"input_tokens":3000,"output_tokens":1500}}"#)
    }));
    let response = svc.oneshot(request(1_000, 1_000)).await.unwrap();
    response.into_body().collect().await.unwrap();
    assert_eq!(budget.remaining(Dimension::Tokens), Some(5_500));
}

#[tokio::test(start_paused = true)]
async fn recorded_tokens_win_over_the_body_usage() {
    let budget = tpm(10_000);
    let svc = TokenBudgetLayer::new(budget.clone()).layer(service_fn(
        |req: http::Request<String>| async move {
            Slot::from_extensions(req.extensions())
                .unwrap()
                .record_tokens(400);
            json(r#"{"usage":{"prompt_tokens":100,"completion_tokens":50}}"#)
        },
    ));
    let response = svc.oneshot(request(1_000, 1_000)).await.unwrap();
    response.into_body().collect().await.unwrap();
    assert_eq!(budget.remaining(Dimension::Tokens), Some(9_600));
}

#[tokio::test(start_paused = true)]
async fn a_request_larger_than_the_whole_budget_fails_at_once() {
    let budget = tpm(10_000);
    let calls = Arc::new(Mutex::new(0));
    let seen = calls.clone();
    let svc = TokenBudgetLayer::new(budget.clone()).layer(service_fn(move |_req| {
        *seen.lock().unwrap() += 1;
        async { json("{}") }
    }));
    let start = Instant::now();
    let error = svc.oneshot(request(9_000, 2_000)).await.unwrap_err();
    let too_large = error
        .downcast_ref::<RequestTooLarge>()
        .expect("typed error");
    assert_eq!(too_large.dimension(), Dimension::Tokens);
    assert_eq!((too_large.cost(), too_large.capacity()), (11_000, 10_000));
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(*calls.lock().unwrap(), 0);
    assert_eq!(budget.remaining(Dimension::Requests), Some(1_000));
}

#[tokio::test(start_paused = true)]
async fn a_short_budget_makes_the_request_wait_until_the_window_frees() {
    let budget = tpm(10_000);
    let svc = TokenBudgetLayer::new(budget.clone()).layer(service_fn(|_req| async { json("{}") }));
    let start = Instant::now();
    let first = svc.clone().oneshot(request(6_000, 0)).await.unwrap();
    drop(first); // no usage reported: the estimate stands
    tokio::time::advance(Duration::from_secs(10)).await;
    svc.oneshot(request(6_000, 0)).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(60),
        "when the first charge leaves"
    );
}

#[tokio::test(start_paused = true)]
async fn a_wait_longer_than_the_maximum_fails_with_budget_wait_too_long() {
    let budget = TokenBudget::builder()
        .limit(Limit::tokens_per_minute(10_000))
        .safety_ratio(1.0)
        .max_wait(Duration::from_secs(30))
        .build()
        .unwrap();
    let svc = TokenBudgetLayer::new(budget.clone()).layer(service_fn(|_req| async { json("{}") }));
    drop(svc.clone().oneshot(request(6_000, 0)).await.unwrap());
    let start = Instant::now();
    let error = svc.clone().oneshot(request(6_000, 0)).await.unwrap_err();
    let too_long = error.downcast_ref::<BudgetWaitTooLong>().expect("typed");
    assert_eq!(too_long.dimension(), Dimension::Tokens);
    assert_eq!(too_long.needed(), Duration::from_secs(60));
    assert_eq!(too_long.max_wait(), Duration::from_secs(30));
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "refused at once, not after hanging"
    );
    // 35 s later the same request needs 25 s: it waits.
    tokio::time::advance(Duration::from_secs(35)).await;
    let start = Instant::now();
    svc.oneshot(request(6_000, 0)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(25));
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_gives_up_at_the_maximum_wait() {
    // The waiter is expected to fit within the maximum wait, but an overrun charged while it
    // waits pushes the free capacity past it: it fails when its maximum wait is over.
    let budget = TokenBudget::builder()
        .limit(Limit::tokens_per_minute(10_000))
        .safety_ratio(1.0)
        .max_wait(Duration::from_secs(65))
        .build()
        .unwrap();
    let _held = budget.try_reserve(&TokenCost::new(6_000, 0)).unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    let start = Instant::now();
    let waiting = tokio::spawn(budget.reserve(TokenCost::new(6_000, 0)));
    tokio::task::yield_now().await;
    assert_eq!(budget.waiting(), 1, "expected to fit at 60 s, within 65 s");
    tokio::time::advance(Duration::from_secs(10)).await;
    // An overrun charged at 40 s holds 5 000 until 100 s: past the waiter's deadline at 95 s.
    budget.charge_now(&TokenCost::new(5_000, 0));
    let error = waiting.await.unwrap().unwrap_err();
    let too_long = error.downcast_ref::<BudgetWaitTooLong>().expect("typed");
    assert_eq!(too_long.dimension(), Dimension::Tokens);
    assert_eq!(start.elapsed(), Duration::from_secs(65));
    assert_eq!(budget.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn two_stacks_sharing_a_budget_are_served_first_come_first_served() {
    let budget = tpm(10_000);
    let order = Arc::new(Mutex::new(Vec::new()));
    let stack = |name: &'static str| {
        let order = order.clone();
        TokenBudgetLayer::new(budget.clone()).layer(service_fn(move |_req| {
            order.lock().unwrap().push((name, Instant::now()));
            async { json("{}") }
        }))
    };
    let (chat, embeddings) = (stack("chat"), stack("embeddings"));
    drop(chat.clone().oneshot(request(9_000, 0)).await.unwrap());
    tokio::time::advance(Duration::from_secs(1)).await;
    // The large chat request waits first; the small embeddings request would fit now (1 000 left)
    // but must not overtake it.
    let big = tokio::spawn(chat.oneshot(request(5_000, 0)));
    tokio::task::yield_now().await;
    let small = tokio::spawn(embeddings.oneshot(request(500, 0)));
    tokio::task::yield_now().await;
    assert_eq!(budget.waiting(), 2);
    small.await.unwrap().unwrap();
    big.await.unwrap().unwrap();
    let order = order.lock().unwrap();
    assert_eq!(order[1].0, "chat");
    assert_eq!(order[2].0, "embeddings");
    assert_eq!(
        order[1].1, order[2].1,
        "served together once the first charge left"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_leaves_the_queue() {
    let budget = tpm(10_000);
    let _held = budget.try_reserve(&TokenCost::new(9_000, 0)).unwrap();
    let first = tokio::spawn(budget.reserve(TokenCost::new(5_000, 0)));
    tokio::task::yield_now().await;
    let second = tokio::spawn(budget.reserve(TokenCost::new(500, 0)));
    tokio::task::yield_now().await;
    assert_eq!(budget.waiting(), 2);
    first.abort();
    let start = Instant::now();
    second.await.unwrap().unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(budget.waiting(), 0);
}

const OPENAI_STREAM: [&str; 4] = [
    "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n",
    "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}],\"usage\":null}\n\n",
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":120,\"comp",
    "letion_tokens\":30,\"total_tokens\":150}}\n\ndata: [DONE]\n\n",
];

const ANTHROPIC_STREAM: [&str; 6] = [
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":200,\"output_tokens\":1}}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hi\"}}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"!\"}}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":40}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
];

#[tokio::test(start_paused = true)]
async fn openai_stream_usage_chunk_reconciles_the_reservation() {
    let budget = tpm(10_000);
    let svc = TokenBudgetLayer::new(budget.clone())
        .layer(service_fn(|_req| async { sse(Chunks::ok(OPENAI_STREAM)) }));
    let response = svc.oneshot(request(500, 1_000)).await.unwrap();
    assert_eq!(budget.remaining(Dimension::Tokens), Some(8_500));
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert!(text.ends_with(b"data: [DONE]\n\n"), "frames pass through");
    assert_eq!(budget.remaining(Dimension::Tokens), Some(9_850));
}

#[tokio::test(start_paused = true)]
async fn anthropic_stream_takes_message_start_input_and_the_last_delta() {
    let budget = TokenBudget::builder()
        .limit(Limit::input_tokens_per_minute(10_000))
        .limit(Limit::output_tokens_per_minute(2_000))
        .safety_ratio(1.0)
        .build()
        .unwrap();
    let svc = TokenBudgetLayer::new(budget.clone()).layer(service_fn(|_req| async {
        sse(Chunks::ok(ANTHROPIC_STREAM))
    }));
    let response = svc.oneshot(request(500, 1_000)).await.unwrap();
    response.into_body().collect().await.unwrap();
    assert_eq!(budget.remaining(Dimension::InputTokens), Some(9_800));
    assert_eq!(budget.remaining(Dimension::OutputTokens), Some(1_960));
}

#[tokio::test(start_paused = true)]
async fn a_stream_cut_before_its_usage_keeps_the_estimate() {
    for stream in [
        Chunks::cut(OPENAI_STREAM[..2].iter().copied()),
        Chunks::cut(ANTHROPIC_STREAM[..2].iter().copied()),
    ] {
        let budget = tpm(10_000);
        let svc = TokenBudgetLayer::new(budget.clone()).layer(service_fn(move |_req| {
            let stream = stream.clone();
            async move { sse(stream) }
        }));
        let response = svc.oneshot(request(500, 1_000)).await.unwrap();
        assert!(response.into_body().collect().await.is_err());
        assert_eq!(budget.remaining(Dimension::Tokens), Some(8_500));
    }
    // Dropping the body mid-stream too.
    let budget = tpm(10_000);
    let svc = TokenBudgetLayer::new(budget.clone())
        .layer(service_fn(|_req| async { sse(Chunks::ok(OPENAI_STREAM)) }));
    let mut body = svc.oneshot(request(500, 1_000)).await.unwrap().into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    assert_eq!(budget.remaining(Dimension::Tokens), Some(8_500));
}

#[tokio::test(start_paused = true)]
async fn each_attempt_of_a_retry_above_the_layer_is_charged() {
    let budget = tpm(10_000);
    let feedback = Feedback::new();
    let extensions = Arc::new(Mutex::new(None));
    let seen = extensions.clone();
    let mut svc = TokenBudgetLayer::new(budget.clone())
        .feedback(feedback.clone())
        .layer(service_fn(move |req: http::Request<String>| {
            *seen.lock().unwrap() = Some(req.extensions().clone());
            let attempt = Slot::from_extensions(req.extensions()).unwrap().attempt();
            async move {
                if attempt == 0 {
                    let mut r = json(r#"{"error":{"code":"rate_limit_exceeded"}}"#).unwrap();
                    *r.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
                    Ok::<_, Infallible>(r)
                } else {
                    json(r#"{"usage":{"prompt_tokens":100,"completion_tokens":100}}"#)
                }
            }
        }));
    // What a retry layer above does: the first attempt's response is read and discarded, the
    // request is sent again with the same extensions (and so the same slot).
    let (slot, end) = Slot::new(&feedback);
    let mut first = request(1_000, 1_000);
    first.extensions_mut().insert(slot.clone());
    let response = svc.ready().await.unwrap().call(first).await.unwrap();
    response.into_body().collect().await.unwrap();
    // The charges are read from `_used`: the 429 also empties what the blind budget believes
    // is left (see `a_429_heard_blind_paces_what_comes_back_at_the_capacity_rate`).
    assert_eq!(budget_field(&feedback, "tokens_per_60s_used"), 2_000);
    slot.next_attempt();
    let mut second = request(1_000, 1_000);
    *second.extensions_mut() = extensions.lock().unwrap().take().unwrap();
    let response = svc.ready().await.unwrap().call(second).await.unwrap();
    response.into_body().collect().await.unwrap();
    assert_eq!(budget_field(&feedback, "tokens_per_60s_used"), 4_000);
    end.end(gentlify_core::EndReason::BodyEnded);
    // The 429 keeps its estimate; the final attempt is reconciled to its usage.
    assert_eq!(budget_field(&feedback, "tokens_per_60s_used"), 2_200);
    assert_eq!(budget_field(&feedback, "requests_per_60s_used"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_retry_cloned_from_the_original_request_is_charged_once() {
    // gentlify-retry replays a clone of the request it was given: its extensions hold the slot
    // but nothing this layer added to the first attempt's request.
    let budget = tpm(10_000);
    let feedback = Feedback::new();
    let mut svc = TokenBudgetLayer::new(budget.clone())
        .feedback(feedback.clone())
        .layer(service_fn(|req: http::Request<String>| {
            let attempt = Slot::from_extensions(req.extensions()).unwrap().attempt();
            async move {
                if attempt == 0 {
                    let mut r = json("{}").unwrap();
                    *r.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
                    Ok::<_, Infallible>(r)
                } else {
                    json("{}")
                }
            }
        }));
    let (slot, end) = Slot::new(&feedback);
    for attempt in 0..3 {
        if attempt > 0 {
            slot.next_attempt();
        }
        let mut clone = request(1_000, 0);
        clone.extensions_mut().insert(slot.clone());
        let response = svc.ready().await.unwrap().call(clone).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    end.end(gentlify_core::EndReason::BodyEnded);
    // Read from `_used`: the 429 also empties what the blind budget believes is left.
    assert_eq!(
        budget_field(&feedback, "requests_per_60s_used"),
        3,
        "three attempts, three charges"
    );
    assert_eq!(budget_field(&feedback, "tokens_per_60s_used"), 3_000);
}

#[tokio::test(start_paused = true)]
async fn attempts_made_below_the_layer_are_charged_when_the_slot_ends() {
    let budget = tpm(10_000);
    let svc = TokenBudgetLayer::new(budget.clone()).layer(service_fn(
        |req: http::Request<String>| async move {
            // A retry layer below the budget: two more attempts, unseen by the budget.
            let slot = Slot::from_extensions(req.extensions()).unwrap();
            slot.next_attempt();
            slot.next_attempt();
            json("{}")
        },
    ));
    let response = svc.oneshot(request(1_000, 0)).await.unwrap();
    response.into_body().collect().await.unwrap();
    assert_eq!(budget.remaining(Dimension::Requests), Some(997));
    assert_eq!(budget.remaining(Dimension::Tokens), Some(7_000));
}

#[tokio::test(start_paused = true)]
async fn the_server_account_is_a_bucket_refilling_at_its_limit_rate() {
    // The default 90 % safety ratio: the budget alone believes 9 000.
    let budget = TokenBudget::new([Limit::tokens_per_minute(10_000)]).unwrap();
    let feedback = hearing(&budget);
    // OpenAI's reading: 2 000 left, full again in 20 s at 10 000 per minute: the bucket holds
    // 2 000 + 20 s x 10 000 / 60 s = 5 333.
    feedback.report_quota(&QuotaReport::new(
        "openai",
        vec![Quota::new(Dimension::Tokens)
            .with_limit(10_000)
            .with_remaining(2_000)
            .with_reset_after(Duration::from_secs(20))],
    ));
    assert_eq!(budget.remaining(Dimension::Tokens), Some(2_000));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(budget.remaining(Dimension::Tokens), Some(3_666));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(budget.remaining(Dimension::Tokens), Some(5_333));
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(
        budget.remaining(Dimension::Tokens),
        Some(5_333),
        "not a full window after the reset: the bucket is full"
    );
    // The server's account of the very limit the budget enforces is exact: no safety margin.
    feedback.report_quota(&QuotaReport::new(
        "openai",
        vec![Quota::new(Dimension::Tokens)
            .with_limit(10_000)
            .with_remaining(9_500)
            .with_reset_after(Duration::from_secs(3))],
    ));
    assert_eq!(budget.remaining(Dimension::Tokens), Some(9_500));
    let part = feedback.snapshot();
    let part = part.part("budget").expect("registered on the handle");
    assert_eq!(
        part.get("tokens_per_60s_server_remaining"),
        Some(&gentlify_core::SnapshotValue::U64(9_500))
    );
}

#[tokio::test(start_paused = true)]
async fn a_report_of_another_limit_only_lowers_the_budget() {
    let budget = TokenBudget::new([Limit::tokens_per_minute(10_000)]).unwrap();
    let feedback = hearing(&budget);
    // Without a limit the report cannot be read as a bucket: what it says holds until its
    // reset, and never raises the budget above its own window.
    feedback.report_quota(&QuotaReport::new(
        "openai",
        vec![Quota::new(Dimension::Tokens)
            .with_remaining(2_000)
            .with_reset_after(Duration::from_secs(20))],
    ));
    tokio::time::advance(Duration::from_secs(19)).await;
    assert_eq!(budget.remaining(Dimension::Tokens), Some(2_000));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(budget.remaining(Dimension::Tokens), Some(9_000));
    feedback.report_quota(&QuotaReport::new(
        "openai",
        vec![Quota::new(Dimension::Tokens)
            .with_limit(50_000)
            .with_remaining(50_000)
            .with_reset_after(Duration::ZERO)],
    ));
    assert_eq!(
        budget.remaining(Dimension::Tokens),
        Some(9_000),
        "never raised"
    );
    feedback.report_quota(&QuotaReport::new(
        "openai",
        vec![Quota::new(Dimension::Tokens)
            .with_limit(50_000)
            .with_remaining(1_000)
            .with_reset_after(Duration::ZERO)],
    ));
    assert_eq!(budget.remaining(Dimension::Tokens), Some(1_000), "lowered");
}

#[tokio::test(start_paused = true)]
async fn a_request_waits_for_the_pause_gate_before_reserving() {
    let budget = tpm(10_000);
    let feedback = Feedback::new();
    let sent = Arc::new(Mutex::new(None));
    let at = sent.clone();
    let svc = TokenBudgetLayer::new(budget.clone())
        .feedback(feedback.clone())
        .layer(service_fn(move |_req| {
            *at.lock().unwrap() = Some(Instant::now());
            async { json("{}") }
        }));
    let start = Instant::now();
    feedback.pause_gate().pause_for(Duration::from_secs(3));
    let call = tokio::spawn(svc.oneshot(request(1_000, 0)));
    tokio::task::yield_now().await;
    assert_eq!(
        budget.remaining(Dimension::Tokens),
        Some(10_000),
        "nothing reserved while paused"
    );
    call.await.unwrap().unwrap();
    assert_eq!(
        sent.lock().unwrap().unwrap() - start,
        Duration::from_secs(3)
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_granted_while_the_gate_is_closed_waits_for_it_to_open() {
    // 1 000 tokens a minute, all used at 0 s: the second request waits until 60 s for its 500
    // tokens; a pause set while it waits (another response's headers) that ends at 90 s, after the
    // grant, holds it until it ends.
    let budget = tpm(1_000);
    let feedback = Feedback::new();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let at = sent.clone();
    let svc = TokenBudgetLayer::new(budget.clone())
        .feedback(feedback.clone())
        .layer(service_fn(move |_req| {
            at.lock().unwrap().push(Instant::now());
            async { json("{}") }
        }));
    let start = Instant::now();
    svc.clone().oneshot(request(1_000, 0)).await.unwrap();
    let second = tokio::spawn(svc.oneshot(request(500, 0)));
    tokio::time::sleep(Duration::from_secs(10)).await;
    feedback.pause_gate().pause_for(Duration::from_secs(80));
    second.await.unwrap().unwrap();
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[1] - start,
        Duration::from_secs(90),
        "sent when the pause ends, not when the budget granted it (60 s)"
    );
}

#[tokio::test(start_paused = true)]
async fn the_snapshot_shows_used_remaining_reset_and_waiting() {
    let budget = tpm(10_000);
    let feedback = Feedback::new();
    let _layer = TokenBudgetLayer::new(budget.clone()).feedback(feedback.clone());
    let _svc = _layer.layer(service_fn(|_req: http::Request<String>| async {
        json("{}")
    }));
    let _held = budget.try_reserve(&TokenCost::new(9_000, 0)).unwrap();
    tokio::time::advance(Duration::from_secs(15)).await;
    let waiter = tokio::spawn(budget.reserve(TokenCost::new(5_000, 0)));
    tokio::task::yield_now().await;
    let snapshot = feedback.snapshot();
    let part = snapshot.part("budget").unwrap();
    use gentlify_core::SnapshotValue::{Duration as D, U64};
    assert_eq!(part.get("tokens_per_60s_used"), Some(&U64(9_000)));
    assert_eq!(part.get("tokens_per_60s_unseen"), Some(&U64(0)));
    assert_eq!(part.get("tokens_per_60s_remaining"), Some(&U64(1_000)));
    assert_eq!(
        part.get("tokens_per_60s_reset"),
        Some(&D(Duration::from_secs(45)))
    );
    assert_eq!(part.get("requests_per_60s_used"), Some(&U64(1)));
    assert_eq!(part.get("waiting"), Some(&U64(1)));
    assert_eq!(snapshot.parts.len(), 1, "registered once");
    waiter.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_stack_s_own_limits_apply_on_top_of_the_shared_budget() {
    let shared = tpm(100_000);
    let own = TokenBudget::builder()
        .limit(Limit::requests_per_minute(2))
        .safety_ratio(1.0)
        .build()
        .unwrap();
    let svc = TokenBudgetLayer::new(shared.clone())
        .with_budget(own.clone())
        .layer(service_fn(|_req| async { json("{}") }));
    let start = Instant::now();
    for _ in 0..3 {
        drop(svc.clone().oneshot(request(1_000, 0)).await.unwrap());
    }
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(60),
        "the third waits for its own RPM"
    );
    assert_eq!(shared.remaining(Dimension::Tokens), Some(100_000 - 1_000));
    assert_eq!(shared.remaining(Dimension::Requests), Some(999));
}

#[tokio::test(start_paused = true)]
async fn a_charge_made_while_waiting_for_another_budget_counts_from_dispatch() {
    let shared = tpm(10_000);
    let own = TokenBudget::builder()
        .limit(Limit::requests_per_minute(1))
        .safety_ratio(1.0)
        .build()
        .unwrap();
    let svc = TokenBudgetLayer::new(shared.clone())
        .with_budget(own)
        .layer(service_fn(|_req| async { json("{}") }));
    drop(svc.clone().oneshot(request(1_000, 0)).await.unwrap());
    // Reserved in the shared budget at 0 s, but sent at 60 s when its own RPM allows.
    let start = Instant::now();
    drop(svc.oneshot(request(1_000, 0)).await.unwrap());
    assert_eq!(start.elapsed(), Duration::from_secs(60));
    assert_eq!(
        shared.remaining(Dimension::Tokens),
        Some(9_000),
        "the second request's tokens stay charged a full window after they were sent"
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(shared.remaining(Dimension::Tokens), Some(10_000));
}

#[tokio::test(start_paused = true)]
async fn a_closure_estimates_requests_without_a_token_cost() {
    let budget = tpm(10_000);
    let svc = TokenBudgetLayer::new(budget.clone())
        .estimate(|req: &http::Request<Vec<u8>>| TokenCost::new(req.body().len() as u64, 100))
        .layer(service_fn(|_req: http::Request<Vec<u8>>| async {
            json("{}")
        }));
    let response = svc
        .clone()
        .oneshot(http::Request::new(vec![0; 400]))
        .await
        .unwrap();
    assert_eq!(budget.remaining(Dimension::Tokens), Some(9_500));
    drop(response);
    // The extension still wins over the estimator.
    let mut request = http::Request::new(vec![0; 400]);
    request.extensions_mut().insert(TokenCost::new(1, 1));
    drop(svc.oneshot(request).await.unwrap());
    assert_eq!(budget.remaining(Dimension::Tokens), Some(9_498));
}

#[tokio::test(start_paused = true)]
async fn the_built_in_estimator_reads_the_json_body() {
    let budget = tpm(10_000);
    let svc = TokenBudgetLayer::new(budget.clone()).layer(service_fn(
        |_req: http::Request<String>| async { json("{}") },
    ));
    let body = r#"{"model":"claude-sonnet-4","max_tokens":256,"system":"Be brief.",
        "messages":[{"role":"user","content":[{"type":"text","text":"What is a token bucket?"}]}]}"#;
    let request = http::Request::post("/v1/messages")
        .body(body.to_string())
        .unwrap();
    drop(svc.oneshot(request).await.unwrap());
    // 9 + 23 characters of prompt = 8 tokens, plus max_tokens.
    assert_eq!(budget.remaining(Dimension::Tokens), Some(10_000 - 8 - 256));
}

/// One attempt through `svc`, then the server's report on its response (OpenAI-style: remaining
/// and a reset, one report per response).
async fn attempt_then_report<S>(svc: &mut S, feedback: &Feedback, remaining: u64)
where
    S: Service<http::Request<String>>,
    S::Error: std::fmt::Debug,
{
    svc.ready().await.unwrap();
    svc.call(request(0, 0)).await.unwrap();
    feedback.report_quota(&QuotaReport::new(
        "openai",
        vec![Quota::new(Dimension::Requests)
            .with_limit(1_200)
            .with_remaining(remaining)
            .with_reset_after(Duration::from_secs(30))],
    ));
}

fn rpm_1200_stack(
    feedback: &Feedback,
) -> (
    TokenBudget,
    impl Service<http::Request<String>, Error = gentlify_core::BoxError>,
) {
    // 1 200 RPM at the default ratio: a capacity of 1 080.
    let budget = TokenBudget::new([Limit::requests_per_minute(1_200)]).unwrap();
    let svc = TokenBudgetLayer::new(budget.clone())
        .feedback(feedback.clone())
        .layer(service_fn(|_req: http::Request<String>| async {
            json("{}")
        }));
    (budget, svc)
}

fn budget_field(feedback: &Feedback, key: &str) -> u64 {
    match feedback.snapshot().part("budget").unwrap().get(key) {
        Some(gentlify_core::SnapshotValue::U64(n)) => *n,
        other => panic!("{key}: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn used_counts_the_attempts_when_the_server_agrees_with_them() {
    let feedback = Feedback::new();
    let (budget, mut svc) = rpm_1200_stack(&feedback);
    for k in 1..=50 {
        attempt_then_report(&mut svc, &feedback, 1_200 - k).await;
        assert_eq!(budget_field(&feedback, "requests_per_60s_used"), k);
        assert_eq!(budget_field(&feedback, "requests_per_60s_unseen"), 0);
        assert_eq!(budget.remaining(Dimension::Requests), Some(1_080 - k));
    }
}

#[tokio::test(start_paused = true)]
async fn a_server_deficit_is_not_counted_as_used_and_does_not_accumulate_over_reports() {
    // The server's remaining is far below what the budget believes, on every one of the 50
    // responses: 10 left after the 50th, full in 30 s at 1 200 per minute, a bucket of 610.
    let feedback = Feedback::new();
    let (budget, mut svc) = rpm_1200_stack(&feedback);
    for k in 1..=50 {
        attempt_then_report(&mut svc, &feedback, 60 - k).await;
        assert_eq!(
            budget.remaining(Dimension::Requests),
            Some(60 - k),
            "never more than the server's latest remaining"
        );
        assert_eq!(
            budget_field(&feedback, "requests_per_60s_used"),
            k,
            "used is the attempts made"
        );
        assert_eq!(
            budget_field(&feedback, "requests_per_60s_unseen"),
            1_080 - 60,
            "the deficit is set once per report, not added up"
        );
    }
    // The bucket refills at 20 a second until it is full; the attempts stay in the window.
    tokio::time::advance(Duration::from_secs(15)).await;
    assert_eq!(budget.remaining(Dimension::Requests), Some(10 + 300));
    assert_eq!(
        budget_field(&feedback, "requests_per_60s_unseen"),
        1_080 - 50 - 310
    );
    tokio::time::advance(Duration::from_secs(45)).await;
    assert_eq!(budget_field(&feedback, "requests_per_60s_used"), 0);
    assert_eq!(budget.remaining(Dimension::Requests), Some(610));
}

/// 60 RPM. A slow request's response reports 10 left (full in 50 s) as the server counted them
/// when it arrived, before the 5 fast requests sent while it was in flight; the report is read
/// `read_before` before the budget hears the response. Returns what the budget then believes.
async fn remaining_after_a_slow_report(read_before: Duration) -> Option<u64> {
    let budget = TokenBudget::new([Limit::requests_per_minute(60)]).unwrap();
    let feedback = Feedback::new();
    let publisher = feedback.clone();
    let svc = TokenBudgetLayer::new(budget.clone())
        .feedback(feedback.clone())
        .layer(service_fn(move |req: http::Request<String>| {
            let publisher = publisher.clone();
            async move {
                if req.body() == "slow" {
                    // Stands for the header layer below the budget, reading the response head.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    publisher.report_quota(&QuotaReport::new(
                        "openai",
                        vec![Quota::new(Dimension::Requests)
                            .with_limit(60)
                            .with_remaining(10)
                            .with_reset_after(Duration::from_secs(50))],
                    ));
                    if !read_before.is_zero() {
                        tokio::time::sleep(read_before).await;
                    }
                }
                json("{}")
            }
        }));
    let mut slow = request(0, 0);
    *slow.body_mut() = "slow".to_string();
    let slow = tokio::spawn(svc.clone().oneshot(slow));
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_millis(500)).await;
    for _ in 0..5 {
        drop(svc.clone().oneshot(request(0, 0)).await.unwrap());
    }
    drop(slow.await.unwrap().unwrap());
    budget.remaining(Dimension::Requests)
}

#[tokio::test(start_paused = true)]
async fn a_report_counts_the_attempts_sent_while_its_own_was_in_flight() {
    // 10 at the slow request's send, 5 sent at 0.5 s, one a second of refill, the slow request
    // itself counted again on the safe side: 5, not 10.
    assert_eq!(remaining_after_a_slow_report(Duration::ZERO).await, Some(5));
}

#[tokio::test(start_paused = true)]
async fn a_report_read_a_moment_before_the_budget_hears_its_response_is_still_re_dated() {
    // As above, on a clock that moves between the header layer's reading of the head and the
    // budget's hearing of the response (a real clock always does): 50 µs apart.
    assert_eq!(
        remaining_after_a_slow_report(Duration::from_micros(50)).await,
        Some(5)
    );
}

/// Which of two attempts in flight together publishes its report first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum First {
    A,
    B,
}

/// What the test says to an attempt in flight: read your response's head now (and publish its
/// report), then return your response now.
struct Cues {
    read: tokio::sync::oneshot::Receiver<()>,
    heard: tokio::sync::oneshot::Receiver<()>,
}

/// 60 RPM. Attempt A is sent at 0 s, three fast requests at 0.25 s, attempt B at 0.5 s, two fast
/// requests at 0.75 s. A's and B's responses come at 1 s and are read by a stand-in for the
/// header layer below the budget, which publishes each one's report dated by its own attempt's
/// send instant (`QuotaReport::sent_at`): `first`'s at 1 s, the other's 10 µs later; `first`'s
/// response is heard by the budget at 1 s + 50 µs, the other's at 1 s + 60 µs (both reports
/// within 1 ms of both responses). `reports` says which of A and B publish one. Returns what the
/// budget believes then.
async fn remaining_after_two_reports(first: First, reports: [bool; 2]) -> Option<u64> {
    use tokio::sync::{mpsc, oneshot};

    let budget = TokenBudget::new([Limit::requests_per_minute(60)]).unwrap();
    let feedback = Feedback::new();
    let publisher = feedback.clone();
    let start = Instant::now();
    let (mut read, mut heard, mut cues) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..2 {
        let (read_tx, read_rx) = oneshot::channel();
        let (heard_tx, heard_rx) = oneshot::channel();
        read.push(Some(read_tx));
        heard.push(Some(heard_tx));
        cues.push(Some(Cues {
            read: read_rx,
            heard: heard_rx,
        }));
    }
    let cues = Arc::new(Mutex::new(cues));
    let (published_tx, mut published) = mpsc::unbounded_channel();
    let svc = TokenBudgetLayer::new(budget.clone())
        .feedback(feedback.clone())
        .layer(service_fn(move |req: http::Request<String>| {
            let publisher = publisher.clone();
            let published = published_tx.clone();
            // The attempt's send instant: the budget dispatches it in this very call.
            let sent = Instant::now();
            let (who, remaining) = match req.body().as_str() {
                "a" => (0, 20),
                "b" => (1, 15),
                _ => (usize::MAX, 0),
            };
            let cue = cues.lock().unwrap().get_mut(who).and_then(Option::take);
            async move {
                let Some(cue) = cue else {
                    return json("{}");
                };
                cue.read.await.unwrap();
                if reports[who] {
                    publisher.report_quota(
                        &QuotaReport::new(
                            "openai",
                            vec![Quota::new(Dimension::Requests)
                                .with_limit(60)
                                .with_remaining(remaining)
                                .with_reset_after(Duration::from_secs(40))],
                        )
                        .sent_at(sent),
                    );
                }
                published.send(()).unwrap();
                cue.heard.await.unwrap();
                json("{}")
            }
        }));
    let body = |body: &str| {
        let mut request = request(0, 0);
        *request.body_mut() = body.to_string();
        request
    };
    let mut flights = vec![tokio::spawn(svc.clone().oneshot(body("a")))];
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_millis(250)).await;
    for _ in 0..3 {
        drop(svc.clone().oneshot(request(0, 0)).await.unwrap());
    }
    tokio::time::advance(Duration::from_millis(250)).await;
    flights.push(tokio::spawn(svc.clone().oneshot(body("b"))));
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_millis(250)).await;
    for _ in 0..2 {
        drop(svc.clone().oneshot(request(0, 0)).await.unwrap());
    }
    tokio::time::advance(Duration::from_millis(250)).await;
    let order = match first {
        First::A => [0, 1],
        First::B => [1, 0],
    };
    read[order[0]].take().unwrap().send(()).unwrap();
    published.recv().await.unwrap();
    tokio::time::advance(Duration::from_micros(10)).await;
    read[order[1]].take().unwrap().send(()).unwrap();
    published.recv().await.unwrap();
    tokio::time::advance(Duration::from_micros(40)).await;
    heard[order[0]].take().unwrap().send(()).unwrap();
    drop((&mut flights[order[0]]).await.unwrap().unwrap());
    tokio::time::advance(Duration::from_micros(10)).await;
    heard[order[1]].take().unwrap().send(()).unwrap();
    drop((&mut flights[order[1]]).await.unwrap().unwrap());
    assert_eq!(start.elapsed(), Duration::from_micros(1_000_060));
    budget.remaining(Dimension::Requests)
}

#[tokio::test(start_paused = true)]
async fn two_reports_in_flight_together_are_each_re_dated_to_their_own_attempt_s_send() {
    // B's report alone: 15 left as of 0.5 s (B's send), one a second of refill, B itself and
    // the two requests sent at 0.75 s not yet counted by the server: 15 + 0.5 - 3 = 12.
    let b_alone = remaining_after_two_reports(First::B, [false, true]).await;
    assert_eq!(b_alone, Some(12));
    // A's report alone: 20 as of 0 s, one refill, all 7 later attempts replayed: 20 + 1 - 7.
    let a_alone = remaining_after_two_reports(First::A, [true, false]).await;
    assert_eq!(a_alone, Some(14));
    // Both: B's report is the newer account (as of 0.5 s, A's as of 0 s), whichever is read
    // first and whichever response the budget hears first. The guess by the reading instant
    // (the newest report within 1 ms of a response is that response's), used when the reports
    // do not say their attempt's send, believes more than the server said: 20 when A's is read
    // and heard first (B's report taken for A's, then A's report restored un-re-dated as newer
    // than A's send), 15 when B's is (B's report restored un-re-dated).
    assert_eq!(
        remaining_after_two_reports(First::A, [true, true]).await,
        b_alone,
        "A's report read and heard first"
    );
    assert_eq!(
        remaining_after_two_reports(First::B, [true, true]).await,
        b_alone,
        "B's report read and heard first"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_queued_behind_others_is_refused_at_once_when_the_request_limit_is_too_far() {
    let budget = TokenBudget::builder()
        .limit(Limit::requests_per_minute(2))
        .safety_ratio(1.0)
        .max_wait(Duration::from_secs(50))
        .build()
        .unwrap();
    let _first = budget.try_reserve(&TokenCost::new(1, 0)).unwrap();
    tokio::time::advance(Duration::from_secs(20)).await;
    let _second = budget.try_reserve(&TokenCost::new(1, 0)).unwrap();
    // The third fits when the first leaves the window, in 40 s: it waits.
    let mut third = tokio_test::task::spawn(budget.reserve(TokenCost::new(1, 0)));
    tokio_test::assert_pending!(third.poll());
    // The fourth needs both places back, the second's in 60 s: past its maximum wait, refused
    // now rather than after 50 s of waiting.
    let mut fourth = tokio_test::task::spawn(budget.reserve(TokenCost::new(1, 0)));
    let error = tokio_test::assert_ready_err!(fourth.poll());
    let too_long = error.downcast_ref::<BudgetWaitTooLong>().expect("typed");
    assert_eq!(too_long.dimension(), Dimension::Requests);
    assert_eq!(too_long.needed(), Duration::from_secs(60));
}

fn refused(feedback: &Feedback, status: u16) {
    let outcome = gentlify_core::Outcome::new(
        gentlify_core::Class::Overloaded { retry_after: None },
        0,
        Instant::now(),
    )
    .with_status(http::StatusCode::from_u16(status).unwrap());
    feedback.publish(&outcome);
}

#[tokio::test(start_paused = true)]
async fn a_429_heard_blind_paces_what_comes_back_at_the_capacity_rate() {
    // 600 RPM at the default ratio: 540 a minute, 9 a second.
    let feedback = Feedback::new();
    let budget = TokenBudget::new([Limit::requests_per_minute(600)]).unwrap();
    let _svc = TokenBudgetLayer::new(budget.clone())
        .feedback(feedback.clone())
        .layer(service_fn(|_req: http::Request<String>| async {
            json("{}")
        }));
    refused(&feedback, 503);
    assert_eq!(
        budget.remaining(Dimension::Requests),
        Some(540),
        "a 503 is not the quota"
    );
    refused(&feedback, 429);
    assert_eq!(budget.remaining(Dimension::Requests), Some(0));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(budget.remaining(Dimension::Requests), Some(9));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(budget.remaining(Dimension::Requests), Some(27));
    refused(&feedback, 429);
    assert_eq!(
        budget.remaining(Dimension::Requests),
        Some(0),
        "every 429 empties it again"
    );
    // The server's own report replaces the guess, and a later 429 does not override it.
    feedback.report_quota(&QuotaReport::new(
        "openai",
        vec![Quota::new(Dimension::Requests)
            .with_limit(600)
            .with_remaining(40)
            .with_reset_after(Duration::from_secs(1))],
    ));
    assert_eq!(budget.remaining(Dimension::Requests), Some(40));
    refused(&feedback, 429);
    assert_eq!(budget.remaining(Dimension::Requests), Some(40));
}

#[tokio::test(start_paused = true)]
async fn a_report_of_the_minute_quota_leaves_the_day_quota_alone() {
    let budget = TokenBudget::new([
        Limit::requests_per_minute(600),
        Limit::requests_per_day(10_000),
    ])
    .unwrap();
    let feedback = hearing(&budget);
    feedback.report_quota(&QuotaReport::new(
        "openai",
        vec![Quota::new(Dimension::Requests)
            .with_limit(600)
            .with_remaining(5)
            .with_reset_after(Duration::from_millis(59_500))],
    ));
    assert_eq!(budget_field(&feedback, "requests_per_60s_remaining"), 5);
    assert_eq!(
        budget_field(&feedback, "requests_per_86400s_remaining"),
        9_000,
        "the day's quota was not reported"
    );
}

#[tokio::test(start_paused = true)]
async fn once_the_server_reports_the_very_limit_a_request_is_too_large_only_above_the_limit() {
    // The default 90 % safety ratio: blind, 9 500 tokens are more than the capacity (9 000).
    let budget = TokenBudget::new([Limit::tokens_per_minute(10_000)]).unwrap();
    let feedback = hearing(&budget);
    let svc = TokenBudgetLayer::new(budget.clone())
        .feedback(feedback.clone())
        .layer(service_fn(|_req| async { json("{}") }));
    let error = svc.clone().oneshot(request(9_500, 0)).await.unwrap_err();
    let too_large = error.downcast_ref::<RequestTooLarge>().expect("typed");
    assert_eq!((too_large.cost(), too_large.capacity()), (9_500, 9_000));
    // The server's bucket of the same 10 000 per minute, full: its account governs, and the
    // bound is the whole limit.
    feedback.report_quota(&QuotaReport::new(
        "openai",
        vec![Quota::new(Dimension::Tokens)
            .with_limit(10_000)
            .with_remaining(10_000)
            .with_reset_after(Duration::ZERO)],
    ));
    let start = Instant::now();
    svc.clone().oneshot(request(9_500, 0)).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "it fits the full bucket at once"
    );
    let error = svc.clone().oneshot(request(10_500, 0)).await.unwrap_err();
    let too_large = error.downcast_ref::<RequestTooLarge>().expect("typed");
    assert_eq!((too_large.cost(), too_large.capacity()), (10_500, 10_000));
}
