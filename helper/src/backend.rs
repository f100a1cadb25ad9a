//! Backends run batches of requests and hand back completions.

use crate::dispatch::CpuServices;
use crate::shm::DataArea;
use kgpu_common::abi::{backend, Cqe, Sqe, Status};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the serve loop needs of a backend.
pub trait Backend: Send {
    /// Short name for logs and statistics.
    fn name(&self) -> &'static str;
    /// Starts work on a batch; the completions come back through [`Backend::reap`].
    fn submit(&mut self, batch: Vec<Sqe>);
    /// Appends finished completions to `out`. With `wait`, blocks up to that
    /// long when nothing has finished yet but work is outstanding.
    fn reap(&mut self, out: &mut Vec<Cqe>, wait: Option<Duration>);
    /// Requests submitted and not yet reaped.
    fn outstanding(&self) -> usize;
    /// Per-path decision counts (name, requests), for statistics.
    fn decisions(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// What this backend measured of its GPU path, per service id, for the
    /// region header ([`kgpu_common::abi::GpuFigures`]): none without a GPU.
    fn gpu_figures(&self) -> Vec<(u16, kgpu_common::abi::GpuFigures)> {
        Vec::new()
    }
}

/// Builds the completion of `sqe` from an execution result.
pub fn completion(sqe: &Sqe, result: Result<u64, Status>, backend: u32, nanos: u64) -> Cqe {
    let (status, bytes) = match result {
        Ok(b) => (Status::Ok, b),
        Err(s) => (s, 0),
    };
    Cqe {
        slot: sqe.slot,
        gen: sqe.gen,
        status: status.raw(),
        backend,
        bytes,
        nanos,
    }
}

/// Runs one request on the CPU and times it.
pub fn run_cpu(services: &CpuServices, area: &DataArea, sqe: &Sqe) -> Cqe {
    let t = Instant::now();
    let r = services.execute(sqe, area);
    if let Err(s) = r {
        log::debug!(
            "request slot {} service {} op {}: {}",
            sqe.slot,
            sqe.service,
            sqe.op,
            s.as_str()
        );
    }
    completion(sqe, r, backend::CPU, t.elapsed().as_nanos() as u64)
}

/// The CPU backend: inline (0 workers) or a pool of worker threads.
pub struct CpuBackend {
    services: Arc<CpuServices>,
    area: DataArea,
    done: Vec<Cqe>,
    pool: Option<Pool>,
    outstanding: usize,
    requests: u64,
}

struct Pool {
    work: Option<Sender<Vec<Sqe>>>,
    results: Receiver<Vec<Cqe>>,
    threads: Vec<JoinHandle<()>>,
    workers: usize,
}

impl CpuBackend {
    /// A CPU backend over `area` with `workers` threads (0: run in the caller).
    pub fn new(area: DataArea, workers: usize) -> Self {
        let services = Arc::new(CpuServices::new());
        let pool = (workers > 0).then(|| {
            let (wtx, wrx) = channel::<Vec<Sqe>>();
            let (rtx, rrx) = channel::<Vec<Cqe>>();
            let wrx = Arc::new(std::sync::Mutex::new(wrx));
            let threads = (0..workers)
                .map(|i| {
                    let wrx = Arc::clone(&wrx);
                    let rtx = rtx.clone();
                    let services = Arc::clone(&services);
                    std::thread::Builder::new()
                        .name(format!("kgpu-cpu-{i}"))
                        .spawn(move || loop {
                            let batch = match wrx.lock() {
                                Ok(rx) => rx.recv(),
                                Err(_) => return,
                            };
                            let Ok(batch) = batch else { return };
                            let out: Vec<Cqe> =
                                batch.iter().map(|s| run_cpu(&services, &area, s)).collect();
                            if rtx.send(out).is_err() {
                                return;
                            }
                        })
                        .expect("spawn a CPU worker thread")
                })
                .collect();
            Pool {
                work: Some(wtx),
                results: rrx,
                threads,
                workers,
            }
        });
        CpuBackend {
            services,
            area,
            done: Vec::new(),
            pool,
            outstanding: 0,
            requests: 0,
        }
    }

    /// The service implementations (shared with other backends as a fallback).
    pub fn services(&self) -> &Arc<CpuServices> {
        &self.services
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn submit(&mut self, batch: Vec<Sqe>) {
        self.outstanding += batch.len();
        self.requests += batch.len() as u64;
        match &self.pool {
            None => {
                for s in &batch {
                    let c = run_cpu(&self.services, &self.area, s);
                    self.done.push(c);
                }
            }
            Some(pool) => {
                // Split so every worker gets a share; large requests travel alone.
                let per = batch.len().div_ceil(pool.workers).max(1);
                for chunk in batch.chunks(per) {
                    if let Some(tx) = &pool.work {
                        // The workers live as long as the pool: a send fails
                        // only if one panicked, and then we run it here.
                        if let Err(e) = tx.send(chunk.to_vec()) {
                            for s in &e.0 {
                                self.done.push(run_cpu(&self.services, &self.area, s));
                            }
                        }
                    }
                }
            }
        }
    }

    fn reap(&mut self, out: &mut Vec<Cqe>, wait: Option<Duration>) {
        if let Some(pool) = &self.pool {
            let mut first = true;
            loop {
                let got = match (first, wait) {
                    (true, Some(w)) if self.done.is_empty() && self.outstanding > 0 => {
                        match pool.results.recv_timeout(w) {
                            Ok(v) => Some(v),
                            Err(RecvTimeoutError::Timeout) => None,
                            Err(RecvTimeoutError::Disconnected) => None,
                        }
                    }
                    _ => pool.results.try_recv().ok(),
                };
                first = false;
                match got {
                    Some(v) => self.done.extend(v),
                    None => break,
                }
            }
        }
        self.outstanding -= self.done.len();
        out.append(&mut self.done);
    }

    fn outstanding(&self) -> usize {
        self.outstanding
    }

    fn decisions(&self) -> Vec<(&'static str, u64)> {
        vec![("cpu", self.requests)]
    }
}

impl Drop for CpuBackend {
    fn drop(&mut self) {
        if let Some(pool) = &mut self.pool {
            pool.work = None;
            for t in pool.threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}
