//! The binary prints the comparison table and writes the JSON figures and the SVG plot.

use std::process::Command;

#[test]
fn cli_prints_the_table_and_writes_json_and_svg() {
    let out = std::env::temp_dir().join(format!("gentlify-sim-cli-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_gentlify-sim"))
        .args(["sender-limited", "--quick", "--out"])
        .arg(&out)
        .output()
        .expect("binary runs");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("== sender-limited"), "{stdout}");
    for name in [
        "no-throttle",
        "tower-concurrency(C*)",
        "tower-acc-vegas",
        "congestion-limiter-aimd",
    ] {
        assert!(stdout.contains(name), "{name} row missing: {stdout}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("sender-limited.json")).unwrap()).unwrap();
    assert_eq!(json["scenario"], "sender-limited");
    assert_eq!(json["runs"][0]["figures"]["lost"], 0);
    let svg = std::fs::read_to_string(out.join("sender-limited.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..50.min(svg.len())]);
    assert!(svg.contains("capacity C"));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn cli_rejects_an_unknown_scenario() {
    let output = Command::new(env!("CARGO_BIN_EXE_gentlify-sim"))
        .arg("no-such-scenario")
        .output()
        .expect("binary runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no scenario named"));
}
