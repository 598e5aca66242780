//! The binary: one line per case, the summary, JUnit XML, and the exit code.

use std::process::Command;

use provider_common::ListenAddr;
use vk_testkit::{ports::free_port, test_provider::Control};

const BIN: &str = env!("CARGO_BIN_EXE_podprovider-conformance");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_cases_and_exits_non_zero_on_failure() {
    let control = Control::new();
    let port = free_port().unwrap();
    let _server = control
        .serve(ListenAddr::Tcp(([127, 0, 0, 1], port).into()))
        .await
        .unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");

    // The test provider accepts hostPath volumes: invalid-volume fails, the run exits 1.
    let out = tokio::task::spawn_blocking({
        let (endpoint, junit) = (endpoint.clone(), junit.clone());
        move || {
            Command::new(BIN)
                .args(["--endpoint", &endpoint, "--timeout-secs", "10"])
                .args(["--case", "health,invalid-volume,restart"])
                .arg("--junit")
                .arg(&junit)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[0].starts_with("PASS health"), "{stdout}");
    // In the kit's case order, not the order given.
    assert!(
        lines[1].starts_with("SKIP restart: no --restart-command"),
        "{stdout}"
    );
    assert!(lines[2].starts_with("FAIL invalid-volume"), "{stdout}");
    assert!(lines[2].contains("want INVALID_ARGUMENT"), "{stdout}");
    assert_eq!(lines[3], "1 passed, 1 failed, 1 skipped");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(r#"tests="3" failures="1" skipped="1""#),
        "{xml}"
    );

    // Skipping the failing case: exit 0.
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["--endpoint", &endpoint, "--timeout-secs", "10"])
            .args([
                "--case",
                "health,invalid-volume",
                "--skip",
                "invalid-volume",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("SKIP invalid-volume: skipped with --skip"),
        "{stdout}"
    );
}

#[test]
fn lists_cases_and_refuses_bad_input() {
    let out = Command::new(BIN).arg("--list").output().unwrap();
    assert!(out.status.success());
    let listed = String::from_utf8_lossy(&out.stdout);
    for case in podprovider_conformance::CASES {
        assert!(listed.contains(case.name), "{listed}");
    }
    let out = Command::new(BIN)
        .args(["--endpoint", "tcp://nowhere"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("expected http://HOST:PORT or unix:/PATH"),
        "{stderr}"
    );
}
