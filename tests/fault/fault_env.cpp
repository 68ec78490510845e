#include "tests/fault/fault_env.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <utility>

#include <sys/stat.h>

namespace hast::fault {

namespace {

constexpr uint8_t bit(io_kind kind) {
  return static_cast<uint8_t>(1u << static_cast<unsigned>(kind));
}

constexpr uint8_t all_kinds = bit(io_kind::read) | bit(io_kind::write) | bit(io_kind::flush)
                              | bit(io_kind::discard) | bit(io_kind::write_zeroes);

/// The kinds a rule's first word names; 0 for none.
uint8_t parse_kinds(std::string_view word) {
  if (word == "read")
    return bit(io_kind::read);
  if (word == "write")
    return bit(io_kind::write) | bit(io_kind::write_zeroes);
  if (word == "flush")
    return bit(io_kind::flush);
  if (word == "discard")
    return bit(io_kind::discard);
  if (word == "write_zeroes")
    return bit(io_kind::write_zeroes);
  if (word == "any")
    return all_kinds;
  return 0;
}

/// A decimal or 0x-hex number, the whole word.
bool parse_number(std::string_view word, uint64_t& out) {
  int base = 10;
  if (word.size() > 2 && word[0] == '0' && (word[1] == 'x' || word[1] == 'X')) {
    word.remove_prefix(2);
    base = 16;
  }
  auto [end, ec] = std::from_chars(word.data(), word.data() + word.size(), out, base);
  return ec == std::errc{} && end == word.data() + word.size() && !word.empty();
}

constexpr std::pair<std::string_view, int> errno_names[] = {
    {"EIO", EIO},         {"ENOSPC", ENOSPC},       {"EROFS", EROFS},
    {"EPERM", EPERM},     {"EACCES", EACCES},       {"ENXIO", ENXIO},
    {"ENODEV", ENODEV},   {"EINVAL", EINVAL},       {"EBUSY", EBUSY},
    {"EAGAIN", EAGAIN},   {"EFBIG", EFBIG},         {"EDQUOT", EDQUOT},
    {"ENOMEM", ENOMEM},   {"ETIMEDOUT", ETIMEDOUT}, {"ENODATA", ENODATA},
    {"EBADF", EBADF},     {"ECANCELED", ECANCELED}, {"EILSEQ", EILSEQ},
    {"EBADMSG", EBADMSG},
};

/// One line's rule, or why it is none.
std::optional<rule> parse_line(std::string_view line, std::string& why) {
  std::vector<std::string> words;
  std::istringstream in{std::string{line}};
  for (std::string w; in >> w;)
    words.push_back(std::move(w));
  if (words.size() < 2 || words.size() > 5) {
    why = "expected '<read|write|flush|discard|write_zeroes|any> <provider path> [<offset> "
          "<length>] [errno]'";
    return std::nullopt;
  }
  rule r;
  r.kinds = parse_kinds(words[0]);
  if (r.kinds == 0) {
    why = fmt::format("'{}' is not read, write, flush, discard, write_zeroes or any", words[0]);
    return std::nullopt;
  }
  r.path = words[1];
  if (r.path.empty() || r.path[0] != '/') {
    why = fmt::format("'{}' is not an absolute path", r.path);
    return std::nullopt;
  }
  size_t next = 2;
  if (words.size() >= 4) {
    r.whole = false;
    if (!parse_number(words[2], r.offset) || !parse_number(words[3], r.length)) {
      why = fmt::format("'{} {}' is not an offset and a length", words[2], words[3]);
      return std::nullopt;
    }
    if (r.length == 0 || r.offset + r.length < r.offset) {
      why = fmt::format("the range {} +{} is empty or wraps", r.offset, r.length);
      return std::nullopt;
    }
    next = 4;
  }
  r.error = EIO;
  if (next < words.size()) {
    r.error = parse_errno(words[next]);
    if (r.error == 0) {
      why = words.size() == 3
                ? fmt::format("'{}' is no errno (an offset needs a length)", words[next])
                : fmt::format("'{}' is no errno", words[next]);
      return std::nullopt;
    }
  }
  return r;
}

/// What identifies one version of the file; a change in any part re-reads it.
struct identity {
  bool exists = false;
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  timespec mtime{};
  timespec ctime{};

  bool operator==(const identity& o) const {
    return exists == o.exists && dev == o.dev && ino == o.ino && size == o.size
           && mtime.tv_sec == o.mtime.tv_sec && mtime.tv_nsec == o.mtime.tv_nsec
           && ctime.tv_sec == o.ctime.tv_sec && ctime.tv_nsec == o.ctime.tv_nsec;
  }
};

identity identify(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return {};
  return {true, st.st_dev, st.st_ino, st.st_size, st.st_mtim, st.st_ctim};
}

/// `path` with symbolic links and dot segments resolved as far as it exists,
/// so that a rule and a provider name one file alike.
std::string canonical(const std::string& path) {
  std::error_code ec;
  auto c = std::filesystem::weakly_canonical(path, ec);
  return ec ? path : c.string();
}

} // namespace

int parse_errno(std::string_view name) {
  for (auto [n, value] : errno_names)
    if (n == name)
      return value;
  uint64_t number = 0;
  if (parse_number(name, number) && number > 0 && number < 4096)
    return static_cast<int>(number);
  return 0;
}

int rules::fault(const std::string& path, io_kind kind, uint64_t offset, uint64_t length) const {
  for (auto& r : list) {
    if ((r.kinds & bit(kind)) == 0 || r.path != path)
      continue;
    if (r.whole || kind == io_kind::flush
        || (length > 0 && offset < r.offset + r.length && r.offset < offset + length))
      return r.error;
  }
  return 0;
}

rules parse_rules(std::string_view text, std::vector<std::string>* complaints) {
  rules out;
  size_t number = 0;
  while (!text.empty()) {
    auto eol = text.find('\n');
    auto line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view{} : text.substr(eol + 1);
    ++number;
    if (auto hash = line.find('#'); hash != std::string_view::npos)
      line = line.substr(0, hash);
    if (line.find_first_not_of(" \t\r") == std::string_view::npos)
      continue;
    std::string why;
    if (auto r = parse_line(line, why))
      out.list.push_back(std::move(*r));
    else if (complaints != nullptr)
      complaints->push_back(fmt::format("line {}: {}", number, why));
  }
  return out;
}

/// The rules file and the rules read from it last; shared by the environment
/// and every provider's fault source, asked from any thread.
class rules_file {
public:
  rules_file(std::string path, std::chrono::steady_clock::duration recheck)
      : path_(std::move(path)), recheck_(recheck), rules_(std::make_shared<const rules>()) {}

  std::shared_ptr<const rules> current() {
    std::lock_guard lock{mutex_};
    auto now = std::chrono::steady_clock::now();
    if (checked_ && now - last_check_ < recheck_)
      return rules_;
    checked_ = true;
    last_check_ = now;
    auto id = identify(path_);
    if (loaded_ && id == identity_)
      return rules_;
    loaded_ = true;
    identity_ = id;
    rules_ = std::make_shared<const rules>(load(id.exists));
    return rules_;
  }

private:
  rules load(bool exists) {
    if (!exists) {
      std::fprintf(stderr, "fault rules %s: no such file: no faults\n", path_.c_str());
      return {};
    }
    std::ifstream in{path_, std::ios::binary};
    std::ostringstream text;
    text << in.rdbuf();
    std::vector<std::string> complaints;
    auto parsed = parse_rules(text.str(), &complaints);
    for (auto& c : complaints)
      std::fprintf(stderr, "fault rules %s: %s (ignored)\n", path_.c_str(), c.c_str());
    for (auto& r : parsed.list)
      r.path = canonical(r.path);
    std::fprintf(stderr, "fault rules %s: %zu in force\n", path_.c_str(), parsed.list.size());
    return parsed;
  }

  const std::string path_;
  const std::chrono::steady_clock::duration recheck_;
  std::mutex mutex_;
  bool checked_ = false;
  bool loaded_ = false;
  std::chrono::steady_clock::time_point last_check_;
  identity identity_;
  std::shared_ptr<const rules> rules_;
};

namespace {

class provider_faults final : public fault_source {
public:
  provider_faults(std::shared_ptr<rules_file> file, std::string path)
      : file_(std::move(file)), path_(std::move(path)) {}

  int fault(io_kind kind, uint64_t offset, uint64_t length) const override {
    return file_->current()->fault(path_, kind, offset, length);
  }

private:
  std::shared_ptr<rules_file> file_;
  std::string path_; // canonical
};

} // namespace

fault_env::fault_env(const std::string& path, std::chrono::steady_clock::duration recheck)
    : file_(std::make_shared<rules_file>(std::filesystem::absolute(path).string(), recheck)) {
  file_->current(); // reports the rules in force (or the complaints) at start-up
}

result<provider> fault_env::open_provider(const std::string& path, bool writable) const {
  auto opened = provider::open(path, writable);
  if (opened)
    opened->set_fault_source(std::make_shared<provider_faults>(file_, canonical(path)));
  return opened;
}

std::shared_ptr<const rules> fault_env::current() const {
  return file_->current();
}

} // namespace hast::fault
