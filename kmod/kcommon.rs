// SPDX-License-Identifier: GPL-2.0-only

//! The shared ABI and ring code, compiled from the workspace's `common` crate
//! by source path (the files use only `core` and refer to each other through
//! `super::`).

#[path = "../common/src/abi.rs"]
pub mod abi;
#[path = "../common/src/alloc.rs"]
pub mod alloc;
#[path = "../common/src/cost.rs"]
pub mod cost;
#[path = "../common/src/ioctl.rs"]
pub mod ioctl;
#[path = "../common/src/region.rs"]
pub mod region;
#[path = "../common/src/request.rs"]
pub mod request;
#[path = "../common/src/ring.rs"]
pub mod ring;
#[path = "../common/src/slots.rs"]
pub mod slots;
#[path = "../common/src/sync.rs"]
pub mod sync;
