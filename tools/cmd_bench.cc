// smelt bench: kernel throughput as JSON lines.
//   gemm — our GEMM on the shapes of ../shared/bench/openblas_gemm.c (B plain and transposed),
//          best of 7 after warm-up, so the figures sit beside OpenBLAS's from that program.
//   grouped-gemm — experts' segments as one grouped GEMM against one GEMM of the same FLOPs.
//   attention — causal attention forward and backward at --seq: time and tensor memory.
//   train — a training step of ../shared/bench/torch_moe_ref.py's model (MoE or --dense): tokens/s
//          and memory (weights + gradients + Adam + kept activations against peak RSS).
//   moe  — the dropless MoE dispatch (sort, gather, per-expert GEMMs, scatter) forward and
//          backward, against the same FLOPs as one dense SwiGLU over all token-slots.
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <set>
#include <tuple>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "io/checkpoint.h"
#include "io/json_reader.h"
#include "ops/backend.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/gemm_bf16.h"
#include "ops/moe.h"
#include "ops/ops.h"
#include "ops/precision.h"
#include "optim/trainer.h"
#include "runtime/device_backend.h"
#include "runtime/log.h"
#include "runtime/storage.h"
#include "runtime/quant.h"
#include "runtime/rng.h"
#include "runtime/thread_pool.h"
#include "tools/commands.h"
#include "tools/device_option.h"
#include "tools/weights_option.h"

namespace smelt::tools {
namespace {

struct BenchArgs {
  std::string what;
  int64_t tokens = 4096, hidden = 256, ffn = 512, experts = 8, top_k = 2, repeats = 7;
  // train: the model of ../shared/bench/torch_moe_ref.py
  int64_t vocab = 4096, layers = 4, heads = 8, seq = 256, batch = 16, steps = 6;
  bool dense = false, checkpoint = false, json = false;  // json: output is JSON lines either way
  bool map_experts = false;                               // decode: --map-experts
  int threads = 0;
  std::string simd;  // empty: the best target
  std::string precision;  // empty: gemm f32, train the device's default (bf16 on CUDA)
  std::string shape;  // gemm: one "MxNxK" instead of the peer's shapes
  std::string b_dtype = "f32";  // gemm: how B is stored (f32 or bf16)
  int64_t new_tokens = 128;      // decode
  std::string weights = "f32";   // decode: how the model's weights are kept
  std::string model;             // decode: a real model (directory or .gguf) instead of the reference one
  std::string device;            // train: where the step runs (--device)
  double peak_tflops = 0;        // train: the device's dense peak, for MFU (0: not reported)
};

// "MxNxK" → {M, N, K}, each positive.
std::array<int64_t, 3> parse_gemm_shape(const std::string& text) {
  std::array<int64_t, 3> dims{};
  size_t pos = 0;
  for (int i = 0; i < 3; ++i) {
    const size_t end = i < 2 ? text.find('x', pos) : text.size();
    SMELT_CHECK(end != std::string::npos, "bench gemm: --shape '", text, "' is not MxNxK (e.g. 256x512x4096)");
    const std::string part = text.substr(pos, end - pos);
    SMELT_CHECK(!part.empty() && part.find_first_not_of("0123456789") == std::string::npos && part.size() < 7,
                "bench gemm: --shape '", text, "' is not MxNxK with positive sizes below 10^6");
    dims[i] = std::stoll(part);
    SMELT_CHECK(dims[i] > 0, "bench gemm: --shape '", text, "' has a zero size");
    pos = end + 1;
  }
  return dims;
}

// Best wall time of `repeats` runs after two warm-up runs.
double best_seconds(int64_t repeats, const std::function<void()>& fn) {
  fn();
  fn();
  double best = 1e30;
  for (int64_t r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

// Best times of two workloads timed alternately, so that drifts in machine speed hit both alike.
std::pair<double, double> best_seconds_interleaved(int64_t repeats, const std::function<void()>& a, const std::function<void()>& b) {
  a();
  b();
  double best_a = 1e30, best_b = 1e30;
  for (int64_t r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    a();
    auto t1 = std::chrono::steady_clock::now();
    b();
    auto t2 = std::chrono::steady_clock::now();
    best_a = std::min(best_a, std::chrono::duration<double>(t1 - t0).count());
    best_b = std::min(best_b, std::chrono::duration<double>(t2 - t1).count());
  }
  return {best_a, best_b};
}

json environment() { return {{"threads", num_threads()}, {"simd", cpu_simd_target()}, {"peak_rss_mib", peak_rss_mib()}}; }

void bench_gemm(const BenchArgs& a) {
  std::vector<std::array<int64_t, 3>> shapes = {{4096, 512, 256}, {4096, 256, 512}, {256, 512, 4096}, {1024, 1024, 1024}, {512, 128, 256}};
  if (!a.shape.empty()) shapes = {parse_gemm_shape(a.shape)};
  // B's storage: f32, bf16, or a quantised Bᵀ (the interleaved layouts as decoding keeps them).
  const std::map<std::string, DType> b_types = {{"f32", DType::F32},       {"bf16", DType::BF16},      {"q8_0", DType::Q8_0},
                                                {"q4_0", DType::Q4_0},     {"q4_k", DType::Q4_K},      {"q8_0x8", DType::Q8_0X8},
                                                {"q4_0x8", DType::Q4_0X8}, {"q4_kx8", DType::Q4_KX8}};
  SMELT_CHECK(b_types.count(a.b_dtype), "bench gemm: --b-dtype must be f32, bf16, q8_0, q4_0, q4_k, q8_0x8, q4_0x8 or q4_kx8, got '", a.b_dtype, "'");
  const DType qtype = b_types.at(a.b_dtype);
  const bool quant = is_quantized(qtype);
  SMELT_CHECK(a.precision == "f32" || a.precision == "bf16", "bench: --precision must be f32 or bf16, got '", a.precision, "'");
  for (const auto& s : shapes) {
    const int64_t M = s[0], N = s[1], Kd = s[2];
    SMELT_CHECK(!quant || Kd % dtype_block_values(qtype) == 0, "bench gemm: --b-dtype ", a.b_dtype, " needs K whole blocks of ",
                dtype_block_values(qtype), ", got ", Kd);
    std::vector<float> A(M * Kd), B(Kd * N), C(M * N);
    for (int64_t i = 0; i < M * Kd; ++i) A[i] = static_cast<float>(i % 7) * 0.1f;  // the peer program's fill
    for (int64_t i = 0; i < Kd * N; ++i) B[i] = static_cast<float>(i % 5) * 0.1f;
    std::vector<uint16_t> B16;
    if (a.b_dtype == "bf16")
      for (float v : B) B16.push_back(f32_to_bf16(v));
    std::vector<uint8_t> BQ;  // Bᵀ [N, K], quantised rows
    if (quant) {
      const Tensor bt = Tensor::from_vector(B, {N, Kd}).to(qtype);
      BQ.assign(bt.data<uint8_t>(), bt.data<uint8_t>() + dtype_bytes(qtype, Kd * N));
    }
    // Quantised weights are only ever a transposed B (a weight [out, in]).
    for (int tb = quant ? 1 : 0; tb < 2; ++tb) {
      GemmArgs g;
      g.m = M; g.n = N; g.k = Kd;
      g.a = A.data(); g.lda = Kd;
      if (quant) {
        g.b_quant = BQ.data();
        g.b_quant_type = qtype;
      } else if (B16.empty()) g.b = B.data();
      else g.b_bf16 = B16.data();
      g.trans_b = tb; g.ldb = tb ? Kd : N;
      g.c = C.data(); g.ldc = N;
      g.bf16_math = a.precision == "bf16";
      const double t = best_seconds(a.repeats, [&] { cpu_gemm(g); });
      const double b_bytes = quant ? BQ.size() : static_cast<double>(Kd * N) * (B16.empty() ? 4 : 2);
      json j = {{"bench", "gemm"}, {"impl", "smelt"}, {"M", M},          {"N", N},
                {"K", Kd},         {"transB", tb},    {"b_dtype", a.b_dtype}, {"gflops", 2.0 * M * N * Kd / t / 1e9},
                {"b_gb_per_s", b_bytes / t / 1e9}, {"precision", a.precision}};
      if (g.bf16_math) j["bf16_dot"] = cpu_has_bf16_dot();  // VDPBF16PS, or the rounded operands through the f32 kernel
      j.update(environment());
      std::printf("%s\n", j.dump().c_str());
    }
  }
}

// Grouped GEMM over experts' row segments against one GEMM with the same total FLOPs, for the three
// products of an expert SwiGLU forward (gate/up: [n, C]·[F, C]ᵀ, down: [n, F]·[C, F]ᵀ). Segments
// come from random top-k routing, so their sizes are unequal as in training.
void bench_grouped_gemm(const BenchArgs& a) {
  SMELT_CHECK(a.top_k >= 1 && a.top_k <= a.experts, "--top-k must be between 1 and --experts");
  const int64_t S = a.tokens * a.top_k, E = a.experts;
  Philox rng(2);
  std::vector<int64_t> rows(E, 0);
  for (int64_t n = 0; n < a.tokens; ++n) {
    const int64_t first = rng.next_u32() % E;
    for (int64_t j = 0; j < a.top_k; ++j) ++rows[(first + j) % E];
  }
  const int64_t shapes[][2] = {{a.ffn, a.hidden}, {a.hidden, a.ffn}};  // (N, K) of gate/up, then down
  for (const auto& nk : shapes) {
    const int64_t N = nk[0], Kd = nk[1];
    std::vector<float> A(S * Kd), B(E * N * Kd), C(S * N);
    for (size_t i = 0; i < A.size(); ++i) A[i] = static_cast<float>(i % 7) * 0.1f;
    for (size_t i = 0; i < B.size(); ++i) B[i] = static_cast<float>(i % 5) * 0.1f;
    std::vector<GemmArgs> group;
    int64_t r0 = 0;
    for (int64_t e = 0; e < E; ++e) {
      GemmArgs g;
      g.m = rows[e]; g.n = N; g.k = Kd;
      g.a = A.data() + r0 * Kd; g.lda = Kd;
      g.b = B.data() + e * N * Kd; g.ldb = Kd; g.trans_b = true;
      g.c = C.data() + r0 * N; g.ldc = N;
      if (g.m > 0) group.push_back(g);
      r0 += rows[e];
    }
    GemmArgs dense;
    dense.m = S; dense.n = N; dense.k = Kd;
    dense.a = A.data(); dense.lda = Kd;
    dense.b = B.data(); dense.ldb = Kd; dense.trans_b = true;
    dense.c = C.data(); dense.ldc = N;
    const auto [grouped_s, dense_s] = best_seconds_interleaved(
        a.repeats, [&] { cpu_grouped_gemm(group.data(), static_cast<int64_t>(group.size())); }, [&] { cpu_gemm(dense); });
    const double flops = 2.0 * S * N * Kd;
    json j = {{"bench", "grouped-gemm"}, {"experts", E}, {"top_k", a.top_k}, {"tokens", a.tokens},
              {"rows_min", *std::min_element(rows.begin(), rows.end())}, {"rows_max", *std::max_element(rows.begin(), rows.end())},
              {"N", N}, {"K", Kd}, {"grouped_gflops", flops / grouped_s / 1e9}, {"dense_gflops", flops / dense_s / 1e9},
              {"ratio", dense_s / grouped_s}};
    j.update(environment());
    std::printf("%s\n", j.dump().c_str());
  }
}

void bench_moe(const BenchArgs& a) {
  SMELT_CHECK(a.top_k >= 1 && a.top_k <= a.experts, "--top-k must be between 1 and --experts");
  const int64_t N = a.tokens, C = a.hidden, F = a.ffn, E = a.experts, k = a.top_k, S = N * k;
  Philox rng(1);
  auto param = [&](const Shape& s) { return Tensor::randn(s, rng, 0.0f, 0.05f).set_requires_grad(true); };
  Tensor x = param({N, C}), gate = param({E, F, C}), up = param({E, F, C}), down = param({E, C, F});
  // Random top-k routing: k distinct experts per token.
  std::vector<int64_t> tok(S), ex(S);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t first = rng.next_u32() % E;
    for (int64_t j = 0; j < k; ++j) {
      tok[n * k + j] = n;
      ex[n * k + j] = (first + j) % E;
    }
  }
  Tensor token = Tensor::from_ints(tok, {S}), expert = Tensor::from_ints(ex, {S});
  Tensor weight = Tensor::full({S}, 1.0f / static_cast<float>(k)).set_requires_grad(true);
  // The dense reference: one SwiGLU over all S token-slots with one set of weights (same FLOPs).
  Tensor xs = param({S, C}), wg = param({F, C}), wu = param({F, C}), wd = param({C, F});
  double moe_fwd, dense_fwd, moe_step, dense_step;
  double dispatch_ms = 0, expert_ms = 0;
  {
    NoGradGuard g;
    std::tie(moe_fwd, dense_fwd) = best_seconds_interleaved(
        a.repeats, [&] { ops::moe_ffn(x, gate, up, down, token, expert, weight); },
        [&] { ops::linear(ops::swiglu(ops::linear(xs, wg), ops::linear(xs, wu)), wd); });
    // Phase split of the forward, averaged over separate timed calls.
    ops::set_moe_timing(true);
    ops::take_moe_timings();
    for (int64_t r = 0; r < a.repeats; ++r) ops::moe_ffn(x, gate, up, down, token, expert, weight);
    ops::MoeTimings t = ops::take_moe_timings();
    ops::set_moe_timing(false);
    dispatch_ms = t.dispatch_seconds / static_cast<double>(t.calls) * 1e3;
    expert_ms = t.expert_seconds / static_cast<double>(t.calls) * 1e3;
  }
  std::tie(moe_step, dense_step) = best_seconds_interleaved(
      a.repeats, [&] { ops::sum(ops::moe_ffn(x, gate, up, down, token, expert, weight)).backward(); },
      [&] { ops::sum(ops::linear(ops::swiglu(ops::linear(xs, wg), ops::linear(xs, wu)), wd)).backward(); });
  ops::set_moe_timing(true);
  ops::take_moe_timings();
  for (int64_t r = 0; r < a.repeats; ++r) ops::sum(ops::moe_ffn(x, gate, up, down, token, expert, weight)).backward();
  ops::MoeTimings bt = ops::take_moe_timings();
  ops::set_moe_timing(false);
  const double flops = 2.0 * S * C * F * 3;
  json j = {{"bench", "moe"},
            {"tokens", N}, {"hidden", C}, {"ffn", F}, {"experts", E}, {"top_k", k},
            {"moe_forward_ms", moe_fwd * 1e3}, {"dense_forward_ms", dense_fwd * 1e3},
            {"moe_forward_dispatch_ms", dispatch_ms}, {"moe_forward_experts_ms", expert_ms},
            {"moe_forward_gflops", flops / moe_fwd / 1e9}, {"dense_forward_gflops", flops / dense_fwd / 1e9},
            {"moe_forward_backward_ms", moe_step * 1e3}, {"dense_forward_backward_ms", dense_step * 1e3},
            {"moe_backward_dispatch_ms", bt.backward_dispatch_seconds / static_cast<double>(bt.calls) * 1e3},
            {"moe_backward_experts_ms", bt.backward_expert_seconds / static_cast<double>(bt.calls) * 1e3},
            {"forward_ratio", dense_fwd / moe_fwd}, {"forward_backward_ratio", dense_step / moe_step}};
  j.update(environment());
  std::printf("%s\n", j.dump().c_str());
}

// Causal attention forward + backward at one sequence length: time and memory. The kernel keeps
// O(T·D) per head (no T×T matrix), so the tensor bytes alive grow linearly with T.
void bench_attention(const BenchArgs& a) {
  const int64_t B = a.batch, T = a.seq, H = a.heads, D = a.hidden / a.heads;
  Philox rng(3);
  auto param = [&] { return Tensor::randn({B, T, H, D}, rng, 0.0f, 1.0f).set_requires_grad(true); };
  Tensor q = param(), k = param(), v = param();
  const int64_t before = Storage::live_bytes();
  Storage::reset_peak_live_bytes();
  double fwd = 0;
  {
    NoGradGuard g;
    fwd = best_seconds(a.repeats, [&] { ops::attention(q, k, v); });
  }
  const double step = best_seconds(a.repeats, [&] { ops::sum(ops::attention(q, k, v)).backward(); });
  const double mib = 1024.0 * 1024.0;
  const double flops = 4.0 * B * H * D * static_cast<double>(T) * static_cast<double>(T + 1) / 2;  // QKᵀ and PV over the causal half
  json j = {{"bench", "attention"}, {"batch", B}, {"seq", T}, {"heads", H}, {"head_dim", D}, {"forward_ms", fwd * 1e3},
            {"forward_backward_ms", step * 1e3}, {"forward_gflops", flops / fwd / 1e9},
            {"qkv_mib", 3.0 * static_cast<double>(B * T * H * D) * 4 / mib},
            {"peak_tensor_mib_beyond_inputs", static_cast<double>(Storage::peak_live_bytes() - before) / mib},
            {"t_by_t_matrix_mib", static_cast<double>(B * H * T * T) * 4 / mib}};
  j.update(environment());
  std::printf("%s\n", j.dump().c_str());
}

// A training step (forward, backward, AdamW) of the model in ../shared/bench/torch_moe_ref.py:
// tokens/s as the median over steps after the first, as that script reports it, and memory:
// parameters + gradients + Adam moments + the activations a forward keeps for backward (tensor
// bytes counted by the allocator) against the process's peak RSS.
// The model of ../shared/bench/torch_moe_ref.py (MoE, or dense with --dense) at the sizes given.
ModelConfig reference_model(const BenchArgs& a, int64_t max_positions) {
  ModelConfig c;
  c.vocab_size = a.vocab;
  c.hidden_size = a.hidden;
  c.intermediate_size = a.ffn;
  c.num_hidden_layers = a.layers;
  c.num_attention_heads = a.heads;
  c.num_key_value_heads = a.heads;  // the reference uses full multi-head attention
  c.max_position_embeddings = max_positions;
  if (!a.dense) {
    c.num_local_experts = a.experts;
    c.num_experts_per_tok = a.top_k;
    c.router_aux_loss_coef = 0.01;
  }
  c.validate();
  return c;
}

void bench_train(const BenchArgs& a) {
  const ModelConfig c = reference_model(a, a.seq);
  TrainConfig tc;
  tc.steps = a.steps;
  tc.batch_size = a.batch;
  tc.seq_len = a.seq;
  tc.lr = 3e-4;
  tc.min_lr = 3e-4;
  tc.warmup_steps = 0;
  tc.weight_decay = 0.01;  // torch.optim.AdamW's default
  tc.grad_clip = 0;        // the reference does not clip
  tc.activation_checkpointing = a.checkpoint;
  tc.precision = a.precision;
  tc.validate();
  const Device device = chosen_device(a.device);
  Transformer model = Transformer::create(c, 0).to(device);
  Trainer trainer(model, tc);
  Philox rng(7);
  std::vector<int64_t> x(a.batch * a.seq), y(a.batch * a.seq);
  for (auto& v : x) v = rng.next_u32() % a.vocab;
  for (auto& v : y) v = rng.next_u32() % a.vocab;
  Batch b;
  b.ids = Tensor::from_ints(x, {a.batch, a.seq}, DType::I64, device);
  b.targets = Tensor::from_ints(y, {a.batch, a.seq}, DType::I64, device);
  if (!device.is_cpu()) device_backend(device).reset_peak(device.index);
  std::vector<double> times;
  double first_loss = 0;
  for (int64_t s = 0; s < a.steps; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    const StepMetrics m = trainer.step(s, {b});
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (s == 0) first_loss = m.loss + m.aux_loss;
  }
  const int64_t run_peak = Storage::peak_live_bytes();  // over model creation and the timed steps
  const int64_t device_peak = device.is_cpu() ? 0 : device_backend(device).memory_stats(device.index).peak_bytes;
  // What one forward keeps alive for backward (parameters, gradients and moments exist already),
  // in the memory of the device that holds it.
  auto live = [&] { return device.is_cpu() ? Storage::live_bytes() : device_backend(device).memory_stats(device.index).live_bytes; };
  const int64_t before = live();
  Storage::reset_peak_live_bytes();
  int64_t kept = 0;
  {
    const MatmulPrecision precision_kind = parse_matmul_precision(a.precision, "--precision");  // as the trainer's steps ran
    const MatmulPrecisionScope precision(precision_kind);
    const SavedActivationsInBf16 saved(precision_kind == MatmulPrecision::BF16 && !device.is_cpu());
    const Tensor loss = training_loss(model, b);
    kept = live() - before;
    loss.backward();
  }
  const int64_t step_peak = Storage::peak_live_bytes();
  trainer.optimizer().zero_grad();
  std::vector<double> later(times.begin() + 1, times.end());
  std::sort(later.begin(), later.end());
  const double median = later.empty() ? times[0] : later[later.size() / 2];
  const int64_t P = c.parameter_count();
  const double mib = 1024.0 * 1024.0;
  const double state_mib = 16.0 * static_cast<double>(P) / mib;  // f32 weights, gradients, two Adam moments
  json j = {{"bench", "train"}, {"impl", "smelt"}, {"moe", !a.dense}, {"activation_checkpointing", a.checkpoint}, {"precision", a.precision}, {"params", P}, {"tokens_per_step", a.batch * a.seq},
            {"median_step_s", median}, {"tokens_per_s", static_cast<double>(a.batch * a.seq) / median}, {"loss_step0", first_loss},
            {"uniform_loss", std::log(static_cast<double>(a.vocab))},
            {"weights_grads_adam_mib", state_mib}, {"activations_kept_mib", static_cast<double>(kept) / mib},
            {"expected_mib", state_mib + static_cast<double>(kept) / mib}, {"peak_tensor_mib", static_cast<double>(std::max(step_peak, run_peak)) / mib}};
  // Model FLOPs per token as ../shared/bench/torch_moe_ref.py counts them: 6 × the active matmul
  // parameters, plus causal attention's 6 × layers × seq × hidden.
  const double per_layer = 4.0 * a.hidden * a.hidden + 3.0 * a.hidden * a.ffn * (a.dense ? 1 : a.top_k) + (a.dense ? 0.0 : 1.0 * a.hidden * a.experts);
  const double flops_per_token = 6.0 * (a.layers * per_layer + 1.0 * a.hidden * a.vocab) + 6.0 * a.layers * a.seq * a.hidden;
  const double tflops = flops_per_token * static_cast<double>(a.batch * a.seq) / median / 1e12;
  j["device"] = device.str();
  j["model_tflops"] = tflops;
  if (a.peak_tflops > 0) j["mfu"] = tflops / a.peak_tflops;
  if (!device.is_cpu()) j["peak_device_mib"] = static_cast<double>(device_peak) / mib;
  j.update(environment());
  j["rss_over_expected"] = j["peak_rss_mib"].get<double>() / j["expected_mib"].get<double>();
  std::printf("%s\n", j.dump().c_str());
}

// Decoding with a KV cache, batch 1, the reference model (or --model) with its weights in f32 or
// bf16: a prompt of --seq tokens, then --new-tokens greedy tokens one at a time (best of
// --repeats after a warm-up round, which picks the tokens). Memory: the weights' bytes and the
// process's resident memory once decoding is done (for an MoE also how much of the experts is in
// memory: with --map-experts, what was read).
void bench_decode(const BenchArgs& a) {
  SMELT_CHECK(a.new_tokens > 0 && a.seq > 0, "bench decode: --seq and --new-tokens must be positive");
  const DType dtype = weights_dtype(a.weights);
  // A loaded model converts tensor by tensor (no whole f32 copy beside the quantised one).
  Transformer model = a.model.empty() ? Transformer::create(reference_model(a, a.seq + a.new_tokens), 0)
                                      : load_inference_model(a.model, a.weights, a.map_experts);
  SMELT_CHECK(a.seq + a.new_tokens <= model.config().max_position_embeddings, "bench decode: --seq + --new-tokens exceeds the model's ",
              model.config().max_position_embeddings, " positions");
  model.store_weights_in(dtype);
  const int64_t vocab = model.config().vocab_size;
  Storage::release_cached_blocks();  // the f32 originals of converted weights
  int64_t weight_bytes = 0;
  for (const auto& [name, t] : model.named_parameters()) weight_bytes += static_cast<int64_t>(dtype_bytes(t.dtype(), t.numel()));
  Philox rng(11);
  std::vector<int64_t> prompt(a.seq);
  for (auto& v : prompt) v = rng.next_u32() % vocab;
  NoGradGuard no_grad;
  double best_prefill = 1e30, best_decode = 1e30;
  std::vector<int64_t> generated;  // the greedy tokens (the same every round)
  for (int64_t r = 0; r <= a.repeats; ++r) {  // round 0 warms up
    KVCache cache = model.make_cache(1, a.seq + a.new_tokens);
    auto t0 = std::chrono::steady_clock::now();
    Tensor logits = model.last_logits(Tensor::from_ints(prompt, {1, a.seq}), &cache);  // as llama.cpp's prefill: the last position's
    auto t1 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < a.new_tokens; ++i) {
      // The warm-up round picks the greedy tokens; timed rounds feed the same ones without
      // reading the logits back, as llama-bench's generation (which samples nothing) does.
      if (r == 0) {
        const std::vector<float> last = ops::slice(logits, 1, -1, logits.size(1)).to_vector();
        generated.push_back(std::max_element(last.begin(), last.end()) - last.begin());
      }
      logits = model.forward(Tensor::from_ints({generated[i]}, {1, 1}), &cache);
    }
    auto t2 = std::chrono::steady_clock::now();
    if (r == 0) continue;
    best_prefill = std::min(best_prefill, std::chrono::duration<double>(t1 - t0).count());
    best_decode = std::min(best_decode, std::chrono::duration<double>(t2 - t1).count());
  }
  const double mib = 1024.0 * 1024.0;
  json j = {{"bench", "decode"}, {"model", a.model.empty() ? "reference" : a.model}, {"moe", model.config().num_local_experts > 0},
            {"weights", a.weights}, {"params", model.config().parameter_count()},
            {"prompt_tokens", a.seq}, {"new_tokens", a.new_tokens}, {"prefill_ms", best_prefill * 1e3},
            {"prefill_tokens_per_s", static_cast<double>(a.seq) / best_prefill},
            {"decode_tokens_per_s", static_cast<double>(a.new_tokens) / best_decode}, {"weights_mib", static_cast<double>(weight_bytes) / mib},
            {"rss_mib", current_rss_mib()}, {"generated", generated}};
  if (model.config().num_local_experts > 0) j["memory"] = weight_memory(model);
  j.update(environment());
  std::printf("%s\n", j.dump().c_str());
}

// Options that only some benchmarks read, each with those benchmarks: given to another, it would
// be silently ignored. The reference model's shape (decode) is ignored with --model too.
void refuse_unused_bench_options(const CLI::App& cmd, const BenchArgs& a) {
  const std::pair<const char*, std::set<std::string>> readers[] = {
      {"--tokens", {"grouped-gemm", "moe"}},
      {"--hidden", {"grouped-gemm", "moe", "attention", "train", "decode"}},
      {"--ffn", {"grouped-gemm", "moe", "train", "decode"}},
      {"--experts", {"grouped-gemm", "moe", "train", "decode"}},
      {"--top-k", {"grouped-gemm", "moe", "train", "decode"}},
      {"--shape", {"gemm"}},
      {"--b-dtype", {"gemm"}},
      {"--precision", {"gemm", "train"}},
      {"--repeats", {"gemm", "grouped-gemm", "moe", "attention", "decode"}},
      {"--vocab", {"train", "decode"}},
      {"--layers", {"train", "decode"}},
      {"--heads", {"attention", "train", "decode"}},
      {"--seq", {"attention", "train", "decode"}},
      {"--batch", {"attention", "train"}},
      {"--steps", {"train"}},
      {"--new-tokens", {"decode"}},
      {"--model", {"decode"}},
      {"--weights", {"decode"}},
      {"--map-experts", {"decode"}},
      {"--dense", {"train", "decode"}},
      {"--checkpoint", {"train"}},
      {"--peak-tflops", {"train"}},
  };
  for (const auto& [option, users] : readers) {
    std::string list;
    for (const std::string& u : users) list += (list.empty() ? "" : ", ") + u;
    refuse_unused(cmd, option, users.count(a.what) > 0, "in bench " + a.what + " (it applies to " + list + ")");
  }
  if (a.dense)
    for (const char* moe : {"--experts", "--top-k"}) refuse_unused(cmd, moe, false, "with --dense (one dense FFN per layer)");
  if (a.what == "decode" && a.model.empty()) refuse_unused(cmd, "--map-experts", false, "without --model (the reference model is built in memory)");
  if (a.what == "decode" && !a.model.empty())
    for (const char* shape : {"--hidden", "--ffn", "--experts", "--top-k", "--vocab", "--layers", "--heads", "--dense"})
      refuse_unused(cmd, shape, false, "with --model (it shapes the reference model)");
}

void run_bench(const BenchArgs& given) {
  BenchArgs a = given;
  if (a.precision.empty()) a.precision = a.what == "train" ? default_precision(chosen_device(a.device)) : "f32";  // as smelt train would
  apply_threads(a.threads);
  if (!a.simd.empty()) cpu_restrict_simd(a.simd);
  SMELT_CHECK(a.repeats > 0, "--repeats must be positive");
  SMELT_CHECK(a.peak_tflops >= 0 && std::isfinite(a.peak_tflops), "--peak-tflops must be ≥ 0 (0: no MFU), got ", a.peak_tflops);
  const std::pair<const char*, int64_t> sizes[] = {{"--tokens", a.tokens}, {"--hidden", a.hidden}, {"--ffn", a.ffn},
                                                   {"--experts", a.experts}, {"--top-k", a.top_k}, {"--vocab", a.vocab},
                                                   {"--layers", a.layers}, {"--heads", a.heads}, {"--seq", a.seq},
                                                   {"--batch", a.batch}, {"--steps", a.steps}, {"--new-tokens", a.new_tokens}};
  for (const auto& [name, value] : sizes) SMELT_CHECK(value > 0, "bench: ", name, " must be positive, got ", value);
  SMELT_CHECK(a.hidden % a.heads == 0 || a.what == "moe" || a.what == "grouped-gemm" || a.what == "gemm", "bench ", a.what, ": --hidden ",
              a.hidden, " is not a multiple of --heads ", a.heads);
  SMELT_CHECK(a.device.empty() || a.device == "cpu" || a.what == "train", "bench ", a.what,
              ": --device applies to the train benchmark (the others time the CPU's kernels)");
  if (a.what == "gemm") bench_gemm(a);
  else if (a.what == "grouped-gemm") bench_grouped_gemm(a);
  else if (a.what == "moe") bench_moe(a);
  else if (a.what == "train") bench_train(a);
  else if (a.what == "attention") bench_attention(a);
  else if (a.what == "decode") bench_decode(a);
  else SMELT_FAIL("bench: unknown benchmark '", a.what, "' (known: gemm, grouped-gemm, moe, train, attention, decode)");
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand("bench", "Throughput and memory as JSON lines (gemm, grouped-gemm, moe, train, attention, decode)");
  cmd->add_option("what", a->what, "Benchmark: gemm, grouped-gemm, moe, train, attention or decode")->required();
  cmd->add_option("--tokens", a->tokens, "moe: tokens")->capture_default_str();
  cmd->add_option("--hidden", a->hidden, "moe: hidden size")->capture_default_str();
  cmd->add_option("--ffn", a->ffn, "moe: expert FFN width")->capture_default_str();
  cmd->add_option("--experts", a->experts, "moe: experts")->capture_default_str();
  cmd->add_option("--top-k", a->top_k, "moe: experts per token")->capture_default_str();
  cmd->add_option("--shape", a->shape, "gemm: one shape MxNxK instead of those of ../shared/bench/openblas_gemm.c");
  cmd->add_option("--b-dtype", a->b_dtype, "gemm: store B as f32 or bf16 (widened to f32 as it is read), or q8_0 / q4_0 / q4_k / q8_0x8 / q4_0x8 / q4_kx8 (rows interleaved by 8) (a quantised Bᵀ, as decoding reads weights; transB only)")->capture_default_str();
  cmd->add_option("--precision", a->precision,
                  "gemm, train: f32, or bf16 (GEMM operands rounded to bf16, products summed in f32: VDPBF16PS where the CPU has AVX512_BF16); "
                  "default f32, for train the device's default as smelt train (bf16 on CUDA)");
  cmd->add_option("--repeats", a->repeats, "Timed repetitions (best is reported)")->capture_default_str();
  cmd->add_option("--vocab", a->vocab, "train, decode: vocabulary")->capture_default_str();
  cmd->add_option("--layers", a->layers, "train, decode: layers")->capture_default_str();
  cmd->add_option("--heads", a->heads, "train, attention: heads (attention: head_dim = hidden / heads)")->capture_default_str();
  cmd->add_option("--seq", a->seq, "train, attention: sequence length; decode: prompt tokens")->capture_default_str();
  cmd->add_option("--batch", a->batch, "train, attention: sequences")->capture_default_str();
  cmd->add_option("--steps", a->steps, "train: steps (the first is a warm-up)")->capture_default_str();
  cmd->add_option("--new-tokens", a->new_tokens, "decode: tokens generated after the --seq-token prompt")->capture_default_str();
  cmd->add_option("--model", a->model, "decode: a real model (directory or .gguf) instead of the reference one");
  add_weights_option(*cmd, a->weights);
  add_map_experts_option(*cmd, a->map_experts);
  cmd->add_flag("--json", a->json, "Print JSON lines (bench always does; accepted like every command's --json)");
  cmd->add_flag("--dense", a->dense, "train, decode: one dense SwiGLU FFN per layer instead of the MoE");
  cmd->add_flag("--checkpoint", a->checkpoint, "train: activation checkpointing (recompute attention and dense MLP halves in backward)");
  cmd->add_option("--simd", a->simd, "Run the CPU kernels on this SIMD target (AVX2, AVX3, ...) although the CPU has better: targets compared on one machine");
  cmd->add_option("--peak-tflops", a->peak_tflops, "train: the device's dense peak TFLOP/s (e.g. 989 for an H100/H200's bf16), to report MFU");
  add_threads_option(*cmd, a->threads);
  add_device_option(*cmd, a->device);
  cmd->callback([a, cmd] {
    refuse_unused_bench_options(*cmd, *a);
    run_bench(*a);
  });
}

}  // namespace smelt::tools
