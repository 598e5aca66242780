//! Logs and traces shared by the providers: `RUST_LOG`-style filter, text or JSON lines on stderr,
//! and OTLP trace export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (see [`vk_telemetry`]).

use clap::ValueEnum;

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the current span's fields.
    Json,
}

/// Installs the global subscriber for `service` (the default `service.name` of its spans).
/// `filter` uses `RUST_LOG` syntax, e.g. `info,provider_fargate=debug`. Keep the returned guard
/// alive until exit: dropping it flushes spans. `None` when a subscriber was already installed
/// (e.g. by a test) or the exporter could not be set up (which is reported on stderr).
pub fn init(service: &str, format: LogFormat, filter: &str) -> Option<vk_telemetry::Telemetry> {
    match vk_telemetry::init(service, format == LogFormat::Json, filter) {
        Ok(t) => Some(t),
        Err(vk_telemetry::Error::Subscriber(_)) => None,
        Err(err) => {
            eprintln!("telemetry: {err}; continuing without trace export");
            None
        }
    }
}
