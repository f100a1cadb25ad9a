//! AES (`kgpu-aes`): ECB, CBC, CTR and XTS over units; on the CPU with
//! AES-NI or VAES, on the GPU with the table-driven kernels.

use super::Service;
use crate::dispatch::copy_to_output;
use crate::shm::DataArea;
use kgpu_aes::proto::{self as p, AesParams, Layout, Mode};
use kgpu_common::abi::{service, Sqe, Status};
use kgpu_common::request::CheckedExtents;

/// The AES service, with its CPU key cache.
#[derive(Default)]
pub struct Aes {
    cpu: kgpu_aes::cpu::AesCpu,
}

/// A valid AES request.
#[derive(Clone, Copy, Debug)]
pub struct AesCommand {
    // Read by the GPU part only.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    op: u16,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    unit: u32,
    key_tag: u64,
    params: AesParams,
    layout: Layout,
    ext: CheckedExtents,
}

impl AesCommand {
    /// What [`p::validate`] made of the request.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
}

impl Service for Aes {
    const ID: u16 = service::AES;
    const NAME: &'static str = "aes";
    const GPU: bool = true;
    type Command = AesCommand;

    fn op_name(op: u16) -> Option<&'static str> {
        Some(p::op::op_name(op))
    }

    fn parse(&self, sqe: &Sqe, ext: &CheckedExtents) -> Result<AesCommand, Status> {
        if ext.input.len != ext.output.len {
            return Err(Status::BadLength);
        }
        let params = AesParams::from_bytes(&sqe.params).map_err(kgpu_aes::proto_status)?;
        let layout = p::validate(
            sqe.op,
            ext.key.len,
            ext.output.len,
            ext.aux.len,
            sqe.unit,
            &params,
        )
        .map_err(kgpu_aes::proto_status)?;
        Ok(AesCommand {
            op: sqe.op,
            unit: sqe.unit,
            key_tag: sqe.key_tag,
            params,
            layout,
            ext: *ext,
        })
    }

    fn execute(&self, cmd: &AesCommand, area: &DataArea) -> Result<u64, Status> {
        let ext = &cmd.ext;
        copy_to_output(ext, area);
        // SAFETY: extents were checked to fit; the output is disjoint from the
        // key and aux extents, and the request owns its extents while in flight.
        let (key, aux, data) = unsafe {
            (
                area.slice(ext.key),
                area.slice(ext.aux),
                area.slice_mut(ext.output),
            )
        };
        let keys = self
            .cpu
            .keys(cmd.key_tag, key, cmd.layout.mode == Mode::Xts)
            .map_err(|e| e.status())?;
        kgpu_aes::cpu::run(&keys, &cmd.layout, &cmd.params, aux, data).map_err(|e| e.status())?;
        Ok(cmd.layout.data_len)
    }

    #[cfg(feature = "cuda")]
    fn gpu(&self) -> Option<&dyn super::gpu::DynGpu> {
        Some(self)
    }
}

#[cfg(feature = "cuda")]
mod gpu {
    use super::{p, Aes, AesCommand, Mode};
    use crate::services::gpu::{GpuService, HostToDevice};
    use crate::shm::DataArea;
    use crate::workload::{Job, Rng};
    use cudarc::driver::sys::CUdeviceptr;
    use cudarc::driver::{CudaModule, CudaStream};
    use kgpu_aes::gpu::{AesGpu, AesGpuRequest};
    use kgpu_common::abi::{Extent, Sqe};
    use kgpu_common::request::CheckedExtents;
    use std::sync::Arc;

    /// Adds `n` to a 128-bit big-endian counter.
    fn be128_add(iv: [u8; 16], n: u64) -> [u8; 16] {
        u128::from_be_bytes(iv)
            .wrapping_add(u128::from(n))
            .to_be_bytes()
    }

    impl GpuService for Aes {
        type Kernels = AesGpu;
        const SOURCE: &'static str = kgpu_aes::gpu::SOURCE;

        fn load(
            &self,
            module: &Arc<CudaModule>,
            stream: &Arc<CudaStream>,
        ) -> Result<AesGpu, String> {
            AesGpu::new(module, stream).map_err(|e| format!("{e:?}"))
        }

        /// Whole units, or whole blocks for ECB and single-unit CTR.
        fn grain(&self, cmd: &AesCommand) -> Option<u64> {
            let layout = &cmd.layout;
            match layout.mode {
                _ if layout.units > 1 => Some(layout.unit_len),
                Mode::Ecb => Some(16),
                Mode::Ctr if cmd.params.iv_mode == p::IV_SINGLE => Some(16),
                _ => None,
            }
        }

        /// The part's units keep their IVs (plain64 sectors, listed IVs), a
        /// single CTR unit its counter; a part of a single unit is one
        /// unit of its length.
        fn part(&self, s: &Sqe, cmd: &AesCommand, off: u64, n: u64) -> (Sqe, AesCommand) {
            let (params, layout) = (cmd.params, cmd.layout);
            let mut sub = *s;
            sub.input.off += off;
            sub.input.len = n;
            sub.output.off += off;
            sub.output.len = n;
            let mut c = *cmd;
            if layout.units > 1 {
                let first = off / layout.unit_len;
                match params.iv_mode {
                    p::IV_PLAIN64 => {
                        let mut q = params;
                        q.start_sector = params.start_sector.wrapping_add(first);
                        sub.params = q.to_bytes();
                        c.params = q;
                    }
                    p::IV_LIST => {
                        sub.aux.off += first * p::IV_LEN;
                        sub.aux.len = (n / layout.unit_len) * p::IV_LEN;
                    }
                    _ => {}
                }
                c.layout.units = n / layout.unit_len;
            } else {
                if layout.mode == Mode::Ctr {
                    let mut q = params;
                    q.iv = be128_add(params.iv, off / 16);
                    sub.params = q.to_bytes();
                    c.params = q;
                }
                sub.unit = 0;
                c.unit = 0;
                c.layout.unit_len = n;
            }
            c.layout.data_len = n;
            c.ext = CheckedExtents {
                input: sub.input,
                output: sub.output,
                aux: sub.aux,
                ..cmd.ext
            };
            (sub, c)
        }

        /// The input into the output extent (the kernels work in place
        /// there), and the IV list.
        fn copy_in(&self, cmd: &AesCommand, out: &mut Vec<HostToDevice>) {
            out.push(HostToDevice::new(cmd.ext.output.off, cmd.ext.input));
            if cmd.ext.aux.len > 0 {
                out.push(HostToDevice::same(cmd.ext.aux));
            }
        }

        fn copy_out(&self, cmd: &AesCommand) -> Extent {
            cmd.ext.output
        }

        unsafe fn launch(
            &self,
            kernels: &AesGpu,
            cmd: &AesCommand,
            stream: &Arc<CudaStream>,
            mirror: CUdeviceptr,
            area: &DataArea,
        ) -> Result<(), String> {
            // SAFETY: the key extent fits and is not written while in flight.
            let key = unsafe { area.slice(cmd.ext.key) };
            let req = AesGpuRequest {
                op: cmd.op,
                unit: cmd.unit,
                params: cmd.params.to_bytes(),
                key_tag: cmd.key_tag,
                key,
                input: cmd.ext.input,
                output: cmd.ext.output,
                aux: cmd.ext.aux,
                data_size: area.size(),
            };
            kernels
                .launch_parsed(stream, mirror, &req, &cmd.params, &cmd.layout)
                .map_err(|e| e.to_string())
        }

        /// AES-XTS with 4 KiB sectors.
        fn probe(&self, size: usize, rng: &mut Rng) -> Job {
            Job::aes(
                p::op::XTS_ENC,
                rng.bytes(32),
                u64::MAX,
                rng.bytes(size),
                4096.min(size as u32),
                p::AesParams::plain64(0),
                Vec::new(),
            )
        }
    }
}

#[cfg(all(test, feature = "cuda"))]
mod tests {
    use crate::cuda::{split_request, SPLIT_MIN};
    use crate::dispatch::CpuServices;
    use crate::shm::DataArea;
    use kgpu_aes::proto::{op, AesParams};
    use kgpu_common::abi::service;
    use kgpu_common::abi::{Extent, Sqe};

    /// A single-unit request whose unit is its length (ECB here) is cut into
    /// parts of one unit each, which the service takes.
    #[test]
    fn single_unit_parts_are_requests() {
        let len = SPLIT_MIN * 2;
        let mut mem = vec![0u64; (2 * len / 8) as usize];
        // SAFETY: the window covers `mem`, which outlives it.
        let area = unsafe { DataArea::from_raw(mem.as_mut_ptr().cast(), 2 * len) };
        let sqe = Sqe {
            service: service::AES,
            op: op::ECB_ENC,
            key: Extent::new(0, 16),
            input: Extent::new(4096, len),
            output: Extent::new(4096, len),
            unit: len as u32,
            params: AesParams::none().to_bytes(),
            ..Sqe::ZERO
        };
        let parts = split_request(&sqe);
        assert!(parts.len() > 1);
        let services = CpuServices::new();
        for p in &parts {
            assert_eq!(services.execute(p, &area), Ok(p.output.len), "{p:?}");
        }
        assert_eq!(parts.iter().map(|p| p.output.len).sum::<u64>(), len);
    }
}
