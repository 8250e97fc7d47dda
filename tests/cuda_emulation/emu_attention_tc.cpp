// kernels/cuda/attention_tc.cu (the WMMA backward) on the emulated device of emulate.h.
#include "emulate.h"

#include "cuda/attention_tc.cu"
