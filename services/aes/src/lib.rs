//! The kgpu AES service: ECB, CBC, CTR and XTS over units (disk sectors).
//!
//! * [`proto`]: the request encoding, shared with the kernel module (no_std,
//!   `core` only, total);
//! * [`cpu`] (feature `std`): the CPU implementation, on the fastest path the
//!   processor has (VAES on AVX-512, AES-NI, or the portable `aes` crate);
//! * [`x86`] (feature `std`, x86-64): the AES-NI and VAES code;
//! * [`schedule`] (feature `std`): FIPS-197 key expansion and T-tables for the
//!   table-driven GPU kernels, with a reference cipher that tests them;
//! * [`gpu`] (feature `cuda`): the CUDA kernels (`cuda/aes.cu`, compiled with
//!   NVRTC by the helper) and their launch code.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod proto;

#[cfg(feature = "std")]
pub mod cpu;
#[cfg(feature = "std")]
pub mod schedule;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
pub mod x86;

#[cfg(feature = "cuda")]
pub mod gpu;

use kgpu_common::abi::Status;
use proto::ProtoError;

/// Why an AES request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AesError {
    /// The operation code is unknown.
    UnknownOp,
    /// The key length does not suit the operation.
    BadKey,
    /// A length does not suit the operation.
    BadLength,
    /// The parameter block is invalid.
    BadParams,
    /// The processor lacks the instructions of the code path asked for
    /// ([`cpu::Path`]); never returned for the path found at run time.
    Unsupported,
}

impl AesError {
    /// The completion status to report.
    pub const fn status(&self) -> Status {
        match self {
            AesError::UnknownOp => Status::UnknownOp,
            AesError::BadKey => Status::BadKey,
            AesError::BadLength => Status::BadLength,
            AesError::BadParams => Status::BadParams,
            AesError::Unsupported => Status::BackendError,
        }
    }
}

impl From<ProtoError> for AesError {
    fn from(e: ProtoError) -> Self {
        match e {
            ProtoError::UnknownOp => AesError::UnknownOp,
            ProtoError::BadKey => AesError::BadKey,
            ProtoError::BadLength => AesError::BadLength,
            ProtoError::BadParams => AesError::BadParams,
        }
    }
}

impl core::fmt::Display for AesError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.status().as_str())
    }
}

#[cfg(feature = "std")]
impl std::error::Error for AesError {}

/// Maps a protocol error to the completion status.
pub const fn proto_status(e: ProtoError) -> Status {
    match e {
        ProtoError::UnknownOp => Status::UnknownOp,
        ProtoError::BadKey => Status::BadKey,
        ProtoError::BadLength => Status::BadLength,
        ProtoError::BadParams => Status::BadParams,
    }
}
