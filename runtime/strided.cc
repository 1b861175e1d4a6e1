#include "runtime/strided.h"

namespace smelt {

Shape broadcast_strides(const Tensor& t, const Shape& out) {
  const size_t nd = out.size();
  SMELT_CHECK(t.shape().size() <= nd, "cannot broadcast ", shape_str(t.shape()), " to ", shape_str(out));
  Shape s(nd, 0);
  size_t lead = nd - t.shape().size();
  for (size_t i = 0; i < t.shape().size(); ++i) {
    int64_t dim = t.shape()[i];
    SMELT_CHECK(dim == out[lead + i] || dim == 1, "cannot broadcast ", shape_str(t.shape()), " to ", shape_str(out));
    s[lead + i] = dim == 1 ? 0 : t.strides()[i];
  }
  return s;
}

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  size_t nd = std::max(a.size(), b.size());
  Shape out(nd);
  for (size_t i = 0; i < nd; ++i) {
    int64_t da = i < nd - a.size() ? 1 : a[i - (nd - a.size())];
    int64_t db = i < nd - b.size() ? 1 : b[i - (nd - b.size())];
    SMELT_CHECK(da == db || da == 1 || db == 1, "shapes ", shape_str(a), " and ", shape_str(b), " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

}  // namespace smelt
