//! CPU backend against an independent reference, known values, and the
//! recovery and xor_syndrome identities.

mod common;

use common::*;
use kgpu_common::abi::Status;
use kgpu_raid6::cpu::{self, execute_with, Algo, Raid6Cpu, Raid6Error, Raid6Request};
use kgpu_raid6::gf::{GFEXI, GFEXP, GFINV, GFLOG, GFMUL};
use kgpu_raid6::proto::{op, ProtoError, Raid6Params};

fn algos() -> Vec<Algo> {
    let v: Vec<Algo> = Algo::ALL.into_iter().filter(|a| a.is_available()).collect();
    eprintln!(
        "testing algorithms: {:?}",
        v.iter().map(|a| a.name()).collect::<Vec<_>>()
    );
    v
}

fn random_data(rng: &mut Rng, ndata: usize, len: usize) -> Vec<Vec<u8>> {
    (0..ndata).map(|_| rng.bytes(len)).collect()
}

/// gen_syndrome through the pointer API: returns (P, Q).
fn gen_ptr(algo: Algo, data: &[Vec<u8>], len: usize) -> (Vec<u8>, Vec<u8>) {
    let mut blocks: Vec<Vec<u8>> = data.to_vec();
    blocks.push(vec![0xa5; len]);
    blocks.push(vec![0x5a; len]);
    let disks = blocks.len();
    algo.gen_syndrome(disks, len, &mut views(&mut blocks))
        .unwrap();
    let q = blocks.pop().unwrap();
    let p = blocks.pop().unwrap();
    assert_eq!(&blocks, data, "gen_syndrome modified a data block");
    (p, q)
}

/// gen_syndrome through the request API: returns P||Q.
fn gen_req(algo: Algo, data: &[Vec<u8>], unit: usize) -> Vec<u8> {
    let params = Raid6Params::NONE.to_bytes();
    let req = Raid6Request {
        op: op::GEN_SYNDROME,
        disks: data.len() as u32 + 2,
        unit: unit as u32,
        params: &params,
    };
    let mut out = vec![0xcc; 2 * unit];
    let n = execute_with(algo, &req, &concat(data), &mut out).unwrap();
    assert_eq!(n, 2 * unit as u64);
    out
}

#[test]
fn gf_tables_match_lib_raid6() {
    assert_eq!(GFEXP[0], 1);
    assert_eq!(GFEXP[1], 2);
    assert_eq!(GFEXP[8], 0x1d);
    assert_eq!(GFEXP[254], 0x8e);
    assert_eq!(GFEXP[255], 0, "mktables.c stores 0 in the bogus entry 255");
    assert_eq!(GFMUL[2][0x80], 0x1d);
    assert_eq!(GFMUL[0x80][2], 0x1d);
    assert_eq!(GFLOG[1], 0);
    assert_eq!(GFLOG[2], 1);
    assert_eq!(GFLOG[0x1d], 8);
    assert_eq!(GFLOG[0], 255);
    assert_eq!(GFINV[0], 0);
    assert_eq!(GFINV[1], 1);
    assert_eq!(GFINV[2], 0x8e);
    assert_eq!(GFEXI[0], 0, "inv(g^0 + 1) = inv(0) = 0");
    for a in 0..=255u8 {
        for b in 0..=255u8 {
            assert_eq!(
                GFMUL[a as usize][b as usize],
                ref_mul(a, b),
                "gfmul[{a}][{b}]"
            );
        }
    }
    for i in 0..255 {
        assert_eq!(GFEXP[i], ref_gpow(i), "gfexp[{i}]");
        assert_eq!(GFLOG[GFEXP[i] as usize] as usize, i, "gflog[gfexp[{i}]]");
    }
    for x in 1..=255u8 {
        assert_eq!(ref_mul(x, GFINV[x as usize]), 1, "gfinv[{x}]");
    }
    for i in 1..255 {
        assert_eq!(ref_mul(GFEXI[i], GFEXP[i] ^ 1), 1, "gfexi[{i}]");
    }
}

#[test]
fn known_vectors() {
    for algo in algos() {
        for ndata in [2usize, 3, 8, 14, 30] {
            // Every data byte 0x01: P = parity of the disk count, Q = ⊕ g^i.
            // Long enough for the widest main loop (256 bytes) plus word and byte tails.
            let len = 1024 + 64 + 8 + 3;
            let data = vec![vec![1u8; len]; ndata];
            let (p, q) = gen_ptr(algo, &data, len);
            let want_q = (0..ndata).fold(0u8, |acc, i| acc ^ GFEXP[i]);
            assert!(p.iter().all(|&b| b == (ndata & 1) as u8), "{algo:?} P");
            assert!(q.iter().all(|&b| b == want_q), "{algo:?} Q {want_q:#x}");
            // A single disk i holding 0x01: Q = g^i.
            for i in 0..ndata {
                let mut data = vec![vec![0u8; len]; ndata];
                data[i].fill(1);
                let (p, q) = gen_ptr(algo, &data, len);
                assert!(p.iter().all(|&b| b == 1));
                assert!(q.iter().all(|&b| b == GFEXP[i]), "{algo:?} disk {i}");
            }
        }
        // Two data disks, hand-computed: D0 = 0x80, D1 = 0x80: P = 0, Q = 0x80 ^ 0x1d.
        let data = vec![vec![0x80u8; 640], vec![0x80u8; 640]];
        let (p, q) = gen_ptr(algo, &data, 640);
        assert!(p.iter().all(|&b| b == 0));
        assert!(q.iter().all(|&b| b == 0x9d));
    }
}

#[test]
fn gen_syndrome_matches_reference() {
    let mut rng = Rng::new(1);
    let algos = algos();
    let mut cases: Vec<(usize, usize)> = Vec::new();
    for disks in 4..=32 {
        cases.push((disks, 64));
        cases.push((disks, 64 * (1 + rng.below(64) as usize)));
    }
    for disks in [33, 64, 100, 255, 256] {
        cases.push((disks, 64 * (1 + rng.below(8) as usize)));
    }
    cases.push((6, 65536));
    cases.push((16, 64 * (1 + rng.below(1024) as usize)));
    for (disks, unit) in cases {
        let data = random_data(&mut rng, disks - 2, unit);
        let (rp, rq) = ref_pq(&data, unit);
        for &algo in &algos {
            let (p, q) = gen_ptr(algo, &data, unit);
            assert!(p == rp && q == rq, "{algo:?} disks {disks} unit {unit}");
            let pq = gen_req(algo, &data, unit);
            assert!(
                pq[..unit] == rp[..] && pq[unit..] == rq[..],
                "request {algo:?} disks {disks}"
            );
        }
        let mut out = vec![0; 2 * unit];
        let params = Raid6Params::NONE.to_bytes();
        let req = Raid6Request {
            op: op::GEN_SYNDROME,
            disks: disks as u32,
            unit: unit as u32,
            params: &params,
        };
        Raid6Cpu.execute(&req, &concat(&data), &mut out).unwrap();
        assert!(
            out[..unit] == rp[..] && out[unit..] == rq[..],
            "Raid6Cpu disks {disks}"
        );
    }
}

#[test]
fn pointer_api_handles_any_length() {
    // The pointer API is not limited to multiples of 64: check the word and
    // byte tails of every algorithm.
    let mut rng = Rng::new(2);
    for algo in algos() {
        for len in [0usize, 1, 7, 8, 9, 63, 65, 200, 257, 1000, 4095] {
            let data = random_data(&mut rng, 7, len);
            let (rp, rq) = ref_pq(&data, len);
            let (p, q) = gen_ptr(algo, &data, len);
            assert!(p == rp && q == rq, "{algo:?} len {len}");
        }
        // Blocks longer than `bytes`: only the first `bytes` are touched.
        let data = random_data(&mut rng, 5, 300);
        let mut blocks = data.clone();
        blocks.push(vec![0xee; 300]);
        blocks.push(vec![0xee; 300]);
        algo.gen_syndrome(7, 256, &mut views(&mut blocks)).unwrap();
        let (rp, rq) = ref_pq(&data, 256);
        assert_eq!(blocks[5][..256], rp[..]);
        assert_eq!(blocks[6][..256], rq[..]);
        assert!(blocks[5][256..]
            .iter()
            .chain(&blocks[6][256..])
            .all(|&b| b == 0xee));
    }
    // The free functions use the best algorithm.
    let data = random_data(&mut rng, 4, 128);
    let mut blocks = data.clone();
    blocks.extend([vec![0; 128], vec![0; 128]]);
    cpu::gen_syndrome(6, 128, &mut views(&mut blocks)).unwrap();
    let (rp, rq) = ref_pq(&data, 128);
    assert_eq!((blocks[4].clone(), blocks[5].clone()), (rp, rq));
}

#[test]
fn xor_syndrome_equals_regeneration() {
    let mut rng = Rng::new(3);
    let algos = algos();
    for disks in [4usize, 5, 8, 13, 20, 34] {
        let n = disks - 2;
        let unit = 512;
        for start in 0..n {
            for stop in start..n {
                let old = random_data(&mut rng, n, unit);
                let (p0, q0) = ref_pq(&old, unit);
                let mut new = old.clone();
                for d in &mut new[start..=stop] {
                    rng.fill(d);
                }
                let (rp, rq) = ref_pq(&new, unit);
                let delta: Vec<Vec<u8>> = (start..=stop)
                    .map(|i| old[i].iter().zip(&new[i]).map(|(a, b)| a ^ b).collect())
                    .collect();
                for &algo in &algos {
                    // Kernel convention: all disks present, start..=stop hold the deltas.
                    let mut blocks: Vec<Vec<u8>> = (0..n)
                        .map(|i| {
                            if (start..=stop).contains(&i) {
                                delta[i - start].clone()
                            } else {
                                vec![0x77; unit] // never read
                            }
                        })
                        .collect();
                    blocks.push(p0.clone());
                    blocks.push(q0.clone());
                    algo.xor_syndrome(disks, start, stop, unit, &mut views(&mut blocks))
                        .unwrap();
                    assert!(
                        blocks[n] == rp && blocks[n + 1] == rq,
                        "{algo:?} disks {disks} {start}..={stop}"
                    );
                    // Request API.
                    let params = Raid6Params::xor(start as u32, stop as u32).to_bytes();
                    let req = Raid6Request {
                        op: op::XOR_SYNDROME,
                        disks: disks as u32,
                        unit: unit as u32,
                        params: &params,
                    };
                    let mut out = concat(&[p0.clone(), q0.clone()]);
                    execute_with(algo, &req, &concat(&delta), &mut out).unwrap();
                    assert!(
                        out[..unit] == rp[..] && out[unit..] == rq[..],
                        "request {algo:?} disks {disks} {start}..={stop}"
                    );
                }
            }
        }
    }
    // Large start (multiplication by g^start through a constant) and odd lengths.
    for &algo in &algos {
        let disks = 256;
        let n = disks - 2;
        let len = 512 + 128 + 64 + 8 + 5;
        for (start, stop) in [(9, 9), (200, 253), (0, 253), (100, 180), (253, 253)] {
            let old = random_data(&mut rng, n, len);
            let (p0, q0) = ref_pq(&old, len);
            let mut new = old.clone();
            let mut blocks = vec![vec![0u8; len]; disks];
            for i in start..=stop {
                rng.fill(&mut new[i]);
                blocks[i] = old[i].iter().zip(&new[i]).map(|(a, b)| a ^ b).collect();
            }
            blocks[n] = p0;
            blocks[n + 1] = q0;
            algo.xor_syndrome(disks, start, stop, len, &mut views(&mut blocks))
                .unwrap();
            let (rp, rq) = ref_pq(&new, len);
            assert!(
                blocks[n] == rp && blocks[n + 1] == rq,
                "{algo:?} {start}..={stop}"
            );
        }
    }
}

#[test]
fn recover_every_pair_of_data_disks() {
    let mut rng = Rng::new(4);
    let algos = algos();
    for disks in 4..=32usize {
        let n = disks - 2;
        let unit = 320;
        let data = random_data(&mut rng, n, unit);
        let (p, q) = ref_pq(&data, unit);
        let mut all = data.clone();
        all.push(p.clone());
        all.push(q.clone());
        for a in 0..n {
            for b in a + 1..n {
                for &algo in &algos {
                    // Request API: the failed blocks hold garbage.
                    let mut input = all.clone();
                    input[a].fill(0xde);
                    input[b].fill(0xad);
                    let params = Raid6Params::recov_2data(a as u32, b as u32).to_bytes();
                    let req = Raid6Request {
                        op: op::RECOV_2DATA,
                        disks: disks as u32,
                        unit: unit as u32,
                        params: &params,
                    };
                    let mut out = vec![0x33; 2 * unit];
                    execute_with(algo, &req, &concat(&input), &mut out).unwrap();
                    assert!(
                        out[..unit] == data[a][..] && out[unit..] == data[b][..],
                        "{algo:?} disks {disks} fail {a},{b}"
                    );
                    // Pointer API with an odd length (tails).
                    let len = 256 + 32 + 8 + 5;
                    let mut blocks: Vec<Vec<u8>> = all.iter().map(|b| b[..len].to_vec()).collect();
                    blocks[a].fill(0x11);
                    blocks[b].fill(0x22);
                    algo.recov_2data(disks, len, a, b, &mut views(&mut blocks))
                        .unwrap();
                    for (i, blk) in blocks.iter().enumerate() {
                        assert_eq!(
                            blk[..],
                            all[i][..len],
                            "{algo:?} ptr disks {disks} fail {a},{b} blk {i}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn recover_every_data_disk_with_p() {
    let mut rng = Rng::new(5);
    let algos = algos();
    let mut counts: Vec<usize> = (4..=32).collect();
    counts.extend([64, 256]);
    for disks in counts {
        let n = disks - 2;
        let unit = 512;
        let data = random_data(&mut rng, n, unit);
        let (p, q) = ref_pq(&data, unit);
        let mut all = data.clone();
        all.push(p.clone());
        all.push(q.clone());
        for a in 0..n {
            for &algo in &algos {
                let mut input = all.clone();
                input[a].fill(0x99);
                input[n].fill(0x98);
                let params = Raid6Params::recov_datap(a as u32).to_bytes();
                let req = Raid6Request {
                    op: op::RECOV_DATAP,
                    disks: disks as u32,
                    unit: unit as u32,
                    params: &params,
                };
                let mut out = vec![0x44; 2 * unit];
                execute_with(algo, &req, &concat(&input), &mut out).unwrap();
                assert!(
                    out[..unit] == data[a][..] && out[unit..] == p[..],
                    "{algo:?} disks {disks} fail {a}"
                );
                let len = 256 + 128 + 32 + 8 + 1;
                let mut blocks: Vec<Vec<u8>> = all.iter().map(|b| b[..len].to_vec()).collect();
                blocks[a].fill(0x55);
                blocks[n].fill(0x66);
                algo.recov_datap(disks, len, a, &mut views(&mut blocks))
                    .unwrap();
                for (i, blk) in blocks.iter().enumerate() {
                    assert_eq!(
                        blk[..],
                        all[i][..len],
                        "{algo:?} ptr disks {disks} fail {a} blk {i}"
                    );
                }
            }
        }
    }
}

#[test]
fn execute_rejects_bad_requests() {
    let cpu = Raid6Cpu;
    let zero = [0u8; 32];
    let run = |op: u16, disks: u32, unit: u32, params: &[u8; 32], inp: usize, out: usize| {
        let req = Raid6Request {
            op,
            disks,
            unit,
            params,
        };
        let input = vec![0u8; inp];
        let mut output = vec![0u8; out];
        cpu.execute(&req, &input, &mut output)
    };
    let status = |r: Result<u64, Raid6Error>| r.unwrap_err().status();
    assert_eq!(status(run(0, 6, 64, &zero, 256, 128)), Status::UnknownOp);
    assert_eq!(status(run(5, 6, 64, &zero, 256, 128)), Status::UnknownOp);
    assert_eq!(
        status(run(op::GEN_SYNDROME, 3, 64, &zero, 64, 128)),
        Status::BadParams
    );
    assert_eq!(
        status(run(op::GEN_SYNDROME, 257, 64, &zero, 255 * 64, 128)),
        Status::BadParams
    );
    assert_eq!(
        status(run(op::GEN_SYNDROME, 6, 0, &zero, 0, 0)),
        Status::BadLength
    );
    assert_eq!(
        status(run(op::GEN_SYNDROME, 6, 96, &zero, 384, 192)),
        Status::BadLength
    );
    assert_eq!(
        status(run(op::GEN_SYNDROME, 6, 64, &zero, 255, 128)),
        Status::BadLength
    );
    assert_eq!(
        status(run(op::GEN_SYNDROME, 6, 64, &zero, 256, 127)),
        Status::BadLength
    );
    assert_eq!(run(op::GEN_SYNDROME, 6, 64, &zero, 256, 128), Ok(128));
    let mut reserved = zero;
    reserved[31] = 1;
    assert_eq!(
        status(run(op::GEN_SYNDROME, 6, 64, &reserved, 256, 128)),
        Status::BadParams
    );
    let x = |a, b| Raid6Params::xor(a, b).to_bytes();
    assert_eq!(
        status(run(op::XOR_SYNDROME, 6, 64, &x(2, 1), 64, 128)),
        Status::BadParams
    );
    assert_eq!(
        status(run(op::XOR_SYNDROME, 6, 64, &x(0, 4), 320, 128)),
        Status::BadParams
    );
    assert_eq!(
        status(run(op::XOR_SYNDROME, 6, 64, &x(1, 2), 64, 128)),
        Status::BadLength
    );
    assert_eq!(run(op::XOR_SYNDROME, 6, 64, &x(1, 2), 128, 128), Ok(128));
    let r2 = |a, b| Raid6Params::recov_2data(a, b).to_bytes();
    assert_eq!(
        status(run(op::RECOV_2DATA, 6, 64, &r2(1, 1), 384, 128)),
        Status::BadParams
    );
    assert_eq!(
        status(run(op::RECOV_2DATA, 6, 64, &r2(2, 1), 384, 128)),
        Status::BadParams
    );
    assert_eq!(
        status(run(op::RECOV_2DATA, 6, 64, &r2(0, 4), 384, 128)),
        Status::BadParams
    );
    assert_eq!(
        status(run(op::RECOV_2DATA, 6, 64, &r2(0, 3), 256, 128)),
        Status::BadLength
    );
    assert_eq!(run(op::RECOV_2DATA, 6, 64, &r2(0, 3), 384, 128), Ok(128));
    let rp = |a| Raid6Params::recov_datap(a).to_bytes();
    assert_eq!(
        status(run(op::RECOV_DATAP, 6, 64, &rp(4), 384, 128)),
        Status::BadParams
    );
    assert_eq!(
        status(run(op::RECOV_DATAP, 6, 64, &r2(1, 2), 384, 128)),
        Status::BadParams
    );
    assert_eq!(
        status(run(op::RECOV_DATAP, 6, 64, &rp(3), 384, 192)),
        Status::BadLength
    );
    assert_eq!(run(op::RECOV_DATAP, 6, 64, &rp(3), 384, 128), Ok(128));
}

#[test]
fn pointer_api_rejects_bad_arguments() {
    for algo in algos() {
        let mut blocks = vec![vec![0u8; 64]; 6];
        let e = algo
            .gen_syndrome(6, 65, &mut views(&mut blocks))
            .unwrap_err();
        assert_eq!(e, Raid6Error::BadBlocks);
        let e = algo
            .gen_syndrome(7, 64, &mut views(&mut blocks))
            .unwrap_err();
        assert_eq!(e, Raid6Error::BadBlocks);
        let mut three = vec![vec![0u8; 64]; 3];
        let e = algo
            .gen_syndrome(3, 64, &mut views(&mut three))
            .unwrap_err();
        assert_eq!(e, Raid6Error::Proto(ProtoError::BadDisks));
        assert_eq!(e.status(), Status::BadParams);
        let e = algo
            .xor_syndrome(6, 3, 2, 64, &mut views(&mut blocks))
            .unwrap_err();
        assert_eq!(e, Raid6Error::Proto(ProtoError::BadRange));
        let e = algo
            .xor_syndrome(6, 0, 4, 64, &mut views(&mut blocks))
            .unwrap_err();
        assert_eq!(e, Raid6Error::Proto(ProtoError::BadRange));
        for (a, b) in [(1, 1), (2, 1), (0, 4), (4, 5)] {
            let e = algo
                .recov_2data(6, 64, a, b, &mut views(&mut blocks))
                .unwrap_err();
            assert_eq!(e, Raid6Error::Proto(ProtoError::BadFailIndex), "{a},{b}");
        }
        let e = algo
            .recov_datap(6, 64, 4, &mut views(&mut blocks))
            .unwrap_err();
        assert_eq!(e, Raid6Error::Proto(ProtoError::BadFailIndex));
        assert!(
            blocks.iter().all(|b| b.iter().all(|&x| x == 0)),
            "refused calls wrote nothing"
        );
    }
}
