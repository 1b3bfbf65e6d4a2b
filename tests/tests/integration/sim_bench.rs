//! The simulator benchmark builds and runs: a small `shoal-bench sim`
//! (3 managers on Raft, 50 simulated nodes, 500 pods, one repetition) ends
//! with one well-formed JSON line whose figures are sane. Speed is never
//! asserted here: figures are for docs/BENCHMARKS.md.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// Generous: the run takes seconds, most of it the dead nodes' heartbeat
/// expiry; the limit only keeps a hang from stalling the suite.
const LIMIT: Duration = Duration::from_secs(300);

#[test]
fn a_small_sim_run_prints_one_json_line_of_sane_figures() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal-bench"));
    cmd.args(["sim", "--nodes", "50", "--pods", "500", "--reps", "1"]);
    let out = shoal_tests::run(&mut cmd, LIMIT).ok();
    let last = out.stdout.lines().last().unwrap_or_default();
    let j: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("the last line is not JSON ({e}):\n{out}"));
    assert_eq!(j["bench"], "sim", "{j}");
    assert_eq!(j["nodes"], 50, "{j}");
    assert_eq!(j["pods"], 500, "{j}");
    assert_eq!(j["managers"], 3, "{j}");
    assert_eq!(j["ok_reps"], 1, "{j}");
    assert_eq!(j["errors"], Value::Array(vec![]), "{j}");
    let positive = |key: &str| {
        let v = j[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} is not a number: {j}"));
        assert!(v > 0.0 && v.is_finite(), "{key} = {v}: {j}");
        v
    };
    let placed = positive("placed_s");
    let converged = positive("converge_s");
    assert!(placed <= converged, "pods run only once placed: {j}");
    positive("placements_per_s");
    positive("reschedule_s");
    positive("raft_log_bytes");
    positive("snapshot_ms");
    positive("snapshot_bytes");
    // Memory may be reused rather than grown, but never negative.
    assert!(
        j["manager_bytes_per_pod"]
            .as_f64()
            .is_some_and(|v| v >= 0.0),
        "{j}"
    );
    // The managers' heap and the leader's store grew by the pods they hold.
    positive("manager_heap_bytes_per_pod");
    positive("store_bytes_per_pod");
    // The dead tenth of the nodes held pods, and they all moved.
    let moved = j["repetitions"][0]["moved_pods"].as_u64().unwrap_or(0);
    assert!(moved > 0 && moved < 500, "{j}");
}
