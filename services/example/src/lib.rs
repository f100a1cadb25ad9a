//! The example service of kgpu-rs: the smallest complete service, meant to
//! be copied (docs/NEW_SERVICE.md). It adds a 32-bit constant to every
//! little-endian 32-bit word of its input (wrapping), the "vector add" of
//! GPU tutorials.
//!
//! The folder holds both halves, as every service does:
//!
//! * `src/proto.rs`: the request encoding and the CPU code, `core` only;
//!   compiled into the helper through this crate and into the kernel module
//!   by source path.
//! * `cuda/example.cu`: the CUDA kernel ([`CUDA_SOURCE`], compiled with
//!   NVRTC when the helper starts on a GPU).
//! * `helper.rs`: the helper's `Service` (parse, CPU execution) and
//!   `GpuService` (launch, copies, calibration probe), compiled into the
//!   helper by source path.
//! * `kernel/example.rs`: the kernel half, a debugfs command file that
//!   submits requests through the ring and checks every answer.
//! * `tests/`: the encoding's tests, and `tests/guest.sh`, run in the qemu
//!   guest with the module loaded.
#![no_std]

pub mod proto;

/// The CUDA C source of the service's kernel.
pub const CUDA_SOURCE: &str = include_str!("../cuda/example.cu");
