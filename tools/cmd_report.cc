// smelt report RUN_DIR: report.md with SVG plots from a run's metrics (io/run_report.h).
#include <cstdio>

#include "io/run_report.h"
#include "tools/commands.h"

namespace smelt::tools {

void add_report_command(CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("report", "Write RUN_DIR/report.md with SVG plots (loss, lr, grad norm, tokens/s, expert load)");
  cmd->add_option("run_dir", *dir, "A model or checkpoint directory written by smelt train (has metrics.jsonl)")->required();
  cmd->callback([dir] { std::printf("%s\n", write_run_report(*dir).c_str()); });
}

}  // namespace smelt::tools
