//! Wire encoding of RAID6 requests (service `kgpu_common::abi::service::RAID6`).
//!
//! This file is included by source path into the kernel module: it uses only
//! `core`, refers to nothing outside itself and never panics. Every decoding
//! function is total: any combination of field values yields either a
//! decoded request or a [`ProtoError`].
//!
//! # Arithmetic
//!
//! Exactly that of Linux `lib/raid6`: GF(2^8) with polynomial 0x11d and
//! generator {02}. With `n = disks - 2` data disks `D_0 .. D_{n-1}`:
//!
//! ```text
//! P = D_0 ^ D_1 ^ ... ^ D_{n-1}
//! Q = g^0·D_0 ^ g^1·D_1 ^ ... ^ g^{n-1}·D_{n-1}
//! ```
//!
//! # Encoding in an `Sqe`
//!
//! * `op`: one of [`op`].
//! * `count`: number of disks including P and Q, `MIN_DISKS ..= MAX_DISKS`
//!   (4 ..= 256). Four is the smallest RAID6 array md builds (two data disks);
//!   256 keeps every data disk index ≤ 253 so that the coefficients `g^i` are
//!   pairwise distinct (the order of {02} is 255) and two-disk recovery is
//!   always defined.
//! * `unit`: bytes per disk, a non-zero multiple of [`UNIT_ALIGN`] (64). The
//!   kernel's vector algorithms process up to 256 bytes per iteration and md
//!   always submits whole stripe pages (multiples of 4096); 64 is the common
//!   granule of this service's CPU and GPU backends and covers every page-sized
//!   request md issues. Values above [`MAX_UNIT`] are refused so that all
//!   lengths fit comfortably in 64 bits.
//! * `key`, `aux`: unused (the helper checks extents only).
//! * `params`: 32 bytes, two little-endian `u32` (`a` at 0..4, `b` at 4..8),
//!   bytes 8..32 must be zero.
//!
//! | op              | params            | input                                  | output                          |
//! |-----------------|-------------------|----------------------------------------|---------------------------------|
//! | `GEN_SYNDROME`  | all zero          | data disks 0..n, `n × unit`            | P then Q, `2 × unit`            |
//! | `XOR_SYNDROME`  | `a`=start, `b`=stop | data disks start..=stop, `(stop-start+1) × unit` | old P, Q updated in place, `2 × unit` |
//! | `RECOV_2DATA`   | `a`=faila, `b`=failb | all disks (data, P, Q), `disks × unit` | D_faila then D_failb, `2 × unit` |
//! | `RECOV_DATAP`   | `a`=faila, `b`=0  | all disks (data, P, Q), `disks × unit` | D_faila then P, `2 × unit`      |
//!
//! `XOR_SYNDROME` has the semantics of `raid6_call.xor_syndrome`: with
//! `0 ≤ start ≤ stop < n`, `P ^= D_start ^ … ^ D_stop` and
//! `Q ^= Σ_{i=start..=stop} g^i·D_i`. The submitter copies the current P and Q
//! into the output extent before submitting (as md does with the old parity
//! for a read-modify-write: the input holds `old ^ new` of the changed disks).
//!
//! `RECOV_2DATA` requires `faila < failb < n`; the content of the failed
//! blocks in the input is ignored. `RECOV_DATAP` requires `faila < n`; the
//! content of `D_faila` and of P in the input is ignored.

/// Operation codes (`Sqe::op`).
pub mod op {
    /// Compute P and Q from all data disks.
    pub const GEN_SYNDROME: u16 = 1;
    /// Fold data disks start..=stop into an existing P and Q.
    pub const XOR_SYNDROME: u16 = 2;
    /// Recover two failed data disks from the others, P and Q.
    pub const RECOV_2DATA: u16 = 3;
    /// Recover a failed data disk and P from the others and Q.
    pub const RECOV_DATAP: u16 = 4;

    /// Human-readable name of an operation code.
    pub const fn op_name(op: u16) -> &'static str {
        match op {
            GEN_SYNDROME => "gen_syndrome",
            XOR_SYNDROME => "xor_syndrome",
            RECOV_2DATA => "recov_2data",
            RECOV_DATAP => "recov_datap",
            _ => "unknown",
        }
    }
}

/// Size of the parameter block.
pub const PARAMS_LEN: usize = 32;
/// Smallest number of disks (two data disks, P and Q).
pub const MIN_DISKS: u32 = 4;
/// Largest number of disks.
pub const MAX_DISKS: u32 = 256;
/// `unit` must be a non-zero multiple of this.
pub const UNIT_ALIGN: u32 = 64;
/// Largest `unit` (1 GiB per disk).
pub const MAX_UNIT: u32 = 1 << 30;

const _: () = assert!(UNIT_ALIGN.is_power_of_two() && MAX_UNIT & (UNIT_ALIGN - 1) == 0);

/// Why a request was refused.
///
/// The helper maps these onto the shared status codes: [`ProtoError::UnknownOp`]
/// to `UnknownOp`; [`ProtoError::BadUnit`], [`ProtoError::BadInputLen`] and
/// [`ProtoError::BadOutputLen`] to `BadLength`; the others to `BadParams`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtoError {
    /// The operation code is not one of [`op`].
    UnknownOp,
    /// `count` is outside `MIN_DISKS ..= MAX_DISKS`.
    BadDisks,
    /// `unit` is zero, not a multiple of [`UNIT_ALIGN`] or above [`MAX_UNIT`].
    BadUnit,
    /// The input length does not match the operation.
    BadInputLen,
    /// The output length does not match the operation.
    BadOutputLen,
    /// Reserved parameter bytes are not zero, or a parameter that must be zero is not.
    ReservedParams,
    /// `start`/`stop` are out of order or out of range.
    BadRange,
    /// Failed disk indices are out of range, equal or out of order.
    BadFailIndex,
}

impl ProtoError {
    /// A short description for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProtoError::UnknownOp => "unknown raid6 operation",
            ProtoError::BadDisks => "disk count out of range",
            ProtoError::BadUnit => "bytes per disk not a non-zero multiple of 64",
            ProtoError::BadInputLen => "input length does not match the operation",
            ProtoError::BadOutputLen => "output length does not match the operation",
            ProtoError::ReservedParams => "reserved parameter bytes not zero",
            ProtoError::BadRange => "start/stop out of range",
            ProtoError::BadFailIndex => "failed disk indices out of range",
        }
    }

    /// True for errors reported as a bad length (as opposed to bad parameters
    /// or an unknown operation).
    pub const fn is_length_error(self) -> bool {
        matches!(
            self,
            ProtoError::BadUnit | ProtoError::BadInputLen | ProtoError::BadOutputLen
        )
    }
}

/// The two parameter words of a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Raid6Params {
    /// `start` (XOR_SYNDROME) or `faila` (RECOV_*); bytes 0..4.
    pub a: u32,
    /// `stop` (XOR_SYNDROME) or `failb` (RECOV_2DATA); bytes 4..8.
    pub b: u32,
}

impl Raid6Params {
    /// Parameters of `GEN_SYNDROME` (all zero).
    pub const NONE: Raid6Params = Raid6Params { a: 0, b: 0 };

    /// Parameters of `XOR_SYNDROME`.
    pub const fn xor(start: u32, stop: u32) -> Self {
        Raid6Params { a: start, b: stop }
    }

    /// Parameters of `RECOV_2DATA`.
    pub const fn recov_2data(faila: u32, failb: u32) -> Self {
        Raid6Params { a: faila, b: failb }
    }

    /// Parameters of `RECOV_DATAP`.
    pub const fn recov_datap(faila: u32) -> Self {
        Raid6Params { a: faila, b: 0 }
    }

    /// Encodes into the `Sqe::params` block (reserved bytes zero).
    pub const fn to_bytes(self) -> [u8; PARAMS_LEN] {
        let mut out = [0u8; PARAMS_LEN];
        let a = self.a.to_le_bytes();
        let b = self.b.to_le_bytes();
        let mut i = 0;
        while i < 4 {
            out[i] = a[i];
            out[4 + i] = b[i];
            i += 1;
        }
        out
    }

    /// Decodes a parameter block; [`ProtoError::ReservedParams`] when bytes 8..32 are not zero.
    pub const fn from_bytes(raw: &[u8; PARAMS_LEN]) -> Result<Self, ProtoError> {
        let mut i = 8;
        while i < PARAMS_LEN {
            if raw[i] != 0 {
                return Err(ProtoError::ReservedParams);
            }
            i += 1;
        }
        Ok(Raid6Params {
            a: u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]),
            b: u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]),
        })
    }
}

/// A decoded operation with its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Raid6Op {
    /// `GEN_SYNDROME`.
    GenSyndrome,
    /// `XOR_SYNDROME` over data disks `start ..= stop`.
    XorSyndrome {
        /// First data disk folded in.
        start: u32,
        /// Last data disk folded in.
        stop: u32,
    },
    /// `RECOV_2DATA` of data disks `faila < failb`.
    Recov2Data {
        /// The lower failed data disk.
        faila: u32,
        /// The higher failed data disk.
        failb: u32,
    },
    /// `RECOV_DATAP` of data disk `faila` and P.
    RecovDataP {
        /// The failed data disk.
        faila: u32,
    },
}

impl Raid6Op {
    /// The operation code.
    pub const fn code(self) -> u16 {
        match self {
            Raid6Op::GenSyndrome => op::GEN_SYNDROME,
            Raid6Op::XorSyndrome { .. } => op::XOR_SYNDROME,
            Raid6Op::Recov2Data { .. } => op::RECOV_2DATA,
            Raid6Op::RecovDataP { .. } => op::RECOV_DATAP,
        }
    }

    /// The parameters that encode this operation.
    pub const fn params(self) -> Raid6Params {
        match self {
            Raid6Op::GenSyndrome => Raid6Params::NONE,
            Raid6Op::XorSyndrome { start, stop } => Raid6Params::xor(start, stop),
            Raid6Op::Recov2Data { faila, failb } => Raid6Params::recov_2data(faila, failb),
            Raid6Op::RecovDataP { faila } => Raid6Params::recov_datap(faila),
        }
    }
}

/// A request that passed [`validate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Raid6Layout {
    /// The operation and its parameters.
    pub op: Raid6Op,
    /// Disks including P and Q.
    pub disks: u32,
    /// Bytes per disk.
    pub unit: u32,
    /// Required input length in bytes.
    pub input_len: u64,
    /// Required output length in bytes.
    pub output_len: u64,
}

impl Raid6Layout {
    /// Number of data disks (`disks - 2`).
    pub const fn data_disks(&self) -> u32 {
        self.disks.saturating_sub(2)
    }
}

/// Checks a request completely and decodes it. Total: never panics.
///
/// Checks run in this order: operation code, disk count, unit, parameters,
/// input length, output length; the first failure is reported.
pub const fn validate(
    op_code: u16,
    disks: u32,
    unit: u32,
    input_len: u64,
    output_len: u64,
    params: &[u8; PARAMS_LEN],
) -> Result<Raid6Layout, ProtoError> {
    if !matches!(
        op_code,
        op::GEN_SYNDROME | op::XOR_SYNDROME | op::RECOV_2DATA | op::RECOV_DATAP
    ) {
        return Err(ProtoError::UnknownOp);
    }
    if disks < MIN_DISKS || disks > MAX_DISKS {
        return Err(ProtoError::BadDisks);
    }
    if unit == 0 || unit & (UNIT_ALIGN - 1) != 0 || unit > MAX_UNIT {
        return Err(ProtoError::BadUnit);
    }
    let p = match Raid6Params::from_bytes(params) {
        Ok(p) => p,
        Err(e) => return Err(e),
    };
    let ndata = disks - 2;
    let u = unit as u64;
    // disks ≤ 256 and unit ≤ 2^30: none of the products below can overflow.
    let (op, in_disks) = match op_code {
        op::GEN_SYNDROME => {
            if p.a != 0 || p.b != 0 {
                return Err(ProtoError::ReservedParams);
            }
            (Raid6Op::GenSyndrome, ndata as u64)
        }
        op::XOR_SYNDROME => {
            if p.a > p.b || p.b >= ndata {
                return Err(ProtoError::BadRange);
            }
            (
                Raid6Op::XorSyndrome {
                    start: p.a,
                    stop: p.b,
                },
                (p.b - p.a) as u64 + 1,
            )
        }
        op::RECOV_2DATA => {
            if p.a >= p.b || p.b >= ndata {
                return Err(ProtoError::BadFailIndex);
            }
            (
                Raid6Op::Recov2Data {
                    faila: p.a,
                    failb: p.b,
                },
                disks as u64,
            )
        }
        _ => {
            if p.b != 0 {
                return Err(ProtoError::ReservedParams);
            }
            if p.a >= ndata {
                return Err(ProtoError::BadFailIndex);
            }
            (Raid6Op::RecovDataP { faila: p.a }, disks as u64)
        }
    };
    let want_in = in_disks * u;
    let want_out = 2 * u;
    if input_len != want_in {
        return Err(ProtoError::BadInputLen);
    }
    if output_len != want_out {
        return Err(ProtoError::BadOutputLen);
    }
    Ok(Raid6Layout {
        op,
        disks,
        unit,
        input_len: want_in,
        output_len: want_out,
    })
}
