// SPDX-License-Identifier: GPL-2.0-only
//
// The example service's kernel: out[i] = in[i] + addend for every 32-bit
// word (little-endian, as the host and the GPU both are). `in` and `out`
// point at the request's extents in the device mirror of the data area (4-byte
// aligned, checked by the launcher) and may be the same (in place).
//
// Compiled at run time with NVRTC: no system headers, no libc.

extern "C" __global__ void kgpu_example_add(const unsigned int *in, unsigned int *out,
                                            unsigned long long words, unsigned int addend)
{
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < words; i += stride)
        out[i] = in[i] + addend;
}
