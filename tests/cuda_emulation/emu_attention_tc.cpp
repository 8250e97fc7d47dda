// kernels/cuda/attention_tc.cu (the tensor-core forward) on the emulated device of emulate.h.
#include "emulate.h"

#include "cuda/attention_tc.cu"
