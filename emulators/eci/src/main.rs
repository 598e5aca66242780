//! `eci-emulator`: serves the emulated ECI API on one loopback listener.

use clap::Parser;
use eci_emulator::{Config, server};

#[derive(Parser, Debug)]
#[command(about = "Emulator of Alibaba Cloud ECI (2018-08-08) for tests")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    #[arg(long, default_value = "cn-hangzhou")]
    region: String,
    #[arg(long, default_value = "LTAI5tEmulatorKey0001")]
    access_key_id: String,
    #[arg(long, default_value = "EmulatorSecret0001EmulatorSecret")]
    access_key_secret: String,
    #[arg(long, default_value = "STS.EmulatorStsKey")]
    sts_access_key_id: String,
    #[arg(long, default_value = "EmulatorStsSecret0001")]
    sts_access_key_secret: String,
    #[arg(long, default_value = "EmulatorSecurityToken0001")]
    sts_token: String,
    /// Milliseconds a new container group stays Pending.
    #[arg(long, default_value_t = 300)]
    start_delay_ms: u64,
    /// Milliseconds between `heartbeat <n>` log lines of a running container.
    #[arg(long, default_value_t = 2000)]
    log_heartbeat_ms: u64,
    /// Probability (0..=1) that an API call is throttled.
    #[arg(long, default_value_t = 0.0)]
    throttle_rate: f64,
    /// Probability (0..=1) that an applied CreateContainerGroup / DeleteContainerGroup answers
    /// `ServiceUnavailable` (503) as if its answer had been lost.
    #[arg(long, default_value_t = 0.0)]
    lost_answer_rate: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = Config {
        region: args.region,
        access_key_id: args.access_key_id,
        access_key_secret: args.access_key_secret,
        sts_access_key_id: args.sts_access_key_id,
        sts_access_key_secret: args.sts_access_key_secret,
        sts_token: args.sts_token,
        start_delay_ms: args.start_delay_ms,
        log_heartbeat_ms: args.log_heartbeat_ms.max(1),
        throttle_rate: args.throttle_rate.clamp(0.0, 1.0),
        lost_answer_rate: args.lost_answer_rate.clamp(0.0, 1.0),
    };
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    server::serve(listener, config).await
}
