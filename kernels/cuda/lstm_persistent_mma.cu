// The forward recurrent loop of a whole LSTM sequence in one persistent kernel on tensor
// cores, for batches of kLstmPersistentMaxBatch + 1 to kLstmPersistentMmaMaxBatch rows
// (semantics in pyattn/lstm.h, LstmSeqCudaFwdParams). Smaller batches take the CUDA-core
// kernel of cuda/lstm_persistent.cu, whose layout this follows: block b owns hidden units
// J = [b·U, b·U + U) and keeps the 4U gate rows of W_hh for J in shared memory for the
// whole sequence; the blocks meet at a grid barrier after each step. Per step:
//   1. h_prev [n, H] streams through shared memory in K chunks of 128 bytes per row, a
//      ring of kStages cp.async buffers (y of the previous step, published by the
//      barrier, read from L2; rows that start at this step read h0);
//   2. gates [n, 4U] = h_prev · W_sliceᵀ with mma.sync: bf16 / fp16 on m16n8k16, fp32 on
//      m16n8k8 TF32 (only when p.tf32: torch's cudnn.allow_tf32 semantics, see csrc), fp32
//      accumulators. A warp owns 16-row batch tiles across all of the slice's 8-row
//      column tiles; with fewer tiles than warps the K steps are split among warps and
//      the partial sums added in shared memory;
//   3. the cell update of J's units (lstm_persistent::fwd_cell_update, shared with the
//      CUDA-core kernel).
// Both operands are read with ldmatrix from rows swizzled in 16-byte pieces (piece p of
// row r stored at p ^ (r mod 8) within its 128-byte group), so the 8 rows one ldmatrix
// matrix reads fall in 8 different bank groups.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda/grid_barrier.cuh"
#include "cuda/launch.cuh"
#include "cuda/lstm_persistent_common.cuh"
#include "cuda/ptx.cuh"
#include "cuda/storage.cuh"
#include "pyattn/lstm.h"

namespace pyattn {
namespace {

using lstm_persistent::aligned;
using lstm_persistent::step_at;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kChunkBytes = 128;                // one row's share of a staged K chunk
constexpr int kPieces = kChunkBytes / 16;       // its 16-byte pieces (cp.async and ldmatrix rows)
constexpr int kStepsPerChunk = 4;               // mma K steps per chunk: 32 bytes of each row apiece
constexpr int kMaxTilesPerWarp = 2;             // 16-row batch tiles per warp: 256 rows / 16 / 8 warps
static_assert(kLstmPersistentMmaMaxBatch <= 16 * kWarps * kMaxTilesPerWarp, "a warp holds at most 2 batch tiles");

// The tensor-core product for storage type T. Each K step reads 32 bytes of every row
// (16 elements of 16 bits, or 8 fp32), so both kinds load their fragments alike.
template <typename T>
struct Mma {  // __half, __nv_bfloat16: m16n8k16
  __device__ static void run(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    ptx::mma_16816<T>(d, a, b);
  }
  __device__ static uint32_t operand(uint32_t r) { return r; }
  __device__ static T weight(T w) { return w; }
};

template <>
struct Mma<float> {  // TF32 m16n8k8; operands rounded to nearest (the tensor cores would truncate)
  __device__ static void run(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    ptx::mma_1688_tf32(d, a, b);
  }
  __device__ static uint32_t operand(uint32_t r) {
    float x;
    memcpy(&x, &r, 4);
    return ptx::to_tf32(x);
  }
  __device__ static float weight(float w) {
    const uint32_t r = ptx::to_tf32(w);
    memcpy(&w, &r, 4);
    return w;
  }
};

// Byte offset of 16-byte piece `piece` of row `row` in rows of row_bytes (a multiple of 128).
__device__ __forceinline__ int64_t swizzled(int64_t row, int64_t row_bytes, int64_t piece) {
  return row * row_bytes + ((piece & ~int64_t(7)) | ((piece ^ row) & 7)) * 16;
}

// How the block's work divides: batch rows padded to 16-row tiles, split K among warps
// when there are fewer tiles than warps.
struct Split {
  int tiles;   // 16-row batch tiles
  int ksplit;  // warps sharing one tile's K steps (a power of two)
  __host__ __device__ static Split of(int64_t batch) {
    Split s{int((batch + 15) / 16), 1};
    while (2 * s.ksplit * s.tiles <= kWarps) s.ksplit *= 2;
    return s;
  }
  __host__ __device__ int rows() const { return 16 * tiles; }
};

struct Plan {
  int64_t units;  // hidden units per block (the last block may have fewer)
  int blocks;
  size_t smem;
};

struct Args {
  LstmSeqCudaFwdParams p;
  int64_t units;
};

// Shared memory: w [8·NT rows, chunks·128 bytes] (T, swizzled; rows past 4U and columns
// past H zero) | stages [kStages][rows, 128 bytes] | part [ksplit][rows, 8·NT] (fp32) |
// c [batch, U] (fp32).
template <typename T, int NT, int kStages>
size_t fwd_smem(int64_t units, int64_t hidden, int64_t batch) {
  const Split split = Split::of(batch);
  const int64_t chunks = (hidden * int64_t(sizeof(T)) + kChunkBytes - 1) / kChunkBytes;
  return aligned(size_t(8 * NT) * chunks * kChunkBytes) + aligned(size_t(kStages) * split.rows() * kChunkBytes) +
         aligned(size_t(split.ksplit) * split.rows() * 8 * NT * sizeof(float)) +
         aligned(size_t(batch) * units * sizeof(float));
}

template <typename T, int NT, int kStages>
__global__ void __launch_bounds__(kThreads) lstm_seq_fwd_persistent_mma_kernel(const Args args) {
  static_assert(NT % 2 == 0, "B fragments load two column tiles at a time");
  const LstmSeqCudaFwdParams& p = args.p;
  const int64_t H = p.hidden, j0 = int64_t(blockIdx.x) * args.units, U = min(args.units, H - j0), M = 4 * U;
  constexpr int kCols = 8 * NT;  // slice rows, padded
  const Split split = Split::of(p.batch);
  const int rows = split.rows();
  const int64_t chunks = (H * int64_t(sizeof(T)) + kChunkBytes - 1) / kChunkBytes;
  const int64_t w_row_bytes = chunks * kChunkBytes, row_bytes = H * int64_t(sizeof(T));
  PYATTN_DYNAMIC_SMEM(smem, 16);
  unsigned char* w = smem;  // slice row m = g·U + u is W_hh's row g·H + j0 + u
  unsigned char* stages = w + aligned(size_t(kCols) * w_row_bytes);
  float* part = reinterpret_cast<float*>(stages + aligned(size_t(kStages) * rows * kChunkBytes));
  float* c_own = part + aligned(size_t(split.ksplit) * rows * kCols * sizeof(float)) / sizeof(float);

  const T* w_hh = static_cast<const T*>(p.w_hh);
  constexpr int kPer = 16 / int(sizeof(T));  // elements per 16-byte piece
  for (int64_t e = threadIdx.x; e < kCols * chunks * kPieces; e += kThreads) {
    const int64_t m = e / (chunks * kPieces), piece = e % (chunks * kPieces);
    T v[kPer];
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int64_t k = piece * kPer + i;
      v[i] = m < M && k < H ? Mma<T>::weight(w_hh[((m / U) * H + j0 + m % U) * H + k]) : from_acc<T>(0.0f);
    }
    memcpy(w + swizzled(m, w_row_bytes, piece), v, 16);
  }

  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int ksplit_index = warp % split.ksplit, first_tile = warp / split.ksplit;
  const int tile_stride = kWarps / split.ksplit;
  const T* h0 = static_cast<const T*>(p.h0);
  const T* y = static_cast<const T*>(p.y);

  for (int64_t s = 0; s < p.nsteps; ++s) {
    const LstmStep cur = step_at(p, s), prev = s ? step_at(p, s - 1) : LstmStep{0, 0};
    const int n = int(cur.n), pn = int(prev.n);
    // Chunk c of h_prev into ring buffer c mod kStages: row r continues from the previous
    // step's row r if that step had it, else starts from h0 (as the CPU loop); rows >= n
    // and bytes past H are zero. One commit per call, copies or not, so that
    // wait<kStages - 2> below always means "chunk c has landed".
    auto issue = [&](int64_t c) {
      if (c < chunks) {
        unsigned char* buf = stages + (c % kStages) * rows * kChunkBytes;
        for (int e = threadIdx.x; e < rows * kPieces; e += kThreads) {
          const int r = e / kPieces, piece = e % kPieces;
          const int64_t at = c * kChunkBytes + piece * 16;  // byte within the row
          const T* src_row = r < pn ? y + (prev.off + r) * H : h0 + int64_t(r) * H;
          const int64_t left = row_bytes - at;  // a multiple of 16: rows are whole pieces
          const int bytes = r < n && left > 0 ? 16 : 0;
          ptx::cp_async_16(buf + swizzled(r, kChunkBytes, piece),
                           bytes ? static_cast<const void*>(reinterpret_cast<const unsigned char*>(src_row) + at) : h0,
                           bytes);
        }
      }
      ptx::cp_async_commit();
    };
    float acc[kMaxTilesPerWarp][NT][4] = {};
    for (int c = 0; c < kStages - 1; ++c) issue(c);
    for (int64_t c = 0; c < chunks; ++c) {
      ptx::cp_async_wait<kStages - 2>();
      __syncthreads();  // chunk c visible to all; every warp is done with chunk c - 1's buffer
      issue(c + kStages - 1);  // into that buffer
      const unsigned char* buf = stages + (c % kStages) * rows * kChunkBytes;
#pragma unroll
      for (int kk = 0; kk < kStepsPerChunk; ++kk) {
        if ((c * kStepsPerChunk + kk) % split.ksplit != ksplit_index) continue;
        // B: ldmatrix x4 gives two column tiles (lanes 0-15 the first, 16-31 the second),
        // 32 bytes each: lanes 8-15 and 24-31 the second 16 bytes.
        uint32_t b[NT][2];
#pragma unroll
        for (int jp = 0; jp < NT / 2; ++jp) {
          uint32_t r4[4];
          const int64_t wrow = jp * 16 + (lane & 7) + ((lane >> 4) << 3);
          ptx::ldmatrix_x4(r4, w + swizzled(wrow, w_row_bytes, c * kPieces + 2 * kk + ((lane >> 3) & 1)));
          b[2 * jp][0] = r4[0];
          b[2 * jp][1] = r4[1];
          b[2 * jp + 1][0] = r4[2];
          b[2 * jp + 1][1] = r4[3];
        }
#pragma unroll
        for (int i = 0; i < kMaxTilesPerWarp; ++i) {
          const int tile = first_tile + i * tile_stride;
          if (tile >= split.tiles) break;
          // A: rows 0-15 of the tile (lanes 0-15), first then second 16 bytes (lanes 16-31).
          uint32_t a[4];
          const int arow = tile * 16 + (lane & 15);
          ptx::ldmatrix_x4(a, buf + swizzled(arow, kChunkBytes, 2 * kk + (lane >> 4)));
#pragma unroll
          for (int q = 0; q < 4; ++q) a[q] = Mma<T>::operand(a[q]);
#pragma unroll
          for (int j = 0; j < NT; ++j) Mma<T>::run(acc[i][j], a, b[j]);
        }
      }
    }
    // Accumulators to part[ksplit_index][row][col]: c[0], c[1] at row g, columns 2t, 2t+1
    // of the tile; c[2], c[3] at row g + 8.
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int i = 0; i < kMaxTilesPerWarp; ++i) {
      const int tile = first_tile + i * tile_stride;
      if (tile >= split.tiles) break;
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int row = tile * 16 + g + 8 * (q / 2), col = j * 8 + 2 * t + q % 2;
          part[(int64_t(ksplit_index) * rows + row) * kCols + col] = acc[i][j][q];
        }
    }
    __syncthreads();
    const int nn = s + 1 < p.nsteps ? min(n, int(step_at(p, s + 1).n)) : 0;  // rows [nn, n) end here
    lstm_persistent::fwd_cell_update<T>(p, j0, U, n, pn, nn, cur.off, c_own, kThreads, [&](int r, int64_t m) {
      float v = 0;
      for (int k = 0; k < split.ksplit; ++k) v += part[(int64_t(k) * rows + r) * kCols + m];
      return v;
    });
    if (s + 1 < p.nsteps) grid_barrier(p.barrier, unsigned(s + 1));  // publishes y
  }
}

// ------------------------------------------------------------------------------- host

using Kernel = void (*)(Args);
using SmemFor = size_t (*)(int64_t, int64_t, int64_t);

// The smallest slice that puts every block on its own SM, the kernel instance for its
// column tiles and the deepest ring that fits; blocks = 0 when this device or shape
// cannot run it.
template <typename T>
Plan plan_for(const LstmSeqCudaFwdParams& p, Kernel* kernel) {
  const Plan none{0, 0, 0};
  const int64_t H = p.hidden;
  if (p.batch <= kLstmPersistentMaxBatch || p.batch > kLstmPersistentMmaMaxBatch || H < 1) return none;
  if (std::is_same_v<T, float> && !p.tf32) return none;
  // cp.async moves 16 aligned bytes: every row of y and h0 must start on a 16-byte boundary.
  if ((H * int64_t(sizeof(T))) % 16 || reinterpret_cast<uintptr_t>(p.y) % 16 ||
      reinterpret_cast<uintptr_t>(p.h0) % 16)
    return none;
  int dev = 0, sms = 0, coop = 0, optin = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
    (void)cudaGetLastError();
    return none;
  }
  if (!coop || sms < 1 || major < 8) return none;
  const int64_t units = (H + sms - 1) / sms, cols = 4 * units;
  // Instances by column tiles (4U padded to 16, 32, 64) and ring depth (4, else 2).
  struct Instance {
    int64_t max_cols;
    Kernel kernel;
    SmemFor smem;
  };
  const Instance instances[] = {
      {16, lstm_seq_fwd_persistent_mma_kernel<T, 2, 4>, fwd_smem<T, 2, 4>},
      {16, lstm_seq_fwd_persistent_mma_kernel<T, 2, 2>, fwd_smem<T, 2, 2>},
      {32, lstm_seq_fwd_persistent_mma_kernel<T, 4, 4>, fwd_smem<T, 4, 4>},
      {32, lstm_seq_fwd_persistent_mma_kernel<T, 4, 2>, fwd_smem<T, 4, 2>},
      {64, lstm_seq_fwd_persistent_mma_kernel<T, 8, 4>, fwd_smem<T, 8, 4>},
      {64, lstm_seq_fwd_persistent_mma_kernel<T, 8, 2>, fwd_smem<T, 8, 2>},
  };
  for (const Instance& in : instances) {
    if (cols > in.max_cols) continue;
    const size_t smem = in.smem(units, H, p.batch);
    if (smem > size_t(optin)) continue;
    int per_sm = 0;
    if (cudaFuncSetAttribute(reinterpret_cast<const void*>(in.kernel), cudaFuncAttributeMaxDynamicSharedMemorySize,
                             optin) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, in.kernel, kThreads, smem) != cudaSuccess) {
      (void)cudaGetLastError();
      return none;
    }
    const int blocks = int((H + units - 1) / units);
    if (int64_t(per_sm) * sms < blocks) continue;
    *kernel = in.kernel;
    return {units, blocks, smem};
  }
  return none;
}

}  // namespace

bool lstm_seq_fwd_persistent_mma_cuda(const LstmSeqCudaFwdParams& p, cudaStream stream) {
  bool launched = false;
  with_storage(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, double>) {  // no fp64 tensor-core path
      Kernel kernel = nullptr;
      const Plan plan = plan_for<T>(p, &kernel);
      if (!plan.blocks || p.nsteps < 1) return;
      const auto s = reinterpret_cast<cudaStream_t>(stream);
      const Args args{p, plan.units};
      if (cudaMemsetAsync(p.barrier, 0, sizeof(unsigned), s) == cudaSuccess &&
          PYATTN_LAUNCH_COOPERATIVE(plan.blocks, kThreads, plan.smem, s, kernel, args) == cudaSuccess) {
        launched = true;
        return;
      }
      (void)cudaGetLastError();  // the caller's loop runs instead
    }
  });
  return launched;
}

}  // namespace pyattn
