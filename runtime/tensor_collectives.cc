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

// The same through a bucket in a GPU's memory, for a communicator whose buffers live there (NCCL):
// each tensor is copied into its place in the bucket and back by the device's strided copies.
void bucketed_on_device(const std::vector<Tensor>& tensors, int64_t bucket_floats, Device device,
                        const std::function<void(float*, int64_t)>& collective) {
  size_t i = 0;
  while (i < tensors.size()) {
    size_t j = i;
    int64_t n = 0;
    while (j < tensors.size() && (j == i || n + tensors[j].numel() <= bucket_floats)) n += tensors[j++].numel();
    const Tensor bucket = Tensor::empty({n}, DType::F32, device);
    std::vector<Tensor> places;
    int64_t at = 0;
    for (size_t k = i; k < j; ++k) {
      SMELT_CHECK(tensors[k].dtype() == DType::F32, "collective over ", tensors[k].str(), ": only f32 tensors are exchanged");
      places.push_back(Tensor::view_of(bucket.storage(), tensors[k].shape(), contiguous_strides(tensors[k].shape()), at, DType::F32));
      places.back().copy_from(tensors[k]);
      at += tensors[k].numel();
    }
    collective(static_cast<float*>(bucket.device_data()), n);
    for (size_t k = i; k < j; ++k) tensors[k].copy_from(places[k - i]);
    i = j;
  }
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

Tensor all_to_all_rows(const Tensor& x, const std::vector<int64_t>& send_counts, const std::vector<int64_t>& recv_counts, Communicator& comm) {
  SMELT_CHECK(x.dim() == 2, "all_to_all_rows: x must be [rows, columns], got ", x.str());
  const int64_t C = x.size(1);
  int64_t sent = 0, received = 0;
  for (int64_t n : send_counts) sent += n;
  for (int64_t n : recv_counts) received += n;
  SMELT_CHECK(sent == x.size(0), "all_to_all_rows: send counts add up to ", sent, " rows, x has ", x.size(0));
  const Tensor in = host_copy(x);
  Tensor out = Tensor::empty({received, C}, DType::F32);
  std::vector<int64_t> send_values, recv_values;
  for (int64_t n : send_counts) send_values.push_back(n * C);
  for (int64_t n : recv_counts) recv_values.push_back(n * C);
  comm.all_to_all(in.data<float>(), send_values, out.data<float>(), recv_values, CommType::F32);
  return out;
}

Tensor all_gather_rows(const Tensor& x, Communicator& comm) {
  SMELT_CHECK(x.dim() >= 1, "all_gather_rows: x must have rows, got ", x.str());
  const Tensor in = host_copy(x);
  Shape shape = x.shape();
  shape[0] *= comm.size();
  Tensor out = Tensor::empty(shape, DType::F32);
  comm.all_gather(in.data<float>(), x.numel(), out.data<float>(), CommType::F32);
  return out;
}

namespace {
void through_buckets(const std::vector<Tensor>& tensors, Communicator& comm, int64_t bucket_floats,
                     const std::function<void(float*, int64_t)>& collective) {
  if (comm.buffer_device().is_cpu()) bucketed(tensors, bucket_floats, collective);
  else bucketed_on_device(tensors, bucket_floats, comm.buffer_device(), collective);
}
}  // namespace

// One rank in host memory has nothing to do (a GPU communicator still makes its calls).
void all_reduce_sum(const std::vector<Tensor>& tensors, Communicator& comm, int64_t bucket_floats) {
  if (comm.size() == 1 && comm.buffer_device().is_cpu()) return;
  through_buckets(tensors, comm, bucket_floats, [&](float* data, int64_t n) { comm.all_reduce_sum(data, n, CommType::F32); });
}

void broadcast(const std::vector<Tensor>& tensors, Communicator& comm, int root, int64_t bucket_floats) {
  if (comm.size() == 1 && comm.buffer_device().is_cpu()) return;
  through_buckets(tensors, comm, bucket_floats, [&](float* data, int64_t n) { comm.broadcast(data, n, CommType::F32, root); });
}

}  // namespace smelt
