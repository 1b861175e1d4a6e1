#include "io/checkpoint.h"

#include <unistd.h>

#include <filesystem>

#include "io/config_json.h"
#include "io/safetensors.h"

namespace smelt {

namespace fs = std::filesystem;

void save_model_dir(const std::string& dir, const Transformer& model, const std::map<std::string, std::string>& extra_files) {
  const fs::path target = fs::path(dir).lexically_normal();
  const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(parent, ec);
  SMELT_CHECK(!ec, parent.string(), ": cannot create directory (", ec.message(), ")");
  const std::string pid = std::to_string(::getpid());
  const fs::path tmp = parent / (target.filename().string() + ".tmp." + pid);
  const fs::path old = parent / (target.filename().string() + ".old." + pid);
  fs::remove_all(tmp, ec);
  fs::create_directory(tmp, ec);
  SMELT_CHECK(!ec, tmp.string(), ": cannot create directory (", ec.message(), ")");
  try {
    write_safetensors((tmp / "model.safetensors").string(), model.state_dict(), {{"format", "pt"}, {"written_by", "smelt"}});
    write_file_atomic((tmp / "config.json").string(), model_config_to_json(model.config()).dump(2) + "\n");
    for (const auto& [name, contents] : extra_files) write_file_atomic((tmp / name).string(), contents);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  // Swap: the old directory is moved aside (not deleted) until the new one is in place.
  const bool had_old = fs::exists(target);
  if (had_old) {
    fs::rename(target, old, ec);
    SMELT_CHECK(!ec, target.string(), ": cannot move the previous version aside (", ec.message(), ")");
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    if (had_old) fs::rename(old, target);
    SMELT_FAIL(target.string(), ": cannot rename the new directory into place (", ec.message(), ")");
  }
  if (had_old) fs::remove_all(old, ec);
}

Transformer load_model_dir(const std::string& dir) {
  SMELT_CHECK(fs::is_directory(dir), dir, ": not a model directory (it does not exist or is a file)");
  const std::string config_path = (fs::path(dir) / "config.json").string();
  const std::string weights_path = (fs::path(dir) / "model.safetensors").string();
  ModelConfig config = read_model_config(config_path);
  SafetensorsFile weights = read_safetensors(weights_path);
  return Transformer::from_tensors(config, weights.tensors, weights_path);
}

}  // namespace smelt
