// Runs the real NBD server on a Unix socket in a temporary directory, backed
// by an in-memory store defined here (a fixture for the protocol layer; the
// real backend is the daemon's resource actor), and drives it with a small
// blocking client written against the protocol, then with libnbd's nbdinfo
// and nbdcopy.

#include "io/net/asio.hpp"
#include "io/net/nbd_protocol.hpp"
#include "io/net/nbd_server.hpp"
#include "tests/scratch_dir.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace hast::nbd {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr uint64_t default_size = 1u << 20;

// --- The in-memory backend -------------------------------------------------------------

/// Runs completions on its own thread, as the daemon's actors do.
class completion_thread {
public:
  completion_thread() : thread_([this] { run(); }) {}
  ~completion_thread() {
    {
      std::lock_guard lock{mutex_};
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void post(std::function<void()> fn) {
    {
      std::lock_guard lock{mutex_};
      tasks_.push_back(std::move(fn));
    }
    cv_.notify_all();
  }

private:
  void run() {
    std::unique_lock lock{mutex_};
    for (;;) {
      cv_.wait(lock, [this] { return done_ || !tasks_.empty(); });
      if (tasks_.empty())
        return;
      auto fn = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool done_ = false;
  std::thread thread_;
};

/// The bytes of the export and what the backends were asked to do.
struct memory_store {
  explicit memory_store(uint64_t size) : data(size) {}

  std::mutex mutex;
  std::vector<uint8_t> data;
  std::string refusal; // non-empty: open() refuses with this message
  std::string description;
  uint32_t io_error = 0; // non-zero: every I/O completes with this error
  // A growing export: nonzero, its data size now (the rest of `data` is
  // room to grow into, up to `ceiling`).
  std::atomic<uint64_t> grown_size{0};
  uint64_t ceiling = 0;
  completion_thread* worker = nullptr;

  // Guarded by `mutex`.
  std::vector<std::size_t> batch_sizes; // of every submit(), in order
  bool hold = false;                    // keep replies until release()
  std::vector<reply> held;
  reply_sink_ptr held_sink;
  std::shared_ptr<std::atomic<int>> held_unanswered; // of the backend that holds

  std::atomic<int> opens{0};
  std::atomic<int> closes{0};
  std::atomic<int> flushes{0};
  std::atomic<int> fua_writes{0};
  std::atomic<int> trims{0};
  std::atomic<int> zeroes_may_trim{0};
  std::atomic<int> zeroes_no_hole{0};
  std::atomic<int> deliveries{0}; // deliver() calls
  std::atomic<int> submitted{0};  // requests

  std::vector<std::size_t> batches() {
    std::lock_guard lock{mutex};
    return batch_sizes;
  }
  std::size_t held_count() {
    std::lock_guard lock{mutex};
    return held.size();
  }

  /// Answers the oldest held reply alone and keeps holding the rest.
  void release_one() {
    std::vector<reply> one;
    reply_sink_ptr sink;
    std::shared_ptr<std::atomic<int>> unanswered;
    {
      std::lock_guard lock{mutex};
      if (held.empty())
        return;
      one.push_back(std::move(held.front()));
      held.erase(held.begin());
      sink = held_sink;
      unanswered = held_unanswered;
    }
    ++deliveries;
    --*unanswered;
    sink->deliver(std::move(one));
  }

  /// Stops holding and answers everything held, in one deliver() call or,
  /// with `one_by_one_reversed`, one reply per call in reverse order.
  void release(bool one_by_one_reversed = false) {
    std::vector<reply> replies;
    reply_sink_ptr sink;
    std::shared_ptr<std::atomic<int>> unanswered;
    {
      std::lock_guard lock{mutex};
      hold = false;
      replies = std::move(held);
      held.clear();
      sink = std::move(held_sink);
      unanswered = std::move(held_unanswered);
    }
    if (!sink)
      return;
    if (!one_by_one_reversed) {
      ++deliveries;
      *unanswered -= static_cast<int>(replies.size());
      sink->deliver(std::move(replies));
      return;
    }
    for (auto it = replies.rbegin(); it != replies.rend(); ++it) {
      ++deliveries;
      --*unanswered;
      sink->deliver({std::move(*it)});
    }
  }
};

/// Serves a batch in order and answers it with one deliver() call from the
/// completion thread, as the daemon's resource actor would. Checks the
/// session's side of the contract: close() comes only once every request
/// this backend was given has been answered.
class memory_backend : public backend {
public:
  explicit memory_backend(std::shared_ptr<memory_store> store) : store_(std::move(store)) {}

  void open(std::function<void(open_result)> done) override {
    open_result result;
    if (!store_->refusal.empty()) {
      result.error = store_->refusal;
    } else {
      ++store_->opens;
      result.info.size = store_->grown_size != 0 ? store_->grown_size.load() : store_->data.size();
      result.info.ceiling = store_->ceiling;
      result.info.description = store_->description;
    }
    complete([done = std::move(done), result = std::move(result)] { done(result); });
  }

  void submit(std::vector<request> batch, reply_sink_ptr sink) override {
    EXPECT_FALSE(batch.empty());
    store_->submitted += static_cast<int>(batch.size());
    *unanswered_ += static_cast<int>(batch.size());
    std::vector<reply> replies;
    replies.reserve(batch.size());
    const uint32_t error = store_->io_error;
    {
      std::lock_guard lock{store_->mutex};
      store_->batch_sizes.push_back(batch.size());
      for (const auto& r : batch)
        replies.push_back(serve(r, error));
      if (store_->hold) {
        // One connection at a time holds in these tests.
        EXPECT_TRUE(!store_->held_sink || store_->held_sink == sink);
        store_->held_sink = sink;
        store_->held_unanswered = unanswered_;
        for (auto& r : replies)
          store_->held.push_back(std::move(r));
        return;
      }
    }
    complete([sink = std::move(sink), replies = std::move(replies), store = store_,
              unanswered = unanswered_]() mutable {
      ++store->deliveries;
      *unanswered -= static_cast<int>(replies.size());
      sink->deliver(std::move(replies));
    });
  }

  void close() override {
    EXPECT_EQ(*unanswered_, 0) << "close() with requests unanswered";
    ++store_->closes;
  }

  uint64_t size_now() const override { return store_->grown_size; }

private:
  /// Called with the store's mutex held.
  reply serve(const request& r, uint32_t error) {
    if (store_->grown_size != 0) {
      EXPECT_LE(r.offset + r.length, store_->grown_size) << "a request past the data size";
    }
    auto* bytes = store_->data.data() + r.offset;
    switch (r.kind) {
    case command::read: {
      auto data = make_buffer(r.length);
      std::memcpy(data->data(), bytes, r.length);
      return make_reply(r, error, error == 0 ? data : nullptr);
    }
    case command::write:
      EXPECT_EQ(r.data->size(), r.length);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(r.data->data()) % block_buffer::alignment, 0u);
      std::memcpy(bytes, r.data->data(), r.length);
      if (r.fua)
        ++store_->fua_writes;
      break;
    case command::flush:
      ++store_->flushes;
      break;
    case command::trim:
      std::fill_n(bytes, r.length, 0);
      ++store_->trims;
      break;
    case command::write_zeroes:
      std::fill_n(bytes, r.length, 0);
      ++(r.may_trim ? store_->zeroes_may_trim : store_->zeroes_no_hole);
      break;
    }
    return make_reply(r, error);
  }

  void complete(std::function<void()> fn) {
    if (store_->worker)
      store_->worker->post(std::move(fn));
    else
      fn();
  }

  std::shared_ptr<memory_store> store_;
  // Requests submitted and not yet delivered; shared with pending deliveries.
  std::shared_ptr<std::atomic<int>> unanswered_ = std::make_shared<std::atomic<int>>(0);
};

// --- A minimal blocking client ------------------------------------------------------------

class test_client {
public:
  static test_client unix_socket(const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd);
      throw std::runtime_error("connect " + path + ": " + std::strerror(errno));
    }
    return test_client(fd);
  }

  static test_client tcp_loopback(uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd);
      throw std::runtime_error(std::string("connect: ") + std::strerror(errno));
    }
    return test_client(fd);
  }

  test_client(test_client&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  test_client(const test_client&) = delete;
  ~test_client() {
    if (fd_ >= 0)
      ::close(fd_);
  }

  void send(const void* data, std::size_t size) {
    auto* p = static_cast<const uint8_t*>(data);
    while (size > 0) {
      auto n = ::send(fd_, p, size, MSG_NOSIGNAL);
      if (n <= 0)
        throw std::runtime_error(std::string("send: ") + std::strerror(errno));
      p += n;
      size -= static_cast<std::size_t>(n);
    }
  }
  void send(const std::vector<uint8_t>& bytes) { send(bytes.data(), bytes.size()); }
  template <std::size_t N> void send(const std::array<uint8_t, N>& bytes) { send(bytes.data(), N); }

  void receive(void* data, std::size_t size) {
    auto* p = static_cast<uint8_t*>(data);
    while (size > 0) {
      auto n = ::recv(fd_, p, size, 0);
      if (n == 0)
        throw std::runtime_error("the server closed the connection");
      if (n < 0)
        throw std::runtime_error(std::string("recv: ") + std::strerror(errno));
      p += n;
      size -= static_cast<std::size_t>(n);
    }
  }
  std::vector<uint8_t> receive(std::size_t size) {
    std::vector<uint8_t> out(size);
    receive(out.data(), size);
    return out;
  }

  /// True once the server has closed its end (EOF or reset), false if data
  /// arrives or nothing happens within the receive timeout.
  bool closed_by_server() {
    uint8_t byte;
    auto n = ::recv(fd_, &byte, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }

  /// Reads the server's greeting and answers with `client_flags`.
  uint16_t handshake(uint32_t client_flags = flag_c_fixed_newstyle | flag_c_no_zeroes) {
    auto greeting = receive(handshake_size);
    if (get_be64(greeting.data()) != init_magic || get_be64(greeting.data() + 8) != option_magic)
      throw std::runtime_error("bad greeting");
    uint8_t flags[4];
    put_be32(flags, client_flags);
    send(flags, 4);
    return get_be16(greeting.data() + 16);
  }

  void send_option(uint32_t option, const std::vector<uint8_t>& data = {}) {
    send(encode_option_header({option, static_cast<uint32_t>(data.size())}));
    send(data);
  }

  struct option_reply {
    option_reply_header header;
    std::vector<uint8_t> payload;
    std::string text() const { return {payload.begin(), payload.end()}; }
  };

  option_reply read_option_reply() {
    uint8_t head[option_reply_header_size];
    receive(head, sizeof head);
    auto header = decode_option_reply_header(head);
    if (!header)
      throw std::runtime_error("bad option reply magic");
    return {*header, receive(header->length)};
  }

  struct go_result {
    uint32_t final_type = 0; // rep_ack or an error
    std::string message;     // an error's text
    uint64_t size = 0;
    uint16_t flags = 0;
    std::string name;
    std::string description;
    uint32_t min_block = 0, preferred_block = 0, max_block = 0;
  };

  /// NBD_OPT_GO (or NBD_OPT_INFO) and every reply up to the final one.
  go_result go(const std::string& name, uint32_t option = opt_go,
               std::vector<uint16_t> requests = {info_block_size}) {
    send_option(option, encode_info_request({name, std::move(requests)}));
    go_result out;
    for (;;) {
      auto reply = read_option_reply();
      if (reply.header.option != option)
        throw std::runtime_error("reply for another option");
      if (reply.header.type != rep_info) {
        out.final_type = reply.header.type;
        out.message = reply.text();
        return out;
      }
      const uint8_t* p = reply.payload.data();
      switch (get_be16(p)) {
      case info_export:
        out.size = get_be64(p + 2);
        out.flags = get_be16(p + 10);
        break;
      case info_name:
        out.name.assign(p + 2, p + reply.payload.size());
        break;
      case info_description:
        out.description.assign(p + 2, p + reply.payload.size());
        break;
      case info_block_size:
        out.min_block = get_be32(p + 2);
        out.preferred_block = get_be32(p + 6);
        out.max_block = get_be32(p + 10);
        break;
      }
    }
  }

  void send_request(uint16_t type, uint64_t offset, uint32_t length, uint16_t flags = 0,
                    uint64_t cookie = 1) {
    send(encode_request({flags, type, cookie, offset, length}));
  }

  simple_reply read_reply() {
    uint8_t raw[simple_reply_size];
    receive(raw, sizeof raw);
    auto reply = decode_simple_reply(raw);
    if (!reply)
      throw std::runtime_error("bad simple reply magic");
    return *reply;
  }

  uint32_t write(uint64_t offset, const std::vector<uint8_t>& data, uint16_t flags = 0) {
    send_request(cmd_write, offset, static_cast<uint32_t>(data.size()), flags, 0x77);
    send(data);
    auto reply = read_reply();
    if (reply.cookie != 0x77)
      throw std::runtime_error("wrong cookie");
    return reply.error;
  }

  /// Returns the error; on success `out` holds the data.
  uint32_t read(uint64_t offset, uint32_t length, std::vector<uint8_t>& out) {
    send_request(cmd_read, offset, length, 0, 0x99);
    auto reply = read_reply();
    if (reply.cookie != 0x99)
      throw std::runtime_error("wrong cookie");
    if (reply.error == 0)
      out = receive(length);
    return reply.error;
  }

  uint32_t command(uint16_t type, uint64_t offset, uint32_t length, uint16_t flags = 0) {
    send_request(type, offset, length, flags, 0x55);
    auto reply = read_reply();
    if (reply.cookie != 0x55)
      throw std::runtime_error("wrong cookie");
    return reply.error;
  }

private:
  explicit test_client(int fd) : fd_(fd) {
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }

  int fd_ = -1;
};

std::vector<uint8_t> pattern(std::size_t size, uint32_t seed) {
  std::vector<uint8_t> out(size);
  std::mt19937 gen(seed);
  for (auto& b : out)
    b = static_cast<uint8_t>(gen());
  return out;
}

template <class Pred> bool wait_until(Pred pred, std::chrono::milliseconds limit = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

/// Runs a shell command, returning its exit status and combined output.
std::pair<int, std::string> run(const std::string& command) {
  std::string output;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr)
    return {-1, "popen failed"};
  char buf[4096];
  while (auto n = std::fread(buf, 1, sizeof buf, pipe))
    output.append(buf, n);
  int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// --- The fixture ------------------------------------------------------------------------------

class NbdServer : public scratch_test {
protected:
  void SetUp() override {
    previous_level_ = spdlog::get_level();
    spdlog::set_level(spdlog::level::warn);
    // The "run" directory does not exist yet: start() creates it.
    socket_path_ = (dir_ / "run" / "nbd.sock").string();
    store_ = std::make_shared<memory_store>(default_size);
    store_->worker = &worker_;
    work_.emplace(io_.get_executor());
    for (int i = 0; i < 2; ++i)
      threads_.emplace_back([this] { io_.run(); });
  }

  void TearDown() override {
    for (auto& s : servers_)
      s->stop();
    for (auto& s : servers_)
      EXPECT_TRUE(wait_until([&] { return s->connections() == 0; }));
    servers_.clear();
    work_.reset();
    // Let the posted shutdown work run, then stop whatever is left.
    wait_until([&] { return io_.stopped(); }, 2s);
    io_.stop();
    for (auto& t : threads_)
      t.join();
    spdlog::set_level(previous_level_);
  }

  server& start_server(const std::string& name = "shared", std::string address = {}) {
    if (address.empty())
      address = "uds://" + socket_path_;
    auto store = store_;
    servers_.push_back(std::make_unique<server>(
        io_, name, address, [store] { return std::make_shared<memory_backend>(store); },
        handshake_limit_));
    auto status = servers_.back()->start();
    EXPECT_TRUE(status.is_ok()) << status.message();
    return *servers_.back();
  }

  test_client connect() { return test_client::unix_socket(socket_path_); }

  /// A client past NBD_OPT_GO, ready for requests.
  test_client attached(const std::string& name = "shared") {
    auto client = connect();
    client.handshake();
    auto go = client.go(name);
    if (go.final_type != rep_ack)
      throw std::runtime_error("GO failed: " + go.message);
    return client;
  }

  std::string uri(const std::string& name = "shared") const {
    return "nbd+unix:///" + name + "?socket=" + socket_path_;
  }

  std::vector<uint8_t> stored(uint64_t offset, std::size_t length) {
    std::lock_guard lock{store_->mutex};
    return {store_->data.begin() + static_cast<std::ptrdiff_t>(offset),
            store_->data.begin() + static_cast<std::ptrdiff_t>(offset + length)};
  }

  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::vector<std::thread> threads_;
  completion_thread worker_;
  std::string socket_path_;
  std::shared_ptr<memory_store> store_;
  std::vector<std::unique_ptr<server>> servers_;
  std::chrono::milliseconds handshake_limit_ = handshake_time_limit;
  spdlog::level::level_enum previous_level_ = spdlog::level::info;
};

// --- Listening
// ------------------------------------------------------------------------------------

TEST_F(NbdServer, StartCreatesTheSocketDirectoryAndASocketWithMode0660) {
  start_server();
  struct stat st {};
  ASSERT_EQ(::lstat(socket_path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);
}

TEST_F(NbdServer, StartReplacesAStaleSocketFile) {
  fs::create_directories(fs::path(socket_path_).parent_path());
  {
    // Bind and close without unlinking: what a crashed daemon leaves behind.
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path_.c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::close(fd);
  }
  start_server();
  auto client = attached();
  std::vector<uint8_t> out;
  EXPECT_EQ(client.read(0, 512, out), 0u);
}

TEST_F(NbdServer, StartFailsWhileAnotherServerListensOnTheSocket) {
  start_server();
  auto store = store_;
  server second(io_, "shared", "uds://" + socket_path_,
                [store] { return std::make_shared<memory_backend>(store); });
  auto status = second.start();
  ASSERT_FALSE(status.is_ok());
  EXPECT_EQ(status.code(), errc::busy);
  EXPECT_NE(status.message().find(socket_path_), std::string::npos) << status.message();
  // The first server still works.
  auto client = attached();
  std::vector<uint8_t> out;
  EXPECT_EQ(client.read(0, 512, out), 0u);
}

TEST_F(NbdServer, StartRefusesToReplaceAFileThatIsNotASocket) {
  fs::create_directories(fs::path(socket_path_).parent_path());
  std::ofstream(socket_path_) << "precious";
  server s(io_, "shared", "uds://" + socket_path_, [] { return nullptr; });
  auto status = s.start();
  ASSERT_FALSE(status.is_ok());
  EXPECT_NE(status.message().find("not a socket"), std::string::npos) << status.message();
  EXPECT_EQ(slurp(socket_path_), "precious");
}

TEST_F(NbdServer, StartReportsAnUnusableAddressWithTheAddress) {
  server s(io_, "shared", "carrier-pigeon://x", [] { return nullptr; });
  auto status = s.start();
  ASSERT_FALSE(status.is_ok());
  EXPECT_NE(status.message().find("carrier-pigeon://x"), std::string::npos) << status.message();
}

TEST_F(NbdServer, StopRemovesTheSocketAndEndsEveryConnection) {
  auto& s = start_server();
  auto a = attached();
  auto b = connect();
  b.handshake();
  ASSERT_TRUE(wait_until([&] { return s.connections() == 2; }));
  s.stop();
  EXPECT_TRUE(a.closed_by_server());
  EXPECT_TRUE(b.closed_by_server());
  EXPECT_TRUE(wait_until([&] { return s.connections() == 0; }));
  EXPECT_TRUE(wait_until([&] { return !fs::exists(fs::symlink_status(socket_path_)); }));
  EXPECT_TRUE(wait_until([&] { return store_->closes == 1; }));
  EXPECT_EQ(store_->opens, 1);
}

TEST_F(NbdServer, ANewServerCanListenOnTheSameSocketOnceTheOldOneHasStopped) {
  auto& old_server = start_server();
  auto client = attached();
  std::promise<void> stopped;
  old_server.stop([&] { stopped.set_value(); });
  ASSERT_EQ(stopped.get_future().wait_for(5s), std::future_status::ready);
  EXPECT_TRUE(client.closed_by_server());
  start_server();
  auto again = attached();
  std::vector<uint8_t> out;
  EXPECT_EQ(again.read(0, 512, out), 0u);
}

TEST_F(NbdServer, CloseSessionsEndsEveryConnectionButKeepsListening) {
  auto& s = start_server();
  auto a = attached();
  auto b = attached();
  ASSERT_TRUE(wait_until([&] { return s.connections() == 2; }));
  s.close_sessions();
  EXPECT_TRUE(a.closed_by_server());
  EXPECT_TRUE(b.closed_by_server());
  EXPECT_TRUE(wait_until([&] { return store_->closes == 2; }));
  EXPECT_TRUE(wait_until([&] { return s.connections() == 0; }));
  // Still listening: a new client gets what the backend now says.
  store_->refusal = "resource shared is not primary (role secondary)";
  auto c = connect();
  c.handshake();
  auto go = c.go("shared");
  EXPECT_EQ(go.final_type, rep_err_unknown);
  EXPECT_EQ(go.message, "resource shared is not primary (role secondary)");
}

/// A loopback port nobody listens on (the kernel's pick, released again).
uint16_t free_loopback_port() {
  int probe = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ::getsockname(probe, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(probe);
  return ntohs(addr.sin_port);
}

TEST_F(NbdServer, ServesOverTcpOnLoopback) {
  const uint16_t port = free_loopback_port();
  auto& s = start_server("shared", "tcp://127.0.0.1:" + std::to_string(port));
  EXPECT_EQ(s.local_address(), "tcp://127.0.0.1:" + std::to_string(port));
  auto client = test_client::tcp_loopback(port);
  client.handshake();
  auto go = client.go("shared");
  ASSERT_EQ(go.final_type, rep_ack) << go.message;
  const auto data = pattern(8192, 7);
  EXPECT_EQ(client.write(4096, data), 0u);
  std::vector<uint8_t> out;
  ASSERT_EQ(client.read(4096, 8192, out), 0u);
  EXPECT_EQ(out, data);
}

// --- Who may connect, and how many ------------------------------------------------

/// This host's first IPv4 address that is not loopback ("" if none).
std::string non_loopback_ipv4() {
  ifaddrs* all = nullptr;
  if (::getifaddrs(&all) != 0)
    return "";
  std::string found;
  for (auto* i = all; i != nullptr && found.empty(); i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET)
      continue;
    auto* in = reinterpret_cast<sockaddr_in*>(i->ifa_addr);
    if ((ntohl(in->sin_addr.s_addr) >> 24) == 127)
      continue;
    char text[INET_ADDRSTRLEN];
    if (::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text) != nullptr)
      found = text;
  }
  ::freeifaddrs(all);
  return found;
}

/// A TCP connection to `address`:`port`, from `address` too (a local
/// address connects from itself); -1 if it cannot be made.
int connect_tcp(const std::string& address, uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  ::inet_pton(AF_INET, address.c_str(), &addr.sin_addr);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

/// "served" if the server greets the connection (the 8-byte NBDMAGIC),
/// "closed" if it closes it first.
std::string greeting(int fd) {
  uint8_t magic[8];
  size_t got = 0;
  while (got < sizeof magic) {
    auto n = ::recv(fd, magic + got, sizeof magic - got, 0);
    if (n <= 0)
      return n == 0 || errno == ECONNRESET ? "closed" : "timed out";
    got += static_cast<size_t>(n);
  }
  return std::memcmp(magic, "NBDMAGIC", 8) == 0 ? "served" : "garbage";
}

/// Connects to `address`:`port` and says what the server did.
std::string try_connect(const std::string& address, uint16_t port) {
  int fd = connect_tcp(address, port);
  if (fd < 0)
    return "no connection";
  auto what = greeting(fd);
  ::close(fd);
  return what;
}

TEST(NbdAccess, AnAllowListMatchesAddressesAndPrefixesOfTheirOwnFamily) {
  const std::vector<std::string> allow{"10.0.0.5", "192.168.4.0/22", "fd00::/8", "::1"};
  EXPECT_TRUE(allowed("10.0.0.5", allow));
  EXPECT_FALSE(allowed("10.0.0.6", allow));
  EXPECT_TRUE(allowed("192.168.7.255", allow));
  EXPECT_FALSE(allowed("192.168.8.0", allow));
  EXPECT_TRUE(allowed("fd12:3456::1", allow));
  EXPECT_FALSE(allowed("fe80::1", allow));
  EXPECT_TRUE(allowed("::1", allow));
  // An IPv4 client on a dual-stack socket is seen as ::ffff:a.b.c.d.
  EXPECT_TRUE(allowed("::ffff:10.0.0.5", allow));
  EXPECT_FALSE(allowed("::ffff:10.0.0.7", allow));
  EXPECT_FALSE(allowed("127.0.0.1", allow));
  EXPECT_FALSE(allowed("10.0.0.5", {}));
  EXPECT_FALSE(allowed("10.0.0.5", {"not-an-address", "10.0.0.5/40"}));
  EXPECT_TRUE(allowed("10.1.2.3", {"0.0.0.0/0"}));
}

TEST_F(NbdServer, WithoutAnAllowListATcpExportServesLoopbackClientsOnly) {
  const auto outside = non_loopback_ipv4();
  if (outside.empty())
    GTEST_SKIP() << "this host has no IPv4 address besides loopback";
  const uint16_t port = free_loopback_port();
  start_server("open-export", "tcp://0.0.0.0:" + std::to_string(port));
  EXPECT_EQ(try_connect(outside, port), "closed") << "a client from " << outside << " was served";
  EXPECT_EQ(try_connect("127.0.0.1", port), "served");
}

TEST_F(NbdServer, AnAllowListAdmitsTheAddressesItNamesAndNoOther) {
  const auto outside = non_loopback_ipv4();
  if (outside.empty())
    GTEST_SKIP() << "this host has no IPv4 address besides loopback";
  set_access("listed-export", {{outside + "/32"}, max_connections_per_export});
  const uint16_t port = free_loopback_port();
  start_server("listed-export", "tcp://0.0.0.0:" + std::to_string(port));
  EXPECT_EQ(try_connect(outside, port), "served");
  EXPECT_EQ(try_connect("127.0.0.1", port), "closed") << "loopback is not in the list";
  // A change applies from the next connection.
  set_access("listed-export", {{"127.0.0.0/8"}, max_connections_per_export});
  EXPECT_EQ(try_connect("127.0.0.1", port), "served");
  EXPECT_EQ(try_connect(outside, port), "closed");
}

TEST_F(NbdServer, AConnectionOverTheCapIsClosedAndTheExportKeepsServing) {
  set_access("capped-export", {{}, 2});
  const uint16_t port = free_loopback_port();
  auto& s = start_server("capped-export", "tcp://127.0.0.1:" + std::to_string(port));
  int first = connect_tcp("127.0.0.1", port);
  int second = connect_tcp("127.0.0.1", port);
  ASSERT_GE(first, 0);
  ASSERT_GE(second, 0);
  EXPECT_EQ(greeting(first), "served");
  EXPECT_EQ(greeting(second), "served");
  EXPECT_EQ(try_connect("127.0.0.1", port), "closed") << "a third connection was served";
  EXPECT_EQ(s.connections(), 2u);
  ::close(first);
  // Once one goes, there is room again.
  bool served = false;
  for (int i = 0; i < 100 && !served; ++i) {
    served = s.connections() < 2 && try_connect("127.0.0.1", port) == "served";
    if (!served)
      std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(served);
  ::close(second);
}

TEST_F(NbdServer, AHostNameIsResolvedWithoutBlockingTheCaller) {
  // tcp4://localhost needs the name service: start() returns at once and the
  // outcome arrives later on one of the io_context's threads.
  const uint16_t port = free_loopback_port();
  auto store = store_;
  server s(io_, "shared", "tcp4://localhost:" + std::to_string(port),
           [store] { return std::make_shared<memory_backend>(store); });
  std::promise<std::pair<status, std::thread::id>> outcome;
  s.start([&outcome](status st) { outcome.set_value({std::move(st), std::this_thread::get_id()}); });
  auto result = outcome.get_future();
  ASSERT_EQ(result.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  auto [st, thread] = result.get();
  ASSERT_TRUE(st.is_ok()) << st.message();
  EXPECT_NE(thread, std::this_thread::get_id());
  ASSERT_TRUE(s.start_outcome().has_value());
  EXPECT_TRUE(s.start_outcome()->is_ok());
  EXPECT_EQ(s.local_address(), "tcp://127.0.0.1:" + std::to_string(port));
  auto client = test_client::tcp_loopback(port);
  client.handshake();
  EXPECT_EQ(client.go("shared").final_type, rep_ack);
}

TEST_F(NbdServer, AnUnknownHostNameIsReportedAsTheStartOutcome) {
  server s(io_, "shared", "tcp://no-such-host.invalid:10809", [] { return nullptr; });
  auto st = s.start();
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("no-such-host.invalid"), std::string::npos) << st.message();
  ASSERT_TRUE(s.start_outcome().has_value());
  EXPECT_FALSE(s.start_outcome()->is_ok());
}

// --- Handshake
// ------------------------------------------------------------------------------------

TEST_F(NbdServer, GreetingOffersFixedNewstyleAndNoZeroes) {
  start_server();
  auto client = connect();
  EXPECT_EQ(client.handshake(), flag_fixed_newstyle | flag_no_zeroes);
}

TEST_F(NbdServer, GoDescribesTheExportAndEntersTransmission) {
  store_->description = "hast resource shared";
  start_server();
  auto client = connect();
  client.handshake();
  auto go = client.go("shared");
  ASSERT_EQ(go.final_type, rep_ack) << go.message;
  EXPECT_EQ(go.size, default_size);
  EXPECT_EQ(go.flags, flag_has_flags | flag_send_flush | flag_send_fua | flag_send_trim
                          | flag_send_write_zeroes | flag_can_multi_conn);
  EXPECT_EQ(go.name, "shared");
  EXPECT_EQ(go.description, "hast resource shared");
  EXPECT_EQ(go.min_block, 1u);
  EXPECT_EQ(go.preferred_block, 4096u);
  EXPECT_EQ(go.max_block, 32u << 20);
  std::vector<uint8_t> out;
  EXPECT_EQ(client.read(0, 512, out), 0u);
}

TEST_F(NbdServer, GoWithAnEmptyNameSelectsTheExport) {
  start_server();
  auto client = connect();
  client.handshake();
  auto go = client.go("");
  EXPECT_EQ(go.final_type, rep_ack) << go.message;
  EXPECT_EQ(go.size, default_size);
}

TEST_F(NbdServer, InfoDescribesTheExportAndStaysInTheHandshake) {
  start_server();
  auto client = connect();
  client.handshake();
  auto info = client.go("shared", opt_info);
  ASSERT_EQ(info.final_type, rep_ack) << info.message;
  EXPECT_EQ(info.size, default_size);
  // Still haggling: GO works next, and the backend was opened only once.
  auto go = client.go("shared");
  ASSERT_EQ(go.final_type, rep_ack) << go.message;
  EXPECT_EQ(store_->opens, 1);
  std::vector<uint8_t> out;
  EXPECT_EQ(client.read(0, 512, out), 0u);
}

TEST_F(NbdServer, ListReturnsTheExportName) {
  start_server("shared");
  auto client = connect();
  client.handshake();
  client.send_option(opt_list);
  auto server_reply = client.read_option_reply();
  EXPECT_EQ(server_reply.header.option, opt_list);
  ASSERT_EQ(server_reply.header.type, rep_server);
  ASSERT_GE(server_reply.payload.size(), 4u);
  EXPECT_EQ(get_be32(server_reply.payload.data()), 6u);
  EXPECT_EQ(std::string(server_reply.payload.begin() + 4, server_reply.payload.end()), "shared");
  EXPECT_EQ(client.read_option_reply().header.type, rep_ack);
  // LIST does not open the export.
  EXPECT_EQ(store_->opens, 0);
}

TEST_F(NbdServer, ListWithDataIsInvalid) {
  start_server();
  auto client = connect();
  client.handshake();
  client.send_option(opt_list, {1, 2, 3});
  EXPECT_EQ(client.read_option_reply().header.type, rep_err_invalid);
}

TEST_F(NbdServer, BackendRefusalGivesErrUnknownWithTheMessageText) {
  store_->refusal = "resource shared is not primary (role secondary)";
  start_server();
  auto client = connect();
  client.handshake();
  auto go = client.go("shared");
  EXPECT_EQ(go.final_type, rep_err_unknown);
  EXPECT_EQ(go.message, "resource shared is not primary (role secondary)");
  // The client may try again once the resource is primary.
  store_->refusal.clear();
  go = client.go("shared");
  EXPECT_EQ(go.final_type, rep_ack) << go.message;
}

TEST_F(NbdServer, UnknownExportNameGivesErrUnknown) {
  start_server("shared");
  auto client = connect();
  client.handshake();
  auto go = client.go("other");
  EXPECT_EQ(go.final_type, rep_err_unknown);
  EXPECT_NE(go.message.find("other"), std::string::npos);
  EXPECT_EQ(store_->opens, 0);
}

TEST_F(NbdServer, MalformedGoDataIsInvalidAndTheHandshakeGoesOn) {
  start_server();
  auto client = connect();
  client.handshake();
  client.send_option(opt_go, {0, 0, 0, 9, 'x'});
  EXPECT_EQ(client.read_option_reply().header.type, rep_err_invalid);
  auto go = client.go("shared");
  EXPECT_EQ(go.final_type, rep_ack) << go.message;
}

TEST_F(NbdServer, StructuredRepliesAndUnknownOptionsAreUnsupported) {
  start_server();
  auto client = connect();
  client.handshake();
  for (uint32_t option : {opt_structured_reply, opt_starttls, opt_extended_headers, 4242u}) {
    client.send_option(option);
    auto reply = client.read_option_reply();
    EXPECT_EQ(reply.header.option, option);
    EXPECT_EQ(reply.header.type, rep_err_unsup) << option;
  }
}

TEST_F(NbdServer, AbortIsAcknowledgedThenTheConnectionCloses) {
  auto& s = start_server();
  auto client = connect();
  client.handshake();
  client.send_option(opt_abort);
  auto reply = client.read_option_reply();
  EXPECT_EQ(reply.header.option, opt_abort);
  EXPECT_EQ(reply.header.type, rep_ack);
  EXPECT_TRUE(client.closed_by_server());
  EXPECT_TRUE(wait_until([&] { return s.connections() == 0; }));
}

TEST_F(NbdServer, ExportNameEntersTransmissionWithTheReservedZeroes) {
  start_server();
  auto client = connect();
  client.handshake(flag_c_fixed_newstyle); // no NO_ZEROES: expect 124 zero bytes
  client.send_option(opt_export_name, {'s', 'h', 'a', 'r', 'e', 'd'});
  auto reply = client.receive(8 + 2 + 124);
  EXPECT_EQ(get_be64(reply.data()), default_size);
  EXPECT_TRUE(get_be16(reply.data() + 8) & flag_has_flags);
  EXPECT_TRUE(std::all_of(reply.begin() + 10, reply.end(), [](uint8_t b) { return b == 0; }));
  std::vector<uint8_t> out;
  EXPECT_EQ(client.read(0, 512, out), 0u);
}

TEST_F(NbdServer, ExportNameRefusedByTheBackendClosesTheConnection) {
  store_->refusal = "not primary";
  start_server();
  auto client = connect();
  client.handshake();
  client.send_option(opt_export_name, {});
  EXPECT_TRUE(client.closed_by_server());
}

TEST_F(NbdServer, UnknownClientFlagsCloseTheConnection) {
  start_server();
  auto client = connect();
  client.handshake(flag_c_fixed_newstyle | 0x100);
  EXPECT_TRUE(client.closed_by_server());
}

TEST_F(NbdServer, AnOptionOver64KibClosesTheConnection) {
  start_server();
  auto client = connect();
  client.handshake();
  client.send(encode_option_header({opt_go, (64u << 10) + 1}));
  EXPECT_TRUE(client.closed_by_server());
}

TEST_F(NbdServer, BadOptionMagicClosesTheConnection) {
  start_server();
  auto client = connect();
  client.handshake();
  std::array<uint8_t, option_header_size> junk{};
  client.send(junk);
  EXPECT_TRUE(client.closed_by_server());
}

TEST_F(NbdServer, TooManyOptionsInOneHandshakeCloseTheConnection) {
  start_server();
  auto client = connect();
  client.handshake();
  for (int i = 0; i < 64; ++i) {
    client.send_option(opt_structured_reply);
    EXPECT_EQ(client.read_option_reply().header.type, rep_err_unsup);
  }
  client.send_option(opt_structured_reply);
  EXPECT_TRUE(client.closed_by_server());
}

TEST(NbdServerLimits, TheHandshakeTimeLimitIsTenSeconds) {
  EXPECT_EQ(handshake_time_limit, std::chrono::seconds(10));
}

TEST_F(NbdServer, ClientsThatStallInTheHandshakeAreClosedWithinTheLimitAndOthersWork) {
  handshake_limit_ = 400ms;
  start_server();
  const auto connected = std::chrono::steady_clock::now();
  // Reads the greeting and sends nothing more.
  auto silent = connect();
  silent.receive(handshake_size);
  // Sends its flags and half an option header.
  auto halfway = connect();
  halfway.handshake();
  auto header = encode_option_header({opt_go, 0});
  halfway.send(header.data(), header.size() / 2);
  // Finishes its handshake at once, then stays idle past the limit.
  auto proper = attached();

  EXPECT_TRUE(silent.closed_by_server());
  EXPECT_TRUE(halfway.closed_by_server());
  const auto waited = std::chrono::steady_clock::now() - connected;
  EXPECT_GE(waited, 350ms);
  EXPECT_LT(waited, 5s);  // well before the clients' own 10 s receive timeout
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(proper.write(0, pattern(4096, 7)), 0u);
  std::vector<uint8_t> out;
  EXPECT_EQ(proper.read(0, 4096, out), 0u);
  EXPECT_EQ(out, pattern(4096, 7));
  EXPECT_EQ(servers_.back()->connections(), 1u);
  // A client that connects later gets the whole limit again.
  auto late = attached();
  EXPECT_EQ(late.read(0, 4096, out), 0u);
}

// --- Transmission
// ----------------------------------------------------------------------------------

TEST_F(NbdServer, WriteReadFlushTrimWriteZeroesAndDiscWork) {
  auto& s = start_server();
  auto client = attached();
  const auto data = pattern(64 << 10, 1);
  ASSERT_EQ(client.write(4096, data), 0u);
  EXPECT_EQ(stored(4096, data.size()), data);

  std::vector<uint8_t> out;
  ASSERT_EQ(client.read(4096, static_cast<uint32_t>(data.size()), out), 0u);
  EXPECT_EQ(out, data);

  EXPECT_EQ(client.write(0, pattern(512, 2), cmd_flag_fua), 0u);
  EXPECT_EQ(store_->fua_writes, 1);

  EXPECT_EQ(client.command(cmd_flush, 0, 0), 0u);
  EXPECT_EQ(store_->flushes, 1);

  EXPECT_EQ(client.command(cmd_trim, 4096, 4096), 0u);
  EXPECT_EQ(store_->trims, 1);

  EXPECT_EQ(client.command(cmd_write_zeroes, 8192, 4096), 0u);
  EXPECT_EQ(store_->zeroes_may_trim, 1);
  EXPECT_EQ(client.command(cmd_write_zeroes, 12288, 4096, cmd_flag_no_hole), 0u);
  EXPECT_EQ(store_->zeroes_no_hole, 1);
  ASSERT_EQ(client.read(8192, 8192, out), 0u);
  EXPECT_EQ(out, std::vector<uint8_t>(8192, 0));

  client.send_request(cmd_disc, 0, 0);
  EXPECT_TRUE(client.closed_by_server());
  EXPECT_TRUE(wait_until([&] { return store_->closes == 1; }));
  EXPECT_TRUE(wait_until([&] { return s.connections() == 0; }));
  EXPECT_EQ(store_->opens, 1);
}

TEST_F(NbdServer, UnalignedAndWholeExportRequestsWork) {
  start_server();
  auto client = attached();
  const auto data = pattern(1000, 3);
  ASSERT_EQ(client.write(default_size - 1000, data), 0u);
  std::vector<uint8_t> out;
  ASSERT_EQ(client.read(default_size - 1000, 1000, out), 0u);
  EXPECT_EQ(out, data);
  ASSERT_EQ(client.read(0, static_cast<uint32_t>(default_size), out), 0u);
  EXPECT_EQ(out.size(), default_size);
}

TEST_F(NbdServer, PipelinedRequestsAreAllAnsweredByCookie) {
  start_server();
  auto client = attached();
  constexpr int n = 48;
  std::map<uint64_t, std::vector<uint8_t>> written;
  for (int i = 0; i < n; ++i) {
    auto data = pattern(4096, 100 + i);
    client.send_request(cmd_write, static_cast<uint64_t>(i) * 4096, 4096, 0, 1000 + i);
    client.send(data);
    written[i] = std::move(data);
  }
  for (int i = 0; i < n; ++i) {
    auto reply = client.read_reply();
    EXPECT_EQ(reply.error, 0u);
    EXPECT_GE(reply.cookie, 1000u);
    EXPECT_LT(reply.cookie, 1000u + n);
  }
  for (int i = 0; i < n; ++i)
    client.send_request(cmd_read, static_cast<uint64_t>(i) * 4096, 4096, 0, 2000 + i);
  std::set<uint64_t> seen;
  for (int i = 0; i < n; ++i) {
    auto reply = client.read_reply();
    ASSERT_EQ(reply.error, 0u);
    ASSERT_GE(reply.cookie, 2000u);
    ASSERT_LT(reply.cookie, 2000u + n);
    EXPECT_EQ(client.receive(4096), written[reply.cookie - 2000]);
    seen.insert(reply.cookie);
  }
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(n));
}

TEST_F(NbdServer, ReadPastTheEndGetsEinvalAndTheConnectionLivesOn) {
  start_server();
  auto client = attached();
  std::vector<uint8_t> out;
  EXPECT_EQ(client.read(default_size - 512, 1024, out), einval);
  EXPECT_EQ(client.read(default_size - 512, 512, out), 0u);
  EXPECT_EQ(out.size(), 512u);
}

TEST_F(NbdServer, WritePastTheEndGetsEnospcAfterItsPayloadAndTheConnectionLivesOn) {
  start_server();
  auto client = attached();
  EXPECT_EQ(client.write(default_size - 512, pattern(100000, 4)), enospc);
  const auto data = pattern(512, 5);
  EXPECT_EQ(client.write(default_size - 512, data), 0u);
  std::vector<uint8_t> out;
  ASSERT_EQ(client.read(default_size - 512, 512, out), 0u);
  EXPECT_EQ(out, data);
}

// --- The device view (device_view_name) ----------------------------------------------------

TEST_F(NbdServer, TheDeviceViewAdvertisesTheCeilingAndThePlainExportTheDataSize) {
  store_->grown_size = 64 << 10;
  store_->ceiling = default_size;
  start_server();
  auto plain = connect();
  plain.handshake();
  auto go = plain.go("shared", opt_info);
  ASSERT_EQ(go.final_type, rep_ack) << go.message;
  EXPECT_EQ(go.size, 64u << 10);
  auto device = connect();
  device.handshake();
  go = device.go(device_view_name("shared"));
  ASSERT_EQ(go.final_type, rep_ack) << go.message;
  EXPECT_EQ(go.size, default_size);
  EXPECT_EQ(go.name, "shared/device");
}

TEST_F(NbdServer, TheDeviceViewReadsZerosAndRefusesWritesPastTheDataSize) {
  constexpr uint64_t data_size = 64 << 10;
  store_->grown_size = data_size;
  store_->ceiling = default_size;
  {
    std::lock_guard lock{store_->mutex};
    std::fill(store_->data.begin(), store_->data.end(), uint8_t{0xAB});
  }
  start_server();
  auto client = attached(device_view_name("shared"));
  std::vector<uint8_t> out;
  // Wholly past: zeros, without asking the backend.
  ASSERT_EQ(client.read(data_size, 8192, out), 0u);
  EXPECT_EQ(out, std::vector<uint8_t>(8192, 0));
  // Across the end: the data, then zeros.
  ASSERT_EQ(client.read(data_size - 512, 1024, out), 0u);
  EXPECT_EQ(std::vector<uint8_t>(out.begin(), out.begin() + 512), std::vector<uint8_t>(512, 0xAB));
  EXPECT_EQ(std::vector<uint8_t>(out.begin() + 512, out.end()), std::vector<uint8_t>(512, 0));
  // Writes, trims and zeroing past the end: ENOSPC, nothing stored.
  EXPECT_EQ(client.write(data_size, pattern(4096, 3)), enospc);
  EXPECT_EQ(client.write(data_size - 512, pattern(1024, 3)), enospc);
  EXPECT_EQ(client.command(cmd_trim, data_size, 4096), enospc);
  EXPECT_EQ(client.command(cmd_write_zeroes, data_size - 4096, 8192), enospc);
  EXPECT_EQ(stored(data_size - 512, 1024 + 8192), std::vector<uint8_t>(1024 + 8192, 0xAB));
  // Inside: as the plain export.
  const auto data = pattern(4096, 4);
  ASSERT_EQ(client.write(data_size - 4096, data), 0u);
  ASSERT_EQ(client.read(data_size - 4096, 4096, out), 0u);
  EXPECT_EQ(out, data);
  EXPECT_EQ(client.command(cmd_flush, 0, 0), 0u);
  // Past the ceiling: refused as for any export.
  EXPECT_EQ(client.read(default_size - 512, 1024, out), einval);
}

TEST_F(NbdServer, TheDeviceViewFollowsTheDataSizeAsItGrowsOnAnOpenConnection) {
  constexpr uint64_t data_size = 64 << 10;
  store_->grown_size = data_size;
  store_->ceiling = default_size;
  start_server();
  auto device = attached(device_view_name("shared"));
  auto plain = attached("shared");
  const auto data = pattern(8192, 6);
  EXPECT_EQ(device.write(data_size, data), enospc);
  store_->grown_size = 2 * data_size;
  ASSERT_EQ(device.write(data_size, data), 0u);
  std::vector<uint8_t> out;
  ASSERT_EQ(device.read(data_size, 8192, out), 0u);
  EXPECT_EQ(out, data);
  EXPECT_EQ(stored(data_size, 8192), data);
  EXPECT_EQ(device.write(2 * data_size, data), enospc);
  // The plain connection keeps the size it negotiated.
  EXPECT_EQ(plain.read(data_size, 4096, out), einval);
}

TEST_F(NbdServer, UnknownCommandGetsEinvalAndTheConnectionLivesOn) {
  start_server();
  auto client = attached();
  EXPECT_EQ(client.command(42, 0, 512), einval);
  EXPECT_EQ(client.command(cmd_block_status, 0, 512), einval);
  EXPECT_EQ(client.command(cmd_read, 0, 512, 0x4000), einval); // unknown flag
  std::vector<uint8_t> out;
  EXPECT_EQ(client.read(0, 512, out), 0u);
}

TEST_F(NbdServer, ZeroLengthReadGetsEinvalAndTheConnectionLivesOn) {
  start_server();
  auto client = attached();
  EXPECT_EQ(client.command(cmd_read, 0, 0), einval);
  std::vector<uint8_t> out;
  EXPECT_EQ(client.read(0, 512, out), 0u);
}

TEST_F(NbdServer, WriteOver32MibClosesTheConnection) {
  store_ = std::make_shared<memory_store>(64u << 20);
  store_->worker = &worker_;
  start_server();
  auto client = attached();
  client.send_request(cmd_write, 0, (32u << 20) + 1);
  EXPECT_TRUE(client.closed_by_server());
}

TEST_F(NbdServer, BadRequestMagicClosesOnlyThatConnection) {
  auto& s = start_server();
  auto bad = attached();
  auto good = attached();
  std::array<uint8_t, request_size> junk{};
  junk.fill(0xab);
  bad.send(junk);
  EXPECT_TRUE(bad.closed_by_server());
  const auto data = pattern(4096, 6);
  EXPECT_EQ(good.write(0, data), 0u);
  std::vector<uint8_t> out;
  ASSERT_EQ(good.read(0, 4096, out), 0u);
  EXPECT_EQ(out, data);
  EXPECT_TRUE(wait_until([&] { return s.connections() == 1; }));
  // A new client is welcome too.
  auto third = attached();
  EXPECT_EQ(third.read(0, 4096, out), 0u);
}

TEST_F(NbdServer, BackendErrorsAreAnsweredWithProtocolErrorValues) {
  start_server();
  auto client = attached();
  store_->io_error = eio;
  std::vector<uint8_t> out;
  EXPECT_EQ(client.read(0, 512, out), eio);
  EXPECT_EQ(client.write(0, pattern(512, 8)), eio);
  // An errno the protocol does not define goes out as EIO.
  store_->io_error = 9999;
  EXPECT_EQ(client.command(cmd_flush, 0, 0), eio);
  store_->io_error = enospc;
  EXPECT_EQ(client.write(0, pattern(512, 8)), enospc);
  store_->io_error = 0;
  EXPECT_EQ(client.read(0, 512, out), 0u);
}

TEST_F(NbdServer, BackendIsClosedOnceWhenTheClientVanishesWithoutDisc) {
  auto& s = start_server();
  {
    auto client = attached();
    EXPECT_EQ(client.write(0, pattern(4096, 9)), 0u);
  }
  EXPECT_TRUE(wait_until([&] { return store_->closes == 1; }));
  EXPECT_TRUE(wait_until([&] { return s.connections() == 0; }));
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(store_->closes, 1);
}

TEST_F(NbdServer, BackendIsNotClosedIfItWasNeverOpened) {
  auto& s = start_server();
  {
    auto client = connect();
    client.handshake();
    client.send_option(opt_list);
    client.read_option_reply();
    client.read_option_reply();
  }
  EXPECT_TRUE(wait_until([&] { return s.connections() == 0; }));
  EXPECT_EQ(store_->closes, 0);
}

// --- Batches
// ---------------------------------------------------------------------------------------

/// Appends one request (and a WRITE's payload) to what a client will send
/// with a single send().
void append_request(std::vector<uint8_t>& out, uint16_t type, uint64_t offset, uint32_t length,
                    uint64_t cookie, uint16_t flags = 0, const std::vector<uint8_t>& payload = {}) {
  const auto header = encode_request({flags, type, cookie, offset, length});
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), payload.begin(), payload.end());
}

struct answer {
  uint32_t error = 0;
  std::vector<uint8_t> data;
};

/// Reads `count` replies in whatever order they come; `read_lengths` says
/// which cookies are READs and how much data follows their success.
std::map<uint64_t, answer> collect(test_client& client, std::size_t count,
                                   const std::map<uint64_t, uint32_t>& read_lengths,
                                   std::vector<uint64_t>* order = nullptr) {
  std::map<uint64_t, answer> out;
  for (std::size_t i = 0; i < count; ++i) {
    auto reply = client.read_reply();
    answer a{reply.error, {}};
    if (auto it = read_lengths.find(reply.cookie); it != read_lengths.end() && reply.error == 0)
      a.data = client.receive(it->second);
    EXPECT_TRUE(out.emplace(reply.cookie, std::move(a)).second)
        << "cookie " << reply.cookie << " answered twice";
    if (order)
      order->push_back(reply.cookie);
  }
  return out;
}

TEST_F(NbdServer, RequestsSentTogetherReachTheBackendAsOneBatch) {
  start_server();
  auto client = attached();
  const auto a = pattern(4096, 20);
  const auto b = pattern(512, 21);
  std::vector<uint8_t> bytes;
  append_request(bytes, cmd_write, 0, 4096, 1, 0, a);
  append_request(bytes, cmd_write, 8192, 512, 2, cmd_flag_fua, b);
  append_request(bytes, cmd_read, 0, 4096, 3);
  append_request(bytes, cmd_flush, 0, 0, 4);
  append_request(bytes, cmd_trim, 65536, 4096, 5);
  append_request(bytes, cmd_write_zeroes, 69632, 4096, 6, cmd_flag_no_hole);
  append_request(bytes, cmd_read, 8192, 512, 7);
  client.send(bytes); // about 5 KiB: one segment on a Unix socket, one read for the server

  auto answers = collect(client, 7, {{3, 4096}, {7, 512}});
  ASSERT_EQ(answers.size(), 7u);
  for (const auto& [cookie, ans] : answers)
    EXPECT_EQ(ans.error, 0u) << "cookie " << cookie;
  // The batch is in arrival order: the reads see the writes before them.
  EXPECT_EQ(answers[3].data, a);
  EXPECT_EQ(answers[7].data, b);
  EXPECT_EQ(store_->batches(), std::vector<std::size_t>{7});
  EXPECT_EQ(store_->fua_writes, 1);
  EXPECT_EQ(store_->flushes, 1);
  EXPECT_EQ(store_->trims, 1);
  EXPECT_EQ(store_->zeroes_no_hole, 1);
}

TEST_F(NbdServer, ALoneRequestIsABatchOfOneAndIsAnsweredWithoutCompany) {
  start_server();
  auto client = attached();
  // Each request waits for its reply before the next is sent: a session that
  // held a batch open for more requests would never answer (the client's
  // receive times out and the test fails).
  const auto data = pattern(4096, 22);
  ASSERT_EQ(client.write(0, data), 0u);
  std::vector<uint8_t> out;
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(client.read(0, 4096, out), 0u);
    EXPECT_EQ(out, data);
  }
  EXPECT_EQ(client.command(cmd_flush, 0, 0), 0u);
  EXPECT_EQ(store_->batches(), std::vector<std::size_t>(12, 1));
}

TEST_F(NbdServer, AWritePayloadArrivingInPiecesIsAssembled) {
  start_server();
  auto client = attached();

  // The header alone, then the payload in slow chunks: read straight into
  // the write's block.
  const auto small = pattern(3000, 23);
  client.send_request(cmd_write, 4096, 3000, 0, 1);
  for (std::size_t at = 0; at < small.size(); at += 1000) {
    std::this_thread::sleep_for(20ms);
    client.send(small.data() + at, 1000);
  }
  auto reply = client.read_reply();
  EXPECT_EQ(reply.cookie, 1u);
  EXPECT_EQ(reply.error, 0u);
  EXPECT_EQ(stored(4096, small.size()), small);

  // Larger than the receive buffer: the header with the start of the
  // payload, more later, and the end together with the next request.
  const auto large = pattern(300u << 10, 24);
  std::vector<uint8_t> first;
  append_request(first, cmd_write, 65536, static_cast<uint32_t>(large.size()), 2);
  first.insert(first.end(), large.begin(), large.begin() + 1000);
  client.send(first);
  std::this_thread::sleep_for(20ms);
  client.send(large.data() + 1000, 100000);
  std::this_thread::sleep_for(20ms);
  std::vector<uint8_t> last(large.begin() + 101000, large.end());
  append_request(last, cmd_read, 65536, static_cast<uint32_t>(large.size()), 3);
  client.send(last);

  auto answers = collect(client, 2, {{3, static_cast<uint32_t>(large.size())}});
  EXPECT_EQ(answers[2].error, 0u);
  EXPECT_EQ(answers[3].error, 0u);
  EXPECT_TRUE(answers[3].data == large);
  EXPECT_TRUE(stored(65536, large.size()) == large);
}

TEST_F(NbdServer, ARefusedWriteAmidPipelinedRequestsGetsItsErrorAndTheOthersSucceed) {
  start_server();
  auto client = attached();
  const auto a = pattern(4096, 25);
  std::vector<uint8_t> bytes;
  append_request(bytes, cmd_write, 0, 4096, 1, 0, a);
  // Past the end: refused, and its payload must be skipped, not parsed.
  append_request(bytes, cmd_write, default_size - 512, 4096, 2, 0, pattern(4096, 26));
  append_request(bytes, cmd_read, 0, 4096, 3);
  append_request(bytes, cmd_flush, 0, 0, 4);
  client.send(bytes);

  auto answers = collect(client, 4, {{3, 4096}});
  EXPECT_EQ(answers[1].error, 0u);
  EXPECT_EQ(answers[2].error, enospc);
  EXPECT_EQ(answers[3].error, 0u);
  EXPECT_EQ(answers[3].data, a);
  EXPECT_EQ(answers[4].error, 0u);
  // The refused write was answered by the session, never submitted.
  EXPECT_EQ(store_->batches(), std::vector<std::size_t>{3});
  std::vector<uint8_t> out;
  ASSERT_EQ(client.read(default_size - 512, 512, out), 0u);
  EXPECT_EQ(out, std::vector<uint8_t>(512, 0));
}

TEST_F(NbdServer, ARefusedWriteLargerThanTheReceiveBufferIsSkippedAcrossReads) {
  start_server();
  auto client = attached();
  const auto junk = pattern(600u << 10, 27);
  std::vector<uint8_t> bytes;
  append_request(bytes, cmd_write, default_size - 512, static_cast<uint32_t>(junk.size()), 1, 0,
                 junk);
  append_request(bytes, cmd_read, 0, 512, 2);
  client.send(bytes);
  auto answers = collect(client, 2, {{2, 512}});
  EXPECT_EQ(answers[1].error, enospc);
  EXPECT_EQ(answers[2].error, 0u);
  EXPECT_EQ(answers[2].data.size(), 512u);
  EXPECT_EQ(store_->batches(), std::vector<std::size_t>{1});
}

TEST_F(NbdServer, RepliesDeliveredInOneCallAllReachTheClient) {
  start_server();
  auto client = attached();
  {
    std::lock_guard lock{store_->mutex};
    store_->hold = true;
  }
  // Write acknowledgements alternate with READ data, so the gathered write
  // mixes runs of reply headers with payload buffers, over many writevs.
  constexpr int n = 200;
  std::vector<uint8_t> bytes;
  std::map<uint64_t, uint32_t> reads;
  for (int i = 0; i < n; ++i) {
    append_request(bytes, cmd_write, i * 4096u, 4096, 1000 + i, 0, pattern(4096, 1000 + i));
    append_request(bytes, cmd_read, i * 4096u, 4096, 2000 + i);
    reads[2000 + i] = 4096;
  }
  client.send(bytes);
  ASSERT_TRUE(wait_until([&] { return store_->held_count() == 2 * n; }));
  EXPECT_EQ(store_->deliveries, 0);
  store_->release();

  auto answers = collect(client, 2 * n, reads);
  ASSERT_EQ(answers.size(), 2u * n);
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(answers[1000 + i].error, 0u);
    EXPECT_EQ(answers[2000 + i].error, 0u);
    EXPECT_TRUE(answers[2000 + i].data == pattern(4096, 1000 + i)) << i;
  }
  EXPECT_EQ(store_->deliveries, 1);
}

TEST_F(NbdServer, RepliesMayComeBackInAnyOrderAndInBatchesOfAnySize) {
  start_server();
  auto client = attached();
  {
    std::lock_guard lock{store_->mutex};
    store_->hold = true;
  }
  std::vector<uint8_t> bytes;
  std::map<uint64_t, uint32_t> reads;
  for (uint64_t cookie = 1; cookie <= 10; ++cookie) {
    append_request(bytes, cmd_read, (cookie - 1) * 512, 512, cookie);
    reads[cookie] = 512;
  }
  client.send(bytes);
  ASSERT_TRUE(wait_until([&] { return store_->held_count() == 10; }));
  store_->release(/*one_by_one_reversed=*/true);

  std::vector<uint64_t> order;
  auto answers = collect(client, 10, reads, &order);
  // Deliveries from one thread reach the strand, and so the wire, in order.
  EXPECT_EQ(order, (std::vector<uint64_t>{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}));
  for (const auto& [cookie, ans] : answers) {
    EXPECT_EQ(ans.error, 0u);
    EXPECT_EQ(ans.data, stored((cookie - 1) * 512, 512));
  }
  std::vector<uint8_t> out;
  EXPECT_EQ(client.read(0, 512, out), 0u);
}

TEST_F(NbdServer, ParsingPausesAt512OutstandingRequestsAndResumesFromTheBuffer) {
  start_server();
  auto client = attached();
  {
    std::lock_guard lock{store_->mutex};
    store_->hold = true;
  }
  constexpr int n = 600;
  std::vector<uint8_t> bytes;
  std::map<uint64_t, uint32_t> reads;
  for (int i = 0; i < n; ++i) {
    append_request(bytes, cmd_read, (i % 64) * 512u, 512, i + 1);
    reads[i + 1] = 512;
  }
  client.send(bytes); // 16.8 KiB: all of it lands in the receive buffer at once
  ASSERT_TRUE(wait_until([&] { return store_->held_count() == 512; }));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(store_->submitted, 512);
  store_->release();

  auto answers = collect(client, n, reads);
  EXPECT_EQ(answers.size(), static_cast<std::size_t>(n));
  const auto batches = store_->batches();
  std::size_t total = 0;
  bool paused_at_limit = false;
  for (auto size : batches) {
    total += size;
    paused_at_limit = paused_at_limit || total == 512;
  }
  EXPECT_EQ(total, static_cast<std::size_t>(n));
  EXPECT_TRUE(paused_at_limit);
}

TEST_F(NbdServer, BadMagicAfterValidRequestsClosesTheConnectionOnceTheBackendHasAnswered) {
  auto& s = start_server();
  auto other = attached();
  auto bad = attached();
  {
    std::lock_guard lock{store_->mutex};
    store_->hold = true;
  }
  const auto data = pattern(4096, 28);
  std::vector<uint8_t> bytes;
  append_request(bytes, cmd_write, 0, 4096, 1, 0, data);
  append_request(bytes, cmd_read, 0, 4096, 2);
  bytes.insert(bytes.end(), request_size, 0xab);
  bad.send(bytes);
  EXPECT_TRUE(bad.closed_by_server());
  // The requests before the bad one reached the backend, as one batch.
  EXPECT_EQ(store_->batches(), std::vector<std::size_t>{2});
  EXPECT_EQ(stored(0, 4096), data);
  // Two requests are unanswered: the backend is not closed yet, nor once
  // one of them is answered (close() itself checks that none is left).
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(store_->closes, 0);
  store_->release_one();
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(store_->closes, 0);
  store_->release();
  EXPECT_TRUE(wait_until([&] { return store_->closes == 1; }));
  // The other connection never noticed.
  std::vector<uint8_t> out;
  ASSERT_EQ(other.read(0, 4096, out), 0u);
  EXPECT_EQ(out, data);
  EXPECT_TRUE(wait_until([&] { return s.connections() == 1; }));
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(store_->closes, 1);
}

TEST_F(NbdServer, DiscAfterPipelinedRequestsAnswersThemBeforeClosing) {
  auto& s = start_server();
  auto client = attached();
  const auto data = pattern(4096, 29);
  std::vector<uint8_t> bytes;
  append_request(bytes, cmd_write, 0, 4096, 1, 0, data);
  append_request(bytes, cmd_read, 0, 4096, 2);
  append_request(bytes, cmd_disc, 0, 0, 3);
  client.send(bytes);
  auto answers = collect(client, 2, {{2, 4096}});
  EXPECT_EQ(answers[1].error, 0u);
  EXPECT_EQ(answers[2].data, data);
  EXPECT_TRUE(client.closed_by_server());
  EXPECT_TRUE(wait_until([&] { return store_->closes == 1; }));
  EXPECT_TRUE(wait_until([&] { return s.connections() == 0; }));
}

// --- Real clients (libnbd)
// -------------------------------------------------------------------------

TEST_F(NbdServer, NbdinfoSeesTheSizeAndTheAdvertisedFeatures) {
  if (!fs::exists("/usr/bin/nbdinfo"))
    GTEST_SKIP() << "nbdinfo is not installed";
  start_server();
  auto [status, output] = run("/usr/bin/nbdinfo --json '" + uri() + "'");
  ASSERT_EQ(status, 0) << output;
  auto doc = nlohmann::json::parse(output, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << output;
  ASSERT_TRUE(doc.contains("exports")) << output;
  ASSERT_EQ(doc["exports"].size(), 1u) << output;
  const auto& e = doc["exports"][0];
  EXPECT_EQ(e.value("export-size", uint64_t{0}), default_size);
  EXPECT_TRUE(e.value("can_multi_conn", false)) << output;
  EXPECT_TRUE(e.value("can_flush", false)) << output;
  EXPECT_TRUE(e.value("can_fua", false)) << output;
  EXPECT_TRUE(e.value("can_trim", false)) << output;
  EXPECT_TRUE(e.value("can_zero", false)) << output;
  EXPECT_FALSE(e.value("is_read_only", true)) << output;
}

TEST_F(NbdServer, NbdinfoPrintsTheBackendsRefusal) {
  if (!fs::exists("/usr/bin/nbdinfo"))
    GTEST_SKIP() << "nbdinfo is not installed";
  store_->refusal = "resource shared is not primary (role secondary)";
  start_server();
  // libnbd 1.14 shows the server's message only in its debug output
  // ("server error message: ..."); qemu-img prints it as "server reported".
  auto [status, output] = run("LIBNBD_DEBUG=1 /usr/bin/nbdinfo '" + uri() + "'");
  EXPECT_NE(status, 0) << output;
  EXPECT_NE(output.find("resource shared is not primary (role secondary)"), std::string::npos)
      << output;
}

TEST_F(NbdServer, NbdcopyCopies8MibInAndOutUnchanged) {
  if (!fs::exists("/usr/bin/nbdcopy"))
    GTEST_SKIP() << "nbdcopy is not installed";
  constexpr std::size_t size = 8u << 20;
  store_ = std::make_shared<memory_store>(size);
  store_->worker = &worker_;
  auto& s = start_server();

  std::vector<uint8_t> random(size);
  std::random_device rd;
  std::mt19937_64 gen(rd());
  for (std::size_t i = 0; i < size; i += 8) {
    const uint64_t v = gen();
    std::memcpy(random.data() + i, &v, 8);
  }
  const auto in = dir_ / "in.img";
  const auto out = dir_ / "out.img";
  std::ofstream(in, std::ios::binary)
      .write(reinterpret_cast<const char*>(random.data()), static_cast<std::streamsize>(size));
  fs::resize_file(in, size);
  std::ofstream(out, std::ios::binary).close();
  fs::resize_file(out, size);

  auto [up, up_output] = run("/usr/bin/nbdcopy '" + in.string() + "' '" + uri() + "'");
  ASSERT_EQ(up, 0) << up_output;
  EXPECT_TRUE(stored(0, size) == random) << "the export differs from what was copied in";

  auto [down, down_output] = run("/usr/bin/nbdcopy '" + uri() + "' '" + out.string() + "'");
  ASSERT_EQ(down, 0) << down_output;
  const auto copied = slurp(out);
  ASSERT_EQ(copied.size(), size);
  EXPECT_EQ(std::memcmp(copied.data(), random.data(), size), 0)
      << "the bytes copied out differ from those copied in";
  EXPECT_TRUE(wait_until([&] { return s.connections() == 0; }));
  EXPECT_EQ(store_->opens.load(), store_->closes.load());
}

} // namespace
} // namespace hast::nbd
