//! The latency-anomaly trigger: recent latencies far above their rolling mean.

use std::collections::VecDeque;
use std::time::Duration;

/// Trips the breaker when recent latencies stand several standard deviations above their rolling
/// mean, for upstreams that degrade by slowing down rather than by failing (the z-score breaker
/// of LLMKit).
///
/// The last [`recent`](LatencyAnomaly::recent) latencies are compared with the
/// [`baseline`](LatencyAnomaly::baseline) latencies before them: the breaker opens when
/// `(min(recent) - mean(baseline)) / stddev(baseline) >= z_score`, that is when *every* recent
/// latency stands that far above the mean (one slow outlier never trips it). The standard deviation is
/// floored at 5 % of the baseline mean (and at 1 ms), so an upstream with very steady latency
/// does not trip on a few milliseconds of noise.
///
/// ```
/// use gentlify_breaker::{CircuitBreakerLayer, LatencyAnomaly};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let layer = CircuitBreakerLayer::builder()
///     .latency_anomaly(LatencyAnomaly::default().z_score(4.0))
///     .build()
///     .unwrap();
/// # let _ = layer; }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyAnomaly {
    pub(crate) baseline: usize,
    pub(crate) recent: usize,
    pub(crate) min_baseline: usize,
    pub(crate) z_score: f64,
}

impl Default for LatencyAnomaly {
    /// A baseline of 50 latencies (at least 20 before the trigger arms), 5 recent ones, and a
    /// z-score of 3: under a normal distribution one latency lands 3 standard deviations above
    /// the mean about once in 740 calls; five in a row, practically never.
    fn default() -> Self {
        LatencyAnomaly {
            baseline: 50,
            recent: 5,
            min_baseline: 20,
            z_score: 3.0,
        }
    }
}

impl LatencyAnomaly {
    /// The number of latencies in the rolling baseline (default 50).
    pub fn baseline(mut self, calls: usize) -> Self {
        self.baseline = calls;
        self
    }

    /// The number of recent latencies that must all stand above the baseline (default 5).
    pub fn recent(mut self, calls: usize) -> Self {
        self.recent = calls;
        self
    }

    /// The number of baseline latencies needed before the trigger can fire (default 20).
    pub fn min_baseline(mut self, calls: usize) -> Self {
        self.min_baseline = calls;
        self
    }

    /// How many standard deviations above the baseline mean trip the breaker (default 3).
    pub fn z_score(mut self, z: f64) -> Self {
        self.z_score = z;
        self
    }
}

/// Running sums over the baseline ring (seconds), and a short recent ring scanned for its
/// minimum: O(recent) per record, a small constant.
#[derive(Debug)]
pub(crate) struct AnomalyDetector {
    config: LatencyAnomaly,
    recent: VecDeque<f64>,
    baseline: VecDeque<f64>,
    baseline_sum: f64,
    baseline_sum_sq: f64,
}

impl AnomalyDetector {
    pub(crate) fn new(config: LatencyAnomaly) -> Self {
        AnomalyDetector {
            config,
            recent: VecDeque::with_capacity(config.recent + 1),
            baseline: VecDeque::with_capacity(config.baseline + 1),
            baseline_sum: 0.0,
            baseline_sum_sq: 0.0,
        }
    }

    /// Records a latency; returns the z-score when it crosses the threshold.
    pub(crate) fn record(&mut self, latency: Duration) -> Option<f64> {
        let x = latency.as_secs_f64();
        self.recent.push_back(x);
        if self.recent.len() > self.config.recent {
            let old = self.recent.pop_front().unwrap_or_default();
            self.baseline.push_back(old);
            self.baseline_sum += old;
            self.baseline_sum_sq += old * old;
            if self.baseline.len() > self.config.baseline {
                let gone = self.baseline.pop_front().unwrap_or_default();
                self.baseline_sum -= gone;
                self.baseline_sum_sq -= gone * gone;
            }
        }
        if self.recent.len() < self.config.recent || self.baseline.len() < self.config.min_baseline
        {
            return None;
        }
        let n = self.baseline.len() as f64;
        let mean = self.baseline_sum / n;
        let variance = (self.baseline_sum_sq / n - mean * mean).max(0.0);
        let std = variance.sqrt().max(mean * 0.05).max(0.001);
        let lowest = self.recent.iter().copied().fold(f64::INFINITY, f64::min);
        let z = (lowest - mean) / std;
        (z >= self.config.z_score).then_some(z)
    }

    pub(crate) fn clear(&mut self) {
        *self = AnomalyDetector::new(self.config);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_latency_never_fires_and_a_jump_does() {
        let mut d = AnomalyDetector::new(LatencyAnomaly::default());
        for i in 0..200 {
            let jitter = (i % 7) as u64;
            assert_eq!(d.record(Duration::from_millis(100 + jitter)), None);
        }
        let fired = (0..5)
            .filter_map(|_| d.record(Duration::from_millis(400)))
            .last();
        assert!(fired.is_some_and(|z| z >= 3.0), "{fired:?}");
    }
}
