//! The host-device link, measured: the limit the benchmark's picture draws
//! for the GPU path (every byte crosses it in and, mostly, out again).
//!
//! One GPU, page-locked host memory (registered with `cuMemHostRegister`, as
//! the region is), a host-to-device and a device-to-host copy of the same
//! size on two streams at once; the best of a few runs. Reported as the
//! bytes moved in both directions together per second, which is what bounds
//! a request stream that copies its input in and its output out.

/// What was measured.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    /// Both directions at once, GB/s (10^9 bytes per second).
    pub both_gbps: f64,
    /// Host to device alone, GB/s.
    pub h2d_gbps: f64,
    /// Device to host alone, GB/s.
    pub d2h_gbps: f64,
}

/// Measures GPU 0's link with copies of `bytes` each way; `None` without a
/// usable GPU (or without the `cuda` feature).
#[cfg(feature = "cuda")]
pub fn measure(bytes: usize) -> Option<Link> {
    use cudarc::driver::{sys, CudaContext, DevicePtr};
    use std::time::{Duration, Instant};
    let ctx = crate::cuda::quietly(|| CudaContext::new(0)).ok()?.ok()?;
    let (up, down) = (ctx.new_stream().ok()?, ctx.new_stream().ok()?);
    let mut host = vec![0u8; 2 * bytes];
    // SAFETY: `host` outlives the registration, undone before it is freed.
    let registered = unsafe { sys::cuMemHostRegister_v2(host.as_mut_ptr().cast(), 2 * bytes, 0) }
        == sys::CUresult::CUDA_SUCCESS;
    if !registered {
        return None;
    }
    // SAFETY: device buffers of `bytes` bytes, written only by the copies below.
    let bufs = unsafe { (up.alloc::<u8>(bytes), down.alloc::<u8>(bytes)) };
    let result = (|| {
        let (dev_up, dev_down) = (bufs.0.ok()?, bufs.1.ok()?);
        let (p_up, _g1) = dev_up.device_ptr(&up);
        let (p_down, _g2) = dev_down.device_ptr(&down);
        let src = host.as_ptr();
        // SAFETY: the second half of `host`, registered above.
        let dst = unsafe { host.as_mut_ptr().add(bytes) };
        let time = |h2d: bool, d2h: bool| -> Option<Duration> {
            let mut best = Duration::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                if h2d {
                    // SAFETY: `bytes` of registered host memory to a device
                    // buffer of `bytes`, in stream order.
                    unsafe { sys::cuMemcpyHtoDAsync_v2(p_up, src.cast(), bytes, up.cu_stream()) }
                        .result()
                        .ok()?;
                }
                if d2h {
                    // SAFETY: as above, the other way, into the second half.
                    unsafe {
                        sys::cuMemcpyDtoHAsync_v2(dst.cast(), p_down, bytes, down.cu_stream())
                    }
                    .result()
                    .ok()?;
                }
                up.synchronize().ok()?;
                down.synchronize().ok()?;
                best = best.min(t.elapsed());
            }
            Some(best)
        };
        let gbps = |n: usize, d: Duration| n as f64 / d.as_secs_f64().max(1e-9) / 1e9;
        Some(Link {
            h2d_gbps: gbps(bytes, time(true, false)?),
            d2h_gbps: gbps(bytes, time(false, true)?),
            both_gbps: gbps(2 * bytes, time(true, true)?),
        })
    })();
    // SAFETY: registered above; every copy has finished (synchronized).
    let _ = unsafe { sys::cuMemHostUnregister(host.as_mut_ptr().cast()) };
    result
}

/// Without the `cuda` feature there is no GPU to measure.
#[cfg(not(feature = "cuda"))]
pub fn measure(_bytes: usize) -> Option<Link> {
    None
}
