// Compiles one kernel body once per CPU instruction set, in one translation unit:
//
//   #define PYATTN_CPU_BODY "cpu/<op>_body.h"
//   #include "cpu/isa_regions.h"
//
// puts the body into namespaces pyattn::cpu::generic, ::avx2 and ::avx512 (the last
// two on x86-64 only), each compiled for its target with a GCC/Clang target region and
// given that ISA's VecF (float lanes), VecD (one double lane) and the helpers of
// cpu/vec_common.h (tails, dtype dispatch). PYATTN_CPU_DISPATCH then
// calls the body's function for the ISA chosen at run time (pyattn::cpu_isa()).
// Bodies must not #include anything themselves; the headers below are already in.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "cpu/dynamic_schedule.h"
#include "cpu/fast_exp.h"
#include "cpu/half.h"
#include "cpu/vec_scalar.h"
#include "pyattn/common.h"

#if defined(__x86_64__) || defined(_M_X64)
#define PYATTN_X86 1
#include <immintrin.h>
#else
#define PYATTN_X86 0
#endif

#ifndef PYATTN_CPU_BODY
#error "define PYATTN_CPU_BODY before including cpu/isa_regions.h"
#endif

namespace pyattn::cpu::generic {
using VecF = VecScalar<float>;
using VecD = VecScalar<double>;
#include "cpu/vec_common.h"
#include PYATTN_CPU_BODY
}  // namespace pyattn::cpu::generic

#if PYATTN_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif
namespace pyattn::cpu::avx2 {
#include "cpu/vec_avx2.h"
using VecD = VecScalar<double>;
#include "cpu/vec_common.h"
#include PYATTN_CPU_BODY
}  // namespace pyattn::cpu::avx2
// The AVX-512 region also targets prfchw, so that __builtin_prefetch(p, 1) (a prefetch
// for a write) is PREFETCHW, which fetches the line for ownership: every AVX-512 CPU has
// it, and Intel's before Broadwell (AVX2) do not. word2vec's updates read and then write
// rows that another thread may hold, and taking the line once, exclusive, instead of
// shared and then upgraded made skip-gram's update 11-14 % and CBOW's 6-27 % faster with
// 2 threads (bench/results/word2vec_cpu_rows_2026-12-06.md).
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,prfchw"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,prfchw")
#endif
namespace pyattn::cpu::avx512 {
#include "cpu/vec_avx512.h"
using VecD = VecScalar<double>;
#include "cpu/vec_common.h"
#include PYATTN_CPU_BODY
}  // namespace pyattn::cpu::avx512
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

// Calls ISA::FN(args...) for the instruction set chosen at run time.
#define PYATTN_CPU_DISPATCH(FN, ...)                                   \
  switch (::pyattn::cpu_isa()) {                                       \
    case ::pyattn::CpuIsa::avx512_bf16:                                \
    case ::pyattn::CpuIsa::avx512: return ::pyattn::cpu::avx512::FN(__VA_ARGS__); \
    case ::pyattn::CpuIsa::avx2: return ::pyattn::cpu::avx2::FN(__VA_ARGS__);     \
    default: return ::pyattn::cpu::generic::FN(__VA_ARGS__);           \
  }
#else
#define PYATTN_CPU_DISPATCH(FN, ...) return ::pyattn::cpu::generic::FN(__VA_ARGS__);
#endif
