// The per-device op table (ggml's backend interface, kept eager): every op a device computes,
// whole, keyed by OpKind, with supports(op, dtype). Ops (ops/*.cc) check their arguments,
// allocate outputs on the inputs' device, make one call through this table and attach their
// backward. A device that lacks an op says so in a one-line error naming op, device and dtype;
// nothing falls back silently to another device. The CPU's table is built in (ops/cpu/: Highway
// kernels, run-time ISA dispatch), as are CUDA's (ops/cuda/, in CUDA builds) and the simulated
// device's (ops/sim/); another device registers its own (register_op_table). Memory, copies
// and fill are the device backend's (runtime/device_backend.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/device.h"
#include "runtime/dtype.h"
#include "runtime/tensor.h"

namespace smelt {

enum class BinaryOp { Add, Sub, Mul, Div };
// Positive: 1 where x > 0, else 0 (a mask, no gradient); ClampMin: max(x, param).
enum class UnaryOp { Neg, Exp, Log, Sqrt, Rsqrt, Silu, Gelu, Sigmoid, Tanh, Pow, AddScalar, MulScalar, Abs, Positive, ClampMin };

// The constants of one AdamW step (optim/optimizer.cc): m ← β1·m + (1 − β1)·g,
// v ← β2·v + (1 − β2)·g², p ← p·decay − step_size·m / (√v·inv_sqrt_bc2 + eps).
struct AdamWStep {
  float decay = 1.0f, beta1 = 0.9f, beta2 = 0.999f, step_size = 0.0f, inv_sqrt_bc2 = 1.0f, eps = 1e-8f;
};

// ---------------------------------------------------------------- whole ops
//
// A backend registers whole ops: an op file (ops/*.cc) checks its arguments, allocates the
// outputs on the input's device, makes one call here and attaches its backward. Arguments are
// tensors on the backend's device; results land in the output tensors given (allocated by the
// caller, never returned), so a device backend needs no host round trip. Threads, scratch
// buffers and row loops live in the backend (ops/cpu/ for the CPU).
//
// Families: elementwise, reductions, matmul, attention, MoE routing and dispatch, losses, the
// optimizer's steps and gradient norm, indexing, norms, RoPE, softmax, Philox fills. tests/backend_ops_test.cc
// runs every OpKind on every registered device against the CPU.
enum class OpKind {
  Binary, Unary, UnaryBackward, Swiglu, SwigluBackward,
  SumAxis, MaxAxis,
  Matmul, Attention, AttentionBackward,
  TopK, MoeRoute, MoePermute, MoeExperts, MoeExpertsBackward,
  CrossEntropy, CrossEntropyBackward, LinearCrossEntropy,
  GradNorm, ScaleGrads, AdamW, Sgd,
  IndexSelect, IndexAdd, Gather, ScatterAdd,
  RmsNorm, RmsNormBackward, Rope,
  Softmax, SoftmaxBackward,
  RandomFill,
  Count
};
const char* op_kind_name(OpKind op);

// One SGD step's constants (optim/optimizer.cc): d = g·clip + wd·p; with momentum b ← d on the
// first step, else μ·b + d, and d = b (or d + μ·b with Nesterov); p ← p − lr·d.
struct SgdStep {
  float lr = 0, momentum = 0, weight_decay = 0;
  bool nesterov = false, first = true;
};

// The MoE dispatch's index arrays (i64, on the device) for S slots of N tokens and E experts:
// sorted position i holds slot order[i]; expert e owns sorted positions [offsets[e],
// offsets[e + 1]); dropped slots (expert −1) sit at [offsets[E], S); sorted_token[i] is the
// token of sorted position i; token n's kept slots are token_positions[token_offsets[n] ..
// token_offsets[n + 1]) (sorted positions, ascending).
struct MoeDispatch {
  Tensor order, offsets, sorted_token, token_offsets, token_positions;
};

// How the router's scores become slots (models/moe.cc sets these from the config and policy).
struct MoeRouteParams {
  bool expert_choice = false;   // each expert takes its best S / E tokens
  bool softmax_scores = true;   // else sigmoid scores, normalised per token for top-p and entropy
  bool top_p = false;           // token choice: the fewest experts (≤ k) whose probabilities reach p ...
  int64_t k = 2;                // ... or a fixed k: the slots per token
  double p = 1.0;
  int64_t config_top_k = 2;     // the model's k, for capacity
  double capacity_factor = 0;   // > 0: an expert keeps at most ⌈cf · real tokens · k / E⌉ slots
  double bias_rate = 0;         // > 0: DeepSeek-V3 aux-free bias update of `bias` after routing
};

// The slots of one routing, S fixed by the caller (token choice: N × the most experts a token
// may take, slot j·N + n being token n's j-th choice; expert choice: E × capacity). Slot s goes
// from token[s] to expert[s] (−1: unused, or dropped by capacity) with weight
// scores.flat[flat[s]]; chosen[s] is 1 for slots routing chose (dropped ones included: they
// count in the renormalisation and the balancing loss), 0 for unused ones. stats [2E + 4]: kept
// real slots per expert, chosen real slots per expert, kept real, chosen real, Σ entropy over
// real tokens, real tokens (everything the routing statistics and the aux loss need).
struct MoeRoute {
  Tensor token, expert, flat, chosen, stats;
};

struct OpTable {
  const char* backend = "";
  // Whether this backend computes `op` with inputs of `dtype`.
  bool (*supports)(OpKind op, DType dtype) = nullptr;

  // out = a ∘ b, a and b broadcast to out's shape (any strides); out contiguous.
  void (*binary)(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) = nullptr;
  // out = op(x; param), x and out contiguous, same shape.
  void (*unary)(UnaryOp op, const Tensor& x, float param, const Tensor& out) = nullptr;
  // dx = g ⊙ op'(x) given x and y = op(x), all contiguous.
  void (*unary_backward)(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& g, float param, const Tensor& dx) = nullptr;
  // out = silu(gate) ⊙ up; its backward gives dgate and dup from g. All contiguous, one shape.
  void (*swiglu)(const Tensor& gate, const Tensor& up, const Tensor& out) = nullptr;
  void (*swiglu_backward)(const Tensor& gate, const Tensor& up, const Tensor& g, const Tensor& dgate, const Tensor& dup) = nullptr;

  // out = Σ over axis `dim` of contiguous x; out has x's shape with that axis 1.
  void (*sum_axis)(const Tensor& x, int64_t dim, const Tensor& out) = nullptr;
  // out = max over axis `dim`, argmax (i64, out's shape) = where (the first, on ties). Its
  // backward is a scatter_add of the gradient at argmax.
  void (*max_axis)(const Tensor& x, int64_t dim, const Tensor& out, const Tensor& argmax) = nullptr;

  // out [..., M, N] = a [..., M, K] · b [..., K, N] (or a shared 2-D b), batch dims alike; each
  // operand's last two dims row- or column-major (any batch strides), b f32 or bf16 (widened).
  void (*matmul)(const Tensor& a, const Tensor& b, const Tensor& out) = nullptr;
  // Optional (ops::linears loops over matmul without it): outs[i] [M, N_i] = a [M, K] ·
  // weights[i]ᵀ for weights [N_i, K] of the table's dtype, all contiguous, in one call, so that
  // decoding's few-row products against several weights (q, k, v; gate, up) share one parallel
  // region on the CPU.
  void (*matmul_many)(const Tensor& a, const std::vector<Tensor>& weights, const std::vector<Tensor>& outs) = nullptr;

  // Flash-style attention of contiguous q [B, Tq, Hq, D] against k, v [B, Tk, Hkv, D] (Hq a
  // multiple of Hkv: GQA), causal or full, scores scaled by `scale`; key_start (i64 [B, Tq], or
  // undefined) masks the keys before each query's own document. out [B, Tq, Hq, D] and each
  // query row's log-sum-exp lse [B, Hq, Tq], which the backward uses instead of stored
  // probabilities; dq, dk, dv are written whole.
  void (*attention)(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_start, bool causal, float scale,
                    const Tensor& out, const Tensor& lse) = nullptr;
  void (*attention_backward)(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_start, const Tensor& lse,
                             const Tensor& grad, bool causal, float scale, const Tensor& dq, const Tensor& dk, const Tensor& dv) = nullptr;

  // out [N, k] (i64) = the indices of each row's k largest entries of x [N, E], ties to the lower.
  void (*topk)(const Tensor& x, int64_t k, const Tensor& out) = nullptr;
  // Routes scores [N, E] (softmax or sigmoid) with the selection bias [E] (updated in place when
  // params.bias_rate > 0) over the real tokens of mask [N] (f32, > 0 real; undefined = all).
  void (*moe_route)(const Tensor& scores, const Tensor& bias, const Tensor& mask, const MoeRouteParams& params,
                    const MoeRoute& route) = nullptr;
  // Fills the dispatch arrays (sized by the caller) from the slots' token and expert indices,
  // checked as read. Deterministic: slots keep their order within an expert.
  void (*moe_permute)(const Tensor& token, const Tensor& expert, const MoeDispatch& dispatch) = nullptr;
  // The experts' SwiGLU over their segments and the weighted combine: out [N, C] = Σ over token
  // n's slots of weight · down(silu(gate·x) ⊙ up·x). h, u, act [S, F] and ys [S, C] keep the
  // activations (sorted order) for the backward, which gives dx, dweight and (where defined)
  // the stacked weight gradients. Expert weights f32 or bf16 (widened).
  void (*moe_experts)(const Tensor& x, const Tensor& gate, const Tensor& up, const Tensor& down, const Tensor& weight,
                      const MoeDispatch& dispatch, const Tensor& h, const Tensor& u, const Tensor& act, const Tensor& ys,
                      const Tensor& out) = nullptr;
  void (*moe_experts_backward)(const Tensor& x, const Tensor& gate, const Tensor& up, const Tensor& down, const Tensor& weight,
                               const MoeDispatch& dispatch, const Tensor& h, const Tensor& u, const Tensor& act, const Tensor& ys,
                               const Tensor& grad, const Tensor& dx, const Tensor& dgate, const Tensor& dup, const Tensor& ddown,
                               const Tensor& dweight) = nullptr;

  // Mean cross-entropy of logits [N, V] against targets [N] (i32/i64; rows with ignore_index,
  // and rows of weight 0, count for nothing), over the total weight of counted rows (0 when none
  // do): loss [] and each row's log-sum-exp lse [N]. weights [N] f32 or undefined (all 1).
  // Targets and weights are checked as read. The backward gives dlogits (which may be logits
  // itself) for the upstream gradient g [].
  void (*cross_entropy)(const Tensor& logits, const Tensor& targets, const Tensor& weights, int64_t ignore_index, const Tensor& loss,
                        const Tensor& lse) = nullptr;
  void (*cross_entropy_backward)(const Tensor& logits, const Tensor& targets, const Tensor& weights, int64_t ignore_index,
                                 const Tensor& lse, const Tensor& g, const Tensor& dlogits) = nullptr;
  // cross_entropy(hidden · weightᵀ, ...) with the logits made chunk_rows rows at a time (0: 8 MiB
  // of them); d_hidden and d_weight (each where defined) get the gradients for an upstream 1.
  void (*linear_cross_entropy)(const Tensor& hidden, const Tensor& weight, const Tensor& targets, const Tensor& weights,
                               int64_t ignore_index, int64_t chunk_rows, const Tensor& loss, const Tensor& d_hidden,
                               const Tensor& d_weight) = nullptr;

  // The global L2 norm of many gradients, without a host read: out [3] = norm, the clip factor
  // min(1, max_norm / (norm + 1e-6)) (1 when max_norm ≤ 0), and 1 if the norm is not finite
  // (else 0). Deterministic: fixed pieces summed in order, whatever the thread count. With
  // out [5], also out[3] + out[4]: the sum of squares itself as a float pair (hi, lo) that keeps
  // ~48 of its bits, so that ranks holding different parameters can add their sums exactly
  // enough to reach the one-process norm.
  void (*grad_norm)(const std::vector<Tensor>& grads, float max_norm, const Tensor& out) = nullptr;
  // grads ×= clip's factor (nothing when the norm was not finite).
  void (*scale_grads)(const std::vector<Tensor>& grads, const Tensor& clip) = nullptr;
  // One AdamW (or SGD) step over many parameters in one call, in place, the gradients scaled by
  // clip's factor as they are read; nothing changes when clip flags a non-finite norm. clip
  // undefined: factor 1. All tensors contiguous f32.
  void (*adamw)(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
                const std::vector<Tensor>& v, const AdamWStep& step, const Tensor& clip) = nullptr;
  void (*sgd)(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& buf, const SgdStep& step,
              const Tensor& clip) = nullptr;

  // Indexing along axis `dim` of contiguous tensors, with contiguous i32/i64 indices checked as
  // they are read (an out-of-range one is an error that starts with `what`, e.g. "embedding:
  // token id"). index_select: out = x's entries index[j] along dim (x f32, or a bf16 table
  // widened to f32). index_add: dx += g's entries j at index[j] (rows in order: deterministic).
  // gather: out[p] = x at index[p] along dim. scatter_add: out at index[p] += src[p].
  void (*index_select)(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out, const char* what) = nullptr;
  void (*index_add)(const Tensor& dx, int64_t dim, const Tensor& index, const Tensor& g) = nullptr;
  void (*gather)(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) = nullptr;
  void (*scatter_add)(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) = nullptr;

  // Row-wise RMS norm over the last dim of contiguous x: out = v · rstd · w with v = x, or (with
  // residual defined) v = x + residual, also written to sum. rstd [rows] is kept for backward.
  void (*rms_norm)(const Tensor& x, const Tensor& residual, const Tensor& w, float eps, const Tensor& sum, const Tensor& out,
                   const Tensor& rstd) = nullptr;
  // dx from g, x, w and the forward's rstd; dw (when defined) = Σ_rows g ⊙ x · rstd.
  void (*rms_norm_backward)(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& g, const Tensor& dx,
                            const Tensor& dw) = nullptr;

  // Rotates each head vector of contiguous x [B, T, H, D] (HF rotate-half) by sign · the angles
  // whose cos and sin are [T, D/2]; out may be x itself (in place). Its backward is sign = −1.
  void (*rope)(const Tensor& x, const Tensor& cos, const Tensor& sin, float sign, const Tensor& out) = nullptr;

  // Row-wise softmax (or log-softmax) over the last dim; lse [rows] (when defined) gets each
  // row's log Σ exp. Its backward takes the output y: softmax dx = y ⊙ (g − Σ g⊙y),
  // log-softmax dx = g − exp(y) · Σ g.
  void (*softmax)(const Tensor& x, bool log, const Tensor& out, const Tensor& lse) = nullptr;
  void (*softmax_backward)(const Tensor& y, const Tensor& g, bool log, const Tensor& dx) = nullptr;

  // Fills contiguous f32 out from Philox stream (seed, offset): N(a, b²) by Box-Muller, or
  // uniform [a, b); exactly the numbers Philox::fill_normal / fill_uniform give on the host.
  void (*random_fill)(const Tensor& out, uint64_t seed, uint64_t offset, bool normal, float a, float b) = nullptr;
};

// Registers the op table of a device type (the CPU's is built in).
void register_op_table(DeviceType type, const OpTable* table);
// The op table of `device`, after checking that it computes `op` for `dtype`: a one-line error
// names the op, the device and the dtype otherwise (never a silent fall-back to another device).
const OpTable& op_table(Device device, OpKind op, DType dtype);
bool device_supports(Device device, OpKind op, DType dtype);
const OpTable& cpu_op_table();
const OpTable& sim_op_table();  // ops/sim/sim_ops.cc: the CPU's entries on host copies
#ifdef SMELT_HAVE_CUDA
const OpTable& cuda_op_table();  // ops/cuda/table.cu
#endif

// Name of the SIMD target Highway chose at run time on this machine ("AVX2", "AVX3", ...).
std::string cpu_simd_target();
// Runs the CPU kernels on `name` (as cpu_simd_target() spells it, case ignored) or the best
// target below it, although the CPU has better: to compare targets side by side on one machine.
// Fails naming the targets this CPU and build have when `name` is not one of them.
void cpu_restrict_simd(const std::string& name);

}  // namespace smelt
