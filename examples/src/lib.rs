//! Shared pieces of the runnable examples (see `examples/*.rs`).
