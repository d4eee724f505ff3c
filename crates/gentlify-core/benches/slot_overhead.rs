//! What the core adds to one request for one layer: make the slot, put a hold in it, dispatch,
//! publish the outcome, wrap the body, end the slot when the body is dropped. Baseline: the same
//! request and response without any of it, in the same run.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, Criterion};
use gentlify_core::{
    settle, BoxError, Controller, Feedback, HoldKey, Outcome, SharedHold, Slot, SlotEnded,
};
use http_body_util::Full;

#[derive(Default)]
struct Count(AtomicU64);
impl Controller for Count {
    fn on_outcome(&self, _: &Outcome) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A hold with state, as a limiter's permit is: boxed in the slot.
struct Counted(Arc<Count>, u64);
impl gentlify_core::Hold for Counted {
    fn release(self: Box<Self>, _: &SlotEnded<'_>) {
        self.0 .0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// The same as a share of the counter: no box.
impl SharedHold for Count {
    fn release(&self, token: u64, _: &SlotEnded<'_>) {
        self.0.fetch_sub(token, Ordering::Relaxed);
    }
}

fn upstream(_req: http::Request<()>) -> http::Response<Full<Bytes>> {
    http::Response::new(Full::new(Bytes::from_static(b"{}")))
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_layer");
    group.bench_function("bare", |b| {
        b.iter(|| {
            let resp = upstream(black_box(http::Request::new(())));
            drop(black_box(resp));
        })
    });
    let feedback = Feedback::new();
    let count = Arc::new(Count::default());
    feedback.register(&count);
    let key = HoldKey::unique();
    group.bench_function("slot_hold_dispatch_settle", |b| {
        b.iter(|| {
            let mut req = http::Request::new(());
            let (slot, end) = Slot::get_or_insert(req.extensions_mut(), &feedback);
            slot.hold(key, Box::new(|_: &SlotEnded<'_>| {}));
            let dispatched = slot.dispatch(&feedback);
            let resp = settle(
                Ok::<_, BoxError>(upstream(black_box(req))),
                &dispatched,
                end,
            );
            drop(black_box(resp));
        })
    });
    group.finish();
}

criterion_group!(benches, bench);

/// `SLOT_OVERHEAD_ITERS=N SLOT_OVERHEAD_MODE=bare|slot|boxed|shared` runs the loop N times
/// without criterion, for instruction counts under `valgrind --tool=callgrind` (repeatable on a
/// noisy machine). `slot` holds a zero-sized closure (a box that allocates nothing); `boxed` a
/// hold with state, boxed; `shared` the same state as a [`SharedHold`] share.
fn main() {
    if let Ok(iters) = std::env::var("SLOT_OVERHEAD_ITERS") {
        let iters: u64 = iters.parse().expect("a number");
        let mode = std::env::var("SLOT_OVERHEAD_MODE").unwrap_or_default();
        let (bare, boxed, shared) = (mode == "bare", mode == "boxed", mode == "shared");
        let feedback = Feedback::new();
        let count = Arc::new(Count::default());
        feedback.register(&count);
        let key = HoldKey::unique();
        for _ in 0..iters {
            let mut req = http::Request::new(());
            if !bare {
                let (slot, end) = Slot::get_or_insert(req.extensions_mut(), &feedback);
                if boxed {
                    count.0.fetch_add(1, Ordering::Relaxed);
                    slot.hold(key, Box::new(Counted(Arc::clone(&count), 1)));
                } else if shared {
                    count.0.fetch_add(1, Ordering::Relaxed);
                    slot.hold_shared(key, Arc::clone(&count) as Arc<dyn SharedHold>, 1);
                } else {
                    slot.hold(key, Box::new(|_: &SlotEnded<'_>| {}));
                }
                let dispatched = slot.dispatch(&feedback);
                let resp = settle(
                    Ok::<_, BoxError>(upstream(black_box(req))),
                    &dispatched,
                    end,
                );
                drop(black_box(resp));
            } else {
                drop(black_box(upstream(black_box(req))));
            }
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
