// The CPU's optimizer steps and gradient norm over many tensors at once. Work goes in fixed-size
// pieces of every tensor: one parallel pass over all of them replaces one pool wake-up per
// tensor, and because the pieces do not depend on the thread count, sums over them come out the
// same with any number of threads (across CPUs with different vector widths the last bits may
// differ).
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cpu/cpu_ops.h"
#include "runtime/thread_pool.h"

namespace smelt {
namespace {

struct Piece {
  size_t tensor;
  int64_t lo, hi;
};
constexpr int64_t kPiece = 1 << 14;

// Pieces never cross the first dimension of a stacked-experts tensor ([E, ...], 3-D): a rank
// that holds some of the experts (expert parallelism) then holds whole pieces of the one-process
// grid, and its partial sums are the one-process ones.
std::vector<Piece> pieces_of(const std::vector<Tensor>& tensors) {
  std::vector<Piece> out;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int64_t n = tensors[i].numel();
    const int64_t slab = tensors[i].dim() == 3 && tensors[i].size(0) > 0 ? n / tensors[i].size(0) : n;
    for (int64_t start = 0; start < n; start += std::max<int64_t>(slab, 1))
      for (int64_t lo = start; lo < std::min(n, start + slab); lo += kPiece) out.push_back({i, lo, std::min({n, start + slab, lo + kPiece})});
  }
  return out;
}

float* f32(const Tensor& t) { return static_cast<float*>(t.device_data()); }

// The clip factor and whether to skip the step, from grad_norm's [norm, factor, non-finite].
struct Clip {
  float factor = 1.0f;
  bool skip = false;
};
Clip read_clip(const Tensor& clip) {
  if (!clip.defined()) return {};
  const float* c = f32(clip);
  return {c[1], c[2] != 0.0f};
}

}  // namespace

void cpu_grad_norm_op(const std::vector<Tensor>& grads, float max_norm, const Tensor& out) {
  const std::vector<Piece> pieces = pieces_of(grads);
  std::vector<double> partial(pieces.size(), 0.0);
  parallel_for(0, static_cast<int64_t>(pieces.size()), 1, [&](int64_t first, int64_t last) {
    for (int64_t q = first; q < last; ++q) {
      // The vector dot kernel within a piece (f32, several accumulators); pieces add in double.
      // A piece whose squares overflow f32 is summed again in double: a huge but finite
      // gradient must be clipped, not reported as not finite.
      const float* gr = f32(grads[pieces[q].tensor]) + pieces[q].lo;
      const int64_t n = pieces[q].hi - pieces[q].lo;
      double s = cpu_dot(gr, gr, n);
      if (!std::isfinite(s)) {
        s = 0;
        for (int64_t j = 0; j < n; ++j) s += static_cast<double>(gr[j]) * gr[j];
      }
      partial[q] = s;
    }
  });
  double ss = 0;
  for (double s : partial) ss += s;
  const float norm = static_cast<float>(std::sqrt(ss));
  float* o = f32(out);
  o[0] = norm;
  o[1] = max_norm > 0 && norm > max_norm ? max_norm / (norm + 1e-6f) : 1.0f;
  o[2] = std::isfinite(norm) ? 0.0f : 1.0f;
  if (out.numel() == 5) {
    o[3] = static_cast<float>(ss);
    o[4] = static_cast<float>(ss - static_cast<double>(o[3]));
  }
}

void cpu_scale_grads_op(const std::vector<Tensor>& grads, const Tensor& clip) {
  const Clip c = read_clip(clip);
  if (c.skip || c.factor == 1.0f) return;
  const std::vector<Piece> pieces = pieces_of(grads);
  parallel_for(0, static_cast<int64_t>(pieces.size()), 1, [&](int64_t first, int64_t last) {
    for (int64_t q = first; q < last; ++q) {
      float* gr = f32(grads[pieces[q].tensor]) + pieces[q].lo;
      cpu_binary_scalar(BinaryOp::Mul, gr, c.factor, gr, pieces[q].hi - pieces[q].lo);
    }
  });
}

void cpu_adamw_op(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
                  const std::vector<Tensor>& v, const AdamWStep& step, const Tensor& clip) {
  const Clip c = read_clip(clip);
  if (c.skip) return;  // a non-finite gradient: the weights stay as they were
  const std::vector<Piece> pieces = pieces_of(params);
  parallel_for(0, static_cast<int64_t>(pieces.size()), 1, [&](int64_t first, int64_t last) {
    std::vector<float> scaled;
    for (int64_t q = first; q < last; ++q) {
      const Piece& piece = pieces[q];
      const size_t i = piece.tensor;
      const int64_t n = piece.hi - piece.lo;
      const float* g = f32(grads[i]) + piece.lo;
      if (c.factor != 1.0f) {  // clipped: the gradient scaled on the way, the stored one untouched
        scaled.resize(n);
        cpu_binary_scalar(BinaryOp::Mul, g, c.factor, scaled.data(), n);
        g = scaled.data();
      }
      cpu_adamw(f32(params[i]) + piece.lo, g, f32(m[i]) + piece.lo, f32(v[i]) + piece.lo, n, step);
    }
  });
}

void cpu_sgd_op(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& buf, const SgdStep& s,
                const Tensor& clip) {
  const Clip c = read_clip(clip);
  if (c.skip) return;
  for (size_t i = 0; i < params.size(); ++i) {
    float* p = f32(params[i]);
    float* b = f32(buf[i]);
    const float* gr = f32(grads[i]);
    for (int64_t j = 0, n = params[i].numel(); j < n; ++j) {
      float d = gr[j] * c.factor + s.weight_decay * p[j];
      if (s.momentum > 0) {
        b[j] = s.first ? d : s.momentum * b[j] + d;  // torch: the first step seeds the buffer with d
        d = s.nesterov ? d + s.momentum * b[j] : b[j];
      }
      p[j] -= s.lr * d;
    }
  }
}

}  // namespace smelt
