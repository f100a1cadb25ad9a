//! The region in userspace: created in a memfd (or a file, so another process
//! can open it), mapped shared, locked in memory, with futex doorbells.

use kgpu_common::abi::{Cqe, GpuFigures, RegionHeader, RingIndices, Sqe};
use kgpu_common::region::{self, Geometry, HeaderSnapshot, RegionError, KNOWN_FEATURES};
use kgpu_common::ring::{Consumer, Producer};
use memmap2::{MmapOptions, MmapRaw};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Errors creating or opening a region.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// An operating-system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The region's header is not acceptable.
    #[error("region {path}: {}", .err.as_str())]
    Header {
        /// Where the region came from.
        path: String,
        /// Why it was refused.
        err: RegionError,
    },
    /// The requested geometry is impossible.
    #[error("invalid region geometry: {}", .0.as_str())]
    Geometry(RegionError),
    /// A region file for a guest has a size qemu's ivshmem cannot map or
    /// that differs from the one asked for.
    #[error("{path}: {why}")]
    GuestSize {
        /// The file.
        path: String,
        /// What is wrong and how to fix it.
        why: String,
    },
}

/// Smallest and largest region file served to a guest through ivshmem.
pub const GUEST_REGION_MIN: u64 = 1 << 20;
/// See [`GUEST_REGION_MIN`].
pub const GUEST_REGION_MAX: u64 = 16 << 30;

const PAGE: u64 = kgpu_common::abi::PAGE_SIZE;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ShmError {
    let what = what.into();
    move |source| ShmError::Io { what, source }
}

/// Ring and data-area sizes of a new region.
#[derive(Clone, Copy, Debug)]
pub struct RegionSpec {
    /// Submission ring entries (power of two).
    pub sq_entries: u32,
    /// Completion ring entries (power of two, ≥ sq_entries).
    pub cq_entries: u32,
    /// Data-area bytes.
    pub data_size: u64,
}

impl Default for RegionSpec {
    fn default() -> Self {
        RegionSpec {
            sq_entries: 1024,
            cq_entries: 2048,
            data_size: 256 << 20,
        }
    }
}

/// A mapped region.
pub struct SharedRegion {
    map: MmapRaw,
    geo: Geometry,
    file: File,
    locked: bool,
    /// What [`SharedRegion::publish_gpu_figures`] was last given, written
    /// again into every fresh header ([`SharedRegion::rewrite_gpu_figures`]).
    figures: std::sync::Mutex<Vec<(u16, GpuFigures)>>,
}

// SAFETY: the mapping is shared memory accessed only through atomics, the
// ring protocol and extents handed out under that protocol.
unsafe impl Send for SharedRegion {}
// SAFETY: as above.
unsafe impl Sync for SharedRegion {}

impl SharedRegion {
    /// Creates a region: in an anonymous memfd when `path` is `None`, else in
    /// a new file at `path` (so a helper in another process can open it).
    pub fn create(path: Option<&Path>, spec: RegionSpec) -> Result<Self, ShmError> {
        let geo = Geometry::new(spec.sq_entries, spec.cq_entries, spec.data_size)
            .map_err(ShmError::Geometry)?;
        let file = match path {
            None => {
                let fd = nix::sys::memfd::memfd_create(
                    c"kgpu-region",
                    nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
                )
                .map_err(|e| ShmError::Io {
                    what: "memfd_create".into(),
                    source: e.into(),
                })?;
                File::from(fd)
            }
            Some(p) => OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(p)
                .map_err(io(format!("create {}", p.display())))?,
        };
        file.set_len(geo.region_size)
            .map_err(io("size the region"))?;
        let r = Self::map_locked(file, geo)?;
        // SAFETY: a fresh, private-to-us mapping of exactly region_size bytes,
        // page aligned by mmap.
        unsafe {
            region::init_header(r.base(), &geo, KNOWN_FEATURES);
            region::reset_rings(r.base(), &geo);
        }
        Ok(r)
    }

    /// Maps `geo.region_size` bytes of `file` shared and locks them.
    fn map_locked(file: File, geo: Geometry) -> Result<Self, ShmError> {
        let map = MmapOptions::new()
            .len(geo.region_size as usize)
            .map_raw(&file)
            .map_err(io("map the region"))?;
        let mut r = SharedRegion {
            map,
            geo,
            file,
            locked: false,
            figures: Default::default(),
        };
        r.lock();
        Ok(r)
    }

    /// The region file that qemu's `ivshmem-plain` device shows a guest as
    /// BAR2 (`-object memory-backend-file,share=on,mem-path=FILE`): opened,
    /// or created with `size` bytes when missing. The region fills the file
    /// exactly (the guest's kernel checks the header against the BAR's
    /// length), so the data area is what the header and rings leave. The
    /// header is not written here: [`crate::serve::IvshmemTransport`]
    /// writes a fresh one for each session it offers.
    pub fn for_guest(path: &Path, size: Option<u64>) -> Result<Self, ShmError> {
        let bad = |why: String| ShmError::GuestSize {
            path: path.display().to_string(),
            why,
        };
        let fits = |len: u64| {
            if !len.is_power_of_two() || !(GUEST_REGION_MIN..=GUEST_REGION_MAX).contains(&len) {
                return Err(bad(format!(
                    "{len} bytes: an ivshmem BAR is a power of two between {} MiB and {} GiB",
                    GUEST_REGION_MIN >> 20,
                    GUEST_REGION_MAX >> 30
                )));
            }
            Ok(len)
        };
        // A size asked for is checked before anything is created or grown.
        if let Some(want) = size {
            fits(want)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io(format!("open or create {}", path.display())))?;
        let len = file.metadata().map_err(io("stat the region"))?.len();
        let len = match (len, size) {
            (0, want) => {
                let want = want.unwrap_or(256 << 20);
                file.set_len(want).map_err(io("size the region"))?;
                want
            }
            (have, Some(want)) if have != want => {
                return Err(bad(format!(
                    "the file is {} MiB, not {} MiB; qemu maps it at its size: remove it (with the guest stopped) or ask for {} MiB",
                    have >> 20,
                    want >> 20,
                    have >> 20
                )))
            }
            (have, _) => fits(have)?,
        };
        let spec = RegionSpec::default();
        let rings = Geometry::new(spec.sq_entries, spec.cq_entries, PAGE)
            .map_err(ShmError::Geometry)?
            .data_off;
        let geo = Geometry::new(spec.sq_entries, spec.cq_entries, len - rings)
            .map_err(ShmError::Geometry)?;
        debug_assert_eq!(geo.region_size, len);
        Self::map_locked(file, geo)
    }

    /// Opens a region file made by [`SharedRegion::create`] and checks its header.
    pub fn open(path: &Path) -> Result<Self, ShmError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(format!("open {}", path.display())))?;
        let len = file.metadata().map_err(io("stat the region"))?.len();
        if len < kgpu_common::abi::HEADER_SIZE as u64 {
            return Err(ShmError::Header {
                path: path.display().to_string(),
                err: RegionError::BadSize,
            });
        }
        let map = MmapOptions::new()
            .len(len as usize)
            .map_raw(&file)
            .map_err(io("map the region"))?;
        // SAFETY: the mapping is at least one header long.
        let snap = unsafe { HeaderSnapshot::read(map.as_ptr().cast()) };
        let geo = snap.validate(len).map_err(|err| ShmError::Header {
            path: path.display().to_string(),
            err,
        })?;
        let mut r = SharedRegion {
            map,
            geo,
            file,
            locked: false,
            figures: Default::default(),
        };
        r.lock();
        Ok(r)
    }

    fn lock(&mut self) {
        let (base, len) = (self.map.as_mut_ptr().cast(), self.map.len());
        // SAFETY: advice on our own mapping: keys and data stay out of core dumps.
        unsafe { libc::madvise(base, len, libc::MADV_DONTDUMP) };
        // SAFETY: locking our own mapping's pages; failure is harmless.
        let rc = unsafe { libc::mlock(self.map.as_ptr().cast(), self.map.len()) };
        self.locked = rc == 0;
        if !self.locked {
            log::debug!(
                "mlock of the {} MiB region failed (RLIMIT_MEMLOCK?): pages stay pageable",
                self.map.len() >> 20
            );
        }
    }

    /// Whether the pages are locked in memory.
    pub fn locked(&self) -> bool {
        self.locked
    }

    /// The validated geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// The region's file (memfd or file).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Start of the mapping.
    pub fn base(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Length of the mapping.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Never true: a region has at least a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Publishes what the backend measured of its GPU path, per service, in
    /// the header: before the region is attached or offered (the kernel reads
    /// them once, when it attaches). The other services' slots are zeroed.
    pub fn publish_gpu_figures(&self, figures: &[(u16, GpuFigures)]) {
        *self.figures.lock().unwrap_or_else(|e| e.into_inner()) = figures.to_vec();
        self.rewrite_gpu_figures();
    }

    /// Writes the published figures again (after a fresh header was written).
    pub fn rewrite_gpu_figures(&self) {
        let figures = self.figures.lock().unwrap_or_else(|e| e.into_inner());
        let hdr = self.map.as_mut_ptr().cast::<RegionHeader>();
        for id in 0..kgpu_common::abi::FIGURE_SLOTS as u16 {
            let f = figures
                .iter()
                .find(|(s, _)| *s == id)
                .map_or(GpuFigures::NONE, |&(_, f)| f);
            // SAFETY: the mapping starts with a header; the figures are plain
            // fields the kernel reads only once the region is attached, which
            // callers do after this.
            unsafe { region::write_gpu_figures(hdr, id, f) };
        }
    }

    /// The figures in the header now, per service with a slot.
    pub fn gpu_figures(&self) -> Vec<(u16, GpuFigures)> {
        let hdr = self.map.as_ptr().cast::<RegionHeader>();
        (0..kgpu_common::abi::FIGURE_SLOTS as u16)
            .map(|id| {
                // SAFETY: the mapping starts with a header.
                let f = unsafe { region::read_gpu_figures(hdr, id) };
                (id, f)
            })
            .filter(|(_, f)| f.present())
            .collect()
    }

    /// The header.
    pub fn header(&self) -> &RegionHeader {
        // SAFETY: the mapping starts with a validated header; its mutable
        // fields are atomics.
        unsafe { &*self.map.as_ptr().cast::<RegionHeader>() }
    }

    /// The data area.
    pub fn data(&self) -> DataArea {
        DataArea {
            // SAFETY: data_off is inside the mapping (validated geometry).
            base: unsafe { self.base().add(self.geo.data_off as usize) },
            size: self.geo.data_size,
        }
    }

    fn ring_ptrs<T>(&self, off: u64, records: u64) -> (*const RingIndices, *mut T) {
        // SAFETY: offsets from the validated geometry lie inside the mapping.
        unsafe {
            (
                self.base().add(off as usize).cast(),
                self.base().add(records as usize).cast(),
            )
        }
    }

    /// The submission ring's producer.
    ///
    /// # Safety
    /// At most one producer of the submission ring may exist at a time, and
    /// it must not outlive `self`.
    pub unsafe fn sq_producer(&self) -> Producer<Sqe> {
        let (i, r) = self.ring_ptrs(self.geo.sq_off, self.geo.sq_records());
        // SAFETY: pointers and capacity from the validated geometry; the
        // caller upholds uniqueness and lifetime.
        unsafe { Producer::new(i, r, self.geo.sq_entries) }
    }

    /// The submission ring's consumer.
    ///
    /// # Safety
    /// As [`SharedRegion::sq_producer`], for the consumer.
    pub unsafe fn sq_consumer(&self) -> Consumer<Sqe> {
        let (i, r) = self.ring_ptrs(self.geo.sq_off, self.geo.sq_records());
        // SAFETY: as in `sq_producer`.
        unsafe { Consumer::new(i, r, self.geo.sq_entries) }
    }

    /// The completion ring's producer.
    ///
    /// # Safety
    /// As [`SharedRegion::sq_producer`].
    pub unsafe fn cq_producer(&self) -> Producer<Cqe> {
        let (i, r) = self.ring_ptrs(self.geo.cq_off, self.geo.cq_records());
        // SAFETY: as in `sq_producer`.
        unsafe { Producer::new(i, r, self.geo.cq_entries) }
    }

    /// The completion ring's consumer.
    ///
    /// # Safety
    /// As [`SharedRegion::sq_producer`].
    pub unsafe fn cq_consumer(&self) -> Consumer<Cqe> {
        let (i, r) = self.ring_ptrs(self.geo.cq_off, self.geo.cq_records());
        // SAFETY: as in `sq_producer`.
        unsafe { Consumer::new(i, r, self.geo.cq_entries) }
    }
}

/// The data area of a mapped region: a raw window that requests index by extent.
#[derive(Clone, Copy, Debug)]
pub struct DataArea {
    base: *mut u8,
    size: u64,
}

// SAFETY: access is coordinated by the ring protocol (an extent belongs to one
// request in flight, and a request to one worker).
unsafe impl Send for DataArea {}
// SAFETY: as above.
unsafe impl Sync for DataArea {}

impl DataArea {
    /// Builds a window over raw memory.
    ///
    /// # Safety
    /// `base` must be valid for reads and writes of `size` bytes for as long
    /// as the window and its copies are used.
    pub unsafe fn from_raw(base: *mut u8, size: u64) -> Self {
        DataArea { base, size }
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Start of the area.
    pub fn base(&self) -> *mut u8 {
        self.base
    }

    /// A pointer to `off` (callers check `off + len <= size` first).
    pub fn ptr(&self, off: u64) -> *mut u8 {
        debug_assert!(off <= self.size);
        self.base.wrapping_add(off as usize)
    }

    /// A shared view of an extent.
    ///
    /// # Safety
    /// The extent must fit the area, and nobody may write it while the slice lives.
    pub unsafe fn slice(&self, e: kgpu_common::abi::Extent) -> &[u8] {
        // SAFETY: caller guarantees bounds and absence of writers.
        unsafe { std::slice::from_raw_parts(self.ptr(e.off), e.len as usize) }
    }

    /// An exclusive view of an extent.
    ///
    /// # Safety
    /// The extent must fit the area, and nobody else may access it while the
    /// slice lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, e: kgpu_common::abi::Extent) -> &mut [u8] {
        // SAFETY: caller guarantees bounds and exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(e.off), e.len as usize) }
    }
}

/// Waits while `word` equals `expected`, at most `timeout`. Works across
/// processes on a shared mapping. Spurious returns are possible.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT reads the aligned u32 behind `word`; `ts` lives for
    // the call. Errors (EAGAIN, ETIMEDOUT, EINTR) are all "go and look again".
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

/// Wakes every waiter on `word`.
pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kgpu_common::abi::service;

    #[test]
    fn published_figures_survive_a_fresh_header() {
        let spec = RegionSpec {
            data_size: 1 << 20,
            ..RegionSpec::default()
        };
        let r = SharedRegion::create(None, spec).unwrap();
        assert!(r.gpu_figures().is_empty());
        let f = GpuFigures {
            mbps: 12_000,
            rtt_ns: 25_000,
            crossover: 256 << 10,
            reserved: 0,
        };
        r.publish_gpu_figures(&[(service::RAID6, f)]);
        assert_eq!(r.gpu_figures(), vec![(service::RAID6, f)]);
        // SAFETY: our own region, no kernel or helper on it.
        unsafe { region::init_header(r.base(), r.geometry(), KNOWN_FEATURES) };
        assert!(r.gpu_figures().is_empty());
        r.rewrite_gpu_figures();
        assert_eq!(r.gpu_figures(), vec![(service::RAID6, f)]);
        r.publish_gpu_figures(&[]);
        assert!(r.gpu_figures().is_empty());
    }
}
