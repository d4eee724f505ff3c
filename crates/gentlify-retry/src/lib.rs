//! Retries inside the held slot for Tower: jittered backoff, server-directed delays, retry budget
//!
//! Work in progress.
