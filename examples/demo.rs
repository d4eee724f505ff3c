//! The gentlify demonstration: a simulated rate-limited LLM API on loopback, a few hundred chat
//! requests from a few dozen workers over real HTTP (hyper-util's client), first with retries
//! only, then through the full gentlify stack, and what the throttle did.
//!
//! ```text
//! cargo run --release -p gentlify-examples --example demo            # both runs (~30 s)
//! cargo run --release -p gentlify-examples --example demo -- --only-gentlify
//! cargo run --release -p gentlify-examples --example demo -- --requests 200
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gentlify::core::Class;
use gentlify::{BoxError, Event, Throttle};
use gentlify_examples::{demo_scenario, jobs, quantile, sparkline, Job, SimServer};
use http::StatusCode;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressStyle};
use tower::{ServiceBuilder, ServiceExt};

/// Workers sending at once (closed loop: each sends its next request when the last ended).
const WORKERS: usize = 48;
/// One request in this many streams its answer.
const STREAM_EVERY: usize = 4;
/// How often the limit is sampled for the chart.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// One sample: the limit, the stack's in flight, the server's in service, 429s so far.
type Sample = (usize, usize, usize, u64);

type Call = Arc<dyn Fn(Job) -> Pin<Box<dyn Future<Output = Done> + Send>> + Send + Sync>;

/// How one logical request ended.
struct Done {
    status: Option<StatusCode>,
    error: Option<String>,
}

/// What a run measured on the caller's side.
struct Measured {
    wall: Duration,
    ok: usize,
    lost: usize,
    returned_429: usize,
    errors: Vec<String>,
    latencies: Vec<f64>,
    tokens: u64,
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template("  {spinner} [{elapsed_precise}] {bar:30} {pos:>4}/{len} {msg}")
        .expect("a valid template")
}

/// Sends every job through `call` from `WORKERS` loops; `status` is shown next to the bar.
async fn drive(jobs: &[Job], call: Call, status: impl Fn() -> String + Send + 'static) -> Measured {
    let bar = ProgressBar::new(jobs.len() as u64).with_style(style());
    let next = Arc::new(AtomicUsize::new(0));
    let jobs: Arc<[Job]> = jobs.into();
    let started = Instant::now();
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                bar.set_message(status());
                bar.tick();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        let (next, jobs, call, bar) = (next.clone(), jobs.clone(), call.clone(), bar.clone());
        workers.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&job) = jobs.get(i) else { break };
                let t0 = Instant::now();
                let done = call(job).await;
                mine.push((job, done, t0.elapsed().as_secs_f64()));
                bar.inc(1);
            }
            mine
        });
    }
    let mut m = Measured {
        wall: Duration::ZERO,
        ok: 0,
        lost: 0,
        returned_429: 0,
        errors: Vec::new(),
        latencies: Vec::new(),
        tokens: 0,
    };
    while let Some(mine) = workers.join_next().await {
        for (job, done, secs) in mine.expect("a worker does not panic") {
            match (done.status, done.error) {
                (Some(s), None) if s.is_success() => {
                    m.ok += 1;
                    m.tokens += job.prompt_tokens + job.max_tokens;
                    m.latencies.push(secs);
                }
                (status, error) => {
                    m.lost += 1;
                    if status == Some(StatusCode::TOO_MANY_REQUESTS) {
                        m.returned_429 += 1;
                    }
                    if let Some(e) = error {
                        m.errors.push(e);
                    } else if let Some(s) = status {
                        m.errors.push(format!("HTTP {s}"));
                    }
                }
            }
        }
    }
    m.wall = started.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    m.latencies.sort_by(f64::total_cmp);
    m
}

fn print_measured(m: &Measured) {
    let secs = m.wall.as_secs_f64();
    println!(
        "  done in {secs:.1} s: {} ok, {} lost ({} of them a 429 handed back to the caller)",
        m.ok, m.lost, m.returned_429
    );
    println!(
        "  goodput {:.1} requests/s, {:.0} tokens/s; latency per request p50 {:.2} s, p99 {:.2} s",
        m.ok as f64 / secs,
        m.tokens as f64 / secs,
        quantile(&m.latencies, 0.5),
        quantile(&m.latencies, 0.99),
    );
    if let Some(e) = m.errors.first() {
        println!("  first loss: {e}");
    }
}

fn print_server(server: &SimServer, cap: usize) -> u64 {
    let stats = server.stats();
    let statuses: Vec<String> = stats
        .statuses
        .iter()
        .map(|(s, n)| format!("{n} × {s}"))
        .collect();
    println!(
        "  the server saw {} attempts ({}); peak in service {} of its hidden cap {cap}, peak offered {}",
        stats.attempts,
        statuses.join(", "),
        stats.peak_in_flight,
        stats.peak_offered_concurrency,
    );
    stats.attempts
}

/// Reads a response to its end: the body is part of the request (a streamed answer holds its
/// place in the server's concurrency until the last chunk).
async fn finish<B>(response: http::Response<B>) -> Done
where
    B: http_body::Body,
    B::Error: std::fmt::Display,
{
    let status = response.status();
    match response.into_body().collect().await {
        Ok(_) => Done {
            status: Some(status),
            error: None,
        },
        Err(e) => Done {
            status: Some(status),
            error: Some(format!("body: {e}")),
        },
    }
}

/// Run 1: what most clients do without gentlify — the OpenAI SDK's policy (3 attempts, 0.5 s ×
/// 2ⁿ backoff with jitter, `retry-after-ms` honoured) and no limit on what is in flight.
async fn retries_only(url: String, jobs: &[Job], server: &Arc<SimServer>) -> Measured {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(WORKERS)
        .build_http::<String>();
    let call: Call = Arc::new(move |job: Job| {
        let (client, url) = (client.clone(), url.clone());
        Box::pin(async move {
            let mut attempt = 0;
            loop {
                let response = match client.request(job.request(&url)).await {
                    Ok(r) => r,
                    Err(e) => {
                        return Done {
                            status: None,
                            error: Some(e.to_string()),
                        }
                    }
                };
                let status = response.status();
                let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                attempt += 1;
                if !retryable || attempt == 3 {
                    return finish(response).await;
                }
                let delay = response
                    .headers()
                    .get("retry-after-ms")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .map(Duration::from_millis)
                    .unwrap_or_else(|| {
                        let base = 0.5 * 2f64.powi(attempt - 1);
                        Duration::from_secs_f64(base * (0.75 + 0.25 * fastrand::f64()))
                    });
                let _ = response.into_body().collect().await;
                tokio::time::sleep(delay).await;
            }
        })
    });
    let server = server.clone();
    drive(jobs, call, move || {
        let s = server.stats();
        let refused = s.statuses.get(&429).copied().unwrap_or(0);
        format!(
            "server: {} in service, {refused} × 429 so far",
            server.in_flight()
        )
    })
    .await
}

/// What the throttle told its event callback.
#[derive(Default)]
struct Heard {
    overloaded: AtomicU64,
    pauses: AtomicU64,
    decelerations: AtomicU64,
    rejected: AtomicU64,
}

/// Run 2: the same workload through `Throttle::openai()` over the same kind of client.
async fn with_gentlify(
    url: String,
    jobs: &[Job],
    server: &Arc<SimServer>,
    limits: &gentlify_sim::Limits,
) -> Measured {
    let cap = limits.concurrency;
    let rpm = limits.requests_per_minute.unwrap_or(u64::MAX);
    let tpm = limits.tokens_per_minute.unwrap_or(u64::MAX);
    let heard = Arc::new(Heard::default());
    let on_event = {
        let heard = heard.clone();
        move |event: &Event<'_>| match event {
            Event::Attempt(outcome) if matches!(outcome.class, Class::Overloaded { .. }) => {
                heard.overloaded.fetch_add(1, Ordering::Relaxed);
            }
            Event::Pause { .. } => {
                heard.pauses.fetch_add(1, Ordering::Relaxed);
            }
            Event::Deceleration { .. } => {
                heard.decelerations.fetch_add(1, Ordering::Relaxed);
            }
            Event::Rejected(_) => {
                heard.rejected.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    };
    // The OpenAI preset (its headers, its SDK's retries) with our tier's per-minute limits, as
    // OpenAI publishes them per account. The concurrency cap is not published: the stack finds
    // it from the 429s.
    let throttle = Throttle::openai()
        .name("sim-chat")
        .requests_per_minute(rpm)
        .tokens_per_minute(tpm)
        // The limiter's delays are set for LLM calls of seconds (cool 5 s after a cut, hold the
        // safe ceiling 20 s); this server answers in about 0.2 s, ten times faster, so they are
        // scaled by ten, as docs/tuning.md advises. At the defaults the limit climbs back more
        // slowly after a cut and the run's rate varies more (13-18 successes/s in three runs).
        .concurrency(|c| {
            c.acquire_timeout(Duration::from_secs(120))
                .cooling(Duration::from_millis(500))
                .max_cooling(Duration::from_secs(6))
                .ceiling_relax_after(Duration::from_secs(2))
        })
        // A batch can afford to wait: more attempts than the SDK's 3, on the same backoff.
        .retry(|r| r.max_attempts(8))
        .on_event(on_event)
        .build()
        .expect("a valid configuration");
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(WORKERS)
        .build_http::<String>();
    let stack = ServiceBuilder::new()
        .layer(throttle.clone())
        .service(client);

    // Sample the limit while the run goes.
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let sampler = {
        let (throttle, samples, server) = (throttle.clone(), samples.clone(), server.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tick.tick().await;
                let c = throttle.concurrency();
                let refused = server.stats().statuses.get(&429).copied().unwrap_or(0);
                let mut s = samples.lock().unwrap();
                s.push((c.limit, c.in_flight, server.in_flight(), refused));
            }
        })
    };

    let call: Call = Arc::new(move |job: Job| {
        let (stack, url) = (stack.clone(), url.clone());
        Box::pin(async move {
            match stack.oneshot(job.request(&url)).await {
                Ok(response) => finish(response).await,
                Err(e) => Done {
                    status: None,
                    error: Some(e.to_string()),
                },
            }
        })
    });
    let status = {
        let throttle = throttle.clone();
        let heard = heard.clone();
        move || {
            let c = throttle.concurrency();
            format!(
                "limit {:>2}, in flight {:>2}, waiting {:>2}, 429s heard {}",
                c.limit,
                c.in_flight,
                c.waiting,
                heard.overloaded.load(Ordering::Relaxed)
            )
        }
    };
    let m = drive(jobs, call, status).await;
    sampler.abort();
    print_measured(&m);

    // The limit over time, one column per half second.
    let samples = samples.lock().unwrap().clone();
    let per_col = 5;
    let cols: Vec<_> = samples.chunks(per_col).collect();
    let avg = |f: &dyn Fn(&Sample) -> f64| -> Vec<f64> {
        cols.iter()
            .map(|c| c.iter().map(f).sum::<f64>() / c.len() as f64)
            .collect()
    };
    let limit = avg(&|s| s.0 as f64);
    let in_service = avg(&|s| s.2 as f64);
    let mut refused_per_col = Vec::new();
    let mut before = 0;
    for c in &cols {
        let last = c.last().map(|s| s.3).unwrap_or(before);
        refused_per_col.push((last - before) as f64);
        before = last;
    }
    let top = limit.iter().copied().fold(cap as f64, f64::max);
    let max_limit = samples.iter().map(|s| s.0).max().unwrap_or(0);
    let first_limit = samples.first().map(|s| s.0).unwrap_or(0);
    let last_limit = samples.last().map(|s| s.0).unwrap_or(0);
    println!(
        "  over time ({:.1} s, one column per {:.1} s; full height = {top:.0}):",
        m.wall.as_secs_f64(),
        SAMPLE_EVERY.as_secs_f64() * per_col as f64
    );
    println!(
        "    concurrency limit  {}  {first_limit} → {last_limit} (max {max_limit})",
        sparkline(&limit, top)
    );
    println!(
        "    server in service  {}  (hidden cap {cap})",
        sparkline(&in_service, top)
    );
    let max_refused = refused_per_col.iter().copied().fold(1.0, f64::max);
    println!(
        "    429s from server   {}  (max {max_refused:.0} per column)",
        sparkline(&refused_per_col, max_refused)
    );
    for (i, s) in samples
        .iter()
        .enumerate()
        .step_by((samples.len() / 6).max(1))
    {
        println!(
            "    t={:>5.1} s  limit {:>2}  in flight {:>2}  server in service {:>2}  429s so far {}",
            i as f64 * SAMPLE_EVERY.as_secs_f64(),
            s.0,
            s.1,
            s.2,
            s.3
        );
    }

    let snapshot = throttle.snapshot();
    let overloaded = snapshot.attempts_overloaded;
    println!(
        "  429s: {overloaded} seen, {} retried, {} returned to the caller; {} pauses from the server's headers; {} decelerations; {} local rejections",
        overloaded.saturating_sub(m.returned_429 as u64),
        m.returned_429,
        heard.pauses.load(Ordering::Relaxed),
        heard.decelerations.load(Ordering::Relaxed),
        heard.rejected.load(Ordering::Relaxed),
    );
    println!("  final snapshot: {snapshot}");
    m
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let only_gentlify = args.iter().any(|a| a == "--only-gentlify");
    let requests = args
        .iter()
        .position(|a| a == "--requests")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(400);
    let scenario = demo_scenario();
    let limits = scenario.limits.clone();
    let cap = limits.concurrency;
    let jobs = jobs(&scenario, requests, STREAM_EVERY);
    let started = Instant::now();

    println!("gentlify demo: a simulated LLM API on loopback, real HTTP, real time");
    println!(
        "  hidden limits: {cap} requests at once (over it: 429 with no retry-after), {} requests/min, {} tokens/min, OpenAI-style rate-limit headers",
        limits.requests_per_minute.unwrap_or(0),
        limits.tokens_per_minute.unwrap_or(0)
    );
    let prompts: Vec<u64> = jobs.iter().map(|j| j.prompt_tokens).collect();
    println!(
        "  workload: {requests} chat requests from {WORKERS} workers, prompts of {}–{} tokens, 1 in {STREAM_EVERY} streamed",
        prompts.iter().min().unwrap_or(&0),
        prompts.iter().max().unwrap_or(&0),
    );

    let mut baseline = None;
    if !only_gentlify {
        println!();
        println!("[1/2] without gentlify: retries only (3 attempts, 0.5 s × 2ⁿ backoff, retry-after-ms honoured)");
        let server = Arc::new(SimServer::start(scenario.clone()).await?);
        let m = retries_only(server.url(), &jobs, &server).await;
        print_measured(&m);
        let attempts = print_server(&server, cap);
        baseline = Some((m, attempts));
    }

    println!();
    println!("[{0}/{0}] with gentlify: Throttle::openai() with the tier's RPM/TPM, up to 8 attempts, the limiter's delays scaled to 0.2 s calls, over hyper-util's client", if only_gentlify { 1 } else { 2 });
    let server = Arc::new(SimServer::start(scenario.clone()).await?);
    let m = with_gentlify(server.url(), &jobs, &server, &limits).await;
    let attempts = print_server(&server, cap);

    if let Some((b, b_attempts)) = baseline {
        let n = jobs.len();
        println!();
        println!(
            "summary: succeeded {}/{n} → {}/{n}, lost {} → {}, server attempts per success {:.1} → {:.2}, p99 {:.2} → {:.2} s; with gentlify {:.1} successes/s (the tier's RPM sustains {:.1}/s over a minute; a shorter run may go above it on the minute's unused quota)",
            b.ok,
            m.ok,
            b.lost,
            m.lost,
            b_attempts as f64 / b.ok.max(1) as f64,
            attempts as f64 / m.ok.max(1) as f64,
            quantile(&b.latencies, 0.99),
            quantile(&m.latencies, 0.99),
            m.ok as f64 / m.wall.as_secs_f64(),
            limits.requests_per_minute.unwrap_or(0) as f64 / 60.0,
        );
    }
    println!("total wall time {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
