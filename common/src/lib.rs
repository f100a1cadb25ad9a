//! kgpu-rs shared ABI: the region layout, the submission and completion rings,
//! request and completion records, validation of everything the other side
//! writes, and the data-area allocator.
//!
//! `#![no_std]`, no dependencies, no `alloc`. The kernel module compiles these
//! files by source path, so sibling modules refer to each other through
//! `super::` only.
#![no_std]

pub mod abi;
pub mod alloc;
pub mod cost;
pub mod ioctl;
pub mod region;
pub mod request;
pub mod ring;
pub mod slots;
pub mod sync;
