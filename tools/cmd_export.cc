// smelt export --format hf: a directory Hugging Face transformers loads as it is (io/hf_export.h).
#include <cstdio>

#include "io/hf_export.h"
#include "tools/commands.h"

namespace smelt::tools {
namespace {

struct ExportArgs {
  std::string model, out, format = "hf";
};

void run_export(const ExportArgs& a) {
  SMELT_CHECK(a.format == "hf", "--format: unknown format \"", a.format, "\" (known: hf)");
  export_hf(a.model, a.out);
  std::printf("exported %s → %s (Hugging Face layout)\n", a.model.c_str(), a.out.c_str());
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto a = std::make_shared<ExportArgs>();
  CLI::App* cmd = app.add_subcommand("export", "Write a model in another framework's layout (hf: transformers loads it as is)");
  cmd->add_option("--model", a->model, "smelt model directory")->required();
  cmd->add_option("--out", a->out, "Output directory")->required();
  cmd->add_option("--format", a->format, "Target layout: hf")->capture_default_str();
  cmd->callback([a] { run_export(*a); });
}

}  // namespace smelt::tools
