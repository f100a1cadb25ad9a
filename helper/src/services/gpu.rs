//! The GPU part of a service (feature `cuda`), and the form the CUDA backend
//! ([`crate::cuda`]) sees it in.
//!
//! The backend keeps a mirror of the data area on each GPU (same offsets as
//! on the host). For each request it issues the service's copy-ins, then its
//! kernels, then the copy-out of its output, on one stream; it cuts large
//! requests of services that allow it into parts on several streams.

use super::Service;
use crate::shm::DataArea;
use crate::workload::{Job, Rng};
use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{CudaModule, CudaStream};
use kgpu_common::abi::{Extent, Sqe};
use kgpu_common::request::CheckedExtents;
use std::any::Any;
use std::sync::Arc;

/// A copy from the host data area to its device mirror: `len` bytes from
/// host offset `src` to device offset `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostToDevice {
    /// Offset in the device mirror.
    pub dst: u64,
    /// Offset in the host data area.
    pub src: u64,
    /// Bytes.
    pub len: u64,
}

impl HostToDevice {
    /// The copy of `from` on the host to `to` in the mirror (`from.len` bytes).
    pub fn new(to: u64, from: Extent) -> Self {
        HostToDevice {
            dst: to,
            src: from.off,
            len: from.len,
        }
    }

    /// The copy of an extent to the same offsets in the mirror.
    pub fn same(e: Extent) -> Self {
        Self::new(e.off, e)
    }
}

/// What a service with CUDA kernels adds to [`Service`].
pub trait GpuService: Service {
    /// Its kernels on one GPU (looked up in that GPU's module).
    type Kernels: Send + 'static;
    /// The CUDA C source of its kernels (NVRTC, no system headers), compiled
    /// into one module with the other services' sources.
    const SOURCE: &'static str;

    /// Looks its kernels up in a module compiled from the services' sources;
    /// `stream` (of the same context) for any upload they need, synchronised
    /// before returning.
    fn load(
        &self,
        module: &Arc<CudaModule>,
        stream: &Arc<CudaStream>,
    ) -> Result<Self::Kernels, String>;

    /// Whether its kernels take a parsed request; the others run on the CPU.
    fn accepts(&self, _cmd: &Self::Command) -> bool {
        true
    }

    /// The step, in output bytes, at which a request can be cut into parts
    /// that are requests of their own (`None`: it cannot be cut).
    fn grain(&self, _cmd: &Self::Command) -> Option<u64> {
        None
    }

    /// The part of `cmd` (of record `sqe`) that covers its output bytes
    /// `off .. off + len` (`off` a multiple of [`GpuService::grain`], `len`
    /// too but at the end): the part's record and command. Only called when
    /// `grain` gave a step.
    fn part(&self, sqe: &Sqe, cmd: &Self::Command, off: u64, len: u64) -> (Sqe, Self::Command) {
        let _ = (off, len);
        (*sqe, cmd.clone())
    }

    /// Appends the copies to the mirror its kernels need, in order.
    fn copy_in(&self, cmd: &Self::Command, out: &mut Vec<HostToDevice>);

    /// The extent its kernels write, copied back to the host after them.
    fn copy_out(&self, cmd: &Self::Command) -> Extent;

    /// Enqueues its kernels for `cmd` on `stream`, after the copy-ins.
    ///
    /// # Safety
    /// `mirror` is device memory of `area.size()` bytes in `stream`'s
    /// context that stays allocated until the stream has passed the kernels;
    /// the command's extents (checked against `area`) are touched by no other
    /// work meanwhile.
    unsafe fn launch(
        &self,
        kernels: &Self::Kernels,
        cmd: &Self::Command,
        stream: &Arc<CudaStream>,
        mirror: CUdeviceptr,
        area: &DataArea,
    ) -> Result<(), String>;

    /// A request of about `size` payload bytes for calibration: the backend
    /// times it on the GPU and on the CPU to find the crossover, and its
    /// round trip and rate for the region header.
    fn probe(&self, size: usize, rng: &mut Rng) -> Job;
}

/// A parsed request of some service on its way through the GPU pipeline.
pub type GpuCommand = Box<dyn Any + Send>;

/// What [`DynGpu::admit`] made of a request.
pub enum Admission {
    /// The service refused it, or its kernels do not take it: it goes to
    /// the CPU, which reports the error if there is one.
    Refused,
    /// Valid and taken by the kernels, but not wanted on the GPU.
    Cpu,
    /// Parsed, for the GPU.
    Gpu(GpuCommand),
}

/// A [`GpuService`] behind a pointer, as the CUDA backend holds it.
pub trait DynGpu: Sync {
    /// [`GpuService::SOURCE`].
    fn source(&self) -> &'static str;
    /// [`GpuService::load`].
    fn load(
        &self,
        module: &Arc<CudaModule>,
        stream: &Arc<CudaStream>,
    ) -> Result<Box<dyn Any + Send>, String>;
    /// Parses a request (with [`Service::parse`]) and asks the kernels
    /// ([`GpuService::accepts`]); `wanted`: whether the caller would run it
    /// on the GPU (if not, nothing is kept).
    fn admit(&self, sqe: &Sqe, ext: &CheckedExtents, wanted: bool) -> Admission;
    /// [`GpuService::grain`].
    fn grain(&self, cmd: &GpuCommand) -> Option<u64>;
    /// [`GpuService::part`]; `None` for a command of another service.
    fn part(&self, sqe: &Sqe, cmd: &GpuCommand, off: u64, len: u64) -> Option<(Sqe, GpuCommand)>;
    /// [`GpuService::copy_in`].
    fn copy_in(&self, cmd: &GpuCommand, out: &mut Vec<HostToDevice>);
    /// [`GpuService::copy_out`].
    fn copy_out(&self, cmd: &GpuCommand) -> Extent;
    /// [`GpuService::launch`].
    ///
    /// # Safety
    /// As for [`GpuService::launch`].
    unsafe fn launch(
        &self,
        kernels: &(dyn Any + Send),
        cmd: &GpuCommand,
        stream: &Arc<CudaStream>,
        mirror: CUdeviceptr,
        area: &DataArea,
    ) -> Result<(), String>;
    /// [`GpuService::probe`].
    fn probe(&self, size: usize, rng: &mut Rng) -> Job;
}

impl<S: GpuService> DynGpu for S {
    fn source(&self) -> &'static str {
        S::SOURCE
    }

    fn load(
        &self,
        module: &Arc<CudaModule>,
        stream: &Arc<CudaStream>,
    ) -> Result<Box<dyn Any + Send>, String> {
        Ok(Box::new(GpuService::load(self, module, stream)?))
    }

    fn admit(&self, sqe: &Sqe, ext: &CheckedExtents, wanted: bool) -> Admission {
        match self.parse(sqe, ext) {
            Ok(cmd) if self.accepts(&cmd) && wanted => Admission::Gpu(Box::new(cmd)),
            Ok(cmd) if self.accepts(&cmd) => Admission::Cpu,
            _ => Admission::Refused,
        }
    }

    fn grain(&self, cmd: &GpuCommand) -> Option<u64> {
        GpuService::grain(self, cmd.downcast_ref::<S::Command>()?)
    }

    fn part(&self, sqe: &Sqe, cmd: &GpuCommand, off: u64, len: u64) -> Option<(Sqe, GpuCommand)> {
        let (s, c) = GpuService::part(self, sqe, cmd.downcast_ref::<S::Command>()?, off, len);
        Some((s, Box::new(c)))
    }

    fn copy_in(&self, cmd: &GpuCommand, out: &mut Vec<HostToDevice>) {
        if let Some(c) = cmd.downcast_ref::<S::Command>() {
            GpuService::copy_in(self, c, out);
        }
    }

    fn copy_out(&self, cmd: &GpuCommand) -> Extent {
        cmd.downcast_ref::<S::Command>()
            .map_or(Extent::new(0, 0), |c| GpuService::copy_out(self, c))
    }

    unsafe fn launch(
        &self,
        kernels: &(dyn Any + Send),
        cmd: &GpuCommand,
        stream: &Arc<CudaStream>,
        mirror: CUdeviceptr,
        area: &DataArea,
    ) -> Result<(), String> {
        let (Some(k), Some(c)) = (
            kernels.downcast_ref::<S::Kernels>(),
            cmd.downcast_ref::<S::Command>(),
        ) else {
            return Err(format!("not a request or the kernels of {}", S::NAME));
        };
        // SAFETY: as the caller guarantees.
        unsafe { GpuService::launch(self, k, c, stream, mirror, area) }
    }

    fn probe(&self, size: usize, rng: &mut Rng) -> Job {
        GpuService::probe(self, size, rng)
    }
}
