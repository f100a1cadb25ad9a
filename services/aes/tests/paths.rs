//! The code paths against each other: VAES (AVX-512), AES-NI and portable,
//! each forced explicitly, on random keys, IVs and data of many lengths, every
//! mode and key size, XTS ciphertext stealing, CTR counters that carry across
//! 64 and 128 bits, and buffers at every alignment. The portable path (the
//! `aes` crate with the mode code of `cpu.rs`) is the reference; it is itself
//! checked against OpenSSL and the RustCrypto mode crates in `crosscheck.rs`
//! and against the standards' vectors in `kat.rs` (which run on every path
//! too). A path the processor lacks is reported and skipped.

use kgpu_aes::cpu::{AesKey, Path, XtsKey};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

fn random(r: &mut StdRng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    r.fill_bytes(&mut v);
    v
}

/// The fast paths present here; prints the ones that are not.
fn fast_paths() -> Vec<Path> {
    let mut v = Vec::new();
    for p in [Path::Vaes, Path::AesNi] {
        if p.available() {
            v.push(p);
        } else {
            eprintln!("path {p} not available on this CPU: not tested here");
        }
    }
    v
}

/// Lengths in blocks around every batch boundary of the paths (1, 4, 8, 16
/// blocks per step), sector sizes, and random ones.
fn block_counts(r: &mut StdRng) -> Vec<usize> {
    let mut v: Vec<usize> = (0..=40).collect();
    v.extend([
        47, 48, 49, 63, 64, 65, 127, 128, 129, 255, 256, 257, 512, 1024,
    ]);
    v.extend((0..20).map(|_| r.gen_range(1..2000)));
    v
}

#[derive(Clone, Copy, Debug)]
enum Op {
    EcbEnc,
    EcbDec,
    CbcEnc,
    CbcDec,
    Ctr,
}

fn apply(k: &AesKey, op: Op, iv: &[u8; 16], d: &mut [u8]) {
    match op {
        Op::EcbEnc => k.ecb_encrypt(d).unwrap(),
        Op::EcbDec => k.ecb_decrypt(d).unwrap(),
        Op::CbcEnc => k.cbc_encrypt(iv, d).unwrap(),
        Op::CbcDec => k.cbc_decrypt(iv, d).unwrap(),
        Op::Ctr => k.ctr_apply(iv, d),
    }
}

/// Runs `op` on a copy of `input` placed at byte offset `misalign` of a
/// larger buffer, and checks the bytes around it are untouched.
fn run_at(k: &AesKey, op: Op, iv: &[u8; 16], input: &[u8], misalign: usize) -> Vec<u8> {
    let mut buf = vec![0xa5u8; input.len() + 128];
    buf[misalign..misalign + input.len()].copy_from_slice(input);
    apply(k, op, iv, &mut buf[misalign..misalign + input.len()]);
    assert!(buf[..misalign].iter().all(|&b| b == 0xa5), "wrote before");
    assert!(
        buf[misalign + input.len()..].iter().all(|&b| b == 0xa5),
        "wrote after"
    );
    buf[misalign..misalign + input.len()].to_vec()
}

#[test]
fn block_modes_agree_across_paths() {
    let paths = fast_paths();
    let mut r = StdRng::seed_from_u64(0x5eed_0017);
    let mut cases = 0;
    for klen in [16, 24, 32] {
        for n in block_counts(&mut r) {
            let key = random(&mut r, klen);
            let iv: [u8; 16] = random(&mut r, 16).try_into().unwrap();
            let input = random(&mut r, 16 * n);
            let reference = AesKey::with_path(&key, Path::Portable).unwrap();
            for op in [Op::EcbEnc, Op::EcbDec, Op::CbcEnc, Op::CbcDec, Op::Ctr] {
                let want = run_at(&reference, op, &iv, &input, 0);
                for &p in &paths {
                    let k = AesKey::with_path(&key, p).unwrap();
                    assert_eq!(k.path(), p);
                    let misalign = r.gen_range(0..64);
                    let got = run_at(&k, op, &iv, &input, misalign);
                    assert_eq!(got, want, "{p} {op:?} key {klen} blocks {n} at +{misalign}");
                    cases += 1;
                }
            }
        }
    }
    eprintln!("{cases} block-mode cases compared");
}

#[test]
fn ctr_any_length_and_counter_carries() {
    let paths = fast_paths();
    let mut r = StdRng::seed_from_u64(0x0c7a);
    // Counters whose low 64 bits, or all 128, overflow inside the request.
    let starts: Vec<u128> = vec![
        0,
        u64::MAX as u128 - 3,
        u64::MAX as u128 - 15,
        u64::MAX as u128 - 16,
        (7u128 << 64) | (u64::MAX as u128 - 40),
        u128::MAX - 5,
        u128::MAX - 20,
        u128::MAX,
    ];
    for klen in [16, 24, 32] {
        for &start in &starts {
            for len in (0..700).step_by(7).chain([4095, 4096, 4097, 65537]) {
                let key = random(&mut r, klen);
                let iv = start.to_be_bytes();
                let input = random(&mut r, len);
                let want = run_at(
                    &AesKey::with_path(&key, Path::Portable).unwrap(),
                    Op::Ctr,
                    &iv,
                    &input,
                    0,
                );
                for &p in &paths {
                    let k = AesKey::with_path(&key, p).unwrap();
                    let got = run_at(&k, Op::Ctr, &iv, &input, r.gen_range(0..64));
                    assert_eq!(got, want, "{p} key {klen} len {len} counter {start:#x}");
                }
            }
        }
    }
}

#[test]
fn xts_agrees_across_paths_with_stealing() {
    let paths = fast_paths();
    let mut r = StdRng::seed_from_u64(0x1619);
    let mut lens: Vec<usize> = (16..=600).collect();
    lens.extend([1023, 1024, 1025, 4095, 4096, 4097, 4111, 8192 + 200]);
    lens.extend((0..30).map(|_| r.gen_range(16..20000)));
    let mut cases = 0;
    for klen in [32, 48, 64] {
        for &len in &lens {
            let key = random(&mut r, klen);
            let iv: [u8; 16] = random(&mut r, 16).try_into().unwrap();
            let input = random(&mut r, len);
            let reference = XtsKey::with_path(&key, Path::Portable).unwrap();
            let mut enc = input.clone();
            reference.unit(&iv, &mut enc, false).unwrap();
            let mut dec = input.clone();
            reference.unit(&iv, &mut dec, true).unwrap();
            for &p in &paths {
                let k = XtsKey::with_path(&key, p).unwrap();
                let misalign = r.gen_range(0..64);
                let mut buf = vec![0u8; len + 64];
                let d = &mut buf[misalign..misalign + len];
                d.copy_from_slice(&input);
                k.unit(&iv, d, false).unwrap();
                assert_eq!(
                    d,
                    &enc[..],
                    "{p} xts enc key {klen} len {len} at +{misalign}"
                );
                k.unit(&iv, d, true).unwrap();
                assert_eq!(d, &input[..], "{p} xts round trip key {klen} len {len}");
                d.copy_from_slice(&input);
                k.unit(&iv, d, true).unwrap();
                assert_eq!(d, &dec[..], "{p} xts dec key {klen} len {len}");
                cases += 1;
            }
        }
    }
    eprintln!("{cases} XTS cases compared");
}

#[test]
fn forced_path_reports_itself_or_is_refused() {
    for p in Path::ALL {
        match AesKey::with_path(&[7; 16], p) {
            Ok(k) => {
                assert!(p.available());
                assert_eq!(k.path(), p);
            }
            Err(e) => {
                assert!(!p.available());
                assert_eq!(e, kgpu_aes::AesError::Unsupported);
            }
        }
    }
    assert_eq!(
        AesKey::with_path(&[7; 17], Path::Portable).unwrap_err(),
        kgpu_aes::AesError::BadKey
    );
}

/// Whole requests (every operation, many units, plain64 and listed IVs)
/// through the request API on each path, against the portable path: covers
/// CBC encryption's side-by-side units (8 at a time, then the rest) and XTS
/// units with ciphertext stealing.
#[test]
fn requests_agree_across_paths() {
    use kgpu_aes::cpu::{AesCpu, AesRequest};
    use kgpu_aes::proto::{op, AesParams, IV_LIST, IV_PLAIN64};
    let paths = fast_paths();
    let reference = AesCpu::with_path(Path::Portable).unwrap();
    let others: Vec<AesCpu> = paths
        .iter()
        .map(|&p| AesCpu::with_path(p).unwrap())
        .collect();
    let mut r = StdRng::seed_from_u64(0xca11);
    let mut cases = 0;
    for o in op::ALL {
        let xts = matches!(o, op::XTS_ENC | op::XTS_DEC);
        let units: &[u32] = if xts {
            &[16, 17, 31, 512, 520, 4096]
        } else {
            &[16, 48, 512, 4096]
        };
        for &unit in units {
            for n in [1usize, 2, 7, 8, 9, 15, 16, 17, 25] {
                let klen = if xts {
                    [32, 64][r.gen_range(0..2)]
                } else {
                    [16, 24, 32][r.gen_range(0..3)]
                };
                let key = random(&mut r, klen);
                let list = r.gen_bool(0.5);
                let (params, aux) = if list {
                    (
                        AesParams {
                            iv_mode: IV_LIST,
                            iv: [0; 16],
                            start_sector: 0,
                        },
                        random(&mut r, 16 * n),
                    )
                } else {
                    (
                        AesParams {
                            iv_mode: IV_PLAIN64,
                            iv: [0; 16],
                            start_sector: r.gen(),
                        },
                        Vec::new(),
                    )
                };
                let ecb = matches!(o, op::ECB_ENC | op::ECB_DEC);
                let (params, aux) = if ecb {
                    (AesParams::none(), Vec::new())
                } else {
                    (params, aux)
                };
                let input = random(&mut r, unit as usize * n);
                let req = AesRequest {
                    op: o,
                    unit: if ecb { 0 } else { unit },
                    params: params.to_bytes(),
                    key_tag: 0,
                    key: &key,
                    aux: &aux,
                };
                let mut want = input.clone();
                assert_eq!(reference.execute(&req, &mut want), Ok(want.len() as u64));
                for cpu in &others {
                    let mut got = input.clone();
                    assert_eq!(cpu.execute(&req, &mut got), Ok(got.len() as u64));
                    assert_eq!(
                        got,
                        want,
                        "{} op {o} unit {unit} x {n} key {klen} list {list}",
                        cpu.path()
                    );
                    cases += 1;
                }
            }
        }
    }
    eprintln!("{cases} requests compared");
}
