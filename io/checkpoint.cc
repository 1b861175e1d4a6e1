#include "io/checkpoint.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "io/config_json.h"
#include "io/files.h"
#include "io/gguf_model.h"
#include "io/json_reader.h"
#include "models/expert_parallel.h"
#include "io/safetensors.h"
#include "runtime/storage.h"

namespace smelt {

namespace fs = std::filesystem;

namespace {

// A model with a NaN or an infinity in its weights is broken (an options' overflow, a diverged
// fit): it is refused, with the tensor named, rather than written for later commands to trip on.
void check_finite_weights(const std::string& dir, const NamedTensors& tensors) {
  for (const auto& [name, t] : tensors) {
    if (!is_floating(t.dtype()) || t.numel() == 0) continue;
    const Tensor host = t.to(Device::cpu()).to(DType::F32).clone();  // contiguous f32 on the host
    const float* v = host.data<float>();
    for (int64_t i = 0; i < host.numel(); ++i)
      SMELT_CHECK(std::isfinite(v[i]), dir, ": not written: tensor ", name, " holds ", std::isnan(v[i]) ? "NaN" : "an infinity",
                  " (element ", i, ")");
  }
}

}  // namespace

void save_model_dir(const std::string& dir, const Transformer& model, const std::map<std::string, std::string>& extra_files) {
  const NamedTensors tensors = model.state_dict();
  check_finite_weights(dir, tensors);
  write_dir_atomic(dir, [&](const std::string& tmp) {
    write_safetensors(tmp + "/model.safetensors", tensors, {{"format", "pt"}, {"written_by", "smelt"}});
    write_file_atomic(tmp + "/config.json", model_config_to_json(model.config()).dump(2) + "\n");
    for (const auto& [name, contents] : extra_files) write_file_atomic(tmp + "/" + name, contents);
  });
}

namespace {
// Hugging Face sharded layout: model.safetensors.index.json maps every tensor name to its shard.
NamedTensors read_sharded(const std::string& dir, const std::string& index_path) {
  json index = read_json_file(index_path);
  SMELT_CHECK(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(), index_path,
              ": expected an object with a \"weight_map\" object");
  std::map<std::string, std::vector<std::string>> by_shard;  // shard file → tensor names
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    SMELT_CHECK(it->is_string(), index_path, ": weight_map.", it.key(), " must be a file name");
    const std::string shard = it->get<std::string>();
    SMELT_CHECK(shard.find('/') == std::string::npos && shard.find("..") == std::string::npos, index_path, ": weight_map.",
                it.key(), ": shard '", shard, "' must be a file in the same directory");
    by_shard[shard].push_back(it.key());
  }
  NamedTensors out;
  for (const auto& [shard, names] : by_shard) {
    const std::string path = (fs::path(dir) / shard).string();
    SafetensorsFile f = read_safetensors(path);
    for (const std::string& name : names) out.push_back({name, f.at(name, path)});  // views keep the mapping alive
  }
  return out;
}
}  // namespace

Transformer load_model_dir(const std::string& dir, DType weight_dtype, Transformer::Experts experts, std::optional<Device> place) {
  if (fs::is_regular_file(dir) && is_gguf_file(dir)) {
    // Matrices the file stores in the requested quantised type stay as they are.
    const GgufModel m = read_gguf_model(read_gguf(dir), is_quantized(weight_dtype) ? weight_dtype : DType::F32);
    return Transformer::from_tensors(m.config, m.tensors, dir, weight_dtype, Transformer::Experts::InMemory, place);
  }
  SMELT_CHECK(fs::is_directory(dir), dir, ": not a model directory or GGUF file (it does not exist, or is another kind of file)");
  const std::string config_path = (fs::path(dir) / "config.json").string();
  const std::string weights_path = (fs::path(dir) / "model.safetensors").string();
  const std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
  ModelConfig config = read_model_config(config_path);
  Transformer model = !fs::exists(weights_path) && fs::exists(index_path)
                          ? Transformer::from_tensors(config, read_sharded(dir, index_path), index_path, weight_dtype, experts, place)
                          : Transformer::from_tensors(config, read_safetensors(weights_path).tensors, weights_path, weight_dtype, experts, place);
  Storage::release_cached_blocks();  // the per-expert copies stacked while loading are not needed again
  if (experts == Transformer::Experts::Mapped) {
    // Loading read the other tensors' pages of the file to copy them; only the experts' views of
    // the mapping remain, and each expert's pages come back when a token first chooses it.
    std::set<const Storage*> mappings;
    for (const auto& [name, t] : model.named_parameters())
      if (name.find(".experts.") != std::string::npos) mappings.insert(t.storage().get());
    for (const Storage* m : mappings) release_mapped_pages(*m);
  }
  return model;
}

ModelConfig read_model_dir_config(const std::string& dir) {
  if (fs::is_regular_file(dir) && is_gguf_file(dir)) return gguf_model_config(read_gguf(dir));
  return read_model_config((fs::path(dir) / "config.json").string());
}

std::vector<std::string> optimizer_parameter_names(const Transformer& model, const NamedTensors& extra) {
  std::vector<std::string> names;
  for (const auto& [name, t] : model.trainable_parameters()) names.push_back(name);  // the optimizer's parameters
  for (const auto& [name, t] : extra) names.push_back(name);
  return names;
}

void save_training_checkpoint(const std::string& dir, const Transformer& model, const Optimizer& optimizer, const TrainerState& st,
                              const NamedTensors& extra) {
  save_training_checkpoint(dir, model, optimizer.state(optimizer_parameter_names(model, extra)), st, extra);
}

void save_training_checkpoint(const std::string& dir, const Transformer& model, const OptimizerState& optimizer_state,
                              const TrainerState& st, const NamedTensors& extra) {
  const auto& [tensors, fields] = optimizer_state;
  json state = {{"format", "smelt-trainer-state"},
                {"version", 1},
                {"step", st.step},
                {"tokens", st.tokens},
                {"elapsed_seconds", st.elapsed_seconds},
                {"data_rng", {{"seed", st.data_seed}, {"offset", st.data_offset}}},
                {"jitter_offsets", st.jitter_offsets},
                {"world_size", st.world_size},
                {"val_fraction", st.val_fraction},
                {"whole_windows", st.whole_windows}};
  std::map<std::string, std::string> files = st.extra_files;
  files["optimizer.safetensors"] = safetensors_bytes(tensors, fields, dir + "/optimizer.safetensors");
  files["trainer_state.json"] = state.dump(2) + "\n";
  if (!extra.empty()) files["extra_parameters.safetensors"] = safetensors_bytes(extra, {}, dir + "/extra_parameters.safetensors");
  files["metrics.jsonl"] = st.metrics_jsonl;
  files["recipe.json"] = st.recipe_json;
  save_model_dir(dir, model, files);
}

TrainerState read_trainer_state(const std::string& dir) {
  const std::string path = (fs::path(dir) / "trainer_state.json").string();
  json j = read_json_file(path);
  JsonReader r(j, path);
  SMELT_CHECK(r.string("format") == "smelt-trainer-state", r.where("format"), ": not a smelt trainer state");
  SMELT_CHECK(r.integer("version") == 1, r.where("version"), ": unsupported version");
  TrainerState st;
  st.step = r.integer("step");
  st.tokens = r.integer("tokens");
  st.elapsed_seconds = r.number("elapsed_seconds");
  JsonReader rng = r.object("data_rng");
  st.data_seed = static_cast<uint64_t>(rng.integer("seed"));
  st.data_offset = static_cast<uint64_t>(rng.integer("offset"));
  rng.finish();
  for (const json& o : r.raw("jitter_offsets")) {
    SMELT_CHECK(o.is_number_unsigned() || o.is_number_integer(), r.where("jitter_offsets"), ": expected integers");
    st.jitter_offsets.push_back(o.get<uint64_t>());
  }
  // Written since data parallelism; the state is the same whatever the world size, so a
  // checkpoint resumes on any number of ranks (older ones come from one process).
  if (r.has("world_size")) st.world_size = r.integer("world_size");
  // Written since the split is resumed too (older checkpoints: -1, the command line's).
  if (r.has("val_fraction")) st.val_fraction = r.number("val_fraction");
  if (r.has("whole_windows")) st.whole_windows = r.boolean("whole_windows");
  r.finish();
  SMELT_CHECK(st.val_fraction == -1 || (st.val_fraction >= 0 && st.val_fraction < 1), r.where("val_fraction"), ": must be in [0, 1), got ",
              st.val_fraction);
  SMELT_CHECK(st.step >= 0 && st.tokens >= 0, path, ": negative step or token count");
  SMELT_CHECK(st.world_size > 0, r.where("world_size"), ": must be positive, got ", st.world_size);
  st.metrics_jsonl = read_file((fs::path(dir) / "metrics.jsonl").string());
  st.recipe_json = read_file((fs::path(dir) / "recipe.json").string());
  return st;
}

void load_optimizer_state(const std::string& dir, const Transformer& model, Optimizer& optimizer, const NamedTensors& extra) {
  const std::string path = (fs::path(dir) / "optimizer.safetensors").string();
  SafetensorsFile f = read_safetensors(path);
  // The file holds every expert; a rank of an expert-parallel run keeps the state of its own.
  if (experts_sharded(model))
    for (auto& [name, t] : f.tensors) {
      const size_t dot = name.find('.');
      if (dot != std::string::npos) t = local_part(model, name.substr(dot + 1), t);
    }
  optimizer.load_state(f.tensors, f.metadata, optimizer_parameter_names(model, extra), path);
}

void load_extra_parameters(const std::string& dir, const NamedTensors& extra) {
  if (extra.empty()) return;
  const std::string path = (fs::path(dir) / "extra_parameters.safetensors").string();
  SMELT_CHECK(fs::exists(path), path, ": missing; the checkpoint was written by a run without these parameters (", extra[0].first, ")");
  SafetensorsFile f = read_safetensors(path);
  SMELT_CHECK(f.tensors.size() == extra.size(), path, ": holds ", f.tensors.size(), " tensors, the run trains ", extra.size());
  for (const auto& [name, t] : extra) {
    const Tensor* found = nullptr;
    for (const auto& [n, v] : f.tensors)
      if (n == name) found = &v;
    SMELT_CHECK(found, path, ": no tensor ", name);
    SMELT_CHECK(found->shape() == t.shape(), path, ": ", name, " is ", found->str(), ", the run expects ", t.str());
    t.copy_from(*found);  // onto the run's device
  }
}

void restore_jitter_streams(Transformer& model, const TrainerState& state) {
  SMELT_CHECK(state.jitter_offsets.size() == model.num_layers(), "trainer state has ", state.jitter_offsets.size(),
              " jitter streams for ", model.num_layers(), " layers");
  for (size_t i = 0; i < model.num_layers(); ++i)
    if (model.layer(i).moe) model.layer(i).moe->set_jitter_offset(state.jitter_offsets[i]);
}

}  // namespace smelt
