//! The contenders: one function per client stack, run side by side on the same scenario.
//!
//! See [`contenders`] for how to add one.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use congestion_limiter::limiter::{DefaultLimiter, Limiter, Outcome as ClOutcome};
use gentlify_core::BoxError;
use http::{Request, Response};
use tower::util::BoxCloneService;
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::client::{box_response, take_virtual_rtt, ClientStack, MeteredUpstream};
use crate::oracle::Oracle;
use crate::scenario::Scenario;
use crate::upstream::SimBody;

/// Whether a contender uses the shared retry or brings its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryMode {
    /// The shared OpenAI-SDK-like retry wraps the stack (each retry passes the stack again).
    Shared,
    /// The stack retries by itself; the runner sends each request once.
    Own,
}

/// The client-side limit a contender reports for the plot (summed over the clients).
#[derive(Debug, Clone, Default)]
pub struct LimitGauge(Arc<AtomicU64>);

impl LimitGauge {
    /// Reports the current limit.
    pub fn set(&self, limit: f64) {
        self.0.store(limit.to_bits(), Ordering::Relaxed);
    }

    /// The last reported limit (0 if none).
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// What a contender's builder knows: the scenario (as a user reading the provider's docs would),
/// the oracle (for the statically tuned peers), and which client it builds for.
#[derive(Debug)]
pub struct ContenderCtx<'a> {
    /// The scenario.
    pub scenario: &'a Scenario,
    /// The oracle at the start of the run.
    pub oracle: &'a Oracle,
    /// How many clients share the quota.
    pub clients: usize,
    /// Which client this stack is for.
    pub client: usize,
    /// Where to report the stack's current limit.
    pub limit: LimitGauge,
    /// State shared by the stacks of all clients in this run (see [`ContenderCtx::shared`]).
    pub run: RunShared,
}

/// Values shared by the client stacks of one run, one per type: e.g. one feedback handle or
/// one budget for several clients, when a contender models a shared client-side quota.
#[derive(Debug, Clone, Default)]
pub struct RunShared(Arc<Mutex<Vec<Box<dyn std::any::Any + Send>>>>);

impl ContenderCtx<'_> {
    /// The run's shared value of type `T`, made by `init` for the first client that asks.
    ///
    /// ```
    /// use gentlify_sim::{ContenderCtx, RunShared};
    /// let shared = RunShared::default();
    /// let a: std::sync::Arc<u32> = shared.get_or_insert_with(|| std::sync::Arc::new(7));
    /// let b: std::sync::Arc<u32> = shared.get_or_insert_with(|| std::sync::Arc::new(8));
    /// assert_eq!((*a, *b), (7, 7));
    /// ```
    pub fn shared<T: Clone + Send + 'static>(&self, init: impl FnOnce() -> T) -> T {
        self.run.get_or_insert_with(init)
    }
}

impl RunShared {
    /// The value of type `T`, made by `init` if there is none yet.
    pub fn get_or_insert_with<T: Clone + Send + 'static>(&self, init: impl FnOnce() -> T) -> T {
        let mut values = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = values.iter().find_map(|v| v.downcast_ref::<T>()) {
            return v.clone();
        }
        let v = init();
        values.push(Box::new(v.clone()));
        v
    }
}

impl ContenderCtx<'_> {
    /// The oracle's concurrency for this client: the in-flight count that reaches the oracle's
    /// goodput by Little's law, capped by C, split evenly between the clients.
    pub fn oracle_concurrency(&self) -> usize {
        (self.oracle.concurrency as f64 / self.clients as f64)
            .round()
            .max(1.0) as usize
    }
}

/// A named client stack builder.
#[derive(Clone, Copy)]
pub struct Contender {
    /// Row name in the table.
    pub name: &'static str,
    /// Shared or own retry.
    pub retry: RetryMode,
    /// Builds one client's stack around the metered upstream.
    pub build: fn(MeteredUpstream, &ContenderCtx<'_>) -> ClientStack,
    /// A footnote for the table (how the peer was configured), or empty.
    pub note: &'static str,
}

impl fmt::Debug for Contender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Contender")
            .field("name", &self.name)
            .finish()
    }
}

/// Every contender, in table order.
///
/// # Adding a contender (e.g. a gentlify stack)
///
/// Write a `fn(MeteredUpstream, &ContenderCtx<'_>) -> ClientStack` that wraps the upstream in
/// your layers and ends with `.map_response(box_response)` and `BoxCloneService::new`, then add
/// a [`Contender`] to the list below:
///
/// ```
/// use gentlify_sim::{
///     box_response, contenders, run_scenario, ClientStack, Contender, ContenderCtx,
///     MeteredUpstream, RetryMode, Scenario,
/// };
/// use tower::{util::BoxCloneService, ServiceBuilder};
///
/// fn my_stack(up: MeteredUpstream, ctx: &ContenderCtx<'_>) -> ClientStack {
///     // A gentlify stack puts its layers here, on one handle shared by the run's clients:
///     // `let feedback = ctx.shared(gentlify_core::Feedback::new);`, and reports its limit
///     // for the plot from a controller with `ctx.limit.set(..)`.
///     ctx.limit.set(8.0);
///     BoxCloneService::new(
///         ServiceBuilder::new()
///             .map_response(box_response)
///             .concurrency_limit(8)
///             .service(up),
///     )
/// }
///
/// let mut list = contenders();
/// list.push(Contender { name: "mine", retry: RetryMode::Shared, build: my_stack, note: "" });
/// let scenario = Scenario::builtin().remove(0).reduced();
/// let report = run_scenario(&scenario, &list[list.len() - 1..], |_| {});
/// assert_eq!(report.runs[0].figures.lost, 0);
/// assert_eq!(report.runs[0].figures.peak_limit, Some(8.0));
/// ```
///
/// A contender whose name starts with `gentlify` is checked against the scenario's
/// `[expect.gentlify]` ranges by the test suite. `RetryMode::Own` skips the shared SDK-like retry
/// (for stacks that retry themselves, so that a request keeps its slot across attempts).
pub fn contenders() -> Vec<Contender> {
    use RetryMode::{Own, Shared};
    vec![
        Contender {
            name: "gentlify-concurrency",
            retry: Shared,
            build: crate::gentlify_stacks::concurrency_only,
            note: "AdaptiveConcurrencyLayer with its defaults, one limiter shared by the run's clients, under the shared retry",
        },
        Contender {
            name: "gentlify-full",
            retry: Own,
            build: crate::gentlify_stacks::full_with_headers,
            note: "the facade's Throttle::openai() (::anthropic() for Anthropic-style scenarios): breaker -> concurrency -> retry (its own, as many attempts as the shared retry) -> budget -> headers (the scenario's header family), one stack shared by the run's clients; the budget is given the scenario's published RPM/TPM when it has them (a user knows their tier's limits), at the budget's default 90 % safety ratio",
        },
        Contender {
            name: "gentlify-full-no-headers",
            retry: Own,
            build: crate::gentlify_stacks::full_without_headers,
            note: "the same without the header layer",
        },
        Contender {
            name: "no-throttle",
            retry: Shared,
            build: no_throttle,
            note: "retries only (OpenAI SDK backoff, honours retry-after)",
        },
        Contender {
            name: "tower-concurrency(C*)",
            retry: Shared,
            build: |up, ctx| concurrency(up, ctx, 1.0),
            note: "tower::limit::ConcurrencyLimit at the oracle's concurrency (Little's law, <= C)",
        },
        Contender {
            name: "tower-concurrency(C*/4)",
            retry: Shared,
            build: |up, ctx| concurrency(up, ctx, 0.25),
            note: "",
        },
        Contender {
            name: "tower-concurrency(4C*)",
            retry: Shared,
            build: |up, ctx| concurrency(up, ctx, 4.0),
            note: "",
        },
        Contender {
            name: "tower-rate(oracle)",
            retry: Shared,
            build: rate_limit,
            note: "tower::limit::RateLimit at the oracle's rate, behind a Buffer",
        },
        Contender {
            name: "tower-resilience-aimd",
            retry: Shared,
            build: tower_resilience_aimd,
            note: "tower-resilience-adaptive Aimd defaults but latency_threshold = 2x unloaded latency (the 100 ms default reads every LLM call as congestion); 429/503/529 mapped to errors (it counts only Err as failure); its retry layer replaced by the shared retry (it needs `Req: Clone`, which http::Request is not, and all contenders then retry alike); its circuit breaker left out (times its open state with std::time::Instant)",
        },
        Contender {
            name: "tower-acc-aimd",
            retry: Shared,
            build: |up, ctx| tower_acc(up, ctx, tower_acc::Aimd::default()),
            note: "(also -gradient2 and -vegas) each algorithm's defaults (Aimd counts an RTT over 5 s as loss); classifier: 429/503/529/5xx/errors are overload; RTT read from the virtual clock by a thin Algorithm wrapper",
        },
        Contender {
            name: "tower-acc-gradient2",
            retry: Shared,
            build: |up, ctx| tower_acc(up, ctx, tower_acc::Gradient2::default()),
            note: "",
        },
        Contender {
            name: "tower-acc-vegas",
            retry: Shared,
            build: |up, ctx| tower_acc(up, ctx, tower_acc::Vegas::default()),
            note: "",
        },
        Contender {
            name: "congestion-limiter-aimd",
            retry: Shared,
            build: congestion_limiter_aimd,
            note: "congestion-limiter Aimd (initial 10, range 1..=1000 defaults), 429/503/529/errors reported as Overload",
        },
    ]
}

fn is_overload_status(status: u16) -> bool {
    matches!(status, 429 | 503 | 529) || status >= 500
}

fn no_throttle(up: MeteredUpstream, ctx: &ContenderCtx<'_>) -> ClientStack {
    ctx.limit.set(0.0);
    BoxCloneService::new(up.map_response(box_response))
}

fn concurrency(up: MeteredUpstream, ctx: &ContenderCtx<'_>, factor: f64) -> ClientStack {
    let n = ((ctx.oracle_concurrency() as f64 * factor).round() as usize).max(1);
    ctx.limit.set(n as f64);
    BoxCloneService::new(
        ServiceBuilder::new()
            .map_response(box_response)
            .concurrency_limit(n)
            .service(up),
    )
}

fn rate_limit(up: MeteredUpstream, ctx: &ContenderCtx<'_>) -> ClientStack {
    let rate = ctx.oracle.goodput_rps / ctx.clients as f64;
    // tower's Rate is `num` per `per`; a whole number of requests per period close to the rate.
    let (num, per) = if rate >= 1.0 {
        (rate.round() as u64, Duration::from_secs(1))
    } else {
        (1, Duration::from_secs_f64(1.0 / rate.max(1e-3)))
    };
    ctx.limit.set(0.0);
    let limited = ServiceBuilder::new().rate_limit(num, per).service(up);
    let buffered = tower::buffer::Buffer::new(limited, 4096);
    BoxCloneService::new(buffered.map_response(box_response))
}

/// Carries an overload response through a peer that only counts errors, then back out.
struct StatusAsError(Mutex<Option<Response<SimBody>>>);

impl fmt::Debug for StatusAsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StatusAsError")
    }
}

impl fmt::Display for StatusAsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("overload status")
    }
}

impl std::error::Error for StatusAsError {}

/// The virtual-clock latency adapter for tower-resilience's algorithms.
struct VirtualLatency<A> {
    inner: A,
    gauge: LimitGauge,
}

impl<A: tower_resilience::adaptive::ConcurrencyAlgorithm>
    tower_resilience::adaptive::ConcurrencyAlgorithm for VirtualLatency<A>
{
    fn record_success(&self, latency: Duration) {
        self.inner
            .record_success(take_virtual_rtt().unwrap_or(latency));
        self.gauge.set(self.inner.limit() as f64);
    }
    fn record_failure(&self) {
        take_virtual_rtt();
        self.inner.record_failure();
        self.gauge.set(self.inner.limit() as f64);
    }
    fn record_dropped(&self) {
        self.inner.record_dropped();
    }
    fn limit(&self) -> usize {
        self.inner.limit()
    }
    fn min_limit(&self) -> usize {
        self.inner.min_limit()
    }
    fn max_limit(&self) -> usize {
        self.inner.max_limit()
    }
}

fn tower_resilience_aimd(up: MeteredUpstream, ctx: &ContenderCtx<'_>) -> ClientStack {
    use tower_resilience::adaptive::{AdaptiveError, AdaptiveLimiterLayer, Aimd};
    let unloaded = ctx.oracle.unloaded_latency;
    let aimd = Aimd::builder()
        .latency_threshold(unloaded * 2)
        .build()
        .expect("valid AIMD config");
    let gauge = ctx.limit.clone();
    gauge.set(10.0);
    let algorithm = VirtualLatency { inner: aimd, gauge };
    let inner = up.map_result(|r: Result<Response<SimBody>, BoxError>| match r {
        Ok(resp) if is_overload_status(resp.status().as_u16()) => {
            Err(Box::new(StatusAsError(Mutex::new(Some(resp)))) as BoxError)
        }
        other => other,
    });
    let limited = ServiceBuilder::new()
        .layer(AdaptiveLimiterLayer::new(algorithm))
        .service(inner);
    let outer = limited.map_result(|r| match r {
        Ok(resp) => Ok(box_response(resp)),
        Err(AdaptiveError::Service(e)) => match e.downcast::<StatusAsError>() {
            Ok(s) => Ok(box_response(
                s.0.lock().expect("lock").take().expect("response present"),
            )),
            Err(e) => Err(e),
        },
        Err(e) => Err(Box::new(e) as BoxError),
    });
    BoxCloneService::new(outer)
}

/// The virtual-clock RTT adapter for tower-acc's algorithms.
#[derive(Clone)]
struct VirtualRtt<A> {
    inner: A,
    gauge: LimitGauge,
}

impl<A: tower_acc::Algorithm> tower_acc::Algorithm for VirtualRtt<A> {
    fn max_concurrency(&self) -> usize {
        self.inner.max_concurrency()
    }

    fn update(&mut self, rtt: Duration, num_inflight: usize, is_error: bool, is_canceled: bool) {
        let rtt = take_virtual_rtt().unwrap_or(rtt);
        self.inner.update(rtt, num_inflight, is_error, is_canceled);
        self.gauge.set(self.inner.max_concurrency() as f64);
    }
}

type SimResult = Result<Response<SimBody>, BoxError>;

fn acc_classifier(r: &SimResult) -> bool {
    match r {
        Ok(resp) => is_overload_status(resp.status().as_u16()),
        Err(_) => true,
    }
}

fn tower_acc<A>(up: MeteredUpstream, ctx: &ContenderCtx<'_>, algorithm: A) -> ClientStack
where
    A: tower_acc::Algorithm + Clone + Send + 'static,
{
    ctx.limit.set(algorithm.max_concurrency() as f64);
    let algorithm = VirtualRtt {
        inner: algorithm,
        gauge: ctx.limit.clone(),
    };
    let layer = tower_acc::ConcurrencyLimitLayer::with_classifier(
        algorithm,
        acc_classifier as fn(&SimResult) -> bool,
    );
    BoxCloneService::new(
        ServiceBuilder::new()
            .map_response(box_response)
            .layer(layer)
            .service(up),
    )
}

/// A thin tower adapter over a congestion-limiter `Limiter`: acquire a token (waiting), call,
/// release the token with the outcome when the response (headers) arrives.
struct CongestionLimited {
    inner: MeteredUpstream,
    limiter: Arc<DefaultLimiter<congestion_limiter::limits::Aimd>>,
    gauge: LimitGauge,
}

impl Clone for CongestionLimited {
    fn clone(&self) -> Self {
        CongestionLimited {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            gauge: self.gauge.clone(),
        }
    }
}

impl Service<Request<String>> for CongestionLimited {
    type Response = Response<SimBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = SimResult> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<String>) -> Self::Future {
        let limiter = self.limiter.clone();
        let inner = self.inner.clone();
        let gauge = self.gauge.clone();
        Box::pin(async move {
            let token = limiter
                .acquire_timeout(Duration::from_secs(24 * 3600))
                .await
                .ok_or_else(|| BoxError::from("congestion-limiter: no token within a day"))?;
            let result = inner.oneshot(req).await;
            let outcome = if acc_classifier(&result) {
                ClOutcome::Overload
            } else {
                ClOutcome::Success
            };
            let limit = limiter.release(token, Some(outcome)).await;
            gauge.set(limit as f64);
            result
        })
    }
}

fn congestion_limiter_aimd(up: MeteredUpstream, ctx: &ContenderCtx<'_>) -> ClientStack {
    let algo = congestion_limiter::limits::Aimd::new_with_initial_limit(10);
    let limiter = Arc::new(DefaultLimiter::new(algo));
    ctx.limit.set(limiter.state().limit() as f64);
    let svc = CongestionLimited {
        inner: up,
        limiter,
        gauge: ctx.limit.clone(),
    };
    BoxCloneService::new(svc.map_response(box_response))
}
