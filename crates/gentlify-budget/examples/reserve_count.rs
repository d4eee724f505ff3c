//! The uncontended reserve + reconcile of `benches/reserve.rs`, as a plain loop for instruction
//! counts, which are repeatable where wall-clock timings on a shared machine are not:
//!
//! ```text
//! cargo build --release -p gentlify-budget --example reserve_count
//! valgrind --tool=callgrind target/release/examples/reserve_count <borrowed|owned|governor> <iterations>
//! ```
//!
//! Each mode runs in a function of its own (`reserve_count::borrowed`, `::owned`, `::governor`):
//! read its inclusive count (`callgrind_annotate --inclusive=yes`) and divide by the iterations.
//! (The difference of two whole-program totals does not work here: `governor`'s clock calibrates
//! itself at start-up for a varying number of instructions.)

use std::hint::black_box;
use std::num::NonZeroU32;

use gentlify_budget::{Actual, Limit, TokenBudget, TokenCost};

type Governor = governor::DefaultDirectRateLimiter;

#[inline(never)]
fn borrowed(budget: &TokenBudget, cost: &TokenCost, iterations: u64) {
    for _ in 0..iterations {
        let reservation = budget.try_reserve(black_box(cost)).unwrap();
        reservation.reconcile(black_box(Actual::Tokens(120)));
    }
}

#[inline(never)]
fn owned(budget: &TokenBudget, cost: &TokenCost, iterations: u64) {
    for _ in 0..iterations {
        let reservation = budget.try_reserve_owned(black_box(cost)).unwrap();
        reservation.reconcile(black_box(Actual::Tokens(120)));
    }
}

#[inline(never)]
fn governor(limiter: &Governor, iterations: u64) {
    for _ in 0..iterations {
        black_box(limiter.check()).unwrap();
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let iterations: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1_000);
    // As in the benchmark: limits far above what the loop can spend, so nothing waits.
    let budget = TokenBudget::new([
        Limit::requests_per_minute(1 << 50),
        Limit::tokens_per_minute(1 << 55),
    ])
    .unwrap();
    let cost = TokenCost::new(100, 50);
    match mode.as_str() {
        "borrowed" => borrowed(&budget, &cost, iterations),
        "owned" => owned(&budget, &cost, iterations),
        "governor" => governor(
            &Governor::direct(governor::Quota::per_minute(NonZeroU32::MAX)),
            iterations,
        ),
        _ => {
            eprintln!("usage: reserve_count <borrowed|owned|governor> <iterations>");
            std::process::exit(2);
        }
    }
}
