//! A simulated rate-limited LLM API and a scenario runner comparing throttles
//!
//! Work in progress.
