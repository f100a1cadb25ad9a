// SPDX-License-Identifier: GPL-2.0-only

//! One module per mode of `kgpu-ktest`.

pub mod attach_errors;
pub mod attach_one;
pub mod echo;
pub mod garbage;
pub mod header;
pub mod jumps;
pub mod open_as_nobody;
pub mod open_twice;
pub mod race;
pub mod random;
pub mod serve;
