// Run records made readable: `smelt report RUN_DIR` turns a run's metrics.jsonl (one JSON object
// per step, written by smelt train) into report.md with SVG plots beside it — train/validation
// loss, learning rate, gradient norm, tokens/s and, for MoE models, the balancing losses and an
// expert-load heatmap per layer over time. model_card() is the README.md stored with a model.
#pragma once
#include <string>
#include <vector>

#include "io/json_reader.h"
#include "models/config.h"

namespace smelt {

// Parses metrics.jsonl text; a malformed line is an error naming `source` and the line.
std::vector<json> parse_metrics_jsonl(const std::string& text, const std::string& source);

// Writes RUN_DIR/report.md and RUN_DIR/report/*.svg (atomically, file by file); returns the
// report's path.
std::string write_run_report(const std::string& run_dir);

// Markdown model card: architecture, parameters (total and active per token), data, tokens seen,
// final metrics, and how to use the model. `data` describes the training data (name, tokens,
// tokenizer); `summary` is the run's summary.json.
std::string model_card(const ModelConfig& config, const json& summary, const json& data);

}  // namespace smelt
