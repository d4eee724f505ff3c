//! The knee estimator: which concurrency level serves the most requests per second.
//!
//! A server that slows down as it gets busier (a self-hosted inference server batching more
//! sequences, a gateway queueing) has a *knee*: above some in-flight count its latency grows
//! faster than the count, and by Little's law (`throughput = in-flight / latency`) more
//! concurrency then serves fewer requests per second. An overload-only controller does not see
//! it: it climbs until the server refuses work, and sits just under the refusal point, past the
//! knee.
//!
//! The estimator keeps, per band of concurrency levels (5 % wide), an exponential average of the
//! latency of the successful attempts sent while the limit was in that band, with its spread.
//! An LLM call's latency varies with the length of its answer; averaged over tens of calls
//! drawn from the same mix of requests, it does not, so the averages of two bands compare the
//! server's load and not the answers. `throughput(band) = level / mean latency`.
//!
//! An answer joins its band only once the attempts sent with it have had time to answer (the
//! horizon, two smoothed round trips): a level sent to recently has heard only its quick
//! answers, and its average would otherwise make it look better than it is.
//!
//! When a lower band's throughput, taken at the lower end of its confidence interval (one
//! standard error), beats the current band's by a margin, the controller holds the limit there.
//! As the limit climbs above a *base* level (the level an overload's cut went to, a knee held),
//! the burden of proof lies with the levels above: each one's band, once measured, must serve at
//! least as much per second as the base's (point estimates: near the top of the curve, where
//! the two are close, either choice costs little), or the limit goes back to the base. A band
//! that serves clearly more (by the margin and one standard error) becomes the base, and the
//! climb is *cleared*: it goes on without being measured step by step.
//!
//! On a server whose latency does not depend on this client's load (a large hosted API, where
//! the binding limits are the key's quotas), throughput grows with the level, a lower band never
//! wins, and the estimator does nothing.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Width of a band: levels within 5 % of each other share their statistics.
const BAND_RATIO: f64 = 1.05;
/// Samples a band needs before it takes part in a comparison.
pub(crate) const MIN_SAMPLES: u32 = 48;
/// Samples the exponential average spans.
const WINDOW: u32 = 64;
/// Standard errors taken off the lower band's throughput before the comparison.
const Z: f64 = 1.0;
/// How much better (relative) a lower band must be to move the limit down to it.
const MARGIN: f64 = 0.03;
/// Bands kept (the oldest is forgotten first): memory is bounded whatever the limit's range.
const MAX_BANDS: usize = 24;
/// Changes of the limit remembered to find the level an attempt was sent under.
const HISTORY: usize = 16;
/// Answers kept waiting for the answers of the attempts sent before them (the oldest is
/// settled first when full): memory is bounded whatever the rate.
const MAX_PENDING: usize = 1024;
/// Standard errors (of the difference) by which the held level's latency, measured afresh
/// during the hold, must fall below what it was when the hold began for the server's capacity
/// to count as grown.
const Z_ROSE: f64 = 3.0;
/// Standard errors (of the difference) by which a probe above a knee held must answer faster
/// than the knee for the server's capacity to count as grown. Fewer than [`Z_ROSE`]: a server
/// whose capacity did not move answers no faster at a higher level, so any clear fall is
/// evidence (`gentlify-sim`, goodput × oracle: capacity-step, 12 seeds, limiter alone
/// 0.921 → 0.923 with 2 rather than 3; constant-cap 24 seeds, large-backlog 12,
/// dropped-connections 24: identical).
const Z_FASTER_ABOVE: f64 = 2.0;
/// And the least relative fall.
const ROSE_BY: f64 = 0.05;
/// Most times in a row a hold's period doubles when the knee is found again where it was
/// (the longest hold is `2^MAX_REPEATS` relaxation periods).
const MAX_REPEATS: u32 = 2;

#[derive(Debug, Clone, Copy)]
struct Band {
    index: i32,
    /// Mean level (limit) of the samples.
    level: f64,
    /// Mean latency, s.
    mean: f64,
    /// Mean of squared latency, s².
    square: f64,
    count: u32,
    updated: Instant,
    /// When the last sample's attempt was sent.
    sent: Instant,
}

impl Band {
    fn add(&mut self, level: f64, latency: f64, sent_at: Instant, now: Instant) {
        self.count = self.count.saturating_add(1);
        self.sent = sent_at;
        let w = 1.0 / f64::from(self.count.min(WINDOW));
        self.level += (level - self.level) * w;
        self.mean += (latency - self.mean) * w;
        self.square += (latency * latency - self.square) * w;
        self.updated = now;
    }

    fn throughput(&self) -> f64 {
        self.level / self.mean.max(1e-9)
    }

    /// Throughput with the mean latency raised by `z` standard errors.
    fn throughput_low(&self, z: f64) -> f64 {
        self.level / (self.mean + z * self.standard_error()).max(1e-9)
    }

    /// The standard error of the mean latency.
    fn standard_error(&self) -> f64 {
        let var = (self.square - self.mean * self.mean).max(0.0);
        let n = f64::from(self.count.clamp(1, WINDOW));
        (var / n).sqrt()
    }
}

fn band_of(level: usize) -> i32 {
    ((level.max(1) as f64).ln() / BAND_RATIO.ln()).floor() as i32
}

/// Samples the fit of latency against output tokens spans (an exponential window).
const FIT_WINDOW: f64 = 256.0;
/// Samples the fit needs before it normalises latency.
const FIT_MIN: f64 = 32.0;

/// Latency against output tokens, a least-squares line over the recent answers whose usage is
/// known: an LLM call's latency is about a fixed part plus a time per output token.
#[derive(Debug, Default, Clone, Copy)]
struct Fit {
    n: f64,
    x: f64,
    y: f64,
    xx: f64,
    xy: f64,
}

impl Fit {
    fn add(&mut self, x: f64, y: f64) {
        let keep = 1.0 - 1.0 / FIT_WINDOW;
        self.n = self.n * keep + 1.0;
        self.x = self.x * keep + x;
        self.y = self.y * keep + y;
        self.xx = self.xx * keep + x * x;
        self.xy = self.xy * keep + x * y;
    }

    /// How much longer the line says an answer of `x` output tokens takes than one of the
    /// mean length. Only the line's shape counts (its fixed part over its time per token):
    /// the server's load scales both alike, and the bands must keep the load's effect.
    fn length_factor(&self, x: f64) -> Option<f64> {
        if self.n < FIT_MIN {
            return None;
        }
        let (mx, my) = (self.x / self.n, self.y / self.n);
        let var = self.xx / self.n - mx * mx;
        if var <= 1e-9 {
            return Some(1.0);
        }
        let slope = (self.xy / self.n - mx * my) / var;
        let fixed = my - slope * mx;
        if slope <= 1e-12 || fixed < 0.0 {
            // Latency does not follow the length (a streamed head), or the line is off.
            return Some(1.0);
        }
        let tokens = fixed / slope;
        Some((tokens + x.max(0.0)) / (tokens + mx))
    }
}

/// An answer not yet in its band: the answers of attempts sent about when it was may still be
/// on their way.
#[derive(Debug, Clone, Copy)]
struct Pending {
    sent: Instant,
    level: usize,
    latency: f64,
}

/// Per-band latency statistics and the history of the limit.
#[derive(Debug)]
pub(crate) struct Knee {
    /// Answers heard, kept until every attempt sent before them has had time to answer
    /// ([`Knee::horizon`]).
    pending: VecDeque<Pending>,
    /// The earliest dispatch among `pending`.
    earliest: Option<Instant>,
    /// How long after an attempt's dispatch its answer counts in its band: until then, the
    /// attempts sent at the same level that take longer have not answered, and a band's
    /// average would favour the short answers (the more, the more recently the level was
    /// sent to). Zero: at once.
    pub(crate) horizon: Duration,
    bands: Vec<Band>,
    /// `(since, effective limit)`, newest last.
    history: Vec<(Instant, usize)>,
    /// When the estimator last moved the limit: bands measured before it are measured again
    /// before they count.
    pub(crate) moved_at: Option<Instant>,
    last_check: Option<Instant>,
    /// The level the estimator last held the limit at, and how many times in a row it was
    /// found again within a band of it after the hold relaxed and the limit probed above.
    found: Option<(f64, u32)>,
    /// The best level measured as the limit climbs above it (the level an overload's cut went
    /// to, a knee held, a probe that served as much): the bands above it must serve as much
    /// per second, each once measured, or the limit goes back to it.
    base: Option<f64>,
    /// A level above the base served clearly more (by [`MARGIN`], and one standard error): the
    /// server is not past its knee there, and the limit climbs on without measuring each step,
    /// until the next cut or hold sets a base again.
    cleared: bool,
    /// Latency against output tokens, while answers report their usage.
    fit: Fit,
    /// The band of the level held, its mean latency and the standard error of that mean when
    /// the hold began.
    reference: Option<(i32, f64, f64)>,
    /// Answers report their usage: the bands keep latency relative to what the fit predicts
    /// for each answer's length, recorded when the answer ends, not raw latency at its head.
    pub(crate) by_usage: bool,
    /// A band above a knee held answered markedly faster than the knee's: the server's
    /// capacity grew since the knee was measured (taken by [`Knee::take_grew`]); the relative
    /// fall of the mean latency.
    grew: Option<f64>,
}

impl Knee {
    pub(crate) fn new() -> Self {
        Knee {
            pending: VecDeque::new(),
            earliest: None,
            horizon: Duration::ZERO,
            bands: Vec::with_capacity(MAX_BANDS),
            history: Vec::with_capacity(HISTORY),
            moved_at: None,
            last_check: None,
            found: None,
            base: None,
            cleared: false,
            reference: None,
            fit: Fit::default(),
            by_usage: false,
            grew: None,
        }
    }

    /// A success sent at `sent_at`, its head after `latency`, whose answer had `tokens` output
    /// tokens. Its latency scaled to an answer of the mean length (by the fit's line) goes to
    /// the bands when `record` (the sender filled the limit): the length of the answers no
    /// longer adds its noise to the comparison of two bands.
    pub(crate) fn record_usage(
        &mut self,
        sent_at: Instant,
        latency: Duration,
        tokens: u64,
        record: bool,
        stale: Duration,
        now: Instant,
    ) {
        if !self.by_usage {
            // The bands held raw latency: they start over in the new unit.
            self.by_usage = true;
            self.bands.clear();
        }
        let (x, y) = (tokens as f64, latency.as_secs_f64());
        let factor = self.fit.length_factor(x);
        self.fit.add(x, y);
        if let (true, Some(f)) = (record, factor) {
            self.record(sent_at, Duration::from_secs_f64(y / f), stale, now);
        }
    }

    /// The estimator holds the limit at `level` from `now` on. Found again within a band of
    /// the last hold (a probe above it ended back there), the knee is confirmed: the hold
    /// lasts twice as long as the last one, up to `2^MAX_REPEATS` times the relaxation period.
    pub(crate) fn hold(&mut self, level: f64, now: Instant) {
        let band = band_of(level as usize);
        let repeats = match self.found {
            Some((last, repeats)) if (band_of(last as usize) - band).abs() <= 1 => {
                (repeats + 1).min(MAX_REPEATS)
            }
            _ => 0,
        };
        self.found = Some((level, repeats));
        self.base = Some(level);
        self.cleared = false;
        self.moved_at = Some(now);
        self.reference = self
            .bands
            .iter()
            .find(|b| b.index == band && b.count >= MIN_SAMPLES / 2)
            .map(|b| (band, b.mean, b.standard_error()));
    }

    /// Whether the server's capacity grew during the hold at `level`: its latency, measured
    /// afresh since the hold began ([`MIN_SAMPLES`]` / 2` answers or more), fell well below
    /// what it was then (by [`ROSE_BY`] and [`Z_ROSE`] standard errors). A server with a knee
    /// answers faster at the same level when it can carry more. The knee is then forgotten.
    /// The relative fall of the mean latency when it did (the largest, if several bands
    /// qualify).
    pub(crate) fn capacity_rose(
        &mut self,
        level: usize,
        stale: Duration,
        now: Instant,
    ) -> Option<f64> {
        let (index, mean, se) = self.reference?;
        if band_of(level) != index {
            return None;
        }
        self.settle(stale, now);
        let moved_at = self.moved_at;
        let rose = self
            .bands
            .iter()
            .filter(|b| {
                b.index == index
                    && b.count >= MIN_SAMPLES / 2
                    && moved_at.is_none_or(|m| b.sent >= m)
            })
            .filter_map(|b| {
                let fall = mean - b.mean;
                let spread = (se * se + b.standard_error().powi(2)).sqrt();
                (fall > ROSE_BY * mean && fall > Z_ROSE * spread).then_some(fall / mean)
            })
            .max_by(f64::total_cmp);
        if rose.is_some() {
            self.found = None;
            self.base = None;
            self.reference = None;
        }
        rose
    }

    /// Whether, since the last call, a band above a knee held answered markedly faster than
    /// the knee's (the server's capacity grew; see [`Knee::better_below`]): the relative fall
    /// of the mean latency.
    pub(crate) fn take_grew(&mut self) -> Option<f64> {
        self.grew.take()
    }

    /// How many relaxation periods the current hold lasts: 1, doubled for each time in a row
    /// the knee was found again where it was.
    pub(crate) fn hold_periods(&self) -> u32 {
        1 << self.found.map_or(0, |(_, repeats)| repeats)
    }

    /// Whether the band of `level` has been measured enough to take part in a comparison:
    /// [`MIN_SAMPLES`] answers to attempts sent since the last move, the last within `stale`.
    pub(crate) fn measured(&mut self, level: usize, stale: Duration, now: Instant) -> bool {
        self.settle(stale, now);
        let index = band_of(level);
        self.bands.iter().any(|b| {
            b.index == index
                && b.count >= MIN_SAMPLES
                && now.saturating_duration_since(b.updated) <= stale
                && self.moved_at.is_none_or(|m| b.sent >= m)
        })
    }

    /// Whether `limit` lies more than a band above the knee's `level`.
    pub(crate) fn above(&self, limit: f64, level: f64) -> bool {
        band_of(limit as usize) > band_of(level as usize) + 1
    }

    /// Whether `limit` probes above the base level (its band lies above the base's) and each
    /// step is to be measured before the next.
    pub(crate) fn probing(&self, limit: f64) -> bool {
        !self.cleared
            && self
                .base
                .is_some_and(|level| band_of(limit as usize) > band_of(level as usize))
    }

    /// The level the bands above are compared with as the limit climbs, while each step is to
    /// be measured.
    pub(crate) fn base(&self) -> Option<f64> {
        self.base.filter(|_| !self.cleared)
    }

    /// The limit climbs from `level` (an overload's cut went there): the bands above must serve
    /// as much per second as its band.
    pub(crate) fn set_base(&mut self, level: f64) {
        self.base = Some(level);
        self.cleared = false;
    }

    /// The level of the last hold, while it is remembered.
    pub(crate) fn found_level(&self) -> Option<f64> {
        self.found.map(|(level, _)| level)
    }

    /// The server refused work below the knee's last level: its capacity moved, the knee with
    /// it. The next hold starts over at one period.
    pub(crate) fn forget_below(&mut self, limit: f64) {
        if self
            .found
            .is_some_and(|(level, _)| band_of(limit as usize) < band_of(level as usize))
        {
            self.found = None;
        }
        if self
            .base
            .is_some_and(|level| band_of(limit as usize) < band_of(level as usize))
        {
            self.base = None;
        }
    }

    /// The effective limit is `level` from `now` on.
    pub(crate) fn limit_changed(&mut self, level: usize, now: Instant) {
        if self.history.last().is_some_and(|&(_, l)| l == level) {
            return;
        }
        if self.history.len() == HISTORY {
            self.history.remove(0);
        }
        self.history.push((now, level));
    }

    /// The effective limit in force at `at`, if remembered.
    fn level_at(&self, at: Instant) -> Option<usize> {
        self.history
            .iter()
            .rev()
            .find(|&&(since, _)| since <= at)
            .map(|&(_, l)| l)
    }

    /// A success sent at `sent_at` that took `latency`, while the sender filled the limit.
    /// It joins its band once the attempts sent before it have had [`Knee::horizon`] to
    /// answer. Samples older than `stale` are forgotten.
    pub(crate) fn record(
        &mut self,
        sent_at: Instant,
        latency: Duration,
        stale: Duration,
        now: Instant,
    ) {
        let Some(level) = self.level_at(sent_at) else {
            return;
        };
        if self.pending.len() == MAX_PENDING {
            if let Some(p) = self.pending.pop_front() {
                self.fold(p, stale, now);
            }
        }
        self.pending.push_back(Pending {
            sent: sent_at,
            level,
            latency: latency.as_secs_f64(),
        });
        self.earliest = Some(self.earliest.map_or(sent_at, |e| e.min(sent_at)));
        self.settle(stale, now);
    }

    /// Moves into their bands, in the order they were sent, the answers to attempts sent at
    /// least [`Knee::horizon`] ago.
    pub(crate) fn settle(&mut self, stale: Duration, now: Instant) {
        let Some(cutoff) = now.checked_sub(self.horizon) else {
            return;
        };
        if self.earliest.is_none_or(|e| e > cutoff) {
            return;
        }
        let mut ready: Vec<Pending> = Vec::new();
        let mut earliest = None;
        self.pending.retain(|p| {
            if p.sent <= cutoff {
                ready.push(*p);
                false
            } else {
                earliest = Some(earliest.map_or(p.sent, |e: Instant| e.min(p.sent)));
                true
            }
        });
        self.earliest = earliest;
        ready.sort_by_key(|p| p.sent);
        for p in ready {
            self.fold(p, stale, now);
        }
    }

    fn fold(&mut self, p: Pending, stale: Duration, now: Instant) {
        let Pending {
            sent: sent_at,
            level,
            latency,
        } = p;
        let index = band_of(level);
        let moved_at = self.moved_at;
        if let Some(b) = self.bands.iter_mut().find(|b| b.index == index) {
            if moved_at.is_some_and(|m| sent_at < m && b.sent >= m) {
                // Sent before the last move, into a band measured afresh since.
                return;
            }
            // Measured before the last move (sent before it: the answers of attempts sent
            // before a move keep coming in for a round trip after it), or too long ago.
            let old = moved_at.is_some_and(|m| b.sent < m)
                || now.saturating_duration_since(b.updated) > stale;
            if old {
                b.count = 0;
            }
            b.add(level as f64, latency, sent_at, now);
            return;
        }
        if self.bands.len() == MAX_BANDS {
            if let Some(oldest) = self
                .bands
                .iter()
                .enumerate()
                .min_by_key(|(_, b)| b.updated)
                .map(|(i, _)| i)
            {
                self.bands.swap_remove(oldest);
            }
        }
        let mut band = Band {
            index,
            level: 0.0,
            mean: 0.0,
            square: 0.0,
            count: 0,
            updated: now,
            sent: sent_at,
        };
        band.add(level as f64, latency, sent_at, now);
        self.bands.push(band);
    }

    /// At most once per `every`: the level (mean of its band) the limit should move down to,
    /// when a lower band serves more requests per second than the band of `limit`.
    pub(crate) fn better_below(
        &mut self,
        limit: usize,
        every: Duration,
        stale: Duration,
        now: Instant,
    ) -> Option<f64> {
        if self
            .last_check
            .is_some_and(|c| now.saturating_duration_since(c) < every)
        {
            return None;
        }
        self.settle(stale, now);
        let current = band_of(limit);
        // Measured since the last move (a band last sent to before it is measured afresh when
        // the limit comes back to it), recently, and enough.
        let moved_at = self.moved_at;
        let fresh = |b: &Band| {
            b.count >= MIN_SAMPLES
                && now.saturating_duration_since(b.updated) <= stale
                && moved_at.is_none_or(|m| b.sent >= m)
        };
        let here = self.bands.iter().find(|b| b.index == current && fresh(b))?;
        self.last_check = Some(now);
        // A climb above the base level (an overload's cut, a knee held): the burden of proof
        // lies with the level above. Its band, once measured, must serve at least as much per
        // second as the base's, or the limit goes back to the base (without waiting for the
        // server's cap, or for a lower band to win by the margin and the spread). When it
        // does, it becomes the base.
        if let Some(level) = self.base {
            let base = band_of(level as usize);
            if current > base {
                if let Some(b) = self.bands.iter().find(|b| b.index == base && fresh(b)) {
                    // A probe above a knee held (its band measured during the hold) that
                    // answers markedly faster than the knee (by `ROSE_BY` and
                    // `Z_FASTER_ABOVE` standard errors): a server's latency
                    // does not fall as its load grows, so its capacity grew since the hold,
                    // which `capacity_rose` could not see once the hold had relaxed. The knee
                    // and the base are forgotten. Only above a knee held: a base an overload's
                    // cut went to may have been measured while the load before the cut still
                    // weighed on the server (`gentlify-sim`'s large-backlog, C = 100: four
                    // runs in twelve saw a level above the base answer faster, and their
                    // goodput fell by up to 0.028 × oracle when that restarted slow start).
                    let fall = b.mean - here.mean;
                    let spread =
                        (b.standard_error().powi(2) + here.standard_error().powi(2)).sqrt();
                    let knee_held = self.found.is_some_and(|(f, _)| band_of(f as usize) == base);
                    if knee_held && fall > ROSE_BY * b.mean && fall > Z_FASTER_ABOVE * spread {
                        self.found = None;
                        self.base = None;
                        self.reference = None;
                        self.cleared = false;
                        self.grew = Some(fall / b.mean);
                        return None;
                    }
                    if b.throughput() >= here.throughput() {
                        return Some(level);
                    }
                    if here.throughput_low(Z) > b.throughput() * (1.0 + MARGIN) {
                        self.base = Some(here.level);
                        self.cleared = true;
                    }
                }
            }
        }
        let bar = here.throughput() * (1.0 + MARGIN);
        let best = self
            .bands
            .iter()
            .filter(|b| b.index < current && fresh(b))
            .map(|b| (b.throughput_low(Z), b.level))
            .filter(|&(x, _)| x > bar)
            .max_by(|a, b| a.0.total_cmp(&b.0))?;
        Some(best.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 60 answers to attempts sent at `sent`, each `latency` seconds, heard at `at`.
    fn record_60(k: &mut Knee, sent: Instant, latency: f64, stale: Duration, at: Instant) {
        for _ in 0..60 {
            k.record(sent, Duration::from_secs_f64(latency), stale, at);
        }
    }

    /// A knee whose base is 30 (an overload's cut went there), measured: 30 in flight at 1 s,
    /// 30 per second. With the instant and the staleness bound it was measured with.
    fn based_at_30() -> (Knee, Instant, Duration) {
        let mut k = Knee::new();
        let t0 = Instant::now();
        let stale = Duration::from_secs(60);
        k.limit_changed(30, t0);
        k.set_base(30.0);
        record_60(&mut k, t0, 1.0, stale, t0);
        (k, t0, stale)
    }

    #[tokio::test(start_paused = true)]
    async fn a_lower_band_with_better_throughput_wins() {
        let mut k = Knee::new();
        let t0 = Instant::now();
        let stale = Duration::from_secs(60);
        k.limit_changed(30, t0);
        for i in 0..60u64 {
            // 30 in flight at 1.0 s ± 0.3 s: 30 per second.
            let lat = 1.0 + if i % 2 == 0 { 0.3 } else { -0.3 };
            k.record(t0, Duration::from_secs_f64(lat), stale, t0);
        }
        let t1 = t0 + Duration::from_secs(10);
        k.limit_changed(40, t1);
        for i in 0..60u64 {
            // 40 in flight at 2.0 s: 20 per second.
            let lat = 2.0 + if i % 2 == 0 { 0.6 } else { -0.6 };
            k.record(t1, Duration::from_secs_f64(lat), stale, t1);
        }
        let level = k.better_below(40, Duration::from_secs(1), stale, t1);
        assert_eq!(level.map(|l| l.round()), Some(30.0));
    }

    #[tokio::test(start_paused = true)]
    async fn answers_to_attempts_sent_before_a_move_do_not_keep_a_band_from_being_measured_afresh()
    {
        let mut k = Knee::new();
        let t0 = Instant::now();
        let stale = Duration::from_secs(60);
        // 14 in flight at 2.2 s, then 19 at 3.8 s while the server was small.
        k.limit_changed(14, t0);
        record_60(&mut k, t0, 2.2, stale, t0);
        let t1 = t0 + Duration::from_secs(3);
        k.limit_changed(19, t1);
        // The estimator moves back to 14; the answers to the attempts sent at 19 before the
        // move come in after it.
        let moved = t1 + Duration::from_secs(2);
        k.hold(14.0, moved);
        k.limit_changed(14, moved);
        let late = moved + Duration::from_secs(1);
        record_60(&mut k, t1, 3.8, stale, late);
        record_60(&mut k, moved, 2.2, stale, late);
        // The server grew; 20 s later the limit probes 19 again, where latency is now 1.9 s.
        let t3 = moved + Duration::from_secs(20);
        k.limit_changed(19, t3);
        k.record(t3, Duration::from_secs_f64(1.9), stale, t3);
        // The samples sent before the move do not count: 19 is measured afresh.
        assert_eq!(k.better_below(19, Duration::from_secs(1), stale, t3), None);
        record_60(&mut k, t3, 1.9, stale, t3);
        assert_eq!(k.better_below(19, Duration::from_secs(1), stale, t3), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_band_last_measured_before_a_move_is_not_compared_until_measured_again() {
        let mut k = Knee::new();
        let t0 = Instant::now();
        let stale = Duration::from_secs(60);
        k.limit_changed(14, t0);
        record_60(&mut k, t0, 2.2, stale, t0);
        // 20 in flight at 3.8 s while the server was small; the estimator moves to 14.
        let t1 = t0 + Duration::from_secs(3);
        k.limit_changed(20, t1);
        record_60(&mut k, t1, 3.8, stale, t1);
        let moved = t1 + Duration::from_secs(4);
        k.hold(14.0, moved);
        k.limit_changed(14, moved);
        record_60(&mut k, moved, 2.2, stale, moved);
        // The limit is back at 20 before any attempt sent there has been answered: what 20
        // was measured at before the move says nothing of the server now.
        let t2 = moved + Duration::from_secs(20);
        k.limit_changed(20, t2);
        assert_eq!(k.better_below(20, Duration::from_secs(1), stale, t2), None);
    }

    /// Latencies of LLM answers at `level` of a cap of 40: (0.4 s + 10 ms per output token,
    /// 50 to 350 tokens) × `1 + (level / 40)^4` × (1 ± 10 %), with their token counts.
    fn answers(level: usize, n: usize, rng: &mut u64) -> Vec<(Duration, u64)> {
        let mut next = || {
            *rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (*rng >> 11) as f64 / (1u64 << 53) as f64
        };
        let inflation = 1.0 + (level as f64 / 40.0).powi(4);
        (0..n)
            .map(|_| {
                let tokens = 50 + (300.0 * next()) as u64;
                let jitter = 1.0 + 0.1 * (2.0 * next() - 1.0);
                let latency = (0.4 + 0.01 * tokens as f64) * inflation * jitter;
                (Duration::from_secs_f64(latency), tokens)
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn latency_normalised_by_the_answers_length_finds_a_knee_the_raw_latency_hides() {
        let stale = Duration::from_secs(600);
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(60);
        // 30 in flight serve about 5 % more per second than 36: within the noise of 60 raw
        // latencies (the answers' lengths vary them by about 45 %), not of normalised ones.
        let mut rng = 7u64;
        let (at30, at36) = (answers(30, 100, &mut rng), answers(36, 60, &mut rng));

        let mut raw = Knee::new();
        raw.limit_changed(30, t0);
        for (latency, _) in &at30 {
            raw.record(t0, *latency, stale, t0);
        }
        raw.limit_changed(36, t1);
        for (latency, _) in &at36 {
            raw.record(t1, *latency, stale, t1);
        }
        assert_eq!(
            raw.better_below(36, Duration::from_secs(1), stale, t1),
            None
        );

        let mut by_usage = Knee::new();
        by_usage.limit_changed(30, t0);
        for (latency, tokens) in &at30 {
            by_usage.record_usage(t0, *latency, *tokens, true, stale, t0);
        }
        by_usage.limit_changed(36, t1);
        for (latency, tokens) in &at36 {
            by_usage.record_usage(t1, *latency, *tokens, true, stale, t1);
        }
        let level = by_usage.better_below(36, Duration::from_secs(1), stale, t1);
        assert_eq!(level.map(|l| l.round()), Some(30.0));
    }

    #[tokio::test(start_paused = true)]
    async fn flat_latency_never_moves_down() {
        let mut k = Knee::new();
        let t0 = Instant::now();
        let stale = Duration::from_secs(60);
        let mut rng = 1u64;
        for (step, level) in [20usize, 25, 30, 35, 40].into_iter().enumerate() {
            let t = t0 + Duration::from_secs(step as u64 * 10);
            k.limit_changed(level, t);
            for _ in 0..60 {
                // Latency uniform in 0.9..4.4 s, whatever the level (an LLM API whose latency
                // follows the answer's length only).
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (rng >> 11) as f64 / (1u64 << 53) as f64;
                k.record(t, Duration::from_secs_f64(0.9 + 3.5 * u), stale, t);
            }
        }
        let now = t0 + Duration::from_secs(45);
        assert_eq!(k.better_below(40, Duration::from_secs(1), stale, now), None);
    }

    /// `n` answers sent at `sent`, each `latency` seconds, each heard when it ends.
    fn answers_at(k: &mut Knee, n: usize, sent: Instant, latency: f64, stale: Duration) {
        let latency = Duration::from_secs_f64(latency);
        for _ in 0..n {
            k.record(sent, latency, stale, sent + latency);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn answers_count_only_once_the_attempts_sent_with_them_have_had_time_to_answer() {
        let mut k = Knee::new();
        k.horizon = Duration::from_secs(5);
        let stale = Duration::from_secs(600);
        let every = Duration::from_secs(1);
        let t0 = Instant::now();
        // 30 in flight at 1 s: 30 per second, measured long ago.
        k.limit_changed(30, t0);
        answers_at(&mut k, 60, t0, 1.0, stale);
        // 35 in flight from t1: half the answers take 0.6 s, half 3.4 s (2 s on average,
        // 17.5 per second); 40 from t2: 1.6 s (25 per second).
        let t1 = t0 + Duration::from_secs(20);
        k.limit_changed(35, t1);
        let t2 = t1 + Duration::from_secs(1);
        k.limit_changed(40, t2);
        answers_at(&mut k, 50, t1, 0.6, stale);
        answers_at(&mut k, 60, t2, 1.6, stale);
        // At t2 + 1.6 s only the short half of 35's answers has come: 35 would look the best
        // level (58 per second), and the limit would move there. They do not count yet.
        let early = t2 + Duration::from_millis(1600);
        assert_eq!(k.better_below(40, every, stale, early), None);
        // Once all of them have come and the horizon has passed, 30 is the best level.
        answers_at(&mut k, 50, t1, 3.4, stale);
        let later = t2 + Duration::from_secs(6);
        k.record(t2, Duration::from_secs_f64(1.6), stale, later);
        let level = k.better_below(40, every, stale, later);
        assert_eq!(level.map(|l| l.round()), Some(30.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_level_above_the_base_that_serves_less_sends_the_limit_back_to_the_base() {
        let (mut k, t0, stale) = based_at_30();
        let every = Duration::from_secs(1);
        // 33 at 1.12 s: 29.5 per second, 2 % less. Within the margin a lower band must win by,
        // but above the base the burden of proof lies with the level above.
        let t1 = t0 + Duration::from_secs(10);
        k.limit_changed(33, t1);
        assert!(k.probing(33.0));
        record_60(&mut k, t1, 1.12, stale, t1);
        let level = k.better_below(33, every, stale, t1);
        assert_eq!(level.map(|l| l.round()), Some(30.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_level_above_the_base_that_serves_about_as_much_is_measured_step_by_step() {
        let (mut k, t0, stale) = based_at_30();
        // 33 at 1.09 s: 30.3 per second, 1 % more: not clearly better.
        let t1 = t0 + Duration::from_secs(10);
        k.limit_changed(33, t1);
        record_60(&mut k, t1, 1.09, stale, t1);
        assert_eq!(k.better_below(33, Duration::from_secs(1), stale, t1), None);
        assert_eq!(k.base(), Some(30.0));
        assert!(k.probing(36.0), "the next step is measured too");
    }

    #[tokio::test(start_paused = true)]
    async fn a_level_above_the_base_that_serves_clearly_more_clears_the_climb() {
        let (mut k, t0, stale) = based_at_30();
        // 33 at 1 s: 33 per second, 10 % more (a server whose latency does not follow the
        // load): the climb goes on without measuring each step.
        let t1 = t0 + Duration::from_secs(10);
        k.limit_changed(33, t1);
        record_60(&mut k, t1, 1.0, stale, t1);
        assert_eq!(k.better_below(33, Duration::from_secs(1), stale, t1), None);
        assert_eq!(k.base(), None);
        assert!(!k.probing(36.0));
        // A cut sets a base again.
        k.set_base(25.0);
        assert!(k.probing(33.0));
    }
}
