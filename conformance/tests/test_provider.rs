//! The kit against testkit's test provider, served in-process over a real socket.

use std::time::Duration;

use podprovider_conformance::{Config, Outcome, run};
use provider_common::ListenAddr;
use vk_testkit::{ports::free_port, test_provider::Control};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_provider_passes() {
    let control = Control::new();
    let port = free_port().unwrap();
    let _server = control
        .serve(ListenAddr::Tcp(([127, 0, 0, 1], port).into()))
        .await
        .unwrap();
    let mut config = Config::new(format!("http://127.0.0.1:{port}"));
    config.timeout = Duration::from_secs(20);
    config.unimplemented = ["PortForward".to_owned()].into();
    // The test provider accepts every volume type: it has no cloud to refuse hostPath.
    config.skip = vec!["invalid-volume".to_owned()];
    let report = run(config, |c| eprintln!("{c}")).await.unwrap();
    eprintln!("{}", report.summary());
    for c in &report.cases {
        assert!(!matches!(c.outcome, Outcome::Fail(_)), "{c}");
    }
    assert_eq!(report.failed(), 0);
    // Everything but the restart and canary (nothing to restart, no output to read) and the
    // skipped one ran and passed.
    assert_eq!(
        report.passed(),
        report.cases.len() - 3,
        "{}",
        report.summary()
    );
}
