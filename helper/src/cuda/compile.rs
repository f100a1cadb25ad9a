//! The services' kernels as one module: NVRTC compilation and the on-disk
//! cache of the compiled CUBIN (keyed by source hash and architecture).

use super::{quietly, CudaInitError};
use crate::services::Registry;
use std::path::PathBuf;

/// A stable 64-bit FNV-1a hash (for the kernel cache key).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("KGPU_CACHE") {
        return Some(PathBuf::from(d).join("cubin"));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("kgpu-rs/cubin"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kgpu-rs/cubin"))
}

/// All services' kernels in one source, in registry order.
pub fn kernel_source(services: &Registry) -> String {
    let mut src = String::new();
    for gpu in services.iter().filter_map(|s| s.gpu()) {
        src.push_str(gpu.source());
        src.push('\n');
    }
    src
}

/// Compiles the services' kernels for `sm_XY` with NVRTC, or loads them from
/// the on-disk cache keyed by source hash and architecture.
pub fn compile(services: &Registry, arch: &str) -> Result<(Vec<u8>, bool), CudaInitError> {
    let src = kernel_source(services);
    let key = format!("{:016x}-{arch}.cubin", fnv1a(src.as_bytes()));
    let cached = cache_dir().map(|d| d.join(&key));
    if let Some(p) = &cached {
        if let Ok(bin) = std::fs::read(p) {
            if !bin.is_empty() {
                return Ok((bin, true));
            }
        }
    }
    let bin = quietly(|| nvrtc_cubin(&src, arch))
        .map_err(|_| CudaInitError::Compile("libnvrtc could not be loaded".into()))??;
    if let Some(p) = &cached {
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        let ok = p
            .parent()
            .is_some_and(|d| std::fs::create_dir_all(d).is_ok())
            && std::fs::write(&tmp, &bin).is_ok()
            && std::fs::rename(&tmp, p).is_ok();
        if !ok {
            let _ = std::fs::remove_file(&tmp);
            log::debug!("could not cache the compiled kernels in {}", p.display());
        }
    }
    Ok((bin, false))
}

fn nvrtc_cubin(src: &str, arch: &str) -> Result<Vec<u8>, CudaInitError> {
    use cudarc::nvrtc::{result, sys as nsys};
    let c_src = std::ffi::CString::new(src).map_err(|e| CudaInitError::Compile(e.to_string()))?;
    let prog = result::create_program(&c_src, Some(c"kgpu.cu"))
        .map_err(|e| CudaInitError::Compile(format!("{e:?}")))?;
    let opts = [
        format!("--gpu-architecture={arch}"),
        "-std=c++17".to_string(),
    ];
    // SAFETY: `prog` is a live program; the options are valid C strings.
    let compiled = unsafe { result::compile_program(prog, &opts) };
    let out = match compiled {
        Err(_) => {
            // SAFETY: `prog` is live.
            let log = unsafe { result::get_program_log(prog) }
                .map(|l| {
                    let b: Vec<u8> = l.iter().map(|c| *c as u8).take_while(|c| *c != 0).collect();
                    String::from_utf8_lossy(&b).into_owned()
                })
                .unwrap_or_default();
            Err(CudaInitError::Compile(log))
        }
        Ok(()) => {
            let mut size = 0usize;
            // SAFETY: `prog` compiled; `size` receives the CUBIN size.
            let rc = unsafe { nsys::nvrtcGetCUBINSize(prog, &mut size) };
            if rc != nsys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
                Err(CudaInitError::Compile(format!("nvrtcGetCUBINSize: {rc:?}")))
            } else {
                let mut bin = vec![0u8; size];
                // SAFETY: `bin` has the size NVRTC reported.
                let rc = unsafe { nsys::nvrtcGetCUBIN(prog, bin.as_mut_ptr().cast()) };
                if rc != nsys::nvrtcResult::NVRTC_SUCCESS {
                    Err(CudaInitError::Compile(format!("nvrtcGetCUBIN: {rc:?}")))
                } else {
                    Ok(bin)
                }
            }
        }
    };
    // SAFETY: `prog` is live and not used afterwards.
    let _ = unsafe { result::destroy_program(prog) };
    out
}
