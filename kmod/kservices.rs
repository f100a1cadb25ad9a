// SPDX-License-Identifier: GPL-2.0-only

//! The services' wire encodings, compiled from the workspace's service crates
//! by source path (each file uses only `core`).

#[path = "../services/aes/src/proto.rs"]
pub mod aes;
#[path = "../services/raid6/src/proto.rs"]
pub mod raid6;
