//! Known-answer tests from FIPS-197, NIST SP 800-38A and IEEE 1619-2007,
//! run through the request API ([`AesCpu::execute`]) and the mode functions.

use kgpu_aes::cpu::{self, AesCpu, AesRequest, Path};
use kgpu_aes::proto::{op, AesParams};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(s.len().is_multiple_of(2), "odd hex string");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn iv16(s: &str) -> [u8; 16] {
    hex(s).try_into().unwrap()
}

/// The backends of every code path this processor has (VAES, AES-NI,
/// portable), the default one first.
fn backends() -> Vec<AesCpu> {
    let mut v = vec![AesCpu::new()];
    v.extend(Path::ALL.into_iter().filter_map(AesCpu::with_path));
    v
}

/// Runs the request on every path; all must agree (the caller checks the
/// answer itself), and `data` is left with it.
fn exec(op: u16, key: &[u8], params: AesParams, unit: u32, data: &mut [u8]) {
    let input = data.to_vec();
    let mut first: Option<(Path, Vec<u8>)> = None;
    for cpu in backends() {
        let req = AesRequest {
            op,
            unit,
            params: params.to_bytes(),
            key_tag: 0,
            key,
            aux: &[],
        };
        let mut d = input.clone();
        assert_eq!(cpu.execute(&req, &mut d), Ok(d.len() as u64));
        match &first {
            None => first = Some((cpu.path(), d)),
            Some((p, f)) => assert_eq!(&d, f, "{} differs from {p}", cpu.path()),
        }
    }
    data.copy_from_slice(&first.expect("at least one path").1);
}

const K128: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const K192: &str = "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b";
const K256: &str = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";
const PT: &str = "6bc1bee22e409f96e93d7e117393172a
                  ae2d8a571e03ac9c9eb76fac45af8e51
                  30c81c46a35ce411e5fbc1191a0a52ef
                  f69f2445df4f9b17ad2b417be66c3710";

#[test]
fn fips197_appendix_c() {
    let pt = hex("00112233445566778899aabbccddeeff");
    let cases = [
        (
            "000102030405060708090a0b0c0d0e0f",
            "69c4e0d86a7b0430d8cdb78070b4c55a",
        ),
        (
            "000102030405060708090a0b0c0d0e0f1011121314151617",
            "dda97ca4864cdfe06eaf70a0ec0d7191",
        ),
        (
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "8ea2b7ca516745bfeafc49904b496089",
        ),
    ];
    for (k, c) in cases {
        let key = hex(k);
        let mut d = pt.clone();
        exec(op::ECB_ENC, &key, AesParams::none(), 0, &mut d);
        assert_eq!(d, hex(c), "key {k}");
        exec(op::ECB_DEC, &key, AesParams::none(), 0, &mut d);
        assert_eq!(d, pt);
    }
}

#[test]
fn sp800_38a_ecb() {
    let cases = [
        (
            K128,
            "3ad77bb40d7a3660a89ecaf32466ef97 f5d3d58503b9699de785895a96fdbaaf
             43b1cd7f598ece23881b00e3ed030688 7b0c785e27e8ad3f8223207104725dd4",
        ),
        (
            K192,
            "bd334f1d6e45f25ff712a214571fa5cc 974104846d0ad3ad7734ecb3ecee4eef
             ef7afd2270e2e60adce0ba2face6444e 9a4b41ba738d6c72fb16691603c18e0e",
        ),
        (
            K256,
            "f3eed1bdb5d2a03c064b5a7e3db181f8 591ccb10d410ed26dc5ba74a31362870
             b6ed21b99ca6f4f9f153e7b1beafed1d 23304b7a39f9f3ff067d8d8f9e24ecc7",
        ),
    ];
    for (k, c) in cases {
        let key = hex(k);
        let mut d = hex(PT);
        exec(op::ECB_ENC, &key, AesParams::none(), 0, &mut d);
        assert_eq!(d, hex(c));
        exec(op::ECB_DEC, &key, AesParams::none(), 16, &mut d);
        assert_eq!(d, hex(PT));
        let mut d = hex(PT);
        cpu::ecb_encrypt(&key, &mut d).unwrap();
        assert_eq!(d, hex(c));
    }
}

#[test]
fn sp800_38a_cbc() {
    let iv = iv16("000102030405060708090a0b0c0d0e0f");
    let cases = [
        (
            K128,
            "7649abac8119b246cee98e9b12e9197d 5086cb9b507219ee95db113a917678b2
             73bed6b8e3c1743b7116e69e22229516 3ff1caa1681fac09120eca307586e1a7",
        ),
        (
            K192,
            "4f021db243bc633d7178183a9fa071e8 b4d9ada9ad7dedf4e5e738763f69145a
             571b242012fb7ae07fa9baac3df102e0 08b0e27988598881d920a9e64f5615cd",
        ),
        (
            K256,
            "f58c4c04d6e5f1ba779eabfb5f7bfbd6 9cfc4e967edb808d679f777bc6702c7d
             39f23369a9d9bacfa530e26304231461 b2eb05e2c39be9fcda6c19078c6a9d1b",
        ),
    ];
    for (k, c) in cases {
        let key = hex(k);
        let mut d = hex(PT);
        exec(op::CBC_ENC, &key, AesParams::single(iv), 0, &mut d);
        assert_eq!(d, hex(c));
        exec(op::CBC_DEC, &key, AesParams::single(iv), 64, &mut d);
        assert_eq!(d, hex(PT));
    }
}

#[test]
fn sp800_38a_ctr() {
    let iv = iv16("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
    let cases = [
        (
            K128,
            "874d6191b620e3261bef6864990db6ce 9806f66b7970fdff8617187bb9fffdff
             5ae4df3edbd5d35e5b4f09020db03eab 1e031dda2fbe03d1792170a0f3009cee",
        ),
        (
            K192,
            "1abc932417521ca24f2b0459fe7e6e0b 090339ec0aa6faefd5ccc2c6f4ce8e94
             1e36b26bd1ebc670d1bd1d665620abf7 4f78a7f6d29809585a97daec58c6b050",
        ),
        (
            K256,
            "601ec313775789a5b7a7f504bbf3d228 f443e3ca4d62b59aca84e990cacaf5c5
             2b0930daa23de94ce87017ba2d84988d dfc9c58db67aada613c2dd08457941a6",
        ),
    ];
    for (k, c) in cases {
        let key = hex(k);
        let mut d = hex(PT);
        exec(op::CTR, &key, AesParams::single(iv), 0, &mut d);
        assert_eq!(d, hex(c));
        exec(op::CTR, &key, AesParams::single(iv), 0, &mut d);
        assert_eq!(d, hex(PT));
        // A truncated message gives the truncated ciphertext.
        let mut d = hex(PT);
        d.truncate(37);
        exec(op::CTR, &key, AesParams::single(iv), 0, &mut d);
        assert_eq!(d, hex(c)[..37]);
    }
}

/// Sequence number as an XTS tweak: little-endian, zero padded.
fn dusn(n: u64) -> [u8; 16] {
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&n.to_le_bytes());
    t
}

fn xts_case(key1: &str, key2: &str, seq: u64, pt: &[u8], ct: &str) {
    let mut key = hex(key1);
    key.extend(hex(key2));
    let ct = hex(ct);
    assert_eq!(pt.len(), ct.len());
    let mut d = pt.to_vec();
    exec(op::XTS_ENC, &key, AesParams::single(dusn(seq)), 0, &mut d);
    assert_eq!(d, ct, "seq {seq:x} len {}", pt.len());
    exec(op::XTS_DEC, &key, AesParams::single(dusn(seq)), 0, &mut d);
    assert_eq!(d, pt);
    // The same through plain64 (the tweak of sector `seq`).
    let mut d = pt.to_vec();
    exec(op::XTS_ENC, &key, AesParams::plain64(seq), 0, &mut d);
    assert_eq!(d, ct);
    cpu::xts_decrypt(&key, &dusn(seq), &mut d).unwrap();
    assert_eq!(d, pt);
}

#[test]
fn ieee1619_vectors_1_to_3() {
    let zero = "00000000000000000000000000000000";
    xts_case(
        zero,
        zero,
        0,
        &[0; 32],
        "917cf69ebd68b2ec9b9fe9a3eadda692cd43d2f59598ed858c02c2652fbf922e",
    );
    xts_case(
        "11111111111111111111111111111111",
        "22222222222222222222222222222222",
        0x3333333333,
        &[0x44; 32],
        "c454185e6a16936e39334038acef838bfb186fff7480adc4289382ecd6d394f0",
    );
    xts_case(
        "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0",
        "22222222222222222222222222222222",
        0x3333333333,
        &[0x44; 32],
        "af85336b597afc1a900b2eb21ec949d292df4c047e0b21532186a5971a227a89",
    );
}

/// Vectors 4, 5, 10 and 11 have 512-byte data units without stealing, so
/// the first blocks of the ciphertext depend only on the first blocks of the
/// plaintext: the leading 32 bytes are checked.
#[test]
fn ieee1619_long_unit_prefixes() {
    let counting: Vec<u8> = (0..32u8).collect();
    let k1 = "27182818284590452353602874713526";
    let k2 = "31415926535897932384626433832795";
    let ct4 = "27a7479befa1d476489f308cd4cfa6e2a96e4bbe3208ff25287dd3819616e89c";
    xts_case(k1, k2, 0, &counting, ct4);
    // Vector 5 encrypts the ciphertext of vector 4 under sequence number 1.
    xts_case(
        k1,
        k2,
        1,
        &hex(ct4),
        "264d3ca8512194fec312c8c9891f279fefdd608d0c027b60483a3fa811d65ee5",
    );
    let k1 = "2718281828459045235360287471352662497757247093699959574966967627";
    let k2 = "3141592653589793238462643383279502884197169399375105820974944592";
    xts_case(
        k1,
        k2,
        0xff,
        &counting,
        "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b",
    );
    xts_case(
        k1,
        k2,
        0xffff,
        &counting,
        "77a31251618a15e6b92d1d66dffe7b50b50bad552305ba0217a610688eff7e11",
    );
}

#[test]
fn ieee1619_ciphertext_stealing_15_to_18() {
    let k1 = "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0";
    let k2 = "bfbebdbcbbbab9b8b7b6b5b4b3b2b1b0";
    let cases = [
        (17, "6c1625db4671522d3d7599601de7ca09ed"),
        (18, "d069444b7a7e0cab09e24447d24deb1fedbf"),
        (19, "e5df1351c0544ba1350b3363cd8ef4beedbf9d"),
        (20, "9d84c813f719aa2c7be3f66171c7c5c2edbf9dac"),
    ];
    for (len, ct) in cases {
        let pt: Vec<u8> = (0..len as u8).collect();
        // The standard prints this tweak in storage order: 9a 78 56 34 12.
        xts_case(k1, k2, 0x12_3456_789a, &pt, ct);
    }
}

/// Two units of the CTS vectors in one request: each unit restarts with its
/// own tweak from the IV list.
#[test]
fn ieee1619_cts_as_iv_list() {
    let mut key = hex("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0");
    key.extend(hex("bfbebdbcbbbab9b8b7b6b5b4b3b2b1b0"));
    let pt: Vec<u8> = (0..17u8).chain(0..17u8).collect();
    let mut aux = dusn(0x12_3456_789a).to_vec();
    aux.extend(dusn(0x12_3456_789a));
    for cpu in backends() {
        let mut d = pt.clone();
        let req = AesRequest {
            op: op::XTS_ENC,
            unit: 17,
            params: AesParams::list().to_bytes(),
            key_tag: 7,
            key: &key,
            aux: &aux,
        };
        assert_eq!(cpu.execute(&req, &mut d), Ok(34));
        let ct = hex("6c1625db4671522d3d7599601de7ca09ed");
        assert_eq!(&d[..17], &ct[..], "{}", cpu.path());
        assert_eq!(&d[17..], &ct[..], "{}", cpu.path());
        let req = AesRequest {
            op: op::XTS_DEC,
            ..req
        };
        assert_eq!(cpu.execute(&req, &mut d), Ok(34));
        assert_eq!(d, pt, "{}", cpu.path());
    }
}

/// Which paths these tests ran on (printed with `--nocapture`).
#[test]
fn paths_present() {
    let have: Vec<&str> = Path::ALL
        .into_iter()
        .filter(|p| p.available())
        .map(Path::name)
        .collect();
    eprintln!(
        "AES paths on this CPU: {}; default {}",
        have.join(", "),
        Path::best()
    );
    assert!(Path::Portable.available());
    assert!(have.contains(&Path::best().name()));
}
