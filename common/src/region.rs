//! The region's geometry: computing it, writing a header, and checking a
//! header written by someone else.
//!
//! The checking side copies every header field exactly once
//! ([`HeaderSnapshot::read`]) and validates the copy, so the writer cannot
//! change the geometry after it was checked. All checks are total.

use super::abi::{
    feature, helper_state, Cqe, GpuFigures, RegionHeader, RingIndices, Sqe, ABI_VERSION,
    FIGURE_SLOTS, HEADER_SIZE, MAX_REGION_SIZE, PAGE_SIZE, REGION_MAGIC,
};
use super::ring::{ring_bytes, valid_entries};
use super::sync::Ordering;

/// Why a region (or a request for one) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionError {
    /// The magic number is wrong: this is not a kgpu region.
    BadMagic,
    /// The region was made for another ABI version.
    BadVersion {
        /// Version found in the header.
        found: u32,
    },
    /// A ring capacity is zero, not a power of two, or too large.
    BadRingSize,
    /// A record size differs from this build's.
    BadRecordSize,
    /// Offsets overlap, are misaligned, or run past the region.
    BadLayout,
    /// The region's size differs from the header's, or is out of bounds.
    BadSize,
    /// Unknown feature bits are set.
    BadFeatures,
}

impl RegionError {
    /// A one-line description for logs and error messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            RegionError::BadMagic => "bad magic (not a kgpu region)",
            RegionError::BadVersion { .. } => "ABI version mismatch",
            RegionError::BadRingSize => "ring size not a power of two in range",
            RegionError::BadRecordSize => "record size mismatch",
            RegionError::BadLayout => "rings or data area overlap, misaligned or out of bounds",
            RegionError::BadSize => "region size out of bounds or not as the header says",
            RegionError::BadFeatures => "unknown feature bits",
        }
    }
}

/// Feature bits this build understands.
pub const KNOWN_FEATURES: u64 = feature::NEED_WAKEUP;

/// Where everything lies in a region. Derived from three numbers; never read
/// back from shared memory once validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Total bytes.
    pub region_size: u64,
    /// Offset of the submission ring's indices.
    pub sq_off: u64,
    /// Submission ring capacity.
    pub sq_entries: u32,
    /// Offset of the completion ring's indices.
    pub cq_off: u64,
    /// Completion ring capacity.
    pub cq_entries: u32,
    /// Offset of the data area.
    pub data_off: u64,
    /// Size of the data area.
    pub data_size: u64,
}

const fn page_up(x: u64) -> u64 {
    x.div_ceil(PAGE_SIZE) * PAGE_SIZE
}

impl Geometry {
    /// The canonical layout for the given ring sizes and data-area size
    /// (rounded up to whole pages).
    pub const fn new(
        sq_entries: u32,
        cq_entries: u32,
        data_size: u64,
    ) -> Result<Self, RegionError> {
        if !valid_entries(sq_entries) || !valid_entries(cq_entries) || cq_entries < sq_entries {
            return Err(RegionError::BadRingSize);
        }
        if data_size == 0 || data_size > MAX_REGION_SIZE {
            return Err(RegionError::BadSize);
        }
        let sq_off = HEADER_SIZE as u64;
        let cq_off = page_up(sq_off + ring_bytes(sq_entries, core::mem::size_of::<Sqe>()));
        let data_off = page_up(cq_off + ring_bytes(cq_entries, core::mem::size_of::<Cqe>()));
        let data_size = page_up(data_size);
        let region_size = data_off + data_size;
        if region_size > MAX_REGION_SIZE {
            return Err(RegionError::BadSize);
        }
        Ok(Geometry {
            region_size,
            sq_off,
            sq_entries,
            cq_off,
            cq_entries,
            data_off,
            data_size,
        })
    }

    /// Offset of the first submission record.
    pub const fn sq_records(&self) -> u64 {
        self.sq_off + core::mem::size_of::<RingIndices>() as u64
    }

    /// Offset of the first completion record.
    pub const fn cq_records(&self) -> u64 {
        self.cq_off + core::mem::size_of::<RingIndices>() as u64
    }
}

/// A copy of the header's layout fields, taken once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderSnapshot {
    /// `magic`.
    pub magic: u64,
    /// `version`.
    pub version: u32,
    /// `header_size`.
    pub header_size: u32,
    /// `region_size`.
    pub region_size: u64,
    /// `sq_off`.
    pub sq_off: u64,
    /// `sq_entries`.
    pub sq_entries: u32,
    /// `sqe_size`.
    pub sqe_size: u32,
    /// `cq_off`.
    pub cq_off: u64,
    /// `cq_entries`.
    pub cq_entries: u32,
    /// `cqe_size`.
    pub cqe_size: u32,
    /// `data_off`.
    pub data_off: u64,
    /// `data_size`.
    pub data_size: u64,
    /// `features`.
    pub features: u64,
}

impl HeaderSnapshot {
    /// Copies the layout fields of the header at `hdr`, each read once.
    ///
    /// # Safety
    /// `hdr` must be valid for reads of a whole [`RegionHeader`].
    pub unsafe fn read(hdr: *const RegionHeader) -> Self {
        macro_rules! field {
            ($f:ident) => {
                // SAFETY: the caller guarantees the header is readable; the
                // field pointer is derived without creating a reference.
                unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*hdr).$f)) }
            };
        }
        HeaderSnapshot {
            magic: field!(magic),
            version: field!(version),
            header_size: field!(header_size),
            region_size: field!(region_size),
            sq_off: field!(sq_off),
            sq_entries: field!(sq_entries),
            sqe_size: field!(sqe_size),
            cq_off: field!(cq_off),
            cq_entries: field!(cq_entries),
            cqe_size: field!(cqe_size),
            data_off: field!(data_off),
            data_size: field!(data_size),
            features: field!(features),
        }
    }

    /// Validates the snapshot for a region of `region_len` bytes.
    ///
    /// The layout must be exactly the canonical one for its ring sizes and
    /// data size ([`Geometry::new`]): there is one valid header per geometry,
    /// which leaves no room for overlapping or misaligned parts.
    pub const fn validate(&self, region_len: u64) -> Result<Geometry, RegionError> {
        if self.magic != REGION_MAGIC {
            return Err(RegionError::BadMagic);
        }
        if self.version != ABI_VERSION {
            return Err(RegionError::BadVersion {
                found: self.version,
            });
        }
        if self.sqe_size as usize != core::mem::size_of::<Sqe>()
            || self.cqe_size as usize != core::mem::size_of::<Cqe>()
        {
            return Err(RegionError::BadRecordSize);
        }
        if self.features & !KNOWN_FEATURES != 0 {
            return Err(RegionError::BadFeatures);
        }
        if self.header_size != HEADER_SIZE
            || !self.data_size.is_multiple_of(PAGE_SIZE)
            || self.region_size != region_len
        {
            return Err(if self.region_size != region_len {
                RegionError::BadSize
            } else {
                RegionError::BadLayout
            });
        }
        let g = match Geometry::new(self.sq_entries, self.cq_entries, self.data_size) {
            Ok(g) => g,
            Err(e) => return Err(e),
        };
        if g.sq_off != self.sq_off
            || g.cq_off != self.cq_off
            || g.data_off != self.data_off
            || g.region_size != self.region_size
        {
            return Err(RegionError::BadLayout);
        }
        Ok(g)
    }
}

/// Writes a fresh header for `g` at `base` and zeroes both rings' indices.
///
/// # Safety
/// `base` must be valid for writes of `g.region_size` bytes, aligned to a
/// page, and not in use by anyone else yet.
pub unsafe fn init_header(base: *mut u8, g: &Geometry, features: u64) {
    let hdr = base.cast::<RegionHeader>();
    // SAFETY: the caller guarantees exclusive, writable, aligned memory of at
    // least `g.region_size` ≥ HEADER_SIZE bytes; all-zero bytes are a valid
    // RegionHeader and RingIndices (atomics and integers).
    unsafe {
        core::ptr::write_bytes(base, 0, g.data_off as usize);
        let h = &mut *hdr;
        h.magic = REGION_MAGIC;
        h.version = ABI_VERSION;
        h.header_size = HEADER_SIZE;
        h.region_size = g.region_size;
        h.sq_off = g.sq_off;
        h.sq_entries = g.sq_entries;
        h.sqe_size = core::mem::size_of::<Sqe>() as u32;
        h.cq_off = g.cq_off;
        h.cq_entries = g.cq_entries;
        h.cqe_size = core::mem::size_of::<Cqe>() as u32;
        h.data_off = g.data_off;
        h.data_size = g.data_size;
        h.features = features & KNOWN_FEATURES;
        h.helper_state
            .store(helper_state::DETACHED, Ordering::Release);
    }
}

/// The GPU figures the helper published for `service` (none for an id
/// without a slot), each field read once.
///
/// # Safety
/// `hdr` must be valid for reads of a whole [`RegionHeader`].
pub unsafe fn read_gpu_figures(hdr: *const RegionHeader, service: u16) -> GpuFigures {
    let i = service as usize;
    if i >= FIGURE_SLOTS {
        return GpuFigures::NONE;
    }
    // SAFETY: the caller guarantees the header is readable; `i` is in bounds
    // and the field pointers are derived without creating references.
    unsafe {
        let f = core::ptr::addr_of!((*hdr).gpu[i]);
        GpuFigures {
            mbps: core::ptr::read_volatile(core::ptr::addr_of!((*f).mbps)),
            rtt_ns: core::ptr::read_volatile(core::ptr::addr_of!((*f).rtt_ns)),
            crossover: core::ptr::read_volatile(core::ptr::addr_of!((*f).crossover)),
            reserved: 0,
        }
    }
}

/// Writes the GPU figures of `service` into a header the caller owns (before
/// the region is attached or offered). Ids without a slot are ignored.
///
/// # Safety
/// `hdr` must be valid for writes of a whole [`RegionHeader`] that no one
/// else reads or writes as plain fields now.
pub unsafe fn write_gpu_figures(hdr: *mut RegionHeader, service: u16, f: GpuFigures) {
    let i = service as usize;
    if i >= FIGURE_SLOTS {
        return;
    }
    // SAFETY: as the caller guarantees; `i` is in bounds.
    unsafe {
        core::ptr::write_volatile(
            core::ptr::addr_of_mut!((*hdr).gpu[i]),
            GpuFigures { reserved: 0, ..f },
        )
    };
}

/// Resets both rings to empty and clears the flag words: done by whoever
/// takes over a region (the kernel at attach, the stand-in at creation),
/// never while the other side is running.
///
/// # Safety
/// `base` must point to a region laid out as `g` and valid for its size.
pub unsafe fn reset_rings(base: *mut u8, g: &Geometry) {
    // SAFETY: offsets come from a validated geometry inside the region.
    unsafe {
        for off in [g.sq_off, g.cq_off] {
            let idx = &*base.add(off as usize).cast::<RingIndices>();
            idx.head.store(0, Ordering::Relaxed);
            idx.tail.store(0, Ordering::Relaxed);
        }
        let h = &*base.cast::<RegionHeader>();
        h.sq_flags.store(0, Ordering::Relaxed);
        h.cq_flags.store(0, Ordering::Relaxed);
        h.sq_doorbell.store(0, Ordering::Relaxed);
        h.cq_doorbell.store(0, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn snap(g: &Geometry) -> HeaderSnapshot {
        HeaderSnapshot {
            magic: REGION_MAGIC,
            version: ABI_VERSION,
            header_size: HEADER_SIZE,
            region_size: g.region_size,
            sq_off: g.sq_off,
            sq_entries: g.sq_entries,
            sqe_size: 128,
            cq_off: g.cq_off,
            cq_entries: g.cq_entries,
            cqe_size: 32,
            data_off: g.data_off,
            data_size: g.data_size,
            features: KNOWN_FEATURES,
        }
    }

    #[test]
    fn gpu_figures_round_trip_and_fresh_headers_have_none() {
        use crate::abi::service;
        let g = Geometry::new(64, 64, 65536).unwrap();
        let mut mem = std::vec![0u64; g.region_size as usize / 8];
        let base = mem.as_mut_ptr().cast::<u8>();
        // SAFETY: `mem` is the whole region, aligned and ours.
        unsafe { init_header(base, &g, KNOWN_FEATURES) };
        let hdr = base.cast::<RegionHeader>();
        let f = GpuFigures {
            mbps: 46_000,
            rtt_ns: 30_000,
            crossover: 1 << 20,
            reserved: 7,
        };
        // SAFETY: as above; nothing else reads the header.
        unsafe {
            assert_eq!(read_gpu_figures(hdr, service::AES), GpuFigures::NONE);
            write_gpu_figures(hdr, service::AES, f);
            // Out of range ids are ignored, and read as none.
            write_gpu_figures(hdr, FIGURE_SLOTS as u16, f);
            assert_eq!(read_gpu_figures(hdr, FIGURE_SLOTS as u16), GpuFigures::NONE);
            let back = read_gpu_figures(hdr, service::AES);
            assert_eq!(back, GpuFigures { reserved: 0, ..f });
            assert!(back.present());
            assert_eq!(read_gpu_figures(hdr, service::RAID6), GpuFigures::NONE);
            // The figures are not part of the layout: the header still validates.
            assert_eq!(HeaderSnapshot::read(hdr).validate(g.region_size), Ok(g));
            // A fresh header has none again.
            init_header(base, &g, KNOWN_FEATURES);
            assert!(!read_gpu_figures(hdr, service::AES).present());
        }
    }

    #[test]
    fn canonical_layout_is_accepted_and_disjoint() {
        let g = Geometry::new(256, 512, 1 << 20).unwrap();
        assert_eq!(snap(&g).validate(g.region_size), Ok(g));
        assert!(g.sq_records() + 256 * 128 <= g.cq_off);
        assert!(g.cq_records() + 512 * 32 <= g.data_off);
        assert_eq!(g.data_off % PAGE_SIZE, 0);
    }

    #[test]
    fn every_wrong_field_is_refused() {
        let g = Geometry::new(64, 64, 65536).unwrap();
        let ok = snap(&g);
        let len = g.region_size;
        let cases: [(HeaderSnapshot, RegionError); 9] = [
            (HeaderSnapshot { magic: 1, ..ok }, RegionError::BadMagic),
            (
                HeaderSnapshot { version: 9, ..ok },
                RegionError::BadVersion { found: 9 },
            ),
            (
                HeaderSnapshot { sqe_size: 64, ..ok },
                RegionError::BadRecordSize,
            ),
            (
                HeaderSnapshot {
                    features: 1 << 40,
                    ..ok
                },
                RegionError::BadFeatures,
            ),
            (
                HeaderSnapshot {
                    region_size: len + 4096,
                    ..ok
                },
                RegionError::BadSize,
            ),
            (
                HeaderSnapshot {
                    sq_entries: 63,
                    ..ok
                },
                RegionError::BadRingSize,
            ),
            (
                HeaderSnapshot {
                    cq_entries: 32,
                    ..ok
                },
                RegionError::BadRingSize,
            ),
            (
                HeaderSnapshot {
                    data_off: ok.data_off - 4096,
                    ..ok
                },
                RegionError::BadLayout,
            ),
            (
                HeaderSnapshot {
                    data_size: 100,
                    ..ok
                },
                RegionError::BadLayout,
            ),
        ];
        for (s, e) in cases {
            assert_eq!(s.validate(len), Err(e), "{s:?}");
        }
        assert_eq!(ok.validate(len - 4096), Err(RegionError::BadSize));
    }

    #[test]
    fn init_then_read_round_trips() {
        let g = Geometry::new(32, 64, 8192).unwrap();
        let mut mem = std::vec![0u64; g.region_size as usize / 8];
        let base = mem.as_mut_ptr().cast::<u8>();
        // SAFETY: `mem` is large enough and 8-byte aligned (page alignment is
        // not needed by the code, only by the kernel's mapping).
        let s = unsafe {
            init_header(base, &g, KNOWN_FEATURES);
            HeaderSnapshot::read(base.cast())
        };
        assert_eq!(s.validate(g.region_size), Ok(g));
    }

    extern crate std;
}
