#include "ops/exchange.h"

#include "autograd/node.h"
#include "ops/common.h"
#include "runtime/tensor_collectives.h"

namespace smelt::ops {

Tensor all_to_all_rows(const Tensor& x, const std::vector<int64_t>& send_counts, const std::vector<int64_t>& recv_counts, Communicator& comm) {
  check_f32(x, "all_to_all_rows", "x");
  SMELT_CHECK(static_cast<int>(send_counts.size()) == comm.size() && static_cast<int>(recv_counts.size()) == comm.size(),
              "all_to_all_rows: one send and one receive count per rank (", comm.size(), ")");
  Tensor out = smelt::all_to_all_rows(x, send_counts, recv_counts, comm).to(x.device());
  if (!needs_grad({&x})) return out;
  Communicator* c = &comm;
  attach_grad_fn(out, "all_to_all_rows", {x}, [=](const Tensor& grad) {
    return std::vector<Tensor>{smelt::all_to_all_rows(grad, recv_counts, send_counts, *c).to(grad.device())};
  });
  return out;
}

}  // namespace smelt::ops
