//! The oracle: the goodput a client that knew the hidden limits could reach.

use std::time::Duration;

use serde::Serialize;

use crate::scenario::{Fault, Scenario, WorkloadKind};

/// Achievable goodput per segment of the scenario (segments split at capacity steps and fault
/// windows): `min(offered load, best n / latency(n) for n <= C, RPM / 60, TPM / (60 × mean
/// tokens charged per request))`, zero during an outage, scaled by `1 - p` during a 529 burst.
///
/// "C / latency at C" is taken at the best in-flight count `n <= C`: with the queueing knee,
/// running slightly under C serves more per second than running at C, and the oracle is an
/// upper bound.
///
/// ```
/// use gentlify_sim::{Oracle, Scenario};
/// let sc = Scenario::builtin().into_iter().find(|s| s.name == "rpm-bound").unwrap();
/// let sizes = vec![(500, 100); 100];
/// let o = Oracle::compute(&sc, &sizes);
/// let rpm = sc.limits.requests_per_minute.unwrap() as f64;
/// assert!((o.goodput_rps - rpm / 60.0).abs() < 1e-9);
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct Oracle {
    /// Goodput of the first segment, requests/s.
    pub goodput_rps: f64,
    /// In-flight requests that reach `goodput_rps` (Little's law), at most C.
    pub concurrency: usize,
    /// Latency of a mean request with one in flight.
    #[serde(serialize_with = "secs")]
    pub unloaded_latency: Duration,
    /// Mean output tokens per request.
    pub mean_output_tokens: f64,
    /// Mean tokens charged per request (prompt + `max_tokens`).
    pub mean_charged_tokens: f64,
    /// The segments: `(from_s, to_s, goodput_rps)`; the last one runs to infinity.
    pub segments: Vec<(f64, f64, f64)>,
    /// Which bound is tightest in the first segment.
    pub bound: &'static str,
    /// Requests the API's full buckets let through at once at the start (when the first
    /// segment is bound by RPM or TPM): the oracle gets them too.
    pub initial_burst_requests: f64,
    #[serde(skip)]
    cost: (f64, f64),
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Oracle {
    /// Computes the oracle for `scenario` with the request sizes `(prompt, output)` drawn for
    /// the run.
    pub fn compute(scenario: &Scenario, sizes: &[(u64, u64)]) -> Oracle {
        let n = sizes.len().max(1) as f64;
        let mean_out = sizes.iter().map(|s| s.1 as f64).sum::<f64>() / n;
        let mean_charged = sizes.iter().map(|s| (s.0 + s.1) as f64).sum::<f64>() / n;
        let lat = &scenario.latency;

        let mut cuts = vec![0.0];
        for f in &scenario.faults {
            match *f {
                Fault::Outage { from_s, to_s, .. }
                | Fault::OverloadBurst { from_s, to_s, .. }
                | Fault::Drop { from_s, to_s, .. } => {
                    cuts.push(from_s);
                    cuts.push(to_s);
                }
                Fault::Capacity { at_s, .. } => cuts.push(at_s),
            }
        }
        cuts.retain(|c| *c >= 0.0);
        cuts.sort_by(f64::total_cmp);
        cuts.dedup();

        let rate_at = |cap: usize, at: f64| -> (f64, &'static str) {
            let best_conc = (1..=cap)
                .map(|k| k as f64 / lat.service_time(mean_out, k, cap).as_secs_f64())
                .fold(0.0, f64::max);
            let offered = match scenario.workload.kind {
                WorkloadKind::Closed { workers } => {
                    let w = workers * scenario.workload.clients;
                    let k = w.min(cap);
                    w as f64 / lat.service_time(mean_out, k, cap).as_secs_f64()
                }
                WorkloadKind::Open { rate_per_s } => rate_per_s,
            };
            let mut bounds = vec![("offered", offered), ("concurrency", best_conc)];
            if let Some(rpm) = scenario.limits.requests_per_minute {
                bounds.push(("rpm", rpm as f64 / 60.0));
            }
            if let Some(tpm) = scenario.limits.tokens_per_minute {
                bounds.push(("tpm", tpm as f64 / (60.0 * mean_charged)));
            }
            let (mut name, mut rate) = bounds
                .into_iter()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .expect("bounds");
            for f in &scenario.faults {
                match *f {
                    Fault::Outage { from_s, to_s, .. } if (from_s..to_s).contains(&at) => {
                        rate = 0.0;
                        name = "outage";
                    }
                    // A refused request takes no capacity, but it takes a request from the RPM
                    // bucket.
                    Fault::OverloadBurst {
                        from_s,
                        to_s,
                        probability,
                    } if (from_s..to_s).contains(&at) && name == "rpm" => rate *= 1.0 - probability,
                    Fault::Drop {
                        from_s,
                        to_s,
                        probability,
                        ..
                    } if (from_s..to_s).contains(&at) => rate *= 1.0 - probability,
                    _ => {}
                }
            }
            (rate, name)
        };

        let mut segments = Vec::new();
        for (i, from) in cuts.iter().enumerate() {
            let to = cuts.get(i + 1).copied().unwrap_or(f64::INFINITY);
            let cap = scenario.cap_at(Duration::from_secs_f64(*from));
            segments.push((*from, to, rate_at(cap, *from).0));
        }
        let cap0 = scenario.cap_at(Duration::ZERO);
        let (goodput_rps, bound) = rate_at(cap0, 0.0);
        let concurrency = (1..=cap0)
            .find(|k| *k as f64 / lat.service_time(mean_out, *k, cap0).as_secs_f64() >= goodput_rps)
            .unwrap_or(cap0);
        let burst_s = scenario.limits.burst_seconds;
        let initial_burst_requests = match bound {
            "rpm" => scenario
                .limits
                .requests_per_minute
                .map_or(0.0, |r| (r as f64 * burst_s / 60.0).max(1.0)),
            "tpm" => scenario
                .limits
                .tokens_per_minute
                .map_or(0.0, |t| t as f64 * burst_s / 60.0 / mean_charged),
            _ => 0.0,
        };
        // The work a request represents in the bound resource, relative to a mean request:
        // tokens charged when TPM binds, service time when the concurrency cap binds.
        let cost = match bound {
            "tpm" => (0.0, 1.0 / mean_charged),
            "concurrency" => {
                let mean = lat.ttft_ms + mean_out * lat.per_token_ms;
                (lat.ttft_ms / mean, lat.per_token_ms / mean)
            }
            _ => (1.0, 0.0),
        };
        Oracle {
            initial_burst_requests,
            cost,
            goodput_rps,
            concurrency,
            unloaded_latency: lat.service_time(mean_out, 1, cap0),
            mean_output_tokens: mean_out,
            mean_charged_tokens: mean_charged,
            segments,
            bound,
        }
    }

    /// Requests (of mean size) the oracle completes between 0 and `t` seconds.
    pub fn requests_until(&self, t: f64) -> f64 {
        self.initial_burst_requests
            + self
                .segments
                .iter()
                .map(|&(from, to, rate)| (to.min(t) - from).max(0.0) * rate)
                .sum::<f64>()
    }

    /// The work of a request of `prompt` and `output` tokens in units of a mean request, in the
    /// resource that bounds the oracle (tokens charged when TPM binds, service time when the
    /// concurrency cap binds, 1 otherwise). Goodput is counted in these units, so a client that
    /// completes only the small requests is not credited for more than it did.
    pub fn weight(&self, prompt: u64, output: u64) -> f64 {
        match self.bound {
            "tpm" => (prompt + output) as f64 * self.cost.1,
            _ => self.cost.0 + output as f64 * self.cost.1,
        }
    }

    /// The oracle's goodput at `t` seconds.
    pub fn rate_at(&self, t: f64) -> f64 {
        self.segments
            .iter()
            .find(|s| (s.0..s.1).contains(&t))
            .map_or(0.0, |s| s.2)
    }
}
