// SPDX-License-Identifier: GPL-2.0-only

//! A memfd-backed region, mapped into this process.

use crate::sys::{ftruncate, memfd_create, mlock, mmap, munmap, MAP_SHARED, PROT_RW};
use kgpu_common::abi::{self, RegionHeader};
use kgpu_common::ioctl::AttachArgs;
use kgpu_common::region::{init_header, Geometry, KNOWN_FEATURES};
use std::fs::File;
use std::io;

/// A memfd-backed region mapped into this process.
pub struct Region {
    _fd: File,
    pub base: *mut u8,
    len: usize,
    pub geom: Geometry,
}

impl Region {
    pub fn new(sq: u32, cq: u32, data: u64) -> Region {
        Region::with_slack(sq, cq, data, 0)
    }

    /// A region whose mapping is `slack` bytes longer than its header says.
    pub fn with_slack(sq: u32, cq: u32, data: u64, slack: usize) -> Region {
        let geom = Geometry::new(sq, cq, data).expect("geometry");
        let len = geom.region_size as usize + slack;
        // SAFETY: plain syscalls; results are checked.
        unsafe {
            let fd = memfd_create(c"kgpu-ktest".as_ptr().cast(), 1);
            assert!(fd >= 0, "memfd_create: {}", io::Error::last_os_error());
            let file = <File as std::os::fd::FromRawFd>::from_raw_fd(fd);
            assert_eq!(ftruncate(fd, len as i64), 0, "ftruncate");
            let p = mmap(std::ptr::null_mut(), len, PROT_RW, MAP_SHARED, fd, 0);
            assert!(p as isize != -1, "mmap: {}", io::Error::last_os_error());
            let _ = mlock(p, len);
            init_header(p.cast(), &geom, KNOWN_FEATURES);
            Region {
                _fd: file,
                base: p.cast(),
                len,
                geom,
            }
        }
    }

    pub fn args(&self) -> AttachArgs {
        AttachArgs {
            version: abi::ABI_VERSION,
            flags: 0,
            addr: self.base as u64,
            len: self.len as u64,
        }
    }

    pub fn header(&self) -> &RegionHeader {
        // SAFETY: the header is the first page of our live mapping.
        unsafe { &*self.base.cast::<RegionHeader>() }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: our own mapping; the device that may have pinned it is
        // closed before the region is dropped (see `Session`).
        unsafe { munmap(self.base.cast(), self.len) };
    }
}
