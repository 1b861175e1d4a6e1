// Block-quantised weights (q8_0, q4_0, q4_k) for inference: the codecs against the gguf Python
// package's quantiser and ggml's own (committed fixtures), the GEMM's integer dot path against a scalar
// reference that quantises A the same way, its packed path against the f32 GEMM of the
// dequantised weights, and whole models: logits close to the f32 model whose weights were
// rounded through the same blocks, KV-cache decoding, refusals.
#include <cmath>
#include <cstring>
#include <filesystem>

#include "autograd/grad_mode.h"
#include "io/checkpoint.h"
#include "io/gguf.h"
#include "io/gguf_export.h"
#include "io/safetensors.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/ops.h"
#include "optim/trainer.h"
#include "runtime/quant.h"
#include "tests/support/decoding.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

using testing::expect_error_mentions;
using testing::small_config;
using testing::some_ids;

std::vector<float> wavy(int64_t n, uint64_t seed) {
  Philox rng(seed);
  std::vector<float> v = Tensor::uniform({n}, rng, -1.0f, 1.0f).to_vector();
  for (int64_t i = 0; i < n; i += 29) v[static_cast<size_t>(i)] *= 6.0f;  // outliers set some blocks' scales
  return v;
}

TEST(QuantWeights, TensorConversionWritesTheGgufPackagesBytes) {
  // The fixture holds the gguf package's own quantisation of "quantize.input" (make_gguf_fixture.py).
  const GgufFile f = read_gguf(SMELT_FIXTURE_DIR "/gguf_quants.gguf");
  const Tensor input = f.dequantize(f.tensor("quantize.input"));
  for (auto [name, type] : {std::pair{"quantize.q8_0", DType::Q8_0}, std::pair{"quantize.q4_0", DType::Q4_0}}) {
    const Tensor q = ops::reshape(input, {-1, 32}).to(type);
    const GgufTensorInfo& want = f.tensor(name);
    ASSERT_EQ(dtype_bytes(type, q.numel()), want.nbytes) << name;
    EXPECT_EQ(std::memcmp(q.data<uint8_t>(), f.tensor_bytes(want), want.nbytes), 0) << name;
    // And back: the dequantised values are what the package's dequantiser gives.
    EXPECT_EQ(q.to(DType::F32).to_vector(), f.dequantize(want).to_vector()) << name;
  }
}

TEST(QuantWeights, Q4KConversionWritesGgmlsBytes) {
  // The fixture holds ggml's own quantize_row_q4_K_ref output for "quantize.input"
  // (make_q4_k_fixture.py): random, outlier, tiny, huge, one-signed, constant and zero blocks.
  const GgufFile f = read_gguf(SMELT_FIXTURE_DIR "/gguf_q4_k.gguf");
  const Tensor input = f.dequantize(f.tensor("quantize.input"));
  const Tensor q = input.to(DType::Q4_K);
  const GgufTensorInfo& want = f.tensor("quantize.q4_k");
  ASSERT_EQ(dtype_bytes(DType::Q4_K, q.numel()), want.nbytes);
  const uint8_t* ours = q.data<uint8_t>();
  const uint8_t* theirs = f.tensor_bytes(want);
  for (uint64_t b = 0; b < want.nbytes / kQ4KBlockBytes; ++b)
    EXPECT_EQ(std::memcmp(ours + b * kQ4KBlockBytes, theirs + b * kQ4KBlockBytes, kQ4KBlockBytes), 0) << "super-block " << b;
  // And back: the gguf package's dequantiser (the reader's, checked against it in gguf_test) agrees.
  EXPECT_EQ(q.to(DType::F32).to_vector(), f.dequantize(want).to_vector());
  // Round trip within the sub-blocks' 4-bit steps: error at most about one step of the largest scale.
  const std::vector<float> x = input.to_vector(), y = q.to(DType::F32).to_vector();
  for (size_t i = 0; i < x.size(); i += 256) {
    float lo = 0, hi = 0;
    for (size_t j = i; j < i + 256; ++j) lo = std::min(lo, x[j]), hi = std::max(hi, x[j]);
    for (size_t j = i; j < i + 256; ++j) ASSERT_LE(std::fabs(y[j] - x[j]), (hi - lo) / 15 + 1e-6f) << "value " << j;
  }
  expect_error_mentions([] { Tensor::zeros({4, 96}, DType::Q4_K); }, {"q4_k", "whole blocks of 256"});
}

// Rows interleaved by 8 hold the plain type's bytes rearranged: back byte for byte, the same
// values through f32, the same embedding rows, and refused where rows are not whole groups.
TEST(QuantWeights, InterleavedRowsAreThePlainBlocksRearranged) {
  const int64_t rows = 24;
  for (DType base : {DType::Q4_0, DType::Q8_0, DType::Q4_K}) {
    const int64_t k = base == DType::Q4_K ? 512 : 96;
    const Tensor plain = Tensor::from_vector(wavy(rows * k, 17), {rows, k}).to(base);
    const Tensor x8 = plain.to(x8_of(base));
    ASSERT_EQ(x8.dtype(), x8_of(base));
    EXPECT_NE(std::memcmp(x8.data<uint8_t>(), plain.data<uint8_t>(), dtype_bytes(base, rows * k)), 0);  // rearranged
    const Tensor back = x8.to(base);
    EXPECT_EQ(std::memcmp(back.data<uint8_t>(), plain.data<uint8_t>(), dtype_bytes(base, rows * k)), 0) << dtype_name(base);
    EXPECT_EQ(x8.to(DType::F32).to_vector(), plain.to(DType::F32).to_vector()) << dtype_name(base);
    const Tensor ids = Tensor::from_vector(std::vector<float>{0, 7, 8, 23, 13}, {5}).to(DType::I64);
    EXPECT_EQ(ops::embedding(x8, ids).to_vector(), ops::embedding(plain, ids).to_vector()) << dtype_name(base);
  }
  expect_error_mentions([] { Tensor::zeros({12, 32}, DType::Q4_0X8); }, {"multiple of 8"});
}

TEST(QuantWeights, RoundTripErrorIsBoundedByTheBlockScale) {
  const std::vector<float> x = wavy(32 * 40, 3);
  for (DType type : {DType::Q8_0, DType::Q4_0}) {
    const std::vector<float> y = Tensor::from_vector(x, {40, 32}).to(type).to(DType::F32).to_vector();
    for (int64_t b = 0; b < 40; ++b) {
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
      // Half a step (a whole one for Q4_0, whose 16 levels clamp the side opposite the block's
      // extreme at 7 steps), plus the f16 rounding of the scale (2^-11 relative) times the largest |q|.
      const float qmax = type == DType::Q8_0 ? 127 : 8, step = amax / qmax, rounding = type == DType::Q8_0 ? 0.5f : 1.0f;
      for (int j = 0; j < 32; ++j)
        ASSERT_LE(std::fabs(y[b * 32 + j] - x[b * 32 + j]), step * (rounding + qmax / 2048) * 1.0001f + 1e-7f) << dtype_name(type);
    }
  }
  expect_error_mentions([] { Tensor::zeros({4, 48}, DType::Q8_0); }, {"q8_0", "whole blocks of 32"});
  expect_error_mentions([] { Tensor::zeros({2, 32}).to(DType::Q4_0).data<float>(); }, {"q4_0"});
}

// One 32-value block of a quantised weight row as integers: value = scale · q[t] − offset.
struct WeightBlock {
  float scale = 0, offset = 0;
  int q[32] = {};
};

// Block b of row j (k values per row), decoded from the bytes by the formats' definitions.
WeightBlock weight_block(const Tensor& wq, int64_t j, int64_t k, int64_t b) {
  const uint8_t* row = wq.data<uint8_t>() + dtype_bytes(wq.dtype(), j * k);
  const float* f16 = f16_to_f32_table();
  WeightBlock w;
  if (wq.dtype() == DType::Q4_K) {
    const uint8_t* block = row + (b / 8) * kQ4KBlockBytes;
    uint8_t sc[8], mn[8];
    unpack_q4_k_scales(block + 4, sc, mn);
    const int s = static_cast<int>(b % 8);
    w.scale = f16[block[0] | (block[1] << 8)] * sc[s];
    w.offset = f16[block[2] | (block[3] << 8)] * mn[s];
    for (int t = 0; t < 32; ++t) w.q[t] = s % 2 == 0 ? block[16 + (s / 2) * 32 + t] & 0x0F : block[16 + (s / 2) * 32 + t] >> 4;
    return w;
  }
  const uint8_t* block = row + dtype_bytes(wq.dtype(), b * 32);
  w.scale = f16[block[0] | (block[1] << 8)];
  for (int t = 0; t < 32; ++t)
    w.q[t] = wq.dtype() == DType::Q8_0 ? static_cast<int8_t>(block[2 + t]) : t < 16 ? (block[2 + t] & 0x0F) - 8 : (block[2 + t - 16] >> 4) - 8;
  return w;
}

// The integer dot path's reference: A quantised per 32-block with an f32 scale (per 256-value
// super-block against Q4_K weights, as llama.cpp's Q8_K; round to nearest), products summed
// exactly, scaled per block.
std::vector<float> reference_dot(const std::vector<float>& a, int64_t m, int64_t k, const Tensor& wq, int64_t n) {
  std::vector<float> c(static_cast<size_t>(m * n));
  const int64_t span = wq.dtype() == DType::Q4_K || wq.dtype() == DType::Q4_KX8 ? 256 : 32;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0;
      for (int64_t b = 0; b < k / 32; ++b) {
        float amax = 0;
        const int64_t first = b * 32 / span * span;
        for (int64_t t = first; t < first + span; ++t) amax = std::max(amax, std::fabs(a[i * k + t]));
        const float da = amax / 127.0f, ia = da != 0 ? 1.0f / da : 0.0f;
        const WeightBlock w = weight_block(wq, j, k, b);
        int64_t products = 0, a_sum = 0;
        for (int t = 0; t < 32; ++t) {
          const int64_t qa = std::lrint(a[i * k + b * 32 + t] * ia);
          products += w.q[t] * qa;
          a_sum += qa;
        }
        sum += (static_cast<double>(products) * w.scale - static_cast<double>(a_sum) * w.offset) * da;
      }
      c[i * n + j] = static_cast<float>(sum);
    }
  return c;
}

// Q8_0 from another writer may hold −128 (ggml's own quantiser stops at −127), and A's int8
// values reach ±127: the extreme pairs must not saturate the int16 pair sums of vpmaddubsw.
TEST(QuantWeights, DotPathTakesTheWholeInt8RangeWithoutSaturating) {
  testing::for_each_cpu_target([] {
  for (const DType type : {DType::Q8_0, DType::Q8_0X8}) {  // plain rows, and rows interleaved by 8
    const int64_t n = type == DType::Q8_0 ? 3 : 8, k = 64;
    Tensor plain = Tensor::from_vector(wavy(n * k, 3), {n, k}).to(DType::Q8_0);
    uint8_t* bytes = plain.data<uint8_t>();
    for (int64_t j = 0; j < n; ++j)
      for (int64_t b = 0; b < k / 32; ++b)
        for (int t = 0; t < 32; ++t) bytes[(j * (k / 32) + b) * 34 + 2 + t] = static_cast<uint8_t>(t % 2 == 0 || j == 1 ? 0x80 : 0x7F);
    const Tensor w = plain.to(type);
    std::vector<float> a(static_cast<size_t>(k));
    for (int64_t t = 0; t < k; ++t) a[t] = t % 3 == 2 ? 1.0f : -1.0f;  // every block: q = ±127
    std::vector<float> c(static_cast<size_t>(n));
    GemmArgs g;
    g.m = 1; g.n = n; g.k = k;
    g.a = a.data(); g.lda = k;
    g.b_quant = w.data<uint8_t>(); g.b_quant_type = type; g.ldb = k; g.trans_b = true;
    g.c = c.data(); g.ldc = n;
    cpu_gemm(g);
    const std::vector<float> want = reference_dot(a, 1, k, plain, n);
    for (int64_t j = 0; j < n; ++j) ASSERT_NEAR(c[j], want[j], 1e-5f * std::fabs(want[j])) << dtype_name(type) << " row " << j;
  }
  });
}

TEST(QuantWeights, DotPathMatchesTheIntegerReferenceOnEverySimdTarget) {
  testing::for_each_cpu_target([] {
  // Rows interleaved by 8 take the integer path for any number of A rows (prefill too; 70 rows
  // span two of its row blocks).
  for (DType type : {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q4_0X8, DType::Q8_0X8, DType::Q4_KX8})
    for (int64_t m : {1, 2, 3, 4, 5, 11, 23, 70})
      for (auto [n, k] : {std::pair<int64_t, int64_t>{37, 96}, {5, 576}, {70, 32}, {9, 512}, {6, 1536}, {40, 96}, {8, 576}, {72, 32}, {16, 512},
                          {8, 1536}, {8, 256}, {16, 256}}) {
        if (k % dtype_block_values(type) != 0 || (is_interleaved(type) && n % kX8Rows != 0) || (!is_interleaved(type) && m > 4)) continue;
        // Rows interleaved by 8: the plain matrix interleaved, against the reference on the plain one.
        const Tensor plain = Tensor::from_vector(wavy(n * k, 7 + n), {n, k}).to(is_interleaved(type) ? x8_base(type) : type);
        const Tensor w = plain.to(type);
        const std::vector<float> a = wavy(m * k, 11 + m);
        std::vector<float> c(static_cast<size_t>(m * n), 1.0f);
        GemmArgs g;
        g.m = m; g.n = n; g.k = k;
        g.a = a.data(); g.lda = k;
        g.b_quant = w.data<uint8_t>(); g.b_quant_type = type; g.ldb = k; g.trans_b = true;
        g.c = c.data(); g.ldc = n;
        g.alpha = 0.5f; g.beta = 2.0f;
        cpu_gemm(g);
        const std::vector<float> want = reference_dot(a, m, k, plain, n);
        for (int64_t i = 0; i < m * n; ++i)
          ASSERT_NEAR(c[i], 0.5f * want[i] + 2.0f, 1e-4f * (1.0f + std::fabs(want[i]))) << dtype_name(type) << " m=" << m << " n=" << n << " k=" << k;
      }
  });
}

// With a transposed A, rows interleaved by 8 go to the packed path too: their blocks gathered
// for each K block (Q4_K's 320-value K blocks start inside its super-blocks), the same product
// as the f32 GEMM of the dequantised weights.
TEST(QuantWeights, InterleavedRowsUnderATransposedAEqualTheF32Gemm) {
  testing::for_each_cpu_target([] {
  for (DType type : {DType::Q4_0X8, DType::Q8_0X8, DType::Q4_KX8}) {
    const int64_t m = 13, n = 24, k = type == DType::Q4_KX8 ? 768 : 704;
    const Tensor w = Tensor::from_vector(wavy(n * k, 5), {n, k}).to(x8_base(type)).to(type);
    const std::vector<float> wf = w.to(DType::F32).to_vector(), at = wavy(k * m, 6);  // A stored as Aᵀ [k, m]
    std::vector<float> got(static_cast<size_t>(m * n)), want(static_cast<size_t>(m * n));
    GemmArgs g;
    g.m = m; g.n = n; g.k = k;
    g.a = at.data(); g.lda = m; g.trans_a = true;
    g.b_quant = w.data<uint8_t>(); g.b_quant_type = type; g.ldb = k; g.trans_b = true;
    g.c = got.data(); g.ldc = n;
    cpu_gemm(g);
    GemmArgs f = g;
    f.b_quant = nullptr; f.b = wf.data(); f.c = want.data();
    cpu_gemm(f);
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-4f * (1.0f + std::fabs(want[i]))) << dtype_name(type) << " " << i;
  }
  });
}

// Several quantised products in one call (rows interleaved by 8, and plain blocks), as a layer's
// projections go: their A rows are quantised together in chunks of 8 rows across the threads
// (41 rows in all), and each whole group of 8 columns updates C as one vector, through C's padded
// stride; with beta = 0 the NaN already in C does not leak in, and the padding is never written.
TEST(QuantWeights, QuantisedProductsOfOneCallWriteCThroughItsStride) {
  testing::for_each_cpu_target([] {
    struct Shape { int64_t m, n, k; DType type; };
    const Shape shapes[] = {{9, 16, 256, DType::Q4_KX8}, {3, 24, 64, DType::Q4_0X8}, {20, 8, 32, DType::Q8_0X8}, {5, 16, 256, DType::Q4_0X8},
                            {1, 24, 256, DType::Q4_K},   {1, 13, 256, DType::Q4_K},  {1, 16, 512, DType::Q4_K},  {2, 9, 64, DType::Q8_0}};
    std::vector<Tensor> plains, weights;
    std::vector<std::vector<float>> as, cs;
    std::vector<GemmArgs> problems;
    for (const Shape& s : shapes) {
      plains.push_back(Tensor::from_vector(wavy(s.n * s.k, 3 + s.m + s.n), {s.n, s.k}).to(is_interleaved(s.type) ? x8_base(s.type) : s.type));
      weights.push_back(plains.back().to(s.type));
      as.push_back(wavy(s.m * s.k, 17 + s.m + s.n));
      cs.emplace_back(static_cast<size_t>(s.m * (s.n + 3)), NAN);
    }
    for (size_t p = 0; p < std::size(shapes); ++p) {
      GemmArgs g;
      g.m = shapes[p].m; g.n = shapes[p].n; g.k = shapes[p].k;
      g.a = as[p].data(); g.lda = g.k;
      g.b_quant = weights[p].data<uint8_t>(); g.b_quant_type = shapes[p].type; g.ldb = g.k; g.trans_b = true;
      g.c = cs[p].data(); g.ldc = g.n + 3;
      g.alpha = 0.5f;
      problems.push_back(g);
    }
    cpu_grouped_gemm(problems.data(), static_cast<int64_t>(problems.size()));
    for (size_t p = 0; p < problems.size(); ++p) {
      const GemmArgs& g = problems[p];
      const std::vector<float> want = reference_dot(as[p], g.m, g.k, plains[p], g.n);
      for (int64_t i = 0; i < g.m; ++i) {
        for (int64_t j = 0; j < g.n; ++j)
          ASSERT_NEAR(cs[p][i * g.ldc + j], 0.5f * want[i * g.n + j], 1e-4f * (1.0f + std::fabs(want[i * g.n + j])))
              << dtype_name(g.b_quant_type) << " product " << p << " at " << i << "," << j;
        for (int64_t j = g.n; j < g.ldc; ++j) ASSERT_TRUE(std::isnan(cs[p][i * g.ldc + j])) << "padding written at " << i << "," << j;
      }
    }
  });
}

// A NaN in A reaches the output as NaN, as in the f32 product: A's quantisation must not turn it
// into a finite value (a max over the block drops NaN) or an int32 sum that overflows.
TEST(QuantWeights, ANanInAMakesTheQuantisedProductsNan) {
  testing::for_each_cpu_target([] {
    for (DType type : {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q4_0X8, DType::Q8_0X8, DType::Q4_KX8})
      for (int64_t m : {1, 5}) {
        const int64_t n = 8, k = 256;
        if (!is_interleaved(type) && m > 4) continue;  // more rows take the packed path (dequantised f32)
        const Tensor w = Tensor::from_vector(wavy(n * k, 5), {n, k}).to(is_interleaved(type) ? x8_base(type) : type).to(type);
        std::vector<float> a = wavy(m * k, 9), c(static_cast<size_t>(m * n), 0.0f);
        a[static_cast<size_t>((m - 1) * k + 40)] = NAN;  // in the last row's second block
        GemmArgs g;
        g.m = m; g.n = n; g.k = k;
        g.a = a.data(); g.lda = k;
        g.b_quant = w.data<uint8_t>(); g.b_quant_type = type; g.ldb = k; g.trans_b = true;
        g.c = c.data(); g.ldc = n;
        cpu_gemm(g);
        for (int64_t j = 0; j < n; ++j) {
          ASSERT_TRUE(std::isnan(c[(m - 1) * n + j])) << dtype_name(type) << " m=" << m << " column " << j << ": " << c[(m - 1) * n + j];
          if (m > 1) ASSERT_FALSE(std::isnan(c[j])) << dtype_name(type) << " row 0 column " << j;
        }
      }
  });
}

TEST(QuantWeights, PackedPathEqualsTheF32GemmOfTheDequantisedWeightsOnEverySimdTarget) {
  testing::for_each_cpu_target([] {
  for (DType type : {DType::Q8_0, DType::Q4_0, DType::Q4_K}) {  // (interleaved rows: the integer path, above)
    // k spans three K blocks of the packed GEMM, the last partial (Q4_K: K blocks of 320 start
    // and end inside its super-blocks of 256)
    const int64_t m = 23, n = 41, k = type == DType::Q4_K ? 768 : 704;
    const Tensor wq = Tensor::from_vector(wavy(n * k, 5), {n, k}).to(type);
    const Tensor x = Tensor::from_vector(wavy(m * k, 6), {m, k});
    const std::vector<float> got = ops::linear(x, wq).to_vector();
    const std::vector<float> want = ops::linear(x, wq.to(DType::F32)).to_vector();
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-4f * (1.0f + std::fabs(want[i]))) << dtype_name(type) << " " << i;
  }
  });
}

ModelConfig moe_config() {
  ModelConfig c = small_config(61, 64, 96, 2, 4, 2);
  c.num_local_experts = 4;
  c.num_experts_per_tok = 2;
  return c;
}

ModelConfig dense_tied() {
  ModelConfig c = small_config(53, 64, 128, 2, 4, 4);
  c.tie_word_embeddings = true;
  return c;
}

// The model with every quantisable matrix rounded through `type` and back to f32.
Transformer rounded_through(const Transformer& m, DType type) {
  NamedTensors out;
  for (const auto& [name, t] : m.state_dict()) {
    const bool router = name.find(".gate.weight") != std::string::npos && name.find("_proj") == std::string::npos;
    out.push_back({name, t.dim() >= 2 && !router ? t.to(type).to(DType::F32) : t.clone()});
  }
  return Transformer::from_tensors(m.config(), out, "rounded");
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

// ops::linears (decoding's q, k, v and gate, up in one call) equals one ops::linear per weight,
// bit for bit, for every weight type, with and without biases, for few rows (the dot path, one
// parallel region) and many; with a gradient needed it is those linears.
TEST(QuantWeights, LinearsEqualOneLinearPerWeight) {
  Philox rng(21);
  for (const DType type : {DType::F32, DType::BF16, DType::Q8_0, DType::Q4_0}) {
    const std::vector<Tensor> weights = {Tensor::randn({96, 64}, rng).to(type), Tensor::randn({32, 64}, rng).to(type),
                                         Tensor::randn({40, 64}, rng).to(type)};
    const std::vector<Tensor> biases = {Tensor::randn({96}, rng), Tensor(), Tensor::randn({40}, rng)};
    for (const Shape& shape : {Shape{1, 1, 64}, Shape{2, 2, 64}, Shape{3, 5, 64}}) {
      NoGradGuard no_grad;
      const Tensor x = Tensor::randn(shape, rng);
      const std::vector<Tensor> together = ops::linears(x, weights, biases), plain = ops::linears(x, weights);
      ASSERT_EQ(together.size(), 3u);
      for (size_t i = 0; i < weights.size(); ++i) {
        EXPECT_EQ(together[i].shape(), ops::linear(x, weights[i]).shape());
        EXPECT_EQ(together[i].to_vector(), ops::linear(x, weights[i], biases[i]).to_vector()) << dtype_name(type) << " weight " << i;
        EXPECT_EQ(plain[i].to_vector(), ops::linear(x, weights[i]).to_vector()) << dtype_name(type) << " weight " << i;
      }
    }
  }
  const Tensor w0 = Tensor::randn({8, 64}, rng);
  Tensor w = w0.clone().set_requires_grad(true), twin = w0.clone().set_requires_grad(true);
  const Tensor x = Tensor::randn({1, 2, 64}, rng);
  ops::sum(ops::linears(x, {w})[0]).backward();
  ops::sum(ops::linear(x, twin)).backward();
  ASSERT_TRUE(w.grad().defined());  // the gradient flows as through ops::linear
  EXPECT_EQ(w.grad().to_vector(), twin.grad().to_vector());
}

// Q4_K on a model whose hidden size is a whole super-block but whose FFN width (96) is not: the
// down projection falls back to Q4_0. Logits follow the rounded twin; the GGUF export writes
// the same blocks, which a q4_k load keeps as they are and computes the same logits from.
TEST(QuantWeights, Q4KModelsKeepTheirSuperBlocksThroughGgufExport) {
  ModelConfig c = small_config(61, 256, 96, 2, 4, 2);
  c.tie_word_embeddings = true;
  Transformer m = Transformer::create(c, 41);
  const std::string dir = ::testing::TempDir() + "q4k_model", gguf = ::testing::TempDir() + "q4k_model.gguf";
  save_model_dir(dir, m, {});
  NamedTensors rounded;
  for (const auto& [name, t] : m.state_dict())
    rounded.push_back({name, t.dim() < 2 ? t.clone() : t.to(t.size(-1) % 256 == 0 ? DType::Q4_K : DType::Q4_0).to(DType::F32)});
  const Transformer twin = Transformer::from_tensors(c, rounded, "rounded");
  m.store_weights_in(DType::Q4_K);
  EXPECT_EQ(m.weight_dtype(), DType::Q4_K);
  int64_t super_blocks = 0;
  for (const auto& [name, t] : m.named_parameters()) {
    if (t.dim() < 2) continue;
    EXPECT_EQ(t.dtype(), name.find("down_proj") != std::string::npos ? DType::Q4_0 : DType::Q4_K) << name;
    super_blocks += t.dtype() == DType::Q4_K;
  }
  EXPECT_EQ(super_blocks, 1 + 2 * 6);  // the embedding, and q, k, v, o, gate, up of both layers
  export_gguf(dir, gguf, GgmlType::Q4_K);
  const Transformer kept = load_model_dir(gguf, DType::Q4_K);
  for (size_t i = 0; i < m.named_parameters().size(); ++i) {
    const Tensor &a = m.named_parameters()[i].second, &b = kept.named_parameters()[i].second;
    ASSERT_EQ(a.dtype(), b.dtype()) << m.named_parameters()[i].first;
    EXPECT_EQ(std::memcmp(a.device_data(), b.device_data(), dtype_bytes(a.dtype(), a.numel())), 0) << m.named_parameters()[i].first;
  }
  NoGradGuard g;
  for (const Tensor& ids : {some_ids(c.vocab_size, 2, 9), some_ids(c.vocab_size, 1, 3)}) {
    const std::vector<float> got = m.forward(ids).to_vector(), want = twin.forward(ids).to_vector();
    float scale = 0;
    for (float v : want) scale = std::max(scale, std::fabs(v));
    // 2 × 9 tokens take the packed path (the twin's f32 arithmetic); 1 × 3 the integer dot path.
    EXPECT_LT(max_abs_diff(got, want), ids.size(1) > 4 ? 1e-5f * scale : 0.02f * scale) << ids.str();
    EXPECT_EQ(kept.forward(ids).to_vector(), got) << ids.str();
  }
}

// Decoding's interleaved layout changes no weight: decoding (the dot path, another summation
// order) gives the same logits to float rounding, through a KV cache too; prefill, an integer
// GEMM on int8 activations where the plain layout dequantises the weights to f32, differs by
// the activations' rounding only.
// On the best target only. The two layouts' kernels sum in different orders, so their outputs
// differ in the last bits, and such a difference now and then moves one of the next layer's
// activations across an int8 rounding boundary (or flips an MoE routing). On AVX-512 none does
// for this model and these tokens; forced onto narrower targets with --simd, some do (Q4_K on
// SSE4 and SSSE3; MoE also on AVX2 and scalar): swapping one weight at a time to the interleaved
// layout moved the logits by exactly 0.0021 for five different weights, one such flip. Each
// layout then stays as close to the f32 twin as on AVX-512 (1–2 %, the activations' rounding),
// and every kernel matches the integer reference alone and in grouped calls on every target (the
// tests above).
TEST(QuantWeights, InterleavedRowsComputeWhatThePlainBlocksCompute) {
  for (DType base : {DType::Q4_0, DType::Q8_0, DType::Q4_K})
  for (ModelConfig c : {dense_tied(), moe_config()}) {
    c.vocab_size = 64;  // whole groups of 8 rows in the embedding and LM head too
    if (base == DType::Q4_K) c.hidden_size = 256, c.intermediate_size = 512;  // whole super-blocks
    Transformer m = Transformer::create(c, 33);
    m.store_weights_in(base);
    Transformer x8 = Transformer::create(c, 33);
    x8.store_weights_in(base);
    x8.interleave_rows();
    EXPECT_EQ(x8.lm_head_weight().dtype(), x8_of(base));
    x8.store_weights_in(base);  // a no-op: the interleaved rows are the same blocks
    EXPECT_EQ(x8.lm_head_weight().dtype(), x8_of(base));
    NoGradGuard g;
    const Tensor prompt = some_ids(c.vocab_size, 2, 9), token = some_ids(c.vocab_size, 1, 1);
    // (Dense models only: in an MoE the activations' rounding may flip a token's top-2 experts.)
    if (c.num_local_experts == 0) {
      const std::vector<float> prefill = x8.forward(prompt).to_vector(), prefill_want = m.forward(prompt).to_vector();
      float prefill_scale = 0;
      for (float v : prefill_want) prefill_scale = std::max(prefill_scale, std::fabs(v));
      EXPECT_LT(max_abs_diff(prefill, prefill_want), 0.02f * prefill_scale) << dtype_name(base);
    }
    const std::vector<float> got = x8.forward(token).to_vector(), want = m.forward(token).to_vector();
    float scale = 0;
    for (float v : want) scale = std::max(scale, std::fabs(v));
    // 1e-4: the AVX-512 Q4_0 kernel scales each row's four partial sums before adding them
    // (the others add the integers first); a wrong block or row would be off by O(1).
    EXPECT_LT(max_abs_diff(got, want), 1e-4f * scale);
    // Through a KV cache, a token at a time (what generation does).
    const Tensor ids = some_ids(c.vocab_size, 1, 12);
    const std::vector<float> stepped = testing::cached_logits(x8, ids, 4), stepped_want = testing::cached_logits(m, ids, 4);
    EXPECT_LT(max_abs_diff(stepped, stepped_want), 1e-4f * scale);
  }
}

TEST(QuantWeights, ModelsComputeWhatTheirRoundedF32TwinsCompute) {
  for (const ModelConfig& c : {moe_config(), dense_tied()})
    for (DType type : {DType::Q8_0, DType::Q4_0}) {
      Transformer m = Transformer::create(c, 31);
      const Transformer twin = rounded_through(m, type);
      m.store_weights_in(type);
      EXPECT_EQ(m.weight_dtype(), type);
      for (const auto& [name, t] : m.named_parameters()) {
        const bool router = name.find(".gate.weight") != std::string::npos && name.find("_proj") == std::string::npos;
        EXPECT_EQ(t.dtype(), t.dim() >= 2 && !router ? type : DType::F32) << name;
      }
      NoGradGuard g;
      // 3 × 7 tokens take the packed path (dequantised B: the twin's f32 arithmetic) in every
      // dense linear; an expert given at most 4 of them, and all of 1 × 3, the integer dot path,
      // which also rounds the activations to int8 blocks.
      for (const Tensor& ids : {some_ids(c.vocab_size, 3, 7), some_ids(c.vocab_size, 1, 3)}) {
        const std::vector<float> got = m.forward(ids).to_vector(), want = twin.forward(ids).to_vector();
        float scale = 0;
        for (float v : want) scale = std::max(scale, std::fabs(v));
        const bool exact = ids.size(1) > 4 && c.num_local_experts == 0;
        EXPECT_LT(max_abs_diff(got, want), exact ? 1e-5f * scale : 0.02f * scale) << dtype_name(type) << " " << ids.str();
      }
    }
}

TEST(QuantWeights, KvCacheDecodingMatchesFullForward) {
  Transformer m = Transformer::create(moe_config(), 32);
  m.store_weights_in(DType::Q8_0);
  NoGradGuard g;
  const Tensor ids = some_ids(61, 1, 9);
  const std::vector<float> full = m.forward(ids).to_vector();
  const std::vector<float> stepped = testing::cached_logits(m, ids, 5);
  float scale = 0;
  for (float v : full) scale = std::max(scale, std::fabs(v));
  EXPECT_LT(max_abs_diff(stepped, full), 0.02f * scale);  // the stepped tokens take the int8 dot path
}

// Generation's prompt forward computes the LM head for the last position only: the same logits
// as the full forward's last row (f32: another GEMM path, so to float rounding), and the cache
// filled the same way.
TEST(QuantWeights, LastLogitsAreTheFullForwardsLastRow) {
  for (const DType type : {DType::F32, DType::Q8_0}) {
    Transformer m = Transformer::create(dense_tied(), 35);
    m.store_weights_in(type);
    NoGradGuard g;
    const Tensor ids = some_ids(53, 1, 7);
    KVCache full_cache = m.make_cache(1, 8), last_cache = m.make_cache(1, 8);
    const Tensor full = m.forward(ids, &full_cache), last = m.last_logits(ids, &last_cache);
    ASSERT_EQ(last.shape(), (Shape{1, 1, 53}));
    const std::vector<float> want = ops::slice(full, 1, 6, 7).to_vector(), got = last.to_vector();
    float scale = 0;
    for (float v : want) scale = std::max(scale, std::fabs(v));
    EXPECT_LT(max_abs_diff(got, want), (type == DType::F32 ? 1e-5f : 0.02f) * scale) << dtype_name(type);
    EXPECT_EQ(last_cache.length, full_cache.length);
    const Tensor next = Tensor::from_ints({3}, {1, 1});
    EXPECT_EQ(m.forward(next, &last_cache).to_vector(), m.forward(next, &full_cache).to_vector()) << dtype_name(type);
  }
}

TEST(QuantWeights, RefusesTrainingAndSavingWithClearErrors) {
  Transformer m = Transformer::create(dense_tied(), 33);
  m.store_weights_in(DType::Q4_0);
  const TrainConfig tc = testing::one_step_config();
  expect_error_mentions([&] { Trainer t(m, tc); }, {"q4_0", "load it in f32 to train"});
  expect_error_mentions([&] { write_safetensors("/tmp/smelt_quant_refused.safetensors", m.state_dict()); },
                        {"model.embed_tokens.weight", "q4_0", "safetensors cannot hold"});
  EXPECT_FALSE(std::filesystem::exists("/tmp/smelt_quant_refused.safetensors"));
  // A weight whose blocks would run down its columns is refused by name.
  const Tensor w = Tensor::zeros({32, 64}).to(DType::Q8_0);
  expect_error_mentions([&] { ops::matmul(Tensor::zeros({2, 32}), w); }, {"matmul", "q8_0", "transposed"});
  // Converted back to f32 the model trains again.
  m.store_weights_in(DType::F32);
  EXPECT_NO_THROW(Trainer(m, tc));
}

}  // namespace
}  // namespace smelt
