//! A short soak (`vk_testkit::soak`) with a fixed seed: the three clouds behind fault-injecting
//! proxies, three providers and three shims, ~90 s of pod lifecycles while shims, providers, the
//! API server and etcd are killed and restarted and a fifth of the cloud calls are disturbed;
//! then nothing leaked, nothing duplicated, no phase regression, every pod where its spec says.
//!
//! Needs the workspace's binaries (node-shim, provider-*, eci-emulator, aci-emulator) built into
//! the same target directory (`cargo test --workspace` does), the Kubernetes binaries and moto.

use std::time::Duration;

use vk_testkit::soak::{self, SoakConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_soak_loses_leaks_and_duplicates_nothing() -> anyhow::Result<()> {
    vk_testkit::init_test_logging();
    let report = soak::run(SoakConfig {
        seed: 20_261_203,
        lifecycles: 60,
        duration: Duration::from_secs(90),
        workers: 4,
        settle_timeout: Duration::from_secs(90),
        ..SoakConfig::default()
    })
    .await?;
    println!("{}", report.summary());
    println!("{}", serde_json::to_string(&report)?);
    anyhow::ensure!(
        report.passed(),
        "the soak found problems:\n{}",
        report.summary()
    );
    // Faults around a process are not a reason for it to exit (the supervisor restarting it
    // would hide a crash loop).
    anyhow::ensure!(
        report.unexpected_exits.is_empty(),
        "processes exited by themselves: {:?}",
        report.unexpected_exits
    );
    // The run really disturbed things (else a pass says nothing).
    anyhow::ensure!(
        report.process_faults.values().sum::<usize>() >= 4,
        "{:?}",
        report.process_faults
    );
    anyhow::ensure!(report.lifecycles >= 20, "{} lifecycles", report.lifecycles);
    Ok(())
}
