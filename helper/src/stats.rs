//! Counters kept by the serve loop: per service, requests, bytes, errors,
//! which backend ran them, service-time and batch-size histograms.

use crate::services::{self, SERVICES};
use kgpu_common::abi::{backend, Cqe, Sqe, Status};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

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
pub struct Stats {
    /// "All", then one row per service of [`SERVICES`].
    services: Vec<ServiceStats>,
    /// Requests per batch taken from the ring.
    pub batch: Histogram,
    /// Requests taken and not yet completed: service and when taken.
    taken: std::sync::Mutex<std::collections::HashMap<(u32, u32), (u16, std::time::Instant)>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            services: (0..=SERVICES.len())
                .map(|_| ServiceStats::default())
                .collect(),
            batch: Histogram::default(),
            taken: Default::default(),
        }
    }
}

/// The row of a service (0, "all", for an unknown one).
fn idx(service: u16) -> usize {
    services::position(service).map_or(0, |p| p + 1)
}

impl Stats {
    /// Records a batch taken from the ring.
    pub fn record_submitted(&self, batch: &[Sqe]) {
        self.batch.add(batch.len() as u64);
        let now = std::time::Instant::now();
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        for s in batch {
            for i in [0, idx(s.service)] {
                self.services[i].submitted.fetch_add(1, Ordering::Relaxed);
            }
            taken.insert((s.slot, s.gen), (s.service, now));
        }
    }

    /// Records completions, in the "all" row and in their service's row,
    /// with the time each spent in the helper (taken → completed).
    pub fn record_completed(&self, done: &[Cqe]) {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        for c in done {
            let (service, nanos) = match taken.remove(&(c.slot, c.gen)) {
                Some((svc, t)) => (idx(svc), t.elapsed().as_nanos() as u64),
                None => (usize::MAX, c.nanos),
            };
            for (i, s) in self.services.iter().enumerate() {
                if i != 0 && i != service {
                    continue;
                }
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
                s.nanos.add(nanos);
            }
        }
    }

    /// A serialisable snapshot; `decisions` are the backend's dispatch counts.
    pub fn snapshot(&self, backend: &str, decisions: Vec<(&'static str, u64)>) -> StatsSnapshot {
        let names = std::iter::once("all").chain(SERVICES.iter().map(|r| r.name));
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            backend: backend.to_string(),
            pid: std::process::id(),
            services: names
                .zip(self.services.iter())
                .filter(|(n, s)| *n == "all" || r(&s.submitted) > 0)
                .map(|(n, s)| ServiceSnapshot {
                    service: n.to_string(),
                    submitted: r(&s.submitted),
                    completed: r(&s.completed),
                    errors: r(&s.errors),
                    bytes: r(&s.bytes),
                    on_cpu: r(&s.on_cpu),
                    on_gpu: r(&s.on_gpu),
                    p50_us: s.nanos.quantile(0.5) as f64 / 1e3,
                    p99_us: s.nanos.quantile(0.99) as f64 / 1e3,
                })
                .collect(),
            batch_p50: self.batch.quantile(0.5),
            batch_p99: self.batch.quantile(0.99),
            decisions: decisions
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }
}

/// One service's row of [`StatsSnapshot`].
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct ServiceSnapshot {
    /// Service name ("all" sums every service).
    pub service: String,
    /// Requests taken from the ring.
    pub submitted: u64,
    /// Completions posted.
    pub completed: u64,
    /// Completions with an error status.
    pub errors: u64,
    /// Output bytes of successful requests.
    pub bytes: u64,
    /// Requests run on the CPU backend.
    pub on_cpu: u64,
    /// Requests run on a GPU.
    pub on_gpu: u64,
    /// Median time in the helper (bucket upper bound), µs.
    pub p50_us: f64,
    /// 99th percentile time in the helper, µs.
    pub p99_us: f64,
}

/// What `kgpu-helper stats` prints of a helper.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct StatsSnapshot {
    /// Backend name.
    pub backend: String,
    /// The helper's process id.
    pub pid: u32,
    /// Per service.
    pub services: Vec<ServiceSnapshot>,
    /// Median batch size taken from the ring (bucket upper bound).
    pub batch_p50: u64,
    /// 99th percentile batch size.
    pub batch_p99: u64,
    /// Where the backend sent requests (gpu, cpu-small, ...).
    pub decisions: Vec<(String, u64)>,
}

impl StatsSnapshot {
    /// The snapshot as a table.
    pub fn table(&self) -> String {
        let mut o = format!(
            "helper pid {}, backend {}; batch size p50 {} p99 {}\n{:<7} {:>10} {:>10} {:>7} {:>12} {:>10} {:>10} {:>9} {:>9}\n",
            self.pid, self.backend, self.batch_p50, self.batch_p99, "service", "taken", "done", "errors", "bytes", "cpu", "gpu", "p50 us", "p99 us"
        );
        for s in &self.services {
            o.push_str(&format!(
                "{:<7} {:>10} {:>10} {:>7} {:>12} {:>10} {:>10} {:>9.1} {:>9.1}\n",
                s.service,
                s.submitted,
                s.completed,
                s.errors,
                s.bytes,
                s.on_cpu,
                s.on_gpu,
                s.p50_us,
                s.p99_us
            ));
        }
        if !self.decisions.is_empty() {
            let d: Vec<String> = self
                .decisions
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            o.push_str(&format!("dispatch: {}\n", d.join(", ")));
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kgpu_common::abi::service;

    #[test]
    fn per_service_rows() {
        let st = Stats::default();
        let sqe = |slot, service| Sqe {
            slot,
            gen: 1,
            service,
            ..Sqe::ZERO
        };
        st.record_submitted(&[
            sqe(0, service::AES),
            sqe(1, service::RAID6),
            sqe(2, service::AES),
        ]);
        let ok = |slot| Cqe {
            slot,
            gen: 1,
            bytes: 10,
            ..Cqe::ZERO
        };
        let bad = Cqe {
            slot: 2,
            gen: 1,
            status: Status::BadKey.raw(),
            ..Cqe::ZERO
        };
        st.record_completed(&[ok(0), ok(1), bad]);
        let s = st.snapshot("cpu", vec![("cpu", 3)]);
        let row = |n: &str| s.services.iter().find(|r| r.service == n).unwrap().clone();
        assert_eq!(
            (
                row("all").submitted,
                row("all").completed,
                row("all").errors,
                row("all").bytes
            ),
            (3, 3, 1, 20)
        );
        assert_eq!(
            (
                row("aes").submitted,
                row("aes").completed,
                row("aes").errors
            ),
            (2, 2, 1)
        );
        assert_eq!((row("raid6").completed, row("raid6").bytes), (1, 10));
        assert!(s.table().contains("dispatch: cpu 3"));
    }

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
