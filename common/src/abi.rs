//! The binary interface shared by the kernel module and the helper.
//!
//! Everything here is `#[repr(C)]` with fixed sizes checked at compile time.
//! The region is laid out as:
//!
//! ```text
//! offset 0                 RegionHeader (one 4 KiB page)
//! sq_off                   RingIndices (two cache lines) + sq_entries × Sqe
//! cq_off                   RingIndices (two cache lines) + cq_entries × Cqe
//! data_off                 data area (data_size bytes), page aligned
//! ```
//!
//! This file is included by source path into the kernel module: it must not
//! refer to anything outside `core` and its sibling modules (through `super::`).

use super::sync::{AtomicU32, AtomicU64};

/// "KGPURGN\0" little-endian.
pub const REGION_MAGIC: u64 = u64::from_le_bytes(*b"KGPURGN\0");
/// Bumped on every incompatible change of this file or of a service encoding.
pub const ABI_VERSION: u32 = 3;
/// The header occupies the first page of the region.
pub const HEADER_SIZE: u32 = 4096;
/// Alignment of the rings and of the data area inside the region.
pub const PAGE_SIZE: u64 = 4096;
/// Cache line size used to keep producer and consumer indices apart.
pub const CACHE_LINE: usize = 64;
/// Largest ring the ABI allows (entries).
pub const MAX_RING_ENTRIES: u32 = 1 << 16;
/// Largest region the ABI allows (bytes).
pub const MAX_REGION_SIZE: u64 = 1 << 40;

/// Service identifiers.
pub mod service {
    /// AES in ECB, CBC, CTR and XTS modes (`kgpu-aes`).
    pub const AES: u16 = 1;
    /// RAID6 P/Q syndromes and recovery (`kgpu-raid6`).
    pub const RAID6: u16 = 2;
    /// Copies input to output; used by tests and to measure the ring itself.
    pub const ECHO: u16 = 3;
    /// The example service, the folder to copy (`services/example/`).
    pub const EXAMPLE: u16 = 4;
}

/// Header feature bits.
pub mod feature {
    /// The submitter allows the helper to sleep with NEED_WAKEUP.
    pub const NEED_WAKEUP: u64 = 1 << 0;
}

/// Bits of [`RegionHeader::sq_flags`] (written by the helper, read by the submitter).
pub mod sq_flag {
    /// The helper is about to sleep or sleeps: the submitter must wake it after publishing.
    pub const NEED_WAKEUP: u32 = 1 << 0;
}

/// Bits of [`RegionHeader::cq_flags`] (written by the submitter, read by the helper).
pub mod cq_flag {
    /// The submitter waits for completions: the helper must ring `cq_doorbell` after posting.
    pub const NEED_WAKEUP: u32 = 1 << 0;
}

/// Values of [`RegionHeader::helper_state`].
pub mod helper_state {
    /// No helper serves this region.
    pub const DETACHED: u32 = 0;
    /// A helper serves this region.
    pub const ATTACHED: u32 = 1;
    /// The helper is finishing in-flight work and will not take new requests.
    pub const DRAINING: u32 = 2;
    /// The submitter is resetting the rings after losing a helper; a new
    /// helper attaches only once the state is back to `DETACHED`.
    pub const RESETTING: u32 = 3;
    /// Shared-memory transport (ivshmem): a helper has written a fresh header
    /// and asks the submitter to attach. The submitter validates it, resets
    /// the rings and answers `ATTACHED` (or `REFUSED`); the helper touches
    /// the rings only after `ATTACHED`.
    pub const OFFERED: u32 = 4;
    /// Shared-memory transport: the submitter refused the offered header.
    pub const REFUSED: u32 = 5;

    /// A name for logs.
    pub const fn name(state: u32) -> &'static str {
        match state {
            DETACHED => "detached",
            ATTACHED => "attached",
            DRAINING => "draining",
            RESETTING => "resetting",
            OFFERED => "offered",
            REFUSED => "refused",
            _ => "unknown",
        }
    }
}

/// Status of a completed request, shared by both sides.
///
/// Carried as an `i32` in [`Cqe::status`]; [`Status::from_raw`] is total.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Done; `bytes` output bytes were written.
    Ok = 0,
    /// The service id is not known to the helper.
    UnknownService = 1,
    /// The operation is not known to the service.
    UnknownOp = 2,
    /// An extent lies outside the data area or overlaps illegally.
    BadExtent = 3,
    /// A length is not consistent with the operation (block multiple, minimum, sizes).
    BadLength = 4,
    /// The key length or key material is invalid.
    BadKey = 5,
    /// The per-request parameters are invalid.
    BadParams = 6,
    /// The backend failed (device error); the submitter should redo the work on the CPU.
    BackendError = 7,
    /// The helper is shutting down and did not run the request.
    ShuttingDown = 8,
    /// Reserved flags were set.
    BadFlags = 9,
    /// The request was never completed by the helper (submitter-side timeout or detach).
    TimedOut = 10,
    /// No helper is attached (submitter side only).
    NoHelper = 11,
}

impl Status {
    /// Every status, in numeric order.
    pub const ALL: [Status; 12] = [
        Status::Ok,
        Status::UnknownService,
        Status::UnknownOp,
        Status::BadExtent,
        Status::BadLength,
        Status::BadKey,
        Status::BadParams,
        Status::BackendError,
        Status::ShuttingDown,
        Status::BadFlags,
        Status::TimedOut,
        Status::NoHelper,
    ];

    /// Decodes a raw status; `None` for values outside the enum.
    pub const fn from_raw(raw: i32) -> Option<Status> {
        if raw >= 0 && (raw as usize) < Self::ALL.len() {
            Some(Self::ALL[raw as usize])
        } else {
            None
        }
    }

    /// The raw value carried in a [`Cqe`].
    pub const fn raw(self) -> i32 {
        self as i32
    }

    /// A short description for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::UnknownService => "unknown service",
            Status::UnknownOp => "unknown operation",
            Status::BadExtent => "extent outside the data area",
            Status::BadLength => "length not valid for the operation",
            Status::BadKey => "invalid key",
            Status::BadParams => "invalid parameters",
            Status::BackendError => "backend error",
            Status::ShuttingDown => "helper shutting down",
            Status::BadFlags => "reserved flags set",
            Status::TimedOut => "timed out",
            Status::NoHelper => "no helper attached",
        }
    }
}

/// A byte range of the data area: `off` is relative to the start of the data area.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extent {
    /// Offset from the start of the data area.
    pub off: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Extent {
    /// The empty extent.
    pub const EMPTY: Extent = Extent { off: 0, len: 0 };

    /// Builds an extent.
    pub const fn new(off: u64, len: u64) -> Self {
        Extent { off, len }
    }

    /// Exclusive end, or `None` on overflow.
    pub const fn end(&self) -> Option<u64> {
        self.off.checked_add(self.len)
    }

    /// True when the extent lies entirely inside a data area of `size` bytes.
    pub const fn fits(&self, size: u64) -> bool {
        match self.end() {
            Some(end) => end <= size,
            None => false,
        }
    }

    /// True when both extents share at least one byte.
    pub const fn overlaps(&self, other: &Extent) -> bool {
        if self.len == 0 || other.len == 0 {
            return false;
        }
        // Callers check `fits` first; saturate anyway so this is total.
        let a_end = self.off.saturating_add(self.len);
        let b_end = other.off.saturating_add(other.len);
        self.off < b_end && other.off < a_end
    }
}

/// Size in bytes of [`Sqe::params`].
pub const PARAMS_LEN: usize = 32;

/// A submission queue entry (kernel → helper), 128 bytes.
///
/// The meaning of `unit`, `count`, `params` and of the four extents is defined
/// per service (see each service crate's `proto` module).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sqe {
    /// Slot index of the request in the submitter's in-flight table.
    pub slot: u32,
    /// Generation of the slot; a completion must echo it.
    pub gen: u32,
    /// Service id ([`service`]).
    pub service: u16,
    /// Service-defined operation.
    pub op: u16,
    /// Reserved, must be zero.
    pub flags: u32,
    /// Tag naming the key material; equal tags mean equal keys, so the helper
    /// may cache expanded schedules by tag. 0 means "do not cache".
    pub key_tag: u64,
    /// Key material (service-defined format).
    pub key: Extent,
    /// Input data.
    pub input: Extent,
    /// Output data; may equal `input` (in place) but must not partially overlap it.
    pub output: Extent,
    /// Auxiliary data (for example one IV per unit).
    pub aux: Extent,
    /// Service-defined unit size (sector size, bytes per disk).
    pub unit: u32,
    /// Service-defined count (number of disks).
    pub count: u32,
    /// Service-defined parameters.
    pub params: [u8; PARAMS_LEN],
}

impl Sqe {
    /// An all-zero entry.
    pub const ZERO: Sqe = Sqe {
        slot: 0,
        gen: 0,
        service: 0,
        op: 0,
        flags: 0,
        key_tag: 0,
        key: Extent::EMPTY,
        input: Extent::EMPTY,
        output: Extent::EMPTY,
        aux: Extent::EMPTY,
        unit: 0,
        count: 0,
        params: [0; PARAMS_LEN],
    };
}

/// A completion queue entry (helper → kernel), 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cqe {
    /// Slot echoed from the [`Sqe`].
    pub slot: u32,
    /// Generation echoed from the [`Sqe`].
    pub gen: u32,
    /// A raw [`Status`].
    pub status: i32,
    /// Which backend ran the request ([`backend`]).
    pub backend: u32,
    /// Output bytes written.
    pub bytes: u64,
    /// Time the helper spent on the request's batch, nanoseconds (statistics only).
    pub nanos: u64,
}

impl Cqe {
    /// An all-zero entry.
    pub const ZERO: Cqe = Cqe {
        slot: 0,
        gen: 0,
        status: 0,
        backend: 0,
        bytes: 0,
        nanos: 0,
    };
}

/// Values of [`Cqe::backend`].
pub mod backend {
    /// The helper's CPU backend.
    pub const CPU: u32 = 0;
    /// A GPU (CUDA) backend.
    pub const GPU: u32 = 1;
}

/// Producer and consumer indices of one ring, each on its own cache line.
#[repr(C, align(64))]
pub struct RingIndices {
    /// Next entry the consumer will read (written by the consumer only).
    pub head: AtomicU32,
    _pad0: [u8; CACHE_LINE - 4],
    /// Next entry the producer will write (written by the producer only).
    pub tail: AtomicU32,
    _pad1: [u8; CACHE_LINE - 4],
}

impl RingIndices {
    /// Both indices at zero.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        RingIndices {
            head: AtomicU32::new(0),
            _pad0: [0; CACHE_LINE - 4],
            tail: AtomicU32::new(0),
            _pad1: [0; CACHE_LINE - 4],
        }
    }
}

/// The first page of the region.
///
/// Written once by the creator of the region (the helper), then checked by
/// the kernel; the atomics are the only fields that change afterwards.
#[repr(C)]
pub struct RegionHeader {
    /// [`REGION_MAGIC`].
    pub magic: u64,
    /// [`ABI_VERSION`].
    pub version: u32,
    /// [`HEADER_SIZE`].
    pub header_size: u32,
    /// Total size of the region in bytes.
    pub region_size: u64,
    /// Offset of the submission ring's [`RingIndices`].
    pub sq_off: u64,
    /// Number of submission entries (power of two).
    pub sq_entries: u32,
    /// Size of one submission entry (must equal `size_of::<Sqe>()`).
    pub sqe_size: u32,
    /// Offset of the completion ring's [`RingIndices`].
    pub cq_off: u64,
    /// Number of completion entries (power of two, ≥ `sq_entries`).
    pub cq_entries: u32,
    /// Size of one completion entry (must equal `size_of::<Cqe>()`).
    pub cqe_size: u32,
    /// Offset of the data area.
    pub data_off: u64,
    /// Size of the data area.
    pub data_size: u64,
    /// Feature bits ([`feature`]).
    pub features: u64,
    _reserved0: [u64; 6],
    /// Flags the helper publishes to the submitter ([`sq_flag`]), own cache line.
    pub sq_flags: AtomicU32,
    /// Bumped by the submitter to wake a sleeping helper (futex word in userspace).
    pub sq_doorbell: AtomicU32,
    /// Bumped by the helper after posting completions (futex word in userspace).
    pub cq_doorbell: AtomicU32,
    /// [`helper_state`].
    pub helper_state: AtomicU32,
    /// Process id of the serving helper (informational; 0 when none).
    pub helper_pid: AtomicU32,
    /// Flags the submitter publishes to the helper ([`cq_flag`]).
    pub cq_flags: AtomicU32,
    /// Incremented by the helper at least every 100 ms while attached.
    pub heartbeat: AtomicU64,
    _reserved1: [u64; 4],
    /// What the helper measured of its GPU path, per service id (index
    /// `service`; ids at or above [`FIGURE_SLOTS`] have none). Written before
    /// the helper attaches or offers the region, read once by the kernel when
    /// it attaches; all zero: no GPU path (a CPU backend).
    pub gpu: [GpuFigures; FIGURE_SLOTS],
}

/// Service ids that have a [`GpuFigures`] slot in the header.
pub const FIGURE_SLOTS: usize = 8;

/// One service's GPU path as the helper measured it at start-up (ABI 3):
/// the kernel's load-time choice between the GPU path and its own CPU code
/// weighs these against what it measured itself. Any bit pattern is valid:
/// the kernel's cost model treats zero or absurd figures as "no GPU path".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuFigures {
    /// Throughput of large requests through the helper, MB/s (10^6 B/s); 0:
    /// no GPU path.
    pub mbps: u64,
    /// Round trip of a small request (submission to completion), ns.
    pub rtt_ns: u64,
    /// Smallest request (payload bytes) the helper sends to the GPU; smaller
    /// ones run on its CPU worker.
    pub crossover: u64,
    /// Zero.
    pub reserved: u64,
}

impl GpuFigures {
    /// No GPU path.
    pub const NONE: GpuFigures = GpuFigures {
        mbps: 0,
        rtt_ns: 0,
        crossover: 0,
        reserved: 0,
    };

    /// Whether the figures describe a GPU path at all.
    pub const fn present(&self) -> bool {
        self.mbps != 0
    }
}

#[cfg(not(loom))]
const _: () = {
    assert!(core::mem::size_of::<Extent>() == 16);
    assert!(core::mem::size_of::<Sqe>() == 128);
    assert!(core::mem::size_of::<Cqe>() == 32);
    assert!(core::mem::size_of::<RingIndices>() == 2 * CACHE_LINE);
    assert!(core::mem::size_of::<RegionHeader>() <= HEADER_SIZE as usize);
    assert!(core::mem::offset_of!(RegionHeader, sq_flags) % CACHE_LINE == 0);
    assert!(core::mem::offset_of!(RegionHeader, gpu) % CACHE_LINE == 0);
    assert!(core::mem::size_of::<GpuFigures>() == 32);
};
