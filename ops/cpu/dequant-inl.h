// Q8_0 / Q4_0 blocks to f32 on the vector units: the packed GEMM (prefill, scoring) dequantises
// a quantised Bᵀ as it packs it, once per K block and panel, so this runs on every weight value
// of every prefill GEMM. Eight values per step: int8 (or a nibble) widened to int32, converted,
// times the block's f16 scale. Same values as runtime/quant.cc's scalar dequantize_blocks.
#if defined(SMELT_OPS_CPU_DEQUANT_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SMELT_OPS_CPU_DEQUANT_INL_H_
#undef SMELT_OPS_CPU_DEQUANT_INL_H_
#else
#define SMELT_OPS_CPU_DEQUANT_INL_H_
#endif

#include <cstdint>

#include "hwy/highway.h"
#include "runtime/quant.h"

HWY_BEFORE_NAMESPACE();
namespace smelt {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

template <DType W>
void dequantize_row_of(const uint8_t* src, float* dst, int64_t values) {
  const hn::CappedTag<float, 8> df;
  const hn::Rebind<int32_t, decltype(df)> di;
  const hn::Rebind<int8_t, decltype(df)> d8;
  const hn::Rebind<uint8_t, decltype(df)> du8;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  constexpr int64_t kBlockBytes = quant_block_bytes(W);
  const float* f16 = f16_to_f32_table();
  for (int64_t b = 0; b < values / kQuantBlock; ++b, src += kBlockBytes, dst += kQuantBlock) {
    const auto scale = hn::Set(df, f16[src[0] | (src[1] << 8)]);
    if constexpr (W == DType::Q8_0) {
      const int8_t* q = reinterpret_cast<const int8_t*>(src + 2);
      for (int64_t c = 0; c < kQuantBlock; c += L) hn::StoreU(hn::Mul(hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, q + c))), scale), df, dst + c);
    } else {  // low nibbles are values 0..15, high nibbles 16..31, each minus 8
      const auto eight = hn::Set(di, 8), low = hn::Set(di, 0x0F);
      for (int64_t c = 0; c < kQuantBlock / 2; c += L) {
        const auto v = hn::PromoteTo(di, hn::LoadU(du8, src + 2 + c));
        hn::StoreU(hn::Mul(hn::ConvertTo(df, hn::Sub(hn::And(v, low), eight)), scale), df, dst + c);
        hn::StoreU(hn::Mul(hn::ConvertTo(df, hn::Sub(hn::ShiftRight<4>(v), eight)), scale), df, dst + 16 + c);
      }
    }
  }
}

// values (a multiple of 32) of a Q8_0 or Q4_0 row to f32.
inline void dequantize_row(DType type, const uint8_t* src, float* dst, int64_t values) {
  if (type == DType::Q8_0) dequantize_row_of<DType::Q8_0>(src, dst, values);
  else dequantize_row_of<DType::Q4_0>(src, dst, values);
}

}  // namespace HWY_NAMESPACE
}  // namespace smelt
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
