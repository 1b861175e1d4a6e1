// The smelt command: one binary, one file per subcommand. Library errors arrive as smelt::Error
// and leave as one line on stderr with a non-zero exit code.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "tools/commands.h"
#include "runtime/communicator.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/thread_pool.h"

namespace smelt::tools {

void add_threads_option(CLI::App& cmd, int& threads) {
  cmd.add_option("--threads", threads, "Worker threads (0 = SMELT_NUM_THREADS or all cores)")->check(CLI::Range(0, 4096));
}

void apply_threads(int threads) {
  if (threads > 0) set_num_threads(threads);
}

void refuse_unused(const CLI::App& cmd, const std::string& option, bool used, const std::string& why) {
  SMELT_CHECK(used || cmd.count(option) == 0, option, " has no effect ", why, "; leave it out");
}

namespace {

// Under mpirun with several ranks: only the training commands run (one rank of a job writing
// another rank's files is never right), rank 0 alone speaks (stdout, logs, progress).
void join_job(int* argc, char*** argv) {
  init_distributed(argc, argv);
  if (!is_distributed()) return;
  const std::string command = *argc > 1 ? (*argv)[1] : "";
  SMELT_CHECK(command == "train" || command == "sft" || command == "distill" || command == "pipeline" || command.empty() || command[0] == '-',
              "smelt ", command, " runs as one process: launch it without mpirun (train, sft, distill and pipeline run on several ranks)");
  if (world().rank() != 0) {
    set_quiet(true);
    if (!std::freopen("/dev/null", "w", stdout)) SMELT_FAIL("rank ", world().rank(), ": cannot silence stdout");
  }
}

// One line for an error, then the exit. In a job of several ranks the error ends every rank (no
// rank is left waiting in a collective). An error every rank meets alike (a bad recipe) is
// printed once: the other ranks wait a moment, and rank 0's abort ends them before they print;
// an error of one rank alone is printed by that rank, naming it.
int fail(const std::string& message) {
  if (!is_distributed()) {
    std::fprintf(stderr, "smelt: error: %s\n", message.c_str());
    return 1;
  }
  if (world().rank() != 0) sleep(2);
  const std::string rank = "rank " + std::to_string(world().rank()) + ": ";
  std::fprintf(stderr, "smelt: error: %s%s\n", message.rfind("rank ", 0) == 0 ? "" : rank.c_str(), message.c_str());
  abort_distributed(1);
}

}  // namespace

}  // namespace smelt::tools

int main(int argc, char** argv) {
  using smelt::tools::fail;
  try {
    smelt::tools::join_job(&argc, &argv);
  } catch (const smelt::Error& e) {
    return fail(e.message());
  }
  CLI::App app{"smelt: a from-scratch framework for Mixture-of-Experts language models"};
  app.set_version_flag("--version", "smelt 0.1.0");
  app.require_subcommand(1);
  smelt::tools::add_pipeline_command(app);
  smelt::tools::add_train_command(app);
  smelt::tools::add_sft_command(app);
  smelt::tools::add_distill_command(app);
  smelt::tools::add_eval_command(app);
  smelt::tools::add_generate_command(app);
  smelt::tools::add_upcycle_command(app);
  smelt::tools::add_compose_command(app);
  smelt::tools::add_moefy_command(app);
  smelt::tools::add_bench_command(app);
  smelt::tools::add_inspect_command(app);
  smelt::tools::add_tokenizer_command(app);
  smelt::tools::add_data_command(app);
  smelt::tools::add_import_command(app);
  smelt::tools::add_export_command(app);
  smelt::tools::add_report_command(app);
  smelt::tools::add_plan_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {  // --help, --version
      const int code = app.exit(e);
      smelt::finalize_distributed();
      return code;
    }
    // One line, like every other error (CLI11's own form adds a second line).
    if (smelt::is_distributed()) return fail(std::string(e.what()) + " (see --help)");
    std::fprintf(stderr, "smelt: error: %s (see --help)\n", e.what());
    return e.get_exit_code();
  } catch (const smelt::Error& e) {
    return fail(e.message());
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  smelt::finalize_distributed();
  return 0;
}
