#include "io/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace smelt {
namespace {

constexpr double kWidth = 640, kHeight = 360, kLeft = 70, kRight = 150, kTop = 36, kBottom = 48;
const char* const kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else if (c == '"') out += "&quot;";
    else out += c;
  }
  return out;
}

std::string num(double v) {
  char b[32];
  const double a = std::fabs(v);
  if (a != 0 && (a < 1e-3 || a >= 1e5)) std::snprintf(b, sizeof b, "%.2g", v);
  else std::snprintf(b, sizeof b, "%.4g", v);
  return b;
}

std::string header(double w, double h, const std::string& title) {
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << w << "\" height=\"" << h << "\" viewBox=\"0 0 " << w << " " << h
    << "\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"" << w / 2
    << "\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">" << escape(title) << "</text>\n";
  return s.str();
}

}  // namespace

std::string svg_line_chart(const std::vector<PlotSeries>& series, const std::string& title, const std::string& x_label,
                           const std::string& y_label, bool log_y) {
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  auto ty = [&](double y) { return log_y ? std::log10(y) : y; };
  for (const PlotSeries& s : series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i]) || (log_y && s.y[i] <= 0)) continue;
      x0 = std::min(x0, s.x[i]);
      x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, ty(s.y[i]));
      y1 = std::max(y1, ty(s.y[i]));
    }
  std::ostringstream o;
  o << header(kWidth, kHeight, title);
  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  if (!(x0 <= x1)) {
    o << "<text x=\"" << kWidth / 2 << "\" y=\"" << kHeight / 2 << "\" text-anchor=\"middle\">no data</text>\n</svg>\n";
    return o.str();
  }
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + (y0 == 0 ? 1 : std::fabs(y0) * 0.1);
  const double pad = (y1 - y0) * 0.05;
  y0 -= pad;
  y1 += pad;
  auto px = [&](double x) { return kLeft + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return kTop + (1.0 - (ty(y) - y0) / (y1 - y0)) * ph; };
  o << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << pw << "\" height=\"" << ph << "\" fill=\"none\" stroke=\"#888\"/>\n";
  for (int t = 0; t <= 4; ++t) {  // ticks: 5 on each axis
    const double fx = x0 + (x1 - x0) * t / 4, fy = y0 + (y1 - y0) * t / 4;
    const double X = kLeft + pw * t / 4, Y = kTop + ph * (1.0 - t / 4.0);
    o << "<line x1=\"" << X << "\" y1=\"" << kTop << "\" x2=\"" << X << "\" y2=\"" << kTop + ph << "\" stroke=\"#eee\"/>\n";
    o << "<text x=\"" << X << "\" y=\"" << kTop + ph + 14 << "\" text-anchor=\"middle\">" << num(fx) << "</text>\n";
    o << "<line x1=\"" << kLeft << "\" y1=\"" << Y << "\" x2=\"" << kLeft + pw << "\" y2=\"" << Y << "\" stroke=\"#eee\"/>\n";
    o << "<text x=\"" << kLeft - 4 << "\" y=\"" << Y + 4 << "\" text-anchor=\"end\">" << num(log_y ? std::pow(10.0, fy) : fy) << "</text>\n";
  }
  o << "<text x=\"" << kLeft + pw / 2 << "\" y=\"" << kHeight - 10 << "\" text-anchor=\"middle\">" << escape(x_label) << "</text>\n";
  o << "<text transform=\"translate(14," << kTop + ph / 2 << ") rotate(-90)\" text-anchor=\"middle\">" << escape(y_label)
    << (log_y ? " (log)" : "") << "</text>\n";
  for (size_t k = 0; k < series.size(); ++k) {
    const PlotSeries& s = series[k];
    const char* colour = kColours[k % std::size(kColours)];
    std::ostringstream pts;
    int count = 0;
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i]) || (log_y && s.y[i] <= 0)) continue;
      pts << (count++ ? " " : "") << px(s.x[i]) << "," << py(s.y[i]);
    }
    if (count == 1) o << "<circle cx=\"" << pts.str().substr(0, pts.str().find(',')) << "\" cy=\"" << pts.str().substr(pts.str().find(',') + 1)
                      << "\" r=\"3\" fill=\"" << colour << "\"/>\n";
    else o << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"1.5\" points=\"" << pts.str() << "\"/>\n";
    const double ly = kTop + 12 + 16.0 * static_cast<double>(k);
    o << "<line x1=\"" << kLeft + pw + 10 << "\" y1=\"" << ly - 4 << "\" x2=\"" << kLeft + pw + 28 << "\" y2=\"" << ly - 4 << "\" stroke=\""
      << colour << "\" stroke-width=\"2\"/>\n<text x=\"" << kLeft + pw + 32 << "\" y=\"" << ly << "\">" << escape(s.name) << "</text>\n";
  }
  o << "</svg>\n";
  return o.str();
}

std::string svg_heatmap(const std::vector<std::vector<double>>& values, const std::vector<std::string>& row_labels,
                        const std::vector<std::string>& col_labels, const std::string& title, const std::string& x_label) {
  const size_t rows = values.size(), cols = rows ? values[0].size() : 0;
  double vmax = 0;
  for (const auto& r : values)
    for (double v : r)
      if (std::isfinite(v)) vmax = std::max(vmax, v);
  if (vmax <= 0) vmax = 1;
  const double left = 80, top = kTop, cell_h = std::clamp(200.0 / std::max<size_t>(rows, 1), 6.0, 24.0);
  const double plot_w = 480, cell_w = cols ? plot_w / static_cast<double>(cols) : plot_w;
  const double height = top + cell_h * static_cast<double>(rows) + 60, width = left + plot_w + 90;
  std::ostringstream o;
  o << header(width, height, title);
  for (size_t r = 0; r < rows; ++r) {
    o << "<text x=\"" << left - 4 << "\" y=\"" << top + cell_h * (r + 0.5) + 4 << "\" text-anchor=\"end\">"
      << escape(r < row_labels.size() ? row_labels[r] : "") << "</text>\n";
    for (size_t c = 0; c < cols; ++c) {
      const double v = std::isfinite(values[r][c]) ? values[r][c] / vmax : 0;
      // White (0) to dark blue (max).
      const int red = static_cast<int>(255 * (1 - v * 0.9)), green = static_cast<int>(255 * (1 - v * 0.7));
      o << "<rect x=\"" << left + cell_w * c << "\" y=\"" << top + cell_h * r << "\" width=\"" << cell_w + 0.3 << "\" height=\"" << cell_h
        << "\" fill=\"rgb(" << red << "," << green << ",255)\"><title>" << escape(r < row_labels.size() ? row_labels[r] : "") << ", "
        << escape(c < col_labels.size() ? col_labels[c] : "") << ": " << num(values[r][c]) << "</title></rect>\n";
    }
  }
  const size_t every = std::max<size_t>(1, cols / 6);
  for (size_t c = 0; c < cols && c < col_labels.size(); c += every)
    o << "<text x=\"" << left + cell_w * (c + 0.5) << "\" y=\"" << top + cell_h * rows + 14 << "\" text-anchor=\"middle\">"
      << escape(col_labels[c]) << "</text>\n";
  o << "<text x=\"" << left + plot_w / 2 << "\" y=\"" << height - 12 << "\" text-anchor=\"middle\">" << escape(x_label) << "</text>\n";
  o << "<text x=\"" << left + plot_w + 10 << "\" y=\"" << top + 10 << "\">max " << num(vmax) << "</text>\n</svg>\n";
  return o.str();
}

}  // namespace smelt
