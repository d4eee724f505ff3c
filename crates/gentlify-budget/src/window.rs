//! One limit's sliding window: what was charged when, what the server says is left.
//!
//! Time inside a window is a tick: nanoseconds since the budget was made, so that the hot path
//! compares integers instead of doing `Instant` arithmetic.

use std::collections::VecDeque;
use std::time::Duration;

use crate::cost::TokenCost;
use crate::limit::Limit;
use gentlify_core::{Dimension, Usage};

/// Nanoseconds since the budget's base instant.
pub(crate) type Tick = u64;

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Charges closer together than `window / GRANULES` share one entry, so a window holds at most
/// about `GRANULES + 1` entries however many requests pass: 59 ms slices for a minute window.
/// A merged entry expires with its latest charge, so merging only ever delays capacity, by at most
/// one slice, and never lets more than the capacity into a window.
const GRANULES: u64 = 1024;

/// The longest reset the budget believes (a week: longer resets are not rate limits).
const MAX_SERVER_RESET: Duration = Duration::from_secs(86_400 * 7);

#[derive(Debug, Clone, Copy)]
struct Entry {
    opened: Tick,
    last: Tick,
    amount: u64,
    /// The generations of the credits closed into this entry (see [`Window::close`]): `lo` is
    /// `u64::MAX` when none was; `hi` never decreases along the window (an entry without credit
    /// carries the previous entry's), so an entry is found by generation with a binary search.
    gen_lo: u64,
    gen_hi: u64,
}

/// The credit drawn for the lock-free path, while it can be handed out.
#[derive(Debug, Clone, Copy)]
struct Open {
    generation: u64,
    /// The chunk, adjusted by the overruns and returns of its reservations made under the lock
    /// (those made through the credit itself show in its leftover).
    amount: u64,
}

/// How a server's report of a limit reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refill {
    /// A continuously refilled bucket (OpenAI, Azure OpenAI, Groq, Anthropic): `reset` is the
    /// time until the bucket is full again, refilling at `limit / window`, so the bucket holds
    /// `remaining + reset x limit / window`. OpenAI's recorded headers read exactly so:
    /// `remaining-requests: 4999` of 5 000 per minute with `reset-requests: 12ms` (one request
    /// is 60 s / 5 000 = 12 ms of refill).
    Bucket {
        /// The bucket's size, scaled by the window's length in ticks.
        cap: u128,
    },
    /// A fixed window (GitHub, IETF `RateLimit`, or a report that cannot be a bucket of its
    /// limit): nothing comes back before `until`; after it the model is dropped and the budget's
    /// own window governs again.
    Fixed { until: Tick },
}

/// The server's own account of one limit, kept up to date with this budget's charges since:
/// the budget's belief of what the server holds now.
///
/// Amounts are scaled by the window's length in ticks, so that refill (`per` units per `window`
/// ticks) adds up exactly in integers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerModel {
    refill: Refill,
    /// Units per window: the refill rate is `per / window` units per tick.
    per: u128,
    /// The report's figures, for rebasing it on the instant the server counted them.
    reported: u64,
    observed: Tick,
    /// The tick the server counted the reported figures at; `observed` until the response's
    /// attempt says when it was sent.
    as_of: Tick,
    rebased: bool,
    /// The level at `at`, scaled; negative after overruns.
    level: i128,
    at: Tick,
    /// The report's limit is this window's: the server's account replaces the budget's own
    /// window (and its safety margin) instead of only lowering it.
    exact: bool,
    /// Not a report: a 429 heard while no report had come (see [`Window::refused`]).
    blind: bool,
}

impl ServerModel {
    fn level_at(&self, t: Tick) -> i128 {
        match self.refill {
            Refill::Fixed { .. } => self.level,
            Refill::Bucket { cap } => {
                let dt = u128::from(t.saturating_sub(self.at));
                let refill = i128::try_from(dt.saturating_mul(self.per)).unwrap_or(i128::MAX);
                self.level
                    .saturating_add(refill)
                    .min(i128::try_from(cap).unwrap_or(i128::MAX))
            }
        }
    }

    /// What a request of `amount` needs the level to be: a request larger than the whole bucket
    /// goes when the bucket is full, and the server decides.
    fn need(&self, amount: u64, window: u64) -> i128 {
        let need = u128::from(amount) * u128::from(window);
        match self.refill {
            Refill::Bucket { cap } => need.min(cap) as i128,
            Refill::Fixed { .. } => need as i128,
        }
    }

    fn charge(&mut self, t: Tick, amount: u64, window: u64) {
        let level = self.level_at(t);
        self.level = level.saturating_sub((u128::from(amount) * u128::from(window)) as i128);
        self.at = self.at.max(t);
    }

    /// The first tick from `t` at which `amount` fits; `None` for a fixed window short until
    /// its reset (the model is dropped then).
    fn time_to_fit(&self, t: Tick, amount: u64, window: u64) -> Option<Tick> {
        let level = self.level_at(t);
        let need = self.need(amount, window);
        if level >= need {
            return Some(t);
        }
        match self.refill {
            Refill::Fixed { until } => Some(until.max(t)),
            Refill::Bucket { .. } => {
                let missing = (need - level) as u128;
                let dt = missing.div_ceil(self.per.max(1));
                Some(t.saturating_add(u64::try_from(dt).unwrap_or(u64::MAX)))
            }
        }
    }

    /// Units left at `t`, never negative.
    fn remaining(&self, t: Tick, window: u64) -> u64 {
        let level = self.level_at(t).max(0) as u128;
        u64::try_from(level / u128::from(window.max(1))).unwrap_or(u64::MAX)
    }
}

/// What the server last said about this limit's dimension.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerView {
    pub(crate) remaining: u64,
    pub(crate) reset_at: Option<Tick>,
}

/// A server's report of one quota, as the budget reads it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reported {
    /// The parser that read it (`"openai"`, `"github"`, ...): fixed windows or buckets.
    pub(crate) source: &'static str,
    pub(crate) limit: Option<u64>,
    pub(crate) remaining: u64,
    pub(crate) reset_after: Option<Duration>,
    pub(crate) window: Option<Duration>,
}

/// What `cost` weighs in a limit of `dimension`.
#[inline]
pub(crate) fn amount_of(dimension: Dimension, cost: &TokenCost) -> u64 {
    match dimension {
        Dimension::Requests => 1,
        Dimension::InputTokens => cost.input_tokens,
        Dimension::OutputTokens => cost.output_tokens,
        _ => cost.total(),
    }
}

/// What a request really weighed in a limit of `dimension`, given what is known of its usage;
/// `estimate` is what it was charged.
#[inline]
pub(crate) fn amount_of_actual(dimension: Dimension, actual: Actual, estimate: u64) -> u64 {
    match (dimension, actual) {
        (Dimension::Requests, _) => estimate,
        (Dimension::InputTokens, Actual::Usage(u)) => u.input_tokens,
        (Dimension::OutputTokens, Actual::Usage(u)) => u.output_tokens,
        // A bare total says nothing of the split.
        (Dimension::InputTokens | Dimension::OutputTokens, Actual::Tokens(_)) => estimate,
        (_, Actual::Usage(u)) => u.total(),
        (_, Actual::Tokens(t)) => t,
    }
}

/// A chunk of credit for the lock-free path is at most this fraction of the capacity (about 3 %).
const CHUNK_DIVISOR: u64 = 32;

/// Below this size a chunk is not worth drawing: a budget with a limit whose capacity is under
/// `CHUNK_DIVISOR x MIN_CHUNK` (128 requests, say) always takes the locked path.
pub(crate) const MIN_CHUNK: u64 = 4;

/// A sliding window log, quantised: the exact sum charged in the last `window`, so that no window
/// of the limit's length ever holds more than the capacity; and, once the server has reported
/// this limit, the server's own account of it.
#[derive(Debug)]
pub(crate) struct Window {
    pub(crate) limit: Limit,
    pub(crate) capacity: u64,
    window: u64,
    granule: u64,
    entries: VecDeque<Entry>,
    first_seq: u64,
    used: u64,
    model: Option<ServerModel>,
    /// The model a report replaced, until the report is rebased: kept when the replacing report
    /// turns out to be older (a slow response overtaken by a faster, later one).
    previous: Option<ServerModel>,
    pub(crate) server: Option<ServerView>,
    /// The credit drawn for the lock-free path, while it can be handed out: counted in `used`,
    /// and charged in the log when it is closed (at the last instant it could have been used).
    open: Option<Open>,
}

impl Window {
    pub(crate) fn new(limit: Limit, capacity: u64) -> Self {
        let window = nanos(limit.window()).max(1);
        Window {
            limit,
            capacity,
            window,
            granule: window / GRANULES,
            entries: VecDeque::new(),
            first_seq: 0,
            used: 0,
            model: None,
            previous: None,
            server: None,
            open: None,
        }
    }

    pub(crate) fn dimension(&self) -> Dimension {
        self.limit.dimension()
    }

    /// The window's length in ticks.
    pub(crate) fn length(&self) -> u64 {
        self.window
    }

    /// What `cost` weighs in this window.
    #[inline]
    pub(crate) fn amount_of(&self, cost: &TokenCost) -> u64 {
        amount_of(self.limit.dimension(), cost)
    }

    /// What a request really weighed, given what is known of its usage; `estimate` is what it was
    /// charged.
    #[inline]
    pub(crate) fn amount_of_actual(&self, actual: Actual, estimate: u64) -> u64 {
        amount_of_actual(self.limit.dimension(), actual, estimate)
    }

    #[inline]
    fn expire(&mut self, now: Tick) {
        while let Some(front) = self.entries.front() {
            if front.last.saturating_add(self.window) > now {
                break;
            }
            self.used = self.used.saturating_sub(front.amount);
            self.entries.pop_front();
            self.first_seq += 1;
        }
        if let Some(ServerModel {
            refill: Refill::Fixed { until },
            ..
        }) = self.model
        {
            if until <= now {
                self.model = None;
            }
        }
    }

    /// The server's account, when it replaces the budget's own window.
    fn exact_model(&self) -> Option<&ServerModel> {
        self.model.as_ref().filter(|m| m.exact)
    }

    /// The largest request this limit can ever admit: the whole limit while the server's
    /// account of this very limit governs (a bucket of the limit, without the safety margin),
    /// else the capacity.
    pub(crate) fn bound(&self) -> u64 {
        match self.exact_model() {
            Some(_) => self.limit.amount().max(self.capacity),
            None => self.capacity,
        }
    }

    /// Capacity left now: the server's account when it reported this very limit, else the
    /// budget's own window, lowered by whatever the server said.
    pub(crate) fn remaining(&mut self, now: Tick) -> u64 {
        self.expire(now);
        let own = self.capacity.saturating_sub(self.used);
        match &self.model {
            None => own,
            Some(m) if m.exact => m.remaining(now, self.window),
            Some(m) => own.min(m.remaining(now, self.window)),
        }
    }

    /// Charged by this budget in the current window: its own attempts only. What the server's
    /// account says beyond that is [`unseen`](Window::unseen).
    pub(crate) fn used(&mut self, now: Tick) -> u64 {
        self.expire(now);
        self.used
    }

    /// How much less the budget believes it has than its own window says, because of what the
    /// server reported (other clients on the key, a server burst smaller than the window); zero
    /// when the server's account leaves more than the window (it then governs alone, without
    /// the safety margin).
    pub(crate) fn unseen(&mut self, now: Tick) -> u64 {
        let remaining = self.remaining(now);
        self.capacity
            .saturating_sub(self.used)
            .saturating_sub(remaining)
    }

    /// How long until everything charged so far has left the window.
    pub(crate) fn reset_in(&mut self, now: Tick) -> Duration {
        self.expire(now);
        let log = self
            .entries
            .back()
            .map_or(now, |e| e.last.saturating_add(self.window));
        Duration::from_nanos(log.saturating_sub(now))
    }

    #[inline]
    pub(crate) fn fits(&mut self, now: Tick, amount: u64) -> bool {
        self.expire(now);
        match &self.model {
            None => self.capacity.saturating_sub(self.used) >= amount,
            Some(m) => {
                let server = m.level_at(now) >= m.need(amount, self.window);
                server && (m.exact || self.capacity.saturating_sub(self.used) >= amount)
            }
        }
    }

    /// Charges `amount` now; returns the entry's sequence number, for reconciling.
    #[inline]
    pub(crate) fn charge(&mut self, now: Tick, amount: u64) -> u64 {
        self.used = self.used.saturating_add(amount);
        if let Some(m) = &mut self.model {
            m.charge(now, amount, self.window);
        }
        let mut gen_hi = 0;
        if let Some(back) = self.entries.back_mut() {
            if now.saturating_sub(back.opened) < self.granule {
                back.amount = back.amount.saturating_add(amount);
                back.last = back.last.max(now);
                return self.first_seq + self.entries.len() as u64 - 1;
            }
            gen_hi = back.gen_hi;
        }
        self.entries.push_back(Entry {
            opened: now,
            last: now,
            amount,
            gen_lo: u64::MAX,
            gen_hi,
        });
        self.first_seq + self.entries.len() as u64 - 1
    }

    /// Replaces a charge of `from` made as entry `seq` by `to`: a return when less was used, an
    /// overrun when more. A charge that has left the window already counted fully; an overrun on
    /// it is charged `now()`. Returns whether capacity came back.
    ///
    /// A return is applied in place even to an entry whose time is up (it leaves with its
    /// adjusted amount at the next expiry), so the common path reads no clock.
    ///
    /// The server's account takes overruns but not returns: providers count a request's
    /// estimate when they admit it (OpenAI counts `max_tokens`), and the next report says
    /// whether anything came back.
    #[inline]
    pub(crate) fn adjust(
        &mut self,
        seq: u64,
        from: u64,
        to: u64,
        now: &mut impl FnMut() -> Tick,
    ) -> bool {
        if from == to {
            return false;
        }
        if to > from {
            if let Some(m) = &mut self.model {
                let over = (u128::from(to - from) * u128::from(self.window)) as i128;
                m.level = m.level.saturating_sub(over);
            }
        }
        if seq >= self.first_seq {
            if let Some(entry) = self.entries.get_mut((seq - self.first_seq) as usize) {
                // An overrun on an entry whose time is up would leave with it, uncounted: it is
                // charged now instead.
                if to < from || entry.last.saturating_add(self.window) > now() {
                    entry.amount = entry.amount.saturating_sub(from).saturating_add(to);
                    self.used = self.used.saturating_sub(from).saturating_add(to);
                    return to < from;
                }
            }
        }
        if to > from {
            let now = now();
            self.expire(now);
            self.charge_log(now, to - from);
        }
        false
    }

    /// Charges the log only (an overrun the server's account has already taken).
    fn charge_log(&mut self, now: Tick, amount: u64) {
        let model = self.model.take();
        self.charge(now, amount);
        self.model = model;
    }

    /// The chunk this window draws when the budget's credit has room for `max`.
    pub(crate) fn natural_chunk(&self) -> u64 {
        self.capacity / CHUNK_DIVISOR
    }

    /// The credit this window would draw for the lock-free path now, at most `max`, after a
    /// request of `amount` was charged: `None` when the server's account governs, when the chunk
    /// would be too small to be worth it or smaller than that request, or when the window is
    /// near its capacity (more than three quarters used once the chunk is drawn).
    pub(crate) fn chunk_to_draw(&self, amount: u64, max: u64) -> Option<u64> {
        let chunk = self.natural_chunk().min(max);
        let fits = self
            .used
            .checked_add(chunk)
            .and_then(|u| u.checked_add(self.capacity / 4))
            .is_some_and(|u| u <= self.capacity);
        (self.model.is_none()
            && self.open.is_none()
            && chunk >= MIN_CHUNK
            && chunk >= amount
            && fits)
            .then_some(chunk)
    }

    /// Draws `chunk` as credit for the lock-free path, in the budget's draw `generation`:
    /// counted as used until it is closed.
    pub(crate) fn draw(&mut self, chunk: u64, generation: u64) {
        self.open = Some(Open {
            generation,
            amount: chunk,
        });
        self.used = self.used.saturating_add(chunk);
    }

    /// True while a credit drawn by [`draw`](Window::draw) is open.
    pub(crate) fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Closes the open credit at `now`, with `leftover` of it never handed out: the leftover
    /// goes back, and what was handed out is charged at `last_use` (at most `now`), the last
    /// instant it can have been used, so that it leaves the window one window after that.
    pub(crate) fn close(&mut self, now: Tick, leftover: u64, last_use: Tick) {
        let Some(open) = self.open.take() else {
            return;
        };
        self.used = self.used.saturating_sub(open.amount);
        let amount = open.amount.saturating_sub(leftover);
        if amount == 0 {
            return;
        }
        self.expire(now);
        let seq = self.charge(last_use.min(now), amount);
        if let Some(entry) = self.entries.get_mut((seq - self.first_seq) as usize) {
            entry.gen_lo = entry.gen_lo.min(open.generation);
            entry.gen_hi = open.generation;
        }
    }

    /// The full sequence number of the entry whose number ends in `low` (its low 32 bits), or
    /// `u64::MAX` when that entry has left the window (a window holds about 1 025 entries, so
    /// the entry is found without ambiguity).
    pub(crate) fn full_seq(&self, low: u32) -> u64 {
        let offset = low.wrapping_sub(self.first_seq as u32);
        if (offset as usize) < self.entries.len() {
            self.first_seq + u64::from(offset)
        } else {
            u64::MAX
        }
    }

    /// Replaces a charge of `from` taken from the credit of `generation` by `to` (see
    /// [`adjust`](Window::adjust)): in the credit while it is open, else in the entry it was
    /// closed into, else (that entry has left the window) as a charge made now.
    pub(crate) fn adjust_credit(
        &mut self,
        generation: u64,
        from: u64,
        to: u64,
        now: &mut impl FnMut() -> Tick,
    ) -> bool {
        if let Some(open) = &mut self.open {
            if open.generation == generation {
                open.amount = open.amount.saturating_sub(from).saturating_add(to);
                self.used = self.used.saturating_sub(from).saturating_add(to);
                return to < from;
            }
        }
        let i = self.entries.partition_point(|e| e.gen_hi < generation);
        let seq = match self.entries.get(i) {
            Some(e) if e.gen_lo <= generation => self.first_seq + i as u64,
            _ => u64::MAX,
        };
        self.adjust(seq, from, to, now)
    }

    /// The first tick from `now` at which `need` more fits, assuming nothing else is charged;
    /// `None` when it never fits (more than the capacity).
    pub(crate) fn time_to_fit(&mut self, now: Tick, need: u64) -> Option<Tick> {
        self.expire(now);
        let server = self
            .model
            .as_ref()
            .and_then(|m| m.time_to_fit(now, need, self.window));
        if self.exact_model().is_some() {
            return server;
        }
        let own = self.own_time_to_fit(now, need)?;
        Some(server.map_or(own, |s| s.max(own)))
    }

    fn own_time_to_fit(&self, now: Tick, need: u64) -> Option<Tick> {
        let room = self.capacity.checked_sub(need)?;
        let mut used = self.used;
        let mut t = now;
        for e in &self.entries {
            if used <= room {
                break;
            }
            t = t.max(e.last.saturating_add(self.window));
            used -= e.amount.min(used);
        }
        Some(t)
    }

    /// Adopts what the server says of this limit at `now`: its account replaces the previous
    /// one (until [`rebase`](Window::rebase) says which is older).
    pub(crate) fn report(&mut self, now: Tick, report: &Reported) {
        self.expire(now);
        let reset_after = report.reset_after.map(|d| nanos(d.min(MAX_SERVER_RESET)));
        self.server = Some(ServerView {
            remaining: report.remaining,
            reset_at: reset_after.map(|d| now.saturating_add(d)),
        });
        let window = self.window;
        let own = self.limit.amount();
        let report_window = report.window.map_or(window, |w| nanos(w).max(1));
        let fixed_source = matches!(report.source, "github" | "ietf");
        // Refill per tick, scaled by this window's length: `limit` per the report's window.
        let per_window = report.limit.filter(|&l| l > 0);
        let per =
            per_window.map(|l| u128::from(l) * u128::from(window) / u128::from(report_window));
        let scale = u128::from(window);
        let refill = match (per, reset_after) {
            (Some(per), Some(reset)) if !fixed_source && per > 0 => {
                // The bucket holds what is left plus what refills by the reset.
                let cap = u128::from(report.remaining) * scale + u128::from(reset) * per;
                // A bucket never holds more than its limit (a second of rounding aside): a
                // report that reads as more is a fixed window early in its period.
                let limit = per_window.map_or(0, u128::from) * scale;
                if cap > limit + per * u128::from(nanos(Duration::from_secs(1))) {
                    Refill::Fixed {
                        until: now.saturating_add(reset),
                    }
                } else {
                    Refill::Bucket { cap }
                }
            }
            (_, reset) => Refill::Fixed {
                until: now.saturating_add(reset.unwrap_or(window)),
            },
        };
        let exact = matches!(refill, Refill::Bucket { .. })
            && per_window == Some(own)
            && report_window == window;
        let model = ServerModel {
            refill,
            per: per.unwrap_or(1).max(1),
            reported: report.remaining,
            observed: now,
            as_of: now,
            rebased: false,
            level: (u128::from(report.remaining) * scale) as i128,
            at: now,
            exact,
            blind: false,
        };
        self.previous = self.model.replace(model);
    }

    /// The server refused an attempt for its quota (a 429) and no report of this limit was heard:
    /// its bucket is empty now. Without the server's figures it reads as a bucket of the budget's
    /// capacity refilling at the capacity per window, starting empty: what comes back after a 429
    /// is paced at that rate instead of sent at once, until the bucket has refilled. A report
    /// replaces it.
    pub(crate) fn refused(&mut self, now: Tick) {
        if self.model.is_some_and(|m| !m.blind) {
            return;
        }
        self.expire(now);
        let scale = u128::from(self.window);
        let per = u128::from(self.capacity).max(1);
        self.model = Some(ServerModel {
            refill: Refill::Bucket {
                cap: u128::from(self.capacity) * scale,
            },
            per,
            reported: 0,
            observed: now,
            as_of: now,
            rebased: true,
            level: 0,
            at: now,
            exact: false,
            blind: true,
        });
    }

    /// [`rebase`](Window::rebase) for a report that said its attempt's send instant: the
    /// account is then as exact as it gets, and no later guess re-dates it again (even when the
    /// attempt took no time, `sent == observed`, and there was nothing to replay).
    pub(crate) fn rebase_exact(&mut self, sent: Tick, observed: Tick) {
        self.rebase(sent, observed);
        if let Some(model) = &mut self.model {
            if model.observed == observed {
                model.rebased = true;
            }
        }
    }

    /// The attempt whose response just carried a report (observed at `observed`) was sent at
    /// `sent`: the server counted its figures then, before this budget's charges made since.
    /// Replays those charges on the report, and keeps the previous account instead when it was
    /// newer.
    pub(crate) fn rebase(&mut self, sent: Tick, observed: Tick) {
        let Some(mut model) = self.model else {
            return;
        };
        if model.rebased || model.observed != observed || sent >= observed {
            return;
        }
        if let Some(previous) = self.previous.take() {
            if previous.as_of > sent {
                self.model = Some(previous);
                return;
            }
        }
        model.rebased = true;
        model.as_of = sent;
        model.at = sent;
        model.level = (u128::from(model.reported) * u128::from(self.window)) as i128;
        // Charges made after `sent` are not in the report, nor, perhaps, those made at the same
        // instant (a batch dispatched together reaches the server one after the other): every
        // entry holding a charge from `sent` on is replayed. The reporting attempt itself, and
        // charges of its entry made before it, are then counted again, on the safe side.
        let first_after = self.entries.partition_point(|e| e.last < sent);
        for e in self.entries.range(first_after..) {
            model.charge(e.last.max(sent), e.amount, self.window);
        }
        self.model = Some(model);
    }
}

/// What is known of a request's real consumption when its slot ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actual {
    /// A total recorded by the inner service ([`Slot::record_tokens`](gentlify_core::Slot::record_tokens)).
    Tokens(u64),
    /// The usage the server reported in the response.
    Usage(Usage),
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    #[test]
    fn charges_leave_the_window_after_its_length() {
        let mut w = Window::new(Limit::tokens_per_minute(100), 100);
        w.charge(0, 60);
        assert_eq!(w.remaining(0), 40);
        assert_eq!(w.time_to_fit(0, 50), Some(60 * S));
        assert_eq!(w.time_to_fit(0, 101), None);
        assert_eq!(w.remaining(60 * S - 1), 40);
        assert_eq!(w.remaining(60 * S), 100);
    }

    #[test]
    fn merged_charges_leave_with_the_latest_of_them() {
        let mut w = Window::new(Limit::tokens_per_minute(100), 100);
        w.charge(0, 30);
        w.charge(10 * MS, 30);
        assert_eq!(w.entries.len(), 1, "within one 58 ms slice");
        assert_eq!(w.remaining(60 * S), 40);
        assert_eq!(w.remaining(60 * S + 10 * MS), 100);
        w.charge(60 * S + 70 * MS, 10);
        assert_eq!(w.entries.len(), 1, "the old slice left, a new one opened");
    }

    #[test]
    fn a_charge_that_left_the_window_takes_no_return_and_its_overrun_counts_now() {
        let mut w = Window::new(Limit::tokens_per_minute(100), 100);
        let seq = w.charge(0, 50);
        w.adjust(seq, 50, 10, &mut || 61 * S);
        assert_eq!(w.remaining(61 * S), 100);
        let seq = w.charge(61 * S, 0);
        let last = 122 * S;
        w.adjust(seq, 0, 30, &mut || last);
        assert_eq!(
            w.remaining(last),
            70,
            "an overrun on a charge whose time is up counts now"
        );
    }

    fn openai(limit: Option<u64>, remaining: u64, reset_s: Option<u64>) -> Reported {
        Reported {
            source: "openai",
            limit,
            remaining,
            reset_after: reset_s.map(Duration::from_secs),
            window: None,
        }
    }

    #[test]
    fn a_bucket_report_refills_at_the_limit_rate_up_to_what_it_holds() {
        // 100 per minute, 20 left, full in 6 s: a bucket of 20 + 6 s x 100/60 s = 30.
        let mut w = Window::new(Limit::tokens_per_minute(100), 90);
        w.report(0, &openai(Some(100), 20, Some(6)));
        assert_eq!(w.remaining(0), 20);
        assert_eq!(w.remaining(3 * S), 25);
        assert_eq!(w.remaining(6 * S), 30);
        assert_eq!(w.remaining(60 * S), 30, "never more than the bucket holds");
        assert_eq!(w.time_to_fit(0, 25), Some(3 * S));
        assert_eq!(
            w.time_to_fit(0, 50),
            Some(6 * S),
            "larger than the bucket: sent when it is full"
        );
        w.charge(6 * S, 30);
        assert_eq!(w.remaining(6 * S), 0);
        assert_eq!(w.remaining(9 * S), 5);
    }

    #[test]
    fn the_server_account_of_the_very_limit_replaces_the_safety_margin() {
        let mut w = Window::new(Limit::tokens_per_minute(100), 90);
        w.report(0, &openai(Some(100), 100, Some(0)));
        assert_eq!(w.remaining(0), 100, "exact: no margin");
        let mut w = Window::new(Limit::tokens_per_minute(100), 90);
        w.report(0, &openai(Some(200), 200, Some(0)));
        assert_eq!(w.remaining(0), 90, "another limit: only ever lowers");
        w.report(0, &openai(Some(200), 20, Some(0)));
        assert_eq!(w.remaining(0), 20);
    }

    #[test]
    fn a_fixed_window_report_holds_until_its_reset() {
        // GitHub's reset is the end of a fixed window: nothing comes back before it.
        let mut w = Window::new(Limit::requests_per_minute(100), 90);
        w.report(
            0,
            &Reported {
                source: "github",
                ..openai(Some(100), 20, Some(10))
            },
        );
        assert_eq!(w.remaining(5 * S), 20);
        assert_eq!(w.time_to_fit(0, 30), Some(10 * S));
        assert_eq!(
            w.remaining(10 * S),
            90,
            "after the reset the budget's own window"
        );
        // A report that cannot be a bucket of its limit (100 left and a whole window to its
        // reset would hold 200) reads as a fixed window too.
        let mut w = Window::new(Limit::requests_per_minute(100), 90);
        w.charge(0, 10);
        w.report(0, &openai(Some(100), 90, Some(60)));
        assert_eq!(w.remaining(30 * S), 80);
    }

    #[test]
    fn a_rebased_report_counts_the_charges_made_while_its_attempt_was_in_flight() {
        let mut w = Window::new(Limit::requests_per_minute(60), 54);
        w.charge(0, 1); // the attempt that will carry the report
        w.charge(500 * MS, 5); // sent while it was in flight
        w.report(S, &openai(Some(60), 10, Some(50)));
        assert_eq!(w.remaining(S), 10, "as if counted when observed");
        w.rebase(0, S);
        // 10 at 0, 5 charged at 0.5 s, 1 per second of refill; the reporting attempt's own
        // charge, made at the instant the server counted, is counted again (on the safe side).
        assert_eq!(w.remaining(S), 5);
    }

    #[test]
    fn a_rebased_report_counts_the_charges_made_at_its_attempt_s_instant() {
        // A batch of 8 sent together: the server counts them one after the other, and the
        // report of the first does not include the seven after it.
        let mut w = Window::new(Limit::requests_per_minute(60), 54);
        for _ in 0..8 {
            w.charge(0, 1);
        }
        w.report(S, &openai(Some(60), 20, Some(40)));
        w.rebase(0, S);
        assert_eq!(w.remaining(S), 20 - 8 + 1);
    }

    #[test]
    fn an_overtaken_report_keeps_the_newer_account() {
        let mut w = Window::new(Limit::requests_per_minute(60), 54);
        w.report(S, &openai(Some(60), 10, Some(50)));
        w.rebase(900 * MS, S);
        w.report(2 * S, &openai(Some(60), 40, Some(20)));
        w.rebase(100 * MS, 2 * S);
        assert_eq!(
            w.remaining(2 * S),
            11,
            "the account of 0.9 s, one second of refill later"
        );
    }
}
