//! Client-side, closed-loop throttling for rate-limited APIs (LLM APIs first), as Tower middleware
//!
//! Work in progress.
