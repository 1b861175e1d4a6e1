// Training on several ranks (mpirun) against one process: the same losses at every step and the
// same final weights (the order of the gradient sum is the only difference), resume across world
// sizes, wrong launches refused, a killed rank ending the job. These run the smelt binary under
// OpenMPI's mpirun, 2 ranks × 1 thread; they skip, saying so, where the build has no MPI.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "runtime/communicator.h"

namespace smelt {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string work_dir() {
  static const std::string dir = [] {
    const std::string d = ::testing::TempDir() + "smelt_data_parallel_" + std::to_string(getpid());
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

int shell(const std::string& command) {
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// OpenMPI refuses root without these two; 2 ranks on a 2-core machine need --oversubscribe.
std::string mpirun(int ranks) {
  return std::string("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ") + SMELT_MPIRUN + " --oversubscribe -np " + std::to_string(ranks) + " ";
}

// A small MoE (4 experts, top-2, balancing and z-loss on; or its dense twin) and ~100 KB of text.
std::string recipe(const std::string& train_extra, int batch_size = 2, bool dense = false) {
  const std::string key = train_extra + std::to_string(batch_size) + (dense ? "dense" : "moe");
  const std::string path = work_dir() + "/recipe" + std::to_string(std::hash<std::string>{}(key)) + ".json";
  const std::string experts = dense ? "" : R"(, "num_local_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 48,
    "router_aux_loss_coef": 0.01, "router_z_loss_coef": 0.001)";
  std::ofstream(path) << R"({"model": {"vocab_size": 256, "hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64)" << experts << R"(},
    "train": {"steps": 30, "batch_size": )" << batch_size << R"(, "seq_len": 32, "lr": 0.003, "warmup_steps": 5, "eval_every": 10,
    "eval_batches": 3, "seed": 3)" << train_extra << "}}";
  return path;
}

std::string text_data() {
  const std::string path = work_dir() + "/text.txt";
  if (fs::exists(path)) return path;
  std::ofstream f(path);
  uint64_t x = 12345;
  const char* words[] = {"the ", "expert ", "routes ", "tokens ", "to ", "a ", "layer ", "and ", "back. ", "gradient ", "sums\n"};
  for (int i = 0; i < 20000; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    f << words[(x >> 33) % 11];
  }
  return path;
}

// Runs `smelt train` (1 thread per rank) and returns the exit code; stderr goes to OUT.err.
int train(int ranks, const std::string& args, const std::string& out) {
  const std::string cmd = (ranks > 1 ? mpirun(ranks) : std::string()) + SMELT_BINARY + " train --threads 1 --data " + text_data() + " --out " +
                          out + " " + args + " >/dev/null 2>" + out + ".err";
  return shell(cmd);
}

std::vector<json> metrics(const std::string& dir) {
  std::ifstream f(dir + "/metrics.jsonl");
  std::vector<json> lines;
  for (std::string line; std::getline(f, line);) lines.push_back(json::parse(line));
  return lines;
}

void expect_same_losses(const std::string& want_dir, const std::string& got_dir, double tolerance) {
  const std::vector<json> want = metrics(want_dir), got = metrics(got_dir);
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const double a = want[i]["loss"], b = got[i]["loss"];
    EXPECT_LE(std::fabs(a - b), tolerance * std::fabs(a)) << "step " << i + 1 << ": " << a << " vs " << b;
    EXPECT_EQ(want[i]["tokens"], got[i]["tokens"]) << "step " << i + 1;
    ASSERT_EQ(want[i].contains("val_loss"), got[i].contains("val_loss"));
    if (want[i].contains("val_loss"))
      EXPECT_LE(std::fabs(want[i]["val_loss"].get<double>() - got[i]["val_loss"].get<double>()), tolerance * want[i]["val_loss"].get<double>());
  }
}

void expect_same_weights(const std::string& want_dir, const std::string& got_dir, double tolerance) {
  const SafetensorsFile want = read_safetensors(want_dir + "/model.safetensors");
  const SafetensorsFile got = read_safetensors(got_dir + "/model.safetensors");
  ASSERT_EQ(want.tensors.size(), got.tensors.size());
  for (const auto& [name, w] : want.tensors) {
    const std::vector<float> a = w.to_vector(), b = got.at(name, got_dir).to_vector();
    ASSERT_EQ(a.size(), b.size()) << name;
    double worst = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]));
    EXPECT_LE(worst, tolerance) << name;
  }
}

std::string first_line(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);
  return line;
}

// smelt's own error lines in a job's stderr. mpirun forwards each rank's stderr on its own, so
// OpenMPI's abort banner may come before or after them: the test looks for smelt's line anywhere.
std::vector<std::string> error_lines(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(f, line);)
    if (line.rfind("smelt: error: ", 0) == 0) lines.push_back(line);
  return lines;
}

void expect_one_error(const std::string& path, const std::string& needle) {
  const std::vector<std::string> lines = error_lines(path);
  ASSERT_EQ(lines.size(), 1u) << path << ": " << lines.size() << " error lines";
  EXPECT_NE(lines[0].find(needle), std::string::npos) << lines[0];
}

class DataParallel : public ::testing::Test {
 protected:
  static void TearDownTestSuite() { fs::remove_all(work_dir()); }
  void SetUp() override {
    if (!built_with_mpi()) GTEST_SKIP() << "smelt was built without MPI (apt-get install libopenmpi-dev openmpi-bin)";
  }
};

// grad_accum 2 on 2 ranks: one micro-batch each, and the gradient sum g1 + g2 is the one a single
// process forms, so everything is bit-identical; grad_accum 4 sums (g1+g2)+(g3+g4) instead of
// ((g1+g2)+g3)+g4.
TEST_F(DataParallel, TwoRanksEqualOneProcess) {
  for (const int accum : {2, 4}) {
    const std::string r = recipe(", \"grad_accum\": " + std::to_string(accum));
    const std::string one = work_dir() + "/one" + std::to_string(accum), two = work_dir() + "/two" + std::to_string(accum);
    ASSERT_EQ(train(1, "--config " + r, one), 0) << first_line(one + ".err");
    ASSERT_EQ(train(2, "--config " + r, two), 0) << first_line(two + ".err");
    expect_same_losses(one, two, accum == 2 ? 0.0 : 1e-5);
    expect_same_weights(one, two, accum == 2 ? 0.0 : 1e-5);
    const json summary = json::parse(std::ifstream(two + "/summary.json"));
    EXPECT_EQ(summary["ranks"], 2);
    EXPECT_EQ(summary["peak_rss_mib_per_rank"].size(), 2u);
  }
}

// A layout (`train_extra` added to a grad_accum-2 recipe) on 2 ranks against one process: every
// step's loss and the final weights equal; a checkpoint it writes at step 12 resumed on 1 rank
// (with `one_rank_args`) and on 2 ranks, equal to the uninterrupted one-process run.
void expect_layout_equals_one_process(const std::string& tag, const std::string& train_extra, const std::string& one_rank_args) {
  const std::string plain = recipe(", \"grad_accum\": 2"), layout = recipe(", \"grad_accum\": 2" + train_extra);
  const std::string one = work_dir() + "/" + tag + "_one", two = work_dir() + "/" + tag + "_two", part = work_dir() + "/" + tag + "_part";
  ASSERT_EQ(train(1, "--config " + plain, one), 0) << first_line(one + ".err");
  ASSERT_EQ(train(2, "--config " + layout, two), 0) << first_line(two + ".err");
  expect_same_losses(one, two, 0.0);
  expect_same_weights(one, two, 0.0);
  ASSERT_EQ(train(2, "--config " + layout + " --stop-after 12", part), 0) << first_line(part + ".err");
  for (const int ranks : {1, 2}) {
    const std::string resumed = work_dir() + "/" + tag + "_resumed" + std::to_string(ranks);
    const std::string args = "--resume " + part + ".checkpoints/step-00000012" + (ranks == 1 ? one_rank_args : "");
    ASSERT_EQ(train(ranks, args, resumed), 0) << first_line(resumed + ".err");
    expect_same_losses(one, resumed, 0.0);
    expect_same_weights(one, resumed, 0.0);
  }
}

// ZeRO-1: each rank keeps the moments of its own parameters and updates only those, then the
// parameters travel from their owners; the update is the unsharded one exactly. Its checkpoint
// holds every moment, so it resumes unsharded on one rank and sharded on two.
TEST_F(DataParallel, ZeroStageOneEqualsOneProcessAndResumesAnywhere) {
  expect_layout_equals_one_process("zero", ", \"zero_stage\": 1", "");
}

// Expert parallelism: each rank keeps 2 of the 4 experts and runs them for both ranks' tokens.
// The exchange rows, the per-rank grouped GEMMs and the combine are arranged to make the one-
// process arithmetic, so the run is bit-identical; its checkpoints hold every expert and resume
// on one rank (told to, since the recipe asks for 2) and, sharded again, on two.
TEST_F(DataParallel, ExpertParallelEqualsOneProcessAndResumesAnywhere) {
  expect_layout_equals_one_process("ep", ", \"expert_parallel\": 2", " --expert-parallel 1");
  const std::string refused = work_dir() + "/ep_refused";
  EXPECT_NE(train(1, "--resume " + work_dir() + "/ep_part.checkpoints/step-00000012", refused), 0);
  expect_one_error(refused + ".err", "train.expert_parallel 2 needs a multiple of 2 ranks");
}

// Four ranks, expert_parallel 2: two groups of two ranks each share out the experts, and the two
// ranks holding the same experts sum their gradients. The sums are grouped differently from one
// process's, so the match is to 1e-5.
TEST_F(DataParallel, ExpertParallelGroupsOnFourRanks) {
  const std::string plain = recipe(", \"grad_accum\": 4"), ep = recipe(", \"grad_accum\": 4, \"expert_parallel\": 2");
  const std::string one = work_dir() + "/ep4_one", four = work_dir() + "/ep4_four";
  ASSERT_EQ(train(1, "--config " + plain + " --steps 15", one), 0) << first_line(one + ".err");
  ASSERT_EQ(train(4, "--config " + ep + " --steps 15", four), 0) << first_line(four + ".err");
  expect_same_losses(one, four, 1e-5);
  expect_same_weights(one, four, 1e-5);
}

// A checkpoint of a 2-rank run continues on 1 rank and on 2 ranks exactly as the uninterrupted
// single-process run.
TEST_F(DataParallel, CheckpointResumesOnAnyWorldSize) {
  const std::string r = recipe(", \"grad_accum\": 2");
  const std::string whole = work_dir() + "/whole", part = work_dir() + "/part";
  ASSERT_EQ(train(1, "--config " + r, whole), 0) << first_line(whole + ".err");
  ASSERT_EQ(train(2, "--config " + r + " --stop-after 15", part), 0) << first_line(part + ".err");
  const std::string checkpoint = part + ".checkpoints/step-00000015";
  EXPECT_EQ(read_trainer_state(checkpoint).world_size, 2);
  for (const int ranks : {1, 2}) {
    const std::string resumed = work_dir() + "/resumed" + std::to_string(ranks);
    ASSERT_EQ(train(ranks, "--resume " + checkpoint, resumed), 0) << first_line(resumed + ".err");
    expect_same_losses(whole, resumed, 0.0);
    expect_same_weights(whole, resumed, 0.0);
  }
}

// grad_accum 1 on 2 ranks: each rank takes half the rows of every micro-batch, its loss weighted
// by its share of the loss-carrying tokens; a dense model then trains as one process does up to
// the order of the sums.
TEST_F(DataParallel, RowsSplitWhenTheRanksDoNotDivideGradAccum) {
  const std::string r = recipe(", \"grad_accum\": 1", 4, true);
  const std::string one = work_dir() + "/rows_one", two = work_dir() + "/rows_two";
  ASSERT_EQ(train(1, "--config " + r, one), 0) << first_line(one + ".err");
  ASSERT_EQ(train(2, "--config " + r, two), 0) << first_line(two + ".err");
  expect_same_losses(one, two, 1e-5);
  expect_same_weights(one, two, 1e-5);
}

// The whole pipeline under mpirun: its training stages data parallel (whole micro-batches), the
// rest on rank 0. Every model it makes equals the one-process pipeline's, byte for byte.
TEST_F(DataParallel, PipelineOnTwoRanksEqualsOneProcess) {
  const std::string dir = work_dir() + "/pipe";
  fs::create_directories(dir);
  std::ifstream corpus(std::string(SMELT_FIXTURE_DIR) + "/tokenizer_corpus.txt");
  const std::string text((std::istreambuf_iterator<char>(corpus)), std::istreambuf_iterator<char>());
  ASSERT_GT(text.size(), 24000u);
  std::ofstream(dir + "/prose.txt") << text.substr(0, 12000);
  std::ofstream(dir + "/other.txt") << text.substr(text.size() - 12000);
  {
    std::ofstream instruct(dir + "/instruct.jsonl");
    for (int i = 1; i <= 30; ++i) instruct << R"({"prompt": "What does word)" << i << R"( mean?", "response": "A thing numbered )" << i << R"(."})" << "\n";
  }
  const std::string stage_train = R"("train": {"steps": 3, "batch_size": 2, "grad_accum": 2, "seq_len": 16, "eval_batches": 2, "warmup_steps": 1})";
  std::ofstream(dir + "/recipe.json") << R"({"tokenizer": {"vocab_size": 400}, "domains": {"prose": ")" << dir << R"(/prose.txt", "other": ")" << dir
                                      << R"(/other.txt"}, "instruct_data": ")" << dir << R"(/instruct.jsonl", "val_fraction": 0.2,
    "base": {"model": {"vocab_size": 400, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "max_position_embeddings": 64}, )" << stage_train << R"(},
    "instruct": {)" << stage_train << R"(}, "experts": {)" << stage_train << R"(}, "compose": {"top_k": 1, "gate_init": "hidden"},
    "mix": {)" << stage_train << R"(}, "distill": {"model": {"vocab_size": 400, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
    "num_attention_heads": 2, "max_position_embeddings": 64}, )" << stage_train << R"(, "loss": "jsd", "hidden_loss": "mse"}})";
  for (const int ranks : {1, 2}) {
    const std::string out = dir + "/run" + std::to_string(ranks);
    const std::string cmd = (ranks > 1 ? mpirun(ranks) : std::string()) + SMELT_BINARY + " pipeline " + dir + "/recipe.json --out " + out +
                            " --threads 1 >/dev/null 2>" + out + ".err";
    ASSERT_EQ(shell(cmd), 0) << first_line(out + ".err");
    EXPECT_TRUE(fs::exists(out + "/report.md"));
  }
  for (const std::string stage : {"base", "instruct", "expert_prose", "moe_mix", "student", "student_plain"}) {
    SCOPED_TRACE(stage);
    expect_same_losses(dir + "/run1/" + stage, dir + "/run2/" + stage, 0.0);
    expect_same_weights(dir + "/run1/" + stage, dir + "/run2/" + stage, 0.0);
  }
}

TEST_F(DataParallel, WrongLaunchIsRefusedBeforeAnyWork) {
  const std::string out = work_dir() + "/refused";
  EXPECT_NE(train(2, "--config " + recipe(", \"grad_accum\": 1", 3), out), 0);
  expect_one_error(out + ".err", "the 2 ranks divide neither train.grad_accum (1) nor train.batch_size (3)");
  EXPECT_FALSE(fs::exists(out));
  EXPECT_NE(train(2, "--config " + recipe(", \"grad_accum\": 2}, \"model_extra\": {"), out), 0);  // a bad recipe: one error line first
  expect_one_error(out + ".err", "model_extra");
  const std::string eval = mpirun(2) + SMELT_BINARY + " eval --model " + out + " --data " + text_data() + " 2>" + out + ".eval.err";
  EXPECT_NE(shell(eval), 0);
  expect_one_error(out + ".eval.err", "smelt eval runs as one process");
}

// SIGKILL one rank mid-run: the job ends within seconds (no rank left waiting in a collective),
// with a non-zero exit, and the last checkpoint written is whole.
TEST_F(DataParallel, KilledRankEndsTheJob) {
  const std::string out = work_dir() + "/killed";
  const std::string run = mpirun(2) + SMELT_BINARY + " train --threads 1 --data " + text_data() + " --out " + out + " --config " +
                          recipe(", \"grad_accum\": 2") + " --steps 100000 --save-every 20 >/dev/null 2>" + out + ".err";
  // The script waits for a checkpoint, kills the newest rank process, and reports mpirun's exit
  // code and how many milliseconds the job took to end after the kill.
  const std::string script = "(" + run + ") & job=$!; for i in $(seq 600); do [ -d " + out + ".checkpoints ] && break; sleep 0.1; done; sleep 0.5; "
                             "victim=$(pgrep -n -f \"^" + SMELT_BINARY + " train --threads 1 --data .* --out " + out + " \"); kill -9 $victim; "
                             "t0=$(date +%s%N); wait $job; rc=$?; t1=$(date +%s%N); echo $rc $(( (t1 - t0) / 1000000 )) > " + out + ".result";
  ASSERT_EQ(shell("bash -c '" + script + "'"), 0);
  std::ifstream result(out + ".result");
  int rc = 0;
  int64_t milliseconds = -1;
  result >> rc >> milliseconds;
  EXPECT_NE(rc, 0);
  EXPECT_GE(milliseconds, 0);
  EXPECT_LT(milliseconds, 20000) << "the job took " << milliseconds << " ms to end after a rank was killed";
  EXPECT_FALSE(fs::exists(out));
  std::vector<std::string> checkpoints;
  for (const auto& e : fs::directory_iterator(out + ".checkpoints"))
    if (e.path().filename().string().rfind("step-", 0) == 0 && e.path().filename().string().find('.') == std::string::npos)
      checkpoints.push_back(e.path().string());
  ASSERT_FALSE(checkpoints.empty());
  std::sort(checkpoints.begin(), checkpoints.end());
  const TrainerState st = read_trainer_state(checkpoints.back());
  EXPECT_GT(st.step, 0);
  EXPECT_NO_THROW(read_safetensors(checkpoints.back() + "/model.safetensors"));
  EXPECT_NO_THROW(read_safetensors(checkpoints.back() + "/optimizer.safetensors"));
}

}  // namespace
}  // namespace smelt
