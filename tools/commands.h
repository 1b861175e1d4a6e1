// One function per subcommand; each adds itself to the app with its options and callback.
#pragma once
#include <CLI/CLI.hpp>

#include <string>

namespace smelt::tools {

void add_train_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_upcycle_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
void add_tokenizer_command(CLI::App& app);
void add_data_command(CLI::App& app);
void add_export_command(CLI::App& app);
void add_report_command(CLI::App& app);
void add_distill_command(CLI::App& app);
void add_compose_command(CLI::App& app);
void add_moefy_command(CLI::App& app);
void add_sft_command(CLI::App& app);
void add_pipeline_command(CLI::App& app);
void add_import_command(CLI::App& app);
void add_plan_command(CLI::App& app);

// --threads N shared by the compute subcommands (0 = all cores).
void add_threads_option(CLI::App& cmd, int& threads);
void apply_threads(int threads);

// Refuses `option` when it was given on the command line but this run would not use it (a value
// silently ignored is a mistake the user cannot see): "OPTION has no effect WHY; leave it out".
void refuse_unused(const CLI::App& cmd, const std::string& option, bool used, const std::string& why);

}  // namespace smelt::tools
