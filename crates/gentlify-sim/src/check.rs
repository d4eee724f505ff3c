//! Checking a run's figures against the scenario's expected ranges.

use crate::run::{Figures, ScenarioReport};
use crate::scenario::{FigureRanges, Range, Scenario};

/// Checks `report` against `scenario`'s `[expect]` section and the sanity rules every run must
/// meet; returns one line per violation (empty when all is well).
///
/// Always checked: no contender loses a request (`lost == 0`), and the oracle's goodput is in
/// `expect.oracle_rps` when given. For contenders whose name starts with `gentlify`, the
/// figures in `expect.gentlify` (each range optional) are checked too.
///
/// ```
/// use gentlify_sim::{check_expectations, contenders, run_scenario, Scenario};
/// let sc = Scenario::builtin().remove(0).reduced();
/// let report = run_scenario(&sc, &contenders()[..1], |_| {});
/// assert_eq!(check_expectations(&sc, &report), Vec::<String>::new());
/// ```
pub fn check_expectations(scenario: &Scenario, report: &ScenarioReport) -> Vec<String> {
    let mut out = Vec::new();
    for run in &report.runs {
        if run.figures.lost != 0 {
            out.push(format!(
                "{}: {} lost {} requests",
                scenario.name, run.figures.contender, run.figures.lost
            ));
        }
    }
    if let Some(range) = scenario.expect.oracle_rps {
        if !within(report.oracle.goodput_rps, range) {
            out.push(format!(
                "{}: oracle {:.3} req/s outside {range:?}",
                scenario.name, report.oracle.goodput_rps
            ));
        }
    }
    if let Some(ranges) = &scenario.expect.gentlify {
        for run in report
            .runs
            .iter()
            .filter(|r| r.figures.contender.starts_with("gentlify"))
        {
            for line in check_figures(&run.figures, ranges) {
                out.push(format!("{}: {line}", scenario.name));
            }
        }
    }
    out
}

/// Checks one contender's figures against `ranges`; a missing range is not checked.
pub fn check_figures(f: &Figures, ranges: &FigureRanges) -> Vec<String> {
    let failed: u64 = f.failed.values().sum();
    let checks: [(&str, Option<f64>, Option<Range>); 9] = [
        ("goodput_ratio", Some(f.goodput_ratio), ranges.goodput_ratio),
        (
            "overloads_per_1000",
            Some(f.overloads_per_1000),
            ranges.overloads_per_1000,
        ),
        ("failed", Some(failed as f64), ranges.failed),
        ("p99_s", Some(f.p99_s), ranges.p99_s),
        ("peak_over_cap", Some(f.peak_over_cap), ranges.peak_over_cap),
        (
            "attempts_per_request",
            Some(f.attempts_per_request),
            ranges.attempts_per_request,
        ),
        ("settling_s", f.settling_s, ranges.settling_s),
        ("fairness", Some(f.fairness), ranges.fairness),
        ("peak_limit", f.peak_limit, ranges.peak_limit),
    ];
    checks
        .into_iter()
        .filter_map(|(name, value, range)| {
            let range = range?;
            match value {
                Some(v) if within(v, range) => None,
                Some(v) => Some(format!(
                    "{}: {name} = {v:.3} outside {range:?}",
                    f.contender
                )),
                None => Some(format!(
                    "{}: {name} missing, expected {range:?}",
                    f.contender
                )),
            }
        })
        .collect()
}

fn within(v: f64, [lo, hi]: Range) -> bool {
    v >= lo && v <= hi
}
