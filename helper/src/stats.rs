//! Counters kept by the serve loop: per service, requests, bytes, errors,
//! which backend ran them, service-time and batch-size histograms.

use kgpu_common::abi::{backend, service, Cqe, Sqe, Status};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

const SERVICES: usize = 4;
const BUCKETS: usize = 40;

/// Log2 histogram of `u64` samples.
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Histogram {
    /// Adds a sample.
    pub fn add(&self, v: u64) {
        let b = (64 - v.leading_zeros() as usize).min(BUCKETS - 1);
        self.buckets[b].fetch_add(1, Ordering::Relaxed);
    }

    /// Upper bound of the bucket holding quantile `q` (0..=1), 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return if i == 0 { 0 } else { (1u64 << i) - 1 };
            }
        }
        u64::MAX
    }
}

/// Counters of one service.
#[derive(Default)]
pub struct ServiceStats {
    /// Requests taken from the ring.
    pub submitted: AtomicU64,
    /// Completions posted.
    pub completed: AtomicU64,
    /// Completions with an error status.
    pub errors: AtomicU64,
    /// Output bytes of successful requests.
    pub bytes: AtomicU64,
    /// Requests run on the CPU backend.
    pub on_cpu: AtomicU64,
    /// Requests run on a GPU.
    pub on_gpu: AtomicU64,
    /// Service time per request, nanoseconds.
    pub nanos: Histogram,
}

/// All counters of a serving helper.
#[derive(Default)]
pub struct Stats {
    services: [ServiceStats; SERVICES],
    /// Requests per batch taken from the ring.
    pub batch: Histogram,
}

fn idx(service: u16) -> usize {
    match service {
        service::AES => 1,
        service::RAID6 => 2,
        service::ECHO => 3,
        _ => 0,
    }
}

impl Stats {
    /// Records a batch taken from the ring.
    pub fn record_submitted(&self, batch: &[Sqe]) {
        self.batch.add(batch.len() as u64);
        for s in batch {
            self.services[idx(s.service)]
                .submitted
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records completions. The service is not in the completion, so the
    /// caller's submission counts carry the split; here we count by status
    /// and backend into the "all" row and the service row where known.
    pub fn record_completed(&self, done: &[Cqe]) {
        for c in done {
            let s = &self.services[0];
            s.completed.fetch_add(1, Ordering::Relaxed);
            if c.status == Status::Ok.raw() {
                s.bytes.fetch_add(c.bytes, Ordering::Relaxed);
            } else {
                s.errors.fetch_add(1, Ordering::Relaxed);
            }
            if c.backend == backend::GPU {
                s.on_gpu.fetch_add(1, Ordering::Relaxed);
            } else {
                s.on_cpu.fetch_add(1, Ordering::Relaxed);
            }
            s.nanos.add(c.nanos);
        }
    }

    /// A serialisable snapshot.
    pub fn snapshot(&self) -> StatsSnapshot {
        let names = ["all", "aes", "raid6", "echo"];
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let all = &self.services[0];
        StatsSnapshot {
            submitted: names
                .iter()
                .zip(self.services.iter())
                .filter(|(n, _)| **n != "all")
                .map(|(n, s)| (n.to_string(), r(&s.submitted)))
                .collect(),
            completed: r(&all.completed),
            errors: r(&all.errors),
            bytes: r(&all.bytes),
            on_cpu: r(&all.on_cpu),
            on_gpu: r(&all.on_gpu),
            service_ns_p50: all.nanos.quantile(0.5),
            service_ns_p99: all.nanos.quantile(0.99),
            batch_p50: self.batch.quantile(0.5),
            batch_p99: self.batch.quantile(0.99),
        }
    }
}

/// What `kgpu-helper stats` prints.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct StatsSnapshot {
    /// Requests taken from the ring, per service.
    pub submitted: Vec<(String, u64)>,
    /// Completions posted.
    pub completed: u64,
    /// Completions with an error.
    pub errors: u64,
    /// Output bytes of successful requests.
    pub bytes: u64,
    /// Requests run on the CPU.
    pub on_cpu: u64,
    /// Requests run on a GPU.
    pub on_gpu: u64,
    /// Median service time (bucket upper bound), ns.
    pub service_ns_p50: u64,
    /// 99th percentile service time, ns.
    pub service_ns_p99: u64,
    /// Median batch size (bucket upper bound).
    pub batch_p50: u64,
    /// 99th percentile batch size.
    pub batch_p99: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), 0);
        for v in 1..=100u64 {
            h.add(v * 1000);
        }
        let p50 = h.quantile(0.5);
        assert!((50_000..=131_071).contains(&p50), "{p50}");
        assert!(h.quantile(0.99) >= p50);
    }
}
