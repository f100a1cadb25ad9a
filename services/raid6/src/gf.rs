//! GF(2^8) tables of Linux `lib/raid6/mktables.c` (polynomial 0x11d,
//! generator {02}), computed at compile time.

/// Product of two field elements (carry-less multiply reduced by 0x11d).
pub const fn mul(a: u8, b: u8) -> u8 {
    let mut a = a;
    let mut b = b;
    let mut v: u8 = 0;
    while b != 0 {
        if b & 1 != 0 {
            v ^= a;
        }
        a = (a << 1) ^ if a & 0x80 != 0 { 0x1d } else { 0 };
        b >>= 1;
    }
    v
}

/// `a` raised to the power `n`.
pub const fn pow(a: u8, n: u32) -> u8 {
    let mut v: u8 = 1;
    let mut i = 0;
    while i < n {
        v = mul(v, a);
        i += 1;
    }
    v
}

const fn make_mul() -> [[u8; 256]; 256] {
    let mut t = [[0u8; 256]; 256];
    let mut i = 0;
    while i < 256 {
        let mut j = 0;
        while j < 256 {
            t[i][j] = mul(i as u8, j as u8);
            j += 1;
        }
        i += 1;
    }
    t
}

const fn make_exp() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut v: u8 = 1;
    let mut i = 0;
    while i < 256 {
        t[i] = v;
        v = mul(v, 2);
        if v == 1 {
            // Entry 255 is not a real entry (mktables.c stores 0 there).
            v = 0;
        }
        i += 1;
    }
    t
}

const fn make_log() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let mut v: u8 = 255;
        let mut k = 0;
        while k < 256 {
            if GFEXP[k] as usize == i {
                v = k as u8;
                break;
            }
            k += 1;
        }
        t[i] = v;
        i += 1;
    }
    t
}

const fn make_inv() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = pow(i as u8, 254);
        i += 1;
    }
    t
}

const fn make_exi() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = GFINV[(GFEXP[i] ^ 1) as usize];
        i += 1;
    }
    t
}

/// `raid6_gfmul[a][b] = a·b`.
pub static GFMUL: [[u8; 256]; 256] = make_mul();
/// `raid6_gfexp[i] = g^i` (entry 255 is 0, as in the kernel).
pub const GFEXP: [u8; 256] = make_exp();
/// `raid6_gflog[x] = log_g x` (the entry for 0 is bogus, as in the kernel).
pub const GFLOG: [u8; 256] = make_log();
/// `raid6_gfinv[x] = x^-1` (`x^254`; 0 for 0).
pub const GFINV: [u8; 256] = make_inv();
/// `raid6_gfexi[x] = (g^x + 1)^-1`.
pub const GFEXI: [u8; 256] = make_exi();
