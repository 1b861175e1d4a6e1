// The CUDA op table's optimizer steps and gradient norm over many tensors at once, as
// ops/cpu/optim_ops.cc: the work goes in the CPU's pieces (16 Ki values, never crossing an
// expert's slab of a stacked [E, ...] tensor), one block per piece; the piece table is uploaded
// with each call. The norm's sum of squares is taken per piece in double by a fixed-order block
// reduction, then over the pieces in order by one block: the same gradients give the same bits
// on every run. The clip factor and the non-finite flag stay on the GPU (grad_norm's out [3]),
// read by the kernels themselves: no host round trip per step.
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "ops/cuda/block_reduce.cuh"
#include "ops/cuda/cuda_ops.h"

namespace smelt {
namespace {

constexpr int64_t kPiece = 1 << 14;
constexpr int kPieceThreads = 256;

// One piece of up to four tensors walked together (a parameter, its gradient, its moments).
struct Piece {
  float* p;
  float* g;
  float* m;
  float* v;
  int64_t n;
};

// The pieces of the tensors `lead` (the CPU's rule), each pointing into the same stretch of
// every tensor list given (lists may be empty).
std::vector<Piece> pieces_of(const std::vector<Tensor>& lead, const std::vector<Tensor>& g, const std::vector<Tensor>& m,
                             const std::vector<Tensor>& v) {
  std::vector<Piece> out;
  auto at = [](const std::vector<Tensor>& list, size_t i, int64_t lo) { return list.empty() ? nullptr : f32_out(list[i]) + lo; };
  for (size_t i = 0; i < lead.size(); ++i) {
    const int64_t n = lead[i].numel();
    const int64_t slab = lead[i].dim() == 3 && lead[i].size(0) > 0 ? n / lead[i].size(0) : n;
    for (int64_t start = 0; start < n; start += std::max<int64_t>(slab, 1))
      for (int64_t lo = start; lo < std::min(n, start + slab); lo += kPiece)
        out.push_back({f32_out(lead[i]) + lo, at(g, i, lo), at(m, i, lo), at(v, i, lo), std::min({n, start + slab, lo + kPiece}) - lo});
  }
  return out;
}

// The piece table on the GPU (a pageable upload: it is staged before the call returns).
Tensor upload(const std::vector<Piece>& pieces, const Tensor& on, const char* op) {
  const size_t bytes = pieces.size() * sizeof(Piece);
  Tensor t = Tensor::empty({static_cast<int64_t>((bytes + 7) / 8)}, DType::I64, on.device());
  const cudaError_t err = cudaMemcpyAsync(t.device_data(), pieces.data(), bytes, cudaMemcpyHostToDevice, cuda_stream(on));
  SMELT_CHECK(err == cudaSuccess, "op '", op, "' on ", on.device().str(), ": uploading the piece table failed: ", cudaGetErrorString(err));
  return t;
}

const Piece* pieces_in(const Tensor& t) { return static_cast<const Piece*>(t.device_data()); }

// grad_norm's [norm, factor, non-finite] as the steps read it: skip the step, or scale by factor.
__device__ inline bool skip_step(const float* clip) { return clip && clip[2] != 0.0f; }
__device__ inline float clip_factor(const float* clip) { return clip ? clip[1] : 1.0f; }

__global__ void piece_squares_kernel(const Piece* pieces, double* partial) {
  const Piece q = pieces[blockIdx.x];
  double s = 0.0;  // in double: a huge finite gradient is clipped, not reported as not finite
  for (int64_t j = threadIdx.x; j < q.n; j += blockDim.x) s += static_cast<double>(q.p[j]) * q.p[j];
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void norm_kernel(const double* partial, int64_t count, float max_norm, float* out, bool pair) {
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  s = block_sum(s);
  if (threadIdx.x != 0) return;
  const float norm = static_cast<float>(sqrt(s));
  out[0] = norm;
  out[1] = max_norm > 0 && norm > max_norm ? max_norm / (norm + 1e-6f) : 1.0f;
  out[2] = isfinite(norm) ? 0.0f : 1.0f;
  if (pair) {
    out[3] = static_cast<float>(s);
    out[4] = static_cast<float>(s - static_cast<double>(out[3]));
  }
}

__global__ void scale_kernel(const Piece* pieces, const float* clip) {
  if (skip_step(clip) || clip_factor(clip) == 1.0f) return;
  const Piece q = pieces[blockIdx.x];
  const float f = clip_factor(clip);
  for (int64_t j = threadIdx.x; j < q.n; j += blockDim.x) q.p[j] *= f;
}

// The CPU's AdamW update (ops/cpu/adamw.cc), the gradient scaled by the clip factor as read.
__global__ void adamw_kernel(const Piece* pieces, AdamWStep s, const float* clip) {
  if (skip_step(clip)) return;  // a non-finite gradient: the weights stay as they were
  const Piece q = pieces[blockIdx.x];
  const float f = clip_factor(clip);
  for (int64_t j = threadIdx.x; j < q.n; j += blockDim.x) {
    const float g = f == 1.0f ? q.g[j] : q.g[j] * f;
    const float m = fmaf(s.beta1, q.m[j], (1.0f - s.beta1) * g);
    const float v = fmaf(s.beta2, q.v[j], (1.0f - s.beta2) * g * g);
    q.m[j] = m;
    q.v[j] = v;
    q.p[j] = fmaf(-s.step_size, m / fmaf(sqrtf(v), s.inv_sqrt_bc2, s.eps), q.p[j] * s.decay);
  }
}

// The CPU's SGD step (torch's rule: the first step seeds the momentum buffer with d).
__global__ void sgd_kernel(const Piece* pieces, SgdStep s, const float* clip) {
  if (skip_step(clip)) return;
  const Piece q = pieces[blockIdx.x];
  const float f = clip_factor(clip);
  for (int64_t j = threadIdx.x; j < q.n; j += blockDim.x) {
    float d = q.g[j] * f + s.weight_decay * q.p[j];
    if (s.momentum > 0) {
      q.m[j] = s.first ? d : s.momentum * q.m[j] + d;
      d = s.nesterov ? d + s.momentum * q.m[j] : q.m[j];
    }
    q.p[j] -= s.lr * d;
  }
}

unsigned piece_blocks(const std::vector<Piece>& pieces, const Tensor& on, const char* op) {
  SMELT_CHECK(pieces.size() < (size_t{1} << 31), "op '", op, "' on ", on.device().str(), ": ", pieces.size(), " pieces exceed one launch");
  return static_cast<unsigned>(pieces.size());
}

}  // namespace

void cuda_grad_norm_op(const std::vector<Tensor>& grads, float max_norm, const Tensor& out) {
  const std::vector<Piece> pieces = pieces_of(grads, {}, {}, {});
  const cudaStream_t s = cuda_stream(out);
  // The pieces' sums of squares, in 8-byte slots for doubles.
  const Tensor partial = Tensor::empty({std::max<int64_t>(1, static_cast<int64_t>(pieces.size()))}, DType::I64, out.device());
  auto* pp = static_cast<double*>(partial.device_data());
  if (!pieces.empty()) {
    const Tensor table = upload(pieces, out, "grad_norm");
    piece_squares_kernel<<<piece_blocks(pieces, out, "grad_norm"), kPieceThreads, 0, s>>>(pieces_in(table), pp);
  }
  norm_kernel<<<1, kPieceThreads, 0, s>>>(pp, static_cast<int64_t>(pieces.size()), max_norm, f32_out(out), out.numel() == 5);
  cuda_check_launch(out, "grad_norm");
}

void cuda_scale_grads_op(const std::vector<Tensor>& grads, const Tensor& clip) {
  if (!clip.defined()) return;  // factor 1
  const std::vector<Piece> pieces = pieces_of(grads, {}, {}, {});
  if (pieces.empty()) return;
  const Tensor table = upload(pieces, clip, "scale_grads");
  scale_kernel<<<piece_blocks(pieces, clip, "scale_grads"), kPieceThreads, 0, cuda_stream(clip)>>>(pieces_in(table), f32(clip));
  cuda_check_launch(clip, "scale_grads");
}

void cuda_adamw_op(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
                   const std::vector<Tensor>& v, const AdamWStep& step, const Tensor& clip) {
  const std::vector<Piece> pieces = pieces_of(params, grads, m, v);
  if (pieces.empty()) return;
  const Tensor& on = params.front();
  const Tensor table = upload(pieces, on, "adamw");
  adamw_kernel<<<piece_blocks(pieces, on, "adamw"), kPieceThreads, 0, cuda_stream(on)>>>(pieces_in(table), step, f32(clip));
  cuda_check_launch(on, "adamw");
}

void cuda_sgd_op(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& buf, const SgdStep& step,
                 const Tensor& clip) {
  const std::vector<Piece> pieces = pieces_of(params, grads, buf, {});
  if (pieces.empty()) return;
  const Tensor& on = params.front();
  const Tensor table = upload(pieces, on, "sgd");
  sgd_kernel<<<piece_blocks(pieces, on, "sgd"), kPieceThreads, 0, cuda_stream(on)>>>(pieces_in(table), step, f32(clip));
  cuda_check_launch(on, "sgd");
}

}  // namespace smelt
