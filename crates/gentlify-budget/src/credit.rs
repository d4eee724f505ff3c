//! The lock-free path's credit: one atomic word per budget holding, for every limit, what is
//! left of a chunk drawn under the lock, and which draw the chunks came from.
//!
//! The word is `OPEN | UNTIMED | generation << FIELD_BITS | fields`: `OPEN` while the chunks can
//! be handed out; `UNTIMED` once a reservation took from them without saying when (see
//! [`Credits::take`]); the low [`GEN_BITS`] bits of the draw's generation (the budget counts its
//! draws); and one field per limit, at a place and width fixed when the budget is built, holding
//! the amount left of that limit's chunk, under a guard bit that is set while the credit is open.
//! A reservation takes from every limit at once with one subtraction and one compare-and-swap,
//! so the take is all or nothing: a field short of its amount borrows its guard bit, and the
//! take is refused. Only the holder of the budget's lock opens or closes the credit; the
//! lock-free path only moves amounts within the fields (what is given back never brings a field
//! above the chunk it was taken from).

use std::sync::atomic::{AtomicU64, Ordering};

use gentlify_core::Dimension;

use crate::cost::TokenCost;
use crate::window::Actual;

/// How many low bits of a draw's generation the word keeps: a reservation is reconciled long
/// before sixteen million more draws, so its draw is found again without ambiguity.
pub(crate) const GEN_BITS: u32 = 24;

/// The bits shared by the limits' fields.
const FIELD_BITS: u32 = 38;

const OPEN: u64 = 1 << 63;
const UNTIMED: u64 = 1 << 62;
const GEN: u64 = (1 << GEN_BITS) - 1;
const TAG: u64 = OPEN | GEN << FIELD_BITS;

/// One limit's field in the word.
#[derive(Debug, Clone, Copy)]
struct Lane {
    /// What the limit counts, as an index in [`amounts`] (below 4: masked with 3 where it
    /// indexes, which spares the bounds check).
    kind: u8,
    shift: u32,
    /// The field's mask, and the largest chunk it holds; 0 for no field.
    max: u64,
}

/// The credit of one budget.
#[derive(Debug)]
pub(crate) struct Credits {
    word: AtomicU64,
    lanes: Box<[Lane]>,
    /// The limits counting tokens (a request's amount in them varies).
    tokens: Box<[Lane]>,
    /// One request in every limit counting requests, in place (what a request always weighs
    /// there, and never changes at reconciliation).
    requests: u64,
    /// The guard bit above each field.
    guards: u64,
}

/// What a request weighs in each kind of limit (see [`kind`]): requests, tokens, input tokens,
/// output tokens.
pub(crate) type Amounts = [u64; 4];

/// The index of a limit of `dimension` in [`Amounts`].
#[inline]
pub(crate) fn kind(dimension: Dimension) -> usize {
    match dimension {
        Dimension::Requests => 0,
        Dimension::InputTokens => 2,
        Dimension::OutputTokens => 3,
        _ => 1,
    }
}

/// What `cost` weighs in each kind of limit (as [`amount_of`](crate::window::amount_of)).
#[inline]
pub(crate) fn amounts(cost: &TokenCost) -> Amounts {
    [1, cost.total(), cost.input_tokens, cost.output_tokens]
}

/// What a request of `estimate` really weighed in each kind of limit (as
/// [`amount_of_actual`](crate::window::amount_of_actual)).
#[inline]
pub(crate) fn actual_amounts(actual: Actual, estimate: &Amounts) -> Amounts {
    match actual {
        // A bare total says nothing of the split.
        Actual::Tokens(t) => [1, t, estimate[2], estimate[3]],
        Actual::Usage(u) => [1, u.total(), u.input_tokens, u.output_tokens],
    }
}

impl Credits {
    /// Lays out the fields of limits that would draw chunks of `natural` (dimension and chunk,
    /// in the budget's order): each field as wide as its chunk needs, the widest narrowed until
    /// all fit. No field at all (no lock-free path) when a chunk is under `min`.
    pub(crate) fn new(limits: &[(Dimension, u64)], min: u64) -> Self {
        let bits = |n: u64| 64 - n.leading_zeros();
        let mut widths: Vec<u32> = limits.iter().map(|&(_, n)| bits(n)).collect();
        // Each field has a guard bit above it.
        let room = FIELD_BITS.saturating_sub(limits.len() as u32);
        while widths.iter().sum::<u32>() > room {
            if let Some(widest) = widths.iter_mut().max() {
                *widest -= 1;
            }
        }
        let enabled = !limits.is_empty()
            && limits
                .iter()
                .zip(&widths)
                .all(|(&(_, n), &w)| n.min((1 << w) - 1) >= min);
        let mut shift = 0;
        let mut guards = 0;
        let lanes: Box<[Lane]> = limits
            .iter()
            .zip(&widths)
            .map(|(&(dimension, _), &width)| {
                let lane = Lane {
                    kind: kind(dimension) as u8,
                    shift,
                    max: if enabled { (1 << width) - 1 } else { 0 },
                };
                guards |= 1 << (shift + width);
                shift += width + 1;
                lane
            })
            .collect();
        let requests = lanes
            .iter()
            .filter(|l| l.kind == 0 && l.max > 0)
            .fold(0, |word, l| word | 1 << l.shift);
        let tokens = lanes.iter().filter(|l| l.kind != 0).copied().collect();
        Credits {
            word: AtomicU64::new(0),
            lanes,
            tokens,
            requests,
            guards,
        }
    }

    /// The largest chunk limit `i` can draw; 0 when the budget has no lock-free path.
    pub(crate) fn max(&self, i: usize) -> u64 {
        self.lanes.get(i).map_or(0, |l| l.max)
    }

    /// Opens the credit of draw `generation` with `chunks` (each at most its
    /// [`max`](Credits::max)), under the lock, while it is closed.
    pub(crate) fn open(&self, generation: u64, chunks: &[u64]) {
        let fields = self
            .lanes
            .iter()
            .zip(chunks)
            .fold(0, |word, (lane, &chunk)| {
                word | chunk.min(lane.max) << lane.shift
            });
        self.word.store(
            OPEN | (generation & GEN) << FIELD_BITS | self.guards | fields,
            Ordering::Release,
        );
    }

    /// Closes the credit (under the lock): writes what was left of each chunk, never handed
    /// out, in `leftovers`; returns whether a reservation took from it without saying when.
    pub(crate) fn close(&self, leftovers: &mut [u64]) -> bool {
        let word = self.word.swap(0, Ordering::AcqRel);
        for (leftover, lane) in leftovers.iter_mut().zip(&*self.lanes) {
            *leftover = if word & OPEN != 0 {
                (word >> lane.shift) & lane.max
            } else {
                0
            };
        }
        word & UNTIMED != 0
    }

    /// Takes `amounts` (see [`amounts`]) from every limit's chunk at once; returns the low bits
    /// of the draw's generation, or `None` when the credit is closed or a chunk is short.
    /// `timed`: the taker has published the instant of its take (in the budget's latest use)
    /// before calling; an untimed take makes the chunks count as used until the credit is
    /// closed.
    #[inline]
    pub(crate) fn take(&self, amounts: &Amounts, timed: bool) -> Option<u32> {
        let mut word = self.word.load(Ordering::Relaxed);
        if word & OPEN == 0 {
            return None;
        }
        let mut take = self.requests;
        for lane in &*self.tokens {
            let amount = amounts[usize::from(lane.kind & 3)];
            if amount > lane.max {
                return None;
            }
            take |= amount << lane.shift;
        }
        let mark = if timed { 0 } else { UNTIMED };
        loop {
            let next = word.wrapping_sub(take);
            if word & OPEN == 0 || next & self.guards != self.guards {
                return None;
            }
            match self.word.compare_exchange_weak(
                word,
                next | mark,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(((word >> FIELD_BITS) & GEN) as u32),
                Err(now) => word = now,
            }
        }
    }

    /// Moves a reservation taken from draw `generation` from `from` to `to` in every limit
    /// (see [`amounts`]), through the credit: returns go back to the chunks, overruns are taken
    /// from them. False when that credit has closed since or a chunk is short of an overrun:
    /// the windows must then be adjusted under the lock.
    #[inline]
    pub(crate) fn adjust(&self, generation: u32, from: &Amounts, to: &Amounts) -> bool {
        // A request weighs one in a limit of requests, whatever it used; cancelled, nothing.
        let mut back = if to[0] < from[0] { self.requests } else { 0 };
        let mut take = 0;
        for lane in &*self.tokens {
            let (from, to) = (
                from[usize::from(lane.kind & 3)],
                to[usize::from(lane.kind & 3)],
            );
            if to < from {
                back |= (from - to) << lane.shift;
            } else if to > from {
                if to - from > lane.max {
                    return false;
                }
                take |= (to - from) << lane.shift;
            }
        }
        if back == 0 && take == 0 {
            return true;
        }
        let tag = OPEN | (u64::from(generation) & GEN) << FIELD_BITS;
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            // Fields given back stay within their chunk: no carry. A field short of an overrun
            // borrows its guard.
            let next = word.wrapping_add(back).wrapping_sub(take);
            if word & TAG != tag || next & self.guards != self.guards {
                return false;
            }
            // An overrun taken from the open credit counts from no earlier than its draw (after
            // the reservation's own take), like an overrun charged now: no mark.
            match self
                .word
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => word = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpm_tpm() -> Credits {
        Credits::new(&[(Dimension::Requests, 28), (Dimension::Tokens, 2_812)], 4)
    }

    #[test]
    fn every_limit_gets_a_field_as_wide_as_its_chunk_until_they_must_share() {
        let c = rpm_tpm();
        assert_eq!((c.max(0), c.max(1)), (31, 4_095));
        // Two limits of huge chunks share the 38 bits, each under its guard.
        let c = Credits::new(
            &[(Dimension::Requests, 1 << 45), (Dimension::Tokens, 1 << 50)],
            4,
        );
        assert_eq!((c.max(0), c.max(1)), ((1 << 18) - 1, (1 << 18) - 1));
        // A chunk under the minimum: no lock-free path at all.
        let c = Credits::new(&[(Dimension::Requests, 1), (Dimension::Tokens, 2_812)], 4);
        assert_eq!((c.max(0), c.max(1)), (0, 0));
    }

    #[test]
    fn a_take_is_all_or_nothing() {
        let c = rpm_tpm();
        c.open(7, &[28, 100]);
        assert_eq!(c.take(&[1, 60, 30, 30], true), Some(7));
        // 40 tokens left: short in one limit, nothing is taken from the other.
        assert_eq!(c.take(&[1, 41, 30, 11], true), None);
        let mut left = [0; 2];
        assert!(!c.close(&mut left), "timed takes only");
        assert_eq!(left, [27, 40]);
        assert_eq!(c.take(&[1, 1, 1, 0], true), None, "closed");
    }

    #[test]
    fn an_untimed_take_marks_the_credit() {
        let c = rpm_tpm();
        c.open(1, &[28, 100]);
        c.take(&[1, 10, 10, 0], false).unwrap();
        let mut left = [0; 2];
        assert!(c.close(&mut left));
    }

    #[test]
    fn returns_and_overruns_move_through_the_credit_of_their_own_draw_only() {
        let c = rpm_tpm();
        c.open(3, &[28, 100]);
        let g = c.take(&[1, 60, 60, 0], true).unwrap();
        assert!(c.adjust(g, &[1, 60, 60, 0], &[1, 20, 20, 0]), "a return");
        assert!(c.adjust(g, &[1, 20, 20, 0], &[1, 50, 50, 0]), "an overrun");
        assert!(
            !c.adjust(g, &[1, 50, 50, 0], &[1, 200, 200, 0]),
            "an overrun the chunk cannot cover goes to the lock"
        );
        let mut left = [0; 2];
        c.close(&mut left);
        assert_eq!(left, [27, 50]);
        c.open(4, &[28, 100]);
        assert!(
            !c.adjust(g, &[1, 50, 50, 0], &[1, 0, 0, 0]),
            "another draw's credit: the return goes to the lock"
        );
    }
}
