#include "runtime/tensor_collectives.h"

#include <cstring>
#include <functional>

#include "runtime/error.h"

namespace smelt {
namespace {

// The f32 values of `t` as a contiguous host tensor: `t` itself when it already is one.
Tensor host_copy(const Tensor& t) {
  SMELT_CHECK(t.dtype() == DType::F32, "collective over ", t.str(), ": only f32 tensors are exchanged");
  if (t.device().is_cpu() && t.is_contiguous()) return t;
  return t.to(Device::cpu()).clone();
}

void bucketed(const std::vector<Tensor>& tensors, int64_t bucket_floats, const std::function<void(float*, int64_t)>& collective) {
  std::vector<float> buffer;
  size_t i = 0;
  while (i < tensors.size()) {
    size_t j = i;
    int64_t n = 0;
    while (j < tensors.size() && (j == i || n + tensors[j].numel() <= bucket_floats)) n += tensors[j++].numel();
    buffer.resize(static_cast<size_t>(n));
    std::vector<Tensor> hosts;
    int64_t at = 0;
    for (size_t k = i; k < j; ++k) {
      hosts.push_back(host_copy(tensors[k]));
      std::memcpy(buffer.data() + at, hosts.back().data<float>(), static_cast<size_t>(tensors[k].numel()) * sizeof(float));
      at += tensors[k].numel();
    }
    collective(buffer.data(), n);
    at = 0;
    for (size_t k = i; k < j; ++k) {
      std::memcpy(hosts[k - i].data<float>(), buffer.data() + at, static_cast<size_t>(tensors[k].numel()) * sizeof(float));
      if (hosts[k - i].storage() != tensors[k].storage()) tensors[k].copy_from(hosts[k - i]);
      at += tensors[k].numel();
    }
    i = j;
  }
}

}  // namespace

void all_reduce_sum(const std::vector<Tensor>& tensors, Communicator& comm, int64_t bucket_floats) {
  if (comm.size() == 1) return;
  bucketed(tensors, bucket_floats, [&](float* data, int64_t n) { comm.all_reduce_sum(data, n, CommType::F32); });
}

void broadcast(const std::vector<Tensor>& tensors, Communicator& comm, int root, int64_t bucket_floats) {
  if (comm.size() == 1) return;
  bucketed(tensors, bucket_floats, [&](float* data, int64_t n) { comm.broadcast(data, n, CommType::F32, root); });
}

}  // namespace smelt
