//! The shim's Prometheus metrics, served on `--metrics-address` at `/metrics`.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use vk_telemetry::grpc::GrpcMetrics;

/// A pod phase label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Unknown`.
    pub phase: String,
}

/// A reconcile outcome label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// Every metric the shim exports.
#[derive(Clone)]
pub struct Metrics {
    /// Provider calls by method and code (client side).
    pub grpc: GrpcMetrics,
    /// Pods bound to this node, by phase.
    pub pods: Family<PhaseLabels, Gauge>,
    /// Reconcile durations by outcome.
    pub reconcile: Family<OutcomeLabels, Histogram>,
    /// Reconciles running now.
    pub in_flight: Gauge,
    /// Pods bound to this node that the provider does not run yet (the create backlog).
    pub backlog: Gauge,
    /// Pods whose latest change the controller has not reconciled yet.
    pub queue_depth: Gauge,
    /// `Normal` events dropped because the event queue was full.
    pub events_dropped: Counter,
}

impl Metrics {
    /// Registers everything in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let grpc = GrpcMetrics::register(registry, "client");
        let pods = Family::<PhaseLabels, Gauge>::default();
        registry.register("vk_pods", "Pods bound to this node, by phase", pods.clone());
        let reconcile = Family::<OutcomeLabels, Histogram>::new_with_constructor(
            vk_telemetry::metrics::latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "vk_reconcile_duration_seconds",
            "Time spent reconciling one pod, by outcome",
            reconcile.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "vk_reconciles_in_flight",
            "Pod reconciles running now",
            in_flight.clone(),
        );
        let backlog = Gauge::default();
        registry.register(
            "vk_pods_awaiting_provider",
            "Pods bound to this node, not terminal, that the provider does not run yet",
            backlog.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "vk_reconcile_queue_depth",
            "Pods whose latest change (resourceVersion) has not been reconciled yet",
            queue_depth.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "vk_events_dropped",
            "Normal events dropped because the event queue was full",
            events_dropped.clone(),
        );
        Self {
            events_dropped,
            grpc,
            pods,
            reconcile,
            in_flight,
            backlog,
            queue_depth,
        }
    }
}
