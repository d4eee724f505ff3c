//! The same seed gives the same table twice; another seed gives another.

use gentlify_sim::{contenders, run_scenario, table, Scenario};

fn scenario(name: &str) -> Scenario {
    Scenario::builtin()
        .into_iter()
        .find(|s| s.name == name)
        .expect("scenario exists")
        .reduced()
}

#[test]
fn same_seed_gives_the_same_table_twice() {
    // Faults, jitter, backoff jitter, several clients and every contender: all seeded.
    for name in ["shared-quota", "dropped-connections"] {
        let sc = scenario(name);
        let a = run_scenario(&sc, &contenders(), |_| {});
        let b = run_scenario(&sc, &contenders(), |_| {});
        assert_eq!(table(&a), table(&b), "{name}");
        for (x, y) in a.runs.iter().zip(&b.runs) {
            assert_eq!(x.figures, y.figures, "{name}");
        }
    }
}

#[test]
fn another_seed_gives_another_table() {
    let sc = scenario("dropped-connections");
    let mut other = sc.clone();
    other.seed += 1;
    let list = &contenders()[..1];
    let a = run_scenario(&sc, list, |_| {});
    let b = run_scenario(&other, list, |_| {});
    assert_ne!(table(&a), table(&b));
}
