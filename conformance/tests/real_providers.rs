//! The kit against the real provider binaries, each against its cloud's emulator, in
//! `--provider-command` mode: the kit starts the provider, reads its output (canary) and restarts
//! it (restart case). Needs the binaries built in this target directory:
//! `cargo build -p provider-aci -p aci-emulator -p provider-eci -p eci-emulator -p provider-fargate`.

use std::time::Duration;

use podprovider_conformance::{Config, Outcome, Report, run};
use vk_testkit::{
    aci_emulator::{self, AciEmulator, AciEmulatorOptions},
    bins::workspace_bin,
    eci_emulator::{self, EciEmulator, EciEmulatorOptions},
    moto::Moto,
    ports::free_port,
};

/// `sh` single-quoting.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn command(env: &[(&str, String)], bin: &str, args: &[String]) -> String {
    let mut parts: Vec<String> = env
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect();
    parts.push("exec".into());
    parts.push(quote(bin));
    parts.extend(args.iter().map(|a| quote(a)));
    parts.join(" ")
}

async fn check(config: Config, allowed_skips: &[&str]) -> Report {
    let report = run(config, |c| eprintln!("{c}")).await.unwrap();
    eprintln!("{}", report.summary());
    for c in &report.cases {
        match &c.outcome {
            Outcome::Pass => {}
            Outcome::Fail(_) => panic!("{c}"),
            Outcome::Skip(_) => assert!(allowed_skips.contains(&c.name), "unexpected {c}"),
        }
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_aci_passes() {
    let dir = tempfile::tempdir().unwrap();
    let emu = AciEmulator::start(dir.path(), AciEmulatorOptions::default())
        .await
        .unwrap();
    let bin = workspace_bin("provider-aci").unwrap();
    let port = free_port().unwrap();
    let mut args = vec!["--listen".to_owned(), format!("127.0.0.1:{port}")];
    args.extend(aci_emulator::provider_flags(&emu.endpoint, &emu.endpoint));
    args.extend(["--status-interval-seconds", "0.5", "--log-filter", "debug"].map(str::to_owned));
    let env = aci_emulator::provider_env();
    let mut config = Config::new(format!("http://127.0.0.1:{port}"));
    config.provider_command = Some(command(&env, &bin.display().to_string(), &args));
    config.node_name = "vk-aci".into();
    config.timeout = Duration::from_secs(60);
    config.unimplemented = ["PortForward".to_owned()].into();
    config.skip = vec![
        // ACI's exec is one terminal stream: stderr cannot arrive apart from stdout.
        "exec".to_owned(),
        // The provider decodes the 5 MiB pod, but answers the emulator's HTTP 413 with INTERNAL
        // where §8 wants INVALID_ARGUMENT (a known provider-aci gap, reported with the kit).
        "large-message".to_owned(),
    ];
    let report = check(config, &["exec", "large-message"]).await;
    assert_eq!(report.failed(), 0);
    // With the command the kit restarts the provider and reads its output: both really ran.
    assert_eq!(report.outcome("restart"), Some(&Outcome::Pass));
    assert_eq!(report.outcome("canary"), Some(&Outcome::Pass));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_eci_passes() {
    let dir = tempfile::tempdir().unwrap();
    let emu = EciEmulator::start(dir.path(), EciEmulatorOptions::default())
        .await
        .unwrap();
    let bin = workspace_bin("provider-eci").unwrap();
    let port = free_port().unwrap();
    let mut args = vec!["--listen".to_owned(), format!("127.0.0.1:{port}")];
    args.extend(eci_emulator::provider_flags(&emu.endpoint));
    args.extend(["--status-interval-seconds", "0.5", "--log-filter", "debug"].map(str::to_owned));
    let env = eci_emulator::provider_env();
    let mut config = Config::new(format!("http://127.0.0.1:{port}"));
    config.provider_command = Some(command(&env, &bin.display().to_string(), &args));
    config.node_name = "vk-eci".into();
    config.timeout = Duration::from_secs(60);
    config.unimplemented = ["PortForward".to_owned()].into();
    // The provider decodes the 5 MiB pod but puts it in the request URI, which the emulator
    // refuses ("uri too long"), and answers UNAVAILABLE after retries where §8 wants
    // INVALID_ARGUMENT (a provider-eci gap, reported with the kit).
    config.skip = vec!["large-message".to_owned()];
    let report = check(config, &["large-message"]).await;
    assert_eq!(report.failed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_fargate_passes() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(dir.path(), "vk", "vk-logs").await.unwrap();
    let bin = workspace_bin("provider-fargate").unwrap();
    let port = free_port().unwrap();
    let args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--cluster",
        "vk",
        "--subnets",
        &moto.subnet,
        "--security-groups",
        &moto.security_group,
        "--log-group",
        "vk-logs",
        "--execution-role-arn",
        "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
        "--status-interval-seconds",
        "0.5",
        "--log-filter",
        "debug",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let env = Moto::aws_env(&moto.endpoint);
    let mut config = Config::new(format!("http://127.0.0.1:{port}"));
    config.provider_command = Some(command(&env, &bin.display().to_string(), &args));
    config.node_name = "vk-fargate".into();
    config.timeout = Duration::from_secs(60);
    // Exec needs ECS Exec (--enable-execute-command), off here: it must say so with UNIMPLEMENTED.
    config.unimplemented = ["PortForward".to_owned(), "Exec".to_owned()].into();
    // moto runs no containers, so CloudWatch Logs never gets a line to serve.
    config.skip = vec!["logs".to_owned()];
    let report = check(config, &["logs", "exec"]).await;
    assert_eq!(report.failed(), 0);
}
