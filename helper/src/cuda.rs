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
//! Requests too small to gain from the GPU run on the CPU backend (the
//! crossover is measured at start-up); requests the services reject run there
//! too, which produces their error status. A GPU fault fails that GPU's
//! requests in flight with `BackendError` (the submitter redoes them from its
//! own copy of the data) and takes the GPU out of service.

use crate::backend::{completion, Backend, CpuBackend};
use crate::shm::DataArea;
use cudarc::driver::sys::{self, CUdeviceptr};
use cudarc::driver::{CudaContext, CudaEvent, CudaSlice, CudaStream, DriverError};
use kgpu_aes::gpu::{AesGpu, AesGpuRequest};
use kgpu_common::abi::{backend, service, Cqe, Sqe, Status};
use kgpu_common::request::{check_sqe, CheckedExtents};
use kgpu_raid6::gpu::{Raid6Gpu, Raid6GpuRequest};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Target bytes of one piece (one stream's copy-in, compute, copy-out).
pub const PIECE_BYTES: u64 = 2 << 20;
/// Streams per GPU.
pub const STREAMS: usize = 4;

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
fn quietly<R>(f: impl FnOnce() -> R) -> Result<R, ()> {
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

/// A stable 64-bit FNV-1a hash (for the kernel cache key).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("KGPU_CACHE") {
        return Some(PathBuf::from(d).join("cubin"));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("kgpu-rs/cubin"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kgpu-rs/cubin"))
}

/// All services' kernels in one source.
pub fn kernel_source() -> String {
    format!("{}\n{}\n", kgpu_aes::gpu::SOURCE, kgpu_raid6::gpu::SOURCE)
}

/// Compiles the kernels for `sm_XY` with NVRTC, or loads them from the
/// on-disk cache keyed by source hash and architecture.
pub fn compile(arch: &str) -> Result<(Vec<u8>, bool), CudaInitError> {
    let src = kernel_source();
    let key = format!("{:016x}-{arch}.cubin", fnv1a(src.as_bytes()));
    let cached = cache_dir().map(|d| d.join(&key));
    if let Some(p) = &cached {
        if let Ok(bin) = std::fs::read(p) {
            if !bin.is_empty() {
                return Ok((bin, true));
            }
        }
    }
    let bin = quietly(|| nvrtc_cubin(&src, arch))
        .map_err(|_| CudaInitError::Compile("libnvrtc could not be loaded".into()))??;
    if let Some(p) = &cached {
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        let ok = p
            .parent()
            .is_some_and(|d| std::fs::create_dir_all(d).is_ok())
            && std::fs::write(&tmp, &bin).is_ok()
            && std::fs::rename(&tmp, p).is_ok();
        if !ok {
            let _ = std::fs::remove_file(&tmp);
            log::debug!("could not cache the compiled kernels in {}", p.display());
        }
    }
    Ok((bin, false))
}

fn nvrtc_cubin(src: &str, arch: &str) -> Result<Vec<u8>, CudaInitError> {
    use cudarc::nvrtc::{result, sys as nsys};
    let c_src = std::ffi::CString::new(src).map_err(|e| CudaInitError::Compile(e.to_string()))?;
    let prog = result::create_program(&c_src, Some(c"kgpu.cu"))
        .map_err(|e| CudaInitError::Compile(format!("{e:?}")))?;
    let opts = [
        format!("--gpu-architecture={arch}"),
        "-std=c++17".to_string(),
    ];
    // SAFETY: `prog` is a live program; the options are valid C strings.
    let compiled = unsafe { result::compile_program(prog, &opts) };
    let out = match compiled {
        Err(_) => {
            // SAFETY: `prog` is live.
            let log = unsafe { result::get_program_log(prog) }
                .map(|l| {
                    let b: Vec<u8> = l.iter().map(|c| *c as u8).take_while(|c| *c != 0).collect();
                    String::from_utf8_lossy(&b).into_owned()
                })
                .unwrap_or_default();
            Err(CudaInitError::Compile(log))
        }
        Ok(()) => {
            let mut size = 0usize;
            // SAFETY: `prog` compiled; `size` receives the CUBIN size.
            let rc = unsafe { nsys::nvrtcGetCUBINSize(prog, &mut size) };
            if rc != nsys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
                Err(CudaInitError::Compile(format!("nvrtcGetCUBINSize: {rc:?}")))
            } else {
                let mut bin = vec![0u8; size];
                // SAFETY: `bin` has the size NVRTC reported.
                let rc = unsafe { nsys::nvrtcGetCUBIN(prog, bin.as_mut_ptr().cast()) };
                if rc != nsys::nvrtcResult::NVRTC_SUCCESS {
                    Err(CudaInitError::Compile(format!("nvrtcGetCUBIN: {rc:?}")))
                } else {
                    Ok(bin)
                }
            }
        }
    };
    // SAFETY: `prog` is live and not used afterwards.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

/// One GPU: its context, streams, data-area mirror and service kernels.
struct Gpu {
    ctx: Arc<CudaContext>,
    streams: Vec<Arc<CudaStream>>,
    next_stream: usize,
    _mirror: CudaSlice<u8>,
    mirror: CUdeviceptr,
    aes: AesGpu,
    raid6: Raid6Gpu,
    healthy: bool,
    name: String,
}

/// A piece in flight: an event on one stream and the request parts it finishes.
struct Piece {
    gpu: usize,
    event: CudaEvent,
    parts: Vec<Sqe>,
    t0: Instant,
}

/// A request on the GPU, possibly cut in parts that run on several streams.
struct Whole {
    sqe: Sqe,
    parts_left: u32,
    failed: bool,
}

/// Below its crossover a request still goes to the GPU if it is at least this
/// large and the CPU backend already has [`CPU_BACKLOG`] requests queued
/// (every GPU request pays its own copies and launches, so tiny ones never do).
pub const OVERFLOW_MIN: u64 = 256 << 10;
/// See [`OVERFLOW_MIN`].
pub const CPU_BACKLOG: usize = 2;

/// Requests at least this large are cut into parts (AES only), when the
/// GPU has too few requests in flight to keep its streams busy otherwise.
pub const SPLIT_MIN: u64 = 4 << 20;
/// Smallest part.
pub const PART_MIN: u64 = 1 << 20;
/// Most parts per request (one per stream).
pub const MAX_PARTS: u64 = STREAMS as u64;

/// Adds `n` to a 128-bit big-endian counter.
fn be128_add(iv: [u8; 16], n: u64) -> [u8; 16] {
    u128::from_be_bytes(iv)
        .wrapping_add(u128::from(n))
        .to_be_bytes()
}

/// Cuts a valid AES request into parts that are valid requests themselves
/// (whole units, or whole blocks for ECB and single-unit CTR), so the parts
/// can be copied and computed on several streams at once.
pub fn split_request(s: &Sqe) -> Vec<Sqe> {
    use kgpu_aes::proto::{self as p, AesParams, Mode};
    let len = s.output.len;
    if s.service != service::AES || len < SPLIT_MIN {
        return vec![*s];
    }
    let Ok(params) = AesParams::from_bytes(&s.params) else {
        return vec![*s];
    };
    let Ok(layout) = p::validate(s.op, s.key.len, len, s.aux.len, s.unit, &params) else {
        return vec![*s];
    };
    let gran = match layout.mode {
        _ if layout.units > 1 => layout.unit_len,
        Mode::Ecb => 16,
        Mode::Ctr if params.iv_mode == p::IV_SINGLE => 16,
        _ => return vec![*s],
    };
    let parts = (len / PART_MIN).clamp(1, MAX_PARTS);
    let step = (len / parts).div_ceil(gran) * gran;
    let mut out = Vec::with_capacity(parts as usize + 1);
    let mut off = 0;
    while off < len {
        let n = step.min(len - off);
        let mut sub = *s;
        sub.input.off += off;
        sub.input.len = n;
        sub.output.off += off;
        sub.output.len = n;
        if layout.units > 1 {
            let first = off / layout.unit_len;
            match params.iv_mode {
                p::IV_PLAIN64 => {
                    let mut q = params;
                    q.start_sector = params.start_sector.wrapping_add(first);
                    sub.params = q.to_bytes();
                }
                p::IV_LIST => {
                    sub.aux.off += first * p::IV_LEN;
                    sub.aux.len = (n / layout.unit_len) * p::IV_LEN;
                }
                _ => {}
            }
        } else if layout.mode == Mode::Ctr {
            let mut q = params;
            q.iv = be128_add(params.iv, off / 16);
            sub.params = q.to_bytes();
            sub.unit = 0;
        }
        out.push(sub);
        off += n;
    }
    out
}

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
    gpus: Vec<Gpu>,
    next_gpu: usize,
    cpu: CpuBackend,
    pieces: VecDeque<Piece>,
    outstanding: usize,
    done: Vec<Cqe>,
    /// Per service (AES, RAID6): requests of at least this many bytes go to
    /// the GPU, smaller ones to the CPU.
    pub crossover: [u64; 2],
    /// Per service (AES, RAID6): what [`CudaBackend::calibrate`] measured of
    /// the GPU path, for the region header.
    figures: [kgpu_common::abi::GpuFigures; 2],
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
        let mut gpus = Vec::new();
        for ordinal in 0..n {
            gpus.push(Self::open_gpu(ordinal, &area)?);
        }
        let mut be = CudaBackend {
            area,
            gpus,
            next_gpu: 0,
            cpu: CpuBackend::new(area, opts.cpu_workers),
            pieces: VecDeque::new(),
            outstanding: 0,
            done: Vec::new(),
            crossover: [opts.gpu_min_bytes.unwrap_or(0); 2],
            figures: [kgpu_common::abi::GpuFigures::NONE; 2],
            decisions: Decisions::default(),
            registered: false,
            wholes: std::collections::HashMap::new(),
        };
        be.register_host()?;
        Ok(be)
    }

    fn open_gpu(ordinal: usize, area: &DataArea) -> Result<Gpu, CudaInitError> {
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
        let (bin, cached) = compile(&arch)?;
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
        let aes = AesGpu::new(&module, &streams[0]).map_err(drv)?;
        let raid6 = Raid6Gpu::new(module).map_err(|e| CudaInitError::Driver(e.to_string()))?;
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
            aes,
            raid6,
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

    /// Whether the GPU kernels accept the request; rejected ones run on the
    /// CPU, which reports the precise error.
    fn gpu_ok(&self, s: &Sqe) -> bool {
        let Ok(ext) = check_sqe(s, self.area.size()) else {
            return false;
        };
        match s.service {
            service::AES => {
                let Ok(p) = kgpu_aes::proto::AesParams::from_bytes(&s.params) else {
                    return false;
                };
                ext.input.len == ext.output.len
                    && kgpu_aes::proto::validate(
                        s.op,
                        ext.key.len,
                        ext.output.len,
                        ext.aux.len,
                        s.unit,
                        &p,
                    )
                    .is_ok()
            }
            service::RAID6 => {
                !ext.in_place
                    && kgpu_raid6::proto::validate(
                        s.op,
                        s.count,
                        s.unit,
                        ext.input.len,
                        ext.output.len,
                        &s.params,
                    )
                    .is_ok()
                    && (ext.input.off | ext.output.off) % kgpu_raid6::gpu::DEVICE_ALIGN == 0
            }
            _ => false,
        }
    }

    /// Measures, per service, the CPU/GPU crossover on this machine: the
    /// smallest probe size at which a GPU round trip beats one CPU thread
    /// (AES-XTS with 4 KiB sectors; RAID6 gen_syndrome over 16 disks). Runs
    /// on a private page-locked scratch buffer, never on the shared data area.
    /// Also records what the kernel's load-time choice needs of the GPU path
    /// ([`Backend::gpu_figures`]): the round trip of the smallest probe and
    /// the rate of one request of the largest (4 MiB, not pipelined: a lower
    /// bound of what the ring sustains). With `fixed` the crossover is that
    /// instead of the measured one (`KGPU_GPU_MIN_BYTES`).
    pub fn calibrate(&mut self, fixed: Option<u64>) -> [u64; 2] {
        use crate::dispatch::CpuServices;
        use crate::workload::{DirectBuf, Job, Rng};
        use kgpu_common::abi::GpuFigures;
        const SCRATCH: usize = 16 << 20;
        const NONE: u64 = 16 << 20;
        const PROBES: [usize; 6] = [4096, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20];
        let none = fixed.map_or([NONE; 2], |f| [f; 2]);
        self.figures = [GpuFigures::NONE; 2];
        if self.area.size() < SCRATCH as u64 || self.gpus.is_empty() {
            self.crossover = none;
            return self.crossover;
        }
        let mut scratch = vec![0u64; SCRATCH / 8];
        // SAFETY: `scratch` outlives its use below; registration is undone
        // before it is freed.
        let registered = self.gpus[0].ctx.bind_to_thread().is_ok()
            && unsafe { sys::cuMemHostRegister_v2(scratch.as_mut_ptr().cast(), SCRATCH, 0) }
                == sys::CUresult::CUDA_SUCCESS;
        if !registered {
            self.crossover = none;
            return self.crossover;
        }
        // SAFETY: the scratch buffer is ours and outlives the swap.
        let scratch_area =
            unsafe { DataArea::from_raw(scratch.as_mut_ptr().cast(), SCRATCH as u64) };
        let shared = std::mem::replace(&mut self.area, scratch_area);
        let services = CpuServices::new();
        let mut rng = Rng::new(7);
        let probe = |svc: usize, size: usize, rng: &mut Rng| -> Job {
            if svc == 0 {
                Job::aes(
                    kgpu_aes::proto::op::XTS_ENC,
                    rng.bytes(32),
                    u64::MAX,
                    rng.bytes(size),
                    4096.min(size as u32),
                    kgpu_aes::proto::AesParams::plain64(0),
                    Vec::new(),
                )
            } else {
                let unit = (size / 14 / 64).max(1) * 64;
                crate::workload::random_raid6_gen(rng, 16, unit as u32)
            }
        };
        let mut result = none;
        for (svc, slot) in result.iter_mut().enumerate() {
            let mut crossover = None;
            let mut rtt = None;
            let mut rate = 0u64;
            for (k, size) in PROBES.into_iter().enumerate() {
                let last = k + 1 == PROBES.len();
                // Past the crossover only the largest probe is still needed.
                if crossover.is_some() && !last {
                    continue;
                }
                let job = probe(svc, size, &mut rng);
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
                let _ = buf.run(&job, &services);
                // The fastest of several runs: noise only ever adds time.
                let mut cpu = Duration::MAX;
                let t = Instant::now();
                while t.elapsed() < Duration::from_millis(5) {
                    let r = Instant::now();
                    let _ = buf.rerun(&services);
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
        result
    }

    /// Times one request through the GPU path on the (scratch) area.
    fn time_gpu_roundtrip(&mut self, job: &crate::workload::Job) -> Option<Duration> {
        use kgpu_common::abi::Extent;
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
            self.submit_gpu(vec![sqe]);
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

    /// The crossover size of a service (bytes of payload).
    fn crossover_of(&self, service: u16) -> u64 {
        match service {
            service::RAID6 => self.crossover[1],
            _ => self.crossover[0],
        }
    }

    /// Enqueues requests on the GPUs: large ones cut in parts, one piece
    /// each; small ones gathered into pieces of about PIECE_BYTES.
    fn submit_gpu(&mut self, reqs: Vec<Sqe>) {
        self.outstanding += reqs.len();
        let mut piece: Vec<Sqe> = Vec::new();
        let mut bytes = 0;
        for s in reqs {
            // Cutting costs launches and API calls on this (one) thread; it
            // pays only while the streams would otherwise sit idle.
            let parts = if self.wholes.len() < STREAMS {
                split_request(&s)
            } else {
                vec![s]
            };
            self.wholes.insert(
                (s.slot, s.gen),
                Whole {
                    sqe: s,
                    parts_left: parts.len() as u32,
                    failed: false,
                },
            );
            if parts.len() > 1 {
                for part in parts {
                    self.enqueue_piece(vec![part]);
                }
                continue;
            }
            bytes += Self::payload(&s);
            piece.push(s);
            if bytes >= PIECE_BYTES {
                self.enqueue_piece(std::mem::take(&mut piece));
                bytes = 0;
            }
        }
        if !piece.is_empty() {
            self.enqueue_piece(piece);
        }
    }

    /// Accounts for one finished part; the request completes with its last part.
    fn finish_part(&mut self, part: &Sqe, ok: bool, nanos: u64, out: &mut Vec<Cqe>) {
        let key = (part.slot, part.gen);
        let Some(w) = self.wholes.get_mut(&key) else {
            return;
        };
        w.failed |= !ok;
        w.parts_left -= 1;
        if w.parts_left == 0 {
            let w = self.wholes.remove(&key).expect("present");
            if w.failed {
                self.decisions.gpu_failed += 1;
                out.push(completion(
                    &w.sqe,
                    Err(Status::BackendError),
                    backend::GPU,
                    nanos,
                ));
            } else {
                self.decisions.gpu += 1;
                out.push(completion(
                    &w.sqe,
                    Ok(w.sqe.output.len),
                    backend::GPU,
                    nanos,
                ));
            }
        }
    }

    /// Hands a request that the GPU refused before anything of it was
    /// queued to the CPU (only possible for a request in one part).
    fn refuse_to_cpu(&mut self, s: Sqe) -> bool {
        match self.wholes.get(&(s.slot, s.gen)) {
            Some(w) if w.parts_left == 1 && !w.failed => {
                self.wholes.remove(&(s.slot, s.gen));
                self.outstanding -= 1;
                self.cpu.submit(vec![s]);
                true
            }
            _ => false,
        }
    }

    fn pick_gpu(&mut self) -> Option<usize> {
        for _ in 0..self.gpus.len() {
            let i = self.next_gpu % self.gpus.len();
            self.next_gpu = self.next_gpu.wrapping_add(1);
            if self.gpus[i].healthy {
                return Some(i);
            }
        }
        None
    }

    /// Copy-in, compute and copy-out of a piece on the next stream.
    fn enqueue_piece(&mut self, reqs: Vec<Sqe>) {
        let Some(gi) = self.pick_gpu() else {
            // No GPU left: the CPU does what it can take whole; parts of a
            // request already partly on a failed GPU fail with it.
            let mut done = Vec::new();
            for s in reqs {
                if !self.refuse_to_cpu(s) {
                    self.finish_part(&s, false, 0, &mut done);
                }
            }
            self.done.append(&mut done);
            return;
        };
        let area = self.area;
        let g = &mut self.gpus[gi];
        let stream = Arc::clone(&g.streams[g.next_stream % g.streams.len()]);
        g.next_stream = g.next_stream.wrapping_add(1);
        let t0 = Instant::now();
        // Extents checked once; a record that fails here (it cannot: the
        // batch passed `gpu_ok`, and parts are sub-ranges) goes to the CPU.
        let mut failed: Vec<Sqe> = Vec::new();
        let mut checked: Vec<(Sqe, CheckedExtents)> = Vec::with_capacity(reqs.len());
        for s in &reqs {
            match check_sqe(s, area.size()) {
                Ok(e) => checked.push((*s, e)),
                Err(_) => failed.push(*s),
            }
        }
        let mut ok: Vec<(Sqe, CheckedExtents)> = Vec::new();
        let r = (|| -> Result<(), DriverError> {
            g.ctx.bind_to_thread()?;
            let cs = stream.cu_stream();
            // Copy-ins for the whole piece first, then the kernels, then the
            // copy-outs: the copy engine streams through the piece.
            for (s, ext) in &checked {
                let (dst, src, len) = match s.service {
                    service::AES => (ext.output.off, ext.input.off, ext.input.len),
                    _ => (ext.input.off, ext.input.off, ext.input.len),
                };
                // SAFETY: both extents fit the (registered) host area and its
                // device mirror; the request owns them while in flight.
                unsafe {
                    h2d(g.mirror + dst, area.ptr(src), len, cs)?;
                    if ext.aux.len > 0 {
                        h2d(
                            g.mirror + ext.aux.off,
                            area.ptr(ext.aux.off),
                            ext.aux.len,
                            cs,
                        )?;
                    }
                    if s.service == service::RAID6 && s.op == kgpu_raid6::proto::op::XOR_SYNDROME {
                        h2d(
                            g.mirror + ext.output.off,
                            area.ptr(ext.output.off),
                            ext.output.len,
                            cs,
                        )?;
                    }
                }
            }
            for (s, ext) in &checked {
                let launched = match s.service {
                    service::AES => {
                        // SAFETY: the key extent fits and is not written while in flight.
                        let key = unsafe { area.slice(ext.key) };
                        let req = AesGpuRequest {
                            op: s.op,
                            unit: s.unit,
                            params: s.params,
                            key_tag: s.key_tag,
                            key,
                            input: ext.input,
                            output: ext.output,
                            aux: ext.aux,
                            data_size: area.size(),
                        };
                        g.aes
                            .launch(&stream, g.mirror, &req)
                            .map_err(|e| e.to_string())
                    }
                    _ => {
                        let req = Raid6GpuRequest {
                            op: s.op,
                            disks: s.count,
                            unit: s.unit,
                            params: s.params,
                            input_off: ext.input.off,
                            input_len: ext.input.len,
                            output_off: ext.output.off,
                            output_len: ext.output.len,
                        };
                        // SAFETY: the extents lie inside the mirror (checked
                        // against the data-area size), which lives as long as
                        // the backend, and only this request uses them.
                        unsafe { g.raid6.launch(&stream, g.mirror, &req) }
                            .map_err(|e| e.to_string())
                    }
                };
                match launched {
                    Ok(()) => ok.push((*s, *ext)),
                    Err(e) => {
                        log::warn!(
                            "GPU launch refused slot {}: {e}; running it on the CPU",
                            s.slot
                        );
                        failed.push(*s);
                    }
                }
            }
            for (_, ext) in &ok {
                // SAFETY: as for the copy-ins.
                unsafe {
                    d2h(
                        area.ptr(ext.output.off),
                        g.mirror + ext.output.off,
                        ext.output.len,
                        cs,
                    )?
                };
            }
            Ok(())
        })();
        let mut done = Vec::new();
        if let Err(e) = r {
            log::error!("GPU {gi}: {e:?}; taking it out of service");
            g.healthy = false;
            // What was enqueued may or may not run; report the piece as a
            // backend error so the submitter redoes it from its own data.
            for s in &reqs {
                self.finish_part(s, false, 0, &mut done);
            }
            self.done.append(&mut done);
            return;
        }
        let ok: Vec<Sqe> = ok.into_iter().map(|(s, _)| s).collect();
        let event = stream.record_event(None);
        for s in failed {
            if !self.refuse_to_cpu(s) {
                self.finish_part(&s, false, 0, &mut done);
            }
        }
        match event {
            Ok(event) => self.pieces.push_back(Piece {
                gpu: gi,
                event,
                parts: ok,
                t0,
            }),
            Err(e) => {
                log::error!("GPU {gi}: recording an event: {e:?}; taking it out of service");
                self.gpus[gi].healthy = false;
                let _ = stream.synchronize();
                for s in &ok {
                    self.finish_part(s, false, 0, &mut done);
                }
            }
        }
        self.done.append(&mut done);
    }

    /// Moves the completions of finished pieces to `out`.
    fn reap_gpu(&mut self, out: &mut Vec<Cqe>) {
        let mut i = 0;
        while i < self.pieces.len() {
            let ok = match self.pieces[i].event.try_is_complete() {
                Ok(false) => {
                    i += 1;
                    continue;
                }
                Ok(true) => true,
                Err(e) => {
                    let g = self.pieces[i].gpu;
                    log::error!("GPU {g}: {e:?}; its requests in flight fail");
                    self.gpus[g].healthy = false;
                    false
                }
            };
            let p = self.pieces.remove(i).expect("index in range");
            let nanos = p.t0.elapsed().as_nanos() as u64;
            for s in &p.parts {
                self.finish_part(s, ok, nanos, out);
            }
        }
    }
}

/// `cuMemcpyHtoDAsync` of `len` bytes.
///
/// # Safety
/// `src` must be valid for `len` bytes (page-locked for an asynchronous copy)
/// and `dst` device memory of at least `len` bytes; both stay valid until the
/// stream passes the copy.
unsafe fn h2d(
    dst: CUdeviceptr,
    src: *const u8,
    len: u64,
    stream: sys::CUstream,
) -> Result<(), DriverError> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: the caller guarantees both ranges.
    unsafe { sys::cuMemcpyHtoDAsync_v2(dst, src.cast(), len as usize, stream) }.result()
}

/// `cuMemcpyDtoHAsync` of `len` bytes.
///
/// # Safety
/// As [`h2d`], the other way round.
unsafe fn d2h(
    dst: *mut u8,
    src: CUdeviceptr,
    len: u64,
    stream: sys::CUstream,
) -> Result<(), DriverError> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: the caller guarantees both ranges.
    unsafe { sys::cuMemcpyDtoHAsync_v2(dst.cast(), src, len as usize, stream) }.result()
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
            if !self.gpu_ok(&s) {
                self.decisions.cpu_invalid += 1;
                cpu.push(s);
            } else if size >= self.crossover_of(s.service) {
                gpu.push(s);
            } else if size >= OVERFLOW_MIN && cpu_queue >= CPU_BACKLOG {
                // Below the crossover one request is faster on the CPU, but
                // with the CPU backlogged the GPU's throughput wins.
                self.decisions.gpu_overflow += 1;
                gpu.push(s);
            } else {
                self.decisions.cpu_small += 1;
                cpu_queue += 1;
                cpu.push(s);
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

    fn gpu_figures(&self) -> Vec<(u16, kgpu_common::abi::GpuFigures)> {
        [service::AES, service::RAID6]
            .into_iter()
            .zip(self.figures)
            .filter(|(_, f)| f.present())
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
