// SPDX-License-Identifier: GPL-2.0-only

//! The kernel-side self-test, triggered through debugfs:
//!
//! ```text
//! echo "KIND COUNT [WINDOW] [MAX_LEN]" > /sys/kernel/debug/kgpu/selftest
//! cat /sys/kernel/debug/kgpu/selftest
//! ```
//!
//! KIND is `echo` (the helper copies input to output), `aes` (ECB, CBC, CTR
//! and XTS with plain64 sector IVs, both directions, random keys of every
//! size) or `raid6` (P and Q of 2..14 data disks). Every request gets random
//! lengths and contents; the expected answer is computed with the kernel's own
//! implementation (`crypto_alloc_sync_skcipher("ecb(aes)")` and friends, the
//! selected `raid6_call`) before submission, and every answer is compared
//! byte for byte. At most WINDOW requests (≤ 64) are in flight; one in eight
//! goes through the synchronous API (with `nosleep`: through
//! `api::call_nosleep`, with preemption disabled), and one in four of the
//! others takes its input from a scatterlist and scatters its output back.
//!
//! Requests refused because no helper is attached are counted, not retried,
//! so the test also terminates when the helper dies mid-run. The report says
//! PASS only when every request came back correct.

use crate::api::{self, CallError, Job, Outcome, SubmitError};
use crate::ffi::{self, Cipher, SgArray};
use crate::kcommon::abi::{service, Status, PARAMS_LEN};
use crate::kservices::{aes as aesp, raid6 as r6p};
use crate::{shim, BufWriter};
use core::ffi::{c_void, CStr};
use core::fmt::Write;
use core::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use kernel::alloc::{flags::GFP_KERNEL, KVec};
use kernel::prelude::*;
use kernel::time::Ktime;

const MAX_WINDOW: u32 = 64;
/// Most submitting threads (`par=N`).
const MAX_PAR: u32 = 8;
/// Scatterlist entries per window slot.
const SG_ENTRIES: usize = 64;
/// Bit of the callback context: the request's input came from a scatterlist,
/// and its output goes back through the same list.
const CTX_SG: usize = 1 << 8;
/// Largest RAID6 request: 14 data disks of one page.
const RAID6_MAX_IN: usize = 14 * 4096;

struct Tally {
    run: AtomicU32,
    active: AtomicU32,
    outstanding: AtomicU32,
    progress: AtomicU32,
    busy: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    timeouts: AtomicU64,
    mismatches: AtomicU64,
    /// Callbacks for a window slot that had no request outstanding: a
    /// request completed twice (or a callback after a refused submission).
    doubles: AtomicU64,
}

static T: Tally = Tally {
    run: AtomicU32::new(0),
    active: AtomicU32::new(0),
    outstanding: AtomicU32::new(0),
    progress: AtomicU32::new(0),
    busy: AtomicU64::new(0),
    ok: AtomicU64::new(0),
    failed: AtomicU64::new(0),
    timeouts: AtomicU64::new(0),
    mismatches: AtomicU64::new(0),
    doubles: AtomicU64::new(0),
};

/// The expected answer of the request occupying each window slot.
struct Expected {
    ptr: AtomicPtr<u8>,
    len: AtomicUsize,
    /// The slot's input buffer and the scatterlist describing it.
    input: AtomicPtr<u8>,
    sg: AtomicPtr<c_void>,
}

#[allow(clippy::declare_interior_mutable_const)]
const NO_EXPECTED: Expected = Expected {
    ptr: AtomicPtr::new(core::ptr::null_mut()),
    len: AtomicUsize::new(0),
    input: AtomicPtr::new(core::ptr::null_mut()),
    sg: AtomicPtr::new(core::ptr::null_mut()),
};
static EXP: [Expected; MAX_WINDOW as usize] = [NO_EXPECTED; MAX_WINDOW as usize];

/// xorshift64*: deterministic pseudo-random numbers (the self-test's and
/// the services' test data).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() >> 16) as usize % n.max(1)
    }
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Compares an answer with the expected bytes of window slot `w`.
fn matches(w: usize, out: &api::OutView<'_>) -> bool {
    let len = EXP[w].len.load(Ordering::Acquire);
    let ptr = EXP[w].ptr.load(Ordering::Acquire);
    if out.len() != len || ptr.is_null() {
        return false;
    }
    // SAFETY: the slot's buffer holds `len` expected bytes, written before the
    // request was submitted and not touched until this callback frees the slot;
    // the run's buffers stay allocated while `T.active` counts this callback.
    let want = unsafe { core::slice::from_raw_parts(ptr, len) };
    let mut got = [0u8; 256];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(got.len());
        if out.copy_to(off, &mut got[..n]) != n || want[off..off + n] != got[..n] {
            return false;
        }
        off += n;
    }
    true
}

/// Scatters the answer back through the slot's scatterlist (over its input
/// buffer), then compares the buffer with the expected bytes.
fn matches_via_sg(w: usize, out: &api::OutView<'_>) -> bool {
    let len = EXP[w].len.load(Ordering::Acquire);
    let (want, input, sg) = (
        EXP[w].ptr.load(Ordering::Acquire),
        EXP[w].input.load(Ordering::Acquire),
        EXP[w].sg.load(Ordering::Acquire),
    );
    if out.len() != len || want.is_null() || input.is_null() || sg.is_null() {
        return false;
    }
    // SAFETY: the slot's list describes its input buffer of at least `len`
    // bytes, which nothing else touches until this callback frees the slot.
    let dst = unsafe { api::SgList::new(sg, 0, len) };
    if out.copy_to_sg(0, &dst) != len {
        return false;
    }
    // SAFETY: both buffers hold at least `len` bytes (see `matches`).
    unsafe { core::slice::from_raw_parts(input, len) == core::slice::from_raw_parts(want, len) }
}

fn record(ok: Option<bool>, status: Status) {
    match (status, ok) {
        (Status::Ok, Some(true)) => T.ok.fetch_add(1, Ordering::Relaxed),
        (Status::Ok, _) => T.mismatches.fetch_add(1, Ordering::Relaxed),
        (Status::TimedOut, _) => T.timeouts.fetch_add(1, Ordering::Relaxed),
        _ => T.failed.fetch_add(1, Ordering::Relaxed),
    };
}

fn done(ctx: usize, o: &Outcome<'_>) {
    T.active.fetch_add(1, Ordering::SeqCst);
    let run = (ctx >> 32) as u32;
    let w = ctx & 0xff;
    if run == T.run.load(Ordering::SeqCst) && w < MAX_WINDOW as usize {
        let ok = (o.status == Status::Ok).then(|| {
            if ctx & CTX_SG != 0 {
                matches_via_sg(w, &o.out)
            } else {
                matches(w, &o.out)
            }
        });
        record(ok, o.status);
        if T.busy.fetch_and(!(1u64 << w), Ordering::AcqRel) & (1u64 << w) == 0 {
            T.doubles.fetch_add(1, Ordering::Relaxed);
        }
        T.outstanding.fetch_sub(1, Ordering::AcqRel);
        T.progress.store(1, Ordering::Release);
    }
    T.active.fetch_sub(1, Ordering::SeqCst);
    shim::wake_waiters();
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Echo,
    Aes,
    Raid6,
}

/// A parsed self-test command.
#[derive(Clone, Copy)]
struct Params {
    kind: Kind,
    count: u32,
    window: u32,
    max_len: u32,
    nosleep: bool,
    par: u32,
}

fn parse(cmd: &[u8]) -> Option<Params> {
    let s = core::str::from_utf8(cmd).ok()?;
    let mut it = s.split_ascii_whitespace();
    let kind = match it.next()? {
        "echo" => Kind::Echo,
        "aes" => Kind::Aes,
        "raid6" => Kind::Raid6,
        _ => return None,
    };
    let count = it.next()?.parse::<u32>().ok()?;
    let window = it
        .next()
        .map(|w| w.parse::<u32>().ok())
        .unwrap_or(Some(32))?;
    let max_len = it
        .next()
        .map(|w| w.parse::<u32>().ok())
        .unwrap_or(Some(8192))?;
    let (mut nosleep, mut par) = (false, 1u32);
    for opt in it {
        match opt {
            "nosleep" => nosleep = true,
            _ => par = opt.strip_prefix("par=")?.parse::<u32>().ok()?,
        }
    }
    if count == 0
        || window == 0
        || window > MAX_WINDOW
        || max_len < 16
        || max_len > (1 << 20)
        || par == 0
        || par > MAX_PAR
        || window < par
    {
        return None;
    }
    Some(Params {
        kind,
        count,
        window,
        max_len,
        nosleep,
        par,
    })
}

/// The kernel's skciphers for the AES requests.
struct Ciphers {
    ecb: Cipher,
    cbc: Cipher,
    ctr: Cipher,
    xts: Cipher,
}

impl Ciphers {
    fn new() -> Result<Self> {
        let get = |name: &CStr| {
            let t = Cipher::new(name);
            if t.is_none() {
                pr_warn!("selftest: kernel cipher {:?} unavailable\n", name);
            }
            t
        };
        let (ecb, cbc, ctr, xts) = (
            get(c"ecb(aes)"),
            get(c"cbc(aes)"),
            get(c"ctr(aes)"),
            get(c"xts(aes)"),
        );
        match (ecb, cbc, ctr, xts) {
            (Some(ecb), Some(cbc), Some(ctr), Some(xts)) => Ok(Ciphers { ecb, cbc, ctr, xts }),
            _ => Err(ENOENT),
        }
    }
}

/// One scatterlist array per window slot.
struct SgArrays(KVec<SgArray>);

impl SgArrays {
    fn new(n: usize) -> Result<Self> {
        let mut v = SgArrays(KVec::with_capacity(n, GFP_KERNEL)?);
        for _ in 0..n {
            v.0.push(SgArray::new(SG_ENTRIES as u32).ok_or(ENOMEM)?, GFP_KERNEL)?;
        }
        Ok(v)
    }
}

fn cipher(
    c: &Cipher,
    key: &[u8],
    iv: Option<&[u8; 16]>,
    src: &[u8],
    dst: &mut [u8],
    enc: bool,
) -> Result {
    // SAFETY: `src` and `dst` lie in kmalloc'ed buffers (the run's `KVec`s).
    unsafe { c.run(key, iv, src, dst, enc) }
}

/// One generated request and its expected answer (written into `exp`).
struct Generated {
    op: u16,
    key_len: usize,
    in_len: usize,
    out_len: usize,
    unit: u32,
    count: u32,
    params: [u8; PARAMS_LEN],
}

fn gen_echo(rng: &mut Rng, max_len: usize, input: &mut [u8], exp: &mut [u8]) -> Generated {
    let len = 1 + if rng.next() & 3 == 0 {
        rng.below(max_len)
    } else {
        rng.below(max_len.min(512))
    };
    rng.fill(&mut input[..len]);
    exp[..len].copy_from_slice(&input[..len]);
    Generated {
        op: 0,
        key_len: 0,
        in_len: len,
        out_len: len,
        unit: 0,
        count: 0,
        params: [0; PARAMS_LEN],
    }
}

fn gen_aes(
    rng: &mut Rng,
    max_len: usize,
    c: &Ciphers,
    key: &mut [u8; 64],
    input: &mut [u8],
    exp: &mut [u8],
) -> Result<Generated> {
    use aesp::op;
    let ops = [
        op::ECB_ENC,
        op::ECB_DEC,
        op::CBC_ENC,
        op::CBC_DEC,
        op::CTR,
        op::XTS_ENC,
        op::XTS_DEC,
    ];
    let o = ops[rng.below(ops.len())];
    let xts = o == op::XTS_ENC || o == op::XTS_DEC;
    let key_len = if xts {
        [32, 64][rng.below(2)]
    } else {
        [16, 24, 32][rng.below(3)]
    };
    rng.fill(&mut key[..key_len]);
    let key = &key[..key_len];
    let mut iv = [0u8; 16];
    rng.fill(&mut iv);
    let blocks = (max_len / 16).max(1);
    let (len, unit, params) = match o {
        op::CTR => {
            let len = 1 + rng.below(max_len);
            (len, 0u32, aesp::AesParams::single(iv))
        }
        op::XTS_ENC | op::XTS_DEC => {
            let units = 1 + rng.below((max_len / 512).max(1));
            let sector = rng.next() >> 20;
            (units * 512, 512u32, aesp::AesParams::plain64(sector))
        }
        op::CBC_ENC | op::CBC_DEC => (16 * (1 + rng.below(blocks)), 0, aesp::AesParams::single(iv)),
        _ => (16 * (1 + rng.below(blocks)), 0, aesp::AesParams::none()),
    };
    rng.fill(&mut input[..len]);
    let (src, dst) = (&input[..len], &mut exp[..len]);
    match o {
        op::ECB_ENC | op::ECB_DEC => cipher(&c.ecb, key, None, src, dst, o == op::ECB_ENC)?,
        op::CBC_ENC | op::CBC_DEC => cipher(&c.cbc, key, Some(&iv), src, dst, o == op::CBC_ENC)?,
        op::CTR => cipher(&c.ctr, key, Some(&iv), src, dst, true)?,
        _ => {
            // dm-crypt plain64: sector number, little-endian, zero-padded.
            for (i, (s, d)) in src.chunks(512).zip(dst.chunks_mut(512)).enumerate() {
                let mut siv = [0u8; 16];
                siv[..8].copy_from_slice(&(params.start_sector + i as u64).to_le_bytes());
                cipher(&c.xts, key, Some(&siv), s, d, o == op::XTS_ENC)?;
            }
        }
    }
    Ok(Generated {
        op: o,
        key_len,
        in_len: len,
        out_len: len,
        unit,
        count: 0,
        params: params.to_bytes(),
    })
}

fn gen_raid6(rng: &mut Rng, input: &mut [u8], exp: &mut [u8]) -> Result<Generated> {
    let disks = 4 + rng.below(13);
    let unit = [512usize, 1024, 2048, 4096][rng.below(4)];
    let len = (disks - 2) * unit;
    rng.fill(&mut input[..len]);
    ffi::raid6_gen(disks, unit, &input[..len], exp)?;
    Ok(Generated {
        op: r6p::op::GEN_SYNDROME,
        key_len: 0,
        in_len: len,
        out_len: 2 * unit,
        unit: unit as u32,
        count: disks as u32,
        params: [0; PARAMS_LEN],
    })
}

fn kvec(len: usize) -> Result<KVec<u8>> {
    let mut v = KVec::with_capacity(len, GFP_KERNEL)?;
    v.extend_with(len, 0u8, GFP_KERNEL)?;
    Ok(v)
}

/// Waits for a free window slot among those of `mask`; None when nothing
/// moved for `stall_ms`. Only the owner of `mask` sets its bits.
fn take_slot(mask: u64, stall_ms: u32) -> Option<usize> {
    let mut waited = 0u32;
    loop {
        let busy = T.busy.load(Ordering::Acquire);
        let free = !busy & mask;
        if free != 0 {
            let w = free.trailing_zeros() as usize;
            T.busy.fetch_or(1 << w, Ordering::AcqRel);
            return Some(w);
        }
        T.progress.store(0, Ordering::Release);
        if T.busy.load(Ordering::Acquire) & mask != busy & mask {
            continue;
        }
        if !shim::wait_word(&T.progress, 10) {
            waited += 10;
            if waited > stall_ms {
                return None;
            }
        }
    }
}

/// What the submitting threads share.
struct Shared {
    p: Params,
    max_in: usize,
    run: u32,
    seed: u64,
    stall_ms: u32,
    nohelper: AtomicU64,
    busy_waits: AtomicU64,
    refused: AtomicU64,
    nosleep_ok: AtomicU64,
    nosleep_asleep: AtomicU64,
    nosleep_timeout: AtomicU64,
    stalled: AtomicU32,
    gen_error: AtomicI32,
}

fn add(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Submitting thread `idx` of `p.par`: requests `idx, idx + par, ...`,
/// window slots `idx, idx + par, ...` (its own: nobody else takes them).
fn worker(sh: &Shared, idx: u32) {
    if let Err(e) = worker_inner(sh, idx) {
        sh.gen_error.store(e.to_errno(), Ordering::Relaxed);
    }
}

fn worker_inner(sh: &Shared, idx: u32) -> Result {
    let p = &sh.p;
    let ciphers = if p.kind == Kind::Aes {
        Some(Ciphers::new()?)
    } else {
        None
    };
    let mut sync_out = kvec(sh.max_in)?;
    let mut key = [0u8; 64];
    let mut rng = Rng::new(sh.seed ^ (u64::from(idx) << 40));
    let mut mask = 0u64;
    let mut w = idx;
    while w < p.window {
        mask |= 1 << w;
        w += p.par;
    }
    let max_len = p.max_len as usize;

    let mut k = idx;
    while k < p.count {
        let this = k;
        k += p.par;
        if !api::attached() {
            // Refused without building the request (the helper is gone).
            add(&sh.nohelper);
            continue;
        }
        let Some(w) = take_slot(mask, sh.stall_ms) else {
            sh.stalled.store(1, Ordering::Relaxed);
            break;
        };
        // SAFETY: slot `w` belongs to this thread until its request is
        // submitted (or done, for sync calls); its buffers hold `max_in`
        // bytes each and live until the end of the run.
        let (exp, input) = unsafe {
            (
                core::slice::from_raw_parts_mut(EXP[w].ptr.load(Ordering::Acquire), sh.max_in),
                core::slice::from_raw_parts_mut(EXP[w].input.load(Ordering::Acquire), sh.max_in),
            )
        };
        let g = match p.kind {
            Kind::Echo => Ok(gen_echo(&mut rng, max_len, input, exp)),
            Kind::Aes => match &ciphers {
                Some(c) => gen_aes(&mut rng, max_len, c, &mut key, input, exp),
                None => Err(EINVAL),
            },
            Kind::Raid6 => gen_raid6(&mut rng, input, exp),
        };
        let g = match g {
            Ok(g) => g,
            Err(e) => {
                T.busy.fetch_and(!(1u64 << w), Ordering::AcqRel);
                return Err(e);
            }
        };
        EXP[w].len.store(g.out_len, Ordering::Release);
        let sg = EXP[w].sg.load(Ordering::Acquire);
        // One async request in four takes its input from a scatterlist of
        // random piece sizes and gives its output back through it (echo and
        // AES, where output and input have the same length).
        let mut via_sg = false;
        if this % 4 == 1 && p.kind != Kind::Raid6 && g.in_len == g.out_len {
            let min_piece = g.in_len.div_ceil(SG_ENTRIES);
            let piece = min_piece.max(1 + rng.below(700));
            // SAFETY: the slot's array of SG_ENTRIES entries, this thread's
            // until its request is submitted; the input buffer is kmalloc'ed.
            let n = unsafe { ffi::sg_fill(sg, SG_ENTRIES as u32, &mut input[..g.in_len], piece) };
            via_sg = n > 0;
        }
        let src = if via_sg {
            // SAFETY: the list just built describes `in_len` bytes of the
            // slot's buffer, which lives until the end of the run.
            api::Src::Sg(unsafe { api::SgList::new(sg, 0, g.in_len) })
        } else {
            api::Src::Bytes(&input[..g.in_len])
        };
        let job = Job {
            service: match p.kind {
                Kind::Echo => service::ECHO,
                Kind::Aes => service::AES,
                Kind::Raid6 => service::RAID6,
            },
            op: g.op,
            key_tag: 0,
            key: &key[..g.key_len],
            input: src,
            aux: &[],
            out_len: g.out_len,
            in_place: false,
            unit: g.unit,
            count: g.count,
            params: g.params,
        };

        if this % 8 == 7 && !via_sg {
            let r = if p.nosleep {
                // As md calls gen_syndrome: with preemption disabled.
                let _np = shim::NoPreempt::new();
                api::call_nosleep(&job, &mut sync_out[..], 0)
            } else {
                api::call(&job, &mut sync_out[..], 0)
            };
            match r {
                Ok(n) => {
                    let good = n == g.out_len && sync_out[..n] == exp[..n];
                    if p.nosleep && good {
                        add(&sh.nosleep_ok);
                    }
                    record(Some(good), Status::Ok)
                }
                Err(CallError::Submit(SubmitError::NoHelper)) => add(&sh.nohelper),
                Err(CallError::Submit(SubmitError::Busy)) if p.nosleep => add(&sh.nosleep_asleep),
                Err(CallError::TimedOut) if p.nosleep => add(&sh.nosleep_timeout),
                Err(CallError::Submit(_)) => add(&sh.refused),
                Err(CallError::TimedOut) => record(None, Status::TimedOut),
                Err(CallError::Failed(s)) => record(None, s),
                Err(CallError::Overflow) => record(Some(false), Status::Ok),
            }
            T.busy.fetch_and(!(1u64 << w), Ordering::AcqRel);
            continue;
        }

        T.outstanding.fetch_add(1, Ordering::AcqRel);
        let mut tries = 0u32;
        loop {
            let ctx = ((sh.run as usize) << 32) | w | if via_sg { CTX_SG } else { 0 };
            match api::submit(&job, done, ctx) {
                Ok(_) => break,
                Err(SubmitError::Busy) if tries < sh.stall_ms => {
                    add(&sh.busy_waits);
                    tries += 1;
                    shim::msleep(1);
                }
                Err(e) => {
                    T.outstanding.fetch_sub(1, Ordering::AcqRel);
                    T.busy.fetch_and(!(1u64 << w), Ordering::AcqRel);
                    add(if e == SubmitError::NoHelper {
                        &sh.nohelper
                    } else {
                        &sh.refused
                    });
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Runs the self-test described by `cmd`; writes the report into `out`.
pub(crate) fn run(cmd: &[u8], out: &mut [u8]) -> Result {
    let Some(p) = parse(cmd) else {
        pr_warn!(
            "selftest: usage: echo|aes|raid6 COUNT [WINDOW<=64] [MAX_LEN>=16] [nosleep] [par=N<=8]\n"
        );
        return Err(EINVAL);
    };
    let max_len = p.max_len as usize;
    let max_in = match p.kind {
        Kind::Echo => max_len,
        Kind::Aes => max_len.max(512),
        Kind::Raid6 => RAID6_MAX_IN,
    };
    if p.window as usize * max_in > 32 << 20 {
        pr_warn!("selftest: WINDOW x MAX_LEN must stay within 32 MiB\n");
        return Err(EINVAL);
    }
    let mut exps = KVec::with_capacity(p.window as usize, GFP_KERNEL)?;
    let mut inputs = KVec::with_capacity(p.window as usize, GFP_KERNEL)?;
    for _ in 0..p.window {
        exps.push(kvec(max_in)?, GFP_KERNEL)?;
        inputs.push(kvec(max_in)?, GFP_KERNEL)?;
    }
    let sgs = SgArrays::new(p.window as usize)?;

    let run = T.run.load(Ordering::Relaxed).wrapping_add(1).max(1);
    for (w, (e, i)) in exps.iter_mut().zip(inputs.iter_mut()).enumerate() {
        EXP[w].ptr.store(e.as_mut_ptr(), Ordering::Release);
        EXP[w].len.store(0, Ordering::Release);
        EXP[w].input.store(i.as_mut_ptr(), Ordering::Release);
        EXP[w].sg.store(sgs.0[w].as_ptr(), Ordering::Release);
    }
    T.busy.store(0, Ordering::Relaxed);
    T.outstanding.store(0, Ordering::Relaxed);
    T.ok.store(0, Ordering::Relaxed);
    T.failed.store(0, Ordering::Relaxed);
    T.timeouts.store(0, Ordering::Relaxed);
    T.mismatches.store(0, Ordering::Relaxed);
    T.doubles.store(0, Ordering::Relaxed);
    T.run.store(run, Ordering::SeqCst);

    let start = Ktime::ktime_get();
    let sh = Shared {
        p,
        max_in,
        run,
        seed: u64::from(run) ^ (start.to_ns() as u64),
        stall_ms: shim::request_timeout_ms().max(shim::sync_timeout_ms()) + 2000,
        nohelper: AtomicU64::new(0),
        busy_waits: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        nosleep_ok: AtomicU64::new(0),
        nosleep_asleep: AtomicU64::new(0),
        nosleep_timeout: AtomicU64::new(0),
        stalled: AtomicU32::new(0),
        gen_error: AtomicI32::new(0),
    };
    if p.par == 1 {
        worker(&sh, 0);
    } else {
        // Workers only read `sh` and update its atomics.
        if let Err(e) = ffi::run_parallel(p.par, &|idx| worker(&sh, idx)) {
            sh.gen_error.store(e.to_errno(), Ordering::Relaxed);
        }
    }

    let drained = shim::wait_zero(&T.outstanding, sh.stall_ms);
    let outstanding = T.outstanding.load(Ordering::Acquire);
    let elapsed_ms = (Ktime::ktime_get().to_ns() - start.to_ns()) / 1_000_000;
    // From now on late callbacks of this run are ignored; wait for the ones
    // inside `done` before the expected-answer buffers go away.
    T.run.store(run.wrapping_add(0x8000_0000), Ordering::SeqCst);
    shim::wait_zero(&T.active, 0);
    for e in EXP.iter() {
        e.ptr.store(core::ptr::null_mut(), Ordering::Release);
        e.input.store(core::ptr::null_mut(), Ordering::Release);
        e.sg.store(core::ptr::null_mut(), Ordering::Release);
    }
    drop(sgs);
    drop(inputs);
    drop(exps);

    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let ok = get(&T.ok);
    let failed = get(&T.failed);
    let timeouts = get(&T.timeouts);
    let mismatches = get(&T.mismatches);
    let doubles = get(&T.doubles);
    let (nohelper, refused, busy_waits) =
        (get(&sh.nohelper), get(&sh.refused), get(&sh.busy_waits));
    let (ns_ok, ns_asleep, ns_timeout) = (
        get(&sh.nosleep_ok),
        get(&sh.nosleep_asleep),
        get(&sh.nosleep_timeout),
    );
    let stalled = sh.stalled.load(Ordering::Relaxed) != 0;
    let gen_error = sh.gen_error.load(Ordering::Relaxed);
    let pass = ok + ns_asleep + ns_timeout == u64::from(p.count)
        && mismatches == 0
        && doubles == 0
        && drained
        && !stalled
        && gen_error == 0;
    let name = match p.kind {
        Kind::Echo => "echo",
        Kind::Aes => "aes",
        Kind::Raid6 => "raid6",
    };
    let mut w = BufWriter::new(out);
    let _ = writeln!(
        w,
        "{}: total={} ok={} failed={} nohelper={} refused={} timeouts={} mismatches={} doubles={} outstanding={} stalled={} busy_waits={} threads={} elapsed_ms={}",
        name,
        p.count,
        ok,
        failed,
        nohelper,
        refused,
        timeouts,
        mismatches,
        doubles,
        outstanding,
        stalled as u32,
        busy_waits,
        p.par,
        elapsed_ms
    );
    if p.nosleep {
        let _ = writeln!(
            w,
            "nosleep: answered={} helper_asleep={} spin_timeouts={}",
            ns_ok, ns_asleep, ns_timeout
        );
    }
    if p.kind == Kind::Raid6 {
        let _ = writeln!(w, "reference: raid6 {:?}", ffi::raid6_name());
    }
    if gen_error != 0 {
        let _ = writeln!(w, "error: {:?}", Error::from_errno(gen_error));
    }
    let _ = writeln!(w, "result: {}", if pass { "PASS" } else { "FAIL" });
    pr_info!(
        "selftest {} {}: ok {} failed {} nohelper {} timeouts {} mismatches {} in {} ms: {}\n",
        name,
        p.count,
        ok,
        failed,
        nohelper,
        timeouts,
        mismatches,
        elapsed_ms,
        if pass { "PASS" } else { "FAIL" }
    );
    Ok(())
}
