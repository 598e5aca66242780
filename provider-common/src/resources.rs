//! Resource arithmetic shared by the providers: what a pod needs as a whole, and rounding up to the
//! sizes a cloud sells.

use podprovider_proto::v1::{Container, Pod, Resources};

/// CPU and memory a pod needs as a whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodResources {
    /// Millicores.
    pub cpu_millis: u64,
    /// Bytes.
    pub memory_bytes: u64,
}

/// What one container needs: its limit where set (clouds size the sandbox to what may be used),
/// else its request.
pub fn container_resources(c: &Container) -> PodResources {
    let reqs = c.resources.as_ref();
    let pick = |f: fn(&Resources) -> Option<i64>| -> u64 {
        let limit = reqs.and_then(|r| r.limits.as_ref()).and_then(f);
        let request = reqs.and_then(|r| r.requests.as_ref()).and_then(f);
        limit
            .or(request)
            .map_or(0, |v| u64::try_from(v).unwrap_or(0))
    };
    PodResources {
        cpu_millis: pick(|r| r.cpu_millis),
        memory_bytes: pick(|r| r.memory_bytes),
    }
}

/// What a pod needs as Kubernetes computes it: the sum over app containers, or the largest init
/// container if that is more (init containers run one at a time, before the app containers).
pub fn pod_resources(pod: &Pod) -> PodResources {
    let mut total = PodResources::default();
    for c in &pod.containers {
        let r = container_resources(c);
        // Saturating: absurd requests must become a "too large" refusal, not an overflow.
        total.cpu_millis = total.cpu_millis.saturating_add(r.cpu_millis);
        total.memory_bytes = total.memory_bytes.saturating_add(r.memory_bytes);
    }
    for c in &pod.init_containers {
        let r = container_resources(c);
        total.cpu_millis = total.cpu_millis.max(r.cpu_millis);
        total.memory_bytes = total.memory_bytes.max(r.memory_bytes);
    }
    total
}

/// `value` rounded up to a multiple of `step` (`step` 0 leaves it unchanged).
pub fn round_up(value: u64, step: u64) -> u64 {
    if step == 0 {
        return value;
    }
    value.div_ceil(step).saturating_mul(step)
}

/// Bytes as whole MiB, rounded up.
pub fn bytes_to_mib_ceil(bytes: u64) -> u64 {
    bytes.div_ceil(1024 * 1024)
}

/// The first of `sizes` (ordered cheapest first) with at least `cpu` and `mem`; `None` when the
/// largest is too small. Units are the caller's.
pub fn smallest_fit(sizes: &[(u64, u64)], cpu: u64, mem: u64) -> Option<(u64, u64)> {
    sizes.iter().copied().find(|&(c, m)| c >= cpu && m >= mem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use podprovider_proto::v1::ResourceRequirements;

    fn container(req: (i64, i64), limit: Option<(i64, i64)>) -> Container {
        let res = |(cpu, mem): (i64, i64)| Resources {
            cpu_millis: Some(cpu),
            memory_bytes: Some(mem),
            ..Default::default()
        };
        Container {
            resources: Some(ResourceRequirements {
                requests: Some(res(req)),
                limits: limit.map(res),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_needs_sum_of_apps_or_largest_init() {
        let pod = Pod {
            containers: vec![
                container((250, 100), None),
                container((250, 100), Some((500, 300))),
            ],
            init_containers: vec![container((2000, 10), None)],
            ..Default::default()
        };
        assert_eq!(
            pod_resources(&pod),
            PodResources {
                cpu_millis: 2000,
                memory_bytes: 400
            }
        );
        assert_eq!(pod_resources(&Pod::default()), PodResources::default());
    }

    #[test]
    fn rounding() {
        assert_eq!(round_up(0, 256), 0);
        assert_eq!(round_up(1, 256), 256);
        assert_eq!(round_up(256, 256), 256);
        assert_eq!(round_up(257, 256), 512);
        assert_eq!(bytes_to_mib_ceil(1), 1);
        assert_eq!(bytes_to_mib_ceil(1024 * 1024), 1);
        assert_eq!(smallest_fit(&[(1, 1), (2, 4)], 2, 3), Some((2, 4)));
        assert_eq!(smallest_fit(&[(1, 1)], 2, 1), None);
    }

    /// Found by fuzzing (provider-eci's fuzz_any_pod_is_planned_or_refused): two huge requests
    /// overflowed the sum.
    #[test]
    fn huge_requests_saturate_instead_of_overflowing() {
        let huge = container((i64::MAX, i64::MAX), None);
        let pod = Pod {
            containers: vec![huge; 3],
            ..Default::default()
        };
        let r = pod_resources(&pod);
        assert_eq!((r.cpu_millis, r.memory_bytes), (u64::MAX, u64::MAX));
        assert_eq!(round_up(u64::MAX, 256), u64::MAX);
    }
}
