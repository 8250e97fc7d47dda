// CUDA scaled masked softmax (semantics in pyattn/scaled_masked_softmax.h).
//
// A "row" is one (b, h, i) of the [batch, heads, sq, sk] view; rows = batch*heads*sq.
// Kernel shapes, chosen by sk:
//   sk <= kWarpMaxCols: a group of LANES <= 32 lanes owns a row and keeps it in
//     registers (N elements per lane, N fixed at compile time from next_pow2(sk)), so
//     x is read once and y written once; short rows pack several groups in a warp, and
//     a group loads up to 4 rows at once when one row gives each thread too few bytes
//     in flight (WarpCfg::ROWS).
//   longer rows: a block owns a row. When the row fits in the block's registers (16
//     fp32 values a thread: 16384 keys) it stays there: one read, one write.
//     Otherwise pass 1 reads the row and reduces an online (max, sum); pass 2 writes y
//     from logits kept in shared memory when the row fits there (kCacheBytes), or else
//     re-reads x and the mask (usually L2 hits). Any sk.
// Loads are 16-byte packs when every base pointer, row stride and sk allow it (checked
// on the host per launch), scalar otherwise. Grids are 1-d with a grid-stride loop
// over rows, so rows may exceed any grid limit.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda/launch.cuh"
#include "cuda/storage.cuh"
#include "cuda/switch.cuh"
#include "pyattn/scaled_masked_softmax.h"
#include "pyattn/softmax_math.h"

namespace pyattn {
namespace {

using softmax_math::exp_shifted;
using softmax_math::inv_sum;
using softmax_math::neg_inf;

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarpMaxLog2 = 10;  // register-resident rows up to 1024 elements
constexpr int64_t kWarpMaxCols = int64_t(1) << kWarpMaxLog2;
constexpr int kWarpKernelThreads = 128;
constexpr int kBlockMaxThreads = 1024;
// Dynamic shared memory for caching one row's logits: below the 48 KiB every device
// gives without an opt-in, leaving room for the kernel's static reduction slots.
constexpr int64_t kCacheBytes = 44 * 1024;
constexpr int64_t kMaxBlocks = int64_t(1) << 24;  // past this the grid-stride loop takes over

// V consecutive elements moved as one load/store (16 bytes at the widest). The host
// guarantees V*sizeof(T) alignment before choosing V > 1.
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <int V, typename T>
__device__ __forceinline__ Pack<T, V> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, V>*>(p);
}

template <int V, typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, V>& v) {
  *reinterpret_cast<Pack<T, V>*>(p) = v;
}

// ---- reductions --------------------------------------------------------------------

// Ops given to block_allreduce name their identity, fed to lanes past the last warp.
struct MaxOp {
  template <typename A> __device__ A operator()(A a, A b) const { return a > b ? a : b; }
  template <typename A> __device__ static A identity() { return neg_inf<A>(); }
};
struct SumOp {
  template <typename A> __device__ A operator()(A a, A b) const { return a + b; }
  template <typename A> __device__ static A identity() { return A(0); }
};
struct MergeOp {
  template <typename St> __device__ St operator()(St a, const St& b) const {
    a.merge(b);
    return a;
  }
  template <typename St> __device__ static St identity() { return St::empty(); }
};

template <typename A>
__device__ __forceinline__ A shfl_xor(A v, int lane_mask) {
  return __shfl_xor_sync(kFullMask, v, lane_mask);
}
template <typename A>
__device__ __forceinline__ softmax_math::OnlineSoftmax<A> shfl_xor(softmax_math::OnlineSoftmax<A> v,
                                                                   int lane_mask) {
  return {shfl_xor(v.m, lane_mask), shfl_xor(v.s, lane_mask)};
}

// All-reduce within aligned groups of WIDTH lanes (WIDTH a power of two <= 32); every
// lane of the warp must call it.
template <int WIDTH, typename A, typename Op>
__device__ __forceinline__ A group_allreduce(A v, Op op) {
#pragma unroll
  for (int o = WIDTH / 2; o > 0; o /= 2) v = op(v, shfl_xor(v, o));
  return v;
}

// All-reduce over the block; every thread must call it. slots: >= 33 entries of
// shared memory. Two barriers: the second makes slot 32 visible and also orders this
// call's reads of slots[0..nwarps) before the next call's writes.
template <typename A, typename Op>
__device__ __forceinline__ A block_allreduce(A v, Op op, A* slots) {
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  const int nwarps = blockDim.x / kWarp;
  v = group_allreduce<kWarp>(v, op);
  if (lane == 0) slots[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const A w = lane < nwarps ? slots[lane] : Op::template identity<A>();
    const A r = group_allreduce<kWarp>(w, op);
    if (lane == 0) slots[kWarp] = r;
  }
  __syncthreads();
  return slots[kWarp];
}

// ---- row geometry ------------------------------------------------------------------

// floor(n / d) for 0 <= n < 2^51 and d > 0, given inv_d = 1.0 / d rounded: the product
// is within a few ulp of n / d, so the estimate is off by at most one, which one
// multiply-compare fixes. Replaces 64-bit integer division, which compiles to a called
// subroutine (and ptxas reports the registers saved around the call as spills).
__device__ __forceinline__ int64_t div_by_reciprocal(int64_t n, int64_t d, double inv_d) {
  int64_t q = static_cast<int64_t>(static_cast<double>(n) * inv_d);
  if (q * d > n) {
    --q;
  } else if ((q + 1) * d <= n) {
    ++q;
  }
  return q;
}

// Maps a flat row index to (b, h, i): 32-bit division when rows fit (short rows pay it
// once per ~32 elements), else div_by_reciprocal (a tensor's rows are far below 2^51).
struct RowMap {
  int64_t rows, heads, sq;
  double inv_heads, inv_sq;
  bool narrow;  // rows <= UINT32_MAX

  __device__ __forceinline__ void locate(int64_t row, int64_t& b, int64_t& h, int64_t& i) const {
    if (narrow) {
      const uint32_t r = static_cast<uint32_t>(row), q = static_cast<uint32_t>(sq);
      const uint32_t bh = r / q, nh = static_cast<uint32_t>(heads);
      i = r - bh * q;
      b = bh / nh;
      h = bh - static_cast<uint32_t>(b) * nh;
    } else {
      const int64_t bh = div_by_reciprocal(row, sq, inv_sq);
      i = row - bh * sq;
      b = div_by_reciprocal(bh, heads, inv_heads);
      h = bh - b * heads;
    }
  }
};

__device__ __forceinline__ int64_t offset(const int64_t (&s)[3], int64_t b, int64_t h, int64_t i) {
  return b * s[0] + h * s[1] + i * s[2];
}

// ---- kernel arguments ----------------------------------------------------------------

template <typename T>
struct FwdArgs {
  const T* x;
  T* y;
  const void* mask;  // const uint8_t* (MaskKind::drop: nonzero = masked out) or const T* (additive)
  int64_t xs[3], ys[3], ms[3];
  RowMap map;
  int64_t sk;
  acc_t<T> scale;
  MaskKind mask_kind;
  bool causal;
};

template <typename T>
struct BwdArgs {
  const T* y;
  const T* dy;  // may alias dx: every element is read before it is written, by one thread
  T* dx;
  int64_t ys[3], dys[3], dxs[3];
  RowMap map;
  int64_t sk;
  acc_t<T> scale;
};

// The raw data behind V logits: a pack of x and, by mask kind, of the mask. The mask
// kind MK is a template parameter so that loading is straight-line code: a runtime
// switch here put branches between the loads, and the compiler then issued each pack's
// x load and mask load one after another, each waiting for the last (sm_90 SASS).
template <MaskKind MK, typename T, int V>
struct RawPack {
  using MaskElem = std::conditional_t<MK == MaskKind::additive, T, uint8_t>;
  Pack<T, V> x;
  Pack<MaskElem, MK == MaskKind::none ? 1 : V> mask;
};

template <MaskKind MK, int V, typename T, typename J>
__device__ __forceinline__ RawPack<MK, T, V> load_raw(const T* xr, const void* mr, J j0) {
  RawPack<MK, T, V> r;
  r.x = load_pack<V>(xr + j0);
  if constexpr (MK != MaskKind::none) {
    r.mask = load_pack<V>(static_cast<const typename RawPack<MK, T, V>::MaskElem*>(mr) + j0);
  }
  return r;
}

// Logits z[0..V) of elements j0..j0+V-1 of row i from their raw data.
template <MaskKind MK, int V, typename T, typename J>
__device__ __forceinline__ void to_logits(const FwdArgs<T>& a, const RawPack<MK, T, V>& r, J j0, int64_t i,
                                          acc_t<T>* z) {
  using Acc = acc_t<T>;
#pragma unroll
  for (int e = 0; e < V; ++e) {
    z[e] = a.scale * to_acc(r.x.v[e]);
    if constexpr (MK == MaskKind::additive) z[e] += to_acc(r.mask.v[e]);
    if constexpr (MK == MaskKind::drop) z[e] = r.mask.v[e] ? neg_inf<Acc>() : z[e];
    z[e] = a.causal && j0 + e > i ? neg_inf<Acc>() : z[e];
  }
}

// Both in one (the block kernel's streaming loop).
template <MaskKind MK, int V, typename T, typename J>
__device__ __forceinline__ void load_logits(const FwdArgs<T>& a, const T* xr, const void* mr, J j0, int64_t i,
                                            acc_t<T>* z) {
  to_logits<MK, V>(a, load_raw<MK, V>(xr, mr, j0), j0, i, z);
}

template <MaskKind MK, typename T>
__device__ __forceinline__ const void* mask_row(const FwdArgs<T>& a, int64_t b, int64_t h, int64_t i) {
  const int64_t off = offset(a.ms, b, h, i);
  if constexpr (MK == MaskKind::additive) return static_cast<const T*>(a.mask) + off;
  if constexpr (MK == MaskKind::drop) return static_cast<const uint8_t*>(a.mask) + off;
  return nullptr;
}

// kLoadAlways: the register-resident kernels load every pack a thread owns, reading
// pack 0 of the row (a valid address: every row has one, dead rows use row 0) in place
// of packs past the row's end, and then discard those values. A branch around each load
// instead made the compiler issue them one at a time, each waiting for the last.

// ---- warp-per-row kernels (sk <= kWarpMaxCols) ---------------------------------------

// Bytes of each input stream a thread should have in flight: a group loads ROWS rows at
// once when one row gives a thread less than this (short rows, 16-bit data), so that
// load latency is hidden by the loads themselves and not only by occupancy.
constexpr int kWarpBytesInFlight = 64;
constexpr int kWarpMaxRows = 4;

// Register layout for rows of up to C = 2^LOG2C elements, in packs of V <= C: lane l of
// a LANES-wide group holds packs p = 0..PACKS of each of its ROWS rows, covering
// elements (p*LANES + l)*V + [0, V). STREAMS: input arrays read per element (fwd x: 1;
// bwd y and dy: 2), sharing kWarpBytesInFlight.
template <typename T, int LOG2C, int VEC, int STREAMS>
struct WarpCfg {
  static constexpr int C = 1 << LOG2C;
  static constexpr int V = VEC;
  static_assert(V <= C, "a pack must fit in the row capacity");
  static constexpr int LANES = C / V < kWarp ? C / V : kWarp;
  static constexpr int PACKS = C / (LANES * V);
  static constexpr int N = PACKS * V;  // elements per lane per row
  static constexpr int kRowBytes = N * int(sizeof(T)) * STREAMS;
  // Scalar loads (V = 1: misaligned views) stay one row a group: that path is for
  // correctness, and more rows cost it registers.
  static constexpr int ROWS = V == 1 || kRowBytes >= kWarpBytesInFlight ? 1
                              : kWarpBytesInFlight / kRowBytes >= kWarpMaxRows ? kWarpMaxRows
                                                                               : kWarpBytesInFlight / kRowBytes;
  static constexpr int ROWS_PER_BLOCK = (kWarpKernelThreads / LANES) * ROWS;
};

// Where row `row` of a group lives; dead rows (past the last) load nothing.
struct WarpRow {
  int64_t b = 0, h = 0, i = 0;
  bool live = false;
};

template <int ROWS, int LANES>
__device__ __forceinline__ void locate_rows(const RowMap& map, int64_t base, WarpRow (&r)[ROWS]) {
  const int64_t first = base + int64_t(threadIdx.x / LANES) * ROWS;
#pragma unroll
  for (int k = 0; k < ROWS; ++k) {
    r[k].live = first + k < map.rows;
    if (r[k].live) map.locate(first + k, r[k].b, r[k].h, r[k].i);
  }
}

template <typename T, typename Cfg, MaskKind MK>
__global__ void __launch_bounds__(kWarpKernelThreads) smsm_fwd_warp(const FwdArgs<T> a) {
  using Acc = acc_t<T>;
  constexpr int V = Cfg::V, LANES = Cfg::LANES, PACKS = Cfg::PACKS, N = Cfg::N, R = Cfg::ROWS;
  const int gl = threadIdx.x % LANES;  // lane within the group
  // Block-uniform loop, so whole warps stay together for the shuffles.
  for (int64_t base = int64_t(blockIdx.x) * Cfg::ROWS_PER_BLOCK; base < a.map.rows;
       base += int64_t(gridDim.x) * Cfg::ROWS_PER_BLOCK) {
    WarpRow rows[R];
    locate_rows<R, LANES>(a.map, base, rows);

    // Every load of every row issued before the first use (kLoadAlways).
    RawPack<MK, T, V> raw[R][PACKS];
#pragma unroll
    for (int k = 0; k < R; ++k) {
      const WarpRow& r = rows[k];
      const T* xr = a.x + offset(a.xs, r.b, r.h, r.i);
      const void* mr = mask_row<MK>(a, r.b, r.h, r.i);
#pragma unroll
      for (int p = 0; p < PACKS; ++p) {
        const int j0 = (p * LANES + gl) * V;  // < C <= kWarpMaxCols
        raw[k][p] = load_raw<MK, V>(xr, mr, r.live && j0 < a.sk ? j0 : 0);
      }
    }
    Acc z[R][N];
#pragma unroll
    for (int k = 0; k < R; ++k) {
#pragma unroll
      for (int p = 0; p < PACKS; ++p) {
        const int j0 = (p * LANES + gl) * V;
        to_logits<MK, V>(a, raw[k][p], j0, rows[k].i, z[k] + p * V);
        const bool in = rows[k].live && j0 < a.sk;
#pragma unroll
        for (int e = 0; e < V; ++e) z[k][p * V + e] = in ? z[k][p * V + e] : neg_inf<Acc>();
      }
    }

#pragma unroll
    for (int k = 0; k < R; ++k) {
      Acc m = z[k][0];
#pragma unroll
      for (int e = 1; e < N; ++e) m = MaxOp()(m, z[k][e]);
      m = group_allreduce<LANES>(m, MaxOp());
      Acc s = 0;
#pragma unroll
      for (int e = 0; e < N; ++e) {
        z[k][e] = exp_shifted(z[k][e], m);
        s += z[k][e];
      }
      const Acc inv = inv_sum(group_allreduce<LANES>(s, SumOp()));
      if (!rows[k].live) continue;
      T* yr = a.y + offset(a.ys, rows[k].b, rows[k].h, rows[k].i);
#pragma unroll
      for (int p = 0; p < PACKS; ++p) {
        const int j0 = (p * LANES + gl) * V;
        if (j0 < a.sk) {
          Pack<T, V> out;
#pragma unroll
          for (int e = 0; e < V; ++e) out.v[e] = from_acc<T>(z[k][p * V + e] * inv);
          store_pack<V>(yr + j0, out);
        }
      }
    }
  }
}

template <typename T, typename Cfg>
__global__ void __launch_bounds__(kWarpKernelThreads) smsm_bwd_warp(const BwdArgs<T> a) {
  using Acc = acc_t<T>;
  constexpr int V = Cfg::V, LANES = Cfg::LANES, PACKS = Cfg::PACKS, N = Cfg::N, R = Cfg::ROWS;
  const int gl = threadIdx.x % LANES;
  for (int64_t base = int64_t(blockIdx.x) * Cfg::ROWS_PER_BLOCK; base < a.map.rows;
       base += int64_t(gridDim.x) * Cfg::ROWS_PER_BLOCK) {
    WarpRow rows[R];
    locate_rows<R, LANES>(a.map, base, rows);

    Acc yv[R][N], dyv[R][N];  // padding elements are 0 and add nothing to the dot product
#pragma unroll
    for (int k = 0; k < R; ++k) {
      const WarpRow& r = rows[k];
      const T* yr = a.y + offset(a.ys, r.b, r.h, r.i);
      const T* dyr = a.dy + offset(a.dys, r.b, r.h, r.i);
#pragma unroll
      for (int p = 0; p < PACKS; ++p) {
        const int j0 = (p * LANES + gl) * V;
        const bool in = r.live && j0 < a.sk;
        const Pack<T, V> py = load_pack<V>(yr + (in ? j0 : 0)), pdy = load_pack<V>(dyr + (in ? j0 : 0));
#pragma unroll
        for (int e = 0; e < V; ++e) {
          yv[k][p * V + e] = in ? to_acc(py.v[e]) : Acc(0);
          dyv[k][p * V + e] = in ? to_acc(pdy.v[e]) : Acc(0);
        }
      }
    }

#pragma unroll
    for (int k = 0; k < R; ++k) {
      Acc dot = 0;
#pragma unroll
      for (int e = 0; e < N; ++e) dot += yv[k][e] * dyv[k][e];
      dot = group_allreduce<LANES>(dot, SumOp());
      if (!rows[k].live) continue;
      T* dxr = a.dx + offset(a.dxs, rows[k].b, rows[k].h, rows[k].i);
#pragma unroll
      for (int p = 0; p < PACKS; ++p) {
        const int j0 = (p * LANES + gl) * V;
        if (j0 < a.sk) {
          Pack<T, V> out;
#pragma unroll
          for (int e = 0; e < V; ++e) {
            const int n = p * V + e;
            out.v[e] = from_acc<T>(a.scale * yv[k][n] * (dyv[k][n] - dot));
          }
          store_pack<V>(dxr + j0, out);
        }
      }
    }
  }
}

// ---- block-per-row kernels (any sk) -----------------------------------------------------

// Dynamic shared memory: one untyped declaration (extern arrays of different element
// types would clash); each kernel casts it to its Acc.
PYATTN_DYNAMIC_SMEM(smem_raw, 32);

// Rows held in registers: thread t owns packs p*blockDim.x + t, p < PACKS, of its row,
// so x and the mask are read once with PACKS loads in flight per thread, y is written
// once, and nothing goes through shared memory but the two reductions. The host picks
// PACKS and blockDim.x so that PACKS * blockDim.x * V >= sk.
template <typename T, int V, int PACKS, MaskKind MK>
__global__ void __launch_bounds__(kBlockMaxThreads) smsm_fwd_block_regs(const FwdArgs<T> a) {
  using Acc = acc_t<T>;
  constexpr int N = PACKS * V;
  __shared__ Acc slots[kWarp + 1];
  for (int64_t row = blockIdx.x; row < a.map.rows; row += gridDim.x) {
    int64_t b, h, i;
    a.map.locate(row, b, h, i);
    const T* xr = a.x + offset(a.xs, b, h, i);
    const void* mr = mask_row<MK>(a, b, h, i);

    RawPack<MK, T, V> raw[PACKS];  // every load issued before the first use (kLoadAlways)
#pragma unroll
    for (int p = 0; p < PACKS; ++p) {
      const int64_t j0 = (int64_t(p) * blockDim.x + threadIdx.x) * V;
      raw[p] = load_raw<MK, V>(xr, mr, j0 < a.sk ? j0 : 0);
    }
    Acc z[N];
#pragma unroll
    for (int p = 0; p < PACKS; ++p) {
      const int64_t j0 = (int64_t(p) * blockDim.x + threadIdx.x) * V;
      to_logits<MK, V>(a, raw[p], j0, i, z + p * V);
#pragma unroll
      for (int e = 0; e < V; ++e) z[p * V + e] = j0 < a.sk ? z[p * V + e] : neg_inf<Acc>();
    }
    Acc m = z[0];
#pragma unroll
    for (int e = 1; e < N; ++e) m = MaxOp()(m, z[e]);
    m = block_allreduce(m, MaxOp(), slots);
    Acc s = 0;
#pragma unroll
    for (int e = 0; e < N; ++e) {
      z[e] = exp_shifted(z[e], m);
      s += z[e];
    }
    const Acc inv = inv_sum(block_allreduce(s, SumOp(), slots));

    T* yr = a.y + offset(a.ys, b, h, i);
#pragma unroll
    for (int p = 0; p < PACKS; ++p) {
      const int64_t j0 = (int64_t(p) * blockDim.x + threadIdx.x) * V;
      if (j0 < a.sk) {
        Pack<T, V> out;
#pragma unroll
        for (int e = 0; e < V; ++e) out.v[e] = from_acc<T>(z[p * V + e] * inv);
        store_pack<V>(yr + j0, out);
      }
    }
  }
}

// The backward's register-resident rows: y and dy read once, dx written once.
template <typename T, int V, int PACKS>
__global__ void __launch_bounds__(kBlockMaxThreads) smsm_bwd_block_regs(const BwdArgs<T> a) {
  using Acc = acc_t<T>;
  constexpr int N = PACKS * V;
  __shared__ Acc slots[kWarp + 1];
  for (int64_t row = blockIdx.x; row < a.map.rows; row += gridDim.x) {
    int64_t b, h, i;
    a.map.locate(row, b, h, i);
    const T* yr = a.y + offset(a.ys, b, h, i);
    const T* dyr = a.dy + offset(a.dys, b, h, i);

    Acc yv[N], dyv[N];  // padding elements are 0 and add nothing to the dot product
#pragma unroll
    for (int p = 0; p < PACKS; ++p) {
      const int64_t j0 = (int64_t(p) * blockDim.x + threadIdx.x) * V;
      const bool in = j0 < a.sk;
      const Pack<T, V> py = load_pack<V>(yr + (in ? j0 : 0)), pdy = load_pack<V>(dyr + (in ? j0 : 0));
#pragma unroll
      for (int e = 0; e < V; ++e) {
        yv[p * V + e] = in ? to_acc(py.v[e]) : Acc(0);
        dyv[p * V + e] = in ? to_acc(pdy.v[e]) : Acc(0);
      }
    }
    Acc dot = 0;
#pragma unroll
    for (int e = 0; e < N; ++e) dot += yv[e] * dyv[e];
    dot = block_allreduce(dot, SumOp(), slots);

    T* dxr = a.dx + offset(a.dxs, b, h, i);
#pragma unroll
    for (int p = 0; p < PACKS; ++p) {
      const int64_t j0 = (int64_t(p) * blockDim.x + threadIdx.x) * V;
      if (j0 < a.sk) {
        Pack<T, V> out;
#pragma unroll
        for (int e = 0; e < V; ++e) out.v[e] = from_acc<T>(a.scale * yv[p * V + e] * (dyv[p * V + e] - dot));
        store_pack<V>(dxr + j0, out);
      }
    }
  }
}

// CACHE: logits z (sk Acc values) are parked in shared memory by pass 1. Each thread
// reads back only the elements it wrote, so pass 2 needs no barrier for the cache.
template <typename T, int V, bool CACHE, MaskKind MK>
__global__ void __launch_bounds__(kBlockMaxThreads) smsm_fwd_block(const FwdArgs<T> a) {
  using Acc = acc_t<T>;
  using St = softmax_math::OnlineSoftmax<Acc>;
  __shared__ St slots[kWarp + 1];
  Acc* cache = reinterpret_cast<Acc*>(smem_raw);
  const int64_t step = int64_t(blockDim.x) * V;
  for (int64_t row = blockIdx.x; row < a.map.rows; row += gridDim.x) {
    int64_t b, h, i;
    a.map.locate(row, b, h, i);
    const T* xr = a.x + offset(a.xs, b, h, i);
    const void* mr = mask_row<MK>(a, b, h, i);

    St st = St::empty();
    for (int64_t j0 = int64_t(threadIdx.x) * V; j0 < a.sk; j0 += step) {
      Pack<Acc, V> z;
      load_logits<MK, V>(a, xr, mr, j0, i, z.v);
#pragma unroll
      for (int e = 0; e < V; ++e) st.add(z.v[e]);
      if (CACHE) store_pack<V>(cache + j0, z);
    }
    st = block_allreduce(st, MergeOp(), slots);
    const Acc inv = inv_sum(st.s);

    T* yr = a.y + offset(a.ys, b, h, i);
    for (int64_t j0 = int64_t(threadIdx.x) * V; j0 < a.sk; j0 += step) {
      Pack<Acc, V> z;
      if (CACHE) {
        z = load_pack<V>(cache + j0);
      } else {
        load_logits<MK, V>(a, xr, mr, j0, i, z.v);
      }
      Pack<T, V> out;
#pragma unroll
      for (int e = 0; e < V; ++e) out.v[e] = from_acc<T>(exp_shifted(z.v[e], st.m) * inv);
      store_pack<V>(yr + j0, out);
    }
  }
}

// CACHE: y at cache[0, sk) and dy at cache[sk, 2*sk) (sk % V == 0 keeps packs aligned),
// thread-private as in the forward.
template <typename T, int V, bool CACHE>
__global__ void __launch_bounds__(kBlockMaxThreads) smsm_bwd_block(const BwdArgs<T> a) {
  using Acc = acc_t<T>;
  __shared__ Acc slots[kWarp + 1];
  Acc* cache = reinterpret_cast<Acc*>(smem_raw);
  const int64_t step = int64_t(blockDim.x) * V;
  for (int64_t row = blockIdx.x; row < a.map.rows; row += gridDim.x) {
    int64_t b, h, i;
    a.map.locate(row, b, h, i);
    const T* yr = a.y + offset(a.ys, b, h, i);
    const T* dyr = a.dy + offset(a.dys, b, h, i);

    Acc dot = 0;
    for (int64_t j0 = int64_t(threadIdx.x) * V; j0 < a.sk; j0 += step) {
      const Pack<T, V> py = load_pack<V>(yr + j0), pdy = load_pack<V>(dyr + j0);
      Pack<Acc, V> yv, dyv;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        yv.v[e] = to_acc(py.v[e]);
        dyv.v[e] = to_acc(pdy.v[e]);
        dot += yv.v[e] * dyv.v[e];
      }
      if (CACHE) {
        store_pack<V>(cache + j0, yv);
        store_pack<V>(cache + a.sk + j0, dyv);
      }
    }
    dot = block_allreduce(dot, SumOp(), slots);

    T* dxr = a.dx + offset(a.dxs, b, h, i);
    for (int64_t j0 = int64_t(threadIdx.x) * V; j0 < a.sk; j0 += step) {
      Pack<Acc, V> yv, dyv;
      if (CACHE) {
        yv = load_pack<V>(cache + j0);
        dyv = load_pack<V>(cache + a.sk + j0);
      } else {
        const Pack<T, V> py = load_pack<V>(yr + j0), pdy = load_pack<V>(dyr + j0);
#pragma unroll
        for (int e = 0; e < V; ++e) {
          yv.v[e] = to_acc(py.v[e]);
          dyv.v[e] = to_acc(pdy.v[e]);
        }
      }
      Pack<T, V> out;
#pragma unroll
      for (int e = 0; e < V; ++e) out.v[e] = from_acc<T>(a.scale * yv.v[e] * (dyv.v[e] - dot));
      store_pack<V>(dxr + j0, out);
    }
  }
}

// ---- host side -------------------------------------------------------------------------

int ceil_log2(int64_t n) {
  int l = 0;
  while ((int64_t(1) << l) < n) ++l;
  return l;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

RowMap make_map(int64_t batch, int64_t heads, int64_t sq) {
  const int64_t rows = batch * heads * sq;
  return {rows, heads, sq, 1.0 / double(heads), 1.0 / double(sq), rows <= int64_t(UINT32_MAX)};
}

// Can a tensor's rows be moved in packs of `bytes`? Its base must be aligned and every
// row start must stay aligned (strides of size-1 dims never move the pointer).
bool rows_aligned(const void* p, const int64_t (&s)[3], const int64_t (&dims)[3], int64_t elem_bytes,
                  int64_t bytes) {
  if (reinterpret_cast<uintptr_t>(p) % bytes != 0) return false;
  for (int d = 0; d < 3; ++d) {
    if (dims[d] > 1 && (s[d] * elem_bytes) % bytes != 0) return false;
  }
  return true;
}

// Threads per row for the block kernels: about 4+ packs per thread, 128..1024.
int block_threads(int64_t sk, int v) {
  const int64_t packs = ceil_div(sk, v);
  int t = 128;
  while (t < kBlockMaxThreads && int64_t(t) * 4 < packs) t *= 2;
  return t;
}

// Register-resident long rows: PACKS (a power of two <= 2^kRegsMaxLog2Packs) packs per
// thread and the threads (a multiple of a warp, 128..1024) that cover sk with about 4
// packs each. Not possible (log2_packs < 0) when a thread would hold more than
// max_elems values per array (kRegsMaxBytes of accumulators).
constexpr int kRegsMaxLog2Packs = 3;
struct RegsShape {
  int threads = 0, log2_packs = -1;
};
RegsShape regs_shape(int64_t sk, int v, int max_elems) {
  const int64_t packs = ceil_div(sk, v);
  const int64_t threads = std::min<int64_t>(std::max<int64_t>(ceil_div(ceil_div(packs, 4), kWarp) * kWarp, 128),
                                            kBlockMaxThreads);
  const int l = ceil_log2(ceil_div(packs, threads));
  if (l > kRegsMaxLog2Packs || (int64_t(1) << l) * v > max_elems) return {};
  return {int(threads), l};
}

// f(std::integral_constant<MaskKind, k>{}) for the forward's mask kinds (none, drop,
// additive): the kernels take the kind as a template parameter (see load_logits).
template <typename F>
void with_mask_kind(MaskKind k, F&& f) {
  switch (k) {
    case MaskKind::drop: return f(std::integral_constant<MaskKind, MaskKind::drop>{});
    case MaskKind::additive: return f(std::integral_constant<MaskKind, MaskKind::additive>{});
    default: return f(std::integral_constant<MaskKind, MaskKind::none>{});
  }
}

// A thread of a 1024-thread block has 64 registers. Accumulator bytes per array of the
// register-resident block kernels (fwd: z; bwd: y and dy) that fit beside the rest
// without spilling (ptxas -v, sm_80 and sm_90): 16 fp32 or 8 fp64 values.
constexpr int kRegsMaxBytes = 64;

// The two kernel families behind one launcher. Warp<T, LOG2C, V>: the warp kernels'
// layout. kCachedArrays: Acc arrays of sk values the shared-memory block kernel parks
// (fwd: z; bwd: y and dy).
struct FwdKernels {
  template <typename T, int LOG2C, int V>
  using Warp = WarpCfg<T, LOG2C, V, 1>;
  static constexpr int kCachedArrays = 1;
  template <typename T, typename Cfg>
  static void warp(unsigned grid, cudaStream_t s, const FwdArgs<T>& a) {
    with_mask_kind(a.mask_kind, [&](auto mk) {
      PYATTN_LAUNCH(grid, kWarpKernelThreads, 0, s, smsm_fwd_warp<T, Cfg, decltype(mk)::value>)(a);
    });
  }
  template <typename T, int V, int PACKS>
  static void regs(unsigned grid, int threads, cudaStream_t s, const FwdArgs<T>& a) {
    with_mask_kind(a.mask_kind, [&](auto mk) {
      PYATTN_LAUNCH(grid, threads, 0, s, smsm_fwd_block_regs<T, V, PACKS, decltype(mk)::value>)(a);
    });
  }
  template <typename T, int V, bool CACHE>
  static void block(unsigned grid, int threads, size_t smem, cudaStream_t s, const FwdArgs<T>& a) {
    with_mask_kind(a.mask_kind, [&](auto mk) {
      PYATTN_LAUNCH(grid, threads, smem, s, smsm_fwd_block<T, V, CACHE, decltype(mk)::value>)(a);
    });
  }
};

struct BwdKernels {
  template <typename T, int LOG2C, int V>
  using Warp = WarpCfg<T, LOG2C, V, 2>;
  static constexpr int kCachedArrays = 2;
  template <typename T, typename Cfg>
  static void warp(unsigned grid, cudaStream_t s, const BwdArgs<T>& a) {
    PYATTN_LAUNCH(grid, kWarpKernelThreads, 0, s, smsm_bwd_warp<T, Cfg>)(a);
  }
  template <typename T, int V, int PACKS>
  static void regs(unsigned grid, int threads, cudaStream_t s, const BwdArgs<T>& a) {
    PYATTN_LAUNCH(grid, threads, 0, s, smsm_bwd_block_regs<T, V, PACKS>)(a);
  }
  template <typename T, int V, bool CACHE>
  static void block(unsigned grid, int threads, size_t smem, cudaStream_t s, const BwdArgs<T>& a) {
    PYATTN_LAUNCH(grid, threads, smem, s, smsm_bwd_block<T, V, CACHE>)(a);
  }
};

// Picks the kernel shape for sk: a warp group per row up to kWarpMaxCols; above, a
// block per row, with the row in registers when it fits there (up to 16384 keys for
// 32- and 16-bit data), else cached in shared memory when it fits there, else read twice. The pack
// width is 16 bytes when vec, else 1 element.
template <typename K, typename T, typename Args>
void launch(const Args& a, bool vec, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  with_bool(vec, [&](auto vec_tag) {
    constexpr int V = decltype(vec_tag)::value ? kVec : 1;
    if (a.sk <= kWarpMaxCols) {
      with_int<0, kWarpMaxLog2>(ceil_log2(a.sk), [&](auto log2c) {
        constexpr int kLog2c = decltype(log2c)::value;
        // Rows shorter than a pack never take the vector path (sk % V == 0).
        constexpr int kPack = (1 << kLog2c) >= V ? V : 1;
        using Cfg = typename K::template Warp<T, kLog2c, kPack>;
        const int64_t blocks = std::min(ceil_div(a.map.rows, Cfg::ROWS_PER_BLOCK), kMaxBlocks);
        K::template warp<T, Cfg>(unsigned(blocks), stream, a);
      });
      return;
    }
    const unsigned blocks = unsigned(std::min(a.map.rows, kMaxBlocks));
    constexpr int kMaxElems = kRegsMaxBytes / int(sizeof(acc_t<T>));
    const RegsShape regs = regs_shape(a.sk, V, kMaxElems);
    if (regs.log2_packs >= 0) {
      with_int<0, kRegsMaxLog2Packs>(regs.log2_packs, [&](auto log2p) {
        constexpr int kPacks = 1 << decltype(log2p)::value;
        if constexpr (kPacks * V <= kMaxElems) K::template regs<T, V, kPacks>(blocks, regs.threads, stream, a);
      });
      return;
    }
    const int64_t cache_bytes = K::kCachedArrays * a.sk * int64_t(sizeof(acc_t<T>));
    const int threads = block_threads(a.sk, V);
    with_bool(cache_bytes <= kCacheBytes, [&](auto cache_tag) {
      constexpr bool kCache = decltype(cache_tag)::value;
      K::template block<T, V, kCache>(blocks, threads, kCache ? size_t(cache_bytes) : 0, stream, a);
    });
  });
}

template <typename T>
void fwd_typed(const ScaledMaskedSoftmaxFwdParams& p, cudaStream_t stream) {
  using Acc = acc_t<T>;
  FwdArgs<T> a;
  a.x = static_cast<const T*>(p.x);
  a.y = static_cast<T*>(p.y);
  a.mask = p.mask_kind == MaskKind::none ? nullptr : p.mask;
  a.mask_kind = a.mask ? p.mask_kind : MaskKind::none;
  for (int d = 0; d < 3; ++d) {
    a.xs[d] = p.x_stride[d];
    a.ys[d] = p.y_stride[d];
    a.ms[d] = a.mask ? p.mask_stride[d] : 0;
  }
  a.map = make_map(p.batch, p.heads, p.sq);
  a.sk = p.sk;
  a.scale = static_cast<Acc>(p.scale);
  a.causal = p.causal;
  if (a.map.rows <= 0 || a.sk <= 0) return;

  constexpr int kVec = 16 / sizeof(T);
  const int64_t dims[3] = {p.batch, p.heads, p.sq};
  const int64_t esz = sizeof(T);
  bool vec = a.sk % kVec == 0 && rows_aligned(a.x, a.xs, dims, esz, kVec * esz) &&
             rows_aligned(a.y, a.ys, dims, esz, kVec * esz);
  if (a.mask_kind == MaskKind::additive) vec = vec && rows_aligned(a.mask, a.ms, dims, esz, kVec * esz);
  if (a.mask_kind == MaskKind::drop) vec = vec && rows_aligned(a.mask, a.ms, dims, 1, kVec);

  launch<FwdKernels, T>(a, vec, stream);
}

template <typename T>
void bwd_typed(const ScaledMaskedSoftmaxBwdParams& p, cudaStream_t stream) {
  using Acc = acc_t<T>;
  BwdArgs<T> a;
  a.y = static_cast<const T*>(p.y);
  a.dy = static_cast<const T*>(p.dy);
  a.dx = static_cast<T*>(p.dx);
  for (int d = 0; d < 3; ++d) {
    a.ys[d] = p.y_stride[d];
    a.dys[d] = p.dy_stride[d];
    a.dxs[d] = p.dx_stride[d];
  }
  a.map = make_map(p.batch, p.heads, p.sq);
  a.sk = p.sk;
  a.scale = static_cast<Acc>(p.scale);
  if (a.map.rows <= 0 || a.sk <= 0) return;

  constexpr int kVec = 16 / sizeof(T);
  const int64_t dims[3] = {p.batch, p.heads, p.sq};
  const int64_t esz = sizeof(T);
  const bool vec = a.sk % kVec == 0 && rows_aligned(a.y, a.ys, dims, esz, kVec * esz) &&
                   rows_aligned(a.dy, a.dys, dims, esz, kVec * esz) &&
                   rows_aligned(a.dx, a.dxs, dims, esz, kVec * esz);

  launch<BwdKernels, T>(a, vec, stream);
}

}  // namespace

void scaled_masked_softmax_fwd_cuda(const ScaledMaskedSoftmaxFwdParams& p, cudaStream stream) {
  with_storage(p.dtype, [&](auto tag) { fwd_typed<decltype(tag)>(p, stream); });
}

void scaled_masked_softmax_bwd_cuda(const ScaledMaskedSoftmaxBwdParams& p, cudaStream stream) {
  with_storage(p.dtype, [&](auto tag) { bwd_typed<decltype(tag)>(p, stream); });
}

}  // namespace pyattn
