// TOML syntax, the same model as hast.conf:
//
//   listen = ["tcp://0.0.0.0"]          # global statements
//   [on.<node>]                          # global node section
//   [resource.<name>]                    # resource statements
//   [resource.<name>.on.<node>]          # resource node section
//
// Values are rendered to the text the hast.conf syntax would carry (integers
// in decimal, booleans as on/off) so config.cpp validates both alike. toml11
// keeps tables in unordered maps; entries are put back in file order by line.

#include "config/raw_config.hpp"

#include <toml.hpp>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace hast::detail {
namespace {

using entry = std::pair<const std::string*, const toml::value*>;

int line_of(const toml::value& v) {
  return static_cast<int>(v.location().line());
}

// A table's entries in file order.
std::vector<entry> in_file_order(const toml::table& table) {
  std::vector<entry> entries;
  entries.reserve(table.size());
  for (const auto& [key, value] : table)
    entries.emplace_back(&key, &value);
  std::sort(entries.begin(), entries.end(), [](const entry& a, const entry& b) {
    const int la = line_of(*a.second);
    const int lb = line_of(*b.second);
    return la != lb ? la < lb : *a.first < *b.first;
  });
  return entries;
}

// toml11's syntax errors carry a multi-line report: a headline, then one or
// more excerpts (" 12 | text") each underlined with a hint. The last excerpt
// is the offending one; an earlier one is context ("already exists here").
struct toml_report {
  std::string message;
  int line = 0;
};

toml_report summarize(const std::string& report) {
  std::istringstream in{report};
  std::string text;
  std::string headline;
  std::vector<std::pair<int, std::string>> excerpts;  // line, hint
  while (std::getline(in, text)) {
    if (headline.empty()) {
      headline = text;
      continue;
    }
    std::size_t i = text.find_first_not_of(' ');
    if (i == std::string::npos)
      continue;
    const auto bar = text.find('|', i);
    if (bar == std::string::npos)
      continue;
    if (std::isdigit(static_cast<unsigned char>(text[i]))) {
      excerpts.emplace_back(std::atoi(text.c_str() + i), "");
    } else if (bar == i && !excerpts.empty() && excerpts.back().second.empty()) {
      auto hint = text.substr(bar + 1);
      hint.erase(0, hint.find_first_not_of("^-~ "));
      if (hint != "here")
        excerpts.back().second = hint;
    }
  }
  if (headline.rfind("[error] ", 0) == 0)
    headline.erase(0, 8);
  if (headline.rfind("toml::", 0) == 0) {
    const auto colon = headline.find(": ");
    if (colon != std::string::npos)
      headline.erase(0, colon + 2);
  }
  while (!headline.empty() && (headline.back() == '.' || headline.back() == ' '))
    headline.pop_back();
  if (headline.empty())
    headline = "TOML syntax error";
  toml_report out{headline, 0};
  if (!excerpts.empty()) {
    out.line = excerpts.back().first;
    if (!excerpts.back().second.empty())
      out.message += ": " + excerpts.back().second;
    if (excerpts.size() > 1 && excerpts.front().first != out.line)
      out.message += " (see line " + std::to_string(excerpts.front().first) + ")";
  }
  return out;
}

class toml_reader {
public:
  explicit toml_reader(const std::string& path) : path_(path) {}

  raw_config read(const toml::value& root) {
    raw_config raw;
    raw.path = path_;
    for (const auto& [key, value] : in_file_order(root.as_table())) {
      if (*key == "on") {
        for (const auto& [node, body] : sections(*key, *value, "node"))
          raw.nodes.push_back(node_section(*node, *body));
      } else if (*key == "resource") {
        for (const auto& [name, body] : sections(*key, *value, "resource"))
          raw.resources.push_back(resource(*name, *body));
      } else {
        statement(*key, *value, raw.statements);
      }
    }
    return raw;
  }

private:
  [[noreturn]] void fail(const toml::value& where, std::string option, std::string message) const {
    throw config_error({path_, line_of(where)}, std::move(option), std::move(message));
  }

  // `on` and `resource` must be tables of tables: `[on.<node>]`.
  std::vector<entry> sections(const std::string& key, const toml::value& value, const char* what) {
    if (!value.is_table())
      fail(value, key, "expected a table of sections, e.g. [" + key + ".<" + what + ">]");
    auto entries = in_file_order(value.as_table());
    for (const auto& [name, body] : entries)
      if (!body->is_table())
        fail(*body, key, "expected a table [" + key + "." + *name + "], not a value");
    return entries;
  }

  raw_node_section node_section(const std::string& node, const toml::value& body) {
    raw_node_section section;
    section.node = node;
    section.where = {path_, line_of(body)};
    for (const auto& [key, value] : in_file_order(body.as_table())) {
      if (*key == "on" || *key == "resource")
        fail(*value, *key, "a section cannot be inside an 'on.<node>' table");
      statement(*key, *value, section.statements);
    }
    return section;
  }

  raw_resource resource(const std::string& name, const toml::value& body) {
    raw_resource res;
    res.name = name;
    res.where = {path_, line_of(body)};
    for (const auto& [key, value] : in_file_order(body.as_table())) {
      if (*key == "on") {
        for (const auto& [node, section] : sections(*key, *value, "node"))
          res.nodes.push_back(node_section(*node, *section));
      } else if (*key == "resource") {
        fail(*value, *key, "a resource section cannot be inside another section");
      } else {
        statement(*key, *value, res.statements);
      }
    }
    return res;
  }

  void statement(const std::string& key, const toml::value& value, std::vector<raw_statement>& out) {
    if (!is_known_option(key))
      fail(value, key, unknown_option_message(key));
    if (value.is_array()) {
      // Only `listen` may repeat; one statement per element, as repeated lines.
      if (key != "listen")
        fail(value, key, "expected a single value, not an array");
      for (const auto& element : value.as_array())
        out.push_back({key, scalar(key, element), {path_, line_of(element)}});
      return;
    }
    out.push_back({key, scalar(key, value), {path_, line_of(value)}});
  }

  std::string scalar(const std::string& key, const toml::value& value) const {
    if (value.is_string())
      return value.as_string().str;
    if (value.is_integer())
      return std::to_string(value.as_integer());
    if (value.is_boolean())
      return value.as_boolean() ? "on" : "off";
    if (value.is_floating()) {
      std::ostringstream text;
      text << value.as_floating();
      return text.str();
    }
    fail(value, key, "expected a string, a number or a boolean");
  }

  std::string path_;
};

// toml11 parses arrays and inline tables recursively, so a few kilobytes
// of '[' overflow the stack: SIGSEGV instead of a config_error. hast's own
// values nest two deep at most, so anything deeper than this is refused
// before toml11 sees it.
constexpr int max_nesting = 32;

// Counts the nesting of '[' and '{' outside strings and comments, closely
// enough that no text toml11 would nest deeper than max_nesting passes.
void check_nesting(const std::string& text, const std::string& path) {
  int depth = 0;
  int line = 1;
  std::size_t i = 0;
  const std::size_t n = text.size();
  while (i < n) {
    const char c = text[i];
    if (c == '\n') {
      ++line;
      ++i;
    } else if (c == '#') {
      while (i < n && text[i] != '\n')
        ++i;
    } else if (c == '"' || c == '\'') {
      // A string: basic ("...", escapes) or literal ('...'), each also
      // multi-line (three quotes, which may be followed by up to two
      // quotes that belong to the content).
      const bool multi = i + 2 < n && text[i + 1] == c && text[i + 2] == c;
      i += multi ? 3 : 1;
      while (i < n) {
        if (text[i] == '\n') {
          if (!multi)
            break; // unterminated: toml11 reports it
          ++line;
        } else if (c == '"' && text[i] == '\\') {
          ++i;
          if (i < n && text[i] == '\n')
            ++line;
        } else if (text[i] == c) {
          std::size_t run = 0;
          while (i + run < n && text[i + run] == c)
            ++run;
          if (!multi) {
            ++i;
            break;
          }
          if (run >= 3) {
            i += run;
            break;
          }
          i += run;
          continue;
        }
        ++i;
      }
    } else {
      if (c == '[' || c == '{') {
        if (++depth > max_nesting)
          throw config_error({path, line}, "",
                             "arrays or inline tables nested more than " +
                                 std::to_string(max_nesting) + " deep");
      } else if ((c == ']' || c == '}') && depth > 0) {
        --depth;
      }
      ++i;
    }
  }
}

// The length of the well-formed UTF-8 sequence at text[i] (Unicode's table
// of well-formed byte sequences: no overlong forms, no surrogates, nothing
// past U+10FFFF), or 0.
std::size_t utf8_sequence(const std::string& text, std::size_t i) {
  const auto at = [&](std::size_t k) -> unsigned {
    return i + k < text.size() ? static_cast<unsigned char>(text[i + k]) : 0x100;
  };
  const auto tail = [&](std::size_t k) { return at(k) >= 0x80 && at(k) <= 0xBF; };
  const unsigned b = at(0);
  if (b <= 0x7F)
    return 1;
  if (b >= 0xC2 && b <= 0xDF)
    return tail(1) ? 2 : 0;
  if (b >= 0xE0 && b <= 0xEF) {
    const unsigned lo = b == 0xE0 ? 0xA0 : 0x80;
    const unsigned hi = b == 0xED ? 0x9F : 0xBF;
    return at(1) >= lo && at(1) <= hi && tail(2) ? 3 : 0;
  }
  if (b >= 0xF0 && b <= 0xF4) {
    const unsigned lo = b == 0xF0 ? 0x90 : 0x80;
    const unsigned hi = b == 0xF4 ? 0x8F : 0xBF;
    return at(1) >= lo && at(1) <= hi && tail(2) && tail(3) ? 4 : 0;
  }
  return 0;
}

// TOML must be UTF-8, and toml11 3.7's report of a bad sequence inside a
// string reads past its buffer (it rewinds a copy of the string with an
// iterator into the file): a malformed file is refused here, by the same
// rules toml11 checks, so that toml11 never takes that path.
void check_utf8(const std::string& text, const std::string& path) {
  int line = 1;
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t n = utf8_sequence(text, i);
    if (n == 0)
      throw config_error({path, line}, "", "the file is not valid UTF-8, as TOML requires");
    if (text[i] == '\n')
      ++line;
    i += n;
  }
}

} // namespace

bool looks_like_toml(const std::string& text, const std::string& path) {
  if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".toml") == 0)
    return true;
  std::istringstream in{text};
  std::string line;
  while (std::getline(in, line)) {
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#')
      continue;
    if (line[first] == '[')
      return true;
    // `key = value`: a bare, quoted or dotted key, then '='. hast.conf has no
    // '=' in keywords, and its first word is always followed by a space.
    std::size_t i = first;
    while (i < line.size() && (std::isalnum(static_cast<unsigned char>(line[i])) || line[i] == '_' ||
                               line[i] == '-' || line[i] == '.' || line[i] == '"' || line[i] == '\''))
      ++i;
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t'))
      ++i;
    return i > first && i < line.size() && line[i] == '=';
  }
  return false;
}

raw_config parse_toml(const std::string& text, const std::string& path) {
  check_utf8(text, path);
  check_nesting(text, path);
  toml::value root;
  try {
    std::istringstream in{text};
    root = toml::parse(in, path);
  } catch (const toml::exception& e) {
    toml_report report = summarize(e.what());
    if (report.line == 0)
      report.line = static_cast<int>(e.location().line());
    throw config_error({path, report.line}, "", std::move(report.message));
  }
  return toml_reader{path}.read(root);
}

} // namespace hast::detail
