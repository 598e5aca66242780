//! Logs, traces and metrics, set up the same way in the shim and in every provider.
//!
//! - [`init`]: `tracing` to stderr (text, or JSON with the current span's fields), plus an
//!   OpenTelemetry OTLP/gRPC exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. `OTEL_SERVICE_NAME`,
//!   `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_TRACES_SAMPLER(_ARG)` are honoured by the SDK. The
//!   returned [`Telemetry`] flushes spans when shut down or dropped.
//! - [`propagation`]: W3C `traceparent` into and out of gRPC metadata and HTTP headers, so one trace
//!   crosses the shim, the provider and the cloud request.
//! - [`grpc`]: a tower layer for gRPC clients: one client span per call, `traceparent` injected,
//!   calls counted by method and code.
//! - [`metrics`]: a Prometheus registry served on `/metrics`.

pub mod grpc;
pub mod metrics;
pub mod propagation;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

/// Setting up telemetry failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OTLP exporter could not be built (e.g. an invalid endpoint).
    #[error("OpenTelemetry exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// A global subscriber was already installed.
    #[error("installing the log subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// Flushes and stops the trace exporter when dropped.
#[must_use = "dropping it stops the trace exporter"]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// Sends buffered spans and stops the exporter.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.tracer_provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {err}");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// Whether the environment asks for trace export.
pub fn otlp_configured() -> bool {
    env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
}

/// Installs the global subscriber: `filter` (RUST_LOG syntax, falling back to `info`), text or
/// JSON logs on stderr (colour only on a terminal), and OTLP trace export when configured, with
/// `service_name` unless `OTEL_SERVICE_NAME` says otherwise. Call inside a tokio runtime.
pub fn init(service_name: &str, json: bool, filter: &str) -> Result<Telemetry, Error> {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let tracer_provider = if otlp_configured() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?;
        let mut resource = Resource::builder();
        if !env_set("OTEL_SERVICE_NAME") {
            resource = resource.with_service_name(service_name.to_owned());
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        Some(provider)
    } else {
        None
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let otel = tracer_provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service_name.to_owned())));
    let ansi = std::io::stderr().is_terminal();
    let (text, json) = if json {
        let layer = fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr);
        (None, Some(layer))
    } else {
        let layer = fmt::layer().with_ansi(ansi).with_writer(std::io::stderr);
        (Some(layer), None)
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(text)
        .with(json)
        .try_init()?;
    Ok(Telemetry { tracer_provider })
}
