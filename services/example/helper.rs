//! The example service (`kgpu-example`) in the helper: parsing, the CPU
//! execution and, with the `cuda` feature, its GPU part. Compiled into the
//! helper by source path (`helper/src/services/mod.rs`).

use super::Service;
use crate::shm::DataArea;
use kgpu_common::abi::{service, Sqe, Status};
use kgpu_common::request::CheckedExtents;
use kgpu_example::proto::{self as p, Add, ProtoError};

/// The example service.
#[derive(Default)]
pub struct Example;

/// A valid request: what [`p::validate`] made of it, and its extents.
#[derive(Clone, Copy, Debug)]
pub struct ExampleCommand {
    add: Add,
    ext: CheckedExtents,
}

impl Service for Example {
    const ID: u16 = service::EXAMPLE;
    const NAME: &'static str = "example";
    const GPU: bool = true;
    type Command = ExampleCommand;

    fn parse(&self, sqe: &Sqe, ext: &CheckedExtents) -> Result<ExampleCommand, Status> {
        if ext.key.len != 0 || ext.aux.len != 0 {
            return Err(Status::BadParams);
        }
        let add = p::validate(
            sqe.op,
            sqe.unit,
            sqe.count,
            &sqe.params,
            ext.input.len,
            ext.output.len,
        )
        .map_err(|e| match e {
            ProtoError::UnknownOp => Status::UnknownOp,
            ProtoError::BadLength => Status::BadLength,
            ProtoError::BadParams => Status::BadParams,
        })?;
        Ok(ExampleCommand { add, ext: *ext })
    }

    fn execute(&self, cmd: &ExampleCommand, area: &DataArea) -> Result<u64, Status> {
        let ext = &cmd.ext;
        if ext.in_place {
            // SAFETY: the extent fits the area (checked) and only this
            // request uses it.
            p::add_in_place(cmd.add.addend, unsafe { area.slice_mut(ext.output) });
        } else {
            // SAFETY: both extents fit and are disjoint (checked).
            let (input, output) = unsafe { (area.slice(ext.input), area.slice_mut(ext.output)) };
            p::add(cmd.add.addend, input, output);
        }
        Ok(ext.output.len)
    }

    #[cfg(feature = "cuda")]
    fn gpu(&self) -> Option<&dyn super::gpu::DynGpu> {
        Some(self)
    }
}

#[cfg(feature = "cuda")]
mod gpu {
    use super::{p, Example, ExampleCommand};
    use crate::services::gpu::{GpuService, HostToDevice};
    use crate::shm::DataArea;
    use crate::workload::{Job, Rng};
    use cudarc::driver::sys::CUdeviceptr;
    use cudarc::driver::{CudaFunction, CudaModule, CudaStream, LaunchConfig, PushKernelArg};
    use kgpu_common::abi::{service, Extent};
    use std::sync::Arc;

    /// Threads per block, and the most blocks of one launch (the kernel
    /// strides over the rest).
    const BLOCK: u32 = 256;
    const MAX_GRID: u64 = 65_535;

    impl GpuService for Example {
        type Kernels = CudaFunction;
        const SOURCE: &'static str = kgpu_example::CUDA_SOURCE;

        fn load(
            &self,
            module: &Arc<CudaModule>,
            _stream: &Arc<CudaStream>,
        ) -> Result<CudaFunction, String> {
            module
                .load_function("kgpu_example_add")
                .map_err(|e| e.to_string())
        }

        /// Word-aligned extents (the kernel loads 32-bit words).
        fn accepts(&self, cmd: &ExampleCommand) -> bool {
            (cmd.ext.input.off | cmd.ext.output.off).is_multiple_of(4)
        }

        /// Whole words: a request cuts anywhere on a 4-byte step.
        fn grain(&self, _cmd: &ExampleCommand) -> Option<u64> {
            Some(4)
        }

        fn part(
            &self,
            sqe: &kgpu_common::abi::Sqe,
            cmd: &ExampleCommand,
            off: u64,
            len: u64,
        ) -> (kgpu_common::abi::Sqe, ExampleCommand) {
            let mut c = *cmd;
            c.ext.input = Extent::new(cmd.ext.input.off + off, len);
            c.ext.output = Extent::new(cmd.ext.output.off + off, len);
            c.add.words = len / 4;
            let mut s = *sqe;
            s.input = c.ext.input;
            s.output = c.ext.output;
            (s, c)
        }

        fn copy_in(&self, cmd: &ExampleCommand, out: &mut Vec<HostToDevice>) {
            out.push(HostToDevice::same(cmd.ext.input));
        }

        fn copy_out(&self, cmd: &ExampleCommand) -> Extent {
            cmd.ext.output
        }

        unsafe fn launch(
            &self,
            kernel: &CudaFunction,
            cmd: &ExampleCommand,
            stream: &Arc<CudaStream>,
            mirror: CUdeviceptr,
            _area: &DataArea,
        ) -> Result<(), String> {
            let inp = mirror + cmd.ext.input.off;
            let out = mirror + cmd.ext.output.off;
            let (words, addend) = (cmd.add.words, cmd.add.addend);
            let grid = words.div_ceil(u64::from(BLOCK)).clamp(1, MAX_GRID) as u32;
            let cfg = LaunchConfig {
                grid_dim: (grid, 1, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut b = stream.launch_builder(kernel);
            b.arg(&inp).arg(&out).arg(&words).arg(&addend);
            // SAFETY: kgpu_example_add(const u32*, u32*, u64, u32): the
            // arguments match in number and type; it reads and writes
            // `words` words at the extents, which lie in the mirror (the
            // caller's guarantee) and are word-aligned (`accepts`).
            unsafe { b.launch(cfg) }
                .map(|_| ())
                .map_err(|e| e.to_string())
        }

        /// One ADD of `size` bytes (rounded to words) of random data.
        fn probe(&self, size: usize, rng: &mut Rng) -> Job {
            let len = (size / 4).max(1) * 4;
            let input = rng.bytes(len);
            Job {
                service: service::EXAMPLE,
                op: p::op::ADD,
                key_tag: 0,
                key: Vec::new(),
                input,
                aux: Vec::new(),
                output_init: Vec::new(),
                out_len: len,
                in_place: false,
                unit: 0,
                count: 0,
                params: p::params(rng.next_u64() as u32),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::p;
    use crate::dispatch::CpuServices;
    use crate::workload::{Job, Rng};
    use kgpu_common::abi::{service, Status};

    fn job(input: Vec<u8>, addend: u32, in_place: bool) -> Job {
        let mut j = Job::echo(input);
        j.service = service::EXAMPLE;
        j.op = p::op::ADD;
        j.in_place = in_place;
        j.params = p::params(addend);
        j
    }

    #[test]
    fn cpu_path_adds_to_every_word_in_place_or_not() {
        let services = CpuServices::new();
        let mut rng = Rng::new(7);
        for (len, in_place) in [(4usize, false), (4096, true), (65536 + 12, false)] {
            let input = rng.bytes(len);
            let got = job(input.clone(), 0x8000_0001, in_place)
                .direct(&services)
                .unwrap();
            assert_eq!(got.len(), len);
            for (o, i) in got.chunks_exact(4).zip(input.chunks_exact(4)) {
                let want = u32::from_le_bytes(i.try_into().unwrap()).wrapping_add(0x8000_0001);
                assert_eq!(o, want.to_le_bytes());
            }
        }
    }

    #[test]
    fn bad_requests_get_their_status() {
        let services = CpuServices::new();
        assert_eq!(job(vec![0; 6], 1, false).direct(&services), Err(Status::BadLength));
        let mut j = job(vec![0; 8], 1, false);
        j.op = 9;
        assert_eq!(j.direct(&services), Err(Status::UnknownOp));
        let mut j = job(vec![0; 8], 1, false);
        j.params[20] = 1;
        assert_eq!(j.direct(&services), Err(Status::BadParams));
        let mut j = job(vec![0; 8], 1, false);
        j.aux = vec![1; 4];
        assert_eq!(j.direct(&services), Err(Status::BadParams));
    }
}
