// The CPU's whole-op entries (ops/backend.h's OpTable), one file per family in ops/cpu/. Tests
// call them directly too.
#pragma once
#include "ops/backend.h"
#include "ops/cpu/cpu_kernels.h"

namespace smelt {

// elementwise_ops.cc
void cpu_binary_op(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
void cpu_unary_op(UnaryOp op, const Tensor& x, float param, const Tensor& out);
void cpu_unary_backward_op(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& g, float param, const Tensor& dx);
void cpu_swiglu_op(const Tensor& gate, const Tensor& up, const Tensor& out);
void cpu_swiglu_backward_op(const Tensor& gate, const Tensor& up, const Tensor& g, const Tensor& dgate, const Tensor& dup);
// SwiGLU's backward over n contiguous elements (also the MoE experts' rows): act = silu(gate) ⊙ up,
// so dup = grad ⊙ silu(gate) and dgate = grad ⊙ up ⊙ silu'(gate).
void cpu_swiglu_backward_rows(const float* gate, const float* up, const float* grad, float* dgate, float* dup, int64_t n);

// reduce_ops.cc
void cpu_sum_axis_op(const Tensor& x, int64_t dim, const Tensor& out);
void cpu_max_axis_op(const Tensor& x, int64_t dim, const Tensor& out, const Tensor& argmax);

// matmul_ops.cc
void cpu_matmul_op(const Tensor& a, const Tensor& b, const Tensor& out);
void cpu_matmul_many_op(const Tensor& a, const std::vector<Tensor>& weights, const std::vector<Tensor>& outs);
// Points a GEMM's B operand at weight w's element `offset` (from its view's start), read
// transposed or not, whichever type w holds: f32, bf16 or block-quantised (b_quant; offset whole
// rows). Sets the product's arithmetic: bf16 under training's bf16 precision, and for a bf16
// weight read transposed (x·Wᵀ: the forward of every linear, expert and LM head), whose
// activations are then rounded to bf16 as they are packed; the backward's products with a bf16
// W (g·W) widen it and stay f32, so gradients reaching the norms are not rounded.
void point_gemm_b(GemmArgs& g, const Tensor& w, int64_t offset, bool trans_b);

// attention_ops.cc
void cpu_attention_op(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_start, bool causal, float scale,
                      const Tensor& out, const Tensor& lse);
void cpu_attention_backward_op(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_start, const Tensor& lse,
                               const Tensor& grad, bool causal, float scale, const Tensor& dq, const Tensor& dk, const Tensor& dv);

// moe_ops.cc
void cpu_topk_op(const Tensor& x, int64_t k, const Tensor& out);
void cpu_moe_route_op(const Tensor& scores, const Tensor& bias, const Tensor& mask, const MoeRouteParams& params, const MoeRoute& route);
void cpu_moe_permute_op(const Tensor& token, const Tensor& expert, const MoeDispatch& dispatch);
void cpu_moe_experts_op(const Tensor& x, const Tensor& gate, const Tensor& up, const Tensor& down, const Tensor& weight,
                        const MoeDispatch& dispatch, const Tensor& h, const Tensor& u, const Tensor& act, const Tensor& ys, const Tensor& out);
void cpu_moe_experts_backward_op(const Tensor& x, const Tensor& gate, const Tensor& up, const Tensor& down, const Tensor& weight,
                                 const MoeDispatch& dispatch, const Tensor& h, const Tensor& u, const Tensor& act, const Tensor& ys,
                                 const Tensor& grad, const Tensor& dx, const Tensor& dgate, const Tensor& dup, const Tensor& ddown,
                                 const Tensor& dweight);

// loss_ops.cc
void cpu_cross_entropy_op(const Tensor& logits, const Tensor& targets, const Tensor& weights, int64_t ignore_index, const Tensor& loss,
                          const Tensor& lse);
void cpu_cross_entropy_backward_op(const Tensor& logits, const Tensor& targets, const Tensor& weights, int64_t ignore_index,
                                   const Tensor& lse, const Tensor& g, const Tensor& dlogits);
void cpu_linear_cross_entropy_op(const Tensor& hidden, const Tensor& weight, const Tensor& targets, const Tensor& weights,
                                 int64_t ignore_index, int64_t chunk_rows, const Tensor& loss, const Tensor& d_hidden,
                                 const Tensor& d_weight);

// optim_ops.cc
void cpu_grad_norm_op(const std::vector<Tensor>& grads, float max_norm, const Tensor& out);
void cpu_scale_grads_op(const std::vector<Tensor>& grads, const Tensor& clip);
void cpu_adamw_op(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
                  const std::vector<Tensor>& v, const AdamWStep& step, const Tensor& clip);
void cpu_sgd_op(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& buf, const SgdStep& step,
                const Tensor& clip);

// index_ops.cc
void cpu_index_select_op(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out, const char* what);
void cpu_index_add_op(const Tensor& dx, int64_t dim, const Tensor& index, const Tensor& g);
void cpu_gather_op(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
void cpu_scatter_add_op(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);

// norm_ops.cc
void cpu_rms_norm_op(const Tensor& x, const Tensor& residual, const Tensor& w, float eps, const Tensor& sum, const Tensor& out,
                     const Tensor& rstd);
void cpu_rms_norm_backward_op(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& g, const Tensor& dx, const Tensor& dw);
void cpu_rope_op(const Tensor& x, const Tensor& cos, const Tensor& sin, float sign, const Tensor& out);
void cpu_softmax_op(const Tensor& x, bool log, const Tensor& out, const Tensor& lse);
void cpu_softmax_backward_op(const Tensor& y, const Tensor& g, bool log, const Tensor& dx);

// random_ops.cc
void cpu_random_fill_op(const Tensor& out, uint64_t seed, uint64_t offset, bool normal, float a, float b);

}  // namespace smelt
