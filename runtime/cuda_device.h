// The CUDA device backend's entry points (runtime/cuda_device.cu, compiled when the build has
// CUDA: SMELT_HAVE_CUDA). runtime/device_backend.cc hands CUDA devices to it.
#pragma once
#include <string>

#include "runtime/device_backend.h"

namespace smelt {

// GPUs the CUDA runtime sees (0 without a driver or a GPU).
int cuda_device_count();
// Why no CUDA device can be used, in a few words for a one-line error.
std::string cuda_unavailable_reason();
DeviceBackend& cuda_device_backend();
// The compute stream of GPU `index` (a cudaStream_t): every copy and kernel on that GPU runs on
// it, in order. For the CUDA op table (ops/cuda/).
void* cuda_stream_handle(int index);

}  // namespace smelt
