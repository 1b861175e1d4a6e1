// The CUDA device backend (built when nvcc is found; see CMakeLists.txt's SMELT_CUDA): a caching
// allocator per GPU, one compute stream per GPU on which every copy and kernel runs in order,
// strided dtype-converting copies with broadcasting, fill, the gradient sum, and synchronise;
// large uploads pass through pinned staging buffers.
// Ops on CUDA tensors come from the CUDA op table (issue 16); this file is memory only.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "runtime/cuda_device.h"
#include "runtime/cuda_launch.cuh"
#include "runtime/device_backend.h"
#include "runtime/strided.h"
#include "runtime/tensor.h"

namespace smelt {
namespace {

#define SMELT_CUDA_CHECK(call, device)                                                                   \
  do {                                                                                                   \
    const cudaError_t err_ = (call);                                                                     \
    if (err_ != cudaSuccess) SMELT_FAIL("cuda:", device, ": ", #call, " failed: ", cudaGetErrorString(err_)); \
  } while (0)

__device__ double load_value(const void* base, int64_t i, int dtype) {
  switch (static_cast<DType>(dtype)) {
    case DType::F32: return static_cast<const float*>(base)[i];
    case DType::BF16: {
      const uint32_t bits = static_cast<uint32_t>(static_cast<const uint16_t*>(base)[i]) << 16;
      return __uint_as_float(bits);
    }
    case DType::F16: return __half2float(*reinterpret_cast<const __half*>(static_cast<const uint16_t*>(base) + i));
    case DType::I32: return static_cast<const int32_t*>(base)[i];
    case DType::I64: return static_cast<double>(static_cast<const int64_t*>(base)[i]);
    case DType::U8: case DType::Bool: return static_cast<const uint8_t*>(base)[i];
  }
  return 0;
}

__device__ int64_t load_int(const void* base, int64_t i, int dtype) {
  switch (static_cast<DType>(dtype)) {
    case DType::I32: return static_cast<const int32_t*>(base)[i];
    case DType::I64: return static_cast<const int64_t*>(base)[i];
    case DType::U8: case DType::Bool: return static_cast<const uint8_t*>(base)[i];
    default: return static_cast<int64_t>(load_value(base, i, dtype));
  }
}

// Round to nearest even, as the host's f32_to_bf16 (NaN kept a quiet NaN).
__device__ uint16_t to_bf16(float f) {
  const uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

__device__ void store_value(void* base, int64_t i, int dtype, double v, int64_t iv, bool is_int) {
  switch (static_cast<DType>(dtype)) {
    case DType::F32: static_cast<float*>(base)[i] = static_cast<float>(v); break;
    case DType::BF16: static_cast<uint16_t*>(base)[i] = to_bf16(static_cast<float>(v)); break;
    case DType::F16: reinterpret_cast<__half*>(base)[i] = __float2half_rn(static_cast<float>(v)); break;
    case DType::I32: static_cast<int32_t*>(base)[i] = static_cast<int32_t>(is_int ? iv : static_cast<int64_t>(v)); break;
    case DType::I64: static_cast<int64_t*>(base)[i] = is_int ? iv : static_cast<int64_t>(v); break;
    case DType::U8: static_cast<uint8_t*>(base)[i] = static_cast<uint8_t>(is_int ? iv : static_cast<int64_t>(v)); break;
    case DType::Bool: static_cast<uint8_t*>(base)[i] = (is_int ? iv != 0 : v != 0.0) ? 1 : 0; break;
  }
}

// dst ← src over every element of the view (grid-stride loop), dtypes converted as on the host.
__global__ void strided_copy_kernel(void* dst, int dst_dtype, const void* src, int src_dtype, TwoStrides p, int64_t n, bool int_path) {
  SMELT_GRID_STRIDE(i, n) {
    int64_t d, s;
    p.at(i, d, s);
    if (int_path) store_value(dst, d, dst_dtype, 0, load_int(src, s, src_dtype), true);
    else store_value(dst, d, dst_dtype, load_value(src, s, src_dtype), 0, false);
  }
}

// dst ← one value over every element of the view: v for floating dtypes (already rounded to f32,
// as a host fill is), iv exactly for integer ones.
__global__ void strided_fill_kernel(void* dst, int dtype, TwoStrides p, int64_t n, double v, int64_t iv, bool is_int) {
  SMELT_GRID_STRIDE(i, n) {
    int64_t d, s;
    p.at(i, d, s);
    store_value(dst, d, dtype, v, iv, is_int);
  }
}

__global__ void accumulate_kernel(float* y, const float* x, int64_t n) {
  SMELT_GRID_STRIDE(i, n) y[i] += x[i];
}

// Freed blocks are kept by rounded size (512 B steps below 1 MiB, 2 MiB steps above) for the
// next request of that size; trim() frees the sizes not asked for since the previous trim.
// Two pinned host buffers that large uploads pass through in turn (copy_from_host).
constexpr size_t kStagingChunk = size_t{16} << 20;
constexpr size_t kStagingFrom = size_t{1} << 20;  // smaller uploads go straight from pageable memory

struct Staging {
  void* buffer[2] = {nullptr, nullptr};
  cudaEvent_t done[2] = {nullptr, nullptr};  // recorded after each buffer's last upload
  std::mutex mu;                             // one large upload at a time per GPU
};

struct GpuState {
  cudaStream_t stream = nullptr;
  std::unique_ptr<Staging> staging;
  std::map<size_t, std::vector<void*>> cached;
  std::map<size_t, bool> asked_since_trim;
  int64_t live = 0, peak = 0, cached_bytes = 0;
};

size_t rounded(size_t bytes) {
  if (bytes < (size_t{1} << 20)) return std::max<size_t>(512, (bytes + 511) / 512 * 512);
  return (bytes + (size_t{2} << 20) - 1) / (size_t{2} << 20) * (size_t{2} << 20);
}

class CudaDeviceBackend final : public DeviceBackend {
 public:
  const char* name() const override { return "cuda"; }

  void* allocate(size_t bytes, int index) override {
    std::lock_guard<std::mutex> lock(mu_);
    GpuState& g = state(index);
    const size_t size = rounded(bytes);
    g.asked_since_trim[size] = true;
    void* p = nullptr;
    auto it = g.cached.find(size);
    if (it != g.cached.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      g.cached_bytes -= static_cast<int64_t>(size);
    } else if (cudaMalloc(&p, size) != cudaSuccess) {
      (void)cudaGetLastError();
      free_cached(g, index, true);  // give the cache back and try once more
      if (cudaMalloc(&p, size) != cudaSuccess) {
        (void)cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        SMELT_FAIL("out of memory on cuda:", index, " allocating ", bytes, " bytes (", free_b, " of ", total_b, " bytes free, ", g.live,
                   " held by tensors)");
      }
    }
    g.live += static_cast<int64_t>(size);
    g.peak = std::max(g.peak, g.live);
    return p;
  }

  // No CUDA call, so no throw: a tensor freed while an exception unwinds (a failed kernel left
  // the context in error) must not end the process.
  void deallocate(void* ptr, size_t bytes, int index) noexcept override {
    std::lock_guard<std::mutex> lock(mu_);
    GpuState& g = gpus_[index];  // made by the allocate() that returned ptr
    const size_t size = rounded(bytes);
    // Work queued on the stream may still read the block: a later allocation reuses it only
    // through the same stream, which orders it after that work.
    g.cached[size].push_back(ptr);
    g.cached_bytes += static_cast<int64_t>(size);
    g.live -= static_cast<int64_t>(size);
  }

  MemoryStats memory_stats(int index) const override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = gpus_.find(index);
    if (it == gpus_.end()) return {};
    return {it->second.live, it->second.peak, it->second.cached_bytes};
  }

  void reset_peak(int index) override {
    std::lock_guard<std::mutex> lock(mu_);
    GpuState& g = state(index);
    g.peak = g.live;
  }

  void trim(int index, bool all) override {
    std::lock_guard<std::mutex> lock(mu_);
    free_cached(state(index), index, all);
  }

  void copy_to_host(void* host_dst, const void* src, size_t bytes, int index) override {
    cudaStream_t s = stream(index);
    SMELT_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, s), index);
    SMELT_CUDA_CHECK(cudaStreamSynchronize(s), index);  // the host reads it next
  }

  // A large upload (a model's weights) goes through two pinned buffers in turn: the host fills
  // one while the GPU reads the other, at DMA speed (from pageable memory the driver copies
  // through a small buffer of its own, synchronously).
  void copy_from_host(void* dst, const void* host_src, size_t bytes, int index) override {
    cudaStream_t s = stream(index);
    if (bytes < kStagingFrom) {
      SMELT_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, s), index);
      SMELT_CUDA_CHECK(cudaStreamSynchronize(s), index);  // the host buffer may be freed on return
      return;
    }
    Staging& st = staging(index);
    std::lock_guard<std::mutex> lock(st.mu);
    for (size_t off = 0, chunk = 0; off < bytes; off += kStagingChunk, ++chunk) {
      const size_t n = std::min(kStagingChunk, bytes - off), b = chunk % 2;
      SMELT_CUDA_CHECK(cudaEventSynchronize(st.done[b]), index);  // the buffer's previous upload has finished
      std::memcpy(st.buffer[b], static_cast<const char*>(host_src) + off, n);
      SMELT_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst) + off, st.buffer[b], n, cudaMemcpyHostToDevice, s), index);
      SMELT_CUDA_CHECK(cudaEventRecord(st.done[b], s), index);
    }
    SMELT_CUDA_CHECK(cudaStreamSynchronize(s), index);
  }

  void copy(const Tensor& dst, const Tensor& src) override {
    const int index = dst.device().index;
    const TwoStrides p = two_strides(dst.shape(), dst.strides(), dst.offset(), broadcast_strides(src, dst.shape()), src.offset(), "cuda copy");
    const int64_t n = dst.numel();
    if (n == 0) return;
    SMELT_CHECK(!is_quantized(dst.dtype()) && !is_quantized(src.dtype()), "copy ", src.str(), " → ", dst.str(),
                ": quantised tensors stay on the CPU (their kernels are the CPU's)");
    const bool int_path = !is_floating(dst.dtype()) && !is_floating(src.dtype());
    strided_copy_kernel<<<cuda_grid_for(n), 256, 0, stream(index)>>>(dst.storage()->data(), static_cast<int>(dst.dtype()), src.storage()->data(),
                                                                static_cast<int>(src.dtype()), p, n, int_path);
    SMELT_CUDA_CHECK(cudaGetLastError(), index);
  }

  // In a kernel with the value as an argument: no upload, so no wait for the stream to drain
  // (moe_route and the optimizers fill tensors every step).
  void fill(const Tensor& dst, double value) override {
    const int index = dst.device().index;
    const int64_t n = dst.numel();
    if (n == 0) return;
    SMELT_CHECK(!is_quantized(dst.dtype()), "fill ", dst.str(), ": a quantised tensor is not filled on cuda");
    const TwoStrides p = two_strides(dst.shape(), dst.strides(), dst.offset(), Shape(dst.shape().size(), 0), 0, "cuda fill");
    const bool is_int = dst.dtype() == DType::I64 || dst.dtype() == DType::I32;  // integers exactly, not through f32
    strided_fill_kernel<<<cuda_grid_for(n), 256, 0, stream(index)>>>(dst.storage()->data(), static_cast<int>(dst.dtype()), p, n,
                                                                     static_cast<float>(value), is_int ? static_cast<int64_t>(value) : 0, is_int);
    SMELT_CUDA_CHECK(cudaGetLastError(), index);
  }

  void accumulate(const Tensor& dst, const Tensor& src) override {
    const int index = dst.device().index;
    const int64_t n = dst.numel();
    if (n == 0) return;
    accumulate_kernel<<<cuda_grid_for(n), 256, 0, stream(index)>>>(static_cast<float*>(dst.device_data()),
                                                              static_cast<const float*>(src.device_data()), n);
    SMELT_CUDA_CHECK(cudaGetLastError(), index);
  }

  void synchronize(int index) override { SMELT_CUDA_CHECK(cudaStreamSynchronize(stream(index)), index); }

  cudaStream_t stream(int index) {
    std::lock_guard<std::mutex> lock(mu_);
    return state(index).stream;
  }

 private:
  // The pinned buffers of GPU `index`, made on first use.
  Staging& staging(int index) {
    std::lock_guard<std::mutex> lock(mu_);
    GpuState& g = state(index);
    if (!g.staging) {
      auto st = std::make_unique<Staging>();
      for (int b = 0; b < 2; ++b) {
        SMELT_CUDA_CHECK(cudaHostAlloc(&st->buffer[b], kStagingChunk, cudaHostAllocDefault), index);
        SMELT_CUDA_CHECK(cudaEventCreateWithFlags(&st->done[b], cudaEventDisableTiming), index);
      }
      g.staging = std::move(st);
    }
    return *g.staging;
  }

  // Makes `index` current and creates its stream on first use (mu_ held).
  GpuState& state(int index) {
    SMELT_CUDA_CHECK(cudaSetDevice(index), index);
    GpuState& g = gpus_[index];
    if (!g.stream) SMELT_CUDA_CHECK(cudaStreamCreateWithFlags(&g.stream, cudaStreamNonBlocking), index);
    return g;
  }

  void free_cached(GpuState& g, int index, bool all) {
    SMELT_CUDA_CHECK(cudaStreamSynchronize(g.stream), index);  // nothing queued may still use a block freed here
    for (auto& [size, blocks] : g.cached) {
      if (!all && g.asked_since_trim[size]) continue;
      for (void* p : blocks) cudaFree(p);
      g.cached_bytes -= static_cast<int64_t>(size * blocks.size());
      blocks.clear();
    }
    for (auto& [size, asked] : g.asked_since_trim) asked = false;
  }

  mutable std::mutex mu_;
  std::map<int, GpuState> gpus_;
};

}  // namespace

int cuda_device_count() {
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      (void)cudaGetLastError();
      return 0;
    }
    return n;
  }();
  return count;
}

std::string cuda_unavailable_reason() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  (void)cudaGetLastError();
  if (err != cudaSuccess) return std::string("no usable CUDA GPU (cudaGetDeviceCount: ") + cudaGetErrorString(err) + ")";
  return "no CUDA GPU is present";
}

namespace {
CudaDeviceBackend& the_backend() {
  static CudaDeviceBackend* backend = new CudaDeviceBackend;  // never destroyed: tensors may outlive static destructors
  return *backend;
}
}  // namespace

DeviceBackend& cuda_device_backend() { return the_backend(); }
void* cuda_stream_handle(int index) { return the_backend().stream(index); }

}  // namespace smelt
