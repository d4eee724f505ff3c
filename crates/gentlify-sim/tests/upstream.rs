//! The simulated API's behaviour, driven directly in virtual time.

use std::time::Duration;

use gentlify_sim::{chat_request, Scenario, SimUpstream};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::ServiceExt;

fn scenario(limits: &str, extra: &str) -> Scenario {
    Scenario::from_toml(&format!(
        r#"
name = "t"
requests = 10
[workload]
kind = "closed"
workers = 1
[sizes]
prompt_tokens = {{ dist = "fixed", value = 100 }}
output_tokens = {{ dist = "fixed", value = 100 }}
[latency]
ttft_ms = 500
per_token_ms = 10
knee = 1.0
jitter = 0.0
[limits]
{limits}
{extra}
"#
    ))
    .expect("valid scenario")
}

async fn body_json(resp: http::Response<gentlify_sim::SimBody>) -> serde_json::Value {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(start_paused = true)]
async fn answers_after_ttft_plus_tokens_with_usage_in_the_body() {
    let api = SimUpstream::new(&scenario("concurrency = 10", ""));
    let start = Instant::now();
    let resp = api
        .clone()
        .oneshot(chat_request(100, 50, false))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // (500 ms + 50 × 10 ms) × (1 + (1/10)^4).
    let took = start.elapsed().as_secs_f64();
    assert!((took - 1.0001).abs() < 0.005, "{took}");
    let v = body_json(resp).await;
    assert_eq!(v["usage"]["prompt_tokens"], 100);
    assert_eq!(v["usage"]["completion_tokens"], 50);
    assert_eq!(v["usage"]["total_tokens"], 150);
}

#[tokio::test(start_paused = true)]
async fn latency_inflates_as_in_flight_approaches_the_cap() {
    let api = SimUpstream::new(&scenario("concurrency = 4", ""));
    let start = Instant::now();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let call = api.clone().oneshot(chat_request(10, 50, false));
            tokio::spawn(async move {
                assert_eq!(call.await.unwrap().status(), 200);
                start.elapsed().as_secs_f64()
            })
        })
        .collect();
    let mut ends = Vec::new();
    for c in calls {
        ends.push(c.await.unwrap());
    }
    // The 4th request in flight runs at (4/4)^4 → ×2: 2 s instead of ~1 s.
    assert!((ends[3] - 2.0).abs() < 0.01, "{ends:?}");
    assert!(ends[0] < 1.01, "{ends:?}");
}

#[tokio::test(start_paused = true)]
async fn over_the_cap_answers_the_scenario_status() {
    for status in [429u16, 503, 529] {
        let api = SimUpstream::new(&scenario(
            &format!("concurrency = 1\nover_concurrency_status = {status}"),
            "",
        ));
        let first = tokio::spawn(api.clone().oneshot(chat_request(10, 10, false)));
        tokio::task::yield_now().await;
        let second = api
            .clone()
            .oneshot(chat_request(10, 10, false))
            .await
            .unwrap();
        assert_eq!(second.status().as_u16(), status);
        assert_eq!(first.await.unwrap().unwrap().status(), 200);
        assert_eq!(api.stats().peak_offered_concurrency, 2);
        assert_eq!(api.stats().peak_in_flight, 1);
    }
}

#[tokio::test(start_paused = true)]
async fn rpm_refusal_carries_openai_headers_and_retry_after() {
    let api = SimUpstream::new(&scenario(
        "concurrency = 100\nrequests_per_minute = 60\nburst_seconds = 2.0\nheaders_on_success = true",
        "",
    ));
    // Three at once against a bucket of 2.
    let calls: Vec<_> = (0..3)
        .map(|_| tokio::spawn(api.clone().oneshot(chat_request(10, 10, false))))
        .collect();
    let mut resps = Vec::new();
    for c in calls {
        resps.push(c.await.unwrap().unwrap());
    }
    let refused = resps.pop().unwrap();
    let ok = resps.remove(0);
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-ratelimit-limit-requests"], "60");
    assert_eq!(ok.headers()["x-ratelimit-remaining-requests"], "1");
    assert_eq!(refused.status(), 429);
    let h = refused.headers();
    assert_eq!(h["x-ratelimit-remaining-requests"], "0");
    let retry_after: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    let retry_after_ms: f64 = h["retry-after-ms"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert!(
        retry_after_ms > 0.0 && retry_after_ms <= 1000.0,
        "{retry_after_ms}"
    );
    let reset = h["x-ratelimit-reset-requests"].to_str().unwrap();
    assert!(reset.ends_with('s'), "{reset}");
    let v = body_json(refused).await;
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_count_toward_the_per_minute_limit() {
    // During an outage every request fails with 500, and still takes a request from the RPM
    // bucket: after the outage, the bucket is empty.
    let api = SimUpstream::new(&scenario(
        "concurrency = 100\nrequests_per_minute = 60\nburst_seconds = 3.0",
        "[[faults]]\nkind = \"outage\"\nfrom_s = 0.0\nto_s = 0.5\nstatus = 500",
    ));
    for _ in 0..3 {
        let r = api
            .clone()
            .oneshot(chat_request(10, 10, false))
            .await
            .unwrap();
        assert_eq!(r.status(), 500);
    }
    tokio::time::advance(Duration::from_millis(600)).await;
    let r = api
        .clone()
        .oneshot(chat_request(10, 10, false))
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "the failed attempts used the bucket");
}

#[tokio::test(start_paused = true)]
async fn tpm_refuses_by_prompt_plus_max_tokens_and_flags_requests_too_large() {
    let api = SimUpstream::new(&scenario(
        "concurrency = 100\ntokens_per_minute = 6000\nburst_seconds = 10.0",
        "",
    ));
    // Bucket of 1000 tokens: 600 + 300 fits, a second 900 does not.
    let ok = api
        .clone()
        .oneshot(chat_request(600, 300, false))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let refused = api
        .clone()
        .oneshot(chat_request(600, 300, false))
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused
        .headers()
        .contains_key("x-ratelimit-remaining-tokens"));
    let too_large = api
        .clone()
        .oneshot(chat_request(2000, 10, false))
        .await
        .unwrap();
    assert_eq!(too_large.status(), 429);
    let body = too_large.into_body().collect().await.unwrap().to_bytes();
    assert!(gentlify_core::fatal_reason(&body).is_some(), "{body:?}");
}

#[tokio::test(start_paused = true)]
async fn anthropic_headers_use_rfc3339_resets_and_whole_second_retry_after() {
    let api = SimUpstream::new(&scenario(
        "concurrency = 100\nrequests_per_minute = 60\nburst_seconds = 1.0\nheaders = \"anthropic\"\nheaders_on_success = true",
        "",
    ));
    let ok = api
        .clone()
        .oneshot(chat_request(10, 10, false))
        .await
        .unwrap();
    assert_eq!(ok.headers()["anthropic-ratelimit-requests-limit"], "60");
    let reset = ok.headers()["anthropic-ratelimit-requests-reset"]
        .to_str()
        .unwrap();
    assert_eq!(reset.len(), "2025-08-21T12:40:59Z".len(), "{reset}");
    assert!(
        reset.ends_with('Z') && reset.as_bytes()[10] == b'T',
        "{reset}"
    );
    let refused = api
        .clone()
        .oneshot(chat_request(10, 10, false))
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert!(!refused.headers().contains_key("retry-after-ms"));
    let v = body_json(refused).await;
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "rate_limit_error");
}

#[tokio::test(start_paused = true)]
async fn a_streamed_body_holds_its_place_until_it_ends() {
    let mut sc = scenario("concurrency = 1", "");
    sc.latency.chunk_tokens = 10;
    let api = SimUpstream::new(&sc);
    let start = Instant::now();
    let resp = api
        .clone()
        .oneshot(chat_request(10, 100, true))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    // Headers after the TTFT (×2 at full load), the body still streaming: the API is full.
    assert!((start.elapsed().as_secs_f64() - 1.0).abs() < 0.01);
    assert_eq!(api.in_flight(), 1);
    let refused = api
        .clone()
        .oneshot(chat_request(10, 10, false))
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(
        text.contains("\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":100")
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
    // 100 tokens × 10 ms × 2 of body time.
    assert!((start.elapsed().as_secs_f64() - 3.0).abs() < 0.01);
    assert_eq!(api.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_streamed_body_frees_its_place() {
    let api = SimUpstream::new(&scenario("concurrency = 1", ""));
    let resp = api
        .clone()
        .oneshot(chat_request(10, 100, true))
        .await
        .unwrap();
    assert_eq!(api.in_flight(), 1);
    drop(resp);
    assert_eq!(api.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn anthropic_streams_use_message_start_and_cumulative_message_delta() {
    let api = SimUpstream::new(&scenario("concurrency = 10\nheaders = \"anthropic\"", ""));
    let resp = api
        .clone()
        .oneshot(chat_request(40, 120, true))
        .await
        .unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(text.starts_with("event: message_start\n"));
    assert!(text.contains("\"usage\":{\"input_tokens\":40"));
    assert!(text.contains("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":120}}"));
    assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_connection_is_an_error_after_the_hang() {
    let api = SimUpstream::new(&scenario(
        "concurrency = 10",
        "[[faults]]\nkind = \"drop\"\nfrom_s = 0.0\nto_s = 10.0\nprobability = 1.0\nafter_ms = 1500.0",
    ));
    let start = Instant::now();
    let err = api
        .clone()
        .oneshot(chat_request(10, 10, false))
        .await
        .unwrap_err();
    assert!(err.is::<gentlify_sim::ConnectionDropped>());
    assert_eq!(start.elapsed(), Duration::from_millis(1500));
    assert_eq!(api.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn capacity_steps_change_the_cap_over_time() {
    let api = SimUpstream::new(&scenario(
        "concurrency = 2\nover_concurrency_status = 503",
        "[[faults]]\nkind = \"capacity\"\nat_s = 10.0\nconcurrency = 1",
    ));
    let a = tokio::spawn(api.clone().oneshot(chat_request(10, 10, false)));
    tokio::task::yield_now().await;
    let b = api
        .clone()
        .oneshot(chat_request(10, 10, false))
        .await
        .unwrap();
    assert_eq!(b.status(), 200, "two fit under C = 2");
    a.await.unwrap().unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    let a = tokio::spawn(api.clone().oneshot(chat_request(10, 10, false)));
    tokio::task::yield_now().await;
    let b = api
        .clone()
        .oneshot(chat_request(10, 10, false))
        .await
        .unwrap();
    assert_eq!(b.status(), 503, "only one fits after the step");
    a.await.unwrap().unwrap();
}

#[test]
fn go_durations_and_rfc3339_match_the_providers_formats() {
    use gentlify_sim::{go_duration, rfc3339};
    assert_eq!(go_duration(Duration::from_millis(12)), "12ms");
    assert_eq!(go_duration(Duration::from_millis(1574)), "1.574s");
    assert_eq!(go_duration(Duration::from_secs(1)), "1s");
    assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
    assert_eq!(go_duration(Duration::from_millis(179_560)), "2m59.56s");
    let t = std::time::UNIX_EPOCH + Duration::from_secs(1_755_780_059);
    assert_eq!(rfc3339(t), "2025-08-21T12:40:59Z");
}
