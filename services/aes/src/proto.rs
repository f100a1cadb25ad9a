//! The AES service encoding: operations, IV modes, the 32-byte parameter
//! block and the validation of a request.
//!
//! This file is compiled standalone by the kernel module (included by source
//! path), so it refers to nothing but `core`, and every function in it is
//! total: no input makes it panic.
//!
//! A request (an `Sqe` of the region ABI) is interpreted as:
//!
//! * `op`: one of [`op`];
//! * `key`: the raw key bytes, 16/24/32 for ECB, CBC and CTR, 32/48/64 for XTS
//!   (two AES keys of equal size, data key first, then tweak key, like the
//!   kernel's `xts(aes)`);
//! * `input`, `output`: the data, of equal length; `output` may equal `input`;
//! * `unit`: bytes per independent unit (a disk sector); each unit restarts the
//!   mode with its own IV; 0 means the whole buffer is one unit; the data
//!   length must be a multiple of the unit;
//! * `aux`: with [`IV_LIST`], one 16-byte IV per unit, and empty otherwise;
//! * `params`: an [`AesParams`] encoded with [`AesParams::to_bytes`].
//!
//! Per-unit lengths: ECB and CBC need a multiple of 16 bytes, CTR takes any
//! non-zero length (the last block may be partial), XTS needs at least 16 bytes
//! (ciphertext stealing covers the non-multiples of 16).

/// Operation codes (`Sqe::op`).
pub mod op {
    /// ECB encryption.
    pub const ECB_ENC: u16 = 1;
    /// ECB decryption.
    pub const ECB_DEC: u16 = 2;
    /// CBC encryption.
    pub const CBC_ENC: u16 = 3;
    /// CBC decryption.
    pub const CBC_DEC: u16 = 4;
    /// CTR with a 128-bit big-endian counter (encryption equals decryption).
    pub const CTR: u16 = 5;
    /// XTS encryption (IEEE 1619, with ciphertext stealing).
    pub const XTS_ENC: u16 = 6;
    /// XTS decryption (IEEE 1619, with ciphertext stealing).
    pub const XTS_DEC: u16 = 7;

    /// Every operation, in numeric order.
    pub const ALL: [u16; 7] = [ECB_ENC, ECB_DEC, CBC_ENC, CBC_DEC, CTR, XTS_ENC, XTS_DEC];

    /// Human-readable name of an operation.
    pub const fn op_name(op: u16) -> &'static str {
        match op {
            ECB_ENC => "ecb-enc",
            ECB_DEC => "ecb-dec",
            CBC_ENC => "cbc-enc",
            CBC_DEC => "cbc-dec",
            CTR => "ctr",
            XTS_ENC => "xts-enc",
            XTS_DEC => "xts-dec",
            _ => "unknown",
        }
    }
}

/// No IV (ECB only); `iv` and `start_sector` must be zero.
pub const IV_NONE: u32 = 0;
/// One unit only, whose IV is [`AesParams::iv`]; `start_sector` must be zero.
pub const IV_SINGLE: u32 = 1;
/// dm-crypt `plain64`: the IV of unit `i` is `(start_sector + i) as u64` in
/// little-endian in bytes 0..8, bytes 8..16 zero; `iv` must be zero.
pub const IV_PLAIN64: u32 = 2;
/// The IV of unit `i` is aux bytes `[16 i, 16 i + 16)`; the aux length must be
/// exactly 16 × units; `iv` and `start_sector` must be zero.
pub const IV_LIST: u32 = 3;

/// AES block size in bytes.
pub const BLOCK: u64 = 16;
/// Size of one IV in the aux list.
pub const IV_LEN: u64 = 16;

/// Why a request is not valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtoError {
    /// The operation code is not one of [`op`].
    UnknownOp,
    /// The key length does not suit the operation.
    BadKey,
    /// A length (data, unit, aux) does not suit the operation.
    BadLength,
    /// The parameter block is malformed or does not suit the operation.
    BadParams,
}

impl ProtoError {
    /// A short description for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProtoError::UnknownOp => "unknown operation",
            ProtoError::BadKey => "invalid key length",
            ProtoError::BadLength => "invalid length",
            ProtoError::BadParams => "invalid parameters",
        }
    }
}

impl core::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The decoded `Sqe::params` of an AES request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AesParams {
    /// One of [`IV_NONE`], [`IV_SINGLE`], [`IV_PLAIN64`], [`IV_LIST`].
    pub iv_mode: u32,
    /// The IV for [`IV_SINGLE`].
    pub iv: [u8; 16],
    /// The sector of the first unit for [`IV_PLAIN64`].
    pub start_sector: u64,
}

impl AesParams {
    /// Parameters without IV (ECB).
    pub const fn none() -> Self {
        AesParams {
            iv_mode: IV_NONE,
            iv: [0; 16],
            start_sector: 0,
        }
    }

    /// Parameters for a single unit with the given IV.
    pub const fn single(iv: [u8; 16]) -> Self {
        AesParams {
            iv_mode: IV_SINGLE,
            iv,
            start_sector: 0,
        }
    }

    /// Parameters for dm-crypt `plain64` IVs starting at `start_sector`.
    pub const fn plain64(start_sector: u64) -> Self {
        AesParams {
            iv_mode: IV_PLAIN64,
            iv: [0; 16],
            start_sector,
        }
    }

    /// Parameters for IVs taken from the aux extent.
    pub const fn list() -> Self {
        AesParams {
            iv_mode: IV_LIST,
            iv: [0; 16],
            start_sector: 0,
        }
    }

    /// Encodes: `iv` at 0..16, `start_sector` little-endian at 16..24,
    /// `iv_mode` little-endian at 24..28, zero at 28..32.
    pub const fn to_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut i = 0;
        while i < 16 {
            out[i] = self.iv[i];
            i += 1;
        }
        let s = self.start_sector.to_le_bytes();
        let mut i = 0;
        while i < 8 {
            out[16 + i] = s[i];
            i += 1;
        }
        let m = self.iv_mode.to_le_bytes();
        let mut i = 0;
        while i < 4 {
            out[24 + i] = m[i];
            i += 1;
        }
        out
    }

    /// Decodes the layout written by [`AesParams::to_bytes`]. Fails with
    /// [`ProtoError::BadParams`] when bytes 28..32 are not zero or the IV mode
    /// is unknown.
    pub const fn from_bytes(raw: &[u8; 32]) -> Result<AesParams, ProtoError> {
        if raw[28] != 0 || raw[29] != 0 || raw[30] != 0 || raw[31] != 0 {
            return Err(ProtoError::BadParams);
        }
        let mut iv = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            iv[i] = raw[i];
            i += 1;
        }
        let start_sector = u64::from_le_bytes([
            raw[16], raw[17], raw[18], raw[19], raw[20], raw[21], raw[22], raw[23],
        ]);
        let iv_mode = u32::from_le_bytes([raw[24], raw[25], raw[26], raw[27]]);
        if iv_mode > IV_LIST {
            return Err(ProtoError::BadParams);
        }
        Ok(AesParams {
            iv_mode,
            iv,
            start_sector,
        })
    }
}

/// Block cipher mode of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Electronic codebook.
    Ecb,
    /// Cipher block chaining.
    Cbc,
    /// Counter mode.
    Ctr,
    /// XEX-based tweaked codebook with ciphertext stealing.
    Xts,
}

/// What a valid request looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The block cipher mode.
    pub mode: Mode,
    /// True for decryption (ECB, CBC, XTS); CTR is always `false`.
    pub decrypt: bool,
    /// Bytes of one AES key (16, 24 or 32); XTS carries two of them.
    pub aes_key_len: u32,
    /// AES rounds for that key length (10, 12 or 14).
    pub rounds: u32,
    /// Number of units (at least 1).
    pub units: u64,
    /// Bytes per unit (the whole data length when `unit` is 0).
    pub unit_len: u64,
    /// Total data length (`units * unit_len`).
    pub data_len: u64,
}

/// Mode and direction of an operation code.
pub const fn op_mode(op: u16) -> Result<(Mode, bool), ProtoError> {
    match op {
        op::ECB_ENC => Ok((Mode::Ecb, false)),
        op::ECB_DEC => Ok((Mode::Ecb, true)),
        op::CBC_ENC => Ok((Mode::Cbc, false)),
        op::CBC_DEC => Ok((Mode::Cbc, true)),
        op::CTR => Ok((Mode::Ctr, false)),
        op::XTS_ENC => Ok((Mode::Xts, false)),
        op::XTS_DEC => Ok((Mode::Xts, true)),
        _ => Err(ProtoError::UnknownOp),
    }
}

/// AES rounds for a key of `len` bytes, or `None` for an invalid length.
pub const fn rounds_for_key(len: u64) -> Option<u32> {
    match len {
        16 => Some(10),
        24 => Some(12),
        32 => Some(14),
        _ => None,
    }
}

/// Checks a request and returns its layout.
///
/// Checks, in order: the operation ([`ProtoError::UnknownOp`]); the key length
/// ([`ProtoError::BadKey`]); the data and unit lengths
/// ([`ProtoError::BadLength`]); the IV mode and the fields it leaves unused
/// ([`ProtoError::BadParams`]); the aux length ([`ProtoError::BadLength`]).
// `%` rather than `is_multiple_of`: the kernel's compiler may predate it.
#[allow(clippy::manual_is_multiple_of)]
pub const fn validate(
    op: u16,
    key_len: u64,
    data_len: u64,
    aux_len: u64,
    unit: u32,
    params: &AesParams,
) -> Result<Layout, ProtoError> {
    let (mode, decrypt) = match op_mode(op) {
        Ok(m) => m,
        Err(e) => return Err(e),
    };

    let aes_key_len = match mode {
        Mode::Xts => {
            if key_len % 2 != 0 {
                return Err(ProtoError::BadKey);
            }
            key_len / 2
        }
        _ => key_len,
    };
    let rounds = match rounds_for_key(aes_key_len) {
        Some(r) => r,
        None => return Err(ProtoError::BadKey),
    };

    if data_len == 0 {
        return Err(ProtoError::BadLength);
    }
    let unit_len = if unit == 0 { data_len } else { unit as u64 };
    if data_len % unit_len != 0 {
        return Err(ProtoError::BadLength);
    }
    let units = data_len / unit_len;
    let unit_ok = match mode {
        Mode::Ecb | Mode::Cbc => unit_len % BLOCK == 0,
        Mode::Ctr => true,
        Mode::Xts => unit_len >= BLOCK,
    };
    if !unit_ok {
        return Err(ProtoError::BadLength);
    }

    let iv_zero = is_zero16(&params.iv);
    let params_ok = match params.iv_mode {
        IV_NONE => matches!(mode, Mode::Ecb) && iv_zero && params.start_sector == 0,
        IV_SINGLE => !matches!(mode, Mode::Ecb) && units == 1 && params.start_sector == 0,
        IV_PLAIN64 => !matches!(mode, Mode::Ecb) && iv_zero,
        IV_LIST => !matches!(mode, Mode::Ecb) && iv_zero && params.start_sector == 0,
        _ => false,
    };
    if !params_ok {
        return Err(ProtoError::BadParams);
    }

    let aux_expected = if params.iv_mode == IV_LIST {
        match units.checked_mul(IV_LEN) {
            Some(n) => n,
            None => return Err(ProtoError::BadLength),
        }
    } else {
        0
    };
    if aux_len != aux_expected {
        return Err(ProtoError::BadLength);
    }

    Ok(Layout {
        mode,
        decrypt,
        aes_key_len: aes_key_len as u32,
        rounds,
        units,
        unit_len,
        data_len,
    })
}

const fn is_zero16(b: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < 16 {
        if b[i] != 0 {
            return false;
        }
        i += 1;
    }
    true
}

/// The `plain64` IV of a sector.
pub const fn plain64_iv(sector: u64) -> [u8; 16] {
    let s = sector.to_le_bytes();
    [
        s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], 0, 0, 0, 0, 0, 0, 0, 0,
    ]
}

/// The IV of unit `index` of a request, shared by the CPU and GPU paths.
///
/// [`IV_NONE`] gives zeros, [`IV_SINGLE`] gives `params.iv` for every index,
/// [`IV_PLAIN64`] gives the `plain64` IV of `start_sector + index` (wrapping
/// like the kernel's 64-bit sector arithmetic), [`IV_LIST`] gives the 16 aux
/// bytes at `16 * index`. `None` when the mode is unknown or the aux list is
/// too short for `index`.
pub fn unit_iv(params: &AesParams, aux: &[u8], index: u64) -> Option<[u8; 16]> {
    match params.iv_mode {
        IV_NONE => Some([0; 16]),
        IV_SINGLE => Some(params.iv),
        IV_PLAIN64 => Some(plain64_iv(params.start_sector.wrapping_add(index))),
        IV_LIST => {
            let start = usize::try_from(index.checked_mul(IV_LEN)?).ok()?;
            let end = start.checked_add(IV_LEN as usize)?;
            let src = aux.get(start..end)?;
            let mut iv = [0u8; 16];
            iv.copy_from_slice(src);
            Some(iv)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip() {
        let p = AesParams {
            iv_mode: IV_PLAIN64,
            iv: [0; 16],
            start_sector: 0x0102_0304_0506_0708,
        };
        let b = p.to_bytes();
        assert_eq!(&b[16..24], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&b[24..28], &[2, 0, 0, 0]);
        assert_eq!(AesParams::from_bytes(&b), Ok(p));
        let q = AesParams::single([0xa5; 16]);
        assert_eq!(AesParams::from_bytes(&q.to_bytes()), Ok(q));
    }

    #[test]
    fn params_reserved_and_mode() {
        let mut b = AesParams::list().to_bytes();
        b[31] = 1;
        assert_eq!(AesParams::from_bytes(&b), Err(ProtoError::BadParams));
        let mut b = AesParams::list().to_bytes();
        b[24] = 4;
        assert_eq!(AesParams::from_bytes(&b), Err(ProtoError::BadParams));
    }

    #[test]
    fn op_names() {
        assert_eq!(op::op_name(op::XTS_DEC), "xts-dec");
        assert_eq!(op::op_name(0), "unknown");
        assert_eq!(op::op_name(8), "unknown");
    }

    #[test]
    fn validate_layouts() {
        let l = validate(op::XTS_ENC, 64, 4096, 0, 512, &AesParams::plain64(7)).unwrap();
        assert_eq!(l.mode, Mode::Xts);
        assert!(!l.decrypt);
        assert_eq!(
            (l.aes_key_len, l.rounds, l.units, l.unit_len),
            (32, 14, 8, 512)
        );
        let l = validate(op::CTR, 24, 17, 16, 0, &AesParams::list()).unwrap();
        assert_eq!((l.units, l.unit_len, l.rounds), (1, 17, 12));
        let l = validate(op::ECB_DEC, 16, 32, 0, 16, &AesParams::none()).unwrap();
        assert_eq!((l.units, l.decrypt), (2, true));
    }

    #[test]
    fn validate_errors() {
        let p64 = AesParams::plain64(0);
        assert_eq!(validate(0, 16, 16, 0, 0, &p64), Err(ProtoError::UnknownOp));
        assert_eq!(validate(8, 16, 16, 0, 0, &p64), Err(ProtoError::UnknownOp));
        assert_eq!(
            validate(op::CBC_ENC, 20, 16, 0, 0, &p64),
            Err(ProtoError::BadKey)
        );
        assert_eq!(
            validate(op::XTS_ENC, 16, 16, 0, 0, &p64),
            Err(ProtoError::BadKey)
        );
        assert_eq!(
            validate(op::XTS_ENC, 33, 16, 0, 0, &p64),
            Err(ProtoError::BadKey)
        );
        assert_eq!(
            validate(op::CTR, 64, 16, 0, 0, &p64),
            Err(ProtoError::BadKey)
        );
        assert_eq!(
            validate(op::CBC_ENC, 16, 0, 0, 0, &p64),
            Err(ProtoError::BadLength)
        );
        assert_eq!(
            validate(op::CBC_ENC, 16, 24, 0, 0, &p64),
            Err(ProtoError::BadLength)
        );
        assert_eq!(
            validate(op::CBC_ENC, 16, 48, 0, 32, &p64),
            Err(ProtoError::BadLength)
        );
        assert_eq!(
            validate(op::CTR, 16, 30, 0, 10, &p64).map(|l| l.units),
            Ok(3)
        );
        assert_eq!(
            validate(op::XTS_DEC, 32, 30, 0, 15, &p64),
            Err(ProtoError::BadLength)
        );
        assert_eq!(
            validate(op::ECB_ENC, 16, 16, 0, 0, &p64),
            Err(ProtoError::BadParams)
        );
        assert_eq!(
            validate(op::CBC_ENC, 16, 16, 0, 0, &AesParams::none()),
            Err(ProtoError::BadParams)
        );
        assert_eq!(
            validate(op::CBC_ENC, 16, 32, 0, 16, &AesParams::single([1; 16])),
            Err(ProtoError::BadParams)
        );
        let mut p = AesParams::plain64(1);
        p.iv[3] = 1;
        assert_eq!(
            validate(op::CTR, 16, 16, 0, 0, &p),
            Err(ProtoError::BadParams)
        );
        assert_eq!(
            validate(op::CTR, 16, 32, 16, 16, &AesParams::list()),
            Err(ProtoError::BadLength)
        );
        assert_eq!(
            validate(op::CTR, 16, 32, 16, 16, &p64),
            Err(ProtoError::BadLength)
        );
        assert_eq!(
            validate(op::CTR, 16, 32, 32, 16, &AesParams::list()).map(|l| l.units),
            Ok(2)
        );
    }

    #[test]
    fn unit_ivs() {
        let p = AesParams::plain64(u64::MAX);
        assert_eq!(unit_iv(&p, &[], 0).unwrap()[..8], [0xff; 8]);
        assert_eq!(unit_iv(&p, &[], 1), Some([0; 16]));
        assert_eq!(unit_iv(&p, &[], 3).unwrap()[0], 2);
        let aux: [u8; 32] = core::array::from_fn(|i| i as u8);
        let l = AesParams::list();
        assert_eq!(unit_iv(&l, &aux, 1).unwrap()[0], 16);
        assert_eq!(unit_iv(&l, &aux, 2), None);
        assert_eq!(unit_iv(&l, &aux, u64::MAX), None);
        let s = AesParams::single([9; 16]);
        assert_eq!(unit_iv(&s, &[], 0), Some([9; 16]));
        let bad = AesParams {
            iv_mode: 77,
            ..AesParams::none()
        };
        assert_eq!(unit_iv(&bad, &aux, 0), None);
    }
}
