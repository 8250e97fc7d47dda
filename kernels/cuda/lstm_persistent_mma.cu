// The recurrent loop of a whole LSTM sequence in one persistent kernel on tensor cores,
// forward and backward, for batches of kLstmPersistentMaxBatch + 1 to
// kLstmPersistentMmaMaxBatch rows (semantics in pyattn/lstm.h, LstmSeqCudaFwdParams /
// LstmSeqCudaBwdParams). Smaller batches take the CUDA-core kernels of
// cuda/lstm_persistent.cu, whose layout these follow: block b owns hidden units
// J = [b·U, b·U + U), keeps a slice of W_hh in shared memory for the whole sequence
// (forward: the 4U gate rows of J; backward: the U columns of J, as rows), and the blocks
// meet at a grid barrier after each step. Per step, one product X · Sliceᵀ (Product):
//   forward   X = h_prev [n, H] (y of the previous step; h0 for rows that start now),
//             giving the gates [n, 4U] for J's cell update;
//   backward  X = dgates of the step after [n1, 4H], giving dh [n1, U] for J's
//             pointwise backward;
// and the pointwise work of lstm_persistent_common.cuh, shared with the CUDA-core
// kernels. The product:
//   - X streams through shared memory in K chunks of 128 bytes per row, a ring of
//     kStages cp.async buffers (read from L2, where the last barrier published it);
//   - mma.sync with fp32 accumulators: bf16 / fp16 on m16n8k16, fp32 on m16n8k8 TF32
//     when p.tf32 (torch's cudnn.allow_tf32 semantics, see csrc/lstm.cpp), else as
//     3xTF32 (kSplit: both operands split into TF32 big and small parts, three products,
//     fp32's accuracy; ptx::mma_1688_3xtf32);
//   - a warp owns 16-row tiles of X across all of the slice's 8-row column tiles; with
//     fewer tiles than warps the K steps are split among warps and the partial sums
//     added in shared memory;
//   - both operands are read with ldmatrix from rows swizzled in 16-byte pieces (piece p
//     of row r stored at p ^ (r mod 8) within its 128-byte group), so the 8 rows one
//     ldmatrix matrix reads fall in 8 different bank groups.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda/launch.cuh"
#include "cuda/lstm_persistent_common.cuh"
#include "cuda/ptx.cuh"
#include "cuda/storage.cuh"
#include "pyattn/lstm.h"

namespace pyattn {
namespace {

using lstm_persistent::aligned;
using lstm_persistent::step_at;

constexpr int kThreads = 256;  // one block per SM (a persistent grid): __launch_bounds__(kThreads, 1)
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
  __device__ static uint32_t operand(uint32_t r) { return ptx::to_tf32(ptx::float_of(r)); }
  __device__ static float weight(float w) { return ptx::float_of(ptx::to_tf32(w)); }
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

// Splits each register's fp32 value into TF32 big (left in x) and small parts.
template <int N>
__device__ __forceinline__ void split_tf32(uint32_t (&x)[N], uint32_t (&small)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const ptx::Tf32Pair pair = ptx::split_tf32(ptx::float_of(x[i]));
    x[i] = pair.big, small[i] = pair.small;
  }
}

// The slice product of one step: acc = X · Sliceᵀ for this warp's tiles, where X [rows,
// K] (row r < n at x_row(r), rows n.. zero) streams through the ring and Slice [8·NT,
// K] is resident (swizzled rows of w_row_bytes). Then store() writes the partial sums to
// part [ksplit][rows][8·NT] and sum() adds them up (after a barrier). kSplit: fp32 as
// 3xTF32 (the slice kept in full fp32, both operands split per product step).
template <typename T, int NT, int kStages, bool kSplit = false>
struct Product {
  static_assert(!kSplit || std::is_same_v<T, float>, "3xTF32 is for fp32");
  static constexpr int kCols = 8 * NT;
  Split split;
  int warp, lane;

  __device__ explicit Product(int64_t batch)
      : split(Split::of(batch)), warp(int(threadIdx.x) / 32), lane(int(threadIdx.x) % 32) {}
  __device__ int ksplit_index() const { return warp % split.ksplit; }
  __device__ int tile(int i) const { return warp / split.ksplit + i * (kWarps / split.ksplit); }

  // Bytes of the ring, and of the partial sums.
  __host__ __device__ static size_t stage_bytes(const Split& s) { return size_t(kStages) * s.rows() * kChunkBytes; }
  __host__ __device__ static size_t part_bytes(const Split& s) {
    return size_t(s.ksplit) * s.rows() * kCols * sizeof(float);
  }

  // Slice row m, element k = value(m, k) (rows from `valid` on and columns from K on are
  // zero), rounded for the product; chunks·128 bytes per row.
  template <typename Value>
  __device__ static void load_slice(unsigned char* w, int64_t valid, int64_t K, Value value) {
    constexpr int kPer = 16 / int(sizeof(T));  // elements per 16-byte piece
    const int64_t pieces = (K * int64_t(sizeof(T)) + kChunkBytes - 1) / kChunkBytes * kPieces;
    for (int64_t e = threadIdx.x; e < kCols * pieces; e += kThreads) {
      const int64_t m = e / pieces, piece = e % pieces;
      T v[kPer];
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
        const int64_t k = piece * kPer + i;
        const T w = m < valid && k < K ? value(m, k) : from_acc<T>(0.0f);
        v[i] = kSplit ? w : Mma<T>::weight(w);
      }
      memcpy(w + swizzled(m, pieces * 16, piece), v, 16);
    }
  }

  template <typename XRow>
  __device__ void run(float (&acc)[kMaxTilesPerWarp][NT][4], const unsigned char* w, unsigned char* stages,
                      int64_t K, int n, XRow x_row) const {
    const int rows = split.rows();
    const int64_t row_bytes = K * int64_t(sizeof(T)), chunks = (row_bytes + kChunkBytes - 1) / kChunkBytes;
    const int64_t w_row_bytes = chunks * kChunkBytes;
    // Chunk c of X into ring buffer c mod kStages; bytes past K are zero (rows are whole
    // 16-byte pieces). One commit per call, copies or not, so that wait<kStages - 2>
    // below always means "chunk c has landed".
    auto issue = [&](int64_t c) {
      if (c < chunks) {
        unsigned char* buf = stages + (c % kStages) * rows * kChunkBytes;
        for (int e = threadIdx.x; e < rows * kPieces; e += kThreads) {
          const int r = e / kPieces, piece = e % kPieces;
          const int64_t at = c * kChunkBytes + piece * 16;  // byte within the row
          const bool copy = r < n && at < row_bytes;
          ptx::cp_async_16(buf + swizzled(r, kChunkBytes, piece),
                           reinterpret_cast<const unsigned char*>(x_row(copy ? r : 0)) + (copy ? at : 0),
                           copy ? 16 : 0);  // zero-fill: nothing is read, from a valid address
        }
      }
      ptx::cp_async_commit();
    };
#pragma unroll
    for (int i = 0; i < kMaxTilesPerWarp; ++i)
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.0f;
    for (int c = 0; c < kStages - 1; ++c) issue(c);
    for (int64_t c = 0; c < chunks; ++c) {
      ptx::cp_async_wait<kStages - 2>();
      __syncthreads();  // chunk c visible to all; every warp is done with chunk c - 1's buffer
      issue(c + kStages - 1);  // into that buffer
      const unsigned char* buf = stages + (c % kStages) * rows * kChunkBytes;
#pragma unroll
      for (int kk = 0; kk < kStepsPerChunk; ++kk) {
        if ((c * kStepsPerChunk + kk) % split.ksplit != ksplit_index()) continue;
        // B: ldmatrix x4 gives two column tiles (lanes 0-15 the first, 16-31 the
        // second; with NT odd the last pair reads its tile twice), 32 bytes each: lanes
        // 8-15 and 24-31 the second 16 bytes.
        uint32_t b[NT + 1][2];
#pragma unroll
        for (int jp = 0; jp < (NT + 1) / 2; ++jp) {
          uint32_t r4[4];
          const int second = 2 * jp + 1 < NT ? 2 * jp + 1 : 2 * jp;
          const int64_t wrow = ((lane >> 4) ? second : 2 * jp) * 8 + (lane & 7);
          ptx::ldmatrix_x4(r4, w + swizzled(wrow, w_row_bytes, c * kPieces + 2 * kk + ((lane >> 3) & 1)));
          b[2 * jp][0] = r4[0];
          b[2 * jp][1] = r4[1];
          b[2 * jp + 1][0] = r4[2];
          b[2 * jp + 1][1] = r4[3];
        }
        uint32_t b_small[kSplit ? NT + 1 : 1][2];
        if constexpr (kSplit) {
#pragma unroll
          for (int j = 0; j < NT; ++j) split_tf32(b[j], b_small[j]);
        }
#pragma unroll
        for (int i = 0; i < kMaxTilesPerWarp; ++i) {
          if (tile(i) >= split.tiles) break;
          // A: rows 0-15 of the tile (lanes 0-15), first then second 16 bytes (lanes 16-31).
          uint32_t a[4];
          ptx::ldmatrix_x4(a, buf + swizzled(tile(i) * 16 + (lane & 15), kChunkBytes, 2 * kk + (lane >> 4)));
          if constexpr (kSplit) {
            uint32_t a_small[4];
            split_tf32(a, a_small);
#pragma unroll
            for (int j = 0; j < NT; ++j) ptx::mma_1688_3xtf32(acc[i][j], a, a_small, b[j], b_small[j]);
          } else {
#pragma unroll
            for (int q = 0; q < 4; ++q) a[q] = Mma<T>::operand(a[q]);
#pragma unroll
            for (int j = 0; j < NT; ++j) Mma<T>::run(acc[i][j], a, b[j]);
          }
        }
      }
    }
  }

  // Accumulators to part[ksplit_index][row][col]: c[0], c[1] at row g, columns 2t, 2t+1
  // of the tile; c[2], c[3] at row g + 8.
  __device__ void store(const float (&acc)[kMaxTilesPerWarp][NT][4], float* part) const {
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int i = 0; i < kMaxTilesPerWarp; ++i) {
      if (tile(i) >= split.tiles) break;
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int row = tile(i) * 16 + g + 8 * (q / 2), col = j * 8 + 2 * t + q % 2;
          part[(int64_t(ksplit_index()) * split.rows() + row) * kCols + col] = acc[i][j][q];
        }
    }
  }

  __device__ float sum(const float* part, int r, int64_t m) const {
    float v = 0;
    for (int k = 0; k < split.ksplit; ++k) v += part[(int64_t(k) * split.rows() + r) * kCols + m];
    return v;
  }
};

struct Plan {
  int64_t units;  // hidden units per block (the last block may have fewer)
  int blocks;
  size_t smem;
};

template <typename Params>
struct Args {
  Params p;
  int64_t units;
};

// Bytes of the resident slice: `cols` rows of K elements padded to whole chunks.
template <typename T>
__host__ __device__ size_t slice_bytes(int64_t cols, int64_t K) {
  return size_t(cols) * ((K * int64_t(sizeof(T)) + kChunkBytes - 1) / kChunkBytes) * kChunkBytes;
}

// ------------------------------------------------------------------------------ forward

// Shared memory: w [8·NT rows, H] (T, swizzled) | ring | part | c [batch, U] (fp32).
template <typename T, int NT, int kStages>
size_t fwd_smem(int64_t units, int64_t hidden, int64_t batch) {
  using P = Product<T, NT, kStages>;
  const Split split = Split::of(batch);
  return aligned(slice_bytes<T>(P::kCols, hidden)) + aligned(P::stage_bytes(split)) +
         aligned(P::part_bytes(split)) + aligned(size_t(batch) * units * sizeof(float));
}

template <typename T, int NT, int kStages, bool kSplit>
__global__ void __launch_bounds__(kThreads, 1)
    lstm_seq_fwd_persistent_mma_kernel(const Args<LstmSeqCudaFwdParams> args) {
  using P = Product<T, NT, kStages, kSplit>;
  const LstmSeqCudaFwdParams& p = args.p;
  const int64_t H = p.hidden, j0 = int64_t(blockIdx.x) * args.units, U = min(args.units, H - j0);
  const P product(p.batch);
  PYATTN_DYNAMIC_SMEM(smem, 16);
  unsigned char* w = smem;  // slice row m = g·U + u is W_hh's row g·H + j0 + u
  unsigned char* stages = w + aligned(slice_bytes<T>(P::kCols, H));
  float* part = reinterpret_cast<float*>(stages + aligned(P::stage_bytes(product.split)));
  float* c_own = part + aligned(P::part_bytes(product.split)) / sizeof(float);
  const T* w_hh = static_cast<const T*>(p.w_hh);
  P::load_slice(w, 4 * U, H, [&](int64_t m, int64_t k) { return w_hh[((m / U) * H + j0 + m % U) * H + k]; });
  const T* h0 = static_cast<const T*>(p.h0);
  const T* y = static_cast<const T*>(p.y);

  // Row r continues from the previous step's row r if that step had it, else starts
  // from h0 (as the CPU loop).
  const auto step_product = [&](const LstmStep& prev, const LstmStep& cur) {
    float acc[kMaxTilesPerWarp][NT][4];
    product.run(acc, w, stages, H, int(cur.n),
                [&](int r) { return r < prev.n ? y + (prev.off + r) * H : h0 + int64_t(r) * H; });
    product.store(acc, part);
    __syncthreads();
  };
  lstm_persistent::fwd_loop<T>(p, j0, U, c_own, kThreads, step_product,
                               [&](int r, int64_t m) { return product.sum(part, r, m); });
}

// ----------------------------------------------------------------------------- backward

// Shared memory: wt [8·NT rows, 4H] (T, swizzled) | ring | part | dc [batch, U] |
// dz [batch, 4U] | dbias [4U] (fp32).
template <typename T, int NT, int kStages>
size_t bwd_smem(int64_t units, int64_t hidden, int64_t batch) {
  using P = Product<T, NT, kStages>;
  const Split split = Split::of(batch);
  return aligned(slice_bytes<T>(P::kCols, 4 * hidden)) + aligned(P::stage_bytes(split)) +
         aligned(P::part_bytes(split)) + aligned(size_t(batch) * units * sizeof(float)) +
         aligned(size_t(batch) * 4 * units * sizeof(float)) + aligned(4 * size_t(units) * sizeof(float));
}

template <typename T, int NT, int kStages, bool kSplit>
__global__ void __launch_bounds__(kThreads, 1)
    lstm_seq_bwd_persistent_mma_kernel(const Args<LstmSeqCudaBwdParams> args) {
  using P = Product<T, NT, kStages, kSplit>;
  const LstmSeqCudaBwdParams& p = args.p;
  const int64_t H = p.hidden, H4 = 4 * H, j0 = int64_t(blockIdx.x) * args.units, U = min(args.units, H - j0);
  const P product(p.batch);
  PYATTN_DYNAMIC_SMEM(smem, 16);
  unsigned char* wt = smem;  // slice row u is W_hh's column j0 + u
  unsigned char* stages = wt + aligned(slice_bytes<T>(P::kCols, H4));
  float* part = reinterpret_cast<float*>(stages + aligned(P::stage_bytes(product.split)));
  float* dc_own = part + aligned(P::part_bytes(product.split)) / sizeof(float);
  float* dz_own = dc_own + aligned(size_t(p.batch) * args.units * sizeof(float)) / sizeof(float);
  float* db_own = dz_own + aligned(size_t(p.batch) * 4 * args.units * sizeof(float)) / sizeof(float);
  const T* w_hh = static_cast<const T*>(p.w_hh);
  P::load_slice(wt, U, H4, [&](int64_t u, int64_t q) { return w_hh[q * H + j0 + u]; });
  for (int64_t e = threadIdx.x; e < 4 * U; e += kThreads) db_own[e] = 0;  // first read after a barrier
  const T* dgates = static_cast<const T*>(p.dgates);
  const auto step_product = [&](const LstmStep& after) {
    float acc[kMaxTilesPerWarp][NT][4];
    product.run(acc, wt, stages, H4, int(after.n), [&](int r) { return dgates + (after.off + r) * H4; });
    product.store(acc, part);
    __syncthreads();
  };
  lstm_persistent::bwd_loop<T>(p, j0, U, dc_own, dz_own, db_own, kThreads, step_product,
                               [&](int r, int64_t u) { return product.sum(part, r, u); });
}

// ------------------------------------------------------------------------------- host

// One compiled instance: the slice columns it takes (8·NT) and its ring depth.
template <typename Kernel>
struct Instance {
  int64_t max_cols;
  Kernel kernel;
  size_t (*smem)(int64_t, int64_t, int64_t);
};

// Whether the rows the ring copies start on 16-byte boundaries (cp.async moves 16
// aligned bytes): forward y and h0, backward dgates; row lengths are checked by plan_for.
bool rows_aligned(const LstmSeqCudaFwdParams& p) {
  return reinterpret_cast<uintptr_t>(p.y) % 16 == 0 && reinterpret_cast<uintptr_t>(p.h0) % 16 == 0;
}
bool rows_aligned(const LstmSeqCudaBwdParams& p) { return reinterpret_cast<uintptr_t>(p.dgates) % 16 == 0; }

// The smallest slice that puts every block on its own SM (cols(units) slice rows), the
// first instance whose columns hold them and that fits (deeper rings first); blocks = 0
// when this device or shape cannot run any.
template <typename T, typename Params, typename Kernel, size_t N>
Plan plan_for(const Params& p, const Instance<Kernel> (&instances)[N], int64_t (*cols)(int64_t), Kernel* kernel) {
  const Plan none{0, 0, 0};
  const int64_t H = p.hidden;
  if (p.batch <= kLstmPersistentMaxBatch || p.batch > kLstmPersistentMmaMaxBatch || H < 1) return none;
  // cp.async moves 16 aligned bytes: rows of H elements (and of 4H) start on 16-byte boundaries.
  if ((H * int64_t(sizeof(T))) % 16 || !rows_aligned(p)) return none;
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
  const int64_t units = (H + sms - 1) / sms;
  for (const Instance<Kernel>& in : instances) {
    if (cols(units) > in.max_cols) continue;
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

// Zeroes the barrier counter and launches the planned kernel cooperatively; false (and
// nothing launched) when there is no plan or the launch fails.
template <typename Params, typename Kernel>
bool launch(const Plan& plan, Kernel kernel, const Params& p, cudaStream stream) {
  if (!plan.blocks || p.nsteps < 1) return false;
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  const Args<Params> args{p, plan.units};
  if (cudaMemsetAsync(p.barrier, 0, sizeof(unsigned), s) == cudaSuccess &&
      PYATTN_LAUNCH_COOPERATIVE(plan.blocks, kThreads, plan.smem, s, kernel, args) == cudaSuccess)
    return true;
  (void)cudaGetLastError();  // the caller's loop runs instead
  return false;
}

// plan_for, then launch, on the instance the plan picks.
template <typename T, typename Params, typename Kernel, size_t N>
bool launch_planned(const Params& p, const Instance<Kernel> (&instances)[N], int64_t (*cols)(int64_t),
                    cudaStream stream) {
  Kernel kernel = nullptr;
  const Plan plan = plan_for<T>(p, instances, cols, &kernel);  // sets kernel
  return launch(plan, kernel, p, stream);
}

int64_t fwd_cols(int64_t units) { return 4 * units; }
int64_t bwd_cols(int64_t units) { return units; }

using FwdKernel = void (*)(Args<LstmSeqCudaFwdParams>);
using BwdKernel = void (*)(Args<LstmSeqCudaBwdParams>);

template <typename T, bool kSplit>
constexpr Instance<FwdKernel> kFwdInstances[] = {
    {16, lstm_seq_fwd_persistent_mma_kernel<T, 2, 4, kSplit>, fwd_smem<T, 2, 4>},
    {16, lstm_seq_fwd_persistent_mma_kernel<T, 2, 2, kSplit>, fwd_smem<T, 2, 2>},
    {32, lstm_seq_fwd_persistent_mma_kernel<T, 4, 4, kSplit>, fwd_smem<T, 4, 4>},
    {32, lstm_seq_fwd_persistent_mma_kernel<T, 4, 2, kSplit>, fwd_smem<T, 4, 2>},
    {64, lstm_seq_fwd_persistent_mma_kernel<T, 8, 4, kSplit>, fwd_smem<T, 8, 4>},
    {64, lstm_seq_fwd_persistent_mma_kernel<T, 8, 2, kSplit>, fwd_smem<T, 8, 2>},
};

template <typename T, bool kSplit>
constexpr Instance<BwdKernel> kBwdInstances[] = {
    {8, lstm_seq_bwd_persistent_mma_kernel<T, 1, 4, kSplit>, bwd_smem<T, 1, 4>},
    {8, lstm_seq_bwd_persistent_mma_kernel<T, 1, 2, kSplit>, bwd_smem<T, 1, 2>},
    {16, lstm_seq_bwd_persistent_mma_kernel<T, 2, 4, kSplit>, bwd_smem<T, 2, 4>},
    {16, lstm_seq_bwd_persistent_mma_kernel<T, 2, 2, kSplit>, bwd_smem<T, 2, 2>},
};

// The instances p's dtype and precision take: 16-bit as they are; fp32 as TF32 when
// p.tf32, else as 3xTF32; nothing for fp64.
template <typename Params, typename Launch>
bool with_instances(const Params& p, Launch&& launch) {
  bool launched = false;
  with_storage(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, float>) {
      launched = p.tf32 ? launch(tag, std::false_type{}) : launch(tag, std::true_type{});
    } else if constexpr (!std::is_same_v<T, double>) {
      launched = launch(tag, std::false_type{});
    }
  });
  return launched;
}

}  // namespace

bool lstm_seq_fwd_persistent_mma_cuda(const LstmSeqCudaFwdParams& p, cudaStream stream) {
  return with_instances(p, [&](auto tag, auto split) {
    using T = decltype(tag);
    return launch_planned<T>(p, kFwdInstances<T, decltype(split)::value>, fwd_cols, stream);
  });
}

bool lstm_seq_bwd_persistent_mma_cuda(const LstmSeqCudaBwdParams& p, cudaStream stream) {
  return with_instances(p, [&](auto tag, auto split) {
    using T = decltype(tag);
    return launch_planned<T>(p, kBwdInstances<T, decltype(split)::value>, bwd_cols, stream);
  });
}

}  // namespace pyattn
