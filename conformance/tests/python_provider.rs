//! The kit against the Python example provider (examples/python-provider), started by the kit
//! itself over a unix socket, with the venv of scripts/setup.sh (grpcio and grpcio-tools).

use std::{path::PathBuf, process::Command, time::Duration};

use podprovider_conformance::{Config, Outcome, run};

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_provider_passes() {
    let python = vk_testkit::bins::cache_dir().join("venv/bin/python");
    let imports = Command::new(&python)
        .args([
            "-c",
            "import grpc, grpc_tools, grpc_health, grpc_reflection",
        ])
        .status();
    assert!(
        imports.is_ok_and(|s| s.success()),
        "{} lacks grpcio/grpcio-tools: run scripts/setup.sh",
        python.display()
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/python-provider/provider.py")
        .canonicalize()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("provider.sock");
    let state = dir.path().join("state");
    let command = format!(
        "exec {} {} --listen {} --state-dir {}",
        quote(&python.display().to_string()),
        quote(&script.display().to_string()),
        quote(&format!("unix:{}", socket.display())),
        quote(&state.display().to_string()),
    );
    let mut config = Config::new(format!("unix:{}", socket.display()));
    config.provider_command = Some(command);
    config.timeout = Duration::from_secs(30);
    config.unimplemented = ["UpdatePod", "Attach", "PortForward", "GetStats"]
        .map(str::to_owned)
        .into();
    let report = run(config, |c| eprintln!("{c}")).await.unwrap();
    eprintln!("{}", report.summary());
    for c in &report.cases {
        assert_eq!(c.outcome, Outcome::Pass, "{c}");
    }
    // Every case ran: restart and canary too, since the kit started the provider.
    assert_eq!(report.passed(), podprovider_conformance::CASES.len());
}
