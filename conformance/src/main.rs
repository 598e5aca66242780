//! `podprovider-conformance`: checks a PodProvider over gRPC and prints one line per case.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;
use podprovider_conformance::{CASES, Config, run};

/// Checks a PodProvider (any language) against the podprovider.v1 contract over gRPC.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The provider: http://HOST:PORT or unix:/PATH.
    #[arg(long, env = "CONFORMANCE_ENDPOINT", required_unless_present = "list")]
    endpoint: Option<String>,
    /// Start the provider with this shell command (and stop it at the end); its output is searched
    /// for the canary secret and the restart case restarts it.
    #[arg(long)]
    provider_command: Option<String>,
    /// A shell command that restarts a provider the kit did not start.
    #[arg(long)]
    restart_command: Option<String>,
    /// A file the provider logs to, searched for the canary secret.
    #[arg(long)]
    provider_log: Option<PathBuf>,
    /// RPCs the provider does not offer (comma-separated, e.g. Attach,PortForward): they must
    /// answer UNIMPLEMENTED, and cases that need them are skipped.
    #[arg(long, value_delimiter = ',')]
    unimplemented: Vec<String>,
    /// Run only these cases (comma-separated or repeated).
    #[arg(long = "case", value_delimiter = ',')]
    cases: Vec<String>,
    /// Skip these cases (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// The virtual node's name the kit's pods are bound to.
    #[arg(long, default_value = "vk-conformance")]
    node_name: String,
    /// Image of the kit's pods (it must have `sh`).
    #[arg(long, default_value = "busybox:1.36")]
    image: String,
    /// Seconds to wait for a pod to run, an event to arrive or the provider to answer.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
    /// Also write the results as JUnit XML to this file.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// List the cases and exit.
    #[arg(long)]
    list: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if args.list {
        for case in CASES {
            println!("{:<18} {}", case.name, case.about);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let endpoint = args.endpoint.context("--endpoint is required")?;
    let args_junit = args.junit;
    let mut config = Config::new(endpoint);
    config.provider_command = args.provider_command;
    config.restart_command = args.restart_command;
    config.provider_log = args.provider_log;
    config.unimplemented = args.unimplemented.into_iter().collect();
    config.cases = args.cases;
    config.skip = args.skip;
    config.node_name = args.node_name;
    config.image = args.image;
    config.timeout = Duration::from_secs(args.timeout_secs);
    let report = run(config, |case| println!("{case}"))
        .await
        .context("conformance run")?;
    println!("{}", report.summary());
    if let Some(path) = &args_junit {
        std::fs::write(path, report.junit_xml())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
