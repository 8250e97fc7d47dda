// fp32 GEMM against a pre-packed right operand: C[m, cols] (+)= A[m, K] · Bᵀ, with B
// [cols, K] packed once into column panels and reused for many products (an LSTM's
// recurrent weights, every step). An isa_regions.h fragment: no guard, no #includes;
// VecF comes from the region, so the same source is the generic, AVX2 and AVX-512 code.
// Included by the bodies that use it (cpu/lstm_body.h, cpu/packed_gemm_body.h).
//
// Packed layout, float [blocks][groups][kPanel / kSub][K][kSub]: B's columns form
// `groups` groups of `group_cols` columns (an LSTM's gates i, f, g, o: 4 groups of H; a
// plain matrix: one group); panel (b, g) holds columns g·group_cols + b·kPanel + j,
// j < kPanel, zero past the group's end, as two sub-panels of 16 columns each stored
// k-major, so that one sub-panel is 64 contiguous bytes per k: a 16-wide AVX2 tile's B
// is contiguous (a 32-wide row stride would use half of each cache line and half the
// L1 sets). Panel (b, 0..groups-1) are adjacent, so one task owning block b owns
// the same columns of every gate. K may be the concatenation of several sources (the
// LSTM cell's [W_ih | W_hh]); A then comes as the same number of segments.
//
// Micro-kernel: MR rows × NV vectors of accumulators, the B row of the panel loaded once
// per k and reused by MR broadcasts of A. Accumulator budget 12 (16 registers on AVX2:
// 12 + NV loads + a broadcast) or 24 (AVX-512's 32); MR = 6 (AVX2: 6×16 columns, two
// tiles per panel) or 12 (AVX-512: 12×32). Tails of fewer rows take wider tiles (up to
// the whole panel) so that there are still enough independent FMA chains.

namespace pgemm {

constexpr int kPanel = 32;  // columns per packed panel on every ISA: a packed copy does not depend on the ISA
constexpr int kSub = 16;    // columns per sub-panel

// One source of B: element (col, k) at p[col·s_col + k·s_k], k in [0, k).
struct PackSrc {
  const float* p;
  int64_t s_col, s_k, k;
};

// One segment of A's K: row r at a + r·lda, columns [0, k).
struct ASeg {
  const float* a;
  int64_t lda, k;
};

inline int64_t blocks(int64_t group_cols) { return (group_cols + kPanel - 1) / kPanel; }
inline int64_t packed_floats(int64_t groups, int64_t group_cols, int64_t K) {
  return blocks(group_cols) * groups * K * kPanel;
}

// Panel (b, g) of a packed operand with K rows in total.
inline const float* panel(const float* packed, int64_t b, int64_t g, int64_t groups, int64_t K) {
  return packed + (b * groups + g) * K * kPanel;
}

// Packs every panel; the sources' k add up to K. Panels are split over threads.
inline void pack(const PackSrc* src, int nsrc, int64_t groups, int64_t group_cols, float* out,
                 ParallelFor parallel_for) {
  int64_t K = 0;
  for (int s = 0; s < nsrc; ++s) K += src[s].k;
  const int64_t npanels = blocks(group_cols) * groups;
  // ~64k floats per task: packing a small matrix stays on one thread
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(K * kPanel, 1));
  parallel_for(npanels, grain, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t b = q / groups, g = q % groups;
      const int64_t valid = std::min<int64_t>(kPanel, group_cols - b * kPanel);
      float* o = out + q * K * kPanel;
      int64_t k0 = 0;
      for (int s = 0; s < nsrc; ++s) {
        const PackSrc& S = src[s];
        const float* cols = S.p + (g * group_cols + b * kPanel) * S.s_col;
        // A source with k contiguous (s_k = 1, W as stored) is copied a column at a time.
        // Otherwise (Wᵀ, where a column's k are a line apart) 16 k x 32 columns at a time,
        // so that the source lines read and the 32 output lines written stay in L1.
        // Each order measured fastest for its layout (pack alone, H 256 and 512).
        const int64_t kstep = S.s_k == 1 ? S.k : kSub;
        for (int64_t kb = 0; kb < S.k; kb += kstep) {
          const int64_t ke = std::min<int64_t>(S.k, kb + kstep);
          for (int64_t j = 0; j < kPanel; ++j) {
            float* oj = o + (j / kSub) * K * kSub + (k0 + kb) * kSub + j % kSub;
            if (j >= valid) {
              for (int64_t k = kb; k < ke; ++k) oj[(k - kb) * kSub] = 0.f;
              continue;
            }
            const float* col = cols + j * S.s_col;
            for (int64_t k = kb; k < ke; ++k) oj[(k - kb) * kSub] = col[k * S.s_k];
          }
        }
        k0 += S.k;
      }
    }
  });
}

constexpr int kAccBudget = VecF::W >= 16 ? 24 : 12;
constexpr int kMR = VecF::W >= 16 ? 12 : (VecF::W >= 8 ? 6 : 4);
constexpr int kPanelVecs = kPanel / VecF::W;

// Vectors per tile row for MR rows: as many as the budget allows, a power of two that
// divides the panel.
constexpr int nv_for(int mr) {
  int nv = kAccBudget / mr;
  if (nv > kPanelVecs) nv = kPanelVecs;
  int p = 1;
  while (p * 2 <= nv) p *= 2;
  return p;
}

// C rows [0, MR), columns [0, ncols) (ncols <= NV·W) (+)= bias + A rows [r0, r0 + MR) ·
// the panel's (K rows) columns [j, j + ncols); j a multiple of NV·W; bias [ncols] (the
// tile's columns) or nullptr.
template <int MR, int NV>
inline void tile(const ASeg* seg, int nseg, int64_t r0, const float* panel, int64_t K, int j, float* c, int64_t ldc,
                 int ncols, bool accumulate, const float* bias) {
  constexpr int W = VecF::W;
  const float* bp[NV];  // vector v's columns, row k at bp[v] + k·kSub
  for (int v = 0; v < NV; ++v) bp[v] = panel + ((j + v * W) / kSub) * K * kSub + (j + v * W) % kSub;
  VecF s[MR][NV];
  VecF bv0[NV];
  for (int v = 0; v < NV; ++v) {
    const int n = ncols - v * W;
    bv0[v] = !bias || n <= 0 ? VecF::set1(0.f) : n >= W ? VecF::load(bias + v * W) : load_partial<VecF>(bias + v * W, n, 0.f);
  }
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) {
      const int n = ncols - v * W;
      if (!accumulate || n <= 0) s[i][v] = bv0[v];
      else if (n >= W) s[i][v] = VecF::load(c + i * ldc + v * W) + bv0[v];
      else s[i][v] = load_partial<VecF>(c + i * ldc + v * W, n, 0.f) + bv0[v];
    }
  int64_t kb = 0;  // row of the panel
  for (int q = 0; q < nseg; ++q) {
    const float* a[MR];
    for (int i = 0; i < MR; ++i) a[i] = seg[q].a + (r0 + i) * seg[q].lda;
    const int64_t kq = seg[q].k;
    for (int64_t k = 0; k < kq; ++k, ++kb) {
      VecF bv[NV];
      for (int v = 0; v < NV; ++v) bv[v] = VecF::load(bp[v] + kb * kSub);
      for (int i = 0; i < MR; ++i) {
        const VecF ai = VecF::set1(a[i][k]);
        for (int v = 0; v < NV; ++v) s[i][v] = VecF::fmadd(ai, bv[v], s[i][v]);
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) {
      const int n = ncols - v * W;
      if (n >= W) s[i][v].store(c + i * ldc + v * W);
      else if (n > 0) store_partial(s[i][v], c + i * ldc + v * W, n);
    }
}

// MR rows starting at r0 (MR < kMR: the tail), the panel's first ncols columns.
template <int MR>
inline void rows(const ASeg* seg, int nseg, int64_t r0, const float* panel, int64_t K, float* c, int64_t ldc,
                 int ncols, bool accumulate, const float* bias) {
  constexpr int NV = nv_for(MR), CW = NV * VecF::W;
  for (int j = 0; j < ncols; j += CW)
    tile<MR, NV>(seg, nseg, r0, panel, K, j, c + r0 * ldc + j, ldc, std::min(CW, ncols - j), accumulate,
                 bias ? bias + j : nullptr);
}

template <int MR>
inline void rows_tail(int mr, const ASeg* seg, int nseg, int64_t r0, const float* panel, int64_t K, float* c,
                      int64_t ldc, int ncols, bool accumulate, const float* bias) {
  if constexpr (MR >= 1) {
    if (mr == MR) return rows<MR>(seg, nseg, r0, panel, K, c, ldc, ncols, accumulate, bias);
    rows_tail<MR - 1>(mr, seg, nseg, r0, panel, K, c, ldc, ncols, accumulate, bias);
  }
}

// C[m, ncols] (+)= bias + A[m, ·] · one panel's first ncols columns (ncols <= kPanel);
// A's segments together span the panel's K. C has row stride ldc; accumulate: add to C,
// else overwrite it; bias [ncols] or nullptr, added to every row. One thread. Column slice outside, row blocks inside: the slice of
// B (K × 16 floats on AVX2, 16 KiB at K = 256) stays in L1 for every row block.
inline void gemm_panel(int64_t m, const ASeg* seg, int nseg, const float* panel, float* c, int64_t ldc, int ncols,
                       bool accumulate, const float* bias = nullptr) {
  constexpr int NV = nv_for(kMR), CW = NV * VecF::W;
  int64_t K = 0;
  for (int q = 0; q < nseg; ++q) K += seg[q].k;
  const int64_t full = m - m % kMR;
  for (int j = 0; j < ncols; j += CW)
    for (int64_t r = 0; r < full; r += kMR)
      tile<kMR, NV>(seg, nseg, r, panel, K, j, c + r * ldc + j, ldc, std::min(CW, ncols - j), accumulate,
                    bias ? bias + j : nullptr);
  if (full < m) rows_tail<kMR - 1>(int(m - full), seg, nseg, full, panel, K, c, ldc, ncols, accumulate, bias);
}

}  // namespace pgemm
