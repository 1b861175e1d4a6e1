// smelt import: a pretrained model (a GGUF file, or a Hugging Face directory) → a smelt model
// directory (config.json, model.safetensors, tokenizer.json, tokenizer_config.json with the
// chat template), which every other command reads.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "io/checkpoint.h"
#include "io/files.h"
#include "io/json_reader.h"
#include "runtime/storage.h"
#include "tools/commands.h"
#include "tools/data_source.h"
#include "tools/weights_option.h"

namespace smelt::tools {
namespace {

struct ImportArgs {
  std::string model, out, dtype = "f32";
  bool json = false;
};

void run_import(const ImportArgs& a) {
  const auto start = std::chrono::steady_clock::now();
  SMELT_CHECK(std::filesystem::absolute(a.model).lexically_normal() != std::filesystem::absolute(a.out).lexically_normal(),
              "--out must differ from --model");
  check_output_dir(a.out);
  check_output_apart("--out", a.out, {a.model});
  Transformer model = load_model_dir(a.model, weights_dtype(a.dtype));
  std::map<std::string, std::string> files = carried_model_files(a.model);
  // A tokenizer is validated (and normalised) on the way in, as every reader of it will see it.
  if (files.count("tokenizer.json"))
    files["tokenizer.json"] = BpeTokenizer::from_json(parse_json_text(files["tokenizer.json"], a.model + "/tokenizer.json"), a.model)
                                  .to_json()
                                  .dump(1) +
                              "\n";
  files.erase("recipe.json");
  save_model_dir(a.out, model, files);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const ModelConfig& c = model.config();
  json out = {{"model", a.model},
              {"out", a.out},
              {"dtype", a.dtype},
              {"layers", c.num_hidden_layers},
              {"hidden_size", c.hidden_size},
              {"vocab_size", c.vocab_size},
              {"experts", c.num_local_experts},
              {"parameters", c.parameter_count()},
              {"tokenizer", files.count("tokenizer.json") > 0},
              {"chat_template", files.count("tokenizer_config.json") > 0 &&
                                    files["tokenizer_config.json"].find("chat_template") != std::string::npos},
              {"seconds", seconds}};
  if (a.json) {
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("imported %s → %s: %ld layers, width %ld, vocabulary %ld, %ld parameters (%s)%s in %.1f s\n", a.model.c_str(),
                a.out.c_str(), static_cast<long>(c.num_hidden_layers), static_cast<long>(c.hidden_size),
                static_cast<long>(c.vocab_size), static_cast<long>(c.parameter_count()), a.dtype.c_str(),
                files.count("tokenizer.json") ? ", with its tokenizer" : "", seconds);
  }
}

}  // namespace

void add_import_command(CLI::App& app) {
  auto a = std::make_shared<ImportArgs>();
  CLI::App* cmd = app.add_subcommand("import", "Import a pretrained model (GGUF file or Hugging Face directory) as a smelt model directory");
  cmd->add_option("--model", a->model, "A .gguf file, or a Hugging Face model directory (config.json, safetensors)")->required();
  cmd->add_option("--out", a->out, "Output model directory (written atomically)")->required();
  cmd->add_option("--dtype", a->dtype, "Weight matrices stored as f32 or bf16 (norms stay f32)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "Print the result as JSON");
  cmd->callback([a] { run_import(*a); });
}

}  // namespace smelt::tools
