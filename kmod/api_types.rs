// SPDX-License-Identifier: GPL-2.0-only

//! The types the submission API ([`crate::api`], which re-exports them) and
//! the attach state ([`crate::core_state`]) share: the completion callback
//! and what it receives, scatterlist inputs and outputs, submission errors.

use crate::kcommon::abi::Status;
use crate::shim;
use core::ffi::c_void;
use core::marker::PhantomData;

/// Completion callback: `ctx` is the value given to [`submit`](crate::api::submit).
pub type DoneFn = fn(ctx: usize, outcome: &Outcome<'_>);

/// The output of a completed request, in the data area. Only valid during the
/// callback. The helper could still write the memory (it must not, but it is
/// not trusted), so it is only read through copies.
pub struct OutView<'a> {
    ptr: *const u8,
    len: usize,
    _life: PhantomData<&'a [u8]>,
}

impl<'a> OutView<'a> {
    /// A view of nothing (failed requests).
    pub(crate) const fn empty() -> Self {
        OutView {
            ptr: core::ptr::null(),
            len: 0,
            _life: PhantomData,
        }
    }

    /// # Safety
    /// `ptr` must be valid for reads of `len` bytes for `'a`.
    pub(crate) unsafe fn new(ptr: *const u8, len: usize) -> Self {
        OutView {
            ptr,
            len,
            _life: PhantomData,
        }
    }

    /// Output bytes the helper reported (checked against the output size).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is no output.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies output bytes starting at `off` into `dst`; returns how many.
    pub fn copy_to(&self, off: usize, dst: &mut [u8]) -> usize {
        if off >= self.len {
            return 0;
        }
        let n = dst.len().min(self.len - off);
        // SAFETY: `off + n <= len`, so the source is inside the view, valid by
        // the contract of `new`; `dst` is a distinct kernel buffer.
        unsafe { core::ptr::copy_nonoverlapping(self.ptr.add(off), dst.as_mut_ptr(), n) };
        n
    }
}

impl OutView<'_> {
    /// Copies output bytes starting at `off` into the scatterlist `dst`
    /// (at most `dst.len()` bytes); returns how many were copied.
    pub fn copy_to_sg(&self, off: usize, dst: &SgList<'_>) -> usize {
        if off >= self.len {
            return 0;
        }
        let n = dst.len.min(self.len - off);
        // SAFETY: the source lies inside the view (valid by the contract of
        // `new`); `dst` describes writable memory by the contract of
        // `SgList::new`.
        unsafe { shim::kgpu_shim_sg_from_buf(dst.sgl, dst.skip, self.ptr.add(off), n) }
    }
}

/// `len` bytes of a `struct scatterlist` list, starting `skip` bytes in.
#[derive(Clone, Copy)]
pub struct SgList<'a> {
    pub(crate) sgl: *mut c_void,
    pub(crate) skip: usize,
    pub(crate) len: usize,
    _life: PhantomData<&'a mut [u8]>,
}

impl SgList<'_> {
    /// # Safety
    /// `sgl` must be a valid, terminated scatterlist describing at least
    /// `skip + len` bytes of kernel memory, readable (as an input) or
    /// writable (as an output) and not freed while the `SgList` is in use.
    pub unsafe fn new(sgl: *mut c_void, skip: usize, len: usize) -> Self {
        SgList {
            sgl,
            skip,
            len,
            _life: PhantomData,
        }
    }

    /// Bytes described.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it describes no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What a callback receives.
pub struct Outcome<'a> {
    /// `Ok`, an error the helper reported, `TimedOut` or `NoHelper` (detach).
    pub status: Status,
    /// Which backend ran it (`abi::backend`); 0 when it did not run.
    pub backend: u32,
    /// The output (empty unless `status` is `Ok`).
    pub out: OutView<'a>,
}

/// Why a request was not submitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// No helper attached (or it is draining, detaching or broken).
    NoHelper,
    /// The ring, the slot table or the data area is full right now.
    Busy,
    /// A part is larger than `max_request_kb` or than the data area.
    TooLarge,
    /// Inconsistent request (in place with different sizes, sync call where
    /// sleeping is not allowed).
    Invalid,
}
