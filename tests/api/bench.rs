//! `warden bench --quick` on tiny sizes: proves the harness runs end to end against the real
//! Postgres, NATS and SQLite and prints a complete table. No timing assertions: the
//! figures of a smoke run on a shared machine mean nothing.

use std::process::Command;

#[test]
fn bench_quick_runs_every_scenario_and_prints_the_table() {
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args([
            "bench",
            "--quick",
            "--connections",
            "2",
            "--seconds",
            "0.5",
            "--long-stream-events",
            "150",
        ])
        .output()
        .expect("warden bench starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for scenario in [
        "Postgres SendVerification + check, 2 conns, a profile each",
        "Postgres SendVerification + check, 2 conns, ONE shared profile",
        "Postgres GET /v2/users/me",
        "Postgres password sign-in",
        "(vs argon2id with a kept buffer)",
        "Postgres append -> NATS publish",
        "Postgres append -> webhook delivered",
        "Postgres PATCH /v2/users/me on a 150-event stream",
        "Postgres `warden projections rebuild`",
        "SQLite SendVerification + check",
        "SQLite server peak RSS",
    ] {
        assert!(
            stdout.contains(scenario),
            "no {scenario:?} row in\n{stdout}"
        );
    }
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| scenario"))
        .collect();
    assert_eq!(rows.len(), 13, "{stdout}");
    for row in rows {
        assert!(
            row.ends_with("| PASS |") || row.ends_with("| MISS |") || row.contains("| info"),
            "every row is judged against its target: {row}"
        );
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let figures = [2, 3, 5].map(|i| cells.get(i).copied().unwrap_or("-"));
        assert!(
            figures.iter().any(|f| *f != "-"),
            "a row without figures: {row}"
        );
    }
}
