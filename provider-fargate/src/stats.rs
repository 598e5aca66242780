//! Usage figures (`GetStats`, so `/stats/summary`, `/metrics/resource` and `kubectl top`) from
//! CloudWatch Container Insights with enhanced observability: ECS has no usage API of its own.
//!
//! Per container, the metrics `ContainerCpuUtilized` ("The CPU units used by containers", unit
//! None, 1024 units = 1 vCPU) and `ContainerMemoryUtilized` ("The memory being used by
//! containers", unit Megabytes, i.e. MiB as ECS counts memory) in the namespace
//! `ECS/ContainerInsights`, with the dimension set `ContainerName`, `TaskDefinitionFamily`,
//! `ClusterName`, `TaskId` (the one the metric table of "Amazon ECS Container Insights with
//! enhanced observability metrics" lists for a task that is not part of a service). The newest
//! one-minute average of the last few minutes is the figure; a pod's figures are its app
//! containers' sums. The kubelet's `/metrics/resource` (what metrics-server reads) wants
//! cumulative CPU time, which Container Insights does not publish: each container's one-minute
//! averages are added up (average × 60 s) as they arrive, a counter that starts when the provider
//! first sees figures (a restart resets it, which Prometheus-style readers handle). Pure: the
//! CloudWatch call is in `client.rs`.

use std::collections::HashMap;

use podprovider_proto::v1::{ContainerStats, CpuUsage, MemoryUsage, PodRef, PodStats};

/// Container Insights' namespace.
pub const NAMESPACE: &str = "ECS/ContainerInsights";
/// CPU units a container used.
pub const CPU_METRIC: &str = "ContainerCpuUtilized";
/// MiB of memory a container used.
pub const MEMORY_METRIC: &str = "ContainerMemoryUtilized";
/// Container Insights publishes one data point a minute.
pub const PERIOD_SECONDS: i32 = 60;
/// How far back to look for the newest data point (they arrive a minute or two late).
pub const WINDOW_SECONDS: i64 = 600;
/// GetMetricData takes at most 500 queries per call.
pub const MAX_QUERIES: usize = 500;

/// A running pod's task, as the metrics name it.
#[derive(Clone, Debug)]
pub struct TaskRef {
    /// The pod.
    pub pod_ref: PodRef,
    /// `TaskId`: the last part of the task ARN.
    pub task_id: String,
    /// `TaskDefinitionFamily`.
    pub family: String,
    /// The app containers.
    pub containers: Vec<String>,
}

impl TaskRef {
    /// `TaskRef` of a task ARN and task definition ARN (`…:task-definition/<family>:<revision>`).
    pub fn new(pod_ref: PodRef, task_arn: &str, def_arn: &str, containers: Vec<String>) -> Self {
        let family = def_arn
            .rsplit_once("task-definition/")
            .map_or(def_arn, |(_, f)| f);
        let family = family.rsplit_once(':').map_or(family, |(f, _)| f);
        Self {
            pod_ref,
            task_id: task_arn.rsplit('/').next().unwrap_or(task_arn).to_owned(),
            family: family.to_owned(),
            containers,
        }
    }
}

/// Which figure a query fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Figure {
    /// CPU units.
    Cpu,
    /// MiB.
    Memory,
}

/// One GetMetricData `MetricStat` query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// Query `Id` (a lower-case letter first, as CloudWatch requires).
    pub id: String,
    /// Metric name.
    pub metric: &'static str,
    /// Dimensions, name and value.
    pub dimensions: Vec<(&'static str, String)>,
    /// Index of the pod in the request.
    pub pod: usize,
    /// Index of the container in the pod's `containers`.
    pub container: usize,
    /// What it measures.
    pub figure: Figure,
}

/// The queries for `tasks` in cluster `cluster` (its name, not ARN): two per container.
pub fn queries(cluster: &str, tasks: &[TaskRef]) -> Vec<Query> {
    let mut out = Vec::new();
    for (p, t) in tasks.iter().enumerate() {
        for (c, name) in t.containers.iter().enumerate() {
            for (figure, metric) in [(Figure::Cpu, CPU_METRIC), (Figure::Memory, MEMORY_METRIC)] {
                out.push(Query {
                    id: format!("q{}", out.len()),
                    metric,
                    dimensions: vec![
                        ("ClusterName", cluster.to_owned()),
                        ("TaskDefinitionFamily", t.family.clone()),
                        ("TaskId", t.task_id.clone()),
                        ("ContainerName", name.clone()),
                    ],
                    pod: p,
                    container: c,
                    figure,
                });
            }
        }
    }
    out
}

/// Nanocores of `units` ECS CPU units (1024 units = 1 core).
pub fn nanocores(units: f64) -> u64 {
    // Saturating float-to-int conversion; negative or NaN figures become 0.
    (units.max(0.0) * 1e9 / 1024.0).round() as u64
}

/// Bytes of `mib` MiB.
pub fn bytes(mib: f64) -> u64 {
    (mib.max(0.0) * 1024.0 * 1024.0).round() as u64
}

/// A container's newest (CPU units, MiB) and the time of the newest of them.
type Latest = (Option<f64>, Option<f64>, i64);

/// A container's cumulative CPU time: the one-minute averages added up so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuCounter {
    /// Epoch seconds of the newest data point counted.
    pub last: i64,
    /// Core-nanoseconds counted.
    pub core_nanos: u64,
}

impl CpuCounter {
    /// Counts the data points (CPU units, epoch seconds; any order) newer than the last counted.
    pub fn add(&mut self, points: &[(f64, i64)]) {
        let mut newer: Vec<&(f64, i64)> = points.iter().filter(|(_, t)| *t > self.last).collect();
        newer.sort_by_key(|(_, t)| *t);
        for &&(units, at) in &newer {
            // One data point is the average over one period.
            let ns = nanocores(units).saturating_mul(PERIOD_SECONDS.unsigned_abs().into());
            self.core_nanos = self.core_nanos.saturating_add(ns);
            self.last = at;
        }
    }
}

/// The figures of each task from `points` (query ID → data points (value, epoch seconds)):
/// the newest point is the figure, CPU points are also added to the container's counter in
/// `counters` (keyed by pod UID and container). Pods without any figure are `None`, to be left out
/// as the contract asks.
pub fn assemble(
    tasks: &[TaskRef],
    queries: &[Query],
    points: &HashMap<String, Vec<(f64, i64)>>,
    counters: &mut HashMap<(String, String), CpuCounter>,
) -> Vec<Option<PodStats>> {
    let mut out: Vec<Option<PodStats>> = vec![None; tasks.len()];
    let mut figures: Vec<Vec<Latest>> = tasks
        .iter()
        .map(|t| vec![(None, None, 0); t.containers.len()])
        .collect();
    let mut cumulative: HashMap<(usize, usize), u64> = HashMap::new();
    for q in queries {
        let Some(pts) = points.get(&q.id) else {
            continue;
        };
        let (Some(&(v, at)), Some(slot)) = (
            pts.iter().max_by_key(|(_, t)| *t),
            figures.get_mut(q.pod).and_then(|c| c.get_mut(q.container)),
        ) else {
            continue;
        };
        match q.figure {
            Figure::Cpu => {
                slot.0 = Some(v);
                let (Some(t), Some(name)) = (
                    tasks.get(q.pod),
                    tasks.get(q.pod).and_then(|t| t.containers.get(q.container)),
                ) else {
                    continue;
                };
                let counter = counters
                    .entry((t.pod_ref.uid.clone(), name.clone()))
                    .or_default();
                counter.add(pts);
                cumulative.insert((q.pod, q.container), counter.core_nanos);
            }
            Figure::Memory => slot.1 = Some(v),
        }
        slot.2 = slot.2.max(at);
    }
    for (p, t) in tasks.iter().enumerate() {
        let mut containers = Vec::new();
        for (c, name) in t.containers.iter().enumerate() {
            let (cpu, mem, at) = figures[p][c];
            if cpu.is_none() && mem.is_none() {
                continue;
            }
            containers.push(ContainerStats {
                name: name.clone(),
                time: Some(timestamp(at)),
                cpu: cpu.map(|u| CpuUsage {
                    usage_nano_cores: Some(nanocores(u)),
                    usage_core_nano_seconds: cumulative.get(&(p, c)).copied(),
                }),
                memory: mem.map(|m| MemoryUsage {
                    // Container Insights reports one memory figure; it stands for both.
                    working_set_bytes: Some(bytes(m)),
                    usage_bytes: Some(bytes(m)),
                    rss_bytes: None,
                }),
            });
        }
        if containers.is_empty() {
            continue;
        }
        let sum = |f: fn(&ContainerStats) -> Option<u64>| -> Option<u64> {
            containers
                .iter()
                .filter_map(f)
                .fold(None, |acc, v| Some(acc.unwrap_or(0u64).saturating_add(v)))
        };
        let cpu = sum(|c| c.cpu.as_ref().and_then(|u| u.usage_nano_cores));
        let cpu_total = sum(|c| c.cpu.as_ref().and_then(|u| u.usage_core_nano_seconds));
        let mem = sum(|c| c.memory.as_ref().and_then(|m| m.working_set_bytes));
        let newest = figures[p].iter().map(|f| f.2).max().unwrap_or(0);
        out[p] = Some(PodStats {
            pod_ref: Some(t.pod_ref.clone()),
            time: Some(timestamp(newest)),
            cpu: cpu.map(|n| CpuUsage {
                usage_nano_cores: Some(n),
                usage_core_nano_seconds: cpu_total,
            }),
            memory: mem.map(|b| MemoryUsage {
                working_set_bytes: Some(b),
                usage_bytes: Some(b),
                rss_bytes: None,
            }),
            containers,
        });
    }
    out
}

fn timestamp(secs: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: secs,
        nanos: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskRef {
        TaskRef::new(
            PodRef {
                namespace: "default".into(),
                name: "web".into(),
                uid: "u1".into(),
            },
            "arn:aws:ecs:us-east-1:123456789012:task/vk/0123abcd",
            "arn:aws:ecs:us-east-1:123456789012:task-definition/vk-1a2b-3c4d:7",
            vec!["app".into(), "side".into()],
        )
    }

    #[test]
    fn container_metrics_are_asked_with_the_standalone_task_dimensions() {
        let t = task();
        assert_eq!(
            (t.task_id.as_str(), t.family.as_str()),
            ("0123abcd", "vk-1a2b-3c4d")
        );
        let q = queries("vk", &[t]);
        assert_eq!(q.len(), 4);
        assert_eq!(
            q.iter()
                .map(|q| (q.id.as_str(), q.metric))
                .collect::<Vec<_>>(),
            [
                ("q0", "ContainerCpuUtilized"),
                ("q1", "ContainerMemoryUtilized"),
                ("q2", "ContainerCpuUtilized"),
                ("q3", "ContainerMemoryUtilized"),
            ]
        );
        assert_eq!(
            q[2].dimensions,
            [
                ("ClusterName", "vk".to_owned()),
                ("TaskDefinitionFamily", "vk-1a2b-3c4d".to_owned()),
                ("TaskId", "0123abcd".to_owned()),
                ("ContainerName", "side".to_owned()),
            ]
        );
    }

    #[test]
    fn cpu_units_and_mib_become_nanocores_and_bytes_summed_per_pod() {
        let tasks = [task()];
        let q = queries("vk", &tasks);
        let values: HashMap<String, Vec<(f64, i64)>> = [
            ("q0".to_owned(), vec![(256.0, 1_700_000_000)]),
            ("q1".to_owned(), vec![(100.0, 1_700_000_000)]),
            (
                "q2".to_owned(),
                vec![(51.2, 1_700_000_060), (1024.0, 1_700_000_000)],
            ),
            ("q3".to_owned(), vec![(28.0, 1_700_000_060)]),
        ]
        .into();
        let mut counters = HashMap::new();
        let stats = assemble(&tasks, &q, &values, &mut counters);
        let pod = stats[0].as_ref().expect("figures");
        // 256 units = 0.25 core; 51.2 units = 0.05 core.
        assert_eq!(
            pod.containers[0]
                .cpu
                .as_ref()
                .and_then(|c| c.usage_nano_cores),
            Some(250_000_000)
        );
        assert_eq!(
            pod.containers[1]
                .cpu
                .as_ref()
                .and_then(|c| c.usage_nano_cores),
            Some(50_000_000)
        );
        assert_eq!(
            pod.cpu.as_ref().and_then(|c| c.usage_nano_cores),
            Some(300_000_000)
        );
        assert_eq!(
            pod.memory.as_ref().and_then(|m| m.working_set_bytes),
            Some(128 * 1024 * 1024)
        );
        assert_eq!(pod.time.as_ref().map(|t| t.seconds), Some(1_700_000_060));
        assert_eq!(
            pod.containers[0].time.as_ref().map(|t| t.seconds),
            Some(1_700_000_000)
        );
        // Cumulative CPU: each one-minute average × 60 s; side had 1 core, then 0.05.
        let total = |c: &ContainerStats| c.cpu.as_ref().and_then(|u| u.usage_core_nano_seconds);
        assert_eq!(total(&pod.containers[0]), Some(15_000_000_000));
        assert_eq!(total(&pod.containers[1]), Some(63_000_000_000));
        assert_eq!(
            pod.cpu.as_ref().and_then(|u| u.usage_core_nano_seconds),
            Some(78_000_000_000)
        );
        // A later answer adds only newer points: the counter never goes back.
        let later: HashMap<String, Vec<(f64, i64)>> = [(
            "q0".to_owned(),
            vec![(512.0, 1_700_000_060), (256.0, 1_700_000_000)],
        )]
        .into();
        let again = assemble(&tasks, &q, &later, &mut counters);
        let pod = again[0].as_ref().expect("figures");
        assert_eq!(total(&pod.containers[0]), Some(45_000_000_000));
    }

    #[test]
    fn the_cpu_counter_counts_each_data_point_once() {
        let mut c = CpuCounter::default();
        c.add(&[(1024.0, 120), (512.0, 60)]);
        assert_eq!(
            c,
            CpuCounter {
                last: 120,
                core_nanos: 90_000_000_000
            }
        );
        c.add(&[(1024.0, 120), (2048.0, 60)]);
        assert_eq!(
            c.core_nanos, 90_000_000_000,
            "old points are not counted again"
        );
        c.add(&[(f64::NAN, 180)]);
        assert_eq!(
            c,
            CpuCounter {
                last: 180,
                core_nanos: 90_000_000_000
            }
        );
    }

    #[test]
    fn a_pod_without_figures_is_left_out_and_nonsense_figures_are_zero() {
        let tasks = [task()];
        let q = queries("vk", &tasks);
        let mut counters = HashMap::new();
        assert!(assemble(&tasks, &q, &HashMap::new(), &mut counters)[0].is_none());
        let only_mem: HashMap<String, Vec<(f64, i64)>> =
            [("q1".to_owned(), vec![(-5.0, 1)])].into();
        let pod = assemble(&tasks, &q, &only_mem, &mut counters)[0]
            .clone()
            .expect("memory only");
        assert_eq!(pod.containers.len(), 1);
        assert!(pod.cpu.is_none());
        assert_eq!(pod.memory.and_then(|m| m.working_set_bytes), Some(0));
        assert_eq!(nanocores(f64::NAN), 0);
        assert_eq!(bytes(f64::INFINITY), u64::MAX);
    }
}
