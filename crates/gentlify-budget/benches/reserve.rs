//! Uncontended reserve + reconcile of a [`TokenBudget`] against `governor`'s `check`, in the same
//! run, with the primitives a reservation cannot avoid measured alongside (one clock read, two
//! uncontended mutex lock/unlock pairs, one `Arc` clone/drop).
//!
//! `gentlify_reserve_reconcile` is `try_reserve` + `reconcile`: after the first, locked,
//! reservation they go through the lock-free path's credit and read no clock, where `governor`'s
//! `check` reads its (quanta) clock. The reservation borrows the budget (no reference count).
//! `gentlify_owned_reserve_reconcile` is the same through `try_reserve_owned`, whose reservation
//! holds the budget's `Arc` (a clone and a drop more). `gentlify_reserve_reconcile_plus_clock` adds one
//! `std::time::Instant::now()` (what tokio's clock reads outside tests) for a like-for-like
//! figure; `gentlify_reserve_awaited_reconcile` polls `reserve` once (the layer's path: a tokio
//! clock read, published before the take; the bench's tokio has `test-util`, whose clock is
//! slower, see `floor_tokio_instant_now`).
//!
//! Run with `cargo bench -p gentlify-budget -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use criterion::{criterion_group, criterion_main, Criterion};
use gentlify_budget::{Actual, Limit, TokenBudget, TokenCost};

fn uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("uncontended");

    // Limits far above what the benchmark can spend: the budget never waits.
    let budget = TokenBudget::new([
        Limit::requests_per_minute(1 << 50),
        Limit::tokens_per_minute(1 << 55),
    ])
    .unwrap();
    let cost = TokenCost::new(100, 50);
    group.bench_function("gentlify_reserve_reconcile", |b| {
        b.iter(|| {
            let reservation = budget.try_reserve(black_box(&cost)).unwrap();
            reservation.reconcile(black_box(Actual::Tokens(120)));
        })
    });
    group.bench_function("gentlify_owned_reserve_reconcile", |b| {
        b.iter(|| {
            let reservation = budget.try_reserve_owned(black_box(&cost)).unwrap();
            reservation.reconcile(black_box(Actual::Tokens(120)));
        })
    });
    group.bench_function("gentlify_reserve_reconcile_plus_clock", |b| {
        b.iter(|| {
            black_box(std::time::Instant::now());
            let reservation = budget.try_reserve(black_box(&cost)).unwrap();
            reservation.reconcile(black_box(Actual::Tokens(120)));
        })
    });
    let mut cx = Context::from_waker(Waker::noop());
    group.bench_function("gentlify_reserve_awaited_reconcile", |b| {
        b.iter(|| {
            let mut reserve = budget.reserve(black_box(cost));
            let Poll::Ready(Ok(reservation)) = reserve.poll_reserve(&mut cx) else {
                panic!("the budget never waits here");
            };
            reservation.reconcile(black_box(Actual::Tokens(120)));
        })
    });

    let limiter = governor::RateLimiter::direct(governor::Quota::per_minute(
        NonZeroU32::new(u32::MAX).unwrap(),
    ));
    group.bench_function("governor_check", |b| {
        b.iter(|| black_box(limiter.check()).unwrap())
    });

    // The floor of a reservation on this machine.
    group.bench_function("floor_tokio_instant_now", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    group.bench_function("floor_std_instant_now", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    let mutex = Mutex::new(0u64);
    group.bench_function("floor_mutex_lock_unlock", |b| {
        b.iter(|| *black_box(&mutex).lock().unwrap() += 1)
    });
    let arc = Arc::new(0u64);
    group.bench_function("floor_arc_clone_drop", |b| {
        b.iter(|| drop(black_box(Arc::clone(&arc))))
    });
    group.finish();
}

criterion_group!(benches, uncontended);
criterion_main!(benches);
