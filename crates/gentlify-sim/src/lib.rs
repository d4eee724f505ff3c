//! A simulated rate-limited LLM API, scenarios, and throttling crates compared side by side.
//!
//! The [`SimUpstream`] is a `tower::Service` behaving like an LLM API with hidden limits
//! (concurrency cap, requests and tokens per minute, faults); it runs in virtual time, so a run
//! of thousands of requests takes well under a second. [`run_scenario`] drives a scenario's
//! workload against every [`Contender`] (a function building a client stack) and measures each
//! against the [`Oracle`]. [`serve`] puts the same API on loopback HTTP.
//!
//! ```
//! use gentlify_sim::{contenders, run_scenario, table, Scenario};
//!
//! let scenario = Scenario::builtin().remove(0).reduced();
//! let report = run_scenario(&scenario, &contenders()[..2], |_| {});
//! assert!(report.runs.iter().all(|r| r.figures.lost == 0));
//! println!("{}", table(&report));
//! ```
//!
//! From the workspace: `cargo run --release -p gentlify-sim -- all` (or a scenario name),
//! which prints a table per scenario and writes `sim-out/<scenario>.{json,svg}`.

mod check;
mod client;
mod contenders;
mod gentlify_stacks;
mod http;
mod oracle;
mod report;
mod run;
mod scenario;
mod upstream;

pub use check::{check_expectations, check_figures};
pub use client::{
    box_response, send, take_virtual_rtt, ClientBody, ClientMeter, ClientStack, FailureClass,
    MeteredUpstream, RequestResult,
};
pub use contenders::{contenders, Contender, ContenderCtx, LimitGauge, RetryMode, RunShared};
pub use http::serve;
pub use oracle::Oracle;
pub use report::{footnotes, table, write_json, write_svg};
pub use run::{draw_sizes, run_one, run_scenario, Figures, Run, ScenarioReport, Timeline};
pub use scenario::{
    Dist, Expect, Fault, FigureRanges, HeaderStyle, Latency, Limits, Range, RetryPolicy, Scenario,
    ScenarioError, Sizes, Workload, WorkloadKind,
};
pub use upstream::{
    chat_request, go_duration, rfc3339, sim_wall_epoch, ConnectionDropped, ServerStats, SimBody,
    SimUpstream,
};
