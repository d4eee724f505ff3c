//! The expectation checker flags what it must, so the scenario gate can fail.

use gentlify_sim::{
    check_expectations, check_figures, contenders, run_scenario, FigureRanges, Scenario,
};

#[test]
fn checker_flags_lost_requests_oracle_and_gentlify_ranges() {
    let mut sc = Scenario::builtin().remove(0);
    sc.requests = 50;
    let peer: Vec<_> = contenders()
        .into_iter()
        .filter(|c| c.name == "no-throttle")
        .collect();
    let mut report = run_scenario(&sc, &peer, |_| {});
    assert!(check_expectations(&sc, &report).is_empty());

    report.runs[0].figures.lost = 3;
    let problems = check_expectations(&sc, &report);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("lost 3"));
    report.runs[0].figures.lost = 0;

    sc.expect.oracle_rps = Some([1000.0, 2000.0]);
    assert_eq!(check_expectations(&sc, &report).len(), 1);
    sc.expect.oracle_rps = None;

    // gentlify ranges apply to gentlify contenders only, and absent ranges are not checked.
    sc.expect.gentlify = Some(FigureRanges {
        goodput_ratio: Some([2.0, 3.0]),
        ..FigureRanges::default()
    });
    assert!(check_expectations(&sc, &report).is_empty());
    report.runs[0].figures.contender = "gentlify-full".into();
    let problems = check_expectations(&sc, &report);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("goodput_ratio"));
    assert!(check_figures(&report.runs[0].figures, &FigureRanges::default()).is_empty());
}
