// SPDX-License-Identifier: GPL-2.0-only

//! The libc calls and constants the test program uses.

use std::ffi::{c_int, c_short, c_uint, c_ulong, c_void};

extern "C" {
    pub fn ioctl(fd: c_int, req: c_ulong, ...) -> c_int;
    pub fn memfd_create(name: *const u8, flags: c_uint) -> c_int;
    pub fn ftruncate(fd: c_int, len: i64) -> c_int;
    pub fn mmap(
        addr: *mut c_void,
        len: usize,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        off: i64,
    ) -> *mut c_void;
    pub fn munmap(addr: *mut c_void, len: usize) -> c_int;
    pub fn mlock(addr: *const c_void, len: usize) -> c_int;
    pub fn setuid(uid: c_uint) -> c_int;
    pub fn setgid(gid: c_uint) -> c_int;
    pub fn poll(fds: *mut PollFd, n: c_ulong, timeout: c_int) -> c_int;
}

#[repr(C)]
pub struct PollFd {
    pub fd: c_int,
    pub events: c_short,
    pub revents: c_short,
}
pub const POLLIN: c_short = 1;
pub const POLLHUP: c_short = 0x10;
pub const PROT_RW: c_int = 3;
pub const MAP_SHARED: c_int = 1;

pub const EFAULT: i32 = 14;
pub const EBUSY: i32 = 16;
pub const EINVAL: i32 = 22;
pub const EFBIG: i32 = 27;
pub const ENOTTY: i32 = 25;
pub const EPROTO: i32 = 71;
pub const EBADMSG: i32 = 74;
pub const EACCES: i32 = 13;
pub const EPERM: i32 = 1;
