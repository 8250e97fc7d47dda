// kernels/cuda/scaled_masked_softmax.cu on the emulated device of emulate.h.
#include "emulate.h"

#include "cuda/scaled_masked_softmax.cu"
