//! The CUDA backend.
//!
//! Each GPU keeps a mirror of the data area in device memory: a request's
//! extents have the same offsets on the host and on the device. The host data
//! area (the shared region) is page-locked once with `cuMemHostRegister`, so
//! copies run at full PCIe speed straight from and to the region, without
//! staging. A batch from the submission ring is cut into pieces of about
//! [`PIECE_BYTES`]; each piece is copied in, computed and copied out on one of
//! several streams, so the copy engines (both directions) and the SMs work at
//! once, and its completions are posted as soon as its event fires.
//!
//! Each request is parsed once, by its service ([`crate::services`]), which
//! also gives its copies and kernels. Requests too small to gain from the GPU
//! run on the CPU backend (the crossover is measured per service at start-up,
//! [`calibrate`]); requests the services reject run there too, which
//! produces their error status. A GPU fault fails that GPU's requests in
//! flight with `BackendError` (the submitter redoes them from its own copy of
//! the data) and takes the GPU out of service.
//!
//! * [`compile`]: the services' kernels as one module (NVRTC, CUBIN cache);
//! * [`calibrate`]: the crossover and the figures for the region header;
//! * [`pipeline`]: parts, pieces, streams, enqueue and reap.

use crate::backend::{Backend, CpuBackend};
use crate::dispatch::CpuServices;
use crate::services::gpu::Admission;
use crate::services::Registry;
use crate::shm::DataArea;
use cudarc::driver::sys::{self, CUdeviceptr};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DriverError};
use kgpu_common::abi::{Cqe, GpuFigures, Sqe};
use kgpu_common::request::check_sqe;
use pipeline::{GpuJob, Piece, Whole};
use std::any::Any;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod calibrate;
pub mod compile;
pub mod pipeline;

pub use compile::{compile, kernel_source};
pub use pipeline::{split_request, MAX_PARTS, PART_MIN, PIECE_BYTES, SPLIT_MIN, STREAMS};

/// Why the CUDA backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum CudaInitError {
    /// No driver library, or no device.
    #[error("no usable GPU: {0}")]
    NoGpu(String),
    /// A CUDA call failed.
    #[error("CUDA: {0}")]
    Driver(String),
    /// The kernels did not compile.
    #[error("NVRTC: {0}")]
    Compile(String),
}

fn drv(e: DriverError) -> CudaInitError {
    CudaInitError::Driver(format!("{e:?}"))
}

/// Runs `f`, turning a panic (cudarc panics when it cannot load libcuda or
/// libnvrtc) into `Err` without printing it.
pub(crate) fn quietly<R>(f: impl FnOnce() -> R) -> Result<R, ()> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    r.map_err(|_| ())
}

/// Number of CUDA devices, or why there are none. Never panics, even when the
/// driver library is missing.
pub fn device_count() -> Result<usize, CudaInitError> {
    let r = quietly(CudaContext::device_count);
    match r {
        Ok(Ok(n)) if n > 0 => Ok(n as usize),
        Ok(Ok(_)) => Err(CudaInitError::NoGpu(
            "the driver reports no CUDA device".into(),
        )),
        Ok(Err(e)) => Err(CudaInitError::NoGpu(format!("{e:?}"))),
        Err(_) => Err(CudaInitError::NoGpu(
            "libcuda.so.1 could not be loaded (no NVIDIA driver)".into(),
        )),
    }
}

/// One GPU: its context, streams, data-area mirror and service kernels.
struct Gpu {
    ctx: Arc<CudaContext>,
    streams: Vec<Arc<CudaStream>>,
    next_stream: usize,
    _mirror: CudaSlice<u8>,
    mirror: CUdeviceptr,
    /// Per registry position: the service's kernels (none without a GPU part).
    kernels: Vec<Option<Box<dyn Any + Send>>>,
    healthy: bool,
    name: String,
}

/// Below its crossover a request still goes to the GPU if it is at least this
/// large and the CPU backend already has [`CPU_BACKLOG`] requests queued
/// (every GPU request pays its own copies and launches, so tiny ones never do).
pub const OVERFLOW_MIN: u64 = 256 << 10;
/// See [`OVERFLOW_MIN`].
pub const CPU_BACKLOG: usize = 2;

/// Where requests went (for statistics).
#[derive(Clone, Copy, Debug, Default)]
pub struct Decisions {
    /// Requests run on a GPU.
    pub gpu: u64,
    /// Requests kept on the CPU because they were small.
    pub cpu_small: u64,
    /// Requests below the crossover sent to the GPU because the CPU was backlogged.
    pub gpu_overflow: u64,
    /// Requests sent to the CPU because a service rejected them (error status).
    pub cpu_invalid: u64,
    /// Requests failed with BackendError by a GPU fault.
    pub gpu_failed: u64,
}

/// The CUDA backend.
pub struct CudaBackend {
    area: DataArea,
    services: Arc<CpuServices>,
    gpus: Vec<Gpu>,
    next_gpu: usize,
    cpu: CpuBackend,
    pieces: VecDeque<Piece>,
    outstanding: usize,
    done: Vec<Cqe>,
    /// Per registry position: requests of at least this many bytes go to
    /// the GPU, smaller ones to the CPU.
    crossover: Vec<u64>,
    /// Per registry position: what [`CudaBackend::calibrate`] measured of
    /// the GPU path, for the region header.
    figures: Vec<GpuFigures>,
    decisions: Decisions,
    registered: bool,
    wholes: std::collections::HashMap<(u32, u32), Whole>,
}

/// Options of [`CudaBackend::new`].
#[derive(Clone, Copy, Debug)]
pub struct CudaOptions {
    /// At most this many GPUs (0: all).
    pub max_gpus: usize,
    /// Fixed crossover in bytes (None: measure at start-up).
    pub gpu_min_bytes: Option<u64>,
    /// CPU worker threads for small requests.
    pub cpu_workers: usize,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions {
            max_gpus: 0,
            gpu_min_bytes: None,
            cpu_workers: 1,
        }
    }
}

impl CudaBackend {
    /// Opens every GPU (up to `max_gpus`), compiles or loads the kernels,
    /// registers the data area with CUDA and allocates the device mirrors.
    pub fn new(area: DataArea, opts: CudaOptions) -> Result<Self, CudaInitError> {
        let n = device_count()?;
        let n = if opts.max_gpus == 0 {
            n
        } else {
            n.min(opts.max_gpus)
        };
        let cpu = CpuBackend::new(area, opts.cpu_workers);
        let services = Arc::clone(cpu.services());
        let mut gpus = Vec::new();
        for ordinal in 0..n {
            gpus.push(Self::open_gpu(ordinal, &area, services.registry())?);
        }
        let count = services.registry().len();
        let mut be = CudaBackend {
            area,
            services,
            gpus,
            next_gpu: 0,
            cpu,
            pieces: VecDeque::new(),
            outstanding: 0,
            done: Vec::new(),
            crossover: vec![opts.gpu_min_bytes.unwrap_or(0); count],
            figures: vec![GpuFigures::NONE; count],
            decisions: Decisions::default(),
            registered: false,
            wholes: std::collections::HashMap::new(),
        };
        be.register_host()?;
        Ok(be)
    }

    fn open_gpu(
        ordinal: usize,
        area: &DataArea,
        services: &Registry,
    ) -> Result<Gpu, CudaInitError> {
        let ctx = quietly(|| CudaContext::new(ordinal))
            .map_err(|_| CudaInitError::NoGpu("libcuda could not be loaded".into()))?
            .map_err(drv)?;
        // Every buffer is used by one stream at a time by construction (the
        // mirror by extent, extents by request): cudarc's per-buffer event
        // tracking would only serialise the streams.
        // SAFETY: we order all accesses ourselves (stream order, events).
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx.compute_capability().map_err(drv)?;
        let arch = format!("sm_{major}{minor}");
        let t0 = Instant::now();
        let (bin, cached) = compile(services, &arch)?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(bin))
            .map_err(drv)?;
        let name = ctx.name().unwrap_or_else(|_| format!("GPU {ordinal}"));
        log::info!(
            "GPU {ordinal}: {name} ({arch}), kernels {} in {} ms",
            if cached {
                "loaded from the cache"
            } else {
                "compiled"
            },
            t0.elapsed().as_millis()
        );
        let streams = (0..STREAMS)
            .map(|_| ctx.new_stream())
            .collect::<Result<Vec<_>, _>>()
            .map_err(drv)?;
        let kernels = services
            .iter()
            .map(|s| {
                s.gpu()
                    .map(|g| g.load(&module, &streams[0]).map_err(CudaInitError::Driver))
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        // SAFETY: the mirror is only read after being written by a copy-in of
        // the same extent, in stream order.
        let mirror_buf = unsafe { streams[0].alloc::<u8>(area.size() as usize) }.map_err(drv)?;
        streams[0].synchronize().map_err(drv)?;
        let mirror = {
            use cudarc::driver::DevicePtr;
            let (p, _g) = mirror_buf.device_ptr(&streams[0]);
            p
        };
        Ok(Gpu {
            ctx,
            streams,
            next_stream: 0,
            _mirror: mirror_buf,
            mirror,
            kernels,
            healthy: true,
            name,
        })
    }

    /// Page-locks the data area once, for every context (portable).
    fn register_host(&mut self) -> Result<(), CudaInitError> {
        let Some(g) = self.gpus.first() else {
            return Err(CudaInitError::NoGpu("no GPU opened".into()));
        };
        g.ctx.bind_to_thread().map_err(drv)?;
        let flags = if self.gpus.len() > 1 {
            sys::CU_MEMHOSTREGISTER_PORTABLE
        } else {
            0
        };
        // SAFETY: the data area is a page-aligned mapping that outlives the
        // backend; it is unregistered in Drop.
        let rc = unsafe {
            sys::cuMemHostRegister_v2(self.area.base().cast(), self.area.size() as usize, flags)
        };
        if rc != sys::CUresult::CUDA_SUCCESS {
            return Err(CudaInitError::Driver(format!(
                "cuMemHostRegister of the {} MiB data area: {rc:?}",
                self.area.size() >> 20
            )));
        }
        self.registered = true;
        Ok(())
    }

    /// Names of the GPUs in use.
    pub fn gpu_names(&self) -> Vec<String> {
        self.gpus.iter().map(|g| g.name.clone()).collect()
    }

    /// Counts of where requests went.
    pub fn decision_counts(&self) -> Decisions {
        self.decisions
    }

    /// Bytes a request moves (its payload), for the size policy.
    fn payload(s: &Sqe) -> u64 {
        s.input.len.max(s.output.len)
    }

    /// Per service with a GPU path, in registry order: its id and its
    /// crossover (requests of at least this many payload bytes go to the GPU).
    pub fn crossovers(&self) -> Vec<(u16, u64)> {
        self.services
            .registry()
            .iter()
            .zip(&self.crossover)
            .filter(|(s, _)| s.gpu().is_some())
            .map(|(s, c)| (s.id(), *c))
            .collect()
    }

    /// Parses `s` for the GPU, by its service: refused (invalid, or not for
    /// its kernels), valid but not `wanted` (asked with the service's
    /// registry position), or ready for the GPU.
    fn admit(&self, s: &Sqe, wanted: impl FnOnce(usize) -> bool) -> Admitted {
        let Ok(ext) = check_sqe(s, self.area.size()) else {
            return Admitted::Refused;
        };
        let Some((svc, gpu)) = self
            .services
            .registry()
            .find(s.service)
            .and_then(|(p, e)| Some((p, e.gpu()?)))
        else {
            return Admitted::Refused;
        };
        match gpu.admit(s, &ext, wanted(svc)) {
            Admission::Refused => Admitted::Refused,
            Admission::Cpu => Admitted::Cpu,
            Admission::Gpu(cmd) => Admitted::Gpu(GpuJob { sqe: *s, svc, cmd }),
        }
    }
}

/// What [`CudaBackend::admit`] made of a request.
enum Admitted {
    /// For the CPU, which reports its error if it has one.
    Refused,
    /// Valid, but for the CPU.
    Cpu,
    /// For the GPU.
    Gpu(GpuJob),
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn submit(&mut self, batch: Vec<Sqe>) {
        let mut gpu = Vec::new();
        let mut cpu = Vec::new();
        // Requests queued for the CPU, this batch's included.
        let mut cpu_queue = self.cpu.outstanding();
        for s in batch {
            let size = Self::payload(&s);
            // Below the crossover one request is faster on the CPU, but with
            // the CPU backlogged the GPU's throughput wins.
            let overflow = size >= OVERFLOW_MIN && cpu_queue >= CPU_BACKLOG;
            let mut above = false;
            let crossover = &self.crossover;
            let admitted = self.admit(&s, |svc| {
                above = size >= crossover[svc];
                above || overflow
            });
            match admitted {
                Admitted::Refused => {
                    self.decisions.cpu_invalid += 1;
                    cpu.push(s);
                }
                Admitted::Gpu(job) => {
                    if !above {
                        self.decisions.gpu_overflow += 1;
                    }
                    gpu.push(job);
                }
                Admitted::Cpu => {
                    self.decisions.cpu_small += 1;
                    cpu_queue += 1;
                    cpu.push(s);
                }
            }
        }
        if !cpu.is_empty() {
            self.cpu.submit(cpu);
        }
        if !gpu.is_empty() {
            self.submit_gpu(gpu);
        }
    }

    fn reap(&mut self, out: &mut Vec<Cqe>, wait: Option<Duration>) {
        let start = out.len();
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            let before = out.len();
            out.append(&mut self.done);
            self.reap_gpu(out);
            self.outstanding -= out.len() - before;
            self.cpu.reap(out, None);
            let got = out.len() > start;
            match deadline {
                Some(d) if !got && self.outstanding() > 0 && Instant::now() < d => {
                    std::hint::spin_loop()
                }
                _ => break,
            }
        }
    }

    fn outstanding(&self) -> usize {
        self.outstanding + self.cpu.outstanding()
    }

    fn gpu_figures(&self) -> Vec<(u16, GpuFigures)> {
        self.services
            .registry()
            .iter()
            .zip(&self.figures)
            .filter(|(_, f)| f.present())
            .map(|(s, f)| (s.id(), *f))
            .collect()
    }

    fn decisions(&self) -> Vec<(&'static str, u64)> {
        let d = self.decisions;
        vec![
            ("gpu", d.gpu),
            ("cpu-small", d.cpu_small),
            ("gpu-overflow", d.gpu_overflow),
            ("cpu-invalid", d.cpu_invalid),
            ("gpu-failed", d.gpu_failed),
        ]
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        for g in &self.gpus {
            let _ = g.ctx.bind_to_thread();
            let _ = g.ctx.synchronize();
        }
        self.pieces.clear();
        if self.registered {
            if let Some(g) = self.gpus.first() {
                let _ = g.ctx.bind_to_thread();
                // SAFETY: registered in `register_host`; all work is synchronised.
                let _ = unsafe { sys::cuMemHostUnregister(self.area.base().cast()) };
            }
        }
    }
}
