// Runtime and autograd behaviour: views, dtype conversion, RNG known answers, version counters,
// gradient accumulation, no-grad mode, thread pool, the freed-block cache.
#include <atomic>

#include "ops/ops.h"
#include "runtime/block_cache.h"
#include "runtime/storage.h"
#include "runtime/thread_pool.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

TEST(Philox, MatchesRandom123KnownAnswers) {
  // Known-answer vectors for philox4x32-10 from the Random123 distribution (kat_vectors).
  auto r = philox4x32_10({0, 0, 0, 0}, {0, 0});
  EXPECT_EQ(r, (std::array<uint32_t, 4>{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  r = philox4x32_10({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu});
  EXPECT_EQ(r, (std::array<uint32_t, 4>{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  r = philox4x32_10({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u});
  EXPECT_EQ(r, (std::array<uint32_t, 4>{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(Philox, NormalsHaveUnitMomentsAndReplay) {
  Philox a(42), b(42);
  std::vector<float> x(100000), y(100000);
  a.fill_normal(x.data(), 100000);
  b.fill_normal(y.data(), 100000);
  EXPECT_EQ(x, y);
  double m = 0, v = 0;
  for (float f : x) m += f;
  m /= x.size();
  for (float f : x) v += (f - m) * (f - m);
  v /= x.size();
  // standard errors: 1/sqrt(n) ≈ 0.003 for the mean, sqrt(2/n) ≈ 0.0045 for the variance
  EXPECT_NEAR(m, 0.0, 0.015);
  EXPECT_NEAR(v, 1.0, 0.025);
}

TEST(Tensor, ViewsShareStorageAndContiguousCopies) {
  Tensor x = Tensor::from_vector({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor t = ops::transpose(x, 0, 1);
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.storage(), x.storage());
  EXPECT_EQ(t.to_vector(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  Tensor c = ops::contiguous(t);
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_NE(c.storage(), x.storage());
  Tensor s = ops::slice(x, 1, 1, 3);
  EXPECT_EQ(s.storage(), x.storage());
  EXPECT_EQ(s.to_vector(), (std::vector<float>{1, 2, 4, 5}));
}

TEST(Tensor, HalfPrecisionConversionsRoundToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);                   // overflow → inf
  EXPECT_EQ(f16_to_f32(0x0001), 5.9604644775390625e-8f);  // smallest subnormal
  EXPECT_EQ(f32_to_f16(5.9604644775390625e-8f), 0x0001);
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);  // exactly halfway: ties to even (down)
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);  // halfway above odd: up
  Tensor x = Tensor::from_vector({0.1f, -2.5f, 3.0e4f}, {3});
  std::vector<float> back = x.to(DType::F16).to(DType::F32).to_vector();
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(back[i], x.to_vector()[i], std::fabs(x.to_vector()[i]) * 1e-3);
}

TEST(Autograd, InPlaceModificationOfSavedTensorIsRefused) {
  Tensor a = testing::rand_param({3}, 1), b = testing::rand_param({3}, 2);
  Tensor y = ops::sum(ops::mul(a, b));
  a.fill_(2.0f);  // bumps the version of a tensor mul saved
  EXPECT_THROW(y.backward(), Error);
}

TEST(Autograd, GradientsAccumulateAcrossUsesAndCalls) {
  Tensor a = testing::rand_param({4}, 3);
  ops::sum(ops::add(a, a)).backward();  // d/da (2a) = 2
  ops::sum(a).backward();               // + 1
  for (float g : a.grad().to_vector()) EXPECT_FLOAT_EQ(g, 3.0f);
}

TEST(Autograd, NoGradRecordsNothing) {
  Tensor a = testing::rand_param({4}, 4);
  NoGradGuard guard;
  Tensor y = ops::mul(a, 2.0f);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(y.grad_fn(), nullptr);
}

TEST(ThreadPool, CoversRangeOnceAndPropagatesErrors) {
  std::vector<std::atomic<int>> hits(10007);
  parallel_for(0, 10007, 13, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) hits[i]++;
  });
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  EXPECT_THROW(parallel_for(0, 100, 1, [](int64_t lo, int64_t hi) { if (lo <= 50 && 50 < hi) SMELT_FAIL("boom"); }), Error);
}

TEST(ThreadPool, TasksRunOnceEachAndPropagateErrors) {
  std::vector<std::atomic<int>> hits(37);
  parallel_tasks(37, [&](int64_t i) {
    hits[i]++;
    parallel_tasks(3, [&](int64_t) {});  // nested: runs inline on the calling thread
  });
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  EXPECT_THROW(parallel_tasks(20, [](int64_t i) { if (i == 13) SMELT_FAIL("boom"); }), Error);
  parallel_tasks(0, [](int64_t) { FAIL() << "no task to run"; });
}

TEST(BlockCache, ReusesFreedBlocksBySizeAndTrimsSizesNoLongerAsked) {
  { Tensor big = Tensor::empty({(8 << 20) / 4}); }  // the most bytes alive at once is now above the block below
  block_cache::release_all();
  const int64_t n = (3 << 20) / 4 + 48;  // a size no other tensor here has
  const int64_t bytes = static_cast<int64_t>(block_cache::block_size(n * 4));
  EXPECT_EQ(bytes, 3 * (1 << 20) + (1 << 17));  // 3 MiB + 192 bytes → the next of 16 sizes between 2 and 4 MiB
  void* first = nullptr;
  {
    Tensor t = Tensor::empty({n});
    first = t.raw_data();
  }
  EXPECT_EQ(block_cache::cached_bytes(), bytes);
  {
    Tensor t = Tensor::empty({n});
    EXPECT_EQ(t.raw_data(), first);  // the same block, not a new one
    EXPECT_EQ(block_cache::cached_bytes(), 0);
    Tensor small = Tensor::empty({1000});  // below 1 MiB: straight back to malloc when freed
  }
  EXPECT_EQ(block_cache::cached_bytes(), bytes);
  Storage::trim_cached_blocks();  // its size was asked for since the last trim: kept
  EXPECT_EQ(block_cache::cached_bytes(), bytes);
  Storage::trim_cached_blocks();  // not asked for since: freed
  EXPECT_EQ(block_cache::cached_bytes(), 0);
}

}  // namespace
}  // namespace smelt
