// FreeBSD hast.conf syntax: `keyword value` statements, `#` comments and
// `resource <name> { }` / `on <node> { }` sections. This file only knows the
// shape of the file; what options mean is config.cpp's business.
//
// A statement's value must be on its keyword's line and be the only value
// there; a section's name and `{` may follow on later lines, as FreeBSD's
// yacc grammar allows. Double-quoted values (an addition) may hold spaces.

#include "config/raw_config.hpp"

#include <cstddef>
#include <string>
#include <vector>

namespace hast::detail {
namespace {

struct token {
  enum kind_t : uint8_t { word, open, close, end } kind = end;
  std::string text;
  int line = 0;
};

class hastconf_parser {
public:
  hastconf_parser(const std::string& text, const std::string& path) : path_(path) {
    tokenize(text);
  }

  raw_config parse() {
    raw_config raw;
    raw.path = path_;
    for (;;) {
      const token& t = peek();
      if (t.kind == token::end)
        break;
      if (t.kind == token::close)
        fail(t.line, "", "unexpected '}': no section is open here");
      if (t.kind == token::open)
        fail(t.line, "", "unexpected '{': expected an option or a section");
      if (t.text == "resource")
        raw.resources.push_back(parse_resource());
      else if (t.text == "on")
        raw.nodes.push_back(parse_node_section());
      else
        raw.statements.push_back(parse_statement());
    }
    return raw;
  }

private:
  [[noreturn]] void fail(int line, std::string option, std::string message) const {
    throw config_error({path_, line}, std::move(option), std::move(message));
  }

  void tokenize(const std::string& text) {
    int line = 1;
    std::size_t i = 0;
    const std::size_t n = text.size();
    auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; };
    while (i < n) {
      const char c = text[i];
      if (c == '\n') {
        ++line;
        ++i;
      } else if (is_space(c)) {
        ++i;
      } else if (c == '#') {
        while (i < n && text[i] != '\n')
          ++i;
      } else if (c == '{') {
        tokens_.push_back({token::open, "{", line});
        ++i;
      } else if (c == '}') {
        tokens_.push_back({token::close, "}", line});
        ++i;
      } else if (c == '"') {
        const int start_line = line;
        std::string value;
        ++i;
        for (;;) {
          if (i >= n || text[i] == '\n')
            fail(start_line, "", "unterminated quoted string; expected a closing '\"'");
          if (text[i] == '"') {
            ++i;
            break;
          }
          if (text[i] == '\\' && i + 1 < n && (text[i + 1] == '"' || text[i + 1] == '\\'))
            ++i;
          value += text[i++];
        }
        tokens_.push_back({token::word, std::move(value), start_line});
      } else {
        const std::size_t start = i;
        while (i < n && text[i] != '\n' && !is_space(text[i]) && text[i] != '#' && text[i] != '{' &&
               text[i] != '}' && text[i] != '"')
          ++i;
        tokens_.push_back({token::word, text.substr(start, i - start), line});
      }
    }
    tokens_.push_back({token::end, "", line});
  }

  const token& peek() const { return tokens_[pos_]; }

  const token& next() {
    const token& t = tokens_[pos_];
    if (t.kind != token::end)
      ++pos_;
    return t;
  }

  // `resource <name>` or `on <node>`, then `{`.
  std::string section_header(const token& keyword, const char* what) {
    const token& name = next();
    if (name.kind != token::word)
      fail(name.kind == token::end ? keyword.line : name.line, keyword.text,
           std::string{"expected "} + what + " after '" + keyword.text + "'");
    const token& open = next();
    if (open.kind != token::open)
      fail(open.kind == token::end ? name.line : open.line, keyword.text,
           "expected '{' after '" + keyword.text + " " + name.text + "'");
    return name.text;
  }

  [[noreturn]] void unclosed(const token& keyword, const std::string& name) const {
    fail(keyword.line, keyword.text,
         "section '" + keyword.text + " " + name + "' is not closed; expected '}'");
  }

  raw_resource parse_resource() {
    const token keyword = next();
    raw_resource res;
    res.where = {path_, keyword.line};
    res.name = section_header(keyword, "a resource name");
    for (;;) {
      const token& t = peek();
      if (t.kind == token::end)
        unclosed(keyword, res.name);
      if (t.kind == token::close) {
        next();
        return res;
      }
      if (t.kind == token::open)
        fail(t.line, "", "unexpected '{': expected an option or an 'on <node>' section");
      if (t.text == "resource")
        fail(t.line, "resource", "a resource section cannot be inside another section");
      if (t.text == "on")
        res.nodes.push_back(parse_node_section());
      else
        res.statements.push_back(parse_statement());
    }
  }

  raw_node_section parse_node_section() {
    const token keyword = next();
    raw_node_section section;
    section.where = {path_, keyword.line};
    section.node = section_header(keyword, "a node name");
    for (;;) {
      const token& t = peek();
      if (t.kind == token::end)
        unclosed(keyword, section.node);
      if (t.kind == token::close) {
        next();
        return section;
      }
      if (t.kind == token::open)
        fail(t.line, "", "unexpected '{': expected an option");
      if (t.text == "resource" || t.text == "on")
        fail(t.line, t.text, "a section cannot be inside an 'on <node>' section");
      section.statements.push_back(parse_statement());
    }
  }

  raw_statement parse_statement() {
    const token keyword = next();
    if (!is_known_option(keyword.text))
      fail(keyword.line, keyword.text, unknown_option_message(keyword.text));
    const token& value = peek();
    if (value.kind != token::word || value.line != keyword.line)
      fail(keyword.line, keyword.text, "expected a value on the same line");
    next();
    const token& extra = peek();
    if (extra.kind == token::word && extra.line == keyword.line)
      fail(keyword.line, keyword.text,
           "expected one value, found also '" + extra.text + "' (quote a value that holds spaces)");
    return {keyword.text, value.text, {path_, keyword.line}};
  }

  std::string path_;
  std::vector<token> tokens_;
  std::size_t pos_ = 0;
};

} // namespace

raw_config parse_hastconf(const std::string& text, const std::string& path) {
  return hastconf_parser{text, path}.parse();
}

} // namespace hast::detail
