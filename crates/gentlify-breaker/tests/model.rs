//! Model-based test: a few lines of reference model, written from the documented semantics,
//! against the real breaker over random call sequences and clock advances.

mod support;

use std::collections::VecDeque;
use std::time::Duration;

use gentlify_breaker::{CircuitBreakerLayer, SlidingWindow};
use gentlify_core::error::CircuitOpen;
use gentlify_core::CircuitState;
use proptest::prelude::*;
use support::harness;

const WINDOW: usize = 5;
const MINIMUM_CALLS: usize = 4;
const THRESHOLD: f64 = 0.5;
const CONSECUTIVE: u32 = 3;
const OPEN_FOR_MS: u64 = 10_000;
const PROBES: u32 = 2;

#[derive(Debug, Clone, Copy)]
enum Op {
    Call(u16),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Call(200)),
        3 => Just(Op::Call(500)),
        1 => Just(Op::Call(429)),
        2 => (0..15_000u64).prop_map(Op::Advance),
    ]
}

/// The breaker as the docs describe it, for sequential calls that answer at once.
#[derive(Debug)]
struct Model {
    now: u64,
    state: CircuitState,
    window: VecDeque<bool>,
    consecutive: u32,
    open_until: u64,
    reopenings: u32,
    probe_calls: u32,
    probe_failures: u32,
}

impl Model {
    fn new() -> Self {
        Model {
            now: 0,
            state: CircuitState::Closed,
            window: VecDeque::new(),
            consecutive: 0,
            open_until: 0,
            reopenings: 0,
            probe_calls: 0,
            probe_failures: 0,
        }
    }

    fn open(&mut self, from_half_open: bool) {
        self.reopenings = if from_half_open {
            self.reopenings + 1
        } else {
            0
        };
        let factor = (1u64 << self.reopenings.min(10)).min(5);
        self.open_until = self.now + OPEN_FOR_MS * factor;
        self.state = CircuitState::Open;
    }

    fn close(&mut self) {
        self.state = CircuitState::Closed;
        self.window.clear();
        self.consecutive = 0;
        self.reopenings = 0;
    }

    /// `Err(retry_in_ms)` when rejected.
    fn call(&mut self, status: u16) -> Result<(), u64> {
        if self.state == CircuitState::Open {
            if self.now < self.open_until {
                return Err(self.open_until - self.now);
            }
            self.state = CircuitState::HalfOpen;
            self.probe_calls = 0;
            self.probe_failures = 0;
        }
        let failed = match status {
            429 => return Ok(()),
            500 => true,
            _ => false,
        };
        if self.state == CircuitState::HalfOpen {
            self.probe_calls += 1;
            self.probe_failures += u32::from(failed);
            if self.probe_calls == PROBES {
                if f64::from(self.probe_failures) / f64::from(self.probe_calls) >= THRESHOLD {
                    self.open(true);
                } else {
                    self.close();
                }
            }
            return Ok(());
        }
        if self.window.len() == WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(failed);
        self.consecutive = if failed { self.consecutive + 1 } else { 0 };
        let failures = self.window.iter().filter(|f| **f).count();
        if self.consecutive >= CONSECUTIVE
            || (self.window.len() >= MINIMUM_CALLS
                && failures as f64 / self.window.len() as f64 >= THRESHOLD)
        {
            self.open(false);
        }
        Ok(())
    }
}

fn check(ops: Vec<Op>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut h = harness(
            CircuitBreakerLayer::builder()
                .sliding_window(SlidingWindow::count(WINDOW))
                .minimum_calls(MINIMUM_CALLS as u32)
                .failure_rate_threshold(THRESHOLD)
                .consecutive_failures(CONSECUTIVE)
                .open_for(Duration::from_millis(OPEN_FOR_MS))
                .half_open_probes(PROBES as usize),
        );
        let mut model = Model::new();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Advance(ms) => {
                    tokio::time::advance(Duration::from_millis(ms)).await;
                    model.now += ms;
                }
                Op::Call(status) => {
                    let expected = model.call(status);
                    let got = match h.call(status).await {
                        Ok(s) => {
                            assert_eq!(s, status);
                            Ok(())
                        }
                        Err(e) => Err(e
                            .downcast_ref::<CircuitOpen>()
                            .expect("only rejections fail")
                            .retry_in()
                            .as_millis() as u64),
                    };
                    assert_eq!(got, expected, "op {i} ({op:?}), model {model:?}");
                }
            }
            assert_eq!(h.state(), model.state, "after op {i} ({op:?})");
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn breaker_follows_the_reference_model(ops in prop::collection::vec(op(), 1..150)) {
        check(ops);
    }
}

#[test]
fn model_and_breaker_agree_on_a_full_cycle() {
    use Op::*;
    check(vec![
        Call(500),
        Call(500),
        Call(500),
        Call(200),
        Advance(10_000),
        Call(500),
        Call(500),
        Advance(20_000),
        Call(200),
        Call(200),
        Call(200),
    ]);
}
