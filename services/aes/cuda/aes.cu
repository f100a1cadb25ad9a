// kgpu AES kernels: ECB, CBC, CTR and XTS over units (disk sectors).
//
// Compiled at run time with NVRTC together with the other services' sources:
// no system headers, every global name starts with kgpu_aes_ / KGPU_AES_.
//
// Data is processed in place in a device buffer; AesArgs.data points at the
// first byte of the request's output. Kernels are table driven: the
// encryption kernels keep Te0..Te3 in shared memory replicated 32 times (one
// copy per bank, entry x of table t for lane l at word ((t*256 + x)*32 + l)),
// so that the 32 lanes of a warp never conflict; the decryption kernels keep
// Td0..Td3 and the inverse S-box the same way. Round keys are kernel
// parameters (constant bank, usable directly as instruction operands). The
// small per-unit kernels (CTR tails, XTS tweaks for stealing, ciphertext stealing) read
// plain tables from global memory.
//
// State words are big-endian (FIPS-197 byte 0 in the top byte), the data is
// loaded as little-endian 32-bit words and byte-swapped; XTS tweaks are kept as
// little-endian 128-bit values (word 0 least significant), as IEEE 1619 wants.

typedef unsigned char kgpu_aes_u8;
typedef unsigned int kgpu_aes_u32;
typedef unsigned long long kgpu_aes_u64;

#define KGPU_AES_TE 0
#define KGPU_AES_TD 1024
#define KGPU_AES_SB 2048
#define KGPU_AES_ISB 2304

#define KGPU_AES_RK_ENC 0
#define KGPU_AES_RK_DEC 60
#define KGPU_AES_RK_TWEAK 120

#define KGPU_AES_IV_NONE 0
#define KGPU_AES_IV_SINGLE 1
#define KGPU_AES_IV_PLAIN64 2
#define KGPU_AES_IV_LIST 3

#define KGPU_AES_REP_WORDS (1024 * 32)
#define KGPU_AES_THREADS 1024

// Must match `KernelArgs` in src/gpu.rs.
struct KgpuAesArgs {
    kgpu_aes_u64 data;         // device address of the first byte (in place)
    kgpu_aes_u64 aux;          // device address of the IV list (IV_LIST)
    kgpu_aes_u64 tables;       // Te0..3, Td0..3, S-box, inverse S-box (256 words each)
    kgpu_aes_u64 scratch;      // XTS with stealing: one encrypted tweak (16 bytes) per unit
    kgpu_aes_u64 start_sector; // IV_PLAIN64: sector of unit 0
    kgpu_aes_u64 units;        // number of units
    kgpu_aes_u64 unit_len;     // bytes per unit
    kgpu_aes_u32 rounds;       // rounds of the data key (10, 12, 14)
    kgpu_aes_u32 rounds2;      // rounds of the tweak key (XTS)
    kgpu_aes_u32 iv_mode;      // KGPU_AES_IV_*
    kgpu_aes_u32 aligned;      // data 16-byte aligned and unit_len a multiple of 16
    kgpu_aes_u32 fb_shift;     // log2(unit_len / 16) when a power of two, else 255
    kgpu_aes_u32 pad;
    kgpu_aes_u8 iv[16];        // IV_SINGLE
    kgpu_aes_u32 rk[180];      // enc (60 words), dec (60), tweak enc (60): constant bank
};

// The replicated tables (dynamic shared memory of the table-driven kernels).
extern __shared__ kgpu_aes_u32 kgpu_aes_sm[];

static __device__ __forceinline__ kgpu_aes_u32 kgpu_aes_bswap(kgpu_aes_u32 x)
{
    return __byte_perm(x, 0, 0x0123);
}

static __device__ __forceinline__ kgpu_aes_u32 kgpu_aes_be32(const kgpu_aes_u8 *p)
{
    return ((kgpu_aes_u32)p[0] << 24) | ((kgpu_aes_u32)p[1] << 16) |
           ((kgpu_aes_u32)p[2] << 8) | (kgpu_aes_u32)p[3];
}

// Byte k of a state word, zero-extended.
#define KGPU_AES_B0(v) ((v) & 0xffu)
#define KGPU_AES_B1(v) __byte_perm((v), 0, 0x4441)
#define KGPU_AES_B2(v) __byte_perm((v), 0, 0x4442)
#define KGPU_AES_B3(v) ((v) >> 24)

// Table lookup. REP: entry x of table t of the replicated copy in shared memory,
// addressed in bytes as t * 32768 + x * 128 + lane * 4 (lane4), so that the
// table offset folds into the load's immediate; otherwise a plain table T.
#define KGPU_AES_T(T, REP, t, x)                                                                 \
    ((REP) ? *(const kgpu_aes_u32 *)((const char *)kgpu_aes_sm + (t) * 32768 + ((x) * 128u + lane4)) \
           : (T)[((t) << 8) | (x)])
#define KGPU_AES_I(I, REP, x)                                                                    \
    ((REP) ? *(const kgpu_aes_u32 *)((const char *)kgpu_aes_sm + 4 * 32768 + ((x) * 128u + lane4)) \
           : (I)[(x)])

template <int NR, int REP>
static __device__ __forceinline__ void kgpu_aes_encrypt(kgpu_aes_u32 s[4], const kgpu_aes_u32 *rk,
                                                        const kgpu_aes_u32 *T, kgpu_aes_u32 lane)
{
    const kgpu_aes_u32 lane4 = lane * 4;
    kgpu_aes_u32 s0 = s[0] ^ rk[0], s1 = s[1] ^ rk[1], s2 = s[2] ^ rk[2], s3 = s[3] ^ rk[3];
#pragma unroll
    for (int r = 1; r < NR; r++) {
        const kgpu_aes_u32 *k = rk + 4 * r;
        kgpu_aes_u32 t0 = KGPU_AES_T(T, REP, 0, KGPU_AES_B3(s0)) ^ KGPU_AES_T(T, REP, 1, KGPU_AES_B2(s1)) ^
                          KGPU_AES_T(T, REP, 2, KGPU_AES_B1(s2)) ^ KGPU_AES_T(T, REP, 3, KGPU_AES_B0(s3)) ^ k[0];
        kgpu_aes_u32 t1 = KGPU_AES_T(T, REP, 0, KGPU_AES_B3(s1)) ^ KGPU_AES_T(T, REP, 1, KGPU_AES_B2(s2)) ^
                          KGPU_AES_T(T, REP, 2, KGPU_AES_B1(s3)) ^ KGPU_AES_T(T, REP, 3, KGPU_AES_B0(s0)) ^ k[1];
        kgpu_aes_u32 t2 = KGPU_AES_T(T, REP, 0, KGPU_AES_B3(s2)) ^ KGPU_AES_T(T, REP, 1, KGPU_AES_B2(s3)) ^
                          KGPU_AES_T(T, REP, 2, KGPU_AES_B1(s0)) ^ KGPU_AES_T(T, REP, 3, KGPU_AES_B0(s1)) ^ k[2];
        kgpu_aes_u32 t3 = KGPU_AES_T(T, REP, 0, KGPU_AES_B3(s3)) ^ KGPU_AES_T(T, REP, 1, KGPU_AES_B2(s0)) ^
                          KGPU_AES_T(T, REP, 2, KGPU_AES_B1(s1)) ^ KGPU_AES_T(T, REP, 3, KGPU_AES_B0(s2)) ^ k[3];
        s0 = t0;
        s1 = t1;
        s2 = t2;
        s3 = t3;
    }
    const kgpu_aes_u32 *k = rk + 4 * NR;
    // Last round: Te2 carries S[x] in its top byte, Te3 in byte 2, Te0 in
    // byte 1 and Te1 in the low byte.
    s[0] = (KGPU_AES_T(T, REP, 2, KGPU_AES_B3(s0)) & 0xff000000u) ^ (KGPU_AES_T(T, REP, 3, KGPU_AES_B2(s1)) & 0x00ff0000u) ^
           (KGPU_AES_T(T, REP, 0, KGPU_AES_B1(s2)) & 0x0000ff00u) ^ (KGPU_AES_T(T, REP, 1, KGPU_AES_B0(s3)) & 0x000000ffu) ^ k[0];
    s[1] = (KGPU_AES_T(T, REP, 2, KGPU_AES_B3(s1)) & 0xff000000u) ^ (KGPU_AES_T(T, REP, 3, KGPU_AES_B2(s2)) & 0x00ff0000u) ^
           (KGPU_AES_T(T, REP, 0, KGPU_AES_B1(s3)) & 0x0000ff00u) ^ (KGPU_AES_T(T, REP, 1, KGPU_AES_B0(s0)) & 0x000000ffu) ^ k[1];
    s[2] = (KGPU_AES_T(T, REP, 2, KGPU_AES_B3(s2)) & 0xff000000u) ^ (KGPU_AES_T(T, REP, 3, KGPU_AES_B2(s3)) & 0x00ff0000u) ^
           (KGPU_AES_T(T, REP, 0, KGPU_AES_B1(s0)) & 0x0000ff00u) ^ (KGPU_AES_T(T, REP, 1, KGPU_AES_B0(s1)) & 0x000000ffu) ^ k[2];
    s[3] = (KGPU_AES_T(T, REP, 2, KGPU_AES_B3(s3)) & 0xff000000u) ^ (KGPU_AES_T(T, REP, 3, KGPU_AES_B2(s0)) & 0x00ff0000u) ^
           (KGPU_AES_T(T, REP, 0, KGPU_AES_B1(s1)) & 0x0000ff00u) ^ (KGPU_AES_T(T, REP, 1, KGPU_AES_B0(s2)) & 0x000000ffu) ^ k[3];
}

template <int NR, int REP>
static __device__ __forceinline__ void kgpu_aes_decrypt(kgpu_aes_u32 s[4], const kgpu_aes_u32 *rk,
                                                        const kgpu_aes_u32 *T, const kgpu_aes_u32 *I,
                                                        kgpu_aes_u32 lane)
{
    const kgpu_aes_u32 lane4 = lane * 4;
    kgpu_aes_u32 s0 = s[0] ^ rk[0], s1 = s[1] ^ rk[1], s2 = s[2] ^ rk[2], s3 = s[3] ^ rk[3];
#pragma unroll
    for (int r = 1; r < NR; r++) {
        const kgpu_aes_u32 *k = rk + 4 * r;
        kgpu_aes_u32 t0 = KGPU_AES_T(T, REP, 0, KGPU_AES_B3(s0)) ^ KGPU_AES_T(T, REP, 1, KGPU_AES_B2(s3)) ^
                          KGPU_AES_T(T, REP, 2, KGPU_AES_B1(s2)) ^ KGPU_AES_T(T, REP, 3, KGPU_AES_B0(s1)) ^ k[0];
        kgpu_aes_u32 t1 = KGPU_AES_T(T, REP, 0, KGPU_AES_B3(s1)) ^ KGPU_AES_T(T, REP, 1, KGPU_AES_B2(s0)) ^
                          KGPU_AES_T(T, REP, 2, KGPU_AES_B1(s3)) ^ KGPU_AES_T(T, REP, 3, KGPU_AES_B0(s2)) ^ k[1];
        kgpu_aes_u32 t2 = KGPU_AES_T(T, REP, 0, KGPU_AES_B3(s2)) ^ KGPU_AES_T(T, REP, 1, KGPU_AES_B2(s1)) ^
                          KGPU_AES_T(T, REP, 2, KGPU_AES_B1(s0)) ^ KGPU_AES_T(T, REP, 3, KGPU_AES_B0(s3)) ^ k[2];
        kgpu_aes_u32 t3 = KGPU_AES_T(T, REP, 0, KGPU_AES_B3(s3)) ^ KGPU_AES_T(T, REP, 1, KGPU_AES_B2(s2)) ^
                          KGPU_AES_T(T, REP, 2, KGPU_AES_B1(s1)) ^ KGPU_AES_T(T, REP, 3, KGPU_AES_B0(s0)) ^ k[3];
        s0 = t0;
        s1 = t1;
        s2 = t2;
        s3 = t3;
    }
    const kgpu_aes_u32 *k = rk + 4 * NR;
    s[0] = (KGPU_AES_I(I, REP, KGPU_AES_B3(s0)) << 24) ^ (KGPU_AES_I(I, REP, KGPU_AES_B2(s3)) << 16) ^
           (KGPU_AES_I(I, REP, KGPU_AES_B1(s2)) << 8) ^ KGPU_AES_I(I, REP, KGPU_AES_B0(s1)) ^ k[0];
    s[1] = (KGPU_AES_I(I, REP, KGPU_AES_B3(s1)) << 24) ^ (KGPU_AES_I(I, REP, KGPU_AES_B2(s0)) << 16) ^
           (KGPU_AES_I(I, REP, KGPU_AES_B1(s3)) << 8) ^ KGPU_AES_I(I, REP, KGPU_AES_B0(s2)) ^ k[1];
    s[2] = (KGPU_AES_I(I, REP, KGPU_AES_B3(s2)) << 24) ^ (KGPU_AES_I(I, REP, KGPU_AES_B2(s1)) << 16) ^
           (KGPU_AES_I(I, REP, KGPU_AES_B1(s0)) << 8) ^ KGPU_AES_I(I, REP, KGPU_AES_B0(s3)) ^ k[2];
    s[3] = (KGPU_AES_I(I, REP, KGPU_AES_B3(s3)) << 24) ^ (KGPU_AES_I(I, REP, KGPU_AES_B2(s2)) << 16) ^
           (KGPU_AES_I(I, REP, KGPU_AES_B1(s1)) << 8) ^ KGPU_AES_I(I, REP, KGPU_AES_B0(s0)) ^ k[3];
}

// 16 bytes as four little-endian words.
static __device__ __forceinline__ void kgpu_aes_load(const kgpu_aes_u8 *p, bool aligned, kgpu_aes_u32 w[4])
{
    if (aligned) {
        uint4 v = *(const uint4 *)p;
        w[0] = v.x;
        w[1] = v.y;
        w[2] = v.z;
        w[3] = v.w;
    } else {
#pragma unroll
        for (int i = 0; i < 4; i++)
            w[i] = (kgpu_aes_u32)p[4 * i] | ((kgpu_aes_u32)p[4 * i + 1] << 8) |
                   ((kgpu_aes_u32)p[4 * i + 2] << 16) | ((kgpu_aes_u32)p[4 * i + 3] << 24);
    }
}

static __device__ __forceinline__ void kgpu_aes_store(kgpu_aes_u8 *p, bool aligned, const kgpu_aes_u32 w[4])
{
    if (aligned) {
        *(uint4 *)p = make_uint4(w[0], w[1], w[2], w[3]);
    } else {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            p[4 * i] = (kgpu_aes_u8)w[i];
            p[4 * i + 1] = (kgpu_aes_u8)(w[i] >> 8);
            p[4 * i + 2] = (kgpu_aes_u8)(w[i] >> 16);
            p[4 * i + 3] = (kgpu_aes_u8)(w[i] >> 24);
        }
    }
}

// The IV of unit u as big-endian state words.
static __device__ __forceinline__ void kgpu_aes_unit_iv(const KgpuAesArgs &a, kgpu_aes_u64 u, kgpu_aes_u32 iv[4])
{
    if (a.iv_mode == KGPU_AES_IV_PLAIN64) {
        kgpu_aes_u64 s = a.start_sector + u;
        iv[0] = kgpu_aes_bswap((kgpu_aes_u32)s);
        iv[1] = kgpu_aes_bswap((kgpu_aes_u32)(s >> 32));
        iv[2] = 0;
        iv[3] = 0;
    } else if (a.iv_mode == KGPU_AES_IV_LIST) {
        const kgpu_aes_u8 *p = (const kgpu_aes_u8 *)a.aux + u * 16;
#pragma unroll
        for (int i = 0; i < 4; i++)
            iv[i] = kgpu_aes_be32(p + 4 * i);
    } else if (a.iv_mode == KGPU_AES_IV_SINGLE) {
#pragma unroll
        for (int i = 0; i < 4; i++)
            iv[i] = kgpu_aes_be32(a.iv + 4 * i);
    } else {
        iv[0] = iv[1] = iv[2] = iv[3] = 0;
    }
}

// Splits a global block index into (unit, block in unit).
static __device__ __forceinline__ void kgpu_aes_split(const KgpuAesArgs &a, kgpu_aes_u64 b, kgpu_aes_u64 fb,
                                                      kgpu_aes_u64 &u, kgpu_aes_u64 &j)
{
    if (a.fb_shift < 64) {
        u = b >> a.fb_shift;
        j = b & (fb - 1);
    } else {
        u = b / fb;
        j = b - u * fb;
    }
}

// Multiplies an XTS tweak (little-endian words, w[0] least significant) by x^S, 1 <= S <= 32.
template <int S>
static __device__ __forceinline__ void kgpu_aes_xts_mul(kgpu_aes_u32 w[4])
{
    kgpu_aes_u32 h;
    if (S == 32) {
        h = w[3];
        w[3] = w[2];
        w[2] = w[1];
        w[1] = w[0];
        w[0] = 0;
    } else {
        h = w[3] >> ((32 - S) & 31);
        w[3] = __funnelshift_l(w[2], w[3], S);
        w[2] = __funnelshift_l(w[1], w[2], S);
        w[1] = __funnelshift_l(w[0], w[1], S);
        w[0] = w[0] << (S & 31);
    }
    // x^128 = x^7 + x^2 + x + 1 modulo the XTS polynomial.
    kgpu_aes_u64 r = (kgpu_aes_u64)h ^ ((kgpu_aes_u64)h << 1) ^ ((kgpu_aes_u64)h << 2) ^ ((kgpu_aes_u64)h << 7);
    w[0] ^= (kgpu_aes_u32)r;
    w[1] ^= (kgpu_aes_u32)(r >> 32);
}

// Loads replicated tables into shared memory: dst[x * 32 + l] = src[x].
static __device__ __forceinline__ void kgpu_aes_replicate(kgpu_aes_u32 *dst, const kgpu_aes_u32 *src, int entries)
{
    for (int k = threadIdx.x; k < entries * 32; k += blockDim.x)
        dst[k] = __ldg(src + (k >> 5));
}

static __device__ __forceinline__ void kgpu_aes_prologue(const KgpuAesArgs &a, bool dec)
{
    const kgpu_aes_u32 *tab = (const kgpu_aes_u32 *)a.tables;
    if (dec) {
        kgpu_aes_replicate(kgpu_aes_sm, tab + KGPU_AES_TD, 1024);
        kgpu_aes_replicate(kgpu_aes_sm + KGPU_AES_REP_WORDS, tab + KGPU_AES_ISB, 256);
    } else {
        kgpu_aes_replicate(kgpu_aes_sm, tab + KGPU_AES_TE, 1024);
    }
    __syncthreads();
}

// Instantiates fn for the rounds of the key (10, 12 or 14).
#define KGPU_AES_DISPATCH(nr, fn, ...)                                                           \
    switch (nr) {                                                                                \
    case 10:                                                                                     \
        fn<10>(__VA_ARGS__);                                                                     \
        break;                                                                                   \
    case 12:                                                                                     \
        fn<12>(__VA_ARGS__);                                                                     \
        break;                                                                                   \
    default:                                                                                     \
        fn<14>(__VA_ARGS__);                                                                     \
        break;                                                                                   \
    }

// ---------------------------------------------------------------- ECB

template <int NR>
static __device__ __forceinline__ void kgpu_aes_ecb_body(const KgpuAesArgs &a,
                                         bool dec)
{
    const kgpu_aes_u32 lane = threadIdx.x & 31;
    const kgpu_aes_u64 n = a.units * (a.unit_len >> 4);
    const bool al = a.aligned != 0;
    kgpu_aes_u8 *data = (kgpu_aes_u8 *)a.data;
    const kgpu_aes_u64 stride = (kgpu_aes_u64)gridDim.x * blockDim.x;
    for (kgpu_aes_u64 b = (kgpu_aes_u64)blockIdx.x * blockDim.x + threadIdx.x; b < n; b += stride) {
        kgpu_aes_u32 w[4];
        kgpu_aes_load(data + b * 16, al, w);
#pragma unroll
        for (int i = 0; i < 4; i++)
            w[i] = kgpu_aes_bswap(w[i]);
        if (dec)
            kgpu_aes_decrypt<NR, 1>(w, a.rk + KGPU_AES_RK_DEC, 0, 0, lane);
        else
            kgpu_aes_encrypt<NR, 1>(w, a.rk + KGPU_AES_RK_ENC, 0, lane);
#pragma unroll
        for (int i = 0; i < 4; i++)
            w[i] = kgpu_aes_bswap(w[i]);
        kgpu_aes_store(data + b * 16, al, w);
    }
}

extern "C" __global__ void __launch_bounds__(KGPU_AES_THREADS, 1) kgpu_aes_ecb_enc(const __grid_constant__ KgpuAesArgs a)
{
    kgpu_aes_prologue(a, false);
    KGPU_AES_DISPATCH(a.rounds, kgpu_aes_ecb_body, a, false);
}

extern "C" __global__ void __launch_bounds__(KGPU_AES_THREADS, 1) kgpu_aes_ecb_dec(const __grid_constant__ KgpuAesArgs a)
{
    kgpu_aes_prologue(a, true);
    KGPU_AES_DISPATCH(a.rounds, kgpu_aes_ecb_body, a, true);
}

// ---------------------------------------------------------------- CTR

template <int NR>
static __device__ __forceinline__ void kgpu_aes_ctr_body(const KgpuAesArgs &a)
{
    const kgpu_aes_u32 lane = threadIdx.x & 31;
    const kgpu_aes_u64 fb = a.unit_len >> 4;
    const kgpu_aes_u64 n = a.units * fb;
    const bool al = a.aligned != 0;
    kgpu_aes_u8 *data = (kgpu_aes_u8 *)a.data;
    const kgpu_aes_u64 stride = (kgpu_aes_u64)gridDim.x * blockDim.x;
    for (kgpu_aes_u64 b = (kgpu_aes_u64)blockIdx.x * blockDim.x + threadIdx.x; b < n; b += stride) {
        kgpu_aes_u64 u, j;
        kgpu_aes_split(a, b, fb, u, j);
        kgpu_aes_u32 s[4];
        kgpu_aes_unit_iv(a, u, s);
        kgpu_aes_u64 hi = ((kgpu_aes_u64)s[0] << 32) | s[1];
        kgpu_aes_u64 lo = ((kgpu_aes_u64)s[2] << 32) | s[3];
        kgpu_aes_u64 lo2 = lo + j;
        hi += lo2 < lo ? 1 : 0;
        s[0] = (kgpu_aes_u32)(hi >> 32);
        s[1] = (kgpu_aes_u32)hi;
        s[2] = (kgpu_aes_u32)(lo2 >> 32);
        s[3] = (kgpu_aes_u32)lo2;
        kgpu_aes_encrypt<NR, 1>(s, a.rk + KGPU_AES_RK_ENC, 0, lane);
        kgpu_aes_u8 *p = data + u * a.unit_len + j * 16;
        kgpu_aes_u32 w[4];
        kgpu_aes_load(p, al, w);
#pragma unroll
        for (int i = 0; i < 4; i++)
            w[i] ^= kgpu_aes_bswap(s[i]);
        kgpu_aes_store(p, al, w);
    }
}

extern "C" __global__ void __launch_bounds__(KGPU_AES_THREADS, 1) kgpu_aes_ctr(const __grid_constant__ KgpuAesArgs a)
{
    kgpu_aes_prologue(a, false);
    KGPU_AES_DISPATCH(a.rounds, kgpu_aes_ctr_body, a);
}

// The partial last block of each unit (unit_len % 16 != 0), one thread per unit.
template <int NR>
static __device__ __forceinline__ void kgpu_aes_ctr_tail_body(const KgpuAesArgs &a)
{
    const kgpu_aes_u32 *T = (const kgpu_aes_u32 *)a.tables + KGPU_AES_TE;
    const kgpu_aes_u32 *rk = a.rk + KGPU_AES_RK_ENC;
    const kgpu_aes_u32 lane = 0;
    const kgpu_aes_u64 fb = a.unit_len >> 4;
    const kgpu_aes_u32 tail = (kgpu_aes_u32)(a.unit_len & 15);
    kgpu_aes_u8 *data = (kgpu_aes_u8 *)a.data;
    const kgpu_aes_u64 stride = (kgpu_aes_u64)gridDim.x * blockDim.x;
    for (kgpu_aes_u64 u = (kgpu_aes_u64)blockIdx.x * blockDim.x + threadIdx.x; u < a.units; u += stride) {
        kgpu_aes_u32 s[4];
        kgpu_aes_unit_iv(a, u, s);
        kgpu_aes_u64 hi = ((kgpu_aes_u64)s[0] << 32) | s[1];
        kgpu_aes_u64 lo = ((kgpu_aes_u64)s[2] << 32) | s[3];
        kgpu_aes_u64 lo2 = lo + fb;
        hi += lo2 < lo ? 1 : 0;
        s[0] = (kgpu_aes_u32)(hi >> 32);
        s[1] = (kgpu_aes_u32)hi;
        s[2] = (kgpu_aes_u32)(lo2 >> 32);
        s[3] = (kgpu_aes_u32)lo2;
        kgpu_aes_encrypt<NR, 0>(s, rk, T, lane);
        kgpu_aes_u8 *p = data + u * a.unit_len + fb * 16;
        for (kgpu_aes_u32 k = 0; k < tail; k++)
            p[k] ^= (kgpu_aes_u8)(s[k >> 2] >> (24 - 8 * (k & 3)));
    }
}

extern "C" __global__ void kgpu_aes_ctr_tail(const __grid_constant__ KgpuAesArgs a)
{
    KGPU_AES_DISPATCH(a.rounds, kgpu_aes_ctr_tail_body, a);
}

// ---------------------------------------------------------------- XTS

// scratch[u] = E(tweak key, IV of unit u) as little-endian words, one thread per unit.
template <int NR>
static __device__ __forceinline__ void kgpu_aes_xts_tweak_body(const KgpuAesArgs &a)
{
    const kgpu_aes_u32 *T = (const kgpu_aes_u32 *)a.tables + KGPU_AES_TE;
    const kgpu_aes_u32 *rk = a.rk + KGPU_AES_RK_TWEAK;
    const kgpu_aes_u32 lane = 0;
    uint4 *out = (uint4 *)a.scratch;
    const kgpu_aes_u64 stride = (kgpu_aes_u64)gridDim.x * blockDim.x;
    for (kgpu_aes_u64 u = (kgpu_aes_u64)blockIdx.x * blockDim.x + threadIdx.x; u < a.units; u += stride) {
        kgpu_aes_u32 s[4];
        kgpu_aes_unit_iv(a, u, s);
        kgpu_aes_encrypt<NR, 0>(s, rk, T, lane);
        out[u] = make_uint4(kgpu_aes_bswap(s[0]), kgpu_aes_bswap(s[1]), kgpu_aes_bswap(s[2]), kgpu_aes_bswap(s[3]));
    }
}

extern "C" __global__ void kgpu_aes_xts_tweak(const __grid_constant__ KgpuAesArgs a)
{
    KGPU_AES_DISPATCH(a.rounds2, kgpu_aes_xts_tweak_body, a);
}

// One warp per unit: lane l handles blocks l, l + 32, ... with tweak T * x^j.
// Every lane computes the unit's encrypted tweak T itself (the two XTS keys
// have the same length, so the same NR): one more block per lane and unit
// instead of a second kernel and a tweak buffer per request. The encryption
// kernel has the replicated Te tables in shared memory; the decryption kernel
// reads the plain ones from global memory (every lane the same address).
// Units whose length is not a multiple of 16 leave their last full block to
// the stealing kernel.
template <int NR>
static __device__ __forceinline__ void kgpu_aes_xts_body(const KgpuAesArgs &a,
                                         bool dec)
{
    const kgpu_aes_u32 lane = threadIdx.x & 31;
    const kgpu_aes_u64 fb = a.unit_len >> 4;
    const kgpu_aes_u64 nproc = (a.unit_len & 15) ? fb - 1 : fb;
    const bool al = a.aligned != 0;
    kgpu_aes_u8 *data = (kgpu_aes_u8 *)a.data;
    const kgpu_aes_u64 warp = ((kgpu_aes_u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const kgpu_aes_u64 nwarps = ((kgpu_aes_u64)gridDim.x * blockDim.x) >> 5;
    for (kgpu_aes_u64 u = warp; u < a.units; u += nwarps) {
        kgpu_aes_u32 v[4];
        kgpu_aes_unit_iv(a, u, v);
        if (dec)
            kgpu_aes_encrypt<NR, 0>(v, a.rk + KGPU_AES_RK_TWEAK, (const kgpu_aes_u32 *)a.tables + KGPU_AES_TE, 0);
        else
            kgpu_aes_encrypt<NR, 1>(v, a.rk + KGPU_AES_RK_TWEAK, 0, lane);
#pragma unroll
        for (int i = 0; i < 4; i++)
            v[i] = kgpu_aes_bswap(v[i]);
        kgpu_aes_u32 x[4];
        // v = T * x^lane
#define KGPU_AES_LADDER(S)                                                                       \
    x[0] = v[0];                                                                                 \
    x[1] = v[1];                                                                                 \
    x[2] = v[2];                                                                                 \
    x[3] = v[3];                                                                                 \
    kgpu_aes_xts_mul<S>(x);                                                                      \
    if (lane & S) {                                                                              \
        v[0] = x[0];                                                                             \
        v[1] = x[1];                                                                             \
        v[2] = x[2];                                                                             \
        v[3] = x[3];                                                                             \
    }
        KGPU_AES_LADDER(1)
        KGPU_AES_LADDER(2)
        KGPU_AES_LADDER(4)
        KGPU_AES_LADDER(8)
        KGPU_AES_LADDER(16)
#undef KGPU_AES_LADDER
        kgpu_aes_u8 *unit = data + u * a.unit_len;
        for (kgpu_aes_u64 j0 = 0; j0 < nproc; j0 += 32) {
            kgpu_aes_u64 j = j0 + lane;
            if (j < nproc) {
                kgpu_aes_u8 *p = unit + j * 16;
                kgpu_aes_u32 w[4];
                kgpu_aes_load(p, al, w);
#pragma unroll
                for (int i = 0; i < 4; i++)
                    w[i] = kgpu_aes_bswap(w[i] ^ v[i]);
                if (dec)
                    kgpu_aes_decrypt<NR, 1>(w, a.rk + KGPU_AES_RK_DEC, 0, 0, lane);
                else
                    kgpu_aes_encrypt<NR, 1>(w, a.rk + KGPU_AES_RK_ENC, 0, lane);
#pragma unroll
                for (int i = 0; i < 4; i++)
                    w[i] = kgpu_aes_bswap(w[i]) ^ v[i];
                kgpu_aes_store(p, al, w);
            }
            kgpu_aes_xts_mul<32>(v);
        }
    }
}

extern "C" __global__ void __launch_bounds__(KGPU_AES_THREADS, 1) kgpu_aes_xts_enc(const __grid_constant__ KgpuAesArgs a)
{
    kgpu_aes_prologue(a, false);
    KGPU_AES_DISPATCH(a.rounds, kgpu_aes_xts_body, a, false);
}

extern "C" __global__ void __launch_bounds__(KGPU_AES_THREADS, 1) kgpu_aes_xts_dec(const __grid_constant__ KgpuAesArgs a)
{
    kgpu_aes_prologue(a, true);
    KGPU_AES_DISPATCH(a.rounds, kgpu_aes_xts_body, a, true);
}

// One XTS block with plain tables: w (little-endian words) = E/D(w ^ t) ^ t.
template <int NR>
static __device__ __forceinline__ void kgpu_aes_xts_one(const KgpuAesArgs &a, kgpu_aes_u32 w[4], const kgpu_aes_u32 t[4],
                                                        bool dec)
{
    const kgpu_aes_u32 *tab = (const kgpu_aes_u32 *)a.tables;
    const kgpu_aes_u32 *rk = a.rk;
    const kgpu_aes_u32 lane = 0;
#pragma unroll
    for (int i = 0; i < 4; i++)
        w[i] = kgpu_aes_bswap(w[i] ^ t[i]);
    if (dec)
        kgpu_aes_decrypt<NR, 0>(w, rk + KGPU_AES_RK_DEC, tab + KGPU_AES_TD, tab + KGPU_AES_ISB, lane);
    else
        kgpu_aes_encrypt<NR, 0>(w, rk + KGPU_AES_RK_ENC, tab + KGPU_AES_TE, lane);
#pragma unroll
    for (int i = 0; i < 4; i++)
        w[i] = kgpu_aes_bswap(w[i]) ^ t[i];
}

static __device__ __forceinline__ kgpu_aes_u8 kgpu_aes_byte(const kgpu_aes_u32 w[4], kgpu_aes_u32 k)
{
    return (kgpu_aes_u8)(w[k >> 2] >> (8 * (k & 3)));
}

static __device__ __forceinline__ void kgpu_aes_set_byte(kgpu_aes_u32 w[4], kgpu_aes_u32 k, kgpu_aes_u8 b)
{
    kgpu_aes_u32 sh = 8 * (k & 3);
    w[k >> 2] = (w[k >> 2] & ~(0xffu << sh)) | ((kgpu_aes_u32)b << sh);
}

// Ciphertext stealing for units whose length is not a multiple of 16: the
// last full block and the partial block, one thread per unit.
template <int NR>
static __device__ __forceinline__ void kgpu_aes_xts_cts_body(const KgpuAesArgs &a, bool dec)
{
    const kgpu_aes_u64 m = a.unit_len >> 4;
    const kgpu_aes_u32 r = (kgpu_aes_u32)(a.unit_len & 15);
    kgpu_aes_u8 *data = (kgpu_aes_u8 *)a.data;
    const uint4 *tw = (const uint4 *)a.scratch;
    const kgpu_aes_u64 stride = (kgpu_aes_u64)gridDim.x * blockDim.x;
    for (kgpu_aes_u64 u = (kgpu_aes_u64)blockIdx.x * blockDim.x + threadIdx.x; u < a.units; u += stride) {
        uint4 t0 = tw[u];
        kgpu_aes_u32 ta[4] = {t0.x, t0.y, t0.z, t0.w};
        for (kgpu_aes_u64 i = 0; i + 1 < m; i++)
            kgpu_aes_xts_mul<1>(ta);
        kgpu_aes_u32 tb[4] = {ta[0], ta[1], ta[2], ta[3]};
        kgpu_aes_xts_mul<1>(tb);
        // Encryption: tweaks (m-1, m); decryption: (m, m-1).
        const kgpu_aes_u32 *t1 = dec ? tb : ta;
        const kgpu_aes_u32 *t2 = dec ? ta : tb;
        kgpu_aes_u8 *last = data + u * a.unit_len + (m - 1) * 16;
        kgpu_aes_u8 *part = last + 16;
        kgpu_aes_u32 cc[4];
        kgpu_aes_load(last, false, cc);
        kgpu_aes_xts_one<NR>(a, cc, t1, dec);
        kgpu_aes_u32 pp[4] = {cc[0], cc[1], cc[2], cc[3]};
        for (kgpu_aes_u32 k = 0; k < r; k++) {
            kgpu_aes_set_byte(pp, k, part[k]);
            part[k] = kgpu_aes_byte(cc, k);
        }
        kgpu_aes_xts_one<NR>(a, pp, t2, dec);
        kgpu_aes_store(last, false, pp);
    }
}

extern "C" __global__ void kgpu_aes_xts_cts_enc(const __grid_constant__ KgpuAesArgs a)
{
    KGPU_AES_DISPATCH(a.rounds, kgpu_aes_xts_cts_body, a, false);
}

extern "C" __global__ void kgpu_aes_xts_cts_dec(const __grid_constant__ KgpuAesArgs a)
{
    KGPU_AES_DISPATCH(a.rounds, kgpu_aes_xts_cts_body, a, true);
}

// ---------------------------------------------------------------- CBC

// Encryption is sequential within a unit: one thread per unit.
template <int NR>
static __device__ __forceinline__ void kgpu_aes_cbc_enc_body(const KgpuAesArgs &a)
{
    const kgpu_aes_u32 lane = threadIdx.x & 31;
    const kgpu_aes_u64 fb = a.unit_len >> 4;
    const bool al = a.aligned != 0;
    kgpu_aes_u8 *data = (kgpu_aes_u8 *)a.data;
    const kgpu_aes_u64 stride = (kgpu_aes_u64)gridDim.x * blockDim.x;
    for (kgpu_aes_u64 u = (kgpu_aes_u64)blockIdx.x * blockDim.x + threadIdx.x; u < a.units; u += stride) {
        kgpu_aes_u32 prev[4];
        kgpu_aes_unit_iv(a, u, prev);
        kgpu_aes_u8 *p = data + u * a.unit_len;
        for (kgpu_aes_u64 j = 0; j < fb; j++, p += 16) {
            kgpu_aes_u32 w[4];
            kgpu_aes_load(p, al, w);
#pragma unroll
            for (int i = 0; i < 4; i++)
                w[i] = kgpu_aes_bswap(w[i]) ^ prev[i];
            kgpu_aes_encrypt<NR, 1>(w, a.rk + KGPU_AES_RK_ENC, 0, lane);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                prev[i] = w[i];
                w[i] = kgpu_aes_bswap(w[i]);
            }
            kgpu_aes_store(p, al, w);
        }
    }
}

extern "C" __global__ void __launch_bounds__(KGPU_AES_THREADS, 1) kgpu_aes_cbc_enc(const __grid_constant__ KgpuAesArgs a)
{
    kgpu_aes_prologue(a, false);
    KGPU_AES_DISPATCH(a.rounds, kgpu_aes_cbc_enc_body, a);
}

// Decryption is parallel: one warp per unit, 32 blocks per step; the previous
// ciphertext block comes from the neighbouring lane, or from the last lane of
// the previous step, so nothing is read after it was overwritten.
template <int NR>
static __device__ __forceinline__ void kgpu_aes_cbc_dec_body(const KgpuAesArgs &a)
{
    const kgpu_aes_u32 lane = threadIdx.x & 31;
    const kgpu_aes_u64 fb = a.unit_len >> 4;
    const bool al = a.aligned != 0;
    kgpu_aes_u8 *data = (kgpu_aes_u8 *)a.data;
    const kgpu_aes_u64 warp = ((kgpu_aes_u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const kgpu_aes_u64 nwarps = ((kgpu_aes_u64)gridDim.x * blockDim.x) >> 5;
    for (kgpu_aes_u64 u = warp; u < a.units; u += nwarps) {
        kgpu_aes_u32 carry[4];
        kgpu_aes_unit_iv(a, u, carry);
#pragma unroll
        for (int i = 0; i < 4; i++)
            carry[i] = kgpu_aes_bswap(carry[i]);
        kgpu_aes_u8 *unit = data + u * a.unit_len;
        for (kgpu_aes_u64 j0 = 0; j0 < fb; j0 += 32) {
            kgpu_aes_u64 j = j0 + lane;
            bool valid = j < fb;
            kgpu_aes_u32 c[4] = {0, 0, 0, 0};
            if (valid)
                kgpu_aes_load(unit + j * 16, al, c);
            kgpu_aes_u32 prev[4], w[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                prev[i] = __shfl_up_sync(0xffffffffu, c[i], 1);
                if (lane == 0)
                    prev[i] = carry[i];
                carry[i] = __shfl_sync(0xffffffffu, c[i], 31);
                w[i] = kgpu_aes_bswap(c[i]);
            }
            if (valid) {
                kgpu_aes_decrypt<NR, 1>(w, a.rk + KGPU_AES_RK_DEC, 0, 0, lane);
#pragma unroll
                for (int i = 0; i < 4; i++)
                    w[i] = kgpu_aes_bswap(w[i]) ^ prev[i];
                kgpu_aes_store(unit + j * 16, al, w);
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(KGPU_AES_THREADS, 1) kgpu_aes_cbc_dec(const __grid_constant__ KgpuAesArgs a)
{
    kgpu_aes_prologue(a, true);
    KGPU_AES_DISPATCH(a.rounds, kgpu_aes_cbc_dec_body, a);
}
