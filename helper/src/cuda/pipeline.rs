//! The GPU pipeline: requests cut into parts and gathered into pieces, each
//! piece's copy-ins, kernels and copy-out queued on one stream, and its
//! completions posted when its event fires.

use super::CudaBackend;
use crate::backend::completion;
use crate::backend::Backend;
use crate::services::gpu::{Admission, DynGpu, GpuCommand, HostToDevice};
use crate::services::Registry;
use cudarc::driver::sys::{self, CUdeviceptr};
use cudarc::driver::{CudaEvent, DriverError};
use kgpu_common::abi::{backend, Cqe, Extent, Sqe, Status};
use kgpu_common::request::check_sqe;
use std::sync::Arc;
use std::time::Instant;

/// Target bytes of one piece (one stream's copy-in, compute, copy-out).
pub const PIECE_BYTES: u64 = 2 << 20;
/// Streams per GPU.
pub const STREAMS: usize = 4;

/// Requests at least this large are cut into parts (when their service can
/// cut them), when the GPU has too few requests in flight to keep its
/// streams busy otherwise.
pub const SPLIT_MIN: u64 = 4 << 20;
/// Smallest part.
pub const PART_MIN: u64 = 1 << 20;
/// Most parts per request (one per stream).
pub const MAX_PARTS: u64 = STREAMS as u64;

/// A request for the GPU, or a part of one: its record, the position of its
/// service in the registry and what the service parsed of it.
pub(super) struct GpuJob {
    pub(super) sqe: Sqe,
    pub(super) svc: usize,
    pub(super) cmd: GpuCommand,
}

/// A piece in flight: an event on one stream and the request parts it finishes.
pub(super) struct Piece {
    gpu: usize,
    event: CudaEvent,
    parts: Vec<Sqe>,
    t0: Instant,
}

/// A request on the GPU, possibly cut in parts that run on several streams.
pub(super) struct Whole {
    sqe: Sqe,
    parts_left: u32,
    failed: bool,
}

/// Cuts a request of at least [`SPLIT_MIN`] bytes of output into parts of
/// its service's grain (about a [`PART_MIN`] each, at most [`MAX_PARTS`])
/// that are valid requests themselves, so they can be copied and computed on
/// several streams at once; `None` to run it whole.
fn cut(services: &Registry, job: &GpuJob) -> Option<Vec<GpuJob>> {
    let len = job.sqe.output.len;
    if len < SPLIT_MIN {
        return None;
    }
    let gpu = services.get(job.svc)?.gpu()?;
    let gran = gpu.grain(&job.cmd).filter(|g| *g > 0)?;
    let parts = (len / PART_MIN).clamp(1, MAX_PARTS);
    let step = (len / parts).div_ceil(gran) * gran;
    let mut out = Vec::with_capacity(parts as usize + 1);
    let mut off = 0;
    while off < len {
        let n = step.min(len - off);
        let (sqe, cmd) = gpu.part(&job.sqe, &job.cmd, off, n)?;
        out.push(GpuJob {
            sqe,
            svc: job.svc,
            cmd,
        });
        off += n;
    }
    Some(out)
}

/// The records of the parts the backend cuts a valid request into (the
/// request alone when it is not cut); see [`SPLIT_MIN`].
pub fn split_request(s: &Sqe) -> Vec<Sqe> {
    let services = Registry::new();
    let parts = check_sqe(s, u64::MAX).ok().and_then(|ext| {
        let (svc, entry) = services.find(s.service)?;
        let Admission::Gpu(cmd) = entry.gpu()?.admit(s, &ext, true) else {
            return None;
        };
        cut(&services, &GpuJob { sqe: *s, svc, cmd })
    });
    match parts {
        Some(parts) if parts.len() > 1 => parts.into_iter().map(|p| p.sqe).collect(),
        _ => vec![*s],
    }
}

impl CudaBackend {
    /// Enqueues requests on the GPUs: large ones cut in parts, one piece
    /// each; small ones gathered into pieces of about PIECE_BYTES.
    pub(super) fn submit_gpu(&mut self, reqs: Vec<GpuJob>) {
        self.outstanding += reqs.len();
        let mut piece: Vec<GpuJob> = Vec::new();
        let mut bytes = 0;
        for job in reqs {
            let s = job.sqe;
            // Cutting costs launches and API calls on this (one) thread; it
            // pays only while the streams would otherwise sit idle.
            let parts = if self.wholes.len() < STREAMS {
                cut(self.services.registry(), &job).filter(|p| p.len() > 1)
            } else {
                None
            };
            self.wholes.insert(
                (s.slot, s.gen),
                Whole {
                    sqe: s,
                    parts_left: parts.as_ref().map_or(1, Vec::len) as u32,
                    failed: false,
                },
            );
            if let Some(parts) = parts {
                for part in parts {
                    self.enqueue_piece(vec![part]);
                }
                continue;
            }
            bytes += Self::payload(&s);
            piece.push(job);
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
    fn enqueue_piece(&mut self, reqs: Vec<GpuJob>) {
        let Some(gi) = self.pick_gpu() else {
            // No GPU left: the CPU does what it can take whole; parts of a
            // request already partly on a failed GPU fail with it.
            let mut done = Vec::new();
            for j in reqs {
                if !self.refuse_to_cpu(j.sqe) {
                    self.finish_part(&j.sqe, false, 0, &mut done);
                }
            }
            self.done.append(&mut done);
            return;
        };
        let area = self.area;
        let services = Arc::clone(&self.services);
        let registry = services.registry();
        let g = &mut self.gpus[gi];
        let stream = Arc::clone(&g.streams[g.next_stream % g.streams.len()]);
        g.next_stream = g.next_stream.wrapping_add(1);
        let t0 = Instant::now();
        // The services' copies, checked to lie inside the area (and so its
        // mirror); a request whose copies do not (it cannot: they are its
        // checked extents) goes to the CPU.
        let fits = |e: Extent| e.fits(area.size());
        let mut failed: Vec<Sqe> = Vec::new();
        let mut copies: Vec<HostToDevice> = Vec::new();
        let mut checked: Vec<(&GpuJob, &dyn DynGpu)> = Vec::with_capacity(reqs.len());
        for j in &reqs {
            let Some(gpu) = registry.get(j.svc).and_then(|s| s.gpu()) else {
                failed.push(j.sqe);
                continue;
            };
            let start = copies.len();
            gpu.copy_in(&j.cmd, &mut copies);
            let inside = copies[start..]
                .iter()
                .all(|c| fits(Extent::new(c.dst, c.len)) && fits(Extent::new(c.src, c.len)));
            if inside && fits(gpu.copy_out(&j.cmd)) {
                checked.push((j, gpu));
            } else {
                copies.truncate(start);
                failed.push(j.sqe);
            }
        }
        let mut ok: Vec<(Sqe, Extent)> = Vec::new();
        let r = (|| -> Result<(), DriverError> {
            g.ctx.bind_to_thread()?;
            let cs = stream.cu_stream();
            // Copy-ins for the whole piece first, then the kernels, then the
            // copy-outs: the copy engine streams through the piece.
            for c in &copies {
                // SAFETY: both ranges fit the (registered) host area and its
                // device mirror; the request owns them while in flight.
                unsafe { h2d(g.mirror + c.dst, area.ptr(c.src), c.len, cs)? };
            }
            for (j, gpu) in &checked {
                let launched = match g.kernels.get(j.svc).and_then(|k| k.as_deref()) {
                    // SAFETY: the mirror is device memory of the area's size
                    // in this context and lives as long as the backend; the
                    // request's extents (checked against the area) are used
                    // by it alone while in flight.
                    Some(k) => unsafe { gpu.launch(k, &j.cmd, &stream, g.mirror, &area) },
                    None => Err("no kernels on this GPU".to_string()),
                };
                match launched {
                    Ok(()) => ok.push((j.sqe, gpu.copy_out(&j.cmd))),
                    Err(e) => {
                        log::warn!(
                            "GPU launch refused slot {}: {e}; running it on the CPU",
                            j.sqe.slot
                        );
                        failed.push(j.sqe);
                    }
                }
            }
            for (_, out) in &ok {
                // SAFETY: as for the copy-ins.
                unsafe { d2h(area.ptr(out.off), g.mirror + out.off, out.len, cs)? };
            }
            Ok(())
        })();
        let mut done = Vec::new();
        if let Err(e) = r {
            log::error!("GPU {gi}: {e:?}; taking it out of service");
            g.healthy = false;
            // What was enqueued may or may not run; report the piece as a
            // backend error so the submitter redoes it from its own data.
            for j in &reqs {
                self.finish_part(&j.sqe, false, 0, &mut done);
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
    pub(super) fn reap_gpu(&mut self, out: &mut Vec<Cqe>) {
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
