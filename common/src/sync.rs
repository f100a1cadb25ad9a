//! The atomics the ring code uses: `core`'s, or loom's under `cfg(loom)` so the
//! protocol can be model-checked with the very same code.

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
