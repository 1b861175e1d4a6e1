// The CPU's device backend: 64-byte aligned host memory with a block cache for the sizes a
// training step frees and asks for again, strided dtype-converting copies, fill. Nothing to
// synchronise: CPU work is done when the call returns.
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "runtime/block_cache.h"
#include "runtime/device_backend.h"
#include "runtime/quant.h"
#include "runtime/strided.h"
#include "runtime/tensor.h"

namespace smelt {
namespace {

// Training allocates and frees the same activation sizes every step. glibc serves large blocks
// with fresh mmaps and returns them on free, so each step would fault in and zero its memory
// again (half the CPU time in the kernel, measured). Keeping freed blocks in the heap lets
// the next step reuse them.
void keep_freed_memory_for_reuse() {
  static const bool done = [] {
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    return true;
  }();
  (void)done;
}

void raise_to(std::atomic<int64_t>& peak, int64_t now) {
  int64_t seen = peak.load(std::memory_order_relaxed);
  while (now > seen && !peak.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
  }
}

size_t rounded_size(size_t bytes) { return block_cache::block_size(bytes); }

// Copies into or out of a block-quantised tensor: whole rows, shapes equal (no broadcast),
// through f32 for any conversion.
void copy_quantized(const Tensor& dst, const Tensor& src) {
  SMELT_CHECK(dst.shape() == src.shape() && dst.is_contiguous(), "copy ", src.str(), " → ", dst.str(),
              ": quantised tensors copy whole, without broadcasting or strides");
  if (dst.dtype() == src.dtype()) {
    const Tensor packed = src.is_contiguous() ? src : src.clone();
    std::memcpy(dst.device_data(), packed.device_data(), dtype_bytes(src.dtype(), src.numel()));
    return;
  }
  // Rows interleaved by 8 go through their plain type, whose bytes they rearrange.
  const int64_t k = src.shape().empty() ? 1 : src.shape().back(), rows = src.numel() / std::max<int64_t>(k, 1);
  if (is_interleaved(src.dtype())) {
    SMELT_CHECK(src.is_contiguous(), "copy from ", src.str(), ": a quantised source must be contiguous");
    const DType base = x8_base(src.dtype());
    Tensor plain = Tensor::empty(src.shape(), base, src.device());
    unpack_x8(base, static_cast<const uint8_t*>(src.device_data()), static_cast<uint8_t*>(plain.device_data()), rows, k);
    return copy_quantized(dst, plain);
  }
  if (is_interleaved(dst.dtype())) {
    const DType base = x8_base(dst.dtype());
    const Tensor plain = src.dtype() == base && src.is_contiguous() ? src : src.to(base);
    repack_x8(base, static_cast<const uint8_t*>(plain.device_data()), static_cast<uint8_t*>(dst.device_data()), rows, k);
    return;
  }
  Tensor f32 = src;  // src's values as contiguous f32
  if (is_quantized(src.dtype())) {
    SMELT_CHECK(src.is_contiguous(), "copy from ", src.str(), ": a quantised source must be contiguous");
    f32 = Tensor::empty(src.shape(), DType::F32, src.device());
    dequantize_blocks(src.dtype(), static_cast<const uint8_t*>(src.device_data()), static_cast<float*>(f32.device_data()), src.numel());
  } else if (src.dtype() != DType::F32 || !src.is_contiguous()) {
    f32 = src.to(DType::F32).clone();
  }
  if (is_quantized(dst.dtype()))
    quantize_blocks(dst.dtype(), static_cast<const float*>(f32.device_data()), static_cast<uint8_t*>(dst.device_data()), dst.numel());
  else
    dst.copy_from(f32);
}

// ---- element conversion for copies ----

float load_as_float(const void* base, int64_t i, DType t) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(base)[i];
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(base)[i]);
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(base)[i]);
    case DType::I32: return static_cast<float>(static_cast<const int32_t*>(base)[i]);
    case DType::I64: return static_cast<float>(static_cast<const int64_t*>(base)[i]);
    case DType::U8: case DType::Bool: return static_cast<float>(static_cast<const uint8_t*>(base)[i]);
    case DType::Q8_0: case DType::Q4_0: case DType::Q4_K: case DType::Q4_0X8: case DType::Q8_0X8: case DType::Q4_KX8: break;  // whole blocks only: copy_quantized
  }
  SMELT_FAIL("element copy of ", dtype_name(t), " (quantised tensors copy in whole blocks)");
}

int64_t load_as_int(const void* base, int64_t i, DType t) {
  switch (t) {
    case DType::I32: return static_cast<const int32_t*>(base)[i];
    case DType::I64: return static_cast<const int64_t*>(base)[i];
    case DType::U8: case DType::Bool: return static_cast<const uint8_t*>(base)[i];
    default: return static_cast<int64_t>(load_as_float(base, i, t));
  }
}

void store_from(void* base, int64_t i, DType t, double v, int64_t iv, bool is_int) {
  switch (t) {
    case DType::F32: static_cast<float*>(base)[i] = static_cast<float>(v); break;
    case DType::BF16: static_cast<uint16_t*>(base)[i] = f32_to_bf16(static_cast<float>(v)); break;
    case DType::F16: static_cast<uint16_t*>(base)[i] = f32_to_f16(static_cast<float>(v)); break;
    case DType::I32: static_cast<int32_t*>(base)[i] = static_cast<int32_t>(is_int ? iv : static_cast<int64_t>(v)); break;
    case DType::I64: static_cast<int64_t*>(base)[i] = is_int ? iv : static_cast<int64_t>(v); break;
    case DType::U8: static_cast<uint8_t*>(base)[i] = static_cast<uint8_t>(is_int ? iv : static_cast<int64_t>(v)); break;
    case DType::Bool: static_cast<uint8_t*>(base)[i] = (is_int ? iv != 0 : v != 0.0) ? 1 : 0; break;
    case DType::Q8_0: case DType::Q4_0: case DType::Q4_K: case DType::Q4_0X8: case DType::Q8_0X8: case DType::Q4_KX8: SMELT_FAIL("element copy into ", dtype_name(t), " (quantised tensors copy in whole blocks)");
  }
}

// y += x. Memory-bound; vectorised for the baseline ISA (the build has no -march), which is enough.
#pragma GCC push_options
#pragma GCC optimize("tree-vectorize")
void add_floats(float* __restrict y, const float* __restrict x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}
#pragma GCC pop_options

class CpuDeviceBackend final : public DeviceBackend {
 public:
  const char* name() const override { return "cpu"; }

  void* allocate(size_t bytes, int) override {
    keep_freed_memory_for_reuse();
    const size_t rounded = rounded_size(bytes);
    void* p = rounded >= block_cache::kMinBytes ? block_cache::take(rounded) : nullptr;
    if (!p) p = std::aligned_alloc(64, rounded);
    if (!p) SMELT_FAIL("out of memory on cpu allocating ", bytes, " bytes (", live_.load(), " bytes held by tensors)");
    const int64_t now = live_.fetch_add(static_cast<int64_t>(bytes), std::memory_order_relaxed) + static_cast<int64_t>(bytes);
    raise_to(peak_, now);
    raise_to(all_time_peak_, now);
    return p;
  }

  void deallocate(void* ptr, size_t bytes, int) override {
    const size_t rounded = rounded_size(bytes);
    if (rounded < block_cache::kMinBytes || !block_cache::keep(ptr, rounded, all_time_peak_.load(std::memory_order_relaxed)))
      std::free(ptr);
    live_.fetch_sub(static_cast<int64_t>(bytes), std::memory_order_relaxed);
  }

  MemoryStats memory_stats(int) const override {
    return {live_.load(std::memory_order_relaxed), peak_.load(std::memory_order_relaxed), block_cache::cached_bytes()};
  }
  void reset_peak(int) override { peak_.store(live_.load(std::memory_order_relaxed), std::memory_order_relaxed); }
  void trim(int, bool all) override {
    if (!all) return block_cache::trim();
    block_cache::release_all();
    malloc_trim(0);  // and the heap's free pages go back to the system (the trim threshold above keeps them otherwise)
  }

  void copy_to_host(void* host_dst, const void* src, size_t bytes, int) override { std::memcpy(host_dst, src, bytes); }
  void copy_from_host(void* dst, const void* host_src, size_t bytes, int) override { std::memcpy(dst, host_src, bytes); }

  void copy(const Tensor& dst, const Tensor& src) override {
    if (is_quantized(dst.dtype()) || is_quantized(src.dtype())) return copy_quantized(dst, src);
    const Shape& out = dst.shape();
    const Shape src_strides = broadcast_strides(src, out);
    const Shape& dst_strides = dst.strides();
    char* dbase = static_cast<char*>(dst.storage()->data());
    const char* sbase = static_cast<const char*>(src.storage()->data());
    const DType dt = dst.dtype(), st = src.dtype();
    const size_t dsz = dtype_size(dt), ssz = dtype_size(st);
    const bool int_path = !is_floating(dt) && !is_floating(st);
    const int64_t ds = dst_strides.empty() ? 1 : dst_strides.back();
    const int64_t ss = src_strides.empty() ? 1 : src_strides.back();
    for_each_row<2>(out, {&dst_strides, &src_strides}, {dst.offset(), src.offset()}, [&](const std::array<int64_t, 2>& off, int64_t n) {
      void* d = dbase + off[0] * dsz;
      const void* s = sbase + off[1] * ssz;
      if (dt == st && ds == 1 && ss == 1) {
        std::memmove(d, s, n * dsz);
        return;
      }
      for (int64_t i = 0; i < n; ++i) {
        if (int_path) store_from(d, i * ds, dt, 0, load_as_int(s, i * ss, st), true);
        else store_from(d, i * ds, dt, load_as_float(s, i * ss, st), 0, false);
      }
    });
  }

  void fill(const Tensor& dst, double value) override {
    if (dst.is_contiguous() && value == 0.0) {  // every dtype's zero is all-zero bytes
      std::memset(dst.device_data(), 0, dtype_bytes(dst.dtype(), dst.numel()));
      return;
    }
    if (dst.is_contiguous() && dst.dtype() == DType::F32) {
      float* p = static_cast<float*>(dst.device_data());
      std::fill(p, p + dst.numel(), static_cast<float>(value));
      return;
    }
    Tensor v = Tensor::empty({}, DType::F32);
    *static_cast<float*>(v.storage()->data()) = static_cast<float>(value);
    copy(dst, v);
  }

  void accumulate(const Tensor& dst, const Tensor& src) override { add_floats(static_cast<float*>(dst.device_data()), static_cast<const float*>(src.device_data()), dst.numel()); }

  void synchronize(int) override {}

 private:
  std::atomic<int64_t> live_{0}, peak_{0};
  std::atomic<int64_t> all_time_peak_{0};  // never reset: bounds the block cache
};

}  // namespace

DeviceBackend& cpu_device_backend() {
  static CpuDeviceBackend* backend = new CpuDeviceBackend;  // never destroyed: storages may be freed after static destructors
  return *backend;
}

}  // namespace smelt
