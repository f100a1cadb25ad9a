// SPDX-License-Identifier: GPL-2.0-only
//
// RAID6 P/Q syndromes and recovery, Linux lib/raid6 semantics
// (GF(2^8), polynomial 0x11d, generator {02}).
//
// Compiled at run time with NVRTC: no system headers, no libc.
//
// Every kernel works on 16-byte groups (uint4): thread t of the grid handles
// groups t, t + gridDim*blockDim, ... of each disk block. `in` and `out` point
// at the request's input and output extents inside the device mirror of the
// data area (16-byte aligned, checked by the launcher); `unit` is the block
// size in bytes (a multiple of 64), `nvec = unit / 16`. Block j of a
// multi-block extent starts at byte j * unit.
//
// Products by {02} are computed four bytes at a time on 32-bit words (the
// kernel's SWAR MASK/SHLBYTE trick); products by other constants by Horner's
// rule over the constant's bits. The constants (g^start, raid6_gfexi[...],
// raid6_gfinv[...]) are computed by the host and passed as arguments, so the
// kernels need no tables.

typedef unsigned int u32;
typedef unsigned long long u64;

struct __align__(16) vec4 {
    u32 x, y, z, w;
};

__device__ __forceinline__ u32 gf_mul2(u32 v)
{
    u32 hi = (v >> 7) & 0x01010101u;
    return ((v & 0x7f7f7f7fu) << 1) ^ (hi * 0x1du);
}

__device__ __forceinline__ vec4 v_mul2(vec4 a)
{
    vec4 r;
    r.x = gf_mul2(a.x);
    r.y = gf_mul2(a.y);
    r.z = gf_mul2(a.z);
    r.w = gf_mul2(a.w);
    return r;
}

__device__ __forceinline__ vec4 v_xor(vec4 a, vec4 b)
{
    vec4 r;
    r.x = a.x ^ b.x;
    r.y = a.y ^ b.y;
    r.z = a.z ^ b.z;
    r.w = a.w ^ b.w;
    return r;
}

__device__ __forceinline__ vec4 v_zero()
{
    vec4 r;
    r.x = 0;
    r.y = 0;
    r.z = 0;
    r.w = 0;
    return r;
}

// Every byte of a times the constant c (uniform across the grid).
__device__ __forceinline__ vec4 v_mulc(vec4 a, u32 c)
{
    vec4 r = v_zero();
#pragma unroll
    for (int bit = 7; bit >= 0; bit--) {
        r = v_mul2(r);
        if ((c >> bit) & 1u)
            r = v_xor(r, a);
    }
    return r;
}

__device__ __forceinline__ vec4 ld(const unsigned char *base, u64 byte_off)
{
    return *(const vec4 *)(base + byte_off);
}

__device__ __forceinline__ void st(unsigned char *base, u64 byte_off, vec4 v)
{
    *(vec4 *)(base + byte_off) = v;
}

// P and Q of `ndisks` consecutive blocks of `in`, by Horner from the highest
// block down; block `skipa`/`skipb` (if < ndisks) counts as all zero.
__device__ __forceinline__ void syndrome(const unsigned char *__restrict__ in, u64 unit,
                                         u32 ndisks, u32 skipa, u32 skipb, u64 off,
                                         vec4 *wp_out, vec4 *wq_out)
{
    int top = (int)ndisks - 1;
    vec4 wp = v_zero();
    vec4 wq = v_zero();
    if ((u32)top != skipa && (u32)top != skipb) {
        wp = ld(in, (u64)top * unit + off);
        wq = wp;
    }
#pragma unroll 8
    for (int z = top - 1; z >= 0; z--) {
        wq = v_mul2(wq);
        if ((u32)z != skipa && (u32)z != skipb) {
            vec4 d = ld(in, (u64)z * unit + off);
            wp = v_xor(wp, d);
            wq = v_xor(wq, d);
        }
    }
    *wp_out = wp;
    *wq_out = wq;
}

// GEN_SYNDROME: in = ndata data blocks, out = P, Q.
extern "C" __global__ void kgpu_raid6_gen_syndrome(const unsigned char *__restrict__ in,
                                                   unsigned char *__restrict__ out,
                                                   u32 ndata, u64 unit)
{
    u64 nvec = unit >> 4;
    u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < nvec; i += stride) {
        u64 off = i << 4;
        int top = (int)ndata - 1;
        vec4 wp = ld(in, (u64)top * unit + off);
        vec4 wq = wp;
#pragma unroll 8
        for (int z = top - 1; z >= 0; z--) {
            vec4 d = ld(in, (u64)z * unit + off);
            wp = v_xor(wp, d);
            wq = v_xor(v_mul2(wq), d);
        }
        st(out, off, wp);
        st(out, unit + off, wq);
    }
}

// XOR_SYNDROME: in = data blocks start..=stop (nin = stop - start + 1),
// out = P, Q updated in place; gstart = g^start.
extern "C" __global__ void kgpu_raid6_xor_syndrome(const unsigned char *__restrict__ in,
                                                   unsigned char *__restrict__ out,
                                                   u32 nin, u64 unit, u32 start, u32 gstart)
{
    u64 nvec = unit >> 4;
    u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < nvec; i += stride) {
        u64 off = i << 4;
        vec4 wp, wq;
        syndrome(in, unit, nin, 0xffffffffu, 0xffffffffu, off, &wp, &wq);
        if (start <= 8) {
            for (u32 s = 0; s < start; s++)
                wq = v_mul2(wq);
        } else {
            wq = v_mulc(wq, gstart);
        }
        st(out, off, v_xor(ld(out, off), wp));
        st(out, unit + off, v_xor(ld(out, unit + off), wq));
    }
}

// RECOV_2DATA: in = all ndata + 2 blocks, out = D_faila, D_failb.
// pbmul = raid6_gfexi[failb - faila], qmul = raid6_gfinv[g^faila ^ g^failb].
extern "C" __global__ void kgpu_raid6_recov_2data(const unsigned char *__restrict__ in,
                                                  unsigned char *__restrict__ out,
                                                  u32 ndata, u64 unit, u32 faila, u32 failb,
                                                  u32 pbmul, u32 qmul)
{
    u64 nvec = unit >> 4;
    u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < nvec; i += stride) {
        u64 off = i << 4;
        vec4 wp, wq;
        syndrome(in, unit, ndata, faila, failb, off, &wp, &wq);
        vec4 px = v_xor(ld(in, (u64)ndata * unit + off), wp);
        vec4 qx = v_mulc(v_xor(ld(in, (u64)(ndata + 1) * unit + off), wq), qmul);
        vec4 db = v_xor(v_mulc(px, pbmul), qx);
        st(out, off, v_xor(db, px));
        st(out, unit + off, db);
    }
}

// RECOV_DATAP: in = all ndata + 2 blocks, out = D_faila, P.
// qmul = raid6_gfinv[g^faila].
extern "C" __global__ void kgpu_raid6_recov_datap(const unsigned char *__restrict__ in,
                                                  unsigned char *__restrict__ out,
                                                  u32 ndata, u64 unit, u32 faila, u32 qmul)
{
    u64 nvec = unit >> 4;
    u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < nvec; i += stride) {
        u64 off = i << 4;
        vec4 wp, wq;
        syndrome(in, unit, ndata, faila, 0xffffffffu, off, &wp, &wq);
        vec4 d = v_mulc(v_xor(ld(in, (u64)(ndata + 1) * unit + off), wq), qmul);
        st(out, off, d);
        st(out, unit + off, v_xor(wp, d));
    }
}
