//! The example service's encoding and CPU code.

use kgpu_example::proto::{self as p, Add, ProtoError};

#[test]
fn add_known_answers() {
    // Little-endian words 1, 0xffff_ffff, 0x8000_0000 plus 1 and plus 0xffff_ffff.
    let input = [1u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0x80];
    let mut out = [0u8; 12];
    p::add(1, &input, &mut out);
    assert_eq!(out, [2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0x80]);
    p::add(0xffff_ffff, &input, &mut out);
    assert_eq!(
        out,
        [0, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]
    );
    let mut inplace = input;
    p::add_in_place(0x0102_0304, &mut inplace);
    assert_eq!(inplace, [5, 3, 2, 1, 3, 3, 2, 1, 4, 3, 2, 0x81]);
}

#[test]
fn add_matches_wrapping_add_of_words() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let input: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut out = vec![0u8; input.len()];
    p::add(0xdead_beef, &input, &mut out);
    for (o, i) in out.chunks_exact(4).zip(input.chunks_exact(4)) {
        let want = u32::from_le_bytes(i.try_into().unwrap()).wrapping_add(0xdead_beef);
        assert_eq!(u32::from_le_bytes(o.try_into().unwrap()), want);
    }
}

#[test]
fn validate_accepts_whole_words_only() {
    let prm = p::params(7);
    assert_eq!(
        p::validate(p::op::ADD, 0, 0, &prm, 4096, 4096),
        Ok(Add {
            addend: 7,
            words: 1024
        })
    );
    assert_eq!(
        p::validate(2, 0, 0, &prm, 4096, 4096),
        Err(ProtoError::UnknownOp)
    );
    for (i, o) in [
        (0, 0),
        (6, 6),
        (4096, 4092),
        (p::MAX_LEN + 4, p::MAX_LEN + 4),
    ] {
        assert_eq!(
            p::validate(p::op::ADD, 0, 0, &prm, i, o),
            Err(ProtoError::BadLength),
            "{i} {o}"
        );
    }
    let mut reserved = prm;
    reserved[31] = 1;
    assert_eq!(
        p::validate(p::op::ADD, 0, 0, &reserved, 8, 8),
        Err(ProtoError::BadParams)
    );
    assert_eq!(
        p::validate(p::op::ADD, 1, 0, &prm, 8, 8),
        Err(ProtoError::BadParams)
    );
    assert_eq!(
        p::validate(p::op::ADD, 0, 1, &prm, 8, 8),
        Err(ProtoError::BadParams)
    );
}

#[test]
fn validate_is_total() {
    // Any field values give an answer, never a panic; what it accepts is
    // consistent with the lengths.
    let mut x = 1u64;
    for _ in 0..100_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut prm = [0u8; p::PARAMS_LEN];
        prm[..8].copy_from_slice(&x.to_le_bytes());
        if x & 1 == 0 {
            prm[4..].fill(0);
        }
        let (i, o) = (x >> 34, if x & 2 == 0 { x >> 34 } else { x >> 33 });
        if let Ok(a) = p::validate((x >> 8) as u16 & 3, (x >> 60) as u32 & 1, 0, &prm, i, o) {
            assert_eq!(a.words * 4, i);
            assert_eq!(i, o);
        }
    }
}
