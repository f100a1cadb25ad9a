//! CUDA backend: the kernels of `cuda/raid6.cu` and their launch code.
//!
//! The helper compiles [`SOURCE`] (with the other services' sources) with
//! NVRTC, loads the module and hands it to [`Raid6Gpu::new`]. Requests run
//! on a device buffer that mirrors the data area: a request's input and
//! output extents are at the same offsets from `data_base` as in the data
//! area. The layout of each operation is that of [`crate::proto`].

use crate::gf::{GFEXI, GFEXP, GFINV};
use crate::proto::{self, ProtoError, Raid6Layout, Raid6Op, PARAMS_LEN};
use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{
    CudaFunction, CudaModule, CudaStream, DriverError, LaunchConfig, PushKernelArg,
};
use kgpu_common::abi::Status;
use std::sync::Arc;

/// CUDA C source of the kernels (NVRTC, no headers).
pub const SOURCE: &str = include_str!("../cuda/raid6.cu");

/// Names of the kernels defined by [`SOURCE`] (`extern "C"`).
pub const KERNELS: [&str; 4] = [
    "kgpu_raid6_gen_syndrome",
    "kgpu_raid6_xor_syndrome",
    "kgpu_raid6_recov_2data",
    "kgpu_raid6_recov_datap",
];

/// Required alignment of the input and output extents on the device.
pub const DEVICE_ALIGN: u64 = 16;

/// Threads per block of every launch.
const BLOCK: u32 = 256;
/// Upper bound on the grid (the kernels loop over the rest).
const MAX_GRID: u64 = 1 << 20;

/// One request, as placed in the device mirror of the data area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Raid6GpuRequest {
    /// `Sqe::op`.
    pub op: u16,
    /// `Sqe::count`: disks including P and Q.
    pub disks: u32,
    /// `Sqe::unit`: bytes per disk.
    pub unit: u32,
    /// `Sqe::params`.
    pub params: [u8; PARAMS_LEN],
    /// Offset of the input extent from the start of the data area.
    pub input_off: u64,
    /// Length of the input extent.
    pub input_len: u64,
    /// Offset of the output extent from the start of the data area.
    pub output_off: u64,
    /// Length of the output extent.
    pub output_len: u64,
}

/// Why a GPU request was not launched (or failed to launch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Raid6GpuError {
    /// The request failed validation.
    Proto(ProtoError),
    /// The input and output extents overlap.
    Overlap,
    /// An extent's device address is not a multiple of [`DEVICE_ALIGN`]; the
    /// request is valid and should run on the CPU backend instead.
    Misaligned,
    /// A CUDA driver call failed.
    Driver(DriverError),
}

impl Raid6GpuError {
    /// The completion status reported for this error.
    pub fn status(&self) -> Status {
        match self {
            Raid6GpuError::Proto(e) => crate::proto_status(*e),
            Raid6GpuError::Overlap => Status::BadExtent,
            Raid6GpuError::Misaligned | Raid6GpuError::Driver(_) => Status::BackendError,
        }
    }
}

impl From<ProtoError> for Raid6GpuError {
    fn from(e: ProtoError) -> Self {
        Raid6GpuError::Proto(e)
    }
}

impl From<DriverError> for Raid6GpuError {
    fn from(e: DriverError) -> Self {
        Raid6GpuError::Driver(e)
    }
}

impl core::fmt::Display for Raid6GpuError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Raid6GpuError::Proto(e) => f.write_str(e.as_str()),
            Raid6GpuError::Overlap => f.write_str("input and output extents overlap"),
            Raid6GpuError::Misaligned => f.write_str("extent not 16-byte aligned on the device"),
            Raid6GpuError::Driver(e) => write!(f, "CUDA driver error: {e:?}"),
        }
    }
}

impl std::error::Error for Raid6GpuError {}

/// The RAID6 kernels of a loaded module.
#[derive(Debug)]
pub struct Raid6Gpu {
    gen: CudaFunction,
    xor: CudaFunction,
    rec2: CudaFunction,
    recp: CudaFunction,
}

impl Raid6Gpu {
    /// Looks the kernels up in a module compiled from (a source containing) [`SOURCE`].
    pub fn new(module: Arc<CudaModule>) -> Result<Self, Raid6GpuError> {
        Ok(Raid6Gpu {
            gen: module.load_function(KERNELS[0])?,
            xor: module.load_function(KERNELS[1])?,
            rec2: module.load_function(KERNELS[2])?,
            recp: module.load_function(KERNELS[3])?,
        })
    }

    /// Validates `req` and enqueues its kernel on `stream` (asynchronous: the
    /// output is ready once the stream reaches this point).
    ///
    /// For `XOR_SYNDROME` the output extent must already hold the old P and Q
    /// on the device.
    ///
    /// # Safety
    ///
    /// `data_base` is a device address in `stream`'s context such that the
    /// input and output extents of `req`, taken from `data_base`, are device
    /// memory that stays allocated until the kernel completes, and that no
    /// other work writes the input or touches the output meanwhile.
    pub unsafe fn launch(
        &self,
        stream: &Arc<CudaStream>,
        data_base: CUdeviceptr,
        req: &Raid6GpuRequest,
    ) -> Result<(), Raid6GpuError> {
        let layout = proto::validate(
            req.op,
            req.disks,
            req.unit,
            req.input_len,
            req.output_len,
            &req.params,
        )?;
        // SAFETY: `layout` is what `validate` made of `req`; the rest the
        // caller guarantees.
        unsafe { self.launch_layout(stream, data_base, req, &layout) }
    }

    /// [`Raid6Gpu::launch`] of a request already validated: `layout` is what
    /// [`proto::validate`] returned for `req` (whose `op`, `disks`, `unit`
    /// and `params` are not read again). The extents' overlap and device
    /// alignment are still checked.
    ///
    /// # Safety
    ///
    /// As for [`Raid6Gpu::launch`], and `layout` must come from
    /// [`proto::validate`] of `req`'s fields.
    pub unsafe fn launch_layout(
        &self,
        stream: &Arc<CudaStream>,
        data_base: CUdeviceptr,
        req: &Raid6GpuRequest,
        layout: &Raid6Layout,
    ) -> Result<(), Raid6GpuError> {
        debug_assert_eq!(
            (layout.input_len, layout.output_len),
            (req.input_len, req.output_len)
        );
        let in_end = req.input_off.checked_add(req.input_len);
        let out_end = req.output_off.checked_add(req.output_len);
        let (Some(in_end), Some(out_end)) = (in_end, out_end) else {
            return Err(Raid6GpuError::Overlap);
        };
        if req.input_off < out_end && req.output_off < in_end {
            return Err(Raid6GpuError::Overlap);
        }
        let inp = data_base.wrapping_add(req.input_off);
        let out = data_base.wrapping_add(req.output_off);
        if (inp | out) & (DEVICE_ALIGN - 1) != 0 {
            return Err(Raid6GpuError::Misaligned);
        }
        let unit = layout.unit as u64;
        let ndata = layout.data_disks();
        let nvec = unit / 16;
        let grid = nvec.div_ceil(BLOCK as u64).clamp(1, MAX_GRID) as u32;
        let cfg = LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        match layout.op {
            Raid6Op::GenSyndrome => {
                let mut b = stream.launch_builder(&self.gen);
                b.arg(&inp).arg(&out).arg(&ndata).arg(&unit);
                // SAFETY: kgpu_raid6_gen_syndrome(const u8*, u8*, u32, u64):
                // the arguments match in number and type; the kernel reads
                // ndata*unit bytes at inp and writes 2*unit bytes at out, the
                // validated extents the caller vouches for.
                unsafe { b.launch(cfg) }?;
            }
            Raid6Op::XorSyndrome { start, stop } => {
                let nin = stop - start + 1;
                let gstart = GFEXP[start as usize & 0xff] as u32;
                let mut b = stream.launch_builder(&self.xor);
                b.arg(&inp)
                    .arg(&out)
                    .arg(&nin)
                    .arg(&unit)
                    .arg(&start)
                    .arg(&gstart);
                // SAFETY: kgpu_raid6_xor_syndrome(const u8*, u8*, u32, u64, u32,
                // u32): matching arguments; reads nin*unit bytes at inp and
                // updates 2*unit bytes at out (validated extents).
                unsafe { b.launch(cfg) }?;
            }
            Raid6Op::Recov2Data { faila, failb } => {
                let (fa, fb) = (faila as usize, failb as usize);
                let pbmul = GFEXI[fb - fa] as u32;
                let qmul = GFINV[(GFEXP[fa] ^ GFEXP[fb]) as usize] as u32;
                let mut b = stream.launch_builder(&self.rec2);
                b.arg(&inp)
                    .arg(&out)
                    .arg(&ndata)
                    .arg(&unit)
                    .arg(&faila)
                    .arg(&failb)
                    .arg(&pbmul)
                    .arg(&qmul);
                // SAFETY: kgpu_raid6_recov_2data(const u8*, u8*, u32, u64, u32,
                // u32, u32, u32): matching arguments; reads disks*unit bytes
                // at inp and writes 2*unit bytes at out (validated extents).
                unsafe { b.launch(cfg) }?;
            }
            Raid6Op::RecovDataP { faila } => {
                let qmul = GFINV[GFEXP[faila as usize] as usize] as u32;
                let mut b = stream.launch_builder(&self.recp);
                b.arg(&inp)
                    .arg(&out)
                    .arg(&ndata)
                    .arg(&unit)
                    .arg(&faila)
                    .arg(&qmul);
                // SAFETY: kgpu_raid6_recov_datap(const u8*, u8*, u32, u64, u32,
                // u32): matching arguments; reads disks*unit bytes at inp and
                // writes 2*unit bytes at out (validated extents).
                unsafe { b.launch(cfg) }?;
            }
        }
        Ok(())
    }
}
