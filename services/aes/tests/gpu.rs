//! The CUDA kernels against the CPU implementation (skipped without a CUDA
//! device), and an ignored throughput measurement on device-resident data.
#![cfg(feature = "cuda")]

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use kgpu_aes::cpu::{AesCpu, AesRequest};
use kgpu_aes::gpu::{AesGpu, AesGpuRequest, SOURCE};
use kgpu_aes::proto::{op, AesParams};
use kgpu_common::abi::{Extent, Status};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

struct Dev {
    _ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    gpu: AesGpu,
}

fn setup() -> Option<Dev> {
    // SAFETY: these only try to load the CUDA driver and NVRTC libraries.
    let present = unsafe {
        cudarc::driver::sys::is_culib_present() && cudarc::nvrtc::sys::is_culib_present()
    };
    if !present {
        println!("skipping: no CUDA device (driver or NVRTC library missing)");
        return None;
    }
    let ctx = match CudaContext::new(0) {
        Ok(c) => c,
        Err(e) => {
            println!("skipping: no CUDA device ({e:?})");
            return None;
        }
    };
    let (major, minor) = ctx.compute_capability().expect("compute capability");
    let arch: &'static str = Box::leak(format!("sm_{major}{minor}").into_boxed_str());
    let opts = CompileOptions {
        arch: Some(arch),
        ..Default::default()
    };
    let t = Instant::now();
    let ptx = compile_ptx_with_opts(SOURCE, opts).expect("NVRTC compiles aes.cu");
    println!(
        "{} ({arch}): NVRTC compile {:.0} ms",
        ctx.name().unwrap_or_default(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let module = ctx.load_module(ptx).expect("load module");
    let stream = ctx.new_stream().expect("stream");
    let gpu = AesGpu::new(&module, &stream).expect("AesGpu");
    Some(Dev {
        _ctx: ctx,
        stream,
        gpu,
    })
}

const POISON: u8 = 0xa7;

struct Case {
    op: u16,
    key: Vec<u8>,
    unit: u32,
    params: AesParams,
    data: Vec<u8>,
    aux: Vec<u8>,
    key_tag: u64,
}

/// Runs one case through the GPU in a mirror laid out as
/// `[poison | input | poison | output | poison | aux | poison]` and checks the
/// output against the CPU and that nothing else changed.
fn check(dev: &Dev, cpu: &AesCpu, c: &Case, out_misalign: u64) {
    let len = c.data.len() as u64;
    let in_off = 64u64;
    let out_off = (in_off + len + 64).div_ceil(256) * 256 + out_misalign;
    let aux_off = out_off + len + 32 + 5;
    let size = aux_off + c.aux.len() as u64 + 64;
    let mut host = vec![POISON; size as usize];
    host[in_off as usize..(in_off + len) as usize].copy_from_slice(&c.data);
    // The helper copies input to output before launching.
    host[out_off as usize..(out_off + len) as usize].copy_from_slice(&c.data);
    host[aux_off as usize..aux_off as usize + c.aux.len()].copy_from_slice(&c.aux);
    let mut expect_mirror = host.clone();

    let mut want = c.data.clone();
    let req = AesRequest {
        op: c.op,
        unit: c.unit,
        params: c.params.to_bytes(),
        key_tag: c.key_tag,
        key: &c.key,
        aux: &c.aux,
    };
    cpu.execute(&req, &mut want).expect("cpu");
    expect_mirror[out_off as usize..(out_off + len) as usize].copy_from_slice(&want);

    let dmirror: CudaSlice<u8> = dev.stream.clone_htod(&host).expect("upload");
    {
        let (base, _g) = dmirror.device_ptr(&dev.stream);
        let greq = AesGpuRequest {
            op: c.op,
            unit: c.unit,
            params: c.params.to_bytes(),
            key_tag: c.key_tag,
            key: &c.key,
            input: Extent::new(in_off, len),
            output: Extent::new(out_off, len),
            aux: if c.aux.is_empty() {
                Extent::EMPTY
            } else {
                Extent::new(aux_off, c.aux.len() as u64)
            },
            data_size: size,
        };
        dev.gpu.launch(&dev.stream, base, &greq).expect("launch");
    }
    let got = dev.stream.clone_dtoh(&dmirror).expect("download");
    dev.stream.synchronize().expect("sync");
    if got != expect_mirror {
        let first = got.iter().zip(&expect_mirror).position(|(a, b)| a != b);
        panic!(
            "{} key {} unit {} len {} iv_mode {} misalign {out_misalign}: first difference at mirror byte {first:?} (output at {out_off})",
            op::op_name(c.op),
            c.key.len(),
            c.unit,
            len,
            c.params.iv_mode
        );
    }
}

#[test]
fn gpu_matches_cpu() {
    let Some(dev) = setup() else { return };
    let cpu = AesCpu::new();
    let mut r = StdRng::seed_from_u64(42);
    let shapes: &[(u32, u64)] = &[
        (0, 1),
        (16, 9),
        (512, 7),
        (4096, 3),
        (4096, 300),
        (48, 33),
        (17, 5),
        (100, 3),
        (520, 4),
        (4100, 2),
        (31, 70),
    ];
    let mut n = 0;
    for opc in op::ALL {
        let xts = opc == op::XTS_ENC || opc == op::XTS_DEC;
        let blockwise = matches!(opc, op::ECB_ENC | op::ECB_DEC | op::CBC_ENC | op::CBC_DEC);
        for klen in [16usize, 24, 32] {
            for &(unit, units) in shapes {
                if blockwise && unit % 16 != 0 {
                    continue;
                }
                let units = if unit == 0 { 1 } else { units };
                let len = if unit == 0 {
                    // Whole-buffer unit of an odd size where the mode allows it.
                    if blockwise {
                        16 * 77
                    } else {
                        16 * 77 + 5
                    }
                } else {
                    unit as usize * units as usize
                };
                let modes: &[u32] = if opc == op::ECB_ENC || opc == op::ECB_DEC {
                    &[0]
                } else if units == 1 {
                    &[1, 2, 3]
                } else {
                    &[2, 3]
                };
                for &mode in modes {
                    let key: Vec<u8> = (0..if xts { 2 * klen } else { klen })
                        .map(|_| r.gen())
                        .collect();
                    let mut data = vec![0u8; len];
                    r.fill_bytes(&mut data);
                    let params = match mode {
                        0 => AesParams::none(),
                        1 => AesParams::single(r.gen()),
                        2 => AesParams::plain64(if r.gen_bool(0.3) {
                            u64::MAX - 1
                        } else {
                            r.gen::<u32>() as u64
                        }),
                        _ => AesParams::list(),
                    };
                    let mut aux = vec![0u8; if mode == 3 { 16 * units as usize } else { 0 }];
                    r.fill_bytes(&mut aux);
                    if mode == 3 && opc == op::CTR {
                        // Exercise the 64-bit carry of the counter.
                        aux[8..16].fill(0xff);
                    }
                    let case = Case {
                        op: opc,
                        key,
                        unit,
                        params,
                        data,
                        aux,
                        key_tag: if r.gen_bool(0.5) {
                            0
                        } else {
                            r.gen_range(1..4)
                        },
                    };
                    for misalign in [0u64, 3] {
                        check(&dev, &cpu, &case, misalign);
                        n += 1;
                    }
                }
            }
        }
    }
    println!(
        "{n} GPU cases match the CPU; {} key schedules cached",
        dev.gpu.cached_keys()
    );
}

#[test]
fn gpu_refuses_bad_requests() {
    let Some(dev) = setup() else { return };
    let mirror: CudaSlice<u8> = dev.stream.alloc_zeros(4096).expect("alloc");
    let (base, _g) = mirror.device_ptr(&dev.stream);
    let key = [1u8; 32];
    let good = AesGpuRequest {
        op: op::XTS_ENC,
        unit: 512,
        params: AesParams::plain64(0).to_bytes(),
        key_tag: 0,
        key: &key,
        input: Extent::new(0, 1024),
        output: Extent::new(0, 1024),
        aux: Extent::EMPTY,
        data_size: 4096,
    };
    assert!(dev.gpu.launch(&dev.stream, base, &good).is_ok());
    let status = |req: AesGpuRequest<'_>| {
        dev.gpu
            .launch(&dev.stream, base, &req)
            .unwrap_err()
            .status()
    };
    assert_eq!(status(AesGpuRequest { op: 99, ..good }), Status::UnknownOp);
    assert_eq!(
        status(AesGpuRequest {
            key: &key[..20],
            ..good
        }),
        Status::BadKey
    );
    assert_eq!(
        status(AesGpuRequest { unit: 100, ..good }),
        Status::BadLength
    );
    assert_eq!(
        status(AesGpuRequest {
            output: Extent::new(3584, 1024),
            ..good
        }),
        Status::BadExtent
    );
    assert_eq!(
        status(AesGpuRequest {
            params: AesParams::single([0; 16]).to_bytes(),
            ..good
        }),
        Status::BadParams
    );
    dev.stream.synchronize().expect("sync");
}

/// Throughput of every kernel on 256 MiB of device-resident data.
#[test]
#[ignore]
fn gpu_throughput() {
    let Some(dev) = setup() else { return };
    let len: u64 = 256 << 20;
    let mut host = vec![0u8; len as usize];
    StdRng::seed_from_u64(7).fill_bytes(&mut host);
    let mirror: CudaSlice<u8> = dev.stream.clone_htod(&host).expect("upload");
    let (base, _g) = mirror.device_ptr(&dev.stream);
    let ctx = dev.stream.context();
    let cases: &[(u16, usize, u32, &str)] = &[
        (op::ECB_ENC, 16, 4096, "ecb-enc aes-128"),
        (op::ECB_DEC, 16, 4096, "ecb-dec aes-128"),
        (op::ECB_ENC, 32, 4096, "ecb-enc aes-256"),
        (op::CTR, 16, 4096, "ctr aes-128"),
        (op::CTR, 32, 4096, "ctr aes-256"),
        (op::XTS_ENC, 32, 4096, "xts-enc aes-128 4K"),
        (op::XTS_DEC, 32, 4096, "xts-dec aes-128 4K"),
        (op::XTS_ENC, 64, 4096, "xts-enc aes-256 4K"),
        (op::XTS_DEC, 64, 4096, "xts-dec aes-256 4K"),
        (op::XTS_ENC, 64, 512, "xts-enc aes-256 512"),
        (op::CBC_DEC, 16, 4096, "cbc-dec aes-128 4K"),
        (op::CBC_DEC, 32, 4096, "cbc-dec aes-256 4K"),
        (op::CBC_ENC, 16, 4096, "cbc-enc aes-128 4K"),
        (op::CBC_ENC, 16, 512, "cbc-enc aes-128 512"),
    ];
    for &(opc, klen, unit, name) in cases {
        let key = vec![0x42u8; klen];
        let params = if opc == op::ECB_ENC || opc == op::ECB_DEC {
            AesParams::none()
        } else {
            AesParams::plain64(1000)
        };
        let req = AesGpuRequest {
            op: opc,
            unit,
            params: params.to_bytes(),
            key_tag: 100 + u64::from(opc) * 100 + klen as u64,
            key: &key,
            input: Extent::new(0, len),
            output: Extent::new(0, len),
            aux: Extent::EMPTY,
            data_size: len,
        };
        dev.gpu.launch(&dev.stream, base, &req).expect("warm-up");
        dev.stream.synchronize().expect("sync");
        let iters = 5;
        let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = ctx.new_event(timing).expect("event");
        let end = ctx.new_event(timing).expect("event");
        start.record(&dev.stream).expect("record");
        for _ in 0..iters {
            dev.gpu.launch(&dev.stream, base, &req).expect("launch");
        }
        end.record(&dev.stream).expect("record");
        end.synchronize().expect("sync");
        let ms = start.elapsed_ms(&end).expect("elapsed") as f64 / iters as f64;
        println!(
            "{name:>22}: {:8.1} GB/s ({ms:.3} ms per 256 MiB)",
            len as f64 / (ms * 1e-3) / 1e9
        );
    }
}
