//! Adaptive concurrency limiting for Tower: decelerate on overload, cool, reaccelerate; latency-aware; paced dispatch
//!
//! Work in progress.
