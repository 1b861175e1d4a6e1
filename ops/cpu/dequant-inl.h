// Q8_0 / Q4_0 / Q4_K blocks to f32 on the vector units: the packed GEMM (prefill, scoring) dequantises
// a quantised Bᵀ as it packs it, once per K block and panel, so this runs on every weight value
// of every prefill GEMM. Eight values per step: int8 (or a nibble) widened to int32, converted,
// times the block's f16 scale. Same values as runtime/quant.cc's scalar dequantize_blocks.
#if defined(SMELT_OPS_CPU_DEQUANT_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SMELT_OPS_CPU_DEQUANT_INL_H_
#undef SMELT_OPS_CPU_DEQUANT_INL_H_
#else
#define SMELT_OPS_CPU_DEQUANT_INL_H_
#endif

#include <algorithm>
#include <cstdint>
#include <vector>

#include "hwy/highway.h"
#include "runtime/error.h"
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

// Q4_K super-blocks: value = d·sc·q − dmin·m per sub-block of 32 (a product, then a difference:
// runtime/quant's scalar decoder's rounding).
inline void dequantize_q4_k_row(const uint8_t* src, float* dst, int64_t values) {
  const hn::CappedTag<float, 8> df;
  const hn::Rebind<int32_t, decltype(df)> di;
  const hn::Rebind<uint8_t, decltype(df)> du8;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  const float* f16 = f16_to_f32_table();
  const auto low = hn::Set(di, 0x0F);
  for (int64_t b = 0; b < values / kQ4KBlock; ++b, src += kQ4KBlockBytes) {
    const float d = f16[src[0] | (src[1] << 8)], dmin = f16[src[2] | (src[3] << 8)];
    uint8_t sc[8], mn[8];
    unpack_q4_k_scales(src + 4, sc, mn);
    for (int s = 0; s < 8; ++s, dst += kQuantBlock) {
      const uint8_t* q = src + 16 + (s / 2) * kQuantBlock;
      const auto scale = hn::Set(df, d * static_cast<float>(sc[s])), min = hn::Set(df, dmin * static_cast<float>(mn[s]));
      for (int64_t c = 0; c < kQuantBlock; c += L) {
        auto v = hn::PromoteTo(di, hn::LoadU(du8, q + c));
        v = s % 2 == 0 ? hn::And(v, low) : hn::ShiftRight<4>(v);
        hn::StoreU(hn::Sub(hn::Mul(hn::ConvertTo(df, v), scale), min), df, dst + c);
      }
    }
  }
}

// Values [k0, k0 + kc) of a quantised row (the row's first byte at `row`) to f32. Q8_0 and Q4_0
// spans are whole blocks; a Q4_K span may start or end inside a super-block (the packed GEMM's
// K blocks are 320 values), so its super-blocks are decoded into `scratch` and the span copied.
inline void dequantize_span(DType type, const uint8_t* row, int64_t k0, int64_t kc, float* dst, std::vector<float>& scratch) {
  if (type == DType::Q8_0) return dequantize_row_of<DType::Q8_0>(row + dtype_bytes(type, k0), dst, kc);
  if (type == DType::Q4_0) return dequantize_row_of<DType::Q4_0>(row + dtype_bytes(type, k0), dst, kc);
  SMELT_ASSERT(type == DType::Q4_K, "dequantize_span: ", dtype_name(type), " rows are not contiguous");
  const int64_t first = k0 / kQ4KBlock, last = (k0 + kc + kQ4KBlock - 1) / kQ4KBlock;
  scratch.resize(static_cast<size_t>((last - first) * kQ4KBlock));
  dequantize_q4_k_row(row + first * kQ4KBlockBytes, scratch.data(), (last - first) * kQ4KBlock);
  std::copy_n(scratch.data() + (k0 - first * kQ4KBlock), kc, dst);
}

}  // namespace HWY_NAMESPACE
}  // namespace smelt
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
