// Minimal SVG charts for run reports: line charts (loss, lr, throughput over steps) and heatmaps
// (expert load per layer over time). Plain SVG 1.1 text, no scripts or external fonts, so a
// report opens in any browser of an air-gapped machine.
#pragma once
#include <string>
#include <vector>

namespace smelt {

struct PlotSeries {
  std::string name;
  std::vector<double> x, y;
};

// Lines over a shared x axis with ticks, axis labels and a legend. Non-finite points are skipped.
std::string svg_line_chart(const std::vector<PlotSeries>& series, const std::string& title, const std::string& x_label,
                           const std::string& y_label, bool log_y = false);

// values[row][col] in [0, max] as colour cells; row_labels name the rows (e.g. experts), columns
// are labelled by col_labels (e.g. steps), thinned to fit.
std::string svg_heatmap(const std::vector<std::vector<double>>& values, const std::vector<std::string>& row_labels,
                        const std::vector<std::string>& col_labels, const std::string& title, const std::string& x_label);

}  // namespace smelt
