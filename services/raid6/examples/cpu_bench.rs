//! Throughput of the CPU algorithms: `cargo run --release -p kgpu-raid6 --example cpu_bench`.
//!
//! Reports data bytes (the data disks, not P/Q) processed per second.

use kgpu_raid6::cpu::{execute_with, Algo, Raid6Request};
use kgpu_raid6::proto::{op, Raid6Params};
use std::time::{Duration, Instant};

fn fill(buf: &mut [u8], mut seed: u64) {
    for b in buf.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *b = seed as u8;
    }
}

/// Runs `f` repeatedly for about `budget` and returns calls per second.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..8 {
            f();
        }
        n += 8;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let budget = Duration::from_millis(400);
    let disks = 16u32;
    let ndata = disks as usize - 2;
    println!("gen_syndrome / recov_2data, {disks} disks ({ndata} data + P + Q), data GB/s");
    for unit in [4096usize, 1 << 20] {
        let mut all = vec![0u8; disks as usize * unit];
        fill(&mut all, 0x1234_5678);
        let data = &all[..ndata * unit];
        let mut out = vec![0u8; 2 * unit];
        for algo in Algo::ALL.into_iter().filter(|a| a.is_available()) {
            let params = Raid6Params::NONE.to_bytes();
            let gen = Raid6Request {
                op: op::GEN_SYNDROME,
                disks,
                unit: unit as u32,
                params: &params,
            };
            let r = rate(budget, || {
                execute_with(algo, &gen, data, &mut out).unwrap();
            });
            let gen_gbs = r * (ndata * unit) as f64 / 1e9;
            let params = Raid6Params::recov_2data(3, 9).to_bytes();
            let rec = Raid6Request {
                op: op::RECOV_2DATA,
                disks,
                unit: unit as u32,
                params: &params,
            };
            let r = rate(budget, || {
                execute_with(algo, &rec, &all, &mut out).unwrap();
            });
            let rec_gbs = r * (ndata * unit) as f64 / 1e9;
            println!(
                "  unit {:>7} B  {:<9} gen_syndrome {:7.2} GB/s   recov_2data {:7.2} GB/s",
                unit,
                algo.name(),
                gen_gbs,
                rec_gbs
            );
        }
    }
}
