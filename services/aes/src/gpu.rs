//! Launch code for the CUDA kernels of `cuda/aes.cu`.
//!
//! The helper compiles [`SOURCE`] with NVRTC (together with the other
//! services' sources), loads the module and builds an [`AesGpu`] from it. The
//! device holds a mirror of the data area; before [`AesGpu::launch`] the caller
//! has copied the input to the output extent, and the kernels work in place there.
//!
//! Expanded key schedules travel as kernel parameters (the constant bank, which
//! the kernels use directly as instruction operands): nothing is uploaded per
//! key, and no device memory is shared between streams except the read-only
//! lookup tables. Schedules are cached on the host by key tag.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::sys::{CUdeviceptr, CUfunction_attribute};
use cudarc::driver::{
    CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr, DriverError,
    LaunchConfig, PushKernelArg,
};
use kgpu_common::abi::{Extent, Status};

use crate::proto::{self, AesParams, Layout, Mode};
use crate::schedule::{gpu_tables, round_keys, GPU_TABLE_WORDS, MAX_SCHEDULE_WORDS};
use crate::AesError;

/// The CUDA C source of the kernels (NVRTC, no system headers).
pub const SOURCE: &str = include_str!("../cuda/aes.cu");

/// Names of the kernels defined by [`SOURCE`].
pub const KERNELS: [&str; 11] = [
    "kgpu_aes_ecb_enc",
    "kgpu_aes_ecb_dec",
    "kgpu_aes_ctr",
    "kgpu_aes_ctr_tail",
    "kgpu_aes_xts_tweak",
    "kgpu_aes_xts_enc",
    "kgpu_aes_xts_dec",
    "kgpu_aes_xts_cts_enc",
    "kgpu_aes_xts_cts_dec",
    "kgpu_aes_cbc_enc",
    "kgpu_aes_cbc_dec",
];

/// Threads per block of the table-driven kernels (`KGPU_AES_THREADS`).
const BIG_THREADS: u32 = 1024;
/// Threads per block of the per-unit helper kernels.
const SMALL_THREADS: u32 = 256;
/// Dynamic shared memory of the encryption kernels: Te0..Te3 × 32 copies.
const ENC_SMEM: u32 = 4 * 256 * 32 * 4;
/// Dynamic shared memory of the decryption kernels: Td0..Td3 and the inverse S-box × 32 copies.
const DEC_SMEM: u32 = 5 * 256 * 32 * 4;
/// Words of the schedules passed to the kernels: encryption, decryption, tweak encryption.
const KEY_WORDS: usize = 3 * MAX_SCHEDULE_WORDS;
/// Default bound of the schedule cache.
pub const DEFAULT_GPU_KEY_CACHE: usize = 1024;

/// Kernel arguments; must match `struct KgpuAesArgs` in `cuda/aes.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct KernelArgs {
    data: u64,
    aux: u64,
    tables: u64,
    scratch: u64,
    start_sector: u64,
    units: u64,
    unit_len: u64,
    rounds: u32,
    rounds2: u32,
    iv_mode: u32,
    aligned: u32,
    fb_shift: u32,
    pad: u32,
    iv: [u8; 16],
    rk: [u32; KEY_WORDS],
}

const _: () = assert!(core::mem::size_of::<KernelArgs>() == 96 + 4 * KEY_WORDS);

// SAFETY: `KernelArgs` is `repr(C)` plain data (integers and a byte array) with
// the layout of `struct KgpuAesArgs` (checked size, same field order, no
// padding), so passing its bytes as a kernel parameter is sound.
unsafe impl DeviceRepr for KernelArgs {}

/// Why a GPU launch failed.
#[derive(Debug)]
pub enum AesGpuError {
    /// The request is invalid.
    Invalid(AesError),
    /// An extent lies outside the device mirror or input and output differ in length.
    BadExtent,
    /// The driver failed.
    Driver(DriverError),
}

impl AesGpuError {
    /// The completion status to report.
    pub fn status(&self) -> Status {
        match self {
            AesGpuError::Invalid(e) => e.status(),
            AesGpuError::BadExtent => Status::BadExtent,
            AesGpuError::Driver(_) => Status::BackendError,
        }
    }
}

impl std::fmt::Display for AesGpuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AesGpuError::Invalid(e) => write!(f, "invalid AES request: {e}"),
            AesGpuError::BadExtent => f.write_str("extent outside the device mirror"),
            AesGpuError::Driver(e) => write!(f, "CUDA driver error: {e:?}"),
        }
    }
}

impl std::error::Error for AesGpuError {}

impl From<AesError> for AesGpuError {
    fn from(e: AesError) -> Self {
        AesGpuError::Invalid(e)
    }
}

impl From<proto::ProtoError> for AesGpuError {
    fn from(e: proto::ProtoError) -> Self {
        AesGpuError::Invalid(e.into())
    }
}

impl From<DriverError> for AesGpuError {
    fn from(e: DriverError) -> Self {
        AesGpuError::Driver(e)
    }
}

/// An AES request as the GPU backend sees it.
#[derive(Clone, Copy, Debug)]
pub struct AesGpuRequest<'a> {
    /// One of [`proto::op`].
    pub op: u16,
    /// Bytes per unit (0: the whole buffer).
    pub unit: u32,
    /// Encoded [`AesParams`].
    pub params: [u8; 32],
    /// Key tag (0: do not cache the expanded schedule).
    pub key_tag: u64,
    /// Raw key bytes (host memory).
    pub key: &'a [u8],
    /// Input extent in the mirror (already copied to `output` by the caller).
    pub input: Extent,
    /// Output extent in the mirror; the kernels work in place here.
    pub output: Extent,
    /// Aux extent in the mirror (the IV list for [`proto::IV_LIST`]).
    pub aux: Extent,
    /// Size in bytes of the device mirror at `data_base`.
    pub data_size: u64,
}

struct KeyEntry {
    raw: Vec<u8>,
    xts: bool,
    words: Arc<[u32; KEY_WORDS]>,
}

struct Kernels {
    ecb_enc: CudaFunction,
    ecb_dec: CudaFunction,
    ctr: CudaFunction,
    ctr_tail: CudaFunction,
    xts_tweak: CudaFunction,
    xts_enc: CudaFunction,
    xts_dec: CudaFunction,
    xts_cts_enc: CudaFunction,
    xts_cts_dec: CudaFunction,
    cbc_enc: CudaFunction,
    cbc_dec: CudaFunction,
}

/// The GPU backend: the module's kernels, the lookup tables on the device and
/// a bounded cache of expanded key schedules keyed by tag.
pub struct AesGpu {
    k: Kernels,
    tables: CudaSlice<u32>,
    keys: Mutex<HashMap<u64, KeyEntry>>,
    cap: usize,
    sms: u32,
}

impl AesGpu {
    /// Loads the kernels from a module compiled from [`SOURCE`] and uploads the
    /// lookup tables with `stream` (synchronised before returning).
    pub fn new(module: &Arc<CudaModule>, stream: &Arc<CudaStream>) -> Result<Self, DriverError> {
        let load = |name: &str| module.load_function(name);
        let k = Kernels {
            ecb_enc: load("kgpu_aes_ecb_enc")?,
            ecb_dec: load("kgpu_aes_ecb_dec")?,
            ctr: load("kgpu_aes_ctr")?,
            ctr_tail: load("kgpu_aes_ctr_tail")?,
            xts_tweak: load("kgpu_aes_xts_tweak")?,
            xts_enc: load("kgpu_aes_xts_enc")?,
            xts_dec: load("kgpu_aes_xts_dec")?,
            xts_cts_enc: load("kgpu_aes_xts_cts_enc")?,
            xts_cts_dec: load("kgpu_aes_xts_cts_dec")?,
            cbc_enc: load("kgpu_aes_cbc_enc")?,
            cbc_dec: load("kgpu_aes_cbc_dec")?,
        };
        let smem = CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
        for f in [&k.ecb_enc, &k.ctr, &k.xts_enc, &k.cbc_enc] {
            f.set_attribute(smem, ENC_SMEM as i32)?;
        }
        for f in [&k.ecb_dec, &k.xts_dec, &k.cbc_dec] {
            f.set_attribute(smem, DEC_SMEM as i32)?;
        }
        let host = gpu_tables();
        debug_assert_eq!(host.len(), GPU_TABLE_WORDS);
        let tables = stream.clone_htod(&host)?;
        stream.synchronize()?;
        let sms = stream.context().attribute(
            cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        )?;
        Ok(AesGpu {
            k,
            tables,
            keys: Mutex::new(HashMap::new()),
            cap: DEFAULT_GPU_KEY_CACHE,
            sms: sms.max(1) as u32,
        })
    }

    /// Number of cached key schedules.
    pub fn cached_keys(&self) -> usize {
        self.keys.lock().map(|k| k.len()).unwrap_or(0)
    }

    fn key_words(key: &[u8], layout: &Layout) -> Result<[u32; KEY_WORDS], AesError> {
        let half = layout.aes_key_len as usize;
        let (data_key, tweak_key) = if layout.mode == Mode::Xts {
            (&key[..half], Some(&key[half..]))
        } else {
            (key, None)
        };
        let ks = round_keys(data_key)?;
        let mut words = [0u32; KEY_WORDS];
        words[..MAX_SCHEDULE_WORDS].copy_from_slice(&ks.enc);
        words[MAX_SCHEDULE_WORDS..2 * MAX_SCHEDULE_WORDS].copy_from_slice(&ks.dec);
        if let Some(t) = tweak_key {
            let kt = round_keys(t)?;
            words[2 * MAX_SCHEDULE_WORDS..].copy_from_slice(&kt.enc);
        }
        Ok(words)
    }

    /// The expanded schedules of `key`, from the cache when `tag` names the same bytes.
    fn schedules(
        &self,
        tag: u64,
        key: &[u8],
        layout: &Layout,
    ) -> Result<Arc<[u32; KEY_WORDS]>, AesError> {
        let xts = layout.mode == Mode::Xts;
        if tag == 0 || self.cap == 0 {
            return Ok(Arc::new(Self::key_words(key, layout)?));
        }
        let mut cache = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = cache.get(&tag) {
            if e.xts == xts && e.raw == key {
                return Ok(Arc::clone(&e.words));
            }
        }
        let words = Arc::new(Self::key_words(key, layout)?);
        if cache.len() >= self.cap && !cache.contains_key(&tag) {
            if let Some(&victim) = cache.keys().next() {
                cache.remove(&victim);
            }
        }
        cache.insert(
            tag,
            KeyEntry {
                raw: key.to_vec(),
                xts,
                words: Arc::clone(&words),
            },
        );
        Ok(words)
    }

    fn big(&self, work: u64, smem: u32) -> LaunchConfig {
        let blocks = work
            .div_ceil(u64::from(BIG_THREADS))
            .clamp(1, u64::from(self.sms));
        LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (BIG_THREADS, 1, 1),
            shared_mem_bytes: smem,
        }
    }

    fn small(&self, units: u64) -> LaunchConfig {
        let blocks = units
            .div_ceil(u64::from(SMALL_THREADS))
            .clamp(1, u64::from(self.sms) * 16);
        LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (SMALL_THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Validates a request and launches its kernels on `stream`, in place at
    /// `data_base + output.off`. Returns once the work is queued; the caller
    /// synchronises (or records an event) before reading the output.
    ///
    /// `data_base` must be a device allocation of at least `req.data_size`
    /// bytes in the stream's context; every extent is checked against that size.
    pub fn launch(
        &self,
        stream: &Arc<CudaStream>,
        data_base: CUdeviceptr,
        req: &AesGpuRequest<'_>,
    ) -> Result<(), AesGpuError> {
        let params = AesParams::from_bytes(&req.params)?;
        let layout = proto::validate(
            req.op,
            req.key.len() as u64,
            req.output.len,
            req.aux.len,
            req.unit,
            &params,
        )?;
        self.launch_parsed(stream, data_base, req, &params, &layout)
    }

    /// [`AesGpu::launch`] of a request already decoded and validated:
    /// `params` and `layout` are what [`AesParams::from_bytes`] and
    /// [`proto::validate`] made of `req` (its `params` field is not read).
    /// Only what keeps the kernels inside the request's extents is checked
    /// again: the layout covers the output extent, the key has the layout's
    /// length, a listed IV per unit is there and XTS units hold a block.
    pub fn launch_parsed(
        &self,
        stream: &Arc<CudaStream>,
        data_base: CUdeviceptr,
        req: &AesGpuRequest<'_>,
        params: &AesParams,
        layout: &Layout,
    ) -> Result<(), AesGpuError> {
        let key_len = u64::from(layout.aes_key_len) * if layout.mode == Mode::Xts { 2 } else { 1 };
        if req.key.len() as u64 != key_len {
            return Err(AesGpuError::Invalid(AesError::BadKey));
        }
        let ivs = if params.iv_mode == proto::IV_LIST {
            layout.units.checked_mul(proto::IV_LEN)
        } else {
            Some(req.aux.len)
        };
        if layout.units.checked_mul(layout.unit_len) != Some(layout.data_len)
            || layout.data_len != req.output.len
            || ivs != Some(req.aux.len)
            || (layout.mode == Mode::Xts && layout.unit_len < proto::BLOCK)
        {
            return Err(AesGpuError::Invalid(AesError::BadLength));
        }
        if req.input.len != req.output.len
            || !req.input.fits(req.data_size)
            || !req.output.fits(req.data_size)
            || !req.aux.fits(req.data_size)
        {
            return Err(AesGpuError::BadExtent);
        }
        let data = data_base
            .checked_add(req.output.off)
            .ok_or(AesGpuError::BadExtent)?;
        let aux = data_base
            .checked_add(req.aux.off)
            .ok_or(AesGpuError::BadExtent)?;

        let rk = *self.schedules(req.key_tag, req.key, layout)?;
        let (tables, _tables_guard) = self.tables.device_ptr(stream);

        let fb = layout.unit_len / 16;
        let fb_shift = if fb.is_power_of_two() {
            fb.trailing_zeros()
        } else {
            255
        };
        let mut args = KernelArgs {
            data,
            aux,
            tables,
            scratch: 0,
            start_sector: params.start_sector,
            units: layout.units,
            unit_len: layout.unit_len,
            rounds: layout.rounds,
            rounds2: layout.rounds,
            iv_mode: params.iv_mode,
            aligned: u32::from(data.is_multiple_of(16) && layout.unit_len.is_multiple_of(16)),
            fb_shift,
            pad: 0,
            iv: params.iv,
            rk,
        };
        let blocks = layout.units * fb;
        let tail = !layout.unit_len.is_multiple_of(16);
        let k = &self.k;
        match (layout.mode, layout.decrypt) {
            (Mode::Ecb, dec) => {
                let (f, smem) = if dec {
                    (&k.ecb_dec, DEC_SMEM)
                } else {
                    (&k.ecb_enc, ENC_SMEM)
                };
                self.run(stream, f, &args, self.big(blocks, smem))?;
            }
            (Mode::Ctr, _) => {
                if blocks > 0 {
                    self.run(stream, &k.ctr, &args, self.big(blocks, ENC_SMEM))?;
                }
                if tail {
                    self.run(stream, &k.ctr_tail, &args, self.small(layout.units))?;
                }
            }
            (Mode::Cbc, false) => {
                let cfg = self.big(layout.units, ENC_SMEM);
                self.run(stream, &k.cbc_enc, &args, cfg)?;
            }
            (Mode::Cbc, true) => {
                let cfg = self.big(layout.units.saturating_mul(32), DEC_SMEM);
                self.run(stream, &k.cbc_dec, &args, cfg)?;
            }
            (Mode::Xts, dec) => {
                // The XTS kernels compute each unit's tweak themselves; only
                // ciphertext stealing (units not a multiple of 16 bytes) needs
                // the tweaks in a buffer, written by the tweak kernel.
                let scratch: Option<CudaSlice<u32>> = if tail {
                    let words = usize::try_from(layout.units)
                        .ok()
                        .and_then(|u| u.checked_mul(4))
                        .ok_or(AesGpuError::Invalid(AesError::BadLength))?;
                    // SAFETY: the tweak kernel writes every one of the `units`
                    // 16-byte entries before the stealing kernel (queued after
                    // it on the same stream) reads them; nothing reads the
                    // buffer uninitialised.
                    Some(unsafe { stream.alloc::<u32>(words) }?)
                } else {
                    None
                };
                let _scratch_guard = scratch.as_ref().map(|sc| {
                    let (sp, guard) = sc.device_ptr(stream);
                    args.scratch = sp;
                    guard
                });
                if tail {
                    self.run(stream, &k.xts_tweak, &args, self.small(layout.units))?;
                }
                let (f, smem) = if dec {
                    (&k.xts_dec, DEC_SMEM)
                } else {
                    (&k.xts_enc, ENC_SMEM)
                };
                let nproc = if tail { fb - 1 } else { fb };
                if nproc > 0 {
                    let cfg = self.big(layout.units.saturating_mul(32), smem);
                    self.run(stream, f, &args, cfg)?;
                }
                if tail {
                    let f = if dec { &k.xts_cts_dec } else { &k.xts_cts_enc };
                    self.run(stream, f, &args, self.small(layout.units))?;
                }
            }
        }
        Ok(())
    }

    fn run(
        &self,
        stream: &Arc<CudaStream>,
        f: &CudaFunction,
        args: &KernelArgs,
        cfg: LaunchConfig,
    ) -> Result<(), DriverError> {
        let mut b = stream.launch_builder(f);
        b.arg(args);
        // SAFETY: `args` matches the kernels' `KgpuAesArgs` parameter; its device
        // addresses point at the lookup tables (owned by `self`), the scratch
        // buffer allocated on this stream (freed in stream order after the
        // kernels), and the data and aux
        // extents, which `launch` checked against the mirror size. The kernels
        // touch only `units * unit_len` bytes at `data` and `16 * units` at `aux`.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }
}
