// kernels/cuda/lstm.cu on the emulated device of emulate.h.
#include "emulate.h"

#include "cuda/lstm.cu"
