// Model directories: config.json + model.safetensors (+ any extra files, e.g. metrics). A
// directory is written under a temporary name and renamed into place, so a crash never leaves a
// half-written model and never destroys the previous one before the new one is complete.
#pragma once
#include <map>
#include <string>

#include "models/transformer.h"

namespace smelt {

// `extra_files` maps file names inside the directory to their contents.
void save_model_dir(const std::string& dir, const Transformer& model, const std::map<std::string, std::string>& extra_files = {});
Transformer load_model_dir(const std::string& dir);

}  // namespace smelt
