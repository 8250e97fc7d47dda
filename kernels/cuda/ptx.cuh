// The PTX instructions pyattn's mma.sync kernels use, one small device function each, so
// that tests/cuda_emulation/ptx_emulated.h can stand in for every one of them lane by lane
// (DESIGN.md, rule 10). Fragment layouts are the PTX ISA's ("Matrix fragments for
// mma.m16n8k16 with floating point type"); in a warp, lane = 4·g + t (g = lane / 4, the
// group; t = lane % 4, the thread in the group):
//   A, 16x16 row-major, 4 registers of two 16-bit elements (the lower address in the low
//      half): a[0] = A[g][2t, 2t+1], a[1] = A[g+8][2t, 2t+1], a[2] = A[g][2t+8, 2t+9],
//      a[3] = A[g+8][2t+8, 2t+9];
//   B, 16x8 (k x n), 2 registers: b[0] = B[2t, 2t+1][g], b[1] = B[2t+8, 2t+9][g];
//   C and D, 16x8 fp32: c[0], c[1] = C[g][2t, 2t+1], c[2], c[3] = C[g+8][2t, 2t+1].
// mma.m16n8k8 with TF32 inputs ("Matrix fragments for mma.m16n8k8", .tf32), one 32-bit
// element per register:
//   A, 16x8 row-major: a[0] = A[g][t], a[1] = A[g+8][t], a[2] = A[g][t+4], a[3] = A[g+8][t+4];
//   B, 8x8 (k x n): b[0] = B[t][g], b[1] = B[t+4][g]; C and D as for m16n8k16.
// ldmatrix on fp32 data (16-byte rows of 4 elements) gives lane 4g + t row g, element t
// of each matrix: matrices (rows 0-7, k 0-3), (rows 8-15, k 0-3), (rows 0-7, k 4-7),
// (rows 8-15, k 4-7) are the TF32 A operand, as (k 0-7, 16 bits) are the 16-bit one.
// So an accumulator of two neighbouring 8-column blocks is, converted to 16 bits, the A
// operand of the next product (FlashAttention-2 keeps P in registers this way).
//   ldmatrix .x4: lanes 8i..8i+7 give the addresses of the 8 rows (16 bytes each) of
//      matrix i; register i of lane 4g + t gets row g, elements 2t, 2t+1 of matrix i, or
//      with .trans row 2t and 2t+1, element g (the transposed matrix's).
//   cp.async: a 16-byte copy from global to shared memory that lands asynchronously; the
//      copies a thread issued since its last commit form a group, and wait<N> blocks the
//      thread until at most N of its groups are still in flight. Other threads see the
//      data after their __syncthreads that follows the wait.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(PYATTN_CUDA_EMULATION)
#include "ptx_emulated.h"
#else

namespace pyattn {
namespace ptx {

// d += a·b on tensor cores: A 16x16 and B 16x8 of T (__half or __nv_bfloat16), fp32 D.
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#else
  __trap();  // callers are compiled for compute capability 8+ only
#endif
}

// d += a·b on tensor cores: A 16x8 and B 8x8 of TF32 (fp32 bit patterns; the low 13
// mantissa bits are ignored, see to_tf32), fp32 D.
__device__ __forceinline__ void mma_1688_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  __trap();
#endif
}

// x rounded to TF32 (10 mantissa bits), to nearest with ties away from zero, as an fp32
// bit pattern: the tensor cores would otherwise truncate.
__device__ __forceinline__ uint32_t to_tf32(float x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
#else
  __trap();
  return 0;
#endif
}

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Four 8x8 matrices of 16-bit elements from shared memory; row_addr is this lane's row.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row_addr) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(row_addr)));
#else
  __trap();
#endif
}

// As ldmatrix_x4, each matrix transposed.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row_addr) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(row_addr)));
#else
  __trap();
#endif
}

// 16 bytes from global src (16-byte aligned) to shared dst (16-byte aligned): the first
// src_bytes (0 to 16) are read, the rest of dst is zero-filled. Cached in L2 only (.cg):
// each tile is read once per block.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(dst)), "l"(src),
               "r"(src_bytes));
#else
  __trap();
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Blocks until at most N of this thread's committed groups are in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");  // no shared-memory read moves above it
#endif
}

}  // namespace ptx
}  // namespace pyattn

#endif  // PYATTN_CUDA_EMULATION

namespace pyattn {
namespace ptx {

// Two floats rounded to T (__half or __nv_bfloat16) in one register, lo in the low half:
// the operand layout of mma_16816.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  uint32_t r;
  if constexpr (std::is_same_v<T, __half>) {
    const __half2 v = __floats2half2_rn(lo, hi);
    memcpy(&r, &v, 4);
  } else {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    memcpy(&r, &v, 4);
  }
  return r;
}

// fp32 on tensor cores at fp32 accuracy (3xTF32, CUTLASS's OpMultiplyAddFastF32, the
// arithmetic of torch's memory-efficient SDPA for fp32 on compute capability 8+): x splits
// into big = tf32(x) and small = tf32(x - big), about 21 of x's 24 mantissa bits, and
// a·b = small·big + big·small + big·big, dropping small·small (2^-22 of |a·b|). The small
// products go first, so that they are not lost against the large one.
struct Tf32Pair {
  uint32_t big, small;
};

// A float's bits as a register of mma_1688_tf32's operands, and back.
__device__ __forceinline__ uint32_t bits_of(float x) {
  uint32_t r;
  memcpy(&r, &x, 4);
  return r;
}

__device__ __forceinline__ float float_of(uint32_t bits) {
  float r;
  memcpy(&r, &bits, 4);
  return r;
}

__device__ __forceinline__ Tf32Pair split_tf32(float x) {
  const uint32_t big = to_tf32(x);
  return {big, to_tf32(x - float_of(big))};
}

// d += a·b for A 16x8 and B 8x8 fp32 operands in mma_1688_tf32's registers, split.
__device__ __forceinline__ void mma_1688_3xtf32(float (&d)[4], const uint32_t (&a_big)[4], const uint32_t (&a_small)[4],
                                                const uint32_t (&b_big)[2], const uint32_t (&b_small)[2]) {
  mma_1688_tf32(d, a_small, b_big);
  mma_1688_tf32(d, a_big, b_small);
  mma_1688_tf32(d, a_big, b_big);
}

}  // namespace ptx
}  // namespace pyattn
