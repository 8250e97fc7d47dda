// kernels/cuda/lstm_persistent.cu on the emulated device of emulate.h.
#include "emulate.h"

#include "cuda/lstm_persistent.cu"
