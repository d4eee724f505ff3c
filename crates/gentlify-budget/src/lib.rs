//! Requests and tokens per window for Tower: estimate, reserve, reconcile with real usage
//!
//! Work in progress.
