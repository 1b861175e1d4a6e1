// Run reports and model cards: plots drawn from the recorded metrics, errors naming bad lines.
#include <gtest/gtest.h>

#include <filesystem>

#include "io/files.h"
#include "io/run_report.h"
#include "io/svg_plot.h"
#include "tests/test_util.h"

namespace smelt {
namespace {

using testing::expect_error_mentions;

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

TEST(Report, LineChartPlacesEveryFinitePointInsideThePlot) {
  PlotSeries s{"loss", {1, 2, 3, 4}, {4.0, 3.0, NAN, 1.0}};
  const std::string svg = svg_line_chart({s}, "Loss <train>", "step", "nats");
  EXPECT_NE(svg.find("Loss &lt;train&gt;"), std::string::npos);  // titles are escaped
  const size_t at = svg.find("points=\"");
  ASSERT_NE(at, std::string::npos);
  const std::string points = svg.substr(at + 8, svg.find('"', at + 8) - at - 8);
  EXPECT_EQ(count(points, ","), 3u);  // the NaN is skipped
  // First point (x min, y max) at the top left corner of the plot area, last at the bottom right
  // (with 5 % padding on y).
  EXPECT_EQ(points.substr(0, points.find(',')), "70");
}

TEST(Report, HeatmapHasOneCellPerValue) {
  const std::string svg = svg_heatmap({{0.5, 0.25, 0.25}, {0.5, 0.75, 0.75}}, {"e0", "e1"}, {"1", "2", "3"}, "load", "step");
  EXPECT_EQ(count(svg, "<rect x="), 6u);
  EXPECT_NE(svg.find("e1, 2: 0.75"), std::string::npos);
}

TEST(Report, WritesMarkdownAndPlotsForAnMoeRun) {
  const std::string dir = ::testing::TempDir() + "report_run";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::string metrics;
  for (int step = 1; step <= 5; ++step)
    metrics += "{\"step\": " + std::to_string(step) + ", \"loss\": " + std::to_string(5.0 - step * 0.5) +
               ", \"lr\": 0.001, \"grad_norm\": 1.5, \"tokens\": " + std::to_string(step * 100) +
               ", \"tokens_per_s\": 900, \"elapsed_s\": 1, \"aux_loss\": 0.01, \"moe\": [{\"layer\": 0, \"load\": [0.5, 0.5], "
               "\"load_cv\": 0.0, \"router_entropy\": 0.69, \"dropped_fraction\": 0, \"active_experts\": 1, \"aux_loss\": 1, \"z_loss\": 0.1}]}\n";
  write_file_atomic(dir + "/metrics.jsonl", metrics);
  const std::string md = read_file(write_run_report(dir));
  for (const char* fig : {"loss.svg", "lr.svg", "grad_norm.svg", "tokens_per_s.svg", "load_cv.svg", "expert_load_layer0.svg"}) {
    EXPECT_NE(md.find(std::string("report/") + fig), std::string::npos) << fig;
    EXPECT_TRUE(std::filesystem::exists(dir + "/report/" + fig)) << fig;
  }
  EXPECT_NE(md.find("| tokens seen | 500 |"), std::string::npos) << md;
  EXPECT_EQ(count(read_file(dir + "/report/expert_load_layer0.svg"), "<rect x="), 10u);  // 2 experts × 5 steps

  write_file_atomic(dir + "/metrics.jsonl", metrics + "{\"step\": 6, \"loss\": \"nan\"}\n");
  expect_error_mentions([&] { write_run_report(dir); }, {"metrics.jsonl:6", "number \"loss\""});
}

TEST(Report, ModelCardStatesArchitectureParametersAndData) {
  ModelConfig c = testing::small_config(256, 32, 64, 2, 4, 4);
  c.num_local_experts = 4;
  c.num_experts_per_tok = 2;
  const std::string card = model_card(c, {{"steps", 10}, {"val_loss", 1.5}}, {{"training data", "corpus.txt"}});
  EXPECT_NE(card.find("MixtralForCausalLM (4 experts, top-2)"), std::string::npos);
  EXPECT_NE(card.find(std::to_string(c.parameter_count()) + " total, " + std::to_string(c.active_parameter_count()) + " active"),
            std::string::npos);
  EXPECT_NE(card.find("| training data | corpus.txt |"), std::string::npos);
  EXPECT_NE(card.find("| val_loss | 1.5 |"), std::string::npos);
}

}  // namespace
}  // namespace smelt
