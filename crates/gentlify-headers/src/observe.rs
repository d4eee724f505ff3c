//! What the layer does with one response head: run the parsers, publish, set the pause gate.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gentlify_core::{Class, Dispatched, Feedback, QuotaReport, MAX_SERVER_DELAY};
use http::HeaderMap;
use tokio::time::Instant;

use crate::family::{Families, Gated};
use crate::parse::ServerDelay;
use crate::state::LastQuotas;

/// The wall clock the parsers measure absolute resets from.
#[derive(Clone)]
pub(crate) struct WallClock(pub(crate) Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl Default for WallClock {
    fn default() -> Self {
        WallClock(Arc::new(SystemTime::now))
    }
}

impl fmt::Debug for WallClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WallClock")
    }
}

/// The layer's settings and handle, shared by its services.
#[derive(Debug)]
pub(crate) struct Observer {
    pub(crate) feedback: Feedback,
    pub(crate) parsers: Vec<Gated>,
    pub(crate) max_pause: Duration,
    pub(crate) server_delay: bool,
    pub(crate) wall_clock: WallClock,
    pub(crate) board: Arc<LastQuotas>,
}

impl Observer {
    /// Reads one attempt's response head: publishes every parser's report, dated by the
    /// attempt's send instant ([`QuotaReport::sent_at`]) as well as by now, then holds the pause
    /// gate for the server's delay (on an overloaded attempt) or, failing that, until the latest
    /// reset of an exhausted quota.
    ///
    /// One pass over the header names first says which built-in families are present; a
    /// built-in parser whose family is absent would find nothing and is skipped, as is the
    /// server's delay when none of its headers is there. The user's own parsers always run. The
    /// clocks are read only once something is to be parsed, so a response without any
    /// rate-limit header costs that pass and nothing else (no allocation).
    pub(crate) fn observe(
        &self,
        headers: &HeaderMap,
        class: Option<&Class>,
        dispatched: &Dispatched,
    ) {
        let present = Families::of(headers);
        let mut clocks: Option<(Instant, SystemTime)> = None;
        let mut clocks = || *clocks.get_or_insert_with(|| (Instant::now(), (self.wall_clock.0)()));
        // Read once a report is to be published (it may take the slot's lock).
        let mut sent_at: Option<Instant> = None;

        let mut exhausted: Option<(Duration, String)> = None;
        for gated in &self.parsers {
            if !gated.may_match(present) {
                continue;
            }
            let (observed_at, now) = clocks();
            let Some(report) = gated.parser.parse(headers, now) else {
                continue;
            };
            // The attempt's own send instant: a controller need not guess which response
            // carried the report when several are in flight.
            let mut report = report.observed_at(observed_at);
            report.sent_at = Some(*sent_at.get_or_insert_with(|| dispatched.sent_at()));
            bound_durations(&mut report);
            for quota in report.quotas.iter().filter(|q| q.is_exhausted()) {
                let Some(reset) = quota.reset_after else {
                    continue;
                };
                if exhausted
                    .as_ref()
                    .is_none_or(|(longest, _)| reset > *longest)
                {
                    exhausted = Some((reset, cause(&report, quota.dimension.as_str())));
                }
            }
            self.feedback.report_quota(&report);
        }

        // The server's explicit delay wins over the resets in the same response (as the IETF
        // draft says of `Retry-After` and `t`): it is the server's word on this very moment.
        let server = (self.server_delay
            && present.intersects(Families::DELAY)
            && class.is_some_and(Class::is_overloaded))
        .then(|| ServerDelay::parse(headers, clocks().1))
        .flatten()
        .filter(|d| d.should_retry != Some(false))
        .and_then(|d| Some((d.delay?, d.source?.as_str().to_owned())));

        if let Some((pause, cause)) = server.or(exhausted) {
            self.pause(clocks().0, pause, cause);
        }
    }

    fn pause(&self, from: Instant, pause: Duration, cause: String) {
        if pause >= MAX_SERVER_DELAY {
            // Core clamps absurd values (`Retry-After: 99999999999`) to exactly this bound;
            // no server means a day of silence on one response.
            tracing::debug!(%cause, "gentlify ignored an absurd server delay");
            return;
        }
        let pause = pause.min(self.max_pause);
        if pause.is_zero() {
            return;
        }
        if let Some(until) = from.checked_add(pause) {
            self.feedback.pause_until(until);
            self.board.paused(pause, cause);
        }
    }
}

/// Clamps a report's durations to [`MAX_SERVER_DELAY`] before it is published: a parser of the
/// user's own could return `Duration::MAX`, and every controller adds resets to instants.
fn bound_durations(report: &mut QuotaReport) {
    for quota in &mut report.quotas {
        quota.reset_after = quota.reset_after.map(|d| d.min(MAX_SERVER_DELAY));
        quota.window = quota.window.map(|d| d.min(MAX_SERVER_DELAY));
    }
}

fn cause(report: &QuotaReport, dimension: &str) -> String {
    format!("{}:{}", report.source, dimension)
}
