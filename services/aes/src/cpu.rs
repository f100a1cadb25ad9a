//! The CPU implementation, on the fastest of three paths found at run time
//! ([`Path`]): VAES on AVX-512, AES-NI (both in [`crate::x86`], the modes
//! fused into the block loops), or the `aes` crate's block cipher with the
//! portable mode code here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::{Aes128, Aes192, Aes256, Block};

use crate::proto::{self, AesParams, Mode};
#[cfg(target_arch = "x86_64")]
use crate::x86;
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

/// Views AES blocks as bytes.
#[cfg(target_arch = "x86_64")]
fn as_bytes(blocks: &mut [Block]) -> &mut [u8] {
    let n = blocks.len() * 16;
    // SAFETY: `Block` is a `repr(transparent)` wrapper of `[u8; 16]` (size 16,
    // alignment 1), so `blocks` is `n` contiguous initialised bytes, borrowed
    // mutably for the lifetime of the result.
    unsafe { core::slice::from_raw_parts_mut(blocks.as_mut_ptr().cast::<u8>(), n) }
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

/// Which code runs the block cipher and the modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Path {
    /// VAES on AVX-512: four blocks per 512-bit register, sixteen in flight,
    /// the modes fused into the block loops (x86-64 only).
    Vaes,
    /// AES-NI: eight blocks in flight, the modes fused (x86-64 only).
    AesNi,
    /// The `aes` crate (which itself uses AES-NI when present, else its
    /// constant-time fixsliced software AES) with the portable mode code
    /// below.
    Portable,
}

impl Path {
    /// Every path, fastest first.
    pub const ALL: [Path; 3] = [Path::Vaes, Path::AesNi, Path::Portable];

    /// Whether this processor can run the path (detected at run time).
    pub fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Path::Vaes => x86::Vaes::detect().is_some(),
            #[cfg(target_arch = "x86_64")]
            Path::AesNi => x86::Ni::detect().is_some(),
            #[cfg(not(target_arch = "x86_64"))]
            Path::Vaes | Path::AesNi => false,
            Path::Portable => true,
        }
    }

    /// The fastest path this processor has; `KGPU_AES_PATH` (`vaes`,
    /// `aesni`, `portable`) forces a slower one, for comparisons (a path the
    /// processor lacks is ignored). Decided once per process.
    pub fn best() -> Path {
        static BEST: std::sync::OnceLock<Path> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            let forced = std::env::var("KGPU_AES_PATH")
                .ok()
                .and_then(|v| Path::parse(&v))
                .filter(|p| p.available());
            forced.unwrap_or_else(|| {
                Path::ALL
                    .into_iter()
                    .find(|p| p.available())
                    .unwrap_or(Path::Portable)
            })
        })
    }

    /// The path named `s` (`vaes`, `aesni`, `portable`).
    pub fn parse(s: &str) -> Option<Path> {
        Path::ALL.into_iter().find(|p| p.name() == s)
    }

    /// Its short name.
    pub fn name(self) -> &'static str {
        match self {
            Path::Vaes => "vaes",
            Path::AesNi => "aesni",
            Path::Portable => "portable",
        }
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The `aes` crate's expanded key.
#[derive(Clone)]
enum SoftKey {
    A128(Box<Aes128>),
    A192(Box<Aes192>),
    A256(Box<Aes256>),
}

#[derive(Clone)]
enum Imp {
    Portable(SoftKey),
    #[cfg(target_arch = "x86_64")]
    Ni(x86::Ni, Box<x86::RoundKeys>),
    #[cfg(target_arch = "x86_64")]
    Vaes(x86::Vaes, Box<x86::RoundKeys>),
}

/// One expanded AES key (128, 192 or 256 bits), bound to the code path that
/// runs it.
#[derive(Clone)]
pub struct AesKey {
    imp: Imp,
    bits: u32,
}

impl std::fmt::Debug for AesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AesKey({} bits, {})", self.bits, self.path())
    }
}

impl AesKey {
    /// Expands a 16, 24 or 32-byte key for the fastest path ([`Path::best`]).
    pub fn new(key: &[u8]) -> Result<Self, AesError> {
        Self::with_path(key, Path::best())
    }

    /// Expands a key for `path`; [`AesError::BadKey`] for a bad length,
    /// [`AesError::Unsupported`] when the processor lacks the path.
    pub fn with_path(key: &[u8], path: Path) -> Result<Self, AesError> {
        let bits = match key.len() {
            16 | 24 | 32 => key.len() as u32 * 8,
            _ => return Err(AesError::BadKey),
        };
        let imp = match path {
            Path::Portable => {
                let bad = |_| AesError::BadKey;
                Imp::Portable(match key.len() {
                    16 => SoftKey::A128(Box::new(Aes128::new_from_slice(key).map_err(bad)?)),
                    24 => SoftKey::A192(Box::new(Aes192::new_from_slice(key).map_err(bad)?)),
                    _ => SoftKey::A256(Box::new(Aes256::new_from_slice(key).map_err(bad)?)),
                })
            }
            #[cfg(target_arch = "x86_64")]
            Path::AesNi => {
                let ni = x86::Ni::detect().ok_or(AesError::Unsupported)?;
                Imp::Ni(ni, Box::new(x86::RoundKeys::new(&round_keys(key)?)))
            }
            #[cfg(target_arch = "x86_64")]
            Path::Vaes => {
                let v = x86::Vaes::detect().ok_or(AesError::Unsupported)?;
                Imp::Vaes(v, Box::new(x86::RoundKeys::new(&round_keys(key)?)))
            }
            #[cfg(not(target_arch = "x86_64"))]
            Path::AesNi | Path::Vaes => return Err(AesError::Unsupported),
        };
        Ok(AesKey { imp, bits })
    }

    /// The path that runs this key.
    pub fn path(&self) -> Path {
        match self.imp {
            Imp::Portable(_) => Path::Portable,
            #[cfg(target_arch = "x86_64")]
            Imp::Ni(..) => Path::AesNi,
            #[cfg(target_arch = "x86_64")]
            Imp::Vaes(..) => Path::Vaes,
        }
    }

    /// Key size in bits.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    fn soft_encrypt(k: &SoftKey, blocks: &mut [Block]) {
        match k {
            SoftKey::A128(c) => c.encrypt_blocks(blocks),
            SoftKey::A192(c) => c.encrypt_blocks(blocks),
            SoftKey::A256(c) => c.encrypt_blocks(blocks),
        }
    }

    fn soft_decrypt(k: &SoftKey, blocks: &mut [Block]) {
        match k {
            SoftKey::A128(c) => c.decrypt_blocks(blocks),
            SoftKey::A192(c) => c.decrypt_blocks(blocks),
            SoftKey::A256(c) => c.decrypt_blocks(blocks),
        }
    }

    /// Encrypts blocks in place (ECB).
    pub fn encrypt_blocks(&self, blocks: &mut [Block]) {
        match &self.imp {
            Imp::Portable(k) => Self::soft_encrypt(k, blocks),
            #[cfg(target_arch = "x86_64")]
            _ => self.ecb_raw(as_bytes(blocks), false),
        }
    }

    /// Decrypts blocks in place (ECB).
    pub fn decrypt_blocks(&self, blocks: &mut [Block]) {
        match &self.imp {
            Imp::Portable(k) => Self::soft_decrypt(k, blocks),
            #[cfg(target_arch = "x86_64")]
            _ => self.ecb_raw(as_bytes(blocks), true),
        }
    }

    /// ECB over whole blocks.
    fn ecb_raw(&self, data: &mut [u8], decrypt: bool) {
        match &self.imp {
            Imp::Portable(k) => {
                if decrypt {
                    Self::soft_decrypt(k, as_blocks(data))
                } else {
                    Self::soft_encrypt(k, as_blocks(data))
                }
            }
            #[cfg(target_arch = "x86_64")]
            Imp::Ni(ni, rk) => ni.ecb(rk, data, decrypt),
            #[cfg(target_arch = "x86_64")]
            Imp::Vaes(v, rk) => v.ecb(rk, data, decrypt),
        }
    }

    /// Encrypts or decrypts one block (an XTS tweak, a CBC step): AES-NI
    /// alone where present, without the wide path's set-up.
    fn block(&self, b: &mut [u8; 16], decrypt: bool) {
        #[cfg(target_arch = "x86_64")]
        if let Some((ni, rk)) = self.ni() {
            return ni.block(rk, b, decrypt);
        }
        self.ecb_raw(b, decrypt);
    }

    /// Encrypts one block.
    pub fn encrypt_block(&self, b: &mut [u8; 16]) {
        self.block(b, false);
    }

    /// Decrypts one block.
    pub fn decrypt_block(&self, b: &mut [u8; 16]) {
        self.block(b, true);
    }

    /// ECB encryption in place; the length must be a multiple of 16.
    pub fn ecb_encrypt(&self, data: &mut [u8]) -> Result<(), AesError> {
        if !data.len().is_multiple_of(16) {
            return Err(AesError::BadLength);
        }
        self.ecb_raw(data, false);
        Ok(())
    }

    /// ECB decryption in place; the length must be a multiple of 16.
    pub fn ecb_decrypt(&self, data: &mut [u8]) -> Result<(), AesError> {
        if !data.len().is_multiple_of(16) {
            return Err(AesError::BadLength);
        }
        self.ecb_raw(data, true);
        Ok(())
    }

    /// CBC encryption in place; the length must be a multiple of 16.
    pub fn cbc_encrypt(&self, iv: &[u8; 16], data: &mut [u8]) -> Result<(), AesError> {
        if !data.len().is_multiple_of(16) {
            return Err(AesError::BadLength);
        }
        match &self.imp {
            #[cfg(target_arch = "x86_64")]
            Imp::Ni(ni, rk) => ni.cbc_encrypt(rk, iv, data),
            // A chain is serial: VAES cannot widen it, AES-NI is the fastest.
            #[cfg(target_arch = "x86_64")]
            Imp::Vaes(v, rk) => v.ni().cbc_encrypt(rk, iv, data),
            Imp::Portable(_) => {
                let mut prev = *iv;
                for chunk in data.chunks_exact_mut(16) {
                    xor16(chunk, &prev);
                    let b: &mut [u8; 16] = chunk.try_into().map_err(|_| AesError::BadLength)?;
                    self.encrypt_block(b);
                    prev = *b;
                }
            }
        }
        Ok(())
    }

    /// The AES-NI code and round keys, on the paths that have them.
    #[cfg(target_arch = "x86_64")]
    fn ni(&self) -> Option<(x86::Ni, &x86::RoundKeys)> {
        match &self.imp {
            Imp::Ni(ni, rk) => Some((*ni, rk)),
            Imp::Vaes(v, rk) => Some((v.ni(), rk)),
            Imp::Portable(_) => None,
        }
    }

    /// CBC encryption of consecutive units of `unit` bytes (a multiple of
    /// 16) in place, unit `i` chained from `iv(i)` (`None`: a bad request).
    /// On the AES-NI and VAES paths eight units are encrypted side by side.
    pub fn cbc_encrypt_units(
        &self,
        unit: usize,
        data: &mut [u8],
        iv: impl Fn(usize) -> Option<[u8; 16]>,
    ) -> Result<(), AesError> {
        if unit == 0 || !unit.is_multiple_of(16) || !data.len().is_multiple_of(unit) {
            return Err(AesError::BadLength);
        }
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if let Some((ni, rk)) = self.ni() {
            let lanes = x86::CBC_LANES;
            for c in data.chunks_exact_mut(lanes * unit) {
                let mut ivs = [[0u8; 16]; x86::CBC_LANES];
                for (l, v) in ivs.iter_mut().enumerate() {
                    *v = iv(done + l).ok_or(AesError::BadParams)?;
                }
                ni.cbc_encrypt_lanes(rk, &ivs, c);
                done += lanes;
            }
        }
        for u in data[done * unit..].chunks_exact_mut(unit) {
            self.cbc_encrypt(&iv(done).ok_or(AesError::BadParams)?, u)?;
            done += 1;
        }
        Ok(())
    }

    /// CBC decryption in place; the length must be a multiple of 16.
    pub fn cbc_decrypt(&self, iv: &[u8; 16], data: &mut [u8]) -> Result<(), AesError> {
        if !data.len().is_multiple_of(16) {
            return Err(AesError::BadLength);
        }
        match &self.imp {
            #[cfg(target_arch = "x86_64")]
            Imp::Ni(ni, rk) => ni.cbc_decrypt(rk, iv, data),
            #[cfg(target_arch = "x86_64")]
            Imp::Vaes(v, rk) => v.cbc_decrypt(rk, iv, data),
            Imp::Portable(_) => {
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
            }
        }
        Ok(())
    }

    /// CTR in place (encryption and decryption alike) with a 128-bit
    /// big-endian counter starting at `iv` and carrying across all 16 bytes;
    /// any length.
    pub fn ctr_apply(&self, iv: &[u8; 16], data: &mut [u8]) {
        match &self.imp {
            #[cfg(target_arch = "x86_64")]
            Imp::Ni(ni, rk) => ni.ctr(rk, iv, data),
            #[cfg(target_arch = "x86_64")]
            Imp::Vaes(v, rk) => v.ctr(rk, iv, data),
            Imp::Portable(_) => {
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
    }

    /// XTS over whole blocks with tweaks from `t`; the tweak after the last.
    fn xts_blocks(&self, mut t: u128, data: &mut [u8], decrypt: bool) -> u128 {
        match &self.imp {
            #[cfg(target_arch = "x86_64")]
            Imp::Ni(ni, rk) => ni.xts(rk, t, data, decrypt),
            #[cfg(target_arch = "x86_64")]
            Imp::Vaes(v, rk) => v.xts(rk, t, data, decrypt),
            Imp::Portable(_) => {
                let mut tweaks = [0u128; BATCH];
                for chunk in data.chunks_mut(BATCH * 16) {
                    let n = chunk.len() / 16;
                    for (tw, c) in tweaks[..n].iter_mut().zip(chunk.chunks_exact_mut(16)) {
                        *tw = t;
                        let v = load128(c) ^ t;
                        c.copy_from_slice(&v.to_le_bytes());
                        t = xts_double(t);
                    }
                    self.ecb_raw(chunk, decrypt);
                    for (tw, c) in tweaks[..n].iter().zip(chunk.chunks_exact_mut(16)) {
                        let v = load128(c) ^ tw;
                        c.copy_from_slice(&v.to_le_bytes());
                    }
                }
                t
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
        Self::with_path(key, Path::best())
    }

    /// The same, for `path` (see [`AesKey::with_path`]).
    pub fn with_path(key: &[u8], path: Path) -> Result<Self, AesError> {
        if !key.len().is_multiple_of(2) {
            return Err(AesError::BadKey);
        }
        let (a, b) = key.split_at(key.len() / 2);
        Ok(XtsKey {
            data: AesKey::with_path(a, path)?,
            tweak: AesKey::with_path(b, path)?,
        })
    }

    /// Processes whole blocks with consecutive tweaks starting at `t`,
    /// returning the tweak after the last block.
    fn blocks(&self, t: u128, data: &mut [u8], decrypt: bool) -> u128 {
        self.data.xts_blocks(t, data, decrypt)
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
    path: Path,
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
            path: Path::best(),
        }
    }

    /// A backend on `path` (with the default cache), or `None` when the
    /// processor lacks it.
    pub fn with_path(path: Path) -> Option<Self> {
        path.available().then(|| AesCpu {
            path,
            ..Self::new()
        })
    }

    /// The code path its keys run on.
    pub fn path(&self) -> Path {
        self.path
    }

    /// Number of cached keys.
    pub fn cached_keys(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// The expanded keys for `key`, from the cache when `tag` names the same bytes.
    pub fn keys(&self, tag: u64, key: &[u8], xts: bool) -> Result<Arc<Keys>, AesError> {
        let build = || -> Result<Arc<Keys>, AesError> {
            Ok(Arc::new(if xts {
                Keys::Xts(XtsKey::with_path(key, self.path)?)
            } else {
                Keys::Single(AesKey::with_path(key, self.path)?)
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
        (Keys::Single(k), Mode::Cbc) if !layout.decrypt => {
            k.cbc_encrypt_units(unit_len, data, |i| proto::unit_iv(params, aux, i as u64))
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
