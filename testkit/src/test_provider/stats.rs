//! Synthetic usage figures: each container uses CPU at a steerable rate while it runs, and has a
//! steerable working set from which the other memory figures derive.

use std::time::{Instant, SystemTime};

use podprovider_proto::v1::{ContainerStats, CpuUsage, MemoryUsage, PodStats};

use super::StoredPod;

/// CPU rate of a container whose usage was never set: 5 millicores.
pub const DEFAULT_NANO_CORES: u64 = 5_000_000;
/// Working set of a container whose usage was never set: 32 MiB.
pub const DEFAULT_WORKING_SET_BYTES: u64 = 32 * 1024 * 1024;
/// Page cache on top of the working set in `usage_bytes`: 4 MiB.
pub const CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// `usage_bytes` reported for a working set: the working set plus [`CACHE_BYTES`].
pub fn usage_bytes(working_set_bytes: u64) -> u64 {
    working_set_bytes.saturating_add(CACHE_BYTES)
}

/// `rss_bytes` reported for a working set: three quarters of it (the rest is active file cache).
pub fn rss_bytes(working_set_bytes: u64) -> u64 {
    working_set_bytes - working_set_bytes / 4
}

/// One container's figures.
pub(super) struct Usage {
    nano_cores: u64,
    working_set_bytes: u64,
    /// CPU time up to `since`, in core-nanoseconds.
    cumulative: u64,
    /// While running: when `cumulative` was last brought up to date.
    since: Option<Instant>,
}

impl Default for Usage {
    fn default() -> Self {
        Self {
            nano_cores: DEFAULT_NANO_CORES,
            working_set_bytes: DEFAULT_WORKING_SET_BYTES,
            cumulative: 0,
            since: None,
        }
    }
}

impl Usage {
    /// The container runs from now on: CPU time accrues.
    pub(super) fn start(&mut self) {
        self.sample();
        self.since.get_or_insert_with(Instant::now);
    }

    /// The container stopped: CPU time stays where it is.
    pub(super) fn stop(&mut self) {
        self.sample();
        self.since = None;
    }

    /// Changes the rate from now on (time so far accrues at the old rate).
    pub(super) fn set(&mut self, nano_cores: u64, working_set_bytes: u64) {
        self.sample();
        self.nano_cores = nano_cores;
        self.working_set_bytes = working_set_bytes;
    }

    /// Brings the cumulative CPU time up to now and returns it; it never decreases.
    fn sample(&mut self) -> u64 {
        if let Some(since) = self.since {
            let now = Instant::now();
            let elapsed = now.saturating_duration_since(since).as_nanos();
            let used = u128::from(self.nano_cores).saturating_mul(elapsed) / 1_000_000_000;
            self.cumulative = self
                .cumulative
                .saturating_add(u64::try_from(used).unwrap_or(u64::MAX));
            self.since = Some(now);
        }
        self.cumulative
    }
}

/// The figures of a running pod: its running containers in spec order, and their sums.
pub(super) fn pod_stats(stored: &mut StoredPod) -> PodStats {
    let time = prost_types::Timestamp::from(SystemTime::now());
    let mut containers = Vec::new();
    for spec in &stored.pod.containers {
        let Some(rt) = stored.containers.get_mut(&spec.name) else {
            continue;
        };
        let running = rt
            .current
            .as_ref()
            .is_some_and(|c| c.borrow().exit.is_none());
        if !running {
            continue;
        }
        let cumulative = rt.usage.sample();
        let ws = rt.usage.working_set_bytes;
        containers.push(ContainerStats {
            name: spec.name.clone(),
            time: Some(time),
            cpu: Some(CpuUsage {
                usage_nano_cores: Some(rt.usage.nano_cores),
                usage_core_nano_seconds: Some(cumulative),
            }),
            memory: Some(MemoryUsage {
                working_set_bytes: Some(ws),
                usage_bytes: Some(usage_bytes(ws)),
                rss_bytes: Some(rss_bytes(ws)),
            }),
        });
    }
    let sum = |f: fn(&ContainerStats) -> Option<u64>| -> u64 {
        containers.iter().filter_map(f).fold(0, u64::saturating_add)
    };
    PodStats {
        pod_ref: stored.status.pod_ref.clone(),
        time: Some(time),
        cpu: Some(CpuUsage {
            usage_nano_cores: Some(sum(|c| c.cpu.and_then(|c| c.usage_nano_cores))),
            usage_core_nano_seconds: Some(sum(|c| c.cpu.and_then(|c| c.usage_core_nano_seconds))),
        }),
        memory: Some(MemoryUsage {
            working_set_bytes: Some(sum(|c| c.memory.and_then(|m| m.working_set_bytes))),
            usage_bytes: Some(sum(|c| c.memory.and_then(|m| m.usage_bytes))),
            rss_bytes: Some(sum(|c| c.memory.and_then(|m| m.rss_bytes))),
        }),
        containers,
    }
}
