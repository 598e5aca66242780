//! ECI's vCPU/memory specifications (the combinations `CreateContainerGroup` accepts with
//! `Cpu`/`Memory`, from the "Specifications of vCPU and memory" page of the ECI documentation,
//! help.aliyun.com/document_detail/114662.html, the table supported in every region; the extra
//! sizes of some regions, which spot groups cannot use, are left out), and rounding a pod's need
//! up to the cheapest one that fits.

use provider_common::resources;

/// (vCPU in millicores, memory in MiB), cheapest first.
const SIZES: &[(u64, &[u64])] = &[
    (250, &[512, 1024]),
    (500, &[1024, 2048]),
    (1000, &[2048, 4096, 8192]),
    (2000, &[1024, 2048, 4096, 8192, 16384]),
    (4000, &[2048, 4096, 8192, 16384, 32768]),
    (8000, &[4096, 8192, 16384, 32768, 65536]),
    (12000, &[12288, 24576, 49152, 98304]),
    (16000, &[16384, 32768, 65536, 131072]),
    (24000, &[24576, 49152, 98304, 196608]),
    (32000, &[32768, 65536, 131072, 262144]),
    (52000, &[98304, 196608, 393216]),
    (64000, &[131072, 262144, 524288]),
];

/// The largest size (vCPU, GiB), for messages.
pub const LARGEST: (u64, u64) = (64, 512);

/// The cheapest size with at least `cpu_millis` and `memory_bytes`, as (vCPU, GiB) for
/// `Cpu`/`Memory`; `None` when nothing is big enough.
pub fn fit(cpu_millis: u64, memory_bytes: u64) -> Option<(f64, f64)> {
    let mem_mib = resources::bytes_to_mib_ceil(memory_bytes);
    let all: Vec<(u64, u64)> = SIZES
        .iter()
        .flat_map(|(c, ms)| ms.iter().map(move |m| (*c, *m)))
        .collect();
    // Cheapest ≈ fewest vCPU, then least memory: the table's order.
    resources::smallest_fit(&all, cpu_millis, mem_mib)
        .map(|(c, m)| (c as f64 / 1000.0, m as f64 / 1024.0))
}

/// Bytes as GiB for a container's `Memory`, rounded up to 0.01 GiB.
pub fn gib(bytes: u64) -> f64 {
    let mib = resources::bytes_to_mib_ceil(bytes);
    (mib * 100).div_ceil(1024) as f64 / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn needs_round_up_to_a_documented_size() {
        assert_eq!(fit(100, 128 * MIB), Some((0.25, 0.5)));
        assert_eq!(fit(250, 600 * MIB), Some((0.25, 1.0)));
        assert_eq!(fit(500, 1536 * MIB), Some((0.5, 2.0)));
        assert_eq!(fit(600, 0), Some((1.0, 2.0)));
        assert_eq!(fit(1000, 10 * 1024 * MIB), Some((2.0, 16.0)));
        assert_eq!(fit(3000, 0), Some((4.0, 2.0)));
        assert_eq!(fit(64_000, 512 * 1024 * MIB), Some((64.0, 512.0)));
        assert_eq!(fit(65_000, 0), None);
        assert_eq!(fit(1000, 600 * 1024 * MIB), None);
    }

    /// The documented table's 4 vCPU row is 2, 4, 8, 16 and 32 GiB (`Cpu`=4, `Memory`=2 is a
    /// valid CreateContainerGroup size): 4 vCPU with little memory is not rounded up to 4 GiB.
    #[test]
    fn four_vcpu_with_2_gib_is_a_size() {
        assert_eq!(fit(4000, 2 * 1024 * MIB), Some((4.0, 2.0)));
        assert_eq!(fit(3500, 1536 * MIB), Some((4.0, 2.0)));
        assert_eq!(fit(4000, 2 * 1024 * MIB + 1), Some((4.0, 4.0)));
        let row = SIZES.iter().find(|(c, _)| *c == 4000).map(|(_, m)| *m);
        assert_eq!(row, Some(&[2048, 4096, 8192, 16384, 32768][..]));
    }

    #[test]
    fn container_memory_in_gib() {
        assert_eq!(gib(1536 * MIB), 1.5);
        assert_eq!(gib(512 * MIB), 0.5);
        assert_eq!(gib(100 * MIB), 0.1);
    }
}
