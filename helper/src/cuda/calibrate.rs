//! Calibration: where the GPU beats the CPU, per service, and what the
//! kernel's load-time choice needs to know of the GPU path.

use super::{Admitted, CudaBackend, Decisions};
use crate::dispatch::CpuServices;
use crate::shm::DataArea;
use crate::workload::{DirectBuf, Job, Rng};
use cudarc::driver::sys;
use kgpu_common::abi::{Extent, GpuFigures, Sqe, Status};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl CudaBackend {
    /// Measures, per service with a GPU path, the CPU/GPU crossover on this
    /// machine: the smallest probe size at which a GPU round trip beats one
    /// CPU thread (the service's [`GpuService::probe`] job). Runs on a
    /// private page-locked scratch buffer, never on the shared data area.
    /// Also records what the kernel's load-time choice needs of the GPU path
    /// ([`Backend::gpu_figures`]): the round trip of the smallest probe and
    /// the rate of one request of the largest (4 MiB, not pipelined: a lower
    /// bound of what the ring sustains). With `fixed` the crossover is that
    /// instead of the measured one (`KGPU_GPU_MIN_BYTES`). Returns
    /// [`CudaBackend::crossovers`].
    ///
    /// [`GpuService::probe`]: crate::services::gpu::GpuService::probe
    /// [`Backend::gpu_figures`]: crate::backend::Backend::gpu_figures
    pub fn calibrate(&mut self, fixed: Option<u64>) -> Vec<(u16, u64)> {
        const SCRATCH: usize = 16 << 20;
        const NONE: u64 = 16 << 20;
        const PROBES: [usize; 6] = [4096, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20];
        let services = Arc::clone(&self.services);
        let n = services.registry().len();
        let none = vec![fixed.unwrap_or(NONE); n];
        self.figures = vec![GpuFigures::NONE; n];
        if self.area.size() < SCRATCH as u64 || self.gpus.is_empty() {
            self.crossover = none;
            return self.crossovers();
        }
        let mut scratch = vec![0u64; SCRATCH / 8];
        // SAFETY: `scratch` outlives its use below; registration is undone
        // before it is freed.
        let registered = self.gpus[0].ctx.bind_to_thread().is_ok()
            && unsafe { sys::cuMemHostRegister_v2(scratch.as_mut_ptr().cast(), SCRATCH, 0) }
                == sys::CUresult::CUDA_SUCCESS;
        if !registered {
            self.crossover = none;
            return self.crossovers();
        }
        // SAFETY: the scratch buffer is ours and outlives the swap.
        let scratch_area =
            unsafe { DataArea::from_raw(scratch.as_mut_ptr().cast(), SCRATCH as u64) };
        let shared = std::mem::replace(&mut self.area, scratch_area);
        let cpu_services = CpuServices::new();
        let mut rng = Rng::new(7);
        let mut result = none;
        for (svc, slot) in result.iter_mut().enumerate() {
            let Some(part) = services.registry().get(svc).and_then(|s| s.gpu()) else {
                continue;
            };
            let mut crossover = None;
            let mut rtt = None;
            let mut rate = 0u64;
            for (k, size) in PROBES.into_iter().enumerate() {
                let last = k + 1 == PROBES.len();
                // Past the crossover only the largest probe is still needed.
                if crossover.is_some() && !last {
                    continue;
                }
                let job = part.probe(size, &mut rng);
                let Some(gpu) = self.time_gpu_roundtrip(&job) else {
                    break;
                };
                rtt.get_or_insert(gpu);
                if last {
                    rate = (job.payload() as u128 * 1000 / gpu.as_nanos().max(1)) as u64;
                }
                if crossover.is_some() {
                    continue;
                }
                let mut buf = DirectBuf::new(&job);
                let _ = buf.run(&job, &cpu_services);
                // The fastest of several runs: noise only ever adds time.
                let mut cpu = Duration::MAX;
                let t = Instant::now();
                while t.elapsed() < Duration::from_millis(5) {
                    let r = Instant::now();
                    let _ = buf.rerun(&cpu_services);
                    cpu = cpu.min(r.elapsed());
                }
                log::debug!(
                    "crossover probe {} {size} B: cpu {cpu:?}, gpu {gpu:?}",
                    job.name()
                );
                if gpu < cpu {
                    crossover = Some(job.payload());
                }
            }
            if fixed.is_none() {
                *slot = crossover.unwrap_or(NONE);
            }
            if let (Some(rtt), true) = (rtt, rate > 0) {
                self.figures[svc] = GpuFigures {
                    mbps: rate,
                    rtt_ns: rtt.as_nanos().min(u64::MAX as u128) as u64,
                    crossover: *slot,
                    reserved: 0,
                };
            }
        }
        self.area = shared;
        let _ = self.gpus[0].ctx.bind_to_thread();
        // SAFETY: registered above; no work on it remains (each probe waited).
        let _ = unsafe { sys::cuMemHostUnregister(scratch.as_mut_ptr().cast()) };
        self.decisions = Decisions::default();
        self.crossover = result;
        self.crossovers()
    }

    /// Times one request through the GPU path on the (scratch) area.
    fn time_gpu_roundtrip(&mut self, job: &Job) -> Option<Duration> {
        let page = |x: u64| x.div_ceil(4096) * 4096;
        let key = Extent::new(0, job.key.len() as u64);
        let input = Extent::new(4096, job.input.len() as u64);
        let output = if job.in_place {
            input
        } else {
            Extent::new(page(input.off + input.len), job.out_len as u64)
        };
        if !output.fits(self.area.size()) {
            return None;
        }
        // SAFETY: the scratch area is ours alone.
        unsafe {
            self.area.slice_mut(key).copy_from_slice(&job.key);
            self.area.slice_mut(input).copy_from_slice(&job.input);
        }
        let sqe = Sqe {
            service: job.service,
            op: job.op,
            key_tag: job.key_tag,
            key,
            input,
            output,
            unit: job.unit,
            count: job.count,
            params: job.params,
            ..Sqe::ZERO
        };
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            let Admitted::Gpu(job) = self.admit(&sqe, |_| true) else {
                return None;
            };
            self.submit_gpu(vec![job]);
            let mut out = Vec::new();
            while out.is_empty() {
                out.append(&mut self.done);
                self.reap_gpu(&mut out);
                if self.pieces.is_empty() && out.is_empty() {
                    return None;
                }
            }
            self.outstanding -= out.len();
            if out[0].status != Status::Ok.raw() {
                return None;
            }
            best = best.min(t.elapsed());
        }
        Some(best)
    }
}
