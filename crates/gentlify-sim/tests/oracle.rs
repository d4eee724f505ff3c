//! The oracle: min(offered, best concurrency rate, RPM / 60, TPM / (60 × mean tokens)) per
//! segment.

use gentlify_sim::{Oracle, Scenario};

fn scenario(extra: &str) -> Scenario {
    Scenario::from_toml(&format!(
        r#"
name = "t"
requests = 10
[workload]
kind = "closed"
workers = 1000
[sizes]
prompt_tokens = {{ dist = "fixed", value = 900 }}
output_tokens = {{ dist = "fixed", value = 100 }}
[latency]
ttft_ms = 1000
per_token_ms = 10
knee = 0.0
jitter = 0.0
{extra}
"#
    ))
    .expect("valid scenario")
}

const SIZES: [(u64, u64); 4] = [(900, 100); 4];

#[test]
fn concurrency_bound_is_cap_over_latency() {
    // No knee: latency 2 s whatever the load, so C = 10 serves 5 req/s.
    let sc = scenario("[limits]\nconcurrency = 10");
    let o = Oracle::compute(&sc, &SIZES);
    assert!((o.goodput_rps - 5.0).abs() < 1e-9, "{o:?}");
    assert_eq!(o.bound, "concurrency");
    assert_eq!(o.concurrency, 10);
}

#[test]
fn knee_makes_the_best_concurrency_lower_than_the_cap() {
    let mut sc = scenario("[limits]\nconcurrency = 100");
    sc.latency.knee = 1.0;
    let o = Oracle::compute(&sc, &SIZES);
    // n / (2 s × (1 + (n/100)^4)) peaks at n = 100 × 3^(-1/4) ≈ 76: 76 / (2 × 1.3336) ≈ 28.5.
    assert!((o.goodput_rps - 28.49).abs() < 0.05, "{}", o.goodput_rps);
    assert!(o.concurrency <= 76, "{}", o.concurrency);
}

#[test]
fn rpm_and_tpm_bounds() {
    let sc = scenario("[limits]\nconcurrency = 1000\nrequests_per_minute = 120");
    let o = Oracle::compute(&sc, &SIZES);
    assert_eq!(o.bound, "rpm");
    assert!((o.goodput_rps - 2.0).abs() < 1e-9);

    let sc = scenario("[limits]\nconcurrency = 1000\ntokens_per_minute = 60000");
    let o = Oracle::compute(&sc, &SIZES);
    assert_eq!(o.bound, "tpm");
    // 1000 tokens charged per request: 60 000 / 60 / 1000 = 1 req/s.
    assert!((o.goodput_rps - 1.0).abs() < 1e-9);
    // A request twice the mean size is twice the work when TPM binds.
    assert!((o.weight(1800, 200) - 2.0).abs() < 1e-9);
}

#[test]
fn offered_load_bounds_a_few_senders() {
    let mut sc = scenario("[limits]\nconcurrency = 100");
    sc.workload.kind = gentlify_sim::WorkloadKind::Closed { workers: 4 };
    let o = Oracle::compute(&sc, &SIZES);
    assert_eq!(o.bound, "offered");
    assert!((o.goodput_rps - 2.0).abs() < 1e-9);
}

#[test]
fn segments_follow_capacity_steps_and_outages() {
    let sc = scenario(
        r#"
[limits]
concurrency = 10
[[faults]]
kind = "capacity"
at_s = 10.0
concurrency = 4
[[faults]]
kind = "outage"
from_s = 20.0
to_s = 30.0
"#,
    );
    let o = Oracle::compute(&sc, &SIZES);
    assert!((o.rate_at(5.0) - 5.0).abs() < 1e-9);
    assert!((o.rate_at(15.0) - 2.0).abs() < 1e-9);
    assert_eq!(o.rate_at(25.0), 0.0);
    assert!((o.rate_at(100.0) - 2.0).abs() < 1e-9);
    // 10 s at 5 + 10 s at 2 + 10 s at 0 + 10 s at 2.
    assert!((o.requests_until(40.0) - 90.0).abs() < 1e-9);
}

#[test]
fn initial_burst_of_the_buckets_is_credited_to_the_oracle() {
    let sc =
        scenario("[limits]\nconcurrency = 1000\nrequests_per_minute = 120\nburst_seconds = 10.0");
    let o = Oracle::compute(&sc, &SIZES);
    assert!((o.initial_burst_requests - 20.0).abs() < 1e-9);
    assert!((o.requests_until(10.0) - 40.0).abs() < 1e-9);
}
