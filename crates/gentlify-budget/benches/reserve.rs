//! Uncontended reserve + reconcile of a [`TokenBudget`] against `governor`'s `check`, in the same
//! run, with the primitives a reservation cannot avoid measured alongside (one clock read, two
//! uncontended mutex lock/unlock pairs, one `Arc` clone/drop).
//!
//! Run with `cargo bench -p gentlify-budget -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

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
