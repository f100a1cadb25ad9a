//! RAID6 (`kgpu-raid6`): P/Q syndromes and recovery with the semantics of
//! Linux `lib/raid6`; on the CPU with SWAR, AVX2 or AVX-512BW, on the GPU
//! with its kernels.

use super::Service;
use crate::shm::DataArea;
use kgpu_common::abi::{service, Sqe, Status};
use kgpu_common::request::CheckedExtents;
use kgpu_raid6::proto::{self as p, Raid6Layout, PARAMS_LEN};

/// The RAID6 service.
#[derive(Default)]
pub struct Raid6;

/// A valid RAID6 request.
#[derive(Clone, Copy, Debug)]
pub struct Raid6Command {
    // Read by the GPU part only.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    params: [u8; PARAMS_LEN],
    layout: Raid6Layout,
    ext: CheckedExtents,
}

impl Raid6Command {
    /// What [`p::validate`] made of the request.
    pub fn layout(&self) -> &Raid6Layout {
        &self.layout
    }
}

impl Service for Raid6 {
    const ID: u16 = service::RAID6;
    const NAME: &'static str = "raid6";
    const GPU: bool = true;
    type Command = Raid6Command;

    fn op_name(op: u16) -> Option<&'static str> {
        Some(p::op::op_name(op))
    }

    fn parse(&self, sqe: &Sqe, ext: &CheckedExtents) -> Result<Raid6Command, Status> {
        if ext.in_place {
            return Err(Status::BadExtent);
        }
        let layout = p::validate(
            sqe.op,
            sqe.count,
            sqe.unit,
            ext.input.len,
            ext.output.len,
            &sqe.params,
        )
        .map_err(kgpu_raid6::proto_status)?;
        Ok(Raid6Command {
            params: sqe.params,
            layout,
            ext: *ext,
        })
    }

    fn execute(&self, cmd: &Raid6Command, area: &DataArea) -> Result<u64, Status> {
        let ext = &cmd.ext;
        // SAFETY: extents fit and input and output are disjoint (checked).
        let (input, output) = unsafe { (area.slice(ext.input), area.slice_mut(ext.output)) };
        let algo = kgpu_raid6::cpu::Algo::best();
        // SAFETY: the layout is what `validate` made of this request in
        // `parse`, for these extents' lengths.
        unsafe { kgpu_raid6::cpu::execute_layout(algo, &cmd.layout, input, output) }
            .map_err(|e| e.status())
    }

    #[cfg(feature = "cuda")]
    fn gpu(&self) -> Option<&dyn super::gpu::DynGpu> {
        Some(self)
    }
}

#[cfg(feature = "cuda")]
mod gpu {
    use super::{p, Raid6, Raid6Command};
    use crate::services::gpu::{GpuService, HostToDevice};
    use crate::shm::DataArea;
    use crate::workload::{Job, Rng};
    use cudarc::driver::sys::CUdeviceptr;
    use cudarc::driver::{CudaModule, CudaStream};
    use kgpu_common::abi::Extent;
    use kgpu_raid6::gpu::{Raid6Gpu, Raid6GpuRequest, DEVICE_ALIGN};
    use std::sync::Arc;

    impl GpuService for Raid6 {
        type Kernels = Raid6Gpu;
        const SOURCE: &'static str = kgpu_raid6::gpu::SOURCE;

        fn load(
            &self,
            module: &Arc<CudaModule>,
            _stream: &Arc<CudaStream>,
        ) -> Result<Raid6Gpu, String> {
            Raid6Gpu::new(Arc::clone(module)).map_err(|e| e.to_string())
        }

        /// Extents aligned for the kernels' vector loads.
        fn accepts(&self, cmd: &Raid6Command) -> bool {
            (cmd.ext.input.off | cmd.ext.output.off).is_multiple_of(DEVICE_ALIGN)
        }

        /// The input, any aux bytes, and for XOR_SYNDROME the old P and Q.
        fn copy_in(&self, cmd: &Raid6Command, out: &mut Vec<HostToDevice>) {
            let ext = &cmd.ext;
            out.push(HostToDevice::same(ext.input));
            if ext.aux.len > 0 {
                out.push(HostToDevice::same(ext.aux));
            }
            if cmd.layout.op.code() == p::op::XOR_SYNDROME {
                out.push(HostToDevice::same(ext.output));
            }
        }

        fn copy_out(&self, cmd: &Raid6Command) -> Extent {
            cmd.ext.output
        }

        unsafe fn launch(
            &self,
            kernels: &Raid6Gpu,
            cmd: &Raid6Command,
            stream: &Arc<CudaStream>,
            mirror: CUdeviceptr,
            _area: &DataArea,
        ) -> Result<(), String> {
            let (ext, layout) = (&cmd.ext, &cmd.layout);
            let req = Raid6GpuRequest {
                op: layout.op.code(),
                disks: layout.disks,
                unit: layout.unit,
                params: cmd.params,
                input_off: ext.input.off,
                input_len: ext.input.len,
                output_off: ext.output.off,
                output_len: ext.output.len,
            };
            // SAFETY: the extents lie inside the mirror (checked against the
            // data-area size), which the caller keeps allocated, and only this
            // request uses them; the layout is what `validate` made of them.
            unsafe { kernels.launch_layout(stream, mirror, &req, layout) }
                .map_err(|e| e.to_string())
        }

        /// gen_syndrome over 16 disks.
        fn probe(&self, size: usize, rng: &mut Rng) -> Job {
            let unit = (size / 14 / 64).max(1) * 64;
            crate::workload::random_raid6_gen(rng, 16, unit as u32)
        }
    }
}
