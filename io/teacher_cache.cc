#include "io/teacher_cache.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <numeric>

#include "autograd/grad_mode.h"
#include "io/files.h"
#include "io/json_reader.h"
#include "ops/ops.h"
#include "runtime/log.h"
#include "runtime/thread_pool.h"

namespace smelt {
namespace {

constexpr int64_t kWindowsPerFile = 256;
constexpr const char* kFormat = "smelt-teacher-cache";

std::string file_name(int64_t i) {
  char b[40];
  std::snprintf(b, sizeof b, "cache-%05ld.safetensors", static_cast<long>(i));
  return b;
}

}  // namespace

TeacherCacheInfo write_teacher_cache(const Transformer& teacher, const std::string& teacher_name, const TokenDataset& data,
                                     int64_t seq_len, int64_t top_k, double temperature, int64_t batch, const std::string& dir) {
  const int64_t V = teacher.config().vocab_size;
  SMELT_CHECK(top_k >= 1 && top_k < V, "--teacher-topk must be in [1, ", V, "), got ", top_k);
  SMELT_CHECK(temperature > 0, "--temperature must be positive");
  TeacherCacheInfo info{teacher_name, data.name(), data.size(), seq_len, top_k, data.windows(seq_len), temperature};
  SMELT_CHECK(info.windows > 0, data.name(), ": shorter than one window of ", seq_len + 1, " tokens");
  NoGradGuard no_grad;
  ProgressBar bar("teacher cache", info.windows, "windows");
  write_dir_atomic(dir, [&](const std::string& tmp) {
    for (int64_t f = 0; f * kWindowsPerFile < info.windows; ++f) {
      const int64_t w0 = f * kWindowsPerFile, wn = std::min(kWindowsPerFile, info.windows - w0);
      Tensor ids = Tensor::empty({wn, seq_len, top_k}, DType::I32), logp = Tensor::empty({wn, seq_len, top_k});
      for (int64_t b0 = 0; b0 < wn; b0 += batch) {
        const int64_t bn = std::min(batch, wn - b0);
        const Batch windows = data.window_batch(w0 + b0, bn, seq_len);
        const Tensor lp =
            ops::log_softmax(ops::mul(teacher.forward(windows.ids.to(teacher.device())), static_cast<float>(1.0 / temperature)));
        const Tensor lpc = ops::contiguous(lp).to(Device::cpu());  // ranked on the host
        const float* p = lpc.data<float>();
        int32_t* pi = ids.data<int32_t>() + b0 * seq_len * top_k;
        float* pl = logp.data<float>() + b0 * seq_len * top_k;
        parallel_for(0, bn * seq_len, 16, [&](int64_t r0, int64_t r1) {
          std::vector<int32_t> order(V);
          for (int64_t r = r0; r < r1; ++r) {
            const float* row = p + r * V;
            std::iota(order.begin(), order.end(), 0);
            std::partial_sort(order.begin(), order.begin() + top_k, order.end(),
                              [&](int32_t a, int32_t c) { return row[a] > row[c] || (row[a] == row[c] && a < c); });
            for (int64_t k = 0; k < top_k; ++k) {
              pi[r * top_k + k] = order[k];
              pl[r * top_k + k] = row[order[k]];
            }
          }
        });
        bar.update(w0 + b0 + bn);
      }
      write_safetensors(tmp + "/" + file_name(f), {{"ids", ids}, {"logp", logp}}, {{"format", kFormat}});
    }
    const json manifest = {{"format", kFormat}, {"version", 1},          {"teacher", info.teacher},   {"data", info.data},
                           {"data_tokens", info.data_tokens}, {"seq_len", seq_len}, {"top_k", top_k},
                           {"windows", info.windows}, {"temperature", temperature}};
    write_file_atomic(tmp + "/teacher_cache.json", manifest.dump(2) + "\n");
  }, "teacher_cache.json");
  bar.finish();
  return info;
}

TeacherCache TeacherCache::open(const std::string& dir, const TokenDataset& data, int64_t seq_len, double temperature) {
  const std::string path = dir + "/teacher_cache.json";
  const json j = read_json_file(path);
  JsonReader r(j, path);
  SMELT_CHECK(r.string("format") == kFormat, r.where("format"), ": not a smelt teacher cache");
  SMELT_CHECK(r.integer("version") == 1, r.where("version"), ": unsupported version");
  TeacherCache c;
  c.dir_ = dir;
  c.info_.teacher = r.string("teacher");
  c.info_.data = r.string("data");
  c.info_.data_tokens = r.integer("data_tokens");
  c.info_.seq_len = r.integer("seq_len");
  c.info_.top_k = r.integer("top_k");
  c.info_.windows = r.integer("windows");
  c.info_.temperature = r.number("temperature");
  r.finish();
  SMELT_CHECK(c.info_.data_tokens == data.size(), path, ": made for ", c.info_.data_tokens, " tokens of ", c.info_.data, ", but ",
              data.name(), " has ", data.size(), "; rebuild the cache");
  SMELT_CHECK(c.info_.seq_len == seq_len, path, ": seq_len ", c.info_.seq_len, " differs from the run's ", seq_len);
  SMELT_CHECK(std::fabs(c.info_.temperature - temperature) < 1e-9, path, ": temperature ", c.info_.temperature, " differs from the run's ",
              temperature);
  SMELT_CHECK(c.info_.top_k >= 1 && c.info_.windows == data.windows(seq_len), path, ": top_k/windows do not fit the data");
  for (int64_t f = 0; f * kWindowsPerFile < c.info_.windows; ++f) {
    const std::string file = dir + "/" + file_name(f);
    c.files_.push_back(read_safetensors(file));
    const int64_t wn = std::min(kWindowsPerFile, c.info_.windows - f * kWindowsPerFile);
    const Shape want{wn, seq_len, c.info_.top_k};
    const Tensor& ids = c.files_.back().at("ids", file);
    const Tensor& lp = c.files_.back().at("logp", file);
    SMELT_CHECK(ids.shape() == want && lp.shape() == want && ids.dtype() == DType::I32 && lp.dtype() == DType::F32, file,
                ": ids/logp must be I32/F32 of shape [", wn, ", ", seq_len, ", ", c.info_.top_k, "]");
  }
  return c;
}

void TeacherCache::lookup(const std::vector<int64_t>& starts, Tensor& ids, Tensor& logp) const {
  const int64_t T = info_.seq_len, K = info_.top_k, B = static_cast<int64_t>(starts.size());
  ids = Tensor::empty({B * T, K}, DType::I64);
  logp = Tensor::empty({B * T, K});
  for (int64_t b = 0; b < B; ++b) {
    SMELT_CHECK(starts[b] % T == 0 && starts[b] / T < info_.windows, dir_, ": no cached window starts at token ", starts[b]);
    const int64_t w = starts[b] / T, f = w / kWindowsPerFile, local = w % kWindowsPerFile;
    const int32_t* src_ids = files_[f].at("ids", dir_).data<int32_t>() + local * T * K;
    const float* src_lp = files_[f].at("logp", dir_).data<float>() + local * T * K;
    int64_t* dst_ids = ids.data<int64_t>() + b * T * K;
    for (int64_t i = 0; i < T * K; ++i) dst_ids[i] = src_ids[i];
    std::memcpy(logp.data<float>() + b * T * K, src_lp, T * K * sizeof(float));
  }
}

}  // namespace smelt
