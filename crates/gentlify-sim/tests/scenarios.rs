//! Every shipped scenario runs in virtual time with every contender, loses nothing, and meets
//! its expectations (the regression gate: gentlify's ranges are checked once registered).

use gentlify_sim::{check_expectations, contenders, run_scenario, Scenario};

fn run(name: &str) {
    let scenario = Scenario::builtin()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no scenario {name}"))
        .reduced();
    let list = contenders();
    let report = run_scenario(&scenario, &list, |_| {});
    assert_eq!(report.runs.len(), list.len());
    for run in &report.runs {
        let f = &run.figures;
        let failed: u64 = f.failed.values().sum();
        assert_eq!(
            f.completed + failed + f.lost,
            scenario.requests as u64,
            "{name}/{}: every request is counted once",
            f.contender
        );
        assert!(
            f.duration_s > 0.0,
            "{name}/{}: virtual time passed",
            f.contender
        );
    }
    let problems = check_expectations(&scenario, &report);
    assert!(problems.is_empty(), "{problems:#?}");
}

macro_rules! scenario_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                run($name);
            }
        )*

        #[test]
        fn every_builtin_scenario_has_a_test() {
            let tested = [$($name),*];
            for s in Scenario::builtin() {
                assert!(tested.contains(&s.name.as_str()), "{} has no test", s.name);
            }
            assert!(tested.len() >= 10);
        }
    };
}

scenario_tests! {
    constant_cap_loses_nothing => "constant-cap",
    rpm_bound_loses_nothing => "rpm-bound",
    tpm_mixed_sizes_loses_nothing => "tpm-mixed-sizes",
    capacity_step_loses_nothing => "capacity-step",
    outage_5xx_loses_nothing => "outage-5xx",
    outage_5xx_long_loses_nothing => "outage-5xx-long",
    burst_529_loses_nothing => "burst-529",
    streaming_long_bodies_loses_nothing => "streaming-long-bodies",
    sender_limited_loses_nothing => "sender-limited",
    shared_quota_loses_nothing => "shared-quota",
    anthropic_headers_loses_nothing => "anthropic-headers",
    dropped_connections_loses_nothing => "dropped-connections",
    open_loop_poisson_loses_nothing => "open-loop-poisson",
    large_backlog_loses_nothing => "large-backlog",
}
