// smelt pipeline's recipe file (configs/pipeline.json): the domains, the data caps and each
// stage's training recipe, read and checked before any stage runs.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "io/json_reader.h"

namespace smelt::tools {

struct PipelineRecipe {
  int64_t vocab_size = 4096;
  std::map<std::string, std::string> domains;  // name → text file
  std::string instruct_data;
  int64_t max_domain_bytes = 0, max_instruct_examples = 0;  // 0: everything
  double val_fraction = 0.05;
  json base, instruct, experts, mix, distill;  // recipe sections ({"model"?, "train"})
  std::string base_from;       // base: {"from": GGUF or model directory} instead of pretraining
  bool instruct_stage = true;  // false: the experts start from the (pretrained) base
  int64_t top_k = 2;
  std::string gate_init = "hidden";
  bool shared_expert = false;
  std::string distill_loss = "fkl";
  double alpha = 0.5, temperature = 1.0;
  std::string hidden_loss, student_init = "scratch";
  double hidden_weight = 1.0;
  std::vector<int64_t> student_layers;
  int64_t save_every = 50;
  double instruct_replay = 0.5;  // measured on three domain sets (README, "The pipeline on other corpora")
  std::string device = "cpu";    // where the stages train, compose and distil (--device overrides)
};

// `domains_override` ("NAME=FILE" each) replaces the recipe's "domains", so one recipe can be
// judged on other corpora (scripts/experiments/domain_sets.sh).
PipelineRecipe read_pipeline_recipe(const std::string& path, const std::vector<std::string>& domains_override);

}  // namespace smelt::tools
