// The textfile collector: *.prom files in one directory, in the Prometheus text format 0.0.4,
// parsed strictly. A file with any error is skipped whole and node_textfile_scrape_error is 1.
#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include "agent/log/log.hpp"
#include "modules/exporter/collector.hpp"

namespace neco::exporter {
namespace {

using metrics::MetricFamily;
using metrics::MetricType;
using metrics::Suffix;

const log::Logger& logger() {
  static const log::Logger l("exporter");
  return l;
}

bool name_start(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':';
}
bool name_char(char c) {
  return name_start(c) || std::isdigit(static_cast<unsigned char>(c));
}

bool parse_value(std::string_view s, double& out) {
  if (s == "+Inf" || s == "Inf") {
    out = std::numeric_limits<double>::infinity();
    return true;
  }
  if (s == "-Inf") {
    out = -std::numeric_limits<double>::infinity();
    return true;
  }
  if (s == "NaN") {
    out = std::numeric_limits<double>::quiet_NaN();
    return true;
  }
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  const auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return !s.empty() && r.ec == std::errc() && r.ptr == s.data() + s.size();
}

struct ParsedFamily {
  MetricFamily family;
  bool typed = false;
  bool has_help = false;
  bool has_samples = false;
  bool summary = false;
};

// Parses one file into families; the error says which line is wrong.
class TextParser {
 public:
  Expected<std::vector<MetricFamily>> parse(std::string_view text) {
    int line_no = 0;
    while (!text.empty()) {
      const auto nl = text.find('\n');
      std::string_view line = text.substr(0, nl);
      text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
      ++line_no;
      if (auto ok = parse_line(line); !ok) {
        return fail(Errc::invalid_argument,
                    "line " + std::to_string(line_no) + ": " + ok.error().message);
      }
    }
    std::vector<MetricFamily> out;
    for (auto& name : order_) {
      auto& p = families_[name];
      if (!p.has_samples) continue;
      out.push_back(std::move(p.family));
    }
    return out;
  }

 private:
  Expected<void> parse_line(std::string_view line) {
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t'))
      line.remove_prefix(1);
    if (line.empty()) return {};
    if (line.front() == '#') return parse_comment(line.substr(1));
    return parse_sample(line);
  }

  static std::string_view next_token(std::string_view& s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
      s.remove_prefix(1);
    std::size_t n = 0;
    while (n < s.size() && s[n] != ' ' && s[n] != '\t')
      ++n;
    auto t = s.substr(0, n);
    s.remove_prefix(n);
    return t;
  }

  static bool valid_name(std::string_view n) {
    return !n.empty() && name_start(n.front()) && std::all_of(n.begin(), n.end(), name_char);
  }

  ParsedFamily& family(const std::string& name) {
    auto [it, inserted] = families_.try_emplace(name);
    if (inserted) {
      it->second.family.name = name;
      order_.push_back(name);
    }
    return it->second;
  }

  Expected<void> parse_comment(std::string_view rest) {
    const auto keyword = next_token(rest);
    if (keyword != "HELP" && keyword != "TYPE") return {};  // a plain comment
    const std::string name(next_token(rest));
    if (!valid_name(name)) return fail(Errc::invalid_argument, "invalid metric name");
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t'))
      rest.remove_prefix(1);
    auto& p = family(name);
    if (keyword == "HELP") {
      if (p.has_help) return fail(Errc::invalid_argument, "second HELP line for " + name);
      p.has_help = true;
      std::string help;
      for (std::size_t i = 0; i < rest.size(); ++i) {
        if (rest[i] == '\\' && i + 1 < rest.size() && (rest[i + 1] == '\\' || rest[i + 1] == 'n')) {
          help += rest[i + 1] == 'n' ? '\n' : '\\';
          ++i;
        } else {
          help += rest[i];
        }
      }
      p.family.help = std::move(help);
      return {};
    }
    if (p.typed) return fail(Errc::invalid_argument, "second TYPE line for " + name);
    if (p.has_samples)
      return fail(Errc::invalid_argument, "TYPE line for " + name + " after samples");
    const auto type = next_token(rest);
    if (!next_token(rest).empty()) return fail(Errc::invalid_argument, "trailing text after TYPE");
    p.typed = true;
    if (type == "counter") {
      p.family.type = MetricType::counter;
    } else if (type == "gauge") {
      p.family.type = MetricType::gauge;
    } else if (type == "histogram") {
      p.family.type = MetricType::histogram;
    } else if (type == "untyped") {
      p.family.type = MetricType::untyped;
    } else if (type == "summary") {
      // The core model has no summary type: its series are exported as untyped families.
      p.summary = true;
    } else {
      return fail(Errc::invalid_argument, "unknown type \"" + std::string(type) + "\"");
    }
    return {};
  }

  Expected<void> parse_labels(std::string_view& s,
                              std::vector<std::pair<std::string, std::string>>& out) {
    s.remove_prefix(1);  // '{'
    std::set<std::string> names;
    for (;;) {
      while (!s.empty() && s.front() == ' ')
        s.remove_prefix(1);
      if (s.empty()) return fail(Errc::invalid_argument, "unterminated label set");
      if (s.front() == '}') {
        s.remove_prefix(1);
        return {};
      }
      std::size_t n = 0;
      while (n < s.size() && name_char(s[n]) && s[n] != ':')
        ++n;
      std::string name(s.substr(0, n));
      if (name.empty() || std::isdigit(static_cast<unsigned char>(name.front())) ||
          !metrics::valid_label_name(name)) {
        return fail(Errc::invalid_argument, "invalid label name");
      }
      if (!names.insert(name).second)
        return fail(Errc::invalid_argument, "duplicate label " + name);
      s.remove_prefix(n);
      while (!s.empty() && s.front() == ' ')
        s.remove_prefix(1);
      if (s.size() < 2 || s[0] != '=' || s[1] != '"')
        return fail(Errc::invalid_argument, "expected =\"");
      s.remove_prefix(2);
      std::string value;
      bool closed = false;
      while (!s.empty()) {
        const char c = s.front();
        s.remove_prefix(1);
        if (c == '"') {
          closed = true;
          break;
        }
        if (c == '\\') {
          if (s.empty()) break;
          const char e = s.front();
          s.remove_prefix(1);
          if (e == 'n')
            value += '\n';
          else if (e == '\\' || e == '"')
            value += e;
          else
            return fail(Errc::invalid_argument, "invalid escape in label value");
        } else {
          value += c;
        }
      }
      if (!closed) return fail(Errc::invalid_argument, "unterminated label value");
      out.emplace_back(std::move(name), std::move(value));
      while (!s.empty() && s.front() == ' ')
        s.remove_prefix(1);
      if (!s.empty() && s.front() == ',')
        s.remove_prefix(1);
      else if (s.empty() || s.front() != '}')
        return fail(Errc::invalid_argument, "expected , or }");
    }
  }

  Expected<void> parse_sample(std::string_view s) {
    std::size_t n = 0;
    while (n < s.size() && name_char(s[n]))
      ++n;
    const std::string name(s.substr(0, n));
    if (!valid_name(name)) return fail(Errc::invalid_argument, "invalid metric name");
    s.remove_prefix(n);
    std::vector<std::pair<std::string, std::string>> labels;
    while (!s.empty() && s.front() == ' ')
      s.remove_prefix(1);
    if (!s.empty() && s.front() == '{') {
      if (auto ok = parse_labels(s, labels); !ok) return ok;
    }
    const auto value_text = next_token(s);
    double value = 0;
    if (!parse_value(value_text, value)) return fail(Errc::invalid_argument, "invalid value");
    if (!next_token(s).empty()) {
      return fail(Errc::invalid_argument, "client-side timestamps are not supported");
    }

    // Which family: a histogram's _bucket/_sum/_count belong to the histogram.
    std::string family_name = name;
    Suffix suffix = Suffix::none;
    for (const auto& [tail, sfx] : {std::pair{std::string_view("_bucket"), Suffix::bucket},
                                    std::pair{std::string_view("_sum"), Suffix::sum},
                                    std::pair{std::string_view("_count"), Suffix::count}}) {
      if (!name.ends_with(tail)) continue;
      const std::string base = name.substr(0, name.size() - tail.size());
      auto it = families_.find(base);
      if (it != families_.end() && it->second.typed &&
          it->second.family.type == MetricType::histogram) {
        family_name = base;
        suffix = sfx;
      }
    }
    auto& p = family(family_name);
    if (p.family.type == MetricType::histogram) {
      if (suffix == Suffix::none) return fail(Errc::invalid_argument, "bare histogram sample");
      const bool has_le =
          std::any_of(labels.begin(), labels.end(), [](const auto& l) { return l.first == "le"; });
      if ((suffix == Suffix::bucket) != has_le) {
        return fail(Errc::invalid_argument, "histogram bucket without le (or le elsewhere)");
      }
    }
    if (p.has_samples && last_family_ != family_name) {
      return fail(Errc::invalid_argument, "samples of " + family_name + " are not contiguous");
    }
    p.has_samples = true;
    last_family_ = family_name;
    std::vector<metrics::LabelView> views;
    views.reserve(labels.size());
    for (const auto& [k, v] : labels)
      views.emplace_back(k, v);
    p.family.add(suffix, value, views);
    return {};
  }

  std::map<std::string, ParsedFamily> families_;
  std::vector<std::string> order_;
  std::string last_family_;
};

class TextfileCollector final : public Collector {
 public:
  explicit TextfileCollector(const CollectorOptions& options)
      : directory_(options.textfile_directory) {}
  std::string_view name() const override { return "textfile"; }

  Expected<void> collect(const Paths&, std::vector<MetricFamily>& out) override {
    if (directory_.empty()) return {};
    bool error = false;
    MetricFamily mtimes{.name = "node_textfile_mtime_seconds",
                        .help = "Unixtime mtime of textfiles successfully read.",
                        .type = MetricType::gauge,
                        .unit = "seconds"};
    std::vector<std::filesystem::path> files;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(directory_, ec)) {
      if (entry.path().extension() == ".prom") files.push_back(entry.path());
    }
    if (ec) {
      logger().warning("Failed to read textfile directory \"{}\": {}", directory_.string(),
                       ec.message());
      error = true;
    }
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
      struct stat st {};
      auto text = read_text_file(file);
      if (!text || ::stat(file.c_str(), &st) != 0) {
        logger().warning("Failed to read textfile \"{}\"", file.string());
        error = true;
        continue;
      }
      TextParser parser;
      auto families = parser.parse(*text);
      if (!families) {
        logger().warning("Failed to parse textfile \"{}\": {}", file.string(),
                         families.error().message);
        error = true;
        continue;
      }
      for (auto& f : *families) {
        if (f.help.empty()) f.help = "Metric read from " + file.string();
        out.push_back(std::move(f));
      }
      mtimes.add(
          static_cast<double>(st.st_mtim.tv_sec) + static_cast<double>(st.st_mtim.tv_nsec) / 1e9,
          {{"file", file.string()}});
    }
    if (!mtimes.samples.empty()) out.push_back(std::move(mtimes));
    MetricFamily scrape_error{
        .name = "node_textfile_scrape_error",
        .help = "1 if there was an error opening or reading a file, 0 otherwise",
        .type = MetricType::gauge};
    scrape_error.add(error ? 1 : 0);
    out.push_back(std::move(scrape_error));
    return {};
  }

 private:
  std::filesystem::path directory_;
};

}  // namespace

std::unique_ptr<Collector> make_textfile_collector(const CollectorOptions& options) {
  return std::make_unique<TextfileCollector>(options);
}

}  // namespace neco::exporter
