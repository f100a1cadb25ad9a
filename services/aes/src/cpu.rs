//! The CPU implementation: the `aes` crate's block cipher (AES-NI detected at
//! run time) and the modes written here, processing several blocks per call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::{Aes128, Aes192, Aes256, Block};

use crate::proto::{self, AesParams, Mode};
use crate::AesError;

pub use crate::schedule::{round_keys, KeySchedule};

/// Blocks handled per batch by the chained and counter modes.
const BATCH: usize = 32;

/// Views a byte slice whose length is a multiple of 16 as AES blocks.
fn as_blocks(data: &mut [u8]) -> &mut [Block] {
    let n = data.len() / 16;
    // SAFETY: `Block` is `GenericArray<u8, U16>`, a `repr(transparent)` wrapper of
    // `[u8; 16]`: size 16, alignment 1, every bit pattern valid. The first `n * 16`
    // bytes lie inside `data`, and the returned slice borrows `data` mutably for
    // its whole lifetime, so nothing else can alias it.
    unsafe { core::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<Block>(), n) }
}

fn xor16(dst: &mut [u8], src: &[u8; 16]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

fn load128(b: &[u8]) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    u128::from_le_bytes(a)
}

/// One expanded AES key (128, 192 or 256 bits).
#[derive(Clone)]
pub enum AesKey {
    /// AES-128.
    A128(Box<Aes128>),
    /// AES-192.
    A192(Box<Aes192>),
    /// AES-256.
    A256(Box<Aes256>),
}

impl std::fmt::Debug for AesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bits = match self {
            AesKey::A128(_) => 128,
            AesKey::A192(_) => 192,
            AesKey::A256(_) => 256,
        };
        write!(f, "AesKey({bits} bits)")
    }
}

impl AesKey {
    /// Expands a 16, 24 or 32-byte key.
    pub fn new(key: &[u8]) -> Result<Self, AesError> {
        let bad = |_| AesError::BadKey;
        Ok(match key.len() {
            16 => AesKey::A128(Box::new(Aes128::new_from_slice(key).map_err(bad)?)),
            24 => AesKey::A192(Box::new(Aes192::new_from_slice(key).map_err(bad)?)),
            32 => AesKey::A256(Box::new(Aes256::new_from_slice(key).map_err(bad)?)),
            _ => return Err(AesError::BadKey),
        })
    }

    /// Encrypts blocks in place.
    pub fn encrypt_blocks(&self, blocks: &mut [Block]) {
        match self {
            AesKey::A128(c) => c.encrypt_blocks(blocks),
            AesKey::A192(c) => c.encrypt_blocks(blocks),
            AesKey::A256(c) => c.encrypt_blocks(blocks),
        }
    }

    /// Decrypts blocks in place.
    pub fn decrypt_blocks(&self, blocks: &mut [Block]) {
        match self {
            AesKey::A128(c) => c.decrypt_blocks(blocks),
            AesKey::A192(c) => c.decrypt_blocks(blocks),
            AesKey::A256(c) => c.decrypt_blocks(blocks),
        }
    }

    /// Encrypts one block.
    pub fn encrypt_block(&self, b: &mut [u8; 16]) {
        self.encrypt_blocks(as_blocks(b));
    }

    /// Decrypts one block.
    pub fn decrypt_block(&self, b: &mut [u8; 16]) {
        self.decrypt_blocks(as_blocks(b));
    }

    /// ECB encryption in place; the length must be a multiple of 16.
    pub fn ecb_encrypt(&self, data: &mut [u8]) -> Result<(), AesError> {
        if !data.len().is_multiple_of(16) {
            return Err(AesError::BadLength);
        }
        self.encrypt_blocks(as_blocks(data));
        Ok(())
    }

    /// ECB decryption in place; the length must be a multiple of 16.
    pub fn ecb_decrypt(&self, data: &mut [u8]) -> Result<(), AesError> {
        if !data.len().is_multiple_of(16) {
            return Err(AesError::BadLength);
        }
        self.decrypt_blocks(as_blocks(data));
        Ok(())
    }

    /// CBC encryption in place; the length must be a multiple of 16.
    pub fn cbc_encrypt(&self, iv: &[u8; 16], data: &mut [u8]) -> Result<(), AesError> {
        if !data.len().is_multiple_of(16) {
            return Err(AesError::BadLength);
        }
        let mut prev = *iv;
        for chunk in data.chunks_exact_mut(16) {
            xor16(chunk, &prev);
            let b: &mut [u8; 16] = chunk.try_into().map_err(|_| AesError::BadLength)?;
            self.encrypt_block(b);
            prev = *b;
        }
        Ok(())
    }

    /// CBC decryption in place; the length must be a multiple of 16.
    pub fn cbc_decrypt(&self, iv: &[u8; 16], data: &mut [u8]) -> Result<(), AesError> {
        if !data.len().is_multiple_of(16) {
            return Err(AesError::BadLength);
        }
        let mut prev = *iv;
        let mut saved = [0u8; BATCH * 16];
        for chunk in data.chunks_mut(BATCH * 16) {
            let n = chunk.len();
            saved[..n].copy_from_slice(chunk);
            self.decrypt_blocks(as_blocks(chunk));
            xor16(&mut chunk[..16], &prev);
            for (i, c) in chunk[16..].chunks_exact_mut(16).enumerate() {
                for (d, s) in c.iter_mut().zip(&saved[16 * i..16 * i + 16]) {
                    *d ^= s;
                }
            }
            prev.copy_from_slice(&saved[n - 16..n]);
        }
        Ok(())
    }

    /// CTR in place (encryption and decryption alike) with a 128-bit
    /// big-endian counter starting at `iv` and carrying across all 16 bytes;
    /// any length.
    pub fn ctr_apply(&self, iv: &[u8; 16], data: &mut [u8]) {
        let mut ctr = u128::from_be_bytes(*iv);
        let mut ks = [0u8; BATCH * 16];
        for chunk in data.chunks_mut(BATCH * 16) {
            let nblocks = chunk.len().div_ceil(16);
            for b in ks[..nblocks * 16].chunks_exact_mut(16) {
                b.copy_from_slice(&ctr.to_be_bytes());
                ctr = ctr.wrapping_add(1);
            }
            self.encrypt_blocks(as_blocks(&mut ks[..nblocks * 16]));
            let full = chunk.len() / 16 * 16;
            for (d, k) in chunk[..full]
                .chunks_exact_mut(16)
                .zip(ks[..full].chunks_exact(16))
            {
                let v = load128(d) ^ load128(k);
                d.copy_from_slice(&v.to_le_bytes());
            }
            for (d, k) in chunk[full..].iter_mut().zip(&ks[full..]) {
                *d ^= k;
            }
        }
    }
}

/// Multiplies an XTS tweak (little-endian 128-bit value) by α in GF(2^128).
pub fn xts_double(t: u128) -> u128 {
    let carry = (t >> 127) as u8;
    (t << 1) ^ if carry != 0 { 0x87 } else { 0 }
}

/// An XTS key pair: the data key and the tweak key.
#[derive(Clone, Debug)]
pub struct XtsKey {
    /// Key for the data blocks (first half of the XTS key).
    pub data: AesKey,
    /// Key for the tweak (second half of the XTS key).
    pub tweak: AesKey,
}

impl XtsKey {
    /// Splits a 32, 48 or 64-byte XTS key into its two halves.
    pub fn new(key: &[u8]) -> Result<Self, AesError> {
        if !key.len().is_multiple_of(2) {
            return Err(AesError::BadKey);
        }
        let (a, b) = key.split_at(key.len() / 2);
        Ok(XtsKey {
            data: AesKey::new(a)?,
            tweak: AesKey::new(b)?,
        })
    }

    /// Processes whole blocks with consecutive tweaks starting at `t`,
    /// returning the tweak after the last block.
    fn blocks(&self, mut t: u128, data: &mut [u8], decrypt: bool) -> u128 {
        let mut tweaks = [0u128; BATCH];
        for chunk in data.chunks_mut(BATCH * 16) {
            let n = chunk.len() / 16;
            for (tw, c) in tweaks[..n].iter_mut().zip(chunk.chunks_exact_mut(16)) {
                *tw = t;
                let v = load128(c) ^ t;
                c.copy_from_slice(&v.to_le_bytes());
                t = xts_double(t);
            }
            if decrypt {
                self.data.decrypt_blocks(as_blocks(chunk));
            } else {
                self.data.encrypt_blocks(as_blocks(chunk));
            }
            for (tw, c) in tweaks[..n].iter().zip(chunk.chunks_exact_mut(16)) {
                let v = load128(c) ^ tw;
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        t
    }

    fn one(&self, t: u128, b: &mut [u8; 16], decrypt: bool) {
        let v = u128::from_le_bytes(*b) ^ t;
        *b = v.to_le_bytes();
        if decrypt {
            self.data.decrypt_block(b);
        } else {
            self.data.encrypt_block(b);
        }
        let v = u128::from_le_bytes(*b) ^ t;
        *b = v.to_le_bytes();
    }

    /// Encrypts or decrypts one data unit in place with the IEEE 1619 tweak
    /// `iv` (encrypted with the tweak key), with ciphertext stealing when the
    /// length is not a multiple of 16. The length must be at least 16.
    pub fn unit(&self, iv: &[u8; 16], data: &mut [u8], decrypt: bool) -> Result<(), AesError> {
        if data.len() < 16 {
            return Err(AesError::BadLength);
        }
        let mut tb = *iv;
        self.tweak.encrypt_block(&mut tb);
        let t = u128::from_le_bytes(tb);
        let tail = data.len() % 16;
        if tail == 0 {
            self.blocks(t, data, decrypt);
            return Ok(());
        }
        // m full blocks then a partial one: the last full block and the tail
        // are handled by ciphertext stealing.
        let full = data.len() - tail;
        let t_last = self.blocks(t, &mut data[..full - 16], decrypt);
        let t_next = xts_double(t_last);
        let (last, partial) = data[full - 16..].split_at_mut(16);
        let mut cc: [u8; 16] = [0; 16];
        cc.copy_from_slice(last);
        // Encryption uses tweaks (m-1, m) for (last full, steal); decryption
        // undoes the second step first, so it takes them in reverse order.
        let (t1, t2) = if decrypt {
            (t_next, t_last)
        } else {
            (t_last, t_next)
        };
        self.one(t1, &mut cc, decrypt);
        let mut pp = cc;
        pp[..tail].copy_from_slice(partial);
        partial.copy_from_slice(&cc[..tail]);
        self.one(t2, &mut pp, decrypt);
        last.copy_from_slice(&pp);
        Ok(())
    }
}

/// The keys of one request.
#[derive(Clone, Debug)]
pub enum Keys {
    /// ECB, CBC, CTR.
    Single(AesKey),
    /// XTS.
    Xts(XtsKey),
}

struct CacheEntry {
    /// The key bytes the entry was expanded from (tags are only hints).
    raw: Vec<u8>,
    xts: bool,
    keys: Arc<Keys>,
}

/// Default bound of the expanded-key cache.
pub const DEFAULT_CACHE_ENTRIES: usize = 1024;

/// An AES request as the CPU backend sees it.
#[derive(Clone, Copy, Debug)]
pub struct AesRequest<'a> {
    /// One of [`proto::op`].
    pub op: u16,
    /// Bytes per unit (0: the whole buffer).
    pub unit: u32,
    /// Encoded [`AesParams`].
    pub params: [u8; 32],
    /// Key tag (0: do not cache).
    pub key_tag: u64,
    /// Raw key bytes.
    pub key: &'a [u8],
    /// Auxiliary bytes (the IV list for [`proto::IV_LIST`]).
    pub aux: &'a [u8],
}

/// The CPU backend, with a bounded cache of expanded keys keyed by tag.
pub struct AesCpu {
    cache: Mutex<HashMap<u64, CacheEntry>>,
    cap: usize,
}

impl Default for AesCpu {
    fn default() -> Self {
        Self::new()
    }
}

impl AesCpu {
    /// A backend with a cache of [`DEFAULT_CACHE_ENTRIES`] keys.
    pub fn new() -> Self {
        Self::with_cache(DEFAULT_CACHE_ENTRIES)
    }

    /// A backend caching at most `entries` keys (0 disables the cache).
    pub fn with_cache(entries: usize) -> Self {
        AesCpu {
            cache: Mutex::new(HashMap::new()),
            cap: entries,
        }
    }

    /// Number of cached keys.
    pub fn cached_keys(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// The expanded keys for `key`, from the cache when `tag` names the same bytes.
    pub fn keys(&self, tag: u64, key: &[u8], xts: bool) -> Result<Arc<Keys>, AesError> {
        let build = || -> Result<Arc<Keys>, AesError> {
            Ok(Arc::new(if xts {
                Keys::Xts(XtsKey::new(key)?)
            } else {
                Keys::Single(AesKey::new(key)?)
            }))
        };
        if tag == 0 || self.cap == 0 {
            return build();
        }
        // A poisoned lock only means another thread panicked mid-insert;
        // the map itself is still consistent.
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = cache.get(&tag) {
            if e.xts == xts && e.raw == key {
                return Ok(Arc::clone(&e.keys));
            }
        }
        let keys = build()?;
        if cache.len() >= self.cap && !cache.contains_key(&tag) {
            if let Some(&victim) = cache.keys().next() {
                cache.remove(&victim);
            }
        }
        cache.insert(
            tag,
            CacheEntry {
                raw: key.to_vec(),
                xts,
                keys: Arc::clone(&keys),
            },
        );
        Ok(keys)
    }

    /// Runs a request on `data` in place and returns the bytes processed.
    ///
    /// `data` holds the input on entry and the output on return; its length is
    /// the request's data length.
    pub fn execute(&self, req: &AesRequest<'_>, data: &mut [u8]) -> Result<u64, AesError> {
        let params = AesParams::from_bytes(&req.params)?;
        let layout = proto::validate(
            req.op,
            req.key.len() as u64,
            data.len() as u64,
            req.aux.len() as u64,
            req.unit,
            &params,
        )?;
        let keys = self.keys(req.key_tag, req.key, layout.mode == Mode::Xts)?;
        run(&keys, &layout, &params, req.aux, data)?;
        Ok(layout.data_len)
    }
}

/// Runs a validated request with expanded keys.
pub fn run(
    keys: &Keys,
    layout: &proto::Layout,
    params: &AesParams,
    aux: &[u8],
    data: &mut [u8],
) -> Result<(), AesError> {
    if data.len() as u64 != layout.data_len {
        return Err(AesError::BadLength);
    }
    let unit_len = usize::try_from(layout.unit_len).map_err(|_| AesError::BadLength)?;
    match (keys, layout.mode) {
        (Keys::Single(k), Mode::Ecb) => {
            if layout.decrypt {
                k.ecb_decrypt(data)
            } else {
                k.ecb_encrypt(data)
            }
        }
        (Keys::Single(k), Mode::Cbc | Mode::Ctr) => {
            for (i, u) in data.chunks_exact_mut(unit_len).enumerate() {
                let iv = proto::unit_iv(params, aux, i as u64).ok_or(AesError::BadParams)?;
                match (layout.mode, layout.decrypt) {
                    (Mode::Ctr, _) => k.ctr_apply(&iv, u),
                    (_, false) => k.cbc_encrypt(&iv, u)?,
                    (_, true) => k.cbc_decrypt(&iv, u)?,
                }
            }
            Ok(())
        }
        (Keys::Xts(k), Mode::Xts) => {
            for (i, u) in data.chunks_exact_mut(unit_len).enumerate() {
                let iv = proto::unit_iv(params, aux, i as u64).ok_or(AesError::BadParams)?;
                k.unit(&iv, u, layout.decrypt)?;
            }
            Ok(())
        }
        _ => Err(AesError::BadKey),
    }
}

/// ECB encryption with a raw key.
pub fn ecb_encrypt(key: &[u8], data: &mut [u8]) -> Result<(), AesError> {
    AesKey::new(key)?.ecb_encrypt(data)
}

/// ECB decryption with a raw key.
pub fn ecb_decrypt(key: &[u8], data: &mut [u8]) -> Result<(), AesError> {
    AesKey::new(key)?.ecb_decrypt(data)
}

/// CBC encryption with a raw key.
pub fn cbc_encrypt(key: &[u8], iv: &[u8; 16], data: &mut [u8]) -> Result<(), AesError> {
    AesKey::new(key)?.cbc_encrypt(iv, data)
}

/// CBC decryption with a raw key.
pub fn cbc_decrypt(key: &[u8], iv: &[u8; 16], data: &mut [u8]) -> Result<(), AesError> {
    AesKey::new(key)?.cbc_decrypt(iv, data)
}

/// CTR with a raw key (its own inverse).
pub fn ctr_apply(key: &[u8], iv: &[u8; 16], data: &mut [u8]) -> Result<(), AesError> {
    AesKey::new(key)?.ctr_apply(iv, data);
    Ok(())
}

/// XTS encryption of one data unit with a raw 32/48/64-byte key.
pub fn xts_encrypt(key: &[u8], iv: &[u8; 16], data: &mut [u8]) -> Result<(), AesError> {
    XtsKey::new(key)?.unit(iv, data, false)
}

/// XTS decryption of one data unit with a raw 32/48/64-byte key.
pub fn xts_decrypt(key: &[u8], iv: &[u8; 16], data: &mut [u8]) -> Result<(), AesError> {
    XtsKey::new(key)?.unit(iv, data, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{reference_decrypt, reference_encrypt};

    #[test]
    fn schedule_matches_aes_crate() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        };
        for klen in [16, 24, 32] {
            for _ in 0..50 {
                let key: Vec<u8> = (0..klen).map(|_| next()).collect();
                let pt: [u8; 16] = core::array::from_fn(|_| next());
                let ks = round_keys(&key).unwrap();
                let k = AesKey::new(&key).unwrap();
                let mut ct = pt;
                k.encrypt_block(&mut ct);
                assert_eq!(reference_encrypt(&ks, &pt), ct);
                assert_eq!(reference_decrypt(&ks, &ct), pt);
            }
        }
    }

    #[test]
    fn xts_double_carries() {
        assert_eq!(xts_double(1), 2);
        assert_eq!(xts_double(1u128 << 127), 0x87);
        assert_eq!(xts_double((1u128 << 127) | 1), 0x85);
    }

    #[test]
    fn cache_checks_bytes_and_bounds() {
        let cpu = AesCpu::with_cache(2);
        let a = cpu.keys(1, &[1; 16], false).unwrap();
        let b = cpu.keys(1, &[1; 16], false).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        // Same tag, other bytes: not served from the cache.
        let c = cpu.keys(1, &[2; 16], false).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        cpu.keys(2, &[3; 32], true).unwrap();
        cpu.keys(3, &[4; 16], false).unwrap();
        assert_eq!(cpu.cached_keys(), 2);
        cpu.keys(0, &[5; 16], false).unwrap();
        assert_eq!(cpu.cached_keys(), 2);
        assert_eq!(cpu.keys(4, &[0; 17], false).unwrap_err(), AesError::BadKey);
    }
}
