//! Reads providers' rate-limit headers and feeds them to gentlify's other layers
//!
//! Work in progress.
