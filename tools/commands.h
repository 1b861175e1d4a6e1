// One function per subcommand; each adds itself to the app with its options and callback.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "runtime/dtype.h"

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

// --threads N shared by the compute subcommands (0 = all cores).
void add_threads_option(CLI::App& cmd, int& threads);
void apply_threads(int threads);
// --weights f32|bf16 shared by the inference subcommands (eval, generate, bench decode): how the
// model's weight matrices are kept in memory (Transformer::store_weights_in).
void add_weights_option(CLI::App& cmd, std::string& weights);
DType weights_dtype(const std::string& weights);

}  // namespace smelt::tools
