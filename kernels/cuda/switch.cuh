// Run-time values to compile-time constants for the CUDA launchers: each switch calls f
// with a std::integral_constant, so a kernel template is instantiated once per case and
// the launcher picks the instance. Host code only; no CUDA headers needed.
#pragma once

#include <cstdint>
#include <type_traits>

namespace pyattn {

// f(std::integral_constant<bool, v>{}).
template <typename F>
void with_bool(bool v, F&& f) {
  if (v) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

// f(std::integral_constant<int, v>{}) for v in [LO, HI]; nothing for v outside.
template <int LO, int HI, typename F>
void with_int(int v, F&& f) {
  if constexpr (LO <= HI) {
    if (v == LO) {
      f(std::integral_constant<int, LO>{});
    } else {
      with_int<LO + 1, HI>(v, f);
    }
  }
}

// f(std::integral_constant<int, D>{}) for the smallest of the compiled head dims Ds
// (ascending) that holds n; the largest when none does (callers check their envelope).
template <int D, int... Ds, typename F>
void with_head_dim(int64_t n, F&& f) {
  if constexpr (sizeof...(Ds) == 0) {
    f(std::integral_constant<int, D>{});
  } else if (n <= D) {
    f(std::integral_constant<int, D>{});
  } else {
    with_head_dim<Ds...>(n, f);
  }
}

}  // namespace pyattn
