// Which CPU instruction set the kernels use: the best the running CPU (and OS) supports,
// or a lower one forced by PYATTN_CPU_ISA=generic|avx2|avx512|avx512_bf16 at start-up or
// by set_cpu_isa() later (tests run every path the machine has; benchmarks compare them).
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "pyattn/common.h"

namespace pyattn {

static CpuIsa detect() {
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (avx512 && __builtin_cpu_supports("avx512bf16")) return CpuIsa::avx512_bf16;
  if (avx512) return CpuIsa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    return CpuIsa::avx2;
#endif
  return CpuIsa::generic;
}

CpuIsa cpu_isa_best() {
  static const CpuIsa best = detect();
  return best;
}

CpuIsa parse_cpu_isa(const char* name) {
  for (CpuIsa isa : {CpuIsa::generic, CpuIsa::avx2, CpuIsa::avx512, CpuIsa::avx512_bf16}) {
    if (std::strcmp(name, cpu_isa_name(isa)) == 0) {
      if (static_cast<int>(isa) > static_cast<int>(cpu_isa_best()))
        throw std::invalid_argument(std::string("cpu isa '") + name + "' is not supported by this CPU (best: " +
                                    cpu_isa_name(cpu_isa_best()) + ")");
      return isa;
    }
  }
  throw std::invalid_argument(std::string("cpu isa '") + name +
                              "' is unknown; expected one of generic, avx2, avx512, avx512_bf16");
}

static std::atomic<int> g_isa{-1};  // -1: not chosen yet

CpuIsa cpu_isa() {
  int isa = g_isa.load(std::memory_order_relaxed);
  if (isa < 0) {
    const char* env = std::getenv("PYATTN_CPU_ISA");
    isa = static_cast<int>(env && *env ? parse_cpu_isa(env) : cpu_isa_best());
    g_isa.store(isa, std::memory_order_relaxed);
  }
  return static_cast<CpuIsa>(isa);
}

void set_cpu_isa(CpuIsa isa) {
  if (static_cast<int>(isa) > static_cast<int>(cpu_isa_best()))
    throw std::invalid_argument(std::string("cpu isa '") + cpu_isa_name(isa) + "' is not supported by this CPU");
  g_isa.store(static_cast<int>(isa), std::memory_order_relaxed);
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::avx2: return "avx2";
    case CpuIsa::avx512: return "avx512";
    case CpuIsa::avx512_bf16: return "avx512_bf16";
    default: return "generic";
  }
}

}  // namespace pyattn
