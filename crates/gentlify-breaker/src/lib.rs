//! A circuit breaker for Tower that shares gentlify's feedback handle
//!
//! Work in progress.
