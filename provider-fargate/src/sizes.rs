//! Valid Fargate task sizes (Linux), and rounding a pod's needs up to one.

use provider_common::resources::{PodResources, bytes_to_mib_ceil, smallest_fit};

/// One row of the Fargate size table: CPU units (1024 = 1 vCPU) and the memory (MiB) allowed with it.
struct Row {
    cpu: u64,
    min_mib: u64,
    max_mib: u64,
    step_mib: u64,
    // 0.25 vCPU allows 512, 1024 and 2048 only: not a plain step.
    extra: &'static [u64],
}

const ROWS: &[Row] = &[
    Row {
        cpu: 256,
        min_mib: 0,
        max_mib: 0,
        step_mib: 1,
        extra: &[512, 1024, 2048],
    },
    Row {
        cpu: 512,
        min_mib: 1024,
        max_mib: 4096,
        step_mib: 1024,
        extra: &[],
    },
    Row {
        cpu: 1024,
        min_mib: 2048,
        max_mib: 8192,
        step_mib: 1024,
        extra: &[],
    },
    Row {
        cpu: 2048,
        min_mib: 4096,
        max_mib: 16384,
        step_mib: 1024,
        extra: &[],
    },
    Row {
        cpu: 4096,
        min_mib: 8192,
        max_mib: 30720,
        step_mib: 1024,
        extra: &[],
    },
    Row {
        cpu: 8192,
        min_mib: 16384,
        max_mib: 61440,
        step_mib: 4096,
        extra: &[],
    },
    Row {
        cpu: 16384,
        min_mib: 32768,
        max_mib: 122_880,
        step_mib: 8192,
        extra: &[],
    },
];

/// Every valid (CPU units, memory MiB) pair, cheapest first.
pub fn valid_sizes() -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for row in ROWS {
        out.extend(row.extra.iter().map(|&m| (row.cpu, m)));
        if row.max_mib > 0 {
            let mut m = row.min_mib;
            while m <= row.max_mib {
                out.push((row.cpu, m));
                m += row.step_mib;
            }
        }
    }
    out
}

/// A task size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskSize {
    /// CPU units (1024 = 1 vCPU).
    pub cpu: u64,
    /// Memory in MiB.
    pub memory_mib: u64,
}

/// The pod is bigger than the largest Fargate task.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the pod needs {cpu_millis}m CPU and {memory_mib} MiB of memory; the largest Fargate task has 16 vCPU and 120 GiB"
)]
pub struct TooLarge {
    /// What the pod needs, in millicores.
    pub cpu_millis: u64,
    /// What the pod needs, in MiB.
    pub memory_mib: u64,
}

/// The smallest valid Fargate size with at least the pod's CPU and memory.
pub fn round_up(needs: PodResources) -> Result<TaskSize, TooLarge> {
    // Millicores to CPU units: 1000m = 1024 units.
    // Saturating: an absurd request is TooLarge, not an overflow (found by fuzzing).
    let cpu_units = needs.cpu_millis.saturating_mul(1024).div_ceil(1000);
    let memory_mib = bytes_to_mib_ceil(needs.memory_bytes);
    smallest_fit(&valid_sizes(), cpu_units, memory_mib)
        .map(|(cpu, memory_mib)| TaskSize { cpu, memory_mib })
        .ok_or(TooLarge {
            cpu_millis: needs.cpu_millis,
            memory_mib,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn size(cpu_millis: u64, memory_mib: u64) -> Result<TaskSize, TooLarge> {
        round_up(PodResources {
            cpu_millis,
            memory_bytes: memory_mib * MIB,
        })
    }

    #[test]
    fn every_valid_row_is_in_the_table_and_maps_to_itself() {
        // The published table, row by row: (vCPU units, [memory MiB...]).
        let mut want: Vec<(u64, u64)> = vec![(256, 512), (256, 1024), (256, 2048)];
        want.extend((1..=4).map(|g| (512, g * 1024)));
        want.extend((2..=8).map(|g| (1024, g * 1024)));
        want.extend((4..=16).map(|g| (2048, g * 1024)));
        want.extend((8..=30).map(|g| (4096, g * 1024)));
        want.extend((4..=15).map(|g| (8192, g * 4096)));
        want.extend((4..=15).map(|g| (16384, g * 8192)));
        assert_eq!(valid_sizes(), want);
        for (cpu, mem) in want {
            let millis = cpu * 1000 / 1024;
            assert_eq!(
                size(millis, mem),
                Ok(TaskSize {
                    cpu,
                    memory_mib: mem
                }),
                "{cpu}/{mem}"
            );
        }
    }

    #[test]
    fn rounds_up_to_the_next_valid_size() {
        let t = |cpu, memory_mib| Ok(TaskSize { cpu, memory_mib });
        assert_eq!(size(0, 0), t(256, 512), "no resources: smallest task");
        assert_eq!(size(100, 600), t(256, 1024));
        assert_eq!(
            size(250, 2049),
            t(512, 3072),
            "memory forces a bigger CPU row"
        );
        assert_eq!(size(1000, 0), t(1024, 2048), "1 vCPU has at least 2 GiB");
        assert_eq!(size(1001, 0), t(2048, 4096));
        assert_eq!(size(4001, 0), t(8192, 16384), "8 vCPU row");
        assert_eq!(size(8000, 16385), t(8192, 20480), "8 vCPU steps by 4 GiB");
        assert_eq!(size(4000, 30721), t(8192, 32768));
        assert_eq!(size(8001, 0), t(16384, 32768), "16 vCPU row");
        assert_eq!(
            size(16000, 32769),
            t(16384, 40960),
            "16 vCPU steps by 8 GiB"
        );
        assert_eq!(size(100, 61441), t(16384, 65536));
        assert_eq!(size(16000, 122_880), t(16384, 122_880));
    }

    #[test]
    fn too_large_is_an_error_that_says_so() {
        let err = size(16001, 1).expect_err("17 vCPU");
        assert!(err.to_string().contains("largest Fargate task"), "{err}");
        assert!(size(1000, 122_881).is_err());
    }

    /// Found by fuzzing (taskdef's fuzz_any_pod_is_planned_or_refused): a huge CPU request
    /// overflowed the conversion to CPU units.
    #[test]
    fn a_huge_request_is_too_large_not_an_overflow() {
        let needs = PodResources {
            cpu_millis: u64::MAX,
            memory_bytes: u64::MAX,
        };
        assert!(round_up(needs).is_err());
    }
}
