//! GPU kernels against the CPU backend (skipped without a CUDA device), and an
//! ignored throughput measurement.
#![cfg(feature = "cuda")]

mod common;

use common::Rng;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use kgpu_raid6::cpu::{Raid6Cpu, Raid6Request};
use kgpu_raid6::gpu::{Raid6Gpu, Raid6GpuError, Raid6GpuRequest, SOURCE};
use kgpu_raid6::proto::{op, Raid6Params};
use std::sync::Arc;
use std::time::Instant;

struct Dev {
    stream: Arc<CudaStream>,
    gpu: Raid6Gpu,
}

fn setup() -> Option<Dev> {
    // cudarc panics when libcuda cannot be loaded at all: treat that as no device.
    let ctx = match std::panic::catch_unwind(|| CudaContext::new(0)) {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            println!("skipping: no CUDA device ({e:?})");
            return None;
        }
        Err(_) => {
            println!("skipping: no CUDA device (driver library not found)");
            return None;
        }
    };
    let (major, minor) = ctx.compute_capability().unwrap();
    let arch: &'static str = Box::leak(format!("sm_{major}{minor}").into_boxed_str());
    println!("device {} (sm_{major}{minor})", ctx.name().unwrap());
    let opts = CompileOptions {
        arch: Some(arch),
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(SOURCE, opts).expect("NVRTC compile");
    let module = ctx.load_module(ptx).expect("load module");
    let gpu = Raid6Gpu::new(module).expect("kernels present");
    Some(Dev {
        stream: ctx.default_stream(),
        gpu,
    })
}

fn base(dev: &Dev, buf: &CudaSlice<u8>) -> u64 {
    let (ptr, _sync) = buf.device_ptr(&dev.stream);
    ptr
}

/// Runs one request on the GPU and on the CPU and compares the outputs.
fn check(
    dev: &Dev,
    area: &mut CudaSlice<u8>,
    rng: &mut Rng,
    op: u16,
    disks: u32,
    unit: u32,
    params: Raid6Params,
) {
    let u = unit as usize;
    let n = disks as usize - 2;
    let in_blocks = match op {
        op::GEN_SYNDROME => n,
        op::XOR_SYNDROME => (params.b - params.a) as usize + 1,
        _ => disks as usize,
    };
    let mut input = rng.bytes(in_blocks * u);
    if op == op::RECOV_2DATA || op == op::RECOV_DATAP {
        // Consistent stripe: P and Q of the data, then poison the failed blocks.
        let mut pq = vec![0u8; 2 * u];
        let gen = Raid6Request {
            op: op::GEN_SYNDROME,
            disks,
            unit,
            params: &[0; 32],
        };
        Raid6Cpu.execute(&gen, &input[..n * u], &mut pq).unwrap();
        input[n * u..].copy_from_slice(&pq);
        let a = params.a as usize;
        input[a * u..(a + 1) * u].fill(0xee);
        let other = if op == op::RECOV_2DATA {
            params.b as usize
        } else {
            n
        };
        input[other * u..(other + 1) * u].fill(0xdd);
    }
    // For XOR_SYNDROME the output starts as an (arbitrary) old P/Q; otherwise poison.
    let old_out = if op == op::XOR_SYNDROME {
        rng.bytes(2 * u)
    } else {
        vec![0xa5; 2 * u]
    };
    let raw = params.to_bytes();
    let mut want = old_out.clone();
    let req = Raid6Request {
        op,
        disks,
        unit,
        params: &raw,
    };
    Raid6Cpu.execute(&req, &input, &mut want).unwrap();

    // Place input and output at random 64-byte aligned offsets, input first or last.
    let area_len = area.len() as u64;
    let total = (input.len() + 2 * u) as u64;
    let slack = (area_len - total) / 64;
    let gap = rng.below(slack / 2 + 1) * 64;
    let first = rng.below(slack / 2 + 1) * 64;
    let (in_off, out_off) = if rng.below(2) == 0 {
        (first, first + input.len() as u64 + gap)
    } else {
        (first + 2 * u as u64 + gap, first)
    };
    let s = &dev.stream;
    s.memcpy_htod(
        &input,
        &mut area.slice_mut(in_off as usize..in_off as usize + input.len()),
    )
    .unwrap();
    s.memcpy_htod(
        &old_out,
        &mut area.slice_mut(out_off as usize..out_off as usize + 2 * u),
    )
    .unwrap();
    let greq = Raid6GpuRequest {
        op,
        disks,
        unit,
        params: raw,
        input_off: in_off,
        input_len: input.len() as u64,
        output_off: out_off,
        output_len: 2 * u as u64,
    };
    let b = base(dev, area);
    // SAFETY: both extents lie inside `area` (checked above by construction),
    // which outlives the synchronize below; nothing else uses it.
    unsafe { dev.gpu.launch(s, b, &greq) }.unwrap();
    s.synchronize().unwrap();
    let got = s
        .clone_dtoh(&area.slice(out_off as usize..out_off as usize + 2 * u))
        .unwrap();
    assert!(
        got == want,
        "{} disks {disks} unit {unit} params {params:?}",
        op::op_name(op)
    );
}

#[test]
fn gpu_matches_cpu() {
    let Some(dev) = setup() else { return };
    let mut area = dev.stream.alloc_zeros::<u8>(48 << 20).unwrap();
    let mut rng = Rng::new(7);
    let mut runs = 0;
    for disks in [4u32, 5, 6, 8, 16, 18, 33, 64, 256] {
        for unit in [64u32, 4096, 65536 + 192] {
            if disks as u64 * unit as u64 > 20 << 20 {
                continue;
            }
            let n = disks - 2;
            check(
                &dev,
                &mut area,
                &mut rng,
                op::GEN_SYNDROME,
                disks,
                unit,
                Raid6Params::NONE,
            );
            let start = rng.below(n as u64) as u32;
            let stop = start + rng.below((n - start) as u64) as u32;
            for (a, b) in [(0, n - 1), (start, stop), (n - 1, n - 1), (n / 2, n / 2)] {
                check(
                    &dev,
                    &mut area,
                    &mut rng,
                    op::XOR_SYNDROME,
                    disks,
                    unit,
                    Raid6Params::xor(a, b),
                );
            }
            let a = rng.below(n as u64 - 1) as u32;
            let b = a + 1 + rng.below((n - a - 1) as u64) as u32;
            for (a, b) in [(0, 1), (0, n - 1), (n - 2, n - 1), (a, b)] {
                check(
                    &dev,
                    &mut area,
                    &mut rng,
                    op::RECOV_2DATA,
                    disks,
                    unit,
                    Raid6Params::recov_2data(a, b),
                );
            }
            for a in [0, n - 1, rng.below(n as u64) as u32] {
                check(
                    &dev,
                    &mut area,
                    &mut rng,
                    op::RECOV_DATAP,
                    disks,
                    unit,
                    Raid6Params::recov_datap(a),
                );
            }
            runs += 12;
        }
    }
    // Every pair and every data+P of a 12-disk array, and every xor range.
    let (disks, unit, n) = (12u32, 1024u32, 10u32);
    for a in 0..n {
        check(
            &dev,
            &mut area,
            &mut rng,
            op::RECOV_DATAP,
            disks,
            unit,
            Raid6Params::recov_datap(a),
        );
        for b in a..n {
            check(
                &dev,
                &mut area,
                &mut rng,
                op::XOR_SYNDROME,
                disks,
                unit,
                Raid6Params::xor(a, b),
            );
            if b > a {
                check(
                    &dev,
                    &mut area,
                    &mut rng,
                    op::RECOV_2DATA,
                    disks,
                    unit,
                    Raid6Params::recov_2data(a, b),
                );
            }
            runs += 2;
        }
    }
    println!("gpu_matches_cpu: {runs} requests compared");
}

#[test]
fn gpu_refuses_bad_requests() {
    let Some(dev) = setup() else { return };
    let area = dev.stream.alloc_zeros::<u8>(1 << 20).unwrap();
    let b = base(&dev, &area);
    let good = Raid6GpuRequest {
        op: op::GEN_SYNDROME,
        disks: 6,
        unit: 4096,
        params: [0; 32],
        input_off: 0,
        input_len: 4 * 4096,
        output_off: 65536,
        output_len: 8192,
    };
    let launch = |r: &Raid6GpuRequest| {
        // SAFETY: every extent below lies inside the 1 MiB `area`.
        unsafe { dev.gpu.launch(&dev.stream, b, r) }
    };
    launch(&good).unwrap();
    let bad_len = Raid6GpuRequest {
        input_len: 3 * 4096,
        ..good
    };
    assert!(matches!(launch(&bad_len), Err(Raid6GpuError::Proto(_))));
    let overlap = Raid6GpuRequest {
        output_off: 4 * 4096 - 64,
        ..good
    };
    assert_eq!(launch(&overlap), Err(Raid6GpuError::Overlap));
    let misaligned = Raid6GpuRequest {
        output_off: 65536 + 8,
        ..good
    };
    assert_eq!(launch(&misaligned), Err(Raid6GpuError::Misaligned));
    let bad_op = Raid6GpuRequest { op: 9, ..good };
    assert!(matches!(launch(&bad_op), Err(Raid6GpuError::Proto(_))));
    dev.stream.synchronize().unwrap();
}

/// Times one request geometry: returns data TB/s.
fn time(
    dev: &Dev,
    area: &CudaSlice<u8>,
    req: &Raid6GpuRequest,
    data_bytes: u64,
    iters: u32,
) -> f64 {
    let b = base(dev, area);
    // SAFETY: the callers' extents lie inside `area`.
    unsafe { dev.gpu.launch(&dev.stream, b, req) }.unwrap();
    dev.stream.synchronize().unwrap();
    let t = Instant::now();
    for _ in 0..iters {
        // SAFETY: as above.
        unsafe { dev.gpu.launch(&dev.stream, b, req) }.unwrap();
    }
    dev.stream.synchronize().unwrap();
    data_bytes as f64 * iters as f64 / t.elapsed().as_secs_f64() / 1e12
}

#[test]
#[ignore = "throughput measurement; needs a GPU with about 2 GiB free"]
fn gpu_throughput() {
    let Some(dev) = setup() else { return };
    let unit: u64 = 64 << 20;
    let max_disks = 18u64;
    // Input (all disks) followed by a 2-block output.
    let mut area = dev
        .stream
        .alloc_zeros::<u8>(((max_disks + 2) * unit) as usize)
        .unwrap();
    let mut rng = Rng::new(11);
    let host = rng.bytes((max_disks * unit) as usize);
    dev.stream
        .memcpy_htod(&host, &mut area.slice_mut(0..host.len()))
        .unwrap();
    for ndata in [16u64, 14] {
        let disks = ndata + 2;
        let req = |op: u16, params: Raid6Params, nin: u64| Raid6GpuRequest {
            op,
            disks: disks as u32,
            unit: unit as u32,
            params: params.to_bytes(),
            input_off: 0,
            input_len: nin * unit,
            output_off: max_disks * unit,
            output_len: 2 * unit,
        };
        let gen = req(op::GEN_SYNDROME, Raid6Params::NONE, ndata);
        let tbs = time(&dev, &area, &gen, ndata * unit, 20);
        println!("gen_syndrome {disks} disks ({ndata} data) x 64 MiB: {tbs:.3} TB/s of data");
        // Check this large result against the CPU.
        dev.stream.synchronize().unwrap();
        let got = dev
            .stream
            .clone_dtoh(&area.slice((max_disks * unit) as usize..((max_disks + 2) * unit) as usize))
            .unwrap();
        let mut want = vec![0u8; 2 * unit as usize];
        let creq = Raid6Request {
            op: op::GEN_SYNDROME,
            disks: disks as u32,
            unit: unit as u32,
            params: &[0; 32],
        };
        Raid6Cpu
            .execute(&creq, &host[..(ndata * unit) as usize], &mut want)
            .unwrap();
        assert!(got == want, "64 MiB gen_syndrome differs from the CPU");
        let xor = req(
            op::XOR_SYNDROME,
            Raid6Params::xor(0, ndata as u32 - 1),
            ndata,
        );
        let tbs = time(&dev, &area, &xor, ndata * unit, 10);
        println!(
            "xor_syndrome 0..={} x 64 MiB: {tbs:.3} TB/s of data",
            ndata - 1
        );
        let rec = req(op::RECOV_2DATA, Raid6Params::recov_2data(2, 9), disks);
        let tbs = time(&dev, &area, &rec, ndata * unit, 10);
        println!("recov_2data {disks} disks x 64 MiB: {tbs:.3} TB/s of data");
        let recp = req(op::RECOV_DATAP, Raid6Params::recov_datap(5), disks);
        let tbs = time(&dev, &area, &recp, ndata * unit, 10);
        println!("recov_datap {disks} disks x 64 MiB: {tbs:.3} TB/s of data");
    }
}
