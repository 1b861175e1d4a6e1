#include "optim/optimizer.h"

#include <algorithm>
#include <cmath>

#include "autograd/grad_mode.h"
#include "ops/backend.h"
#include "runtime/thread_pool.h"

namespace smelt {

namespace {

// Fixed-size pieces of every parameter that has a gradient: (parameter, first, last element).
// One parallel pass over all of them replaces one pool wake-up per tensor, and because the
// pieces do not depend on the thread count, sums over them come out the same with any number of
// threads (across CPUs with different vector widths the last bits may differ).
struct Piece {
  size_t param;
  int64_t lo, hi;
};
constexpr int64_t kPiece = 1 << 14;

std::vector<Piece> pieces_with_grad(const std::vector<Tensor>& params) {
  std::vector<Piece> out;
  for (size_t i = 0; i < params.size(); ++i) {
    if (!params[i].grad().defined()) continue;
    const int64_t n = params[i].numel();
    for (int64_t lo = 0; lo < n; lo += kPiece) out.push_back({i, lo, std::min(n, lo + kPiece)});
  }
  return out;
}

}  // namespace

void Optimizer::zero_grad() {
  for (const Tensor& p : params_) p.set_grad(Tensor());
}

AdamW::AdamW(std::vector<Tensor> params, float beta1, float beta2, float eps, float weight_decay)
    : Optimizer(std::move(params)), beta1_(beta1), beta2_(beta2), eps_(eps), weight_decay_(weight_decay) {
  SMELT_CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, "AdamW betas must be in [0, 1), got ", beta1, ", ", beta2);
  SMELT_CHECK(eps > 0, "AdamW eps must be positive, got ", eps);
  for (const Tensor& p : params_) {
    SMELT_CHECK(p.dtype() == DType::F32 && p.is_contiguous(), "AdamW needs contiguous f32 parameters, got ", p.str());
    m_.push_back(Tensor::zeros(p.shape()));
    v_.push_back(Tensor::zeros(p.shape()));
  }
}

void AdamW::step(float lr) {
  NoGradGuard no_grad;
  ++t_;
  const float bc1 = 1.0f - std::pow(beta1_, static_cast<float>(t_));
  const float bc2 = 1.0f - std::pow(beta2_, static_cast<float>(t_));
  AdamWStep s;
  s.decay = 1.0f - lr * weight_decay_;
  s.beta1 = beta1_;
  s.beta2 = beta2_;
  s.step_size = lr / bc1;
  s.inv_sqrt_bc2 = 1.0f / std::sqrt(bc2);
  s.eps = eps_;
  // Every parameter in one parallel pass.
  const std::vector<Piece> pieces = pieces_with_grad(params_);
  parallel_for(0, static_cast<int64_t>(pieces.size()), 1, [&](int64_t first, int64_t last) {
    for (int64_t q = first; q < last; ++q) {
      const Piece& piece = pieces[q];
      const Tensor& param = params_[piece.param];
      kernels_for(param.device())
          .adamw(param.data<float>() + piece.lo, param.grad().data<float>() + piece.lo, m_[piece.param].data<float>() + piece.lo,
                 v_[piece.param].data<float>() + piece.lo, piece.hi - piece.lo, s);
    }
  });
  for (Tensor& p : params_)
    if (p.grad().defined()) p.bump_version();
}

namespace {
using NamedList = std::vector<std::pair<std::string, Tensor>>;

// Copies the tensor named prefix + name into `slot`, checking presence and shape.
void restore(const NamedList& tensors, const std::string& name, const Tensor& slot, const std::string& source) {
  for (const auto& [n, t] : tensors)
    if (n == name) {
      SMELT_CHECK(t.shape() == slot.shape(), source, ": optimizer tensor '", name, "' has shape ", shape_str(t.shape()),
                  ", the parameter has ", shape_str(slot.shape()));
      slot.copy_from(t);
      return;
    }
  SMELT_FAIL(source, ": optimizer tensor '", name, "' is missing");
}

const std::string& field(const std::map<std::string, std::string>& fields, const std::string& key, const std::string& source) {
  auto it = fields.find(key);
  SMELT_CHECK(it != fields.end(), source, ": optimizer field '", key, "' is missing");
  return it->second;
}

void check_names(const std::vector<std::string>& names, size_t count) {
  SMELT_CHECK(names.size() == count, "optimizer state: ", names.size(), " names for ", count, " parameters");
}
}  // namespace

std::pair<NamedList, std::map<std::string, std::string>> AdamW::state(const std::vector<std::string>& names) const {
  check_names(names, params_.size());
  NamedList t;
  for (size_t i = 0; i < params_.size(); ++i) {
    t.push_back({"exp_avg." + names[i], m_[i]});
    t.push_back({"exp_avg_sq." + names[i], v_[i]});
  }
  return {t, {{"optimizer", "adamw"}, {"step", std::to_string(t_)}}};
}

void AdamW::load_state(const NamedList& tensors, const std::map<std::string, std::string>& fields, const std::vector<std::string>& names,
                       const std::string& source) {
  check_names(names, params_.size());
  SMELT_CHECK(field(fields, "optimizer", source) == "adamw", source, ": holds a '", field(fields, "optimizer", source),
              "' state, the recipe uses adamw");
  for (size_t i = 0; i < params_.size(); ++i) {
    restore(tensors, "exp_avg." + names[i], m_[i], source);
    restore(tensors, "exp_avg_sq." + names[i], v_[i], source);
  }
  t_ = std::stoll(field(fields, "step", source));
}

std::pair<NamedList, std::map<std::string, std::string>> SGD::state(const std::vector<std::string>& names) const {
  check_names(names, params_.size());
  NamedList t;
  for (size_t i = 0; i < params_.size(); ++i) t.push_back({"momentum_buffer." + names[i], buf_[i]});
  return {t, {{"optimizer", "sgd"}, {"first_step_done", first_ ? "0" : "1"}}};
}

void SGD::load_state(const NamedList& tensors, const std::map<std::string, std::string>& fields, const std::vector<std::string>& names,
                     const std::string& source) {
  check_names(names, params_.size());
  SMELT_CHECK(field(fields, "optimizer", source) == "sgd", source, ": holds a '", field(fields, "optimizer", source),
              "' state, the recipe uses sgd");
  for (size_t i = 0; i < params_.size(); ++i) restore(tensors, "momentum_buffer." + names[i], buf_[i], source);
  first_ = field(fields, "first_step_done", source) != "1";
}

SGD::SGD(std::vector<Tensor> params, float momentum, float weight_decay, bool nesterov)
    : Optimizer(std::move(params)), momentum_(momentum), weight_decay_(weight_decay), nesterov_(nesterov) {
  SMELT_CHECK(momentum >= 0, "SGD momentum must be ≥ 0, got ", momentum);
  for (const Tensor& p : params_) buf_.push_back(Tensor::zeros(p.shape()));
}

void SGD::step(float lr) {
  NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor g = params_[i].grad();
    if (!g.defined()) continue;
    float* p = params_[i].data<float>();
    float* b = buf_[i].data<float>();
    const float* gr = g.data<float>();
    for (int64_t j = 0, n = params_[i].numel(); j < n; ++j) {
      float d = gr[j] + weight_decay_ * p[j];
      if (momentum_ > 0) {
        b[j] = first_ ? d : momentum_ * b[j] + d;  // torch: the first step seeds the buffer with d
        d = nesterov_ ? d + momentum_ * b[j] : b[j];
      }
      p[j] -= lr * d;
    }
    params_[i].bump_version();
  }
  first_ = false;
}

float clip_grad_norm(const std::vector<Tensor>& params, float max_norm) {
  // Per-piece sums in parallel, added in piece order: the same norm on any thread count.
  const std::vector<Piece> pieces = pieces_with_grad(params);
  std::vector<double> partial(pieces.size(), 0.0);
  parallel_for(0, static_cast<int64_t>(pieces.size()), 1, [&](int64_t first, int64_t last) {
    for (int64_t q = first; q < last; ++q) {
      // The vector dot kernel within a piece (f32, several accumulators); pieces add in double.
      // A piece whose squares overflow f32 is summed again in double: a huge but finite
      // gradient must be clipped, not reported as not finite.
      const Tensor& g = params[pieces[q].param].grad();
      const float* gr = g.data<float>() + pieces[q].lo;
      const int64_t n = pieces[q].hi - pieces[q].lo;
      double s = kernels_for(g.device()).dot(gr, gr, n);
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
  SMELT_CHECK(std::isfinite(norm), "gradient norm is not finite (", norm, "): the loss or a gradient overflowed");
  if (max_norm > 0 && norm > max_norm) {
    const float s = max_norm / (norm + 1e-6f);
    parallel_for(0, static_cast<int64_t>(pieces.size()), 1, [&](int64_t first, int64_t last) {
      for (int64_t q = first; q < last; ++q) {
        const Tensor& g = params[pieces[q].param].grad();
        float* gr = g.data<float>() + pieces[q].lo;
        kernels_for(g.device()).binary_scalar(BinaryOp::Mul, gr, s, gr, pieces[q].hi - pieces[q].lo);
      }
    });
  }
  return norm;
}

float LrSchedule::at(int64_t step) const {
  if (warmup > 0 && step < warmup) return max_lr * static_cast<float>(step + 1) / static_cast<float>(warmup);
  if (total <= warmup) return max_lr;
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(total - warmup));
  return min_lr + (max_lr - min_lr) * static_cast<float>(0.5 * (1.0 + std::cos(M_PI * progress)));
}

}  // namespace smelt
