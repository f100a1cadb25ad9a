//! The `/dev/kgpu` ioctl interface.
//!
//! Numbers follow Linux's `_IOC` encoding (x86, arm64, riscv: 2 direction
//! bits, 14 size bits, 8 type bits, 8 number bits).

/// Argument of [`KGPU_IOC_ATTACH`]: the helper's mapping of the region.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttachArgs {
    /// Must equal [`super::abi::ABI_VERSION`].
    pub version: u32,
    /// Reserved, must be zero.
    pub flags: u32,
    /// User address of the region (page aligned).
    pub addr: u64,
    /// Length of the region in bytes (whole pages, equal to the header's size).
    pub len: u64,
}

const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;

/// Linux's `_IOC(dir, type, nr, size)`.
pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    (dir << 30) | ((size as u32 & 0x3fff) << 16) | ((ty as u32) << 8) | nr as u32
}

/// The ioctl type byte.
pub const KGPU_IOC_TYPE: u8 = b'K';

/// Hands a region to the kernel: `_IOW('K', 1, struct AttachArgs)`.
pub const KGPU_IOC_ATTACH: u32 = ioc(
    IOC_WRITE,
    KGPU_IOC_TYPE,
    1,
    core::mem::size_of::<AttachArgs>(),
);

/// Tells the kernel that completions were posted: `_IO('K', 2)`.
pub const KGPU_IOC_DOORBELL: u32 = ioc(IOC_NONE, KGPU_IOC_TYPE, 2, 0);

/// Asks the kernel to stop submitting, finish what is in flight, then detach
/// (an orderly shutdown): `_IO('K', 3)`.
pub const KGPU_IOC_DRAIN: u32 = ioc(IOC_NONE, KGPU_IOC_TYPE, 3, 0);

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn encoding_matches_linux_macros() {
        // _IOW('K', 1, 24 bytes) = 0x40184b01, _IO('K', 2) = 0x4b02.
        assert_eq!(KGPU_IOC_ATTACH, 0x4018_4b01);
        assert_eq!(KGPU_IOC_DOORBELL, 0x4b02);
        assert_eq!(KGPU_IOC_DRAIN, 0x4b03);
    }
}
