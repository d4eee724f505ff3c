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

/// The longest the budget believes a server's deficit (a week: longer resets are not rate limits).
const MAX_SERVER_RESET: Duration = Duration::from_secs(86_400 * 7);

#[derive(Debug, Clone, Copy)]
struct Entry {
    opened: Tick,
    last: Tick,
    amount: u64,
}

/// Consumption the client did not see (another process on the same key), learnt from the server's
/// `remaining`; it fades linearly until the server's reset, as a refilling server bucket does.
#[derive(Debug, Clone, Copy)]
struct Deficit {
    amount: u64,
    from: Tick,
    until: Tick,
}

impl Deficit {
    fn at(&self, t: Tick) -> u64 {
        if t >= self.until {
            return 0;
        }
        if t <= self.from {
            return self.amount;
        }
        let left = u128::from(self.until - t);
        let span = u128::from(self.until - self.from).max(1);
        (u128::from(self.amount) * left).div_ceil(span) as u64
    }

    /// The first tick at which the deficit is at most `allowed`.
    fn time_when(&self, allowed: u64) -> Tick {
        if allowed >= self.amount {
            return self.from;
        }
        let span = u128::from(self.until - self.from);
        let keep = span * u128::from(allowed) / u128::from(self.amount.max(1));
        self.until - keep as u64
    }
}

/// What the server last said about this limit's dimension.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerView {
    pub(crate) remaining: u64,
    pub(crate) reset_at: Option<Tick>,
}

/// A sliding window log, quantised: the exact sum charged in the last `window`, so that no window
/// of the limit's length ever holds more than the capacity.
#[derive(Debug)]
pub(crate) struct Window {
    pub(crate) limit: Limit,
    pub(crate) capacity: u64,
    window: u64,
    granule: u64,
    entries: VecDeque<Entry>,
    first_seq: u64,
    used: u64,
    deficit: Option<Deficit>,
    pub(crate) server: Option<ServerView>,
}

impl Window {
    pub(crate) fn new(limit: Limit, capacity: u64) -> Self {
        let window = nanos(limit.window());
        Window {
            limit,
            capacity,
            window,
            granule: window / GRANULES,
            entries: VecDeque::new(),
            first_seq: 0,
            used: 0,
            deficit: None,
            server: None,
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
    pub(crate) fn amount_of(&self, cost: &TokenCost) -> u64 {
        match self.limit.dimension() {
            Dimension::Requests => 1,
            Dimension::InputTokens => cost.input_tokens,
            Dimension::OutputTokens => cost.output_tokens,
            _ => cost.total(),
        }
    }

    /// What a request really weighed, given what is known of its usage; `estimate` is what it was
    /// charged.
    pub(crate) fn amount_of_actual(&self, actual: Actual, estimate: u64) -> u64 {
        match (self.limit.dimension(), actual) {
            (Dimension::Requests, _) => estimate,
            (Dimension::InputTokens, Actual::Usage(u)) => u.input_tokens,
            (Dimension::OutputTokens, Actual::Usage(u)) => u.output_tokens,
            // A bare total says nothing of the split.
            (Dimension::InputTokens | Dimension::OutputTokens, Actual::Tokens(_)) => estimate,
            (_, Actual::Usage(u)) => u.total(),
            (_, Actual::Tokens(t)) => t,
        }
    }

    fn expire(&mut self, now: Tick) {
        while let Some(front) = self.entries.front() {
            if front.last.saturating_add(self.window) > now {
                break;
            }
            self.used = self.used.saturating_sub(front.amount);
            self.entries.pop_front();
            self.first_seq += 1;
        }
        if self.deficit.is_some_and(|d| d.until <= now) {
            self.deficit = None;
        }
    }

    fn deficit_at(&self, t: Tick) -> u64 {
        self.deficit.map_or(0, |d| d.at(t))
    }

    /// Capacity left now.
    pub(crate) fn remaining(&mut self, now: Tick) -> u64 {
        self.expire(now);
        self.capacity
            .saturating_sub(self.used.saturating_add(self.deficit_at(now)))
    }

    /// Charged by this budget in the current window: its own attempts only. The server's deficit
    /// is not use of this budget; it is [`unseen`](Window::unseen).
    pub(crate) fn used(&mut self, now: Tick) -> u64 {
        self.expire(now);
        self.used
    }

    /// What the server's `remaining` says was consumed beyond this budget's own charges (other
    /// clients on the key, a server burst smaller than the window), as believed now: it fades
    /// until the server's reset. `used + unseen + remaining` is the capacity while within it.
    pub(crate) fn unseen(&mut self, now: Tick) -> u64 {
        self.expire(now);
        self.deficit_at(now)
    }

    /// How long until everything charged so far has left the window.
    pub(crate) fn reset_in(&mut self, now: Tick) -> Duration {
        self.expire(now);
        let log = self
            .entries
            .back()
            .map_or(now, |e| e.last.saturating_add(self.window));
        let deficit = self.deficit.map_or(now, |d| d.until);
        Duration::from_nanos(log.max(deficit).saturating_sub(now))
    }

    pub(crate) fn fits(&mut self, now: Tick, amount: u64) -> bool {
        self.remaining(now) >= amount
    }

    /// Charges `amount` now; returns the entry's sequence number, for reconciling.
    pub(crate) fn charge(&mut self, now: Tick, amount: u64) -> u64 {
        self.used = self.used.saturating_add(amount);
        if let Some(back) = self.entries.back_mut() {
            if now.saturating_sub(back.opened) < self.granule {
                back.amount = back.amount.saturating_add(amount);
                back.last = back.last.max(now);
                return self.first_seq + self.entries.len() as u64 - 1;
            }
        }
        self.entries.push_back(Entry {
            opened: now,
            last: now,
            amount,
        });
        self.first_seq + self.entries.len() as u64 - 1
    }

    /// Replaces a charge of `from` made as entry `seq` by `to`: a return when less was used, an
    /// overrun when more. A charge that has left the window already counted fully; an overrun on
    /// it is charged `now()`. Returns whether capacity came back.
    ///
    /// A return is applied in place even to an entry whose time is up (it leaves with its
    /// adjusted amount at the next expiry), so the common path reads no clock.
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
            self.charge(now, to - from);
        }
        false
    }

    /// The first tick from `now` at which `need` more fits, assuming nothing else is charged;
    /// `None` when it never fits (more than the capacity).
    pub(crate) fn time_to_fit(&mut self, now: Tick, need: u64) -> Option<Tick> {
        self.expire(now);
        let room = self.capacity.checked_sub(need)?;
        let window = self.window;
        let mut used = self.used;
        let mut t = now;
        let mut entries = self.entries.iter().peekable();
        loop {
            if used <= room {
                let allowed = room - used;
                match self.deficit {
                    None => return Some(t),
                    Some(d) if d.at(t) <= allowed => return Some(t),
                    Some(d) => {
                        let x = d.time_when(allowed).max(t);
                        match entries.peek() {
                            Some(e) if e.last.saturating_add(window) < x => {}
                            _ => return Some(x),
                        }
                    }
                }
            }
            match entries.next() {
                Some(e) => {
                    t = t.max(e.last.saturating_add(window));
                    used -= e.amount.min(used);
                }
                None => return Some(self.deficit.map_or(t, |d| d.until.max(t))),
            }
        }
    }

    /// The server says `remaining` is left, full again in `reset_after`: never believe more.
    pub(crate) fn server_says(&mut self, now: Tick, remaining: u64, reset_after: Option<Duration>) {
        let believed = self.remaining(now);
        let reset_after = reset_after.map(|d| nanos(d.min(MAX_SERVER_RESET)));
        self.server = Some(ServerView {
            remaining,
            reset_at: reset_after.map(|d| now.saturating_add(d)),
        });
        if remaining >= believed {
            return;
        }
        let until = now.saturating_add(reset_after.unwrap_or(self.window));
        let current = self.deficit_at(now);
        let until = match self.deficit {
            Some(d) if current > 0 => d.until.max(until),
            _ => until,
        };
        self.deficit = Some(Deficit {
            amount: current.saturating_add(believed - remaining),
            from: now,
            until,
        });
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

    #[test]
    fn deficit_fades_until_the_reset() {
        let mut w = Window::new(Limit::tokens_per_minute(100), 100);
        w.server_says(0, 20, Some(Duration::from_secs(10)));
        assert_eq!(w.remaining(0), 20);
        assert_eq!(w.remaining(5 * S), 60);
        assert_eq!(w.time_to_fit(0, 60), Some(5 * S));
        w.server_says(0, 90, None);
        assert_eq!(
            w.remaining(0),
            20,
            "the server never raises what the client believes"
        );
    }
}
