//! The client side shared by all contenders: the SDK-like retry and the meter.

use std::time::Duration;

use gentlify_sim::{
    box_response, chat_request, send, take_virtual_rtt, ClientStack, FailureClass, MeteredUpstream,
    RetryPolicy, Scenario, SimUpstream,
};
use tokio::time::Instant;
use tower::util::BoxCloneService;
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
ttft_ms = 100
per_token_ms = 1
knee = 0.0
jitter = 0.0
[limits]
{limits}
{extra}
"#
    ))
    .expect("valid scenario")
}

fn stack(meter: &MeteredUpstream) -> ClientStack {
    BoxCloneService::new(meter.clone().map_response(box_response))
}

#[tokio::test(start_paused = true)]
async fn shared_retry_waits_the_servers_retry_after_then_succeeds() {
    // One request per 6 s, bucket of one.
    let api = SimUpstream::new(&scenario(
        "concurrency = 10\nrequests_per_minute = 10\nburst_seconds = 6.0",
        "",
    ));
    let meter = MeteredUpstream::new(api);
    let mut s = stack(&meter);
    let mut rng = fastrand::Rng::with_seed(1);
    let policy = RetryPolicy::default();
    let first = send(
        &mut s,
        || chat_request(10, 10, false),
        Some(&policy),
        &mut rng,
    )
    .await;
    assert_eq!((first.failure, first.attempts), (None, 1));
    let start = Instant::now();
    let second = send(
        &mut s,
        || chat_request(10, 10, false),
        Some(&policy),
        &mut rng,
    )
    .await;
    assert_eq!((second.failure, second.attempts), (None, 2));
    // retry-after-ms is honoured (about 6 s less the first request's 110 ms).
    let waited = start.elapsed();
    assert!(waited > Duration::from_millis(5800), "{waited:?}");
    assert!(waited < Duration::from_millis(6100), "{waited:?}");
    assert_eq!(meter.meter().sent_before_retry_after, 0);
    assert_eq!(meter.meter().overloaded, 1);
}

#[tokio::test(start_paused = true)]
async fn shared_retry_backs_off_like_the_sdk_and_gives_up_after_max_retries() {
    let api = SimUpstream::new(&scenario(
        "concurrency = 10",
        "[[faults]]\nkind = \"outage\"\nfrom_s = 0.0\nto_s = 1000.0\nstatus = 500",
    ));
    let meter = MeteredUpstream::new(api);
    let mut s = stack(&meter);
    let mut rng = fastrand::Rng::with_seed(1);
    let policy = RetryPolicy { max_retries: 3 };
    let start = Instant::now();
    let r = send(
        &mut s,
        || chat_request(10, 10, false),
        Some(&policy),
        &mut rng,
    )
    .await;
    assert_eq!(r.failure, Some(FailureClass::Server));
    assert_eq!(r.attempts, 4);
    // 0.5 + 1 + 2 s, each shortened by up to 25 % of jitter.
    let waited = start.elapsed().as_secs_f64();
    assert!((2.625..=3.5).contains(&waited), "{waited}");
}

#[tokio::test(start_paused = true)]
async fn meter_counts_sends_before_a_retry_after_expired() {
    let api = SimUpstream::new(&scenario(
        "concurrency = 10\nrequests_per_minute = 10\nburst_seconds = 6.0",
        "",
    ));
    let meter = MeteredUpstream::new(api);
    let ok = meter
        .clone()
        .oneshot(chat_request(10, 10, false))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let refused = meter
        .clone()
        .oneshot(chat_request(10, 10, false))
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    // Sent again at once, ignoring the retry-after: counted.
    let _ = meter
        .clone()
        .oneshot(chat_request(10, 10, false))
        .await
        .unwrap();
    assert_eq!(meter.meter().sent_before_retry_after, 1);
    assert_eq!(meter.meter().attempts, 3);
}

#[tokio::test(start_paused = true)]
async fn metered_attempts_publish_their_virtual_latency() {
    let api = SimUpstream::new(&scenario("concurrency = 10", ""));
    let meter = MeteredUpstream::new(api);
    assert_eq!(take_virtual_rtt(), None);
    let _ = meter
        .clone()
        .oneshot(chat_request(10, 100, false))
        .await
        .unwrap();
    // 100 ms + 100 × 1 ms, in virtual time (no wall clock could measure that here).
    let rtt = take_virtual_rtt().expect("set by the meter");
    assert!((rtt.as_secs_f64() - 0.2).abs() < 0.005, "{rtt:?}");
    assert_eq!(take_virtual_rtt(), None, "taken once");
}
