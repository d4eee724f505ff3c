//! One limit's sliding window: what was charged when, what the server says is left.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::cost::TokenCost;
use crate::limit::Limit;
use gentlify_core::{Dimension, Usage};

/// Charges closer together than `window / GRANULES` share one entry, so a window holds at most
/// about `GRANULES + 1` entries however many requests pass: 59 ms slices for a minute window.
/// A merged entry expires with its latest charge, so merging only ever delays capacity, by at most
/// one slice, and never lets more than the capacity into a window.
const GRANULES: u32 = 1024;

#[derive(Debug, Clone, Copy)]
struct Entry {
    opened: Instant,
    last: Instant,
    amount: u64,
}

/// Consumption the client did not see (another process on the same key), learnt from the server's
/// `remaining`; it fades linearly until the server's reset, as a refilling server bucket does.
#[derive(Debug, Clone, Copy)]
struct Deficit {
    amount: u64,
    from: Instant,
    until: Instant,
}

impl Deficit {
    fn at(&self, t: Instant) -> u64 {
        if t >= self.until {
            return 0;
        }
        if t <= self.from {
            return self.amount;
        }
        let left = (self.until - t).as_nanos();
        let span = (self.until - self.from).as_nanos().max(1);
        (self.amount as u128 * left).div_ceil(span) as u64
    }

    /// The first instant at which the deficit is at most `allowed`.
    fn time_when(&self, allowed: u64) -> Instant {
        if allowed >= self.amount {
            return self.from;
        }
        let span = (self.until - self.from).as_nanos();
        let keep = span * allowed as u128 / self.amount.max(1) as u128;
        self.until - Duration::from_nanos(keep as u64)
    }
}

/// What the server last said about this limit's dimension.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerView {
    pub(crate) remaining: u64,
    pub(crate) reset_at: Option<Instant>,
}

/// A sliding window log, quantised: the exact sum charged in the last `window`, so that no window
/// of the limit's length ever holds more than the capacity.
#[derive(Debug)]
pub(crate) struct Window {
    pub(crate) limit: Limit,
    pub(crate) capacity: u64,
    granule: Duration,
    entries: VecDeque<Entry>,
    first_seq: u64,
    used: u64,
    deficit: Option<Deficit>,
    pub(crate) server: Option<ServerView>,
}

impl Window {
    pub(crate) fn new(limit: Limit, capacity: u64) -> Self {
        Window {
            limit,
            capacity,
            granule: limit.window() / GRANULES,
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

    fn expire(&mut self, now: Instant) {
        let window = self.limit.window();
        while let Some(front) = self.entries.front() {
            if front.last + window > now {
                break;
            }
            self.used -= front.amount;
            self.entries.pop_front();
            self.first_seq += 1;
        }
        if self.deficit.is_some_and(|d| d.until <= now) {
            self.deficit = None;
        }
    }

    fn deficit_at(&self, t: Instant) -> u64 {
        self.deficit.map_or(0, |d| d.at(t))
    }

    /// Capacity left now.
    pub(crate) fn remaining(&mut self, now: Instant) -> u64 {
        self.expire(now);
        self.capacity
            .saturating_sub(self.used.saturating_add(self.deficit_at(now)))
    }

    /// Charged in the current window (deficit included).
    pub(crate) fn used(&mut self, now: Instant) -> u64 {
        self.expire(now);
        self.used.saturating_add(self.deficit_at(now))
    }

    /// How long until everything charged so far has left the window.
    pub(crate) fn reset_in(&mut self, now: Instant) -> Duration {
        self.expire(now);
        let log = self
            .entries
            .back()
            .map_or(now, |e| e.last + self.limit.window());
        let deficit = self.deficit.map_or(now, |d| d.until);
        log.max(deficit).saturating_duration_since(now)
    }

    pub(crate) fn fits(&mut self, now: Instant, amount: u64) -> bool {
        self.remaining(now) >= amount
    }

    /// Charges `amount` now; returns the entry's sequence number, for reconciling.
    pub(crate) fn charge(&mut self, now: Instant, amount: u64) -> u64 {
        self.used += amount;
        if let Some(back) = self.entries.back_mut() {
            if now.saturating_duration_since(back.opened) < self.granule {
                back.amount += amount;
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
    /// An entry still in the queue is adjusted in place even if its time is up (it leaves with
    /// its adjusted amount at the next expiry), so the common path reads no clock.
    pub(crate) fn adjust(
        &mut self,
        seq: u64,
        from: u64,
        to: u64,
        now: &mut impl FnMut() -> Instant,
    ) -> bool {
        if from == to {
            return false;
        }
        let window = self.limit.window();
        if seq >= self.first_seq {
            if let Some(entry) = self.entries.get_mut((seq - self.first_seq) as usize) {
                // A return is safe on an entry whose time is up; an overrun on one would leave
                // with it, uncounted: it is charged now instead.
                if to < from || entry.last + window > now() {
                    entry.amount = entry.amount - from.min(entry.amount) + to;
                    self.used = self.used - from.min(self.used) + to;
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

    /// The first instant from `now` at which `need` more fits, assuming nothing else is charged;
    /// `None` when it never fits (more than the capacity).
    pub(crate) fn time_to_fit(&mut self, now: Instant, need: u64) -> Option<Instant> {
        self.expire(now);
        let room = self.capacity.checked_sub(need)?;
        let window = self.limit.window();
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
                            Some(e) if e.last + window < x => {}
                            _ => return Some(x),
                        }
                    }
                }
            }
            match entries.next() {
                Some(e) => {
                    t = t.max(e.last + window);
                    used -= e.amount.min(used);
                }
                None => return Some(self.deficit.map_or(t, |d| d.until.max(t))),
            }
        }
    }

    /// The server says `remaining` is left, full again in `reset_after`: never believe more.
    pub(crate) fn server_says(
        &mut self,
        now: Instant,
        remaining: u64,
        reset_after: Option<Duration>,
    ) {
        let believed = self.remaining(now);
        let reset_after = reset_after.map(|d| d.min(Duration::from_secs(86_400 * 7)));
        self.server = Some(ServerView {
            remaining,
            reset_at: reset_after.map(|d| now + d),
        });
        if remaining >= believed {
            return;
        }
        let fade = reset_after.unwrap_or(self.limit.window());
        let current = self.deficit_at(now);
        let until = match self.deficit {
            Some(d) if current > 0 => d.until.max(now + fade),
            _ => now + fade,
        };
        self.deficit = Some(Deficit {
            amount: current + (believed - remaining),
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

    #[tokio::test(start_paused = true)]
    async fn charges_leave_the_window_after_its_length() {
        let mut w = Window::new(Limit::tokens_per_minute(100), 100);
        let now = Instant::now();
        w.charge(now, 60);
        assert_eq!(w.remaining(now), 40);
        assert_eq!(w.time_to_fit(now, 50), Some(now + Duration::from_secs(60)));
        assert_eq!(w.time_to_fit(now, 101), None);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(w.remaining(Instant::now()), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn merged_charges_leave_with_the_latest_of_them() {
        let mut w = Window::new(Limit::tokens_per_minute(100), 100);
        let start = Instant::now();
        w.charge(start, 30);
        w.charge(start + Duration::from_millis(10), 30);
        assert_eq!(w.entries.len(), 1, "within one 58 ms slice");
        assert_eq!(w.remaining(start + Duration::from_secs(60)), 40);
        assert_eq!(
            w.remaining(start + Duration::from_secs(60) + Duration::from_millis(10)),
            100
        );
        w.charge(start + Duration::from_millis(70), 10);
        assert_eq!(w.entries.len(), 1, "the old slice left, a new one opened");
    }

    #[tokio::test(start_paused = true)]
    async fn a_charge_that_left_the_window_takes_no_return_and_its_overrun_counts_now() {
        let mut w = Window::new(Limit::tokens_per_minute(100), 100);
        let start = Instant::now();
        let seq = w.charge(start, 50);
        let later = start + Duration::from_secs(61);
        w.adjust(seq, 50, 10, &mut || later);
        assert_eq!(w.remaining(later), 100);
        let seq = w.charge(later, 0);
        let last = later + Duration::from_secs(61);
        w.adjust(seq, 0, 30, &mut || last);
        assert_eq!(
            w.remaining(last),
            70,
            "an overrun on a charge whose time is up counts now"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deficit_fades_until_the_reset() {
        let mut w = Window::new(Limit::tokens_per_minute(100), 100);
        let now = Instant::now();
        w.server_says(now, 20, Some(Duration::from_secs(10)));
        assert_eq!(w.remaining(now), 20);
        assert_eq!(w.remaining(now + Duration::from_secs(5)), 60);
        let at = w.time_to_fit(now, 60).unwrap();
        assert_eq!(at, now + Duration::from_secs(5));
        w.server_says(now, 90, None);
        assert_eq!(
            w.remaining(now),
            20,
            "the server never raises what the client believes"
        );
    }
}
