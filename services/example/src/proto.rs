//! Wire encoding of the example service (`abi::service::EXAMPLE`).
//!
//! This file is included by source path into the kernel module: it uses only
//! `core`, refers to nothing outside itself and never panics. [`validate`]
//! is total: any field values give a request or a [`ProtoError`].
//!
//! # Encoding in an `Sqe`
//!
//! * `op`: [`op::ADD`].
//! * `params`: the addend, a little-endian `u32` in bytes 0..4; bytes 4..32
//!   must be zero.
//! * input: `4 × n` bytes, `1 ≤ n`, at most [`MAX_LEN`] bytes; output: as
//!   long as the input (in place or not). `key`, `aux`, `unit` and `count`
//!   are unused and must be empty or zero.
//!
//! Output word `i` is `input word i + addend`, modulo 2^32.

/// Operation codes (`Sqe::op`).
pub mod op {
    /// Add the addend to every word.
    pub const ADD: u16 = 1;
}

/// Bytes of `Sqe::params`.
pub const PARAMS_LEN: usize = 32;

/// Largest input of one request (bytes).
pub const MAX_LEN: u64 = 1 << 30;

/// Why a request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtoError {
    /// `op` is not one of [`op`].
    UnknownOp,
    /// The input is empty, not a multiple of 4 bytes or above [`MAX_LEN`],
    /// or the output is not as long as the input.
    BadLength,
    /// A reserved field (params bytes 4..32, unit, count) is not zero.
    BadParams,
}

/// A valid request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Add {
    /// Added to every word.
    pub addend: u32,
    /// Words of input (and of output).
    pub words: u64,
}

/// The parameters of an ADD of `addend`.
pub const fn params(addend: u32) -> [u8; PARAMS_LEN] {
    let mut p = [0u8; PARAMS_LEN];
    let b = addend.to_le_bytes();
    p[0] = b[0];
    p[1] = b[1];
    p[2] = b[2];
    p[3] = b[3];
    p
}

/// Decodes a request from its fields and extent lengths.
pub fn validate(
    op: u16,
    unit: u32,
    count: u32,
    params: &[u8; PARAMS_LEN],
    input_len: u64,
    output_len: u64,
) -> Result<Add, ProtoError> {
    if op != op::ADD {
        return Err(ProtoError::UnknownOp);
    }
    if unit != 0 || count != 0 || params[4..].iter().any(|&b| b != 0) {
        return Err(ProtoError::BadParams);
    }
    if input_len == 0
        || !input_len.is_multiple_of(4)
        || input_len > MAX_LEN
        || output_len != input_len
    {
        return Err(ProtoError::BadLength);
    }
    Ok(Add {
        addend: u32::from_le_bytes([params[0], params[1], params[2], params[3]]),
        words: input_len / 4,
    })
}

/// The CPU code: `output = input + addend`, word by word. Both slices hold
/// whole words; the shorter one bounds the work.
pub fn add(addend: u32, input: &[u8], output: &mut [u8]) {
    for (o, i) in output.chunks_exact_mut(4).zip(input.chunks_exact(4)) {
        let w = u32::from_le_bytes([i[0], i[1], i[2], i[3]]).wrapping_add(addend);
        o.copy_from_slice(&w.to_le_bytes());
    }
}

/// [`add`] in place.
pub fn add_in_place(addend: u32, data: &mut [u8]) {
    for c in data.chunks_exact_mut(4) {
        let w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]).wrapping_add(addend);
        c.copy_from_slice(&w.to_le_bytes());
    }
}
