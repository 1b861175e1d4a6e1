// Reads and checks smelt pipeline's recipe file (see pipeline_recipe.h).
#include "tools/pipeline_recipe.h"

#include <cmath>
#include <filesystem>

#include "io/config_json.h"
#include "io/files.h"
#include "models/compose.h"
#include "ops/distill.h"
#include "runtime/error.h"

namespace smelt::tools {
namespace {

namespace fs = std::filesystem;

// A stage's recipe: "train" is required, "model" only where the stage starts a fresh model.
json stage_section(JsonReader& r, const std::string& key, bool with_model) {
  JsonReader s = r.object(key);
  json out = json::object();
  if (with_model) out["model"] = s.raw("model");
  out["train"] = s.raw("train");
  s.finish();
  return out;
}

}  // namespace

PipelineRecipe read_pipeline_recipe(const std::string& path, const std::vector<std::string>& domains_override) {
  json j = read_json_file(path);
  if (!domains_override.empty()) {
    json d = json::object();
    for (const std::string& spec : domains_override) {
      const size_t eq = spec.find('=');
      SMELT_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < spec.size(), "--domains: expected NAME=FILE, got \"", spec, "\"");
      SMELT_CHECK(!d.contains(spec.substr(0, eq)), "--domains: ", spec.substr(0, eq), " is named twice");
      d[spec.substr(0, eq)] = spec.substr(eq + 1);
    }
    j["domains"] = d;
  }
  JsonReader r(j, path);
  PipelineRecipe p;
  const bool pretrained = r.has("base") && r.raw("base").is_object() && r.raw("base").contains("from");
  if (pretrained) {
    SMELT_CHECK(!r.has("tokenizer"), r.where("tokenizer"), ": the tokenizer comes from base.from; leave this section out");
  } else {
    JsonReader t = r.object("tokenizer");
    p.vocab_size = t.integer("vocab_size");
    t.finish();
  }
  const json& domains = r.raw("domains");
  SMELT_CHECK(domains.is_object() && domains.size() >= 2, r.where("domains"), ": expected an object of at least two {name: text file}");
  for (auto it = domains.begin(); it != domains.end(); ++it) {
    SMELT_CHECK(it.value().is_string(), r.where("domains"), ".", it.key(), ": expected a file name");
    SMELT_CHECK(it.key().find_first_of("/. ") == std::string::npos && !it.key().empty(), r.where("domains"), ": \"", it.key(),
                "\" cannot name a directory (letters, digits, - and _ only)");
    // The pipeline's own data folders sit beside the domains' (data/NAME).
    SMELT_CHECK(it.key() != "mixed" && it.key() != "instruct", r.where("domains"), ": \"", it.key(),
                "\" is the name of the pipeline's own data folder; name the domain otherwise");
    p.domains[it.key()] = it.value().get<std::string>();
  }
  p.instruct_data = r.string("instruct_data", "");
  p.max_domain_bytes = r.integer("max_domain_bytes", 0);
  p.max_instruct_examples = r.integer("max_instruct_examples", 0);
  SMELT_CHECK(p.max_domain_bytes >= 0, r.where("max_domain_bytes"), ": must be ≥ 0 (0: everything), got ", p.max_domain_bytes);
  SMELT_CHECK(p.max_instruct_examples >= 0, r.where("max_instruct_examples"), ": must be ≥ 0 (0: everything), got ", p.max_instruct_examples);
  p.val_fraction = r.number("val_fraction", p.val_fraction);
  p.save_every = r.integer("save_every", p.save_every);
  p.device = r.string("device", p.device);
  try {
    Device::parse(p.device);  // availability is checked when the run starts
  } catch (const Error& e) {
    SMELT_FAIL(r.where("device"), ": ", e.message());
  }
  if (pretrained) {
    JsonReader b = r.object("base");
    p.base_from = b.string("from");
    b.finish();
    SMELT_CHECK(fs::exists(p.base_from), r.where("base"), ".from: ", p.base_from, " does not exist");
  } else {
    p.base = stage_section(r, "base", true);
  }
  p.instruct_stage = r.has("instruct");
  SMELT_CHECK(p.instruct_stage || pretrained, r.where("instruct"), ": missing (only a pretrained base.from may skip instruct tuning)");
  for (const char* field : {"instruct_data", "max_instruct_examples"})
    SMELT_CHECK(p.instruct_stage || !r.has(field), r.where(field), ": has no effect without an \"instruct\" stage; leave it out");
  if (p.instruct_stage) {
    // "replay": the share of each instruct batch's rows replaying the mixed pretraining text
    // (0 turns it off).
    JsonReader i = r.object("instruct");
    p.instruct_replay = i.number("replay", p.instruct_replay);
    SMELT_CHECK(p.instruct_replay >= 0 && p.instruct_replay < 1, i.where("replay"), ": must be in [0, 1), got ", p.instruct_replay);
    json section = json::object({{"train", i.raw("train")}});
    i.finish();
    p.instruct = section;
    SMELT_CHECK(!p.instruct_data.empty(), r.where("instruct_data"), ": missing (the instruct stage trains on it)");
  }
  p.experts = stage_section(r, "experts", false);
  {
    JsonReader c = r.object("compose");
    p.top_k = c.integer("top_k", p.top_k);
    SMELT_CHECK(p.top_k >= 1 && p.top_k <= static_cast<int64_t>(p.domains.size()), c.where("top_k"), ": must be between 1 and the ",
                p.domains.size(), " domains (one expert each), got ", p.top_k);
    p.gate_init = c.string("gate_init", p.gate_init);
    // Checked here, not when the compose stage starts after the base, instruct and expert stages.
    SMELT_CHECK(known_gate_init(p.gate_init), c.where("gate_init"), ": must be ", kGateInits, ", got \"", p.gate_init, "\"");
    p.shared_expert = c.boolean("shared_expert", p.shared_expert);
    c.finish();
  }
  p.mix = stage_section(r, "mix", false);
  {
    JsonReader d = r.object("distill");
    p.distill = json::object({{"model", d.raw("model")}, {"train", d.raw("train")}});
    p.distill_loss = d.string("loss", p.distill_loss);
    p.alpha = d.number("alpha", p.alpha);
    p.temperature = d.number("temperature", p.temperature);
    p.hidden_loss = d.string("hidden_loss", p.hidden_loss);
    p.hidden_weight = d.number("hidden_weight", p.hidden_weight);
    p.student_init = d.string("student_init", p.student_init);
    if (d.has("student_layers"))
      for (const json& l : d.raw("student_layers")) {
        SMELT_CHECK(l.is_number_integer(), d.where("student_layers"), ": expected teacher layer indices");
        p.student_layers.push_back(l.get<int64_t>());
      }
    SMELT_CHECK(p.student_init == "scratch" || p.student_init == "teacher", d.where("student_init"), ": expected \"scratch\" or \"teacher\", got \"",
                p.student_init, "\"");
    SMELT_CHECK(p.hidden_loss.empty() || p.hidden_loss == "mse" || p.hidden_loss == "cosine", d.where("hidden_loss"),
                ": expected \"mse\" or \"cosine\", got \"", p.hidden_loss, "\"");
    d.finish();
    // The distillation options, checked before the stages that come first train.
    SMELT_CHECK(p.alpha >= 0 && p.alpha <= 1, d.where("alpha"), ": must be in [0, 1], got ", p.alpha);
    SMELT_CHECK(p.temperature > 0 && std::isfinite(p.temperature), d.where("temperature"), ": must be positive, got ", p.temperature);
    SMELT_CHECK(p.hidden_weight >= 0 && std::isfinite(p.hidden_weight), d.where("hidden_weight"), ": must be ≥ 0, got ", p.hidden_weight);
    SMELT_CHECK(!d.has("hidden_weight") || !p.hidden_loss.empty(), d.where("hidden_weight"), ": has no effect without \"hidden_loss\"; leave it out");
    SMELT_CHECK(p.student_layers.empty() || p.student_init == "teacher", d.where("student_layers"),
                ": picks the teacher's layers for \"student_init\": \"teacher\"; leave it out or set that");
    try {
      ops::parse_divergence(p.distill_loss);
    } catch (const Error& e) {
      SMELT_FAIL(d.where("loss"), ": ", e.message());
    }
  }
  r.finish();
  // Every stage recipe is checked now, before any work, with its path in the errors.
  for (const auto& [name, section] : {std::pair<std::string, const json*>{"base", &p.base}, {"instruct", &p.instruct},
                                      {"experts", &p.experts}, {"mix", &p.mix}, {"distill", &p.distill}})
    if (!section->empty()) parse_recipe(section->dump(), path + ": " + name);
  for (const auto& [name, file] : p.domains) SMELT_CHECK(fs::exists(file), path, ": domains.", name, ": ", file, " does not exist");
  SMELT_CHECK(!p.instruct_stage || fs::exists(p.instruct_data), path, ": instruct_data: ", p.instruct_data, " does not exist");
  return p;
}

}  // namespace smelt::tools
