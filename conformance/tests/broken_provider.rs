//! Each case of the kit fails against a provider that gets its point wrong: the test provider
//! behind a proxy injecting one fault (tests/support).

mod support;

use std::time::Duration;

use podprovider_conformance::{Config, Outcome, Report, run};
use support::{Broken, Fault};

async fn run_case(broken: &Broken, case: &str, adjust: impl FnOnce(&mut Config)) -> Report {
    let mut config = Config::new(broken.endpoint.clone());
    config.timeout = Duration::from_secs(8);
    config.cases = vec![case.to_owned()];
    adjust(&mut config);
    run(config, |c| eprintln!("{c}")).await.unwrap()
}

fn assert_fails(report: &Report, case: &str, why: &str) {
    match report.outcome(case) {
        Some(Outcome::Fail(reason)) => assert!(
            reason.contains(why),
            "{case} failed for another reason: {reason} (want {why:?})"
        ),
        other => panic!("{case} should fail, got {other:?}"),
    }
    assert_eq!(report.failed(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_fails_against_its_fault() {
    // (fault, case, part of the failure reason)
    let table: &[(Fault, &str, &str)] = &[
        (Fault::NoHealth, "health", "Unimplemented"),
        (Fault::NoReflection, "reflection", "reflection v1"),
        (Fault::BadNodeInfo, "node-info", "provider_name"),
        (
            Fault::NonIdempotentCreate,
            "create-idempotent",
            "AlreadyExists",
        ),
        (Fault::DeleteUnknownFails, "delete-unknown", "NotFound"),
        (Fault::NoSynced, "watch-snapshot", "no synced"),
        (Fault::NoDeleted, "watch-changes", "no deleted event"),
        (
            Fault::RegressingStatus,
            "status-monotonic",
            "moved backwards",
        ),
        (
            Fault::WrongErrorCode,
            "invalid-pod-ref",
            "want INVALID_ARGUMENT",
        ),
        // The test provider itself accepts hostPath: the faithful proxy shows it.
        (Fault::None, "invalid-volume", "want INVALID_ARGUMENT"),
        (Fault::SmallMessages, "large-message", "message size limit"),
        (Fault::IgnoresTail, "logs", "tail_lines=0"),
        (Fault::MergesStderr, "exec", "stdout is"),
        (
            Fault::RejectsUnknownFields,
            "unknown-fields",
            "unknown fields are not accepted",
        ),
    ];
    for (fault, case, why) in table {
        eprintln!("--- {fault:?} / {case}");
        let broken = support::start(*fault).await;
        let report = run_case(&broken, case, |_| {}).await;
        assert_fails(&report, case, why);
        // The same case passes without the fault (except invalid-volume, see above).
        if *fault != Fault::None {
            let good = support::start(Fault::None).await;
            let report = run_case(&good, case, |_| {}).await;
            assert_eq!(
                report.outcome(case),
                Some(&Outcome::Pass),
                "{case} without {fault:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_fails_when_state_is_lost() {
    let broken = support::start(Fault::ForgetsOnRestart).await;
    let flag = broken.restart_flag.display().to_string();
    let report = run_case(&broken, "restart", |c| {
        c.restart_command = Some(format!("touch {flag}"));
    })
    .await;
    assert_fails(&report, "restart", "ListPods lacks the running pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_fails_when_a_secret_is_logged() {
    let broken = support::start(Fault::LeaksSecrets).await;
    let log = broken.log.clone();
    let report = run_case(&broken, "canary", |c| c.provider_log = Some(log)).await;
    assert_fails(&report, "canary", "appears in");
    let good = support::start(Fault::None).await;
    let log = good.log.clone();
    let report = run_case(&good, "canary", |c| c.provider_log = Some(log)).await;
    assert_eq!(report.outcome("canary"), Some(&Outcome::Pass));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_unimplemented_rpcs_must_answer_unimplemented() {
    let good = support::start(Fault::None).await;
    // The test provider does not offer PortForward: declared, it passes.
    let report = run_case(&good, "unimplemented", |c| {
        c.unimplemented = ["PortForward".to_owned()].into();
    })
    .await;
    assert_eq!(report.outcome("unimplemented"), Some(&Outcome::Pass));
    // It does offer GetStats: declaring it unimplemented is caught.
    let report = run_case(&good, "unimplemented", |c| {
        c.unimplemented = ["GetStats".to_owned()].into();
    })
    .await;
    assert_fails(
        &report,
        "unimplemented",
        "GetStats is declared unimplemented but succeeds",
    );
    // Cases needing a declared RPC are skipped, not failed.
    let report = run_case(&good, "exec", |c| {
        c.unimplemented = ["Exec".to_owned()].into();
    })
    .await;
    assert!(matches!(report.outcome("exec"), Some(Outcome::Skip(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_selection_is_an_error() {
    let err = run(
        Config {
            cases: vec!["no-such-case".into()],
            ..Config::new("http://127.0.0.1:1")
        },
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("unknown case"), "{err}");
    let err = run(
        Config {
            unimplemented: ["Teleport".to_owned()].into(),
            ..Config::new("http://127.0.0.1:1")
        },
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("unknown RPC"), "{err}");
}
