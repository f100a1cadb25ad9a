//! RAID6 P/Q syndrome generation and recovery for kgpu-rs, with the exact
//! semantics of Linux `lib/raid6` (GF(2^8), polynomial 0x11d, generator {02}).
//!
//! * [`proto`]: the request encoding (no_std, dependency-free; the kernel
//!   module includes it by source path).
//! * [`gf`]: the `lib/raid6` GF tables.
//! * `cpu` (feature `std`): SWAR / AVX2 / AVX-512BW implementation.
//! * `gpu` (feature `cuda`): CUDA kernels and their launch code.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod gf;
pub mod proto;

#[cfg(feature = "std")]
pub mod cpu;

#[cfg(feature = "cuda")]
pub mod gpu;

use kgpu_common::abi::Status;
use proto::ProtoError;

/// The completion status reported for a request refused by [`proto::validate`].
pub const fn proto_status(e: ProtoError) -> Status {
    match e {
        ProtoError::UnknownOp => Status::UnknownOp,
        ProtoError::BadUnit | ProtoError::BadInputLen | ProtoError::BadOutputLen => {
            Status::BadLength
        }
        ProtoError::BadDisks
        | ProtoError::ReservedParams
        | ProtoError::BadRange
        | ProtoError::BadFailIndex => Status::BadParams,
    }
}
