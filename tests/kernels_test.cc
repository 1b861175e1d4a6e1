// Every CPU kernel against a plain scalar reference written here, on odd and large sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "hwy/targets.h"

#include "ops/cpu/cpu_kernels.h"
#include "runtime/dtype.h"
#include "runtime/rng.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

using testing::for_each_cpu_target;

std::vector<float> random_vec(int64_t n, uint64_t seed, float lo = -2.0f, float hi = 2.0f) {
  std::vector<float> v(n);
  Philox rng(seed);
  rng.fill_uniform(v.data(), n);
  for (float& x : v) x = lo + (hi - lo) * x;
  return v;
}

const std::vector<int64_t> kSizes = {1, 7, 8, 9, 129, 1000, 65537};

// Tolerance for a result of magnitude |ref| computed in f32: a few ulps, with an absolute floor.
void expect_close(float got, double ref, double ulps, const std::string& what) {
  double tol = ulps * 1.1920929e-7 * std::max(1.0, std::fabs(ref));
  ASSERT_NEAR(got, ref, tol) << what;
}

TEST(Kernels, BinaryMatchesScalar) {
  for_each_cpu_target([&] {
    for (int64_t n : kSizes) {
      auto a = random_vec(n, 1), b = random_vec(n, 2, 0.5f, 3.0f);
      std::vector<float> out(n);
      for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div}) {
        cpu_binary(op, a.data(), b.data(), out.data(), n);
        for (int64_t i = 0; i < n; ++i) {
          double ref = op == BinaryOp::Add ? a[i] + b[i] : op == BinaryOp::Sub ? a[i] - b[i] : op == BinaryOp::Mul ? a[i] * b[i] : a[i] / b[i];
          expect_close(out[i], ref, 2, "binary n=" + std::to_string(n));
        }
        cpu_binary_scalar(op, a.data(), 1.75f, out.data(), n);
        for (int64_t i = 0; i < n; ++i) {
          double ref = op == BinaryOp::Add ? a[i] + 1.75 : op == BinaryOp::Sub ? a[i] - 1.75 : op == BinaryOp::Mul ? a[i] * 1.75 : a[i] / 1.75;
          expect_close(out[i], ref, 2, "binary_scalar n=" + std::to_string(n));
        }
      }
    }
  });
}

TEST(Kernels, UnaryMatchesScalar) {
  for_each_cpu_target([&] {
    struct Case { UnaryOp op; double (*ref)(double); double ulps; float lo, hi; };
    const Case cases[] = {
        {UnaryOp::Neg, [](double x) { return -x; }, 0, -3, 3},
        {UnaryOp::Abs, [](double x) { return std::fabs(x); }, 0, -3, 3},
        {UnaryOp::Positive, [](double x) { return x > 0 ? 1.0 : 0.0; }, 0, -3, 3},
        {UnaryOp::ClampMin, [](double x) { return std::max(x, 0.0); }, 0, -3, 3},  // param 0 below
        {UnaryOp::Exp, [](double x) { return std::exp(x); }, 8, -10, 10},
        {UnaryOp::Log, [](double x) { return std::log(x); }, 8, 1e-3f, 100},
        {UnaryOp::Sqrt, [](double x) { return std::sqrt(x); }, 2, 0, 100},
        {UnaryOp::Rsqrt, [](double x) { return 1.0 / std::sqrt(x); }, 4, 1e-3f, 100},
        {UnaryOp::Sigmoid, [](double x) { return 1.0 / (1.0 + std::exp(-x)); }, 16, -12, 12},
        {UnaryOp::Tanh, [](double x) { return std::tanh(x); }, 16, -6, 6},
        {UnaryOp::Silu, [](double x) { return x / (1.0 + std::exp(-x)); }, 16, -12, 12},
        {UnaryOp::Gelu, [](double x) { return 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }, 32, -6, 6},
    };
    for (const Case& c : cases)
      for (int64_t n : kSizes) {
        auto x = random_vec(n, 3, c.lo, c.hi);
        std::vector<float> out(n);
        cpu_unary(c.op, x.data(), out.data(), n, 0.0f);
        for (int64_t i = 0; i < n; ++i)
          expect_close(out[i], c.ref(x[i]), c.ulps + 2, "unary op " + std::to_string(static_cast<int>(c.op)) + " x=" + std::to_string(x[i]));
      }
  });
}

TEST(Kernels, AxpyAndDotMatchScalar) {
  for_each_cpu_target([&] {
    for (int64_t n : kSizes) {
      auto x = random_vec(n, 4), y = random_vec(n, 5);
      double ref_dot = 0, abs_sum = 0;
      for (int64_t i = 0; i < n; ++i) { ref_dot += static_cast<double>(x[i]) * y[i]; abs_sum += std::fabs(x[i] * y[i]); }
      // Summation order differs: error bound n·ε·Σ|xy|.
      EXPECT_NEAR(cpu_dot(x.data(), y.data(), n), ref_dot, 1e-7 * n * abs_sum + 1e-6);
      auto y2 = y;
      cpu_axpy(0.37f, x.data(), y2.data(), n);
      for (int64_t i = 0; i < n; ++i) expect_close(y2[i], y[i] + 0.37 * x[i], 4, "axpy");
    }
  });
}

// Scalar GEMM reference in double.
std::vector<double> ref_gemm(const GemmArgs& g, const std::vector<float>& c0) {
  std::vector<double> c(g.m * g.ldc);
  for (int64_t i = 0; i < g.m; ++i)
    for (int64_t j = 0; j < g.n; ++j) {
      double s = 0;
      for (int64_t k = 0; k < g.k; ++k) {
        const int64_t ai = g.a_rows ? g.a_rows[i] : i, bk = g.b_rows ? g.b_rows[k] : k;
        double a = g.trans_a ? g.a[k * g.lda + i] : g.a[ai * g.lda + k];
        const int64_t b_at = g.trans_b ? j * g.ldb + k : bk * g.ldb + j;
        double b = g.b_bf16 ? bf16_to_f32(g.b_bf16[b_at]) : g.b[b_at];
        s += a * b;
      }
      c[i * g.ldc + j] = g.alpha * s + (g.beta == 0.0f ? 0.0 : g.beta * c0[i * g.ldc + j]);  // beta 0: C is not read
    }
  return c;
}

TEST(Kernels, AdamWMatchesScalar) {
  for_each_cpu_target([&] {
    // Three steps of the vector kernel against the update written out in double.
    for (int64_t n : kSizes) {
      auto p = random_vec(n, 6), m = random_vec(n, 7, -0.1f, 0.1f), v = random_vec(n, 8, 0.0f, 0.01f);
      std::vector<double> rp(p.begin(), p.end()), rm(m.begin(), m.end()), rv(v.begin(), v.end());
      for (int step = 1; step <= 3; ++step) {
        const auto g = random_vec(n, 9 + step);
        AdamWStep s;
        s.decay = 0.999f;
        s.step_size = 0.01f / (1.0f - std::pow(0.9f, static_cast<float>(step)));
        s.inv_sqrt_bc2 = 1.0f / std::sqrt(1.0f - std::pow(0.999f, static_cast<float>(step)));
        cpu_adamw(p.data(), g.data(), m.data(), v.data(), n, s);
        for (int64_t i = 0; i < n; ++i) {
          rm[i] = s.beta1 * rm[i] + (1.0 - s.beta1) * g[i];
          rv[i] = s.beta2 * rv[i] + (1.0 - s.beta2) * g[i] * static_cast<double>(g[i]);
          rp[i] = rp[i] * s.decay - s.step_size * rm[i] / (std::sqrt(rv[i]) * s.inv_sqrt_bc2 + s.eps);
          ASSERT_NEAR(m[i], rm[i], 1e-6) << "m, n=" << n << " step " << step;
          ASSERT_NEAR(v[i], rv[i], 1e-6 * std::max(1.0, rv[i])) << "v, n=" << n << " step " << step;
          ASSERT_NEAR(p[i], rp[i], 1e-5) << "p, n=" << n << " step " << step;
        }
      }
    }
  });
}

TEST(Kernels, GemmMatchesScalarAllTransposes) {
  for_each_cpu_target([&] {
    // N a multiple of the vector width and ≤ 64, or wider with K ≤ 64 (with B not transposed)
    // takes the narrow unpacked path; at most 4 rows with B transposed the
    // dot-product path; the rest the packed path with edge tiles.
    const int64_t shapes[][3] = {{1, 1, 1},    {7, 7, 7},   {6, 16, 1},   {13, 29, 31}, {129, 65, 257}, {200, 300, 520}, {129, 32, 65},
                                 {5, 64, 300}, {10, 8, 3},  {2, 48, 700}, {1, 70, 33},  {3, 37, 64},    {4, 9, 1000},    {7, 200, 32},
                                 {40, 96, 64}, {7, 384, 32}, {5, 512, 64}, {5, 528, 64}, {36, 130, 600},  // whole 12-row panels, 3 K blocks
                                 {1, 19, 1000},  // one row: four accumulators, single vectors, a scalar tail
                                 {64, 70, 160}, {96, 9, 48},  // the dot path's tiles (5 to kGemmTileRows rows against Bᵀ)
                                 // B packed in row slices, some of them empty (K blocks of 1 row); Bᵀ with kc = 16 + 8 + 7
                                 // (each of its transposes and the scalar tail in one K block)
                                 {13, 129, 1}, {13, 1000, 257}, {13, 1000, 321}, {100, 64, 31}};
    for (auto& s : shapes)
      for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb)
          for (float beta : {0.0f, 0.5f}) {
            GemmArgs g;
            g.m = s[0]; g.n = s[1]; g.k = s[2];
            g.trans_a = ta; g.trans_b = tb;
            g.lda = (ta ? g.m : g.k) + 3;  // padded leading dimensions exercise the strides
            g.ldb = (tb ? g.k : g.n) + 1;
            g.ldc = g.n + 2;
            auto A = random_vec((ta ? g.k : g.m) * g.lda, 10);
            auto B = random_vec((tb ? g.n : g.k) * g.ldb, 11);
            auto C = random_vec(g.m * g.ldc, 12);
            g.a = A.data(); g.b = B.data(); g.c = C.data();
            g.alpha = 0.75f; g.beta = beta;
            auto ref = ref_gemm(g, C);
            cpu_gemm(g);
            for (int64_t i = 0; i < g.m; ++i)
              for (int64_t j = 0; j < g.n; ++j) {
                // f32 accumulation over k terms of size ≤ 4: error ≤ k·ε·4 (loose by design of the bound)
                double tol = 4.0 * g.k * 1.2e-7 * 4.0 + 1e-5;
                ASSERT_NEAR(C[i * g.ldc + j], ref[i * g.ldc + j], tol)
                    << "m=" << g.m << " n=" << g.n << " k=" << g.k << " ta=" << ta << " tb=" << tb << " at " << i << "," << j;
              }
          }
  });
}

TEST(Kernels, GemmDotPathWithBf16WeightsMatchesScalar) {
  // Decoding with `--weights bf16`: at most 4 rows of f32 A against a bf16 Bᵀ, each B element
  // widened to f32 (one row: a row at a time with four accumulators; more rows: blocks of B rows).
  for_each_cpu_target([&] {
    for (int64_t m = 1; m <= 4; ++m)
      for (int64_t k : {1000, 33, 5}) {
        GemmArgs g;
        g.m = m; g.n = 19; g.k = k;
        g.trans_b = true;
        g.lda = k + 3; g.ldb = k + 1; g.ldc = g.n + 2;
        auto A = random_vec(g.m * g.lda, 30), B = random_vec(g.n * g.ldb, 31), C = random_vec(g.m * g.ldc, 32);
        std::vector<uint16_t> B16(B.size());
        for (size_t i = 0; i < B.size(); ++i) {
          B16[i] = f32_to_bf16(B[i]);
          B[i] = bf16_to_f32(B16[i]);
        }
        g.alpha = 0.75f; g.beta = 0.5f;
        g.a = A.data(); g.b = B.data();
        const auto ref = ref_gemm(g, C);
        g.b = nullptr; g.b_bf16 = B16.data(); g.c = C.data();
        cpu_gemm(g);
        const double tol = 4.0 * g.k * 1.2e-7 * 4.0 + 1e-5;
        for (int64_t i = 0; i < g.m; ++i)
          for (int64_t j = 0; j < g.n; ++j)
            ASSERT_NEAR(C[i * g.ldc + j], ref[i * g.ldc + j], tol) << "m=" << m << " k=" << k << " at " << i << "," << j;
      }
  });
}

TEST(Kernels, GemmBf16MathEqualsTheProductOfRoundedOperands) {
  // bf16_math rounds A and B to bf16 and sums the products in f32: VDPBF16PS pairs on a CPU
  // with AVX512_BF16 (the AVX-512 target here when it has it), the rounded values through the
  // f32 kernel on every other target. Either must equal the exact product of the rounded
  // operands up to f32 summation, and differ from the unrounded product by far more than that
  // (so a kernel that ignored bf16_math would fail). Odd K (a half-empty last pair), edge tiles,
  // both transposes, K blocks, bf16 B and indexed rows. A bf16 Bᵀ against up to kGemmBf16TileRows
  // rows takes the dot path's tiles (VDPBF16PS or the rounded values through f32 FMAs); with
  // ≤ 4 rows the dot path stays f32: none here.
  for_each_cpu_target([&] {
    const int64_t shapes[][3] = {{5, 40, 7}, {13, 29, 31}, {36, 130, 601}, {129, 65, 257}, {12, 32, 2}, {40, 96, 64}};
    for (auto& s : shapes)
      for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb)
          for (int variant = 0; variant < 2; ++variant) {  // 1: B stored as bf16, or A's rows indexed
            GemmArgs g;
            g.m = s[0]; g.n = s[1]; g.k = s[2];
            g.trans_a = ta; g.trans_b = tb;
            g.lda = (ta ? g.m : g.k) + 3;
            g.ldb = (tb ? g.k : g.n) + 1;
            g.ldc = g.n + 2;
            auto A = random_vec((ta ? g.k : g.m) * g.lda, 20), B = random_vec((tb ? g.n : g.k) * g.ldb, 21);
            auto C = random_vec(g.m * g.ldc, 22);
            std::vector<float> A16(A.size()), B16f(B.size());
            for (size_t i = 0; i < A.size(); ++i) A16[i] = bf16_to_f32(f32_to_bf16(A[i]));
            for (size_t i = 0; i < B.size(); ++i) B16f[i] = bf16_to_f32(f32_to_bf16(B[i]));
            std::vector<uint16_t> B16(B.size());
            for (size_t i = 0; i < B.size(); ++i) B16[i] = f32_to_bf16(B[i]);
            std::vector<int64_t> rows(g.m);
            for (int64_t i = 0; i < g.m; ++i) rows[i] = (i * 7 + 3) % g.m;
            g.alpha = 0.5f; g.beta = ta ? 0.25f : 0.0f;
            if (variant && !ta) g.a_rows = rows.data();
            g.a = A16.data(); g.b = B16f.data();
            const auto rounded = ref_gemm(g, C);
            g.a = A.data(); g.b = B.data();
            const auto exact = ref_gemm(g, C);
            if (variant && (ta || tb)) { g.b = nullptr; g.b_bf16 = B16.data(); }
            g.bf16_math = true;
            g.c = C.data();
            cpu_gemm(g);
            double max_gap = 0;  // between the rounded and the unrounded product
            const double tol = 4.0 * g.k * 1.2e-7 * 4.0 + 1e-5;
            for (int64_t i = 0; i < g.m; ++i)
              for (int64_t j = 0; j < g.n; ++j) {
                ASSERT_NEAR(C[i * g.ldc + j], rounded[i * g.ldc + j], tol)
                    << "m=" << g.m << " n=" << g.n << " k=" << g.k << " ta=" << ta << " tb=" << tb << " variant " << variant << " at " << i << "," << j;
                max_gap = std::max(max_gap, std::abs(rounded[i * g.ldc + j] - exact[i * g.ldc + j]));
              }
            if (g.k >= 7 && !variant) EXPECT_GT(max_gap, 20 * tol) << "bf16 rounding too small to tell apart at k=" << g.k;
          }
  });
}

TEST(Kernels, GemmBf16MathKeepsNaN) {
  // A NaN operand stays NaN through the bf16 rounding, whatever its payload: the rounding carry
  // would turn 0x7fffffff (a GPU's NaN) into -0 and 0x7f800001 into infinity. Every path that
  // rounds: packed panels (both transposes) and the dot path's tiles (a transposed bf16 B).
  for_each_cpu_target([&] {
    for (const uint32_t nan_bits : {0x7fffffffu, 0x7f800001u, 0xffc00000u})
      for (int tb = 0; tb < 2; ++tb)
        for (int64_t m : {3, 40}) {
          GemmArgs g;
          g.m = m; g.n = 24; g.k = 33;
          g.trans_b = tb;
          g.lda = g.k; g.ldb = tb ? g.k : g.n; g.ldc = g.n;
          auto A = random_vec(g.m * g.lda, 30), B = random_vec(g.k * g.n, 31);
          float nan;
          std::memcpy(&nan, &nan_bits, 4);
          A[1 * g.lda + 5] = nan;  // row 1 of C must be NaN, the others finite
          std::vector<uint16_t> B16(B.size());
          for (size_t i = 0; i < B.size(); ++i) B16[i] = f32_to_bf16(B[i]);
          for (int bf16_b = 0; bf16_b <= tb; ++bf16_b) {  // a bf16 Bᵀ: the dot path's tiles round A's rows
            std::vector<float> C(g.m * g.ldc, 0.0f);
            g.a = A.data(); g.c = C.data();
            g.b = bf16_b ? nullptr : B.data();
            g.b_bf16 = bf16_b ? B16.data() : nullptr;
            g.bf16_math = true;
            cpu_gemm(g);
            for (int64_t i = 0; i < g.m; ++i)
              for (int64_t j = 0; j < g.n; ++j)
                ASSERT_EQ(std::isnan(C[i * g.ldc + j]), i == 1)
                    << std::hex << nan_bits << std::dec << " tb=" << tb << " bf16 B " << bf16_b << " m=" << m << " at " << i << "," << j;
          }
        }
  });
}

TEST(Kernels, GemmWidensBf16B) {
  for_each_cpu_target([&] {
    // B stored as bf16 through every path that accepts it: packed (plain and transposed B, edge
    // panels, indexed B rows) and the dot-product path (≤ 4 rows, B transposed, A rows through an
    // index as MoE decoding reads them), in one grouped call and alone, C with a padded leading
    // dimension. With beta = 0, NaN already in C must not leak into the result.
    // {m, n, k, trans_b, index B rows, index A rows}
    const int64_t shapes[][6] = {{1, 300, 257, 1, 0, 0}, {4, 33, 64, 1, 0, 1},   {3, 40, 9, 1, 0, 0}, {37, 70, 330, 1, 0, 0},
                                 {37, 70, 330, 0, 0, 0}, {6, 16, 5, 0, 1, 0},    {9, 100, 700, 0, 0, 0}, {2, 19, 100, 1, 0, 1},
                                 {37, 200, 330, 0, 1, 0}, {37, 200, 330, 0, 0, 0}, {200, 70, 330, 1, 0, 0}};  // row slices; Bᵀ packed
    const std::vector<int64_t> a_rows = {4, 0, 3, 3};  // repeats and out of order, as slots of one token
    std::vector<std::vector<float>> as, cs, c0s;
    std::vector<std::vector<uint16_t>> bs;
    std::vector<int64_t> b_rows(700);
    for (int64_t k = 0; k < 700; ++k) b_rows[k] = (k * 13 + 5) % 701;
    std::vector<GemmArgs> problems;
    for (auto& s : shapes) {
      GemmArgs g;
      g.m = s[0]; g.n = s[1]; g.k = s[2]; g.trans_b = s[3];
      g.lda = g.k + 1;
      g.ldb = g.trans_b ? g.k + 2 : g.n + 2;
      g.ldc = g.n + 3;
      const int64_t b_source_rows = s[4] ? 701 : (g.trans_b ? g.n : g.k);
      if (s[5]) g.a_rows = a_rows.data();
      as.push_back(random_vec((s[5] ? 5 : g.m) * g.lda, 80 + problems.size()));
      std::vector<uint16_t> b16;
      for (float v : random_vec(b_source_rows * g.ldb, 90 + problems.size())) b16.push_back(f32_to_bf16(v));
      bs.push_back(b16);
      const bool beta_zero = problems.size() % 2 == 0;
      g.beta = beta_zero ? 0.0f : 0.5f;
      cs.push_back(beta_zero ? std::vector<float>(g.m * g.ldc, NAN) : random_vec(g.m * g.ldc, 100 + problems.size()));
      if (s[4]) g.b_rows = b_rows.data();
      problems.push_back(g);
    }
    c0s = cs;
    for (size_t i = 0; i < problems.size(); ++i) {
      problems[i].a = as[i].data(); problems[i].b_bf16 = bs[i].data(); problems[i].c = cs[i].data();
    }
    for (bool grouped : {true, false}) {
      cs = c0s;
      for (size_t i = 0; i < problems.size(); ++i) problems[i].c = cs[i].data();
      if (grouped) cpu_grouped_gemm(problems.data(), static_cast<int64_t>(problems.size()));
      else for (const GemmArgs& g : problems) cpu_gemm(g);
      for (size_t i = 0; i < problems.size(); ++i) {
        const GemmArgs& g = problems[i];
        const auto ref = ref_gemm(g, c0s[i]);
        for (int64_t r = 0; r < g.m; ++r)
          for (int64_t j = 0; j < g.n; ++j)
            ASSERT_NEAR(cs[i][r * g.ldc + j], ref[r * g.ldc + j], 4.0 * g.k * 1.2e-7 * 4.0 + 1e-5)
                << "problem " << i << " at " << r << "," << j << (grouped ? " grouped" : " alone");
      }
    }
  });
}

TEST(Kernels, GroupedGemmMatchesScalarPerProblem) {
  for_each_cpu_target([&] {
    // Unequal products with different transposes, K across the K-block boundary, and an empty one.
    const int64_t shapes[][5] = {{300, 64, 520, 0, 1}, {7, 33, 9, 1, 0}, {0, 16, 8, 0, 0}, {129, 200, 256, 1, 1}, {1, 5, 3, 0, 0}};
    std::vector<std::vector<float>> as, bs, cs;
    std::vector<GemmArgs> problems;
    for (auto& s : shapes) {
      GemmArgs g;
      g.m = s[0]; g.n = s[1]; g.k = s[2]; g.trans_a = s[3]; g.trans_b = s[4];
      g.lda = g.trans_a ? g.m : g.k;
      g.ldb = g.trans_b ? g.k : g.n;
      g.ldc = g.n;
      as.push_back(random_vec(std::max<int64_t>(1, g.m * g.k), 40 + problems.size()));
      bs.push_back(random_vec(std::max<int64_t>(1, g.k * g.n), 50 + problems.size()));
      cs.push_back(random_vec(std::max<int64_t>(1, g.m * g.n), 60 + problems.size()));
      g.beta = problems.size() % 2 ? 1.0f : 0.0f;
      problems.push_back(g);
    }
    std::vector<std::vector<double>> refs;
    for (size_t i = 0; i < problems.size(); ++i) {
      problems[i].a = as[i].data(); problems[i].b = bs[i].data(); problems[i].c = cs[i].data();
      refs.push_back(ref_gemm(problems[i], cs[i]));
    }
    cpu_grouped_gemm(problems.data(), static_cast<int64_t>(problems.size()));
    for (size_t i = 0; i < problems.size(); ++i)
      for (int64_t j = 0; j < problems[i].m * problems[i].n; ++j)
        ASSERT_NEAR(cs[i][j], refs[i][j], 4.0 * problems[i].k * 1.2e-7 * 4.0 + 1e-5) << "problem " << i << " element " << j;
  });
}

TEST(Kernels, GemmReadsIndexedRows) {
  for_each_cpu_target([&] {
    // Rows of A (and of B) taken through an index, with repeats and out of order, as the MoE
    // dispatch reads tokens: both the packed path and the narrow path (N = 16).
    for (int64_t n : {16L, 37L})
      for (bool index_b : {false, true}) {
        GemmArgs g;
        g.m = 23; g.n = n; g.k = 300;
        const int64_t source_rows = 11;
        std::vector<int64_t> a_rows(g.m), b_rows(g.k);
        for (int64_t i = 0; i < g.m; ++i) a_rows[i] = (i * 7 + 3) % source_rows;
        for (int64_t k = 0; k < g.k; ++k) b_rows[k] = (k * 13 + 5) % 401;
        auto A = random_vec(source_rows * g.k, 70), B = random_vec((index_b ? 401 : g.k) * g.n, 71), C = random_vec(g.m * g.n, 72);
        g.a = A.data(); g.lda = g.k; g.a_rows = a_rows.data();
        g.b = B.data(); g.ldb = g.n; g.b_rows = index_b ? b_rows.data() : nullptr;
        g.c = C.data(); g.ldc = g.n;
        auto ref = ref_gemm(g, C);
        cpu_grouped_gemm(&g, 1);
        for (int64_t j = 0; j < g.m * g.n; ++j) ASSERT_NEAR(C[j], ref[j], 4.0 * g.k * 1.2e-7 * 4.0 + 1e-5) << "n=" << n << " element " << j;
        C = random_vec(g.m * g.n, 72);
        g.c = C.data();
        cpu_gemm(g);
        for (int64_t j = 0; j < g.m * g.n; ++j) ASSERT_NEAR(C[j], ref[j], 4.0 * g.k * 1.2e-7 * 4.0 + 1e-5) << "n=" << n << " element " << j;
      }
  });
}

TEST(Kernels, RmsNormMatchesScalar) {
  for_each_cpu_target([&] {
    for (int64_t cols : {1L, 7L, 129L, 1000L}) {
      const int64_t rows = 5;
      auto x = random_vec(rows * cols, 20), w = random_vec(cols, 21);
      std::vector<float> out(rows * cols), rstd(rows);
      cpu_rms_norm_forward(x.data(), nullptr, w.data(), nullptr, out.data(), rstd.data(), rows, cols, 1e-5f);
      for (int64_t r = 0; r < rows; ++r) {
        double ss = 0;
        for (int64_t i = 0; i < cols; ++i) ss += static_cast<double>(x[r * cols + i]) * x[r * cols + i];
        double rs = 1.0 / std::sqrt(ss / cols + 1e-5);
        expect_close(rstd[r], rs, 8, "rstd");
        for (int64_t i = 0; i < cols; ++i) expect_close(out[r * cols + i], x[r * cols + i] * rs * w[i], 16, "rms_norm");
      }
      // Of a residual sum: x + y written out, and the norm taken of it.
      auto y = random_vec(rows * cols, 22);
      std::vector<float> sum(rows * cols);
      cpu_rms_norm_forward(x.data(), y.data(), w.data(), sum.data(), out.data(), rstd.data(), rows, cols, 1e-5f);
      for (int64_t r = 0; r < rows; ++r) {
        double ss = 0;
        for (int64_t i = 0; i < cols; ++i) {
          const double s = static_cast<double>(x[r * cols + i]) + y[r * cols + i];
          expect_close(sum[r * cols + i], s, 1, "residual sum");
          ss += s * s;
        }
        const double rs = 1.0 / std::sqrt(ss / cols + 1e-5);
        expect_close(rstd[r], rs, 8, "rstd of the sum");
        for (int64_t i = 0; i < cols; ++i)
          expect_close(out[r * cols + i], (static_cast<double>(x[r * cols + i]) + y[r * cols + i]) * rs * w[i], 16, "rms_norm of the sum");
      }
    }
  });
}

TEST(Kernels, SoftmaxMatchesScalar) {
  for_each_cpu_target([&] {
    for (int64_t cols : {1L, 7L, 129L, 5000L})
      for (bool log : {false, true}) {
        const int64_t rows = 3;
        auto x = random_vec(rows * cols, 30, -20, 20);
        std::vector<float> out(rows * cols), lse(rows);
        cpu_softmax(x.data(), out.data(), rows, cols, log, lse.data());
        for (int64_t r = 0; r < rows; ++r) {
          double mx = -1e300, s = 0;
          for (int64_t i = 0; i < cols; ++i) mx = std::max(mx, static_cast<double>(x[r * cols + i]));
          for (int64_t i = 0; i < cols; ++i) s += std::exp(x[r * cols + i] - mx);
          ASSERT_NEAR(lse[r], mx + std::log(s), 8 * 1.2e-7 * std::max(1.0, std::fabs(mx + std::log(s)))) << "log-sum-exp, cols=" << cols;
          for (int64_t i = 0; i < cols; ++i) {
            double ref = log ? x[r * cols + i] - mx - std::log(s) : std::exp(x[r * cols + i] - mx) / s;
            ASSERT_NEAR(out[r * cols + i], ref, 64 * 1.2e-7 * std::max(1.0, std::fabs(ref))) << "cols=" << cols << " log=" << log;
          }
        }
      }
    // A row with every entry masked (−∞): probabilities 0, log-probabilities and log Σ exp −∞, no NaN.
    for (bool log : {false, true}) {
      std::vector<float> x(19, -INFINITY), out(19, 1.0f);
      float lse = 0.0f;
      cpu_softmax(x.data(), out.data(), 1, 19, log, &lse);
      EXPECT_EQ(lse, -INFINITY);
      for (float v : out) EXPECT_EQ(v, log ? -INFINITY : 0.0f);
    }
  });
}

}  // namespace
}  // namespace smelt
