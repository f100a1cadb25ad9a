//! The cost model: for a request of a given size, is the GPU path (copy in,
//! round trip through the helper, copy out) worth it against the CPU code the
//! caller already has?
//!
//! Pure integer arithmetic (no floating point, no allocation, no `u128`
//! division), so that the kernel module can run it at load time from what it
//! measured (its own CPU code and copies) and what the helper published (its
//! GPU path).
//!
//! The GPU path costs CPU time on three counts: the submitter copies the
//! input into the region and the output out of it (`copy_num / copy_den`
//! bytes copied per payload byte, at `copy_mbps`), and the helper's serving
//! thread is busy while its requests move, about one core at `gpu_mbps`
//! (measured: ~1.0 helper core at the ring's full rate). The CPU path costs
//! its own compute, at `cpu_mbps` per core. The GPU path is chosen only when
//! it costs less CPU time **and** is not slower (latency: the round trip plus
//! the transfer, against computing in place), and only from the helper's
//! measured crossover up: smaller requests would run on the helper's CPU
//! worker, which is never better than the caller's own code.
//!
//! Units: rates in MB/s (10^6 bytes per second, i.e. bytes per microsecond),
//! times in nanoseconds, sizes in bytes. Sizes up to [`MAX_SIZE`] and rates up
//! to 10^9 MB/s keep every product inside `u64`.

/// Largest request size the model takes (16 GiB); larger sizes are clamped.
pub const MAX_SIZE: u64 = 1 << 34;

/// What the model decides from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inputs {
    /// The CPU path (the caller's best code) on one core, MB/s.
    pub cpu_mbps: u64,
    /// One core's copy rate between caller buffers and the region, out of
    /// cache, MB/s.
    pub copy_mbps: u64,
    /// Bytes copied per payload byte, numerator (AES in and out: 2/1; RAID6
    /// gen over `n` disks: the data in and P, Q out, `n / (n - 2)`).
    pub copy_num: u32,
    /// Bytes copied per payload byte, denominator (non-zero).
    pub copy_den: u32,
    /// The GPU path's throughput for large requests, MB/s.
    pub gpu_mbps: u64,
    /// A small request's round trip on the GPU path (submission to
    /// completion), ns.
    pub gpu_rtt_ns: u64,
    /// The helper's crossover: smaller requests run on its CPU worker, bytes.
    pub crossover: u64,
}

/// Why the model chose what it chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Below the helper's crossover: the helper would run it on its CPU.
    BelowCrossover,
    /// The copies and the helper cost more CPU time than the CPU path.
    CostsMoreCpu,
    /// Cheaper in CPU time, but the round trip makes it slower.
    Slower,
    /// Cheaper and not slower: the GPU path.
    Gpu,
    /// An input is zero or out of range: the CPU path, always safe.
    BadInputs,
}

impl Reason {
    /// A short name, for log lines.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::BelowCrossover => "below crossover",
            Reason::CostsMoreCpu => "costs more cpu",
            Reason::Slower => "slower",
            Reason::Gpu => "gpu",
            Reason::BadInputs => "bad inputs",
        }
    }
}

/// The decision for one request size, with the numbers behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Request size, bytes.
    pub size: u64,
    /// Send it on the GPU path.
    pub gpu: bool,
    /// Why.
    pub reason: Reason,
    /// CPU time of the CPU path (= its latency), ns.
    pub cpu_ns: u64,
    /// CPU time of the GPU path: copies plus the helper, ns.
    pub gpu_cpu_ns: u64,
    /// Of which the copies, ns.
    pub copy_ns: u64,
    /// Latency of the GPU path: round trip, transfer and copies, ns.
    pub gpu_latency_ns: u64,
}

impl Decision {
    /// CPU time of the GPU path per CPU time of the CPU path, in thousandths
    /// (1000: equal; 4300: the GPU path costs 4.3 times as much).
    pub const fn cost_ratio_milli(&self) -> u64 {
        if self.cpu_ns == 0 {
            return u64::MAX;
        }
        self.gpu_cpu_ns.saturating_mul(1000) / self.cpu_ns
    }
}

/// Nanoseconds to move `bytes` at `mbps` MB/s (rounded up; 1 MB/s = 1 B/µs).
const fn ns_at(bytes: u64, mbps: u64) -> u64 {
    bytes.saturating_mul(1000).div_ceil(mbps)
}

/// The decision for a request of `size` bytes.
pub const fn decide(i: &Inputs, size: u64) -> Decision {
    let size = if size > MAX_SIZE { MAX_SIZE } else { size };
    let bad = i.cpu_mbps == 0
        || i.copy_mbps == 0
        || i.gpu_mbps == 0
        || i.copy_den == 0
        || i.cpu_mbps > 1_000_000_000
        || i.copy_mbps > 1_000_000_000
        || i.gpu_mbps > 1_000_000_000
        || i.copy_num > 1 << 16
        || i.copy_den > 1 << 16;
    if bad {
        return Decision {
            size,
            gpu: false,
            reason: Reason::BadInputs,
            cpu_ns: 0,
            gpu_cpu_ns: 0,
            copy_ns: 0,
            gpu_latency_ns: 0,
        };
    }
    let cpu_ns = ns_at(size, i.cpu_mbps);
    let copied = size.saturating_mul(i.copy_num as u64) / i.copy_den as u64;
    let copy_ns = ns_at(copied, i.copy_mbps);
    let transfer_ns = ns_at(size, i.gpu_mbps);
    let gpu_cpu_ns = copy_ns.saturating_add(transfer_ns);
    let gpu_latency_ns = i
        .gpu_rtt_ns
        .saturating_add(transfer_ns)
        .saturating_add(copy_ns);
    let reason = if size < i.crossover {
        Reason::BelowCrossover
    } else if gpu_cpu_ns >= cpu_ns {
        Reason::CostsMoreCpu
    } else if gpu_latency_ns > cpu_ns {
        Reason::Slower
    } else {
        Reason::Gpu
    };
    Decision {
        size,
        gpu: matches!(reason, Reason::Gpu),
        reason,
        cpu_ns,
        gpu_cpu_ns,
        copy_ns,
        gpu_latency_ns,
    }
}

/// The smallest power-of-two size from `min` up to `max` (both bytes) that
/// the model sends on the GPU path, if any: the threshold a service uses
/// (the decision is monotone in size above the crossover: CPU time is linear
/// in size on both paths, and the round trip weighs less as size grows).
pub const fn threshold(i: &Inputs, min: u64, max: u64) -> Option<u64> {
    let mut s = if min == 0 { 1 } else { min.next_power_of_two() };
    while s <= max && s <= MAX_SIZE {
        if decide(i, s).gpu {
            return Some(s);
        }
        s *= 2;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;

    /// The GPU machine (nvidia-h200 host, Xeon with VAES): the kernel's
    /// xts-aes-vaes-avx10_512 ~12 GB/s per core (cited), memcpy out of cache
    /// ~6 GB/s, the ring ~46 GB/s, a 4 KiB round trip ~30 µs, crossover 1 MiB.
    fn h200_vaes() -> Inputs {
        Inputs {
            cpu_mbps: 12_000,
            copy_mbps: 6_000,
            copy_num: 2,
            copy_den: 1,
            gpu_mbps: 46_000,
            gpu_rtt_ns: 30_000,
            crossover: MIB,
        }
    }

    const SIZES: [u64; 6] = [4 * KIB, 64 * KIB, 512 * KIB, MIB, 16 * MIB, 256 * MIB];

    #[test]
    fn vaes_cpu_never_sends_aes_to_the_gpu() {
        let i = h200_vaes();
        for s in SIZES {
            let d = decide(&i, s);
            assert!(!d.gpu, "{d:?}");
            let want = if s < MIB {
                Reason::BelowCrossover
            } else {
                Reason::CostsMoreCpu
            };
            assert_eq!(d.reason, want, "{s}");
        }
        // 16 MiB: CPU 16777216 B / 12000 B/µs = 1398.1 µs; copies 2 x 16 MiB
        // at 6000 B/µs = 5592.4 µs, the helper 364.7 µs: 5957.1 µs, 4.26 x.
        let d = decide(&i, 16 * MIB);
        assert_eq!(d.cpu_ns, 1_398_102);
        assert_eq!(d.copy_ns, 5_592_406);
        assert_eq!(d.gpu_cpu_ns, 5_592_406 + 364_723);
        assert_eq!(d.cost_ratio_milli(), 4260);
        assert_eq!(threshold(&i, 512, 1 << 30), None);
    }

    /// The same machine for RAID6 gen over 16 disks: lib/raid6's avx512
    /// gen_syndrome ~54 GB/s per core (cited, Skylake-W); copies 16/14 of the
    /// data; the ring 52.7 GB/s; round trip 24.6 µs; crossover 4 MiB.
    #[test]
    fn raid6_on_avx512_stays_on_the_cpu() {
        let i = Inputs {
            cpu_mbps: 54_000,
            copy_mbps: 6_000,
            copy_num: 16,
            copy_den: 14,
            gpu_mbps: 52_700,
            gpu_rtt_ns: 24_600,
            crossover: 4 * MIB,
        };
        for s in SIZES {
            assert!(!decide(&i, s).gpu, "{s}");
        }
        // Even the copy in alone costs more than computing P and Q.
        let d = decide(&i, 16 * MIB);
        assert!(d.copy_ns > d.cpu_ns, "{d:?}");
        assert_eq!(d.reason, Reason::CostsMoreCpu);
    }

    /// A CPU with AES-NI but no VAES (~4.5 GB/s XTS per core): still the CPU,
    /// the two copies alone (2 / 6 GB/s = 0.33 ns/B) cost more than AES
    /// (0.22 ns/B).
    #[test]
    fn aesni_cpu_keeps_aes() {
        let i = Inputs {
            cpu_mbps: 4_500,
            ..h200_vaes()
        };
        for s in SIZES {
            let d = decide(&i, s);
            assert!(!d.gpu, "{d:?}");
        }
        let d = decide(&i, 16 * MIB);
        assert_eq!(d.reason, Reason::CostsMoreCpu);
        assert!(d.copy_ns > d.cpu_ns);
        assert_eq!(threshold(&i, 512, 1 << 30), None);
    }

    /// A CPU without AES-NI (table AES ~0.2 GB/s per core) with the same GPU
    /// path, crossover measured lower (16 KiB): the GPU path from 16 KiB up;
    /// 4 KiB would be below the crossover, and also slower (30 µs round trip
    /// against 20.5 µs of CPU).
    #[test]
    fn no_aesni_sends_large_requests_to_the_gpu() {
        let i = Inputs {
            cpu_mbps: 200,
            crossover: 16 * KIB,
            ..h200_vaes()
        };
        let d = decide(&i, 4 * KIB);
        assert!(!d.gpu);
        assert_eq!(d.reason, Reason::BelowCrossover);
        assert_eq!(d.cpu_ns, 20_480);
        // Without the crossover, 4 KiB is cheaper in CPU time but slower.
        let d = decide(&Inputs { crossover: 0, ..i }, 4 * KIB);
        assert_eq!(d.reason, Reason::Slower);
        assert!(d.gpu_cpu_ns < d.cpu_ns && d.gpu_latency_ns > d.cpu_ns);
        for s in [16 * KIB, 64 * KIB, MIB, 16 * MIB, 256 * MIB] {
            let d = decide(&i, s);
            assert!(d.gpu, "{d:?}");
            assert_eq!(d.reason, Reason::Gpu);
            // Copies 0.33 ns/B + helper 0.02 against 5 ns/B: 0.07 x.
            assert!(d.cost_ratio_milli() < 80, "{d:?}");
        }
        assert_eq!(threshold(&i, 512, 1 << 30), Some(16 * KIB));
        // Crossover 0: the latency bound alone, 30 µs / (5 - 0.355 ns/B) ≈ 6.5 KB.
        let free = Inputs { crossover: 0, ..i };
        assert_eq!(threshold(&free, 512, 1 << 30), Some(8 * KIB));
        assert!(!decide(&free, 6 * KIB).gpu && decide(&free, 7 * KIB).gpu);
    }

    #[test]
    fn bad_inputs_keep_the_cpu() {
        let good = h200_vaes();
        for i in [
            Inputs {
                cpu_mbps: 0,
                ..good
            },
            Inputs {
                copy_mbps: 0,
                ..good
            },
            Inputs {
                gpu_mbps: 0,
                ..good
            },
            Inputs {
                copy_den: 0,
                ..good
            },
            Inputs {
                gpu_mbps: u64::MAX,
                ..good
            },
        ] {
            let d = decide(&i, MIB);
            assert!(!d.gpu);
            assert_eq!(d.reason, Reason::BadInputs);
        }
        // Huge sizes clamp instead of overflowing.
        let d = decide(&good, u64::MAX);
        assert_eq!(d.size, MAX_SIZE);
        assert!(!d.gpu);
    }

    #[test]
    fn decisions_are_monotone_in_size_above_the_crossover() {
        for cpu in [100, 200, 1_000, 4_500, 12_000] {
            for rtt in [5_000, 30_000, 200_000] {
                let i = Inputs {
                    cpu_mbps: cpu,
                    gpu_rtt_ns: rtt,
                    crossover: 0,
                    ..h200_vaes()
                };
                let mut seen_gpu = false;
                let mut s = 512;
                while s <= 1 << 30 {
                    let g = decide(&i, s).gpu;
                    assert!(!seen_gpu || g, "cpu {cpu} rtt {rtt} size {s}");
                    seen_gpu |= g;
                    s *= 2;
                }
            }
        }
    }
}
