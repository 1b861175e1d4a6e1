// The distillation side of smelt train (see train_distill.h).
#include "tools/train_distill.h"

#include <filesystem>

#include "io/checkpoint.h"
#include "io/files.h"
#include "io/teacher_cache.h"
#include "ops/distill.h"
#include "runtime/communicator.h"
#include "runtime/log.h"

namespace smelt::tools {
namespace {

DistillOptions distill_options(const TrainArgs& a) {
  SMELT_CHECK(a.beta >= 0, "--beta must be in (0, 1) (0: the loss's default), got ", a.beta);
  DistillOptions o;
  o.kind = ops::parse_divergence(a.distill_loss);
  o.temperature = a.temperature;
  o.alpha = a.alpha;
  o.beta = a.beta > 0 ? a.beta : ops::default_beta(o.kind);
  if (!a.hidden_loss.empty()) o.hidden = ops::parse_hidden_loss(a.hidden_loss);
  o.hidden_weight = a.hidden_weight;
  o.validate();
  return o;
}

bool has_cache(const TrainArgs& a) { return a.teacher_topk > 0 && std::filesystem::exists(a.cache + "/teacher_cache.json"); }

}  // namespace

json distill_settings(const TrainArgs& a) {
  return {{"teacher", a.teacher}, {"loss", a.distill_loss}, {"temperature", a.temperature}, {"alpha", a.alpha},
          {"beta", a.beta > 0 ? a.beta : ops::default_beta(ops::parse_divergence(a.distill_loss))}, {"teacher_topk", a.teacher_topk},
          {"cache", a.cache}, {"hidden_loss", a.hidden_loss}, {"hidden_weight", a.hidden_weight}, {"student_init", a.student_init},
          {"student_layers", a.student_layers}};
}

void apply_distill_settings(const json& section, const std::string& source, TrainArgs& a) {
  JsonReader r(section, source);
  TrainArgs d = a;
  d.teacher = r.string("teacher");
  d.distill_loss = r.string("loss", "fkl");
  d.temperature = r.number("temperature", 1.0);
  d.alpha = r.number("alpha", 0.5);
  d.beta = r.number("beta", 0.0);
  d.teacher_topk = r.integer("teacher_topk", 0);
  d.cache = r.string("cache", "");
  d.hidden_loss = r.string("hidden_loss", "");
  d.hidden_weight = r.number("hidden_weight", 1.0);
  d.student_init = r.string("student_init", "scratch");
  d.student_layers.clear();
  if (r.has("student_layers"))
    for (const json& l : r.raw("student_layers")) {
      SMELT_CHECK(l.is_number_integer(), r.where("student_layers"), ": expected layer indices");
      d.student_layers.push_back(l.get<int64_t>());
    }
  r.finish();
  if (a.teacher.empty()) {
    a = d;
    return;
  }
  // With --teacher the settings given are checked against the recorded ones (all of them when
  // the caller does not say which were given); the rest come from the record. The teacher and the
  // cache are compared as paths, so ./moe is moe; the path given is the one used.
  const json given = distill_settings(a), recorded = distill_settings(d);
  for (auto it = recorded.begin(); it != recorded.end(); ++it) {
    const std::string& key = it.key();
    if (key == "student_init" || key == "student_layers") continue;  // they only shape a fresh student
    if (key != "teacher" && a.distill_given && !a.distill_given->count(key)) continue;
    const bool same = key == "teacher" || key == "cache" ? same_path(given[key].get<std::string>(), it.value().get<std::string>())
                                                         : given[key] == it.value();
    SMELT_CHECK(same, source, ": \"distill\".", key, " is ", it.value().dump(), " but the command line gives ", given[key].dump(),
                "; leave the distillation options out to use the recorded ones");
  }
  const std::string teacher = a.teacher, cache = a.distill_given && !a.distill_given->count("cache") ? d.cache : a.cache;
  a = d;
  a.teacher = teacher;
  a.cache = cache;
}

void check_distillation(const TrainArgs& a, const TrainingData& data, const ModelConfig& student) {
  if (a.teacher.empty()) {
    SMELT_CHECK(a.hidden_loss.empty() && !init_from_teacher(a), "--hidden-loss and --student-init teacher need --teacher");
    return;
  }
  distill_options(a);
  SMELT_CHECK(a.student_init == "scratch" || a.student_init == "teacher", "--student-init must be scratch or teacher, got ", a.student_init);
  SMELT_CHECK(a.student_layers.empty() || init_from_teacher(a), "--student-layers needs --student-init teacher");
  SMELT_CHECK(a.teacher_topk >= 0, "--teacher-topk must be ≥ 0");
  SMELT_CHECK(a.teacher_topk == 0 || !a.cache.empty(), "--teacher-topk needs --cache DIR (where the teacher's predictions are kept)");
  SMELT_CHECK(a.teacher_topk == 0 || a.hidden_loss.empty(), "--hidden-loss needs the teacher online; the top-K cache holds only its predictions");
  if (has_cache(a) && !init_from_teacher(a)) return;  // the cache is checked against the data when it is opened
  const std::optional<BpeTokenizer> teacher_tok = model_tokenizer(a.teacher);
  SMELT_CHECK(teacher_tok.has_value() == data.tokenizer.has_value() && (!teacher_tok || teacher_tok->same_as(*data.tokenizer)), a.teacher,
              ": the teacher's tokenizer differs from the data's; teacher and student must share a vocabulary");
  const ModelConfig teacher = read_model_dir_config(a.teacher);
  SMELT_CHECK(teacher.vocab_size == student.vocab_size, a.teacher, ": teacher vocab_size ", teacher.vocab_size,
              " differs from the student's ", student.vocab_size);
}

std::optional<Distillation> distillation(const TrainArgs& a, const TrainingData& data, const TrainConfig& tc, const ModelConfig& student,
                                         std::shared_ptr<const Transformer>& teacher, Device device) {
  if (a.teacher.empty()) return std::nullopt;
  const DistillOptions o = distill_options(a);
  if (o.alpha == 0 && o.hidden == ops::HiddenLoss::None) {
    // Nothing learns from the teacher (a no-distillation baseline on the same windows).
    log_info("alpha 0 and no hidden-state loss: next-token loss only, the teacher is not run");
    teacher.reset();
    return Distillation{[](const Transformer& m, const Batch& b, Tensor* aux) { return training_loss(m, b, aux); }, {}};
  }
  // Rank 0's view of the cache decides for every rank (another rank could look after rank 0
  // has written it).
  int64_t cached = has_cache(a) ? 1 : 0;
  world().broadcast(&cached, 1, CommType::I64, 0);
  if (!cached) {
    // An online teacher keeps its weights in bf16 when the student's GEMMs run in bf16: its
    // products round them to bf16 anyway, and it then takes half the memory. (The top-K cache is
    // written outside the training step, in f32, whatever the run's precision.)
    const DType teacher_weights = tc.precision == "bf16" && a.teacher_topk == 0 ? DType::BF16 : DType::F32;
    if (!teacher && (a.teacher_topk == 0 || world().rank() == 0))
      teacher = std::make_shared<const Transformer>(load_model_dir(a.teacher, teacher_weights, Transformer::Experts::InMemory, device));
    if (a.teacher_topk == 0) {
      log_info("distilling online from " + a.teacher + " (" + std::to_string(teacher->config().parameter_count()) + " parameters" +
               (teacher_weights == DType::BF16 ? ", bf16 weights" : "") + ")" + (a.hidden_loss.empty() ? "" : ", hidden-state loss " + a.hidden_loss));
      Distillation d;
      if (o.hidden != ops::HiddenLoss::None) d.hidden = HiddenMatch::create(teacher->config(), student, tc.seed, device);
      d.loss = online_distill_loss(teacher, o, d.hidden);
      return d;
    }
    if (world().rank() == 0) {
      log_info("writing the teacher's top-" + std::to_string(a.teacher_topk) + " predictions to " + a.cache);
      write_teacher_cache(*teacher, a.teacher, data.train, tc.seq_len, a.teacher_topk, a.temperature, 8, a.cache);
    }
    world().barrier();  // the other ranks read what rank 0 wrote
  }
  teacher.reset();  // training reads only the cache
  auto cache = std::make_shared<const TeacherCache>(TeacherCache::open(a.cache, data.train, tc.seq_len, a.temperature));
  SMELT_CHECK(cache->info().top_k == a.teacher_topk, a.cache, ": holds top-", cache->info().top_k, " predictions, not top-", a.teacher_topk);
  log_info("distilling from the cached top-" + std::to_string(a.teacher_topk) + " predictions in " + a.cache + " (no teacher in memory)");
  auto lookup = [cache](const std::vector<int64_t>& starts, Tensor& ids, Tensor& logp) { cache->lookup(starts, ids, logp); };
  return Distillation{cached_distill_loss(lookup, o), {}};
}

}  // namespace smelt::tools
