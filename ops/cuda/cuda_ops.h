// The CUDA op table's entries (ops/backend.h's OpTable), one .cu file per family in ops/cuda/,
// mirroring ops/cpu/. Built only with CUDA (SMELT_HAVE_CUDA). Families so far: elementwise,
// reductions, the row-wise ops (RMS norm, softmax, RoPE), matmul (cuBLAS), attention, indexing, the
// optimizer's steps and gradient norm, the Philox fill, cross-entropy, top-k and the MoE
// routing, dispatch and experts.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "ops/backend.h"

namespace smelt {

// A tensor's f32 elements on its device (nullptr for an undefined, optional argument).
inline const float* f32(const Tensor& t) { return t.defined() ? static_cast<const float*>(t.device_data()) : nullptr; }
inline float* f32_out(const Tensor& t) { return t.defined() ? static_cast<float*>(t.device_data()) : nullptr; }
// The rows of the row-wise ops: the last dimension is a row.
inline int64_t last_dim(const Tensor& t) { return t.dim() == 0 ? 1 : t.size(-1); }
inline int64_t row_count(const Tensor& t) { return t.numel() / std::max<int64_t>(last_dim(t), 1); }

// The compute stream of the GPU that holds `t` (runtime/cuda_device.cu's), and a check that the
// last launch was accepted (a bad launch is an error naming the op and the device).
cudaStream_t cuda_stream(const Tensor& t);
void cuda_check_launch(const Tensor& t, const char* op);
// Blocks for one row each (grid x takes up to 2³¹ − 1 rows; more is an error naming the op).
unsigned cuda_row_blocks(int64_t rows, const Tensor& t, const char* op);
// Sets t's bytes to zero on its stream.
void cuda_clear(const Tensor& t, const char* op);
// Copies `bytes` from t's device memory at byte `offset` to the host, waiting for t's stream.
void cuda_read(const Tensor& t, int64_t offset, void* host, size_t bytes, const char* op);

// A weight as f32: itself, or a bf16 one widened into a new tensor on its GPU (exact), for the
// ops whose CPU entries widen bf16 weights as they read them.
inline Tensor cuda_f32_weight(const Tensor& w) { return w.dtype() == DType::F32 ? w : w.to(DType::F32); }

// Bad input found by a kernel (an index out of range, a negative weight): the kernel records the
// lowest position at fault in its GPU's slot (device_index.cuh's report_bad_position), and the
// op reads it back once, after its kernels, to raise the CPU's one-line error. The slot is
// reset on the stream before the op's kernels run.
unsigned long long* cuda_bad_position_slot(const Tensor& t, const char* op);
// The lowest position reported since the reset, or −1 (waits for t's stream).
int64_t cuda_first_bad_position(const Tensor& t, const char* op);
// Element i of a contiguous i32/i64 index tensor on a GPU, read back for an error message.
int64_t cuda_read_index(const Tensor& index, int64_t i, const char* op);

// elementwise.cu
void cuda_binary_op(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
void cuda_unary_op(UnaryOp op, const Tensor& x, float param, const Tensor& out);
void cuda_unary_backward_op(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& g, float param, const Tensor& dx);
void cuda_swiglu_op(const Tensor& gate, const Tensor& up, const Tensor& out);
void cuda_swiglu_backward_op(const Tensor& gate, const Tensor& up, const Tensor& g, const Tensor& dgate, const Tensor& dup);

// reduce.cu
void cuda_sum_axis_op(const Tensor& x, int64_t dim, const Tensor& out);
void cuda_max_axis_op(const Tensor& x, int64_t dim, const Tensor& out, const Tensor& argmax);

// rows.cu
void cuda_rms_norm_op(const Tensor& x, const Tensor& residual, const Tensor& w, float eps, const Tensor& sum, const Tensor& out,
                      const Tensor& rstd);
void cuda_rms_norm_backward_op(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& g, const Tensor& dx, const Tensor& dw);
void cuda_rope_op(const Tensor& x, const Tensor& cos, const Tensor& sin, float sign, const Tensor& out);
void cuda_softmax_op(const Tensor& x, bool log, const Tensor& out, const Tensor& lse);
void cuda_softmax_backward_op(const Tensor& y, const Tensor& g, bool log, const Tensor& dx);

// matmul.cu
void cuda_matmul_op(const Tensor& a, const Tensor& b, const Tensor& out);
// Row-major C [m, n] = op(A) · op(B) + beta · C on `on`'s GPU (cuBLAS SGEMM on its stream), for
// the ops built on GEMMs (the experts, the linear cross-entropy). k = 0 gives C = beta · C
// (beta 0 or 1).
void cuda_gemm(const Tensor& on, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, bool trans_a, const float* b, int64_t ldb,
               bool trans_b, float* c, int64_t ldc, float beta);

// attention.cu
void cuda_attention_op(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_start, bool causal, float scale, const Tensor& out,
                       const Tensor& lse);
void cuda_attention_backward_op(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_start, const Tensor& lse,
                                const Tensor& grad, bool causal, float scale, const Tensor& dq, const Tensor& dk, const Tensor& dv);

// Independent row-major GEMMs (outputs that do not overlap), as the experts' segments make them.
struct CudaGemm {
  int64_t m, n, k;
  const float* a;
  int64_t lda;
  bool trans_a;
  const float* b;
  int64_t ldb;
  bool trans_b;
  float* c;
  int64_t ldc;
  float beta;
};
// Runs them as one cublasGemmGroupedBatchedEx call when SMELT_CUDA_GROUPED_GEMM=1 (f32), else
// one cuBLAS GEMM each on the stream: issue 16 asks for both to be measured on a GPU and the
// faster kept; until one has run, the loop is the default (matmul.cu).
void cuda_gemm_group(const Tensor& on, const std::vector<CudaGemm>& problems);
bool cuda_grouped_gemms();

// index.cu
void cuda_index_select_op(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out, const char* what);
void cuda_index_add_op(const Tensor& dx, int64_t dim, const Tensor& index, const Tensor& g);
void cuda_gather_op(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out);
void cuda_scatter_add_op(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);

// optim.cu
void cuda_grad_norm_op(const std::vector<Tensor>& grads, float max_norm, const Tensor& out);
void cuda_scale_grads_op(const std::vector<Tensor>& grads, const Tensor& clip);
void cuda_adamw_op(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
                   const std::vector<Tensor>& v, const AdamWStep& step, const Tensor& clip);
void cuda_sgd_op(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& buf, const SgdStep& step,
                 const Tensor& clip);

// random.cu
void cuda_random_fill_op(const Tensor& out, uint64_t seed, uint64_t offset, bool normal, float a, float b);

// loss.cu
void cuda_cross_entropy_op(const Tensor& logits, const Tensor& targets, const Tensor& weights, int64_t ignore_index, const Tensor& loss,
                           const Tensor& lse);
void cuda_cross_entropy_backward_op(const Tensor& logits, const Tensor& targets, const Tensor& weights, int64_t ignore_index,
                                    const Tensor& lse, const Tensor& g, const Tensor& dlogits);
void cuda_linear_cross_entropy_op(const Tensor& hidden, const Tensor& weight, const Tensor& targets, const Tensor& weights,
                                  int64_t ignore_index, int64_t chunk_rows, const Tensor& loss, const Tensor& d_hidden, const Tensor& d_weight);

// topk.cu
void cuda_topk_op(const Tensor& x, int64_t k, const Tensor& out);

// moe_route.cu
void cuda_moe_route_op(const Tensor& scores, const Tensor& bias, const Tensor& mask, const MoeRouteParams& params, const MoeRoute& route);

// moe.cu
void cuda_moe_permute_op(const Tensor& token, const Tensor& expert, const MoeDispatch& dispatch);
void cuda_moe_experts_op(const Tensor& x, const Tensor& gate, const Tensor& up, const Tensor& down, const Tensor& weight,
                         const MoeDispatch& dispatch, const Tensor& h, const Tensor& u, const Tensor& act, const Tensor& ys, const Tensor& out);
void cuda_moe_experts_backward_op(const Tensor& x, const Tensor& gate, const Tensor& up, const Tensor& down, const Tensor& weight,
                                  const MoeDispatch& dispatch, const Tensor& h, const Tensor& u, const Tensor& act, const Tensor& ys,
                                  const Tensor& grad, const Tensor& dx, const Tensor& dgate, const Tensor& dup, const Tensor& ddown,
                                  const Tensor& dweight);

}  // namespace smelt
