//! Running a scenario: the workload against each contender, in virtual time, and the figures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::client::{send, FailureClass, MeteredUpstream, RequestResult};
use crate::contenders::{Contender, ContenderCtx, LimitGauge, RetryMode, RunShared};
use crate::oracle::Oracle;
use crate::scenario::{Fault, Scenario, WorkloadKind};
use crate::upstream::{chat_request, SimUpstream};

/// The figures of one contender on one scenario.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Figures {
    /// Contender name.
    pub contender: String,
    /// Logical requests completed (2xx, body read to its end).
    pub completed: u64,
    /// Logical requests failed, by class of their last attempt.
    pub failed: BTreeMap<String, u64>,
    /// Logical requests neither completed nor failed when the run stopped (must be 0).
    pub lost: u64,
    /// Virtual seconds from the start to the last request's end.
    pub duration_s: f64,
    /// Completed requests per virtual second.
    pub goodput_rps: f64,
    /// The oracle's requests over the same duration, per second.
    pub oracle_rps: f64,
    /// Completed work / the oracle's work over the same duration, with work counted in mean
    /// requests of the bound resource (see [`Oracle::weight`]).
    pub goodput_ratio: f64,
    /// Attempts the API saw.
    pub attempts: u64,
    /// 429, 503 and 529 answers per 1 000 attempts.
    pub overloads_per_1000: f64,
    /// Attempts per logical request.
    pub attempts_per_request: f64,
    /// Attempts sent before a `retry-after` received by the same client had expired.
    pub sent_before_retry_after: u64,
    /// Median latency of a logical request, including client-side waiting, s.
    pub p50_s: f64,
    /// 99th percentile of the same, s.
    pub p99_s: f64,
    /// Highest concurrency requested of the API.
    pub peak_concurrency: usize,
    /// The API's concurrency cap at the start.
    pub cap: usize,
    /// Highest (requested concurrency / cap in force).
    pub peak_over_cap: f64,
    /// Longest settling time after a capacity step, s (`None` without steps).
    pub settling_s: Option<f64>,
    /// Jain's fairness index of per-client goodput (1 = equal shares).
    pub fairness: f64,
    /// Highest client-side limit the contender reported (summed over clients), if it reports
    /// one: a limit far above the concurrency actually used has inflated.
    pub peak_limit: Option<f64>,
}

/// A time series for the plot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    /// `(t_s, api_in_flight, cap, client_limit_sum)`.
    pub samples: Vec<(f64, usize, usize, f64)>,
    /// 429/503/529 answers, binned by sample interval: `(bin_start_s, count)`, empty bins
    /// left out.
    pub overloads: Vec<(f64, u32)>,
}

/// One contender's run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// The figures.
    pub figures: Figures,
    /// Wall-clock seconds the run took (machine-dependent; not part of the figures).
    pub wall_s: f64,
    /// The plot data.
    pub timeline: Timeline,
}

/// All contenders on one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// Scenario name.
    pub scenario: String,
    /// Logical requests per run.
    pub requests: usize,
    /// The oracle.
    pub oracle: Oracle,
    /// One run per contender, in order.
    pub runs: Vec<Run>,
}

/// Draws the request sizes of a scenario, `(prompt_tokens, output_tokens)`, from its seed.
pub fn draw_sizes(scenario: &Scenario) -> Vec<(u64, u64)> {
    let mut rng = fastrand::Rng::with_seed(scenario.seed);
    (0..scenario.requests)
        .map(|_| {
            let p = scenario.sizes.prompt_tokens.sample(&mut rng).max(1);
            let o = scenario.sizes.output_tokens.sample(&mut rng).max(1);
            (p, o)
        })
        .collect()
}

/// Runs every contender on `scenario`, each on a fresh current-thread runtime with the clock
/// paused, calling `progress` after each.
pub fn run_scenario(
    scenario: &Scenario,
    contenders: &[Contender],
    mut progress: impl FnMut(&str),
) -> ScenarioReport {
    let sizes = draw_sizes(scenario);
    let oracle = Oracle::compute(scenario, &sizes);
    let mut runs = Vec::new();
    for c in contenders {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("tokio runtime");
        // Wall time of the simulation itself, the one place a real clock is read.
        let wall = std::time::Instant::now();
        let mut run = rt.block_on(run_one(scenario, &sizes, &oracle, c));
        run.wall_s = wall.elapsed().as_secs_f64();
        drop(rt);
        progress(c.name);
        runs.push(run);
    }
    ScenarioReport {
        scenario: scenario.name.clone(),
        requests: scenario.requests,
        oracle,
        runs,
    }
}

struct Done {
    index: usize,
    client: usize,
    latency: Duration,
    end: Duration,
    result: RequestResult,
}

/// Runs one contender on `scenario` (call inside a current-thread runtime with a paused clock).
pub async fn run_one(
    scenario: &Scenario,
    sizes: &[(u64, u64)],
    oracle: &Oracle,
    contender: &Contender,
) -> Run {
    // Stacks that draw jitter from fastrand's thread-local generator (gentlify's pacing and
    // backoff) draw the same numbers for the same seed: the run is on this thread only.
    fastrand::seed(scenario.seed);
    let api = SimUpstream::with_wall_start(scenario, crate::upstream::sim_wall_epoch());
    let start = Instant::now();
    let clients = scenario.workload.clients;
    let stream = scenario.sizes.stream;
    let mut meters = Vec::new();
    let mut gauges = Vec::new();
    let mut stacks = Vec::new();
    let run_shared = RunShared::default();
    for client in 0..clients {
        let meter = MeteredUpstream::new(api.clone());
        let gauge = LimitGauge::default();
        let ctx = ContenderCtx {
            scenario,
            oracle,
            clients,
            client,
            limit: gauge.clone(),
            run: run_shared.clone(),
        };
        stacks.push((contender.build)(meter.clone(), &ctx));
        meters.push(meter);
        gauges.push(gauge);
    }
    let policy = match contender.retry {
        RetryMode::Shared => Some(scenario.retry.clone()),
        RetryMode::Own => None,
    };

    // Per client, the indices of its requests (dealt round-robin).
    let per_client: Vec<Arc<Vec<usize>>> = (0..clients)
        .map(|c| Arc::new((c..sizes.len()).step_by(clients).collect()))
        .collect();
    let sizes: Arc<Vec<(u64, u64)>> = Arc::new(sizes.to_vec());
    let done: Arc<Mutex<Vec<Done>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();

    match scenario.workload.kind {
        WorkloadKind::Closed { workers } => {
            for client in 0..clients {
                let next = Arc::new(AtomicUsize::new(0));
                for w in 0..workers {
                    let mut stack = stacks[client].clone();
                    let mine = per_client[client].clone();
                    let next = next.clone();
                    let sizes = sizes.clone();
                    let done = done.clone();
                    let policy = policy.clone();
                    let mut rng = fastrand::Rng::with_seed(
                        scenario.seed ^ ((client as u64) << 32 | w as u64),
                    );
                    tasks.spawn(async move {
                        loop {
                            let k = next.fetch_add(1, Ordering::Relaxed);
                            let Some(&i) = mine.get(k) else { break };
                            let (p, o) = sizes[i];
                            let began = Instant::now();
                            let result = send(
                                &mut stack,
                                || chat_request(p, o, stream),
                                policy.as_ref(),
                                &mut rng,
                            )
                            .await;
                            let now = Instant::now();
                            done.lock().expect("lock").push(Done {
                                index: i,
                                client,
                                latency: now - began,
                                end: now - start,
                                result,
                            });
                        }
                    });
                }
            }
        }
        WorkloadKind::Open { rate_per_s } => {
            let mut arrivals = fastrand::Rng::with_seed(scenario.seed ^ 0xA11);
            let mut t = 0.0;
            let mut schedule = Vec::with_capacity(sizes.len());
            for _ in 0..sizes.len() {
                t += -(1.0 - arrivals.f64()).ln() / rate_per_s;
                schedule.push(t);
            }
            for i in 0..sizes.len() {
                let client = i % clients;
                let at = start + Duration::from_secs_f64(schedule[i]);
                let mut stack = stacks[client].clone();
                let (p, o) = sizes[i];
                let done = done.clone();
                let policy = policy.clone();
                let mut rng =
                    fastrand::Rng::with_seed(scenario.seed ^ (i as u64).wrapping_mul(0x9E37_79B9));
                tasks.spawn(async move {
                    tokio::time::sleep_until(at).await;
                    let result = send(
                        &mut stack,
                        || chat_request(p, o, stream),
                        policy.as_ref(),
                        &mut rng,
                    )
                    .await;
                    let now = Instant::now();
                    done.lock().expect("lock").push(Done {
                        index: i,
                        client,
                        latency: now - at,
                        end: now - start,
                        result,
                    });
                });
            }
        }
    }
    drop(stacks);

    // The sampler: API in flight, cap and the contenders' limits over time.
    let expected_s = (sizes.len() as f64 / oracle.goodput_rps.max(1e-6)).max(1.0);
    let interval = Duration::from_secs_f64((expected_s / 600.0).max(0.05));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let api = api.clone();
        let stop = stop.clone();
        let gauges = gauges.clone();
        let scenario_caps = scenario.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(interval);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let t = start.elapsed();
                let limit: f64 = gauges.iter().map(LimitGauge::get).sum();
                samples.push((
                    t.as_secs_f64(),
                    api.in_flight(),
                    scenario_caps.cap_at(t),
                    limit,
                ));
            }
            samples
        })
    };

    // Runs stop after a generous virtual deadline; whatever is unfinished then is lost.
    let deadline = Duration::from_secs_f64(expected_s * 20.0 + 600.0);
    let _ = tokio::time::timeout(deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap_or_default();

    let done = std::mem::take(&mut *done.lock().expect("lock"));
    let stats = api.stats();
    let figures = figures(
        contender.name,
        scenario,
        oracle,
        &done,
        &sizes,
        &stats,
        &meters,
        &samples,
    );
    Run {
        figures,
        wall_s: 0.0,
        timeline: Timeline {
            overloads: bin(&stats.overload_times_s, interval.as_secs_f64()),
            samples,
        },
    }
}

#[allow(clippy::too_many_arguments)]
fn figures(
    name: &str,
    scenario: &Scenario,
    oracle: &Oracle,
    done: &[Done],
    sizes: &[(u64, u64)],
    stats: &crate::upstream::ServerStats,
    meters: &[MeteredUpstream],
    samples: &[(f64, usize, usize, f64)],
) -> Figures {
    let completed = done.iter().filter(|d| d.result.failure.is_none()).count() as u64;
    let completed_work: f64 = done
        .iter()
        .filter(|d| d.result.failure.is_none())
        .map(|d| oracle.weight(sizes[d.index].0, sizes[d.index].1))
        .sum();
    let mut failed = BTreeMap::new();
    for d in done {
        if let Some(class) = d.result.failure {
            let key = match class {
                FailureClass::Overloaded => "overloaded",
                FailureClass::Server => "server",
                FailureClass::Client => "client",
                FailureClass::Transport => "transport",
                FailureClass::Local => "local",
            };
            *failed.entry(key.to_string()).or_insert(0) += 1;
        }
    }
    let total = sizes.len();
    let lost = (total - done.len()) as u64;
    let duration_s = done
        .iter()
        .map(|d| d.end.as_secs_f64())
        .fold(0.0, f64::max)
        .max(1e-9);
    let oracle_requests = oracle.requests_until(duration_s);
    let overloads: u64 = [429, 503, 529]
        .iter()
        .map(|s| stats.statuses.get(s).copied().unwrap_or(0))
        .sum();
    let client_meters: Vec<_> = meters.iter().map(MeteredUpstream::meter).collect();
    let attempts: u64 = client_meters.iter().map(|m| m.attempts).sum();
    let mut lat: Vec<f64> = done.iter().map(|d| d.latency.as_secs_f64()).collect();
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let idx = ((lat.len() as f64 - 1.0) * q).round() as usize;
        lat[idx]
    };

    // Per-client goodput for Jain's index: completed over the client's own busy time.
    let clients = scenario.workload.clients;
    let mut per_client = vec![(0u64, 0f64); clients];
    for d in done.iter().filter(|d| d.result.failure.is_none()) {
        let e = &mut per_client[d.client];
        e.0 += 1;
        e.1 = e.1.max(d.end.as_secs_f64());
    }
    let xs: Vec<f64> = per_client
        .iter()
        .map(|(n, t)| if *t > 0.0 { *n as f64 / t } else { 0.0 })
        .collect();
    let sum: f64 = xs.iter().sum();
    let sq: f64 = xs.iter().map(|x| x * x).sum();
    let fairness = if sq > 0.0 {
        sum * sum / (xs.len() as f64 * sq)
    } else {
        0.0
    };

    Figures {
        contender: name.to_string(),
        completed,
        failed,
        lost,
        duration_s,
        goodput_rps: completed as f64 / duration_s,
        oracle_rps: oracle_requests / duration_s,
        goodput_ratio: if oracle_requests > 0.0 {
            completed_work / oracle_requests
        } else {
            0.0
        },
        attempts: stats.attempts,
        overloads_per_1000: if stats.attempts > 0 {
            overloads as f64 * 1000.0 / stats.attempts as f64
        } else {
            0.0
        },
        attempts_per_request: attempts as f64 / total.max(1) as f64,
        sent_before_retry_after: client_meters
            .iter()
            .map(|m| m.sent_before_retry_after)
            .sum(),
        p50_s: pct(0.5),
        p99_s: pct(0.99),
        peak_concurrency: stats.peak_offered_concurrency,
        cap: scenario.limits.concurrency,
        peak_over_cap: stats.peak_over_cap,
        settling_s: settling(scenario, stats, samples, duration_s),
        fairness,
        peak_limit: {
            let peak = samples.iter().map(|s| s.3).fold(0.0, f64::max);
            (peak > 0.0).then_some(peak)
        },
    }
}

/// Settling time after each capacity step: for a step down, until the last refusal at the cap
/// before the next step; for a step up, until the API's in-flight count first reaches 80 % of
/// the level it had before the first step (at most the new cap). The longest over the steps.
fn settling(
    scenario: &Scenario,
    stats: &crate::upstream::ServerStats,
    samples: &[(f64, usize, usize, f64)],
    end_s: f64,
) -> Option<f64> {
    let mut steps: Vec<(f64, usize)> = scenario
        .faults
        .iter()
        .filter_map(|f| match *f {
            Fault::Capacity { at_s, concurrency } => Some((at_s, concurrency)),
            _ => None,
        })
        .collect();
    if steps.is_empty() {
        return None;
    }
    steps.sort_by(|a, b| a.0.total_cmp(&b.0));
    let before = samples
        .iter()
        .filter(|s| s.0 < steps[0].0)
        .map(|s| s.1)
        .max()
        .unwrap_or(0);
    let mut worst: Option<f64> = None;
    let mut prev_cap = scenario.limits.concurrency;
    for (i, &(at, cap)) in steps.iter().enumerate() {
        if at >= end_s {
            break;
        }
        let until = steps.get(i + 1).map_or(f64::INFINITY, |s| s.0);
        let s = if cap < prev_cap {
            let last = stats
                .cap_refusal_times_s
                .iter()
                .filter(|t| (at..until).contains(*t))
                .fold(at, |a, &b| a.max(b));
            last - at
        } else {
            // Back up: until the API is used again at 80 % of what it was before the first
            // step (or of the new cap); the whole segment if that never happens.
            let target = (0.8 * cap.min(before) as f64).floor() as usize;
            samples
                .iter()
                .find(|s| (at..until).contains(&s.0) && s.1 >= target)
                .map_or(until.min(end_s) - at, |s| s.0 - at)
        };
        worst = Some(worst.map_or(s, |w: f64| w.max(s)));
        prev_cap = cap;
    }
    worst
}

fn bin(times: &[f64], width: f64) -> Vec<(f64, u32)> {
    let mut out: Vec<(f64, u32)> = Vec::new();
    for t in times {
        let start = (t / width).floor() * width;
        match out.last_mut() {
            Some(last) if (last.0 - start).abs() < width * 0.5 => last.1 += 1,
            _ => out.push((start, 1)),
        }
    }
    out
}
