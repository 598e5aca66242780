//! Runs a soak (`vk_testkit::soak`): a control plane, the three clouds behind fault-injecting
//! proxies, three providers and three shims, pod lifecycles driven from a seed while processes are
//! killed and clouds disturbed, then a check of the settled state. Prints a summary, then the
//! report as one JSON line; exits 1 when the check found something.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use vk_testkit::soak::{self, SoakConfig, cloud::Cloud};

/// Command-line flags.
#[derive(Parser, Debug)]
#[command(
    name = "vk-soak",
    about = "Kill every process, disturb every cloud, check nothing is lost",
    // scripts/soak.sh passes its defaults first and the caller's flags after: the last wins.
    args_override_self = true
)]
struct Cli {
    /// Seeds every choice (lifecycles, nodes, faults); default: the current time.
    #[arg(long)]
    seed: Option<u64>,
    /// Lifecycles to run.
    #[arg(long, default_value_t = 500)]
    lifecycles: usize,
    /// Longest drive time: `90s`, `30m`, `2h` or seconds.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    duration: Duration,
    /// Clouds, comma-separated: eci, aci, fargate.
    #[arg(long, default_value = "eci,aci,fargate", value_delimiter = ',')]
    providers: Vec<String>,
    /// Lifecycles run at the same time.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Share of cloud calls disturbed while faults are on.
    #[arg(long, default_value_t = 0.2)]
    cloud_fault_rate: f64,
    /// How long the settled state may take to converge.
    #[arg(long, default_value = "180s", value_parser = parse_duration)]
    settle_timeout: Duration,
    /// Where the logs go (kept); default: a temporary directory, kept only on failure.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Also write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("bad duration unit in {s:?}: s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    vk_testkit::init_bin_logging();
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let providers = cli
        .providers
        .iter()
        .map(|p| Cloud::parse(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = soak::run(SoakConfig {
        seed,
        lifecycles: cli.lifecycles,
        duration: cli.duration,
        providers,
        workers: cli.workers,
        cloud_fault_rate: cli.cloud_fault_rate,
        settle_timeout: cli.settle_timeout,
        log_dir: cli.log_dir,
        ..SoakConfig::default()
    })
    .await?;
    print!("{}", report.summary());
    let json = serde_json::to_string(&report)?;
    println!("{json}");
    if let Some(path) = cli.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !report.passed() {
        std::process::exit(1);
    }
    Ok(())
}
