//! `--scenario overload` end to end in its `--quick` mode (phases of a fraction of a second:
//! the figures mean nothing, so nothing here reads them): every table has its rows, the
//! goals are stated, and the chart is written where the output says.

use std::process::Command;

fn demo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ctx-examples"))
}

const CONFIGS: [&str; 3] = ["no ctx", "ctx propagation", "ctx + admission"];

#[test]
fn the_quick_overload_scenario_prints_every_table_and_writes_the_chart() {
    let chart = std::env::temp_dir().join(format!("ctx-overload-test-{}.svg", std::process::id()));
    let _ = std::fs::remove_file(&chart);
    let out = demo()
        .args(["--scenario", "overload", "--quick", "--chart"])
        .arg(&chart)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The three tables, in order, each with a row per configuration (the offered-load one a
    // row per configuration and load level).
    let sections = ["offered load", "slow dependency", "retry storm"];
    let mut starts: Vec<usize> = sections
        .iter()
        .map(|s| {
            stdout
                .lines()
                .position(|l| l.starts_with(s))
                .unwrap_or_else(|| panic!("no {s:?} table:\n{stdout}"))
        })
        .collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "{stdout}");
    starts.push(usize::MAX);
    let lines: Vec<&str> = stdout.lines().collect();
    for (i, section) in sections.iter().enumerate() {
        let rows: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|(n, l)| *n > starts[i] && *n < starts[i + 1] && l.starts_with("| "))
            .map(|(_, l)| *l)
            .collect();
        let per_config = if i == 0 { 5 } else { 1 };
        for config in CONFIGS {
            let count = rows
                .iter()
                .filter(|r| r.split('|').nth(1).is_some_and(|c| c.trim() == config))
                .count();
            assert_eq!(
                count, per_config,
                "{section}: rows of {config:?}:\n{stdout}"
            );
        }
        // Every row has as many cells as the header.
        let cells = |row: &str| row.matches('|').count();
        assert!(rows.iter().all(|r| cells(r) == cells(rows[0])), "{stdout}");
    }
    for level in ["0.5x", "1.0x", "2.0x", "3.0x", "4.0x"] {
        assert!(
            stdout.contains(&format!("| {level} |")),
            "no {level} rows:\n{stdout}"
        );
    }
    // The goals, each with a verdict.
    let goals: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("goal: "))
        .collect();
    assert_eq!(goals.len(), 3, "{stdout}");
    assert!(
        goals
            .iter()
            .all(|g| g.ends_with(": met") || g.contains(": NOT met")),
        "{stdout}"
    );
    // The chart, where the output says it is.
    let named = lines
        .iter()
        .find_map(|l| l.strip_prefix("chart: "))
        .unwrap_or_else(|| panic!("the output names no chart:\n{stdout}"));
    assert_eq!(std::path::Path::new(named), chart.as_path());
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    for config in CONFIGS {
        assert!(svg.contains(config), "the chart has no line for {config:?}");
    }
    let _ = std::fs::remove_file(&chart);
}

#[test]
fn help_lists_the_scenario_and_an_unknown_one_is_a_clear_error() {
    let out = demo().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for text in ["--scenario", "overload", "--quick", "--chart"] {
        assert!(help.contains(text), "{help}");
    }
    let out = demo().args(["--scenario", "stampede"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scenario \"stampede\""));
}
