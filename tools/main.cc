// The smelt command: one binary, one file per subcommand. Library errors arrive as smelt::Error
// and leave as one line on stderr with a non-zero exit code.
#include <cstdio>

#include "tools/commands.h"
#include "runtime/error.h"
#include "runtime/thread_pool.h"

namespace smelt::tools {

void add_threads_option(CLI::App& cmd, int& threads) {
  cmd.add_option("--threads", threads, "Worker threads (0 = SMELT_NUM_THREADS or all cores)")->check(CLI::NonNegativeNumber);
}

void apply_threads(int threads) {
  if (threads > 0) set_num_threads(threads);
}

}  // namespace smelt::tools

int main(int argc, char** argv) {
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
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    // One line, like every other error (CLI11's own form adds a second line).
    std::fprintf(stderr, "smelt: error: %s (see --help)\n", e.what());
    return e.get_exit_code();
  } catch (const smelt::Error& e) {
    std::fprintf(stderr, "smelt: error: %s\n", e.message().c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "smelt: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
