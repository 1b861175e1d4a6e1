// smelt pipeline's report: every stage's model scored on every domain's validation text, the
// composition check, the training table and the figures (loss curves, routing heatmaps).
#pragma once
#include <map>
#include <sstream>
#include <string>

#include "io/json_reader.h"
#include "tools/pipeline_recipe.h"

namespace smelt::tools {

// The report's text and its figures as JSON.
struct Report {
  std::ostringstream md;
  json results = json::object();
};

// Scores every stage's model under `out` on every domain's validation text (at most
// `eval_windows` windows each) into `report`, and writes the report's figures (training table,
// loss curves, the MoE's routing heatmaps) under out/report/. `recipe_path` titles the report.
void score_into_report(const std::string& recipe_path, int64_t eval_windows, const PipelineRecipe& p,
                       const std::map<std::string, std::string>& corpus, const std::string& out, Report& report);

}  // namespace smelt::tools
