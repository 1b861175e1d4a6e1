// smelt export --format hf|gguf: a directory Hugging Face transformers loads as it is
// (io/hf_export.h), or a GGUF file llama.cpp loads (io/gguf_export.h).
#include <cstdio>
#include <filesystem>

#include "io/files.h"
#include "io/gguf_export.h"
#include "io/hf_export.h"
#include "tools/commands.h"

namespace smelt::tools {
namespace {

struct ExportArgs {
  std::string model, out, format = "hf", type = "f32";
};

void run_export(const ExportArgs& a) {
  SMELT_CHECK(a.format == "hf" || a.format == "gguf", "--format: unknown format \"", a.format, "\" (known: hf, gguf)");
  if (a.format == "hf") check_output_dir(a.out);
  else check_output_file(a.out);
  check_output_apart("--out", a.out, {a.model});
  if (a.format == "hf") {
    SMELT_CHECK(a.type == "f32", "--type applies to --format gguf only (hf exports are f32)");
    export_hf(a.model, a.out);
    std::printf("exported %s → %s (Hugging Face layout)\n", a.model.c_str(), a.out.c_str());
    return;
  }
  export_gguf(a.model, a.out, ggml_type_from_name(a.type));
  std::printf("exported %s → %s (GGUF, %s matrices, %.1f MB)\n", a.model.c_str(), a.out.c_str(), a.type.c_str(),
              static_cast<double>(std::filesystem::file_size(a.out)) / 1e6);
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto a = std::make_shared<ExportArgs>();
  CLI::App* cmd = app.add_subcommand("export", "Write a model in another framework's layout (hf: transformers loads it as is; gguf: llama.cpp does)");
  cmd->add_option("--model", a->model, "smelt model directory (or .gguf file)")->required();
  cmd->add_option("--out", a->out, "Output directory (hf) or file (gguf)")->required();
  cmd->add_option("--format", a->format, "Target layout: hf (transformers) or gguf (llama.cpp)")->capture_default_str();
  cmd->add_option("--type", a->type, "gguf: weight matrices as f32, f16, bf16, q8_0, q4_0 or q4_k (rows that are not whole 256-value super-blocks: q4_0)")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k"}))
      ->capture_default_str();
  cmd->callback([a] { run_export(*a); });
}

}  // namespace smelt::tools
