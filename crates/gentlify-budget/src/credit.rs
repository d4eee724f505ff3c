//! The lock-free path's credit: per limit, one atomic word holding what is left of a chunk
//! drawn under the lock, and which chunk it is.
//!
//! A word is `OPEN | UNTIMED | generation << 32 | amount`: `OPEN` while the chunk can be handed
//! out; `UNTIMED` once a reservation took from it without saying when (see
//! [`take`](Credit::take)); the low [`GEN_BITS`] bits of the chunk's generation (the window
//! counts the chunks it draws); and the amount left (at most [`MAX_CHUNK`]). A closed credit is `0`. Only the holder of the budget's lock
//! opens or closes a credit; the lock-free path only moves the amount, with one
//! compare-and-swap per limit.

use std::sync::atomic::{AtomicU64, Ordering};

/// How many low bits of a chunk's generation a credit word keeps: a reservation is reconciled
/// long before a billion more chunks are drawn, so its chunk is found again without ambiguity.
pub(crate) const GEN_BITS: u32 = 30;

/// The largest chunk: the amount must leave the word's other bits alone.
pub(crate) const MAX_CHUNK: u64 = (1 << 31) - 1;

const OPEN: u64 = 1 << 63;
const UNTIMED: u64 = 1 << 62;
const AMOUNT: u64 = (1 << 32) - 1;
const GEN: u64 = (1 << GEN_BITS) - 1;

/// One limit's credit.
#[derive(Debug, Default)]
pub(crate) struct Credit(AtomicU64);

impl Credit {
    /// Opens the credit of chunk `generation`, of `amount` (under the lock, while it is
    /// closed).
    pub(crate) fn open(&self, generation: u64, amount: u64) {
        debug_assert!(amount <= MAX_CHUNK);
        self.0.store(
            OPEN | (generation & GEN) << 32 | amount.min(MAX_CHUNK),
            Ordering::Release,
        );
    }

    /// Closes the credit (under the lock); returns what was left of it, never handed out, and
    /// whether a reservation took from it without saying when.
    pub(crate) fn close(&self) -> (u64, bool) {
        let word = self.0.swap(0, Ordering::AcqRel);
        if word & OPEN != 0 {
            (word & AMOUNT, word & UNTIMED != 0)
        } else {
            (0, false)
        }
    }

    /// Takes `amount` from an open credit; returns the low bits of its chunk's generation, or
    /// `None` when the credit is closed or short. `timed`: the taker has published the instant
    /// of its take (in the budget's latest use) before calling; an untimed take makes the
    /// chunk count as used until it is closed.
    #[inline]
    pub(crate) fn take(&self, amount: u64, timed: bool) -> Option<u64> {
        let mark = if timed { 0 } else { UNTIMED };
        let mut word = self.0.load(Ordering::Relaxed);
        loop {
            if word & OPEN == 0 || word & AMOUNT < amount {
                return None;
            }
            match self.0.compare_exchange_weak(
                word,
                (word - amount) | mark,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some((word >> 32) & GEN),
                Err(now) => word = now,
            }
        }
    }

    /// Gives `amount` back to the credit it was taken from, the chunk of `generation` (its low
    /// bits), if that credit is still open; false when it was closed since (the window must
    /// then be adjusted under the lock).
    #[inline]
    pub(crate) fn give_back(&self, generation: u64, amount: u64) -> bool {
        let tag = OPEN | (generation & GEN) << 32;
        let mut word = self.0.load(Ordering::Relaxed);
        loop {
            // What was taken from a chunk never brings it above its size, so the sum stays in
            // the amount's bits.
            if word & (OPEN | GEN << 32) != tag {
                return false;
            }
            match self.0.compare_exchange_weak(
                word,
                word + amount,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => word = now,
            }
        }
    }
}
