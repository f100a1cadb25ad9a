//! kgpu-helper: serves the requests of the kernel module (or of its userspace
//! stand-in) on a GPU or the CPU.

pub mod backend;
pub mod bench;
pub mod child;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod dispatch;
pub mod doctor;
pub mod kpath;
pub mod limits;
pub mod link;
pub mod notify;
pub mod out;
pub mod plot;
pub mod selftest;
pub mod serve;
pub mod services;
pub mod shm;
pub mod standin;
pub mod stats;
pub mod workload;
