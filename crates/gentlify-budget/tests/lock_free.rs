//! The lock-free path (credit drawn in chunks under the lock, taken without it), through the
//! budget's public API, in virtual time: it keeps every guarantee of the locked path.

use std::time::Duration;

use gentlify_budget::{Actual, Limit, TokenBudget, TokenCost};
use gentlify_core::{Dimension, Quota, QuotaReport, SnapshotValue};

/// 1 000 RPM and 100 000 TPM, used whole: chunks of 31 requests and 3 125 tokens.
fn budget() -> TokenBudget {
    TokenBudget::builder()
        .limit(Limit::requests_per_minute(1_000))
        .limit(Limit::tokens_per_minute(100_000))
        .safety_ratio(1.0)
        .build()
        .unwrap()
}

fn cost(tokens: u64) -> TokenCost {
    TokenCost::new(tokens, 0)
}

fn advance_to(start: tokio::time::Instant, at: Duration) -> impl std::future::Future<Output = ()> {
    tokio::time::sleep_until(start + at)
}

#[tokio::test(start_paused = true)]
async fn no_window_holds_more_than_the_limit_across_chunk_boundaries() {
    let budget = budget();
    let start = tokio::time::Instant::now();
    // 600 requests at 0 s (through chunk after chunk, then the locked path near the limit),
    // 400 more at 30 s: the limit, and not one more, in the window starting at 0 s.
    let mut held = Vec::new();
    for _ in 0..600 {
        held.push(budget.reserve(cost(10)).await.unwrap());
    }
    // Reading the budget closes the credit: the chunk's reservations, awaited, count from 0 s
    // (were one taken from it without a clock reading, the whole chunk would count from its
    // close).
    assert_eq!(budget.remaining(Dimension::Requests), Some(400));
    advance_to(start, Duration::from_secs(30)).await;
    let mut at_30 = 0;
    while let Some(r) = budget.try_reserve_owned(&cost(10)) {
        held.push(r);
        at_30 += 1;
    }
    assert_eq!(at_30, 400);
    advance_to(start, Duration::from_millis(59_999)).await;
    assert!(budget.try_reserve(&cost(10)).is_none());
    // The 600 sent at 0 s leave the window at 60 s; the 400 of 30 s stay.
    advance_to(start, Duration::from_secs(60)).await;
    let mut at_60 = 0;
    while let Some(r) = budget.try_reserve_owned(&cost(10)) {
        held.push(r);
        at_60 += 1;
    }
    assert_eq!(at_60, 600);
    assert_eq!(budget.remaining(Dimension::Requests), Some(0));
}

#[tokio::test(start_paused = true)]
async fn a_reservation_awaited_counts_from_its_instant() {
    let budget = budget();
    let start = tokio::time::Instant::now();
    let _first = budget.reserve(cost(10)).await.unwrap(); // the locked path draws a chunk
    let _second = budget.reserve(cost(10)).await.unwrap(); // from the chunk, at 0 s
    advance_to(start, Duration::from_secs(30)).await;
    assert_eq!(budget.remaining(Dimension::Requests), Some(998));
    advance_to(start, Duration::from_secs(60)).await;
    assert_eq!(
        budget.remaining(Dimension::Requests),
        Some(1_000),
        "both leave one window after they were made"
    );
}

#[tokio::test(start_paused = true)]
async fn a_try_reserve_from_a_chunk_counts_until_its_credit_closes() {
    let budget = budget();
    let start = tokio::time::Instant::now();
    let _first = budget.try_reserve(&cost(10)).unwrap();
    let _second = budget.try_reserve(&cost(10)).unwrap(); // from the chunk, no clock read
                                                          // Reading the budget closes the credit: the second counts as made now, at 30 s.
    advance_to(start, Duration::from_secs(30)).await;
    assert_eq!(budget.remaining(Dimension::Requests), Some(998));
    advance_to(start, Duration::from_secs(60)).await;
    assert_eq!(budget.remaining(Dimension::Requests), Some(999));
    advance_to(start, Duration::from_secs(90)).await;
    assert_eq!(budget.remaining(Dimension::Requests), Some(1_000));
}

#[tokio::test(start_paused = true)]
async fn returns_and_overruns_of_chunk_reservations_are_exact() {
    let budget = budget();
    let _first = budget.try_reserve(&cost(1_000)).unwrap();
    // While the credit is open: through it.
    let returned = budget.try_reserve(&cost(1_000)).unwrap();
    returned.reconcile(Actual::Tokens(400));
    let overrun = budget.try_reserve(&cost(1_000)).unwrap();
    overrun.reconcile(Actual::Tokens(1_500));
    let cancelled = budget.try_reserve(&cost(1_000)).unwrap();
    cancelled.cancel();
    assert_eq!(
        budget.remaining(Dimension::Tokens),
        Some(100_000 - 1_000 - 400 - 1_500)
    );
    assert_eq!(budget.remaining(Dimension::Requests), Some(1_000 - 3));
    // An overrun larger than what is left of the chunk, while its credit is open: under the
    // lock, on the open chunk.
    let _again = budget.try_reserve(&cost(1_000)).unwrap(); // draws a new chunk
    let large = budget.try_reserve(&cost(1_000)).unwrap();
    large.reconcile(Actual::Tokens(6_000));
    assert_eq!(
        budget.remaining(Dimension::Tokens),
        Some(100_000 - 2_900 - 1_000 - 6_000)
    );
    // After the credit closed (the read above): on the window's entry, under the lock.
    let _again = budget.try_reserve(&cost(1_000)).unwrap();
    let returned = budget.try_reserve(&cost(1_000)).unwrap();
    let overrun = budget.try_reserve(&cost(1_000)).unwrap();
    assert_eq!(
        budget.remaining(Dimension::Tokens),
        Some(100_000 - 9_900 - 3_000)
    );
    returned.reconcile(Actual::Tokens(100));
    overrun.reconcile(Actual::Tokens(2_000));
    assert_eq!(
        budget.remaining(Dimension::Tokens),
        Some(100_000 - 9_900 - 1_000 - 100 - 2_000)
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiting_request_closes_the_credit_so_nobody_overtakes_it() {
    let budget = budget();
    let held = budget.try_reserve(&cost(50_000)).unwrap(); // draws a chunk
    let _small = budget.try_reserve(&cost(10)).unwrap(); // from it
    let big = tokio::spawn(budget.reserve(cost(60_000)));
    tokio::task::yield_now().await;
    assert_eq!(budget.waiting(), 1);
    assert!(
        budget.try_reserve(&cost(10)).is_none(),
        "the chunk's credit would cover it, but a request waits before it"
    );
    held.cancel();
    big.await.unwrap().unwrap();
    assert_eq!(budget.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_server_report_closes_the_credit() {
    let budget = budget();
    let _first = budget.try_reserve(&cost(10)).unwrap(); // draws a chunk of 31 requests
                                                         // The server says 2 requests are left of its 1 000 per minute, the whole minute to refill.
    budget.report_quota(&QuotaReport::new(
        "openai",
        vec![Quota::new(Dimension::Requests)
            .with_limit(1_000)
            .with_remaining(2)
            .with_reset_after(Duration::from_secs(60))],
    ));
    assert!(budget.try_reserve(&cost(10)).is_some());
    assert!(budget.try_reserve(&cost(10)).is_some());
    assert!(
        budget.try_reserve(&cost(10)).is_none(),
        "the server's account governs, not the chunk drawn before it"
    );
}

#[tokio::test(start_paused = true)]
async fn the_snapshot_counts_what_was_reserved_not_the_credit() {
    let budget = budget();
    let held: Vec<_> = (0..5)
        .map(|_| budget.try_reserve(&cost(100)).unwrap())
        .collect();
    let part = budget.snapshot();
    assert_eq!(
        part.get("requests_per_60s_used"),
        Some(&SnapshotValue::U64(5))
    );
    assert_eq!(
        part.get("requests_per_60s_remaining"),
        Some(&SnapshotValue::U64(995))
    );
    assert_eq!(
        part.get("tokens_per_60s_used"),
        Some(&SnapshotValue::U64(500))
    );
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn small_limits_take_no_chunks() {
    // 60 RPM: a chunk would be 1 request; the budget stays exact at every instant.
    let budget = TokenBudget::builder()
        .limit(Limit::requests_per_minute(60))
        .safety_ratio(1.0)
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let _first = budget.try_reserve(&cost(1)).unwrap();
    advance_to(start, Duration::from_secs(30)).await;
    let _second = budget.try_reserve(&cost(1)).unwrap();
    advance_to(start, Duration::from_secs(60)).await;
    assert_eq!(budget.remaining(Dimension::Requests), Some(59));
}

#[test]
fn concurrent_reservations_add_up_exactly() {
    // Day windows: nothing leaves them during the test, however slow the machine. Chunks of
    // 31 250 requests and 3 125 000 tokens, drawn, handed out, given back and closed by four
    // threads at once (and a fifth reading the budget, which closes the credit).
    let budget = TokenBudget::builder()
        .limit(Limit::requests_per_day(1_000_000))
        .limit(Limit::tokens_per_day(100_000_000))
        .safety_ratio(1.0)
        .build()
        .unwrap();
    let used: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                let budget = budget.clone();
                s.spawn(move || {
                    let mut used = 0;
                    for i in 0..20_000u64 {
                        let estimate = 50 + (i * 7 + t) % 100;
                        let r = budget.try_reserve(&cost(estimate)).unwrap();
                        match i % 4 {
                            0 => r.cancel(),
                            1 => {
                                r.reconcile(Actual::Tokens(estimate / 2));
                                used += estimate / 2;
                            }
                            2 => {
                                r.reconcile(Actual::Tokens(estimate + 30));
                                used += estimate + 30;
                            }
                            _ => used += estimate,
                        }
                    }
                    used
                })
            })
            .collect();
        let reader = s.spawn(|| {
            for _ in 0..200 {
                budget.remaining(Dimension::Tokens);
                std::thread::yield_now();
            }
        });
        reader.join().unwrap();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(
        budget.remaining(Dimension::Requests),
        Some(1_000_000 - 4 * 15_000)
    );
    assert_eq!(
        budget.remaining(Dimension::Tokens),
        Some(100_000_000 - used)
    );
}

#[tokio::test(start_paused = true)]
async fn owned_reservations_reconcile_and_cancel_like_borrowed_ones() {
    let budget = budget();
    // The first is made under the lock (it draws the chunk), the rest through the credit.
    let locked = budget.try_reserve_owned(&cost(1_000)).unwrap();
    let returned = budget.try_reserve_owned(&cost(1_000)).unwrap();
    let overrun = budget.try_reserve_owned(&cost(1_000)).unwrap();
    let cancelled = budget.try_reserve_owned(&cost(1_000)).unwrap();
    assert_eq!(cancelled.cost(), cost(1_000));
    locked.reconcile(Actual::Tokens(300));
    returned.reconcile(Actual::Tokens(400));
    overrun.reconcile(Actual::Tokens(1_500));
    cancelled.cancel();
    assert_eq!(
        budget.remaining(Dimension::Tokens),
        Some(100_000 - 300 - 400 - 1_500)
    );
    assert_eq!(budget.remaining(Dimension::Requests), Some(1_000 - 3));
    // After the credit closed (the read above): under the lock, on the window's entry.
    let late = budget.try_reserve_owned(&cost(1_000)).unwrap();
    let late_fast = budget.try_reserve(&cost(1_000)).unwrap().into_owned();
    assert_eq!(
        budget.remaining(Dimension::Tokens),
        Some(100_000 - 2_200 - 2_000)
    );
    late.reconcile(Actual::Tokens(100));
    late_fast.reconcile(Actual::Tokens(2_000));
    assert_eq!(
        budget.remaining(Dimension::Tokens),
        Some(100_000 - 2_200 - 100 - 2_000)
    );
}
