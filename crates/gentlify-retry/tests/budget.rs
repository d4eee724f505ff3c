//! The retry budget against tower's `TpsBudget`, whose arithmetic it ports.

use std::time::Duration;

use gentlify_retry::RetryBudget;
use tokio::time::{advance, Instant};
use tower::retry::budget::{Budget as _, TpsBudget};

/// Random deposits (through the clock or at an instant already read), withdrawals and steps of
/// time: every withdrawal answers as tower's does, for several settings.
#[tokio::test(start_paused = true)]
async fn answers_as_tower_tps_budget_does() {
    let settings = [
        (Duration::from_secs(10), 10, 0.2),
        (Duration::from_secs(1), 0, 1.0),
        (Duration::from_secs(3), 0, 0.5),
        (Duration::from_secs(60), 2, 0.0),
        (Duration::from_secs(5), 1, 4.0),
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut granted, mut refused) = (0, 0);
    for (ttl, min_per_sec, ratio) in settings {
        let ours = RetryBudget::new(ttl, min_per_sec, ratio).unwrap();
        let tower = TpsBudget::new(ttl, min_per_sec, ratio);
        for step in 0..20_000 {
            match rng.u32(0..10) {
                0..=4 => {
                    if rng.bool() {
                        ours.deposit();
                    } else {
                        ours.deposit_at(Instant::now());
                    }
                    tower.deposit();
                }
                5..=7 => {
                    let (a, b) = (ours.withdraw(), tower.withdraw());
                    assert_eq!(
                        a, b,
                        "withdrawal at step {step} ({ttl:?}, {min_per_sec}, {ratio})"
                    );
                    if a {
                        granted += 1;
                    } else {
                        refused += 1;
                    }
                }
                8 => advance(Duration::from_millis(rng.u64(0..300))).await,
                _ => advance(ttl / 10 * rng.u32(0..4) + Duration::from_millis(rng.u64(0..3))).await,
            }
        }
    }
    // Both answers occur: the comparison is not between two always-empty (or full) budgets.
    assert!(
        granted > 1_000 && refused > 1_000,
        "{granted} granted, {refused} refused"
    );
}

/// A deposit at an instant read before a window ended counts in the window of that instant, and
/// expires with it.
#[tokio::test(start_paused = true)]
async fn deposit_at_counts_in_its_instant_window() {
    let budget = RetryBudget::new(Duration::from_secs(1), 0, 1.0).unwrap();
    budget.deposit_at(Instant::now());
    advance(Duration::from_millis(1_100)).await;
    assert!(!budget.withdraw(), "a deposit lives one ttl");
    budget.deposit_at(Instant::now());
    advance(Duration::from_millis(900)).await;
    assert!(budget.withdraw());
    assert!(!budget.withdraw());
}
