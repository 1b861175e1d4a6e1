#include "autograd/gradcheck.h"

#include <cmath>
#include <sstream>

#include "autograd/grad_mode.h"
#include "runtime/rng.h"

namespace smelt {
namespace {

// Storage offset (in elements) of logical element j of t.
int64_t element_offset(const Tensor& t, int64_t j) {
  int64_t off = t.offset();
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    off += (j % t.shape()[d]) * t.strides()[d];
    j /= t.shape()[d];
  }
  return off;
}

double projected(const Tensor& out, const std::vector<float>& w) {
  std::vector<float> v = out.to_vector();
  double s = 0;
  for (size_t i = 0; i < v.size(); ++i) s += static_cast<double>(v[i]) * w[i];
  return s;
}

}  // namespace

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& opt) {
  GradcheckResult result;
  for (const Tensor& t : inputs)
    if (t.requires_grad()) t.set_grad(Tensor());
  Tensor out = fn(inputs);
  SMELT_CHECK(out.requires_grad(), "gradcheck: the function's output does not require grad");
  Philox rng(opt.seed);
  std::vector<float> w(out.numel());
  rng.fill_normal(w.data(), static_cast<int64_t>(w.size()));
  out.backward(Tensor::from_vector(w, out.shape()));

  NoGradGuard no_grad;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.requires_grad()) continue;
    Tensor g = x.grad();
    std::vector<float> analytic = g.defined() ? g.to_vector() : std::vector<float>(x.numel(), 0.0f);
    float* base = static_cast<float*>(x.storage()->data());
    for (int64_t j = 0; j < x.numel(); ++j) {
      float* p = base + element_offset(x, j);
      const float saved = *p;
      *p = saved + opt.eps;
      const double up = projected(fn(inputs), w);
      *p = saved - opt.eps;
      const double down = projected(fn(inputs), w);
      *p = saved;
      const double numeric = (up - down) / (2.0 * opt.eps);
      const double err = std::fabs(numeric - analytic[j]);
      result.max_abs_error = std::max(result.max_abs_error, err);
      ++result.checked;
      if (err > opt.atol + opt.rtol * std::fabs(numeric) && result.ok) {
        result.ok = false;
        std::ostringstream os;
        os << "input " << i << " " << x.str() << " element " << j << ": analytic " << analytic[j] << " numeric " << numeric;
        result.first_failure = os.str();
      }
    }
  }
  return result;
}

}  // namespace smelt
