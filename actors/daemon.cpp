#include "actors/daemon.hpp"

#include "actors/data_thread.hpp"

#include "actors/events.hpp"
#include "actors/peer.hpp"
#include "actors/supervisor.hpp"
#include "io/asio.hpp"
#include "io/control_channel.hpp"
#include "io/hooks.hpp"
#include "io/metrics_server.hpp"
#include "io/peer_transport.hpp"
#include "base/metrics.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <list>
#include <mutex>
#include <pthread.h>
#include <set>
#include <sysexits.h>
#include <thread>
#include <unistd.h>

namespace hast {

namespace {

// hastctl waits for the slowest thing the supervisor waits for: a role change.
constexpr auto control_timeout = role_change_timeout + supervisor_margin;

std::string render_error(caf::actor_system& sys, const caf::error& err) {
  return sys.render(err);  // the "hast" renderer (configure below) gives our sentence
}

nlohmann::json names_of(const nlohmann::json& request) {
  auto names = request.value("resources", nlohmann::json::array());
  if (!names.is_array())
    throw std::invalid_argument("\"resources\" must be an array");
  return names;
}

/// `hastctl events`: the confirmed connection goes to the event hub.
void handle_stream(const event_hub_actor& hub, const nlohmann::json& request, int fd) {
  event_subscriber sub{fd, {}};
  try {
    for (auto& name : names_of(request).get<std::vector<std::string>>())
      if (name != "all")
        sub.resources.push_back(name);
  } catch (const std::exception& e) {
    spdlog::warn("control: closing an event stream: malformed request: {}", e.what());
    ::close(fd);
    return;
  }
  caf::anon_send(hub, atom::subscribe_v, std::move(sub));
}

/// GET /metrics: every resource's status, as Prometheus text.
result<std::string> render_scrape(caf::actor_system& sys, const supervisor_actor& sup) {
  caf::scoped_actor self{sys, true};
  result<std::string> out = status{errc::io_error, "no answer"};
  self->request(sup, resource_answer_timeout + supervisor_margin, atom::status_v, std::vector<std::string>{})
    .receive([&](std::vector<resource_status>& all) { out = render_metrics(all, HAST_VERSION); },
             [&](caf::error& err) {
               out = status{errc::io_error, "status: " + render_error(sys, err)};
             });
  return out;
}

} // namespace

/// Turns one control request into a typed message to the supervisor.
nlohmann::json handle_control(caf::actor_system& sys, const supervisor_actor& sup,
                              const nlohmann::json& request) {
  caf::scoped_actor self{sys, true};
  auto command = request.at("command").get<std::string>();
  nlohmann::json reply;
  auto on_error = [&](caf::error& err) { reply = {{"error", render_error(sys, err)}}; };
  auto names = names_of(request).get<std::vector<std::string>>();
  if (command == "role") {
    role_request req;
    auto target = parse_role(request.at("role").get<std::string>());
    if (!target)
      return {{"error", "unknown role '" + request.at("role").get<std::string>() + "'"}};
    req.target = *target;
    req.resources = names;
    req.force = request.value("force", false);
    self->request(sup, control_timeout, atom::role_v, req)
      .receive(
        [&](std::vector<role_outcome>& outcomes) {
          auto list = nlohmann::json::array();
          for (auto& o : outcomes)
            list.push_back(
              {{"resource", o.resource}, {"previous", to_string(o.previous)}, {"error", o.error},
               {"error_number", o.error_number}});
          reply = {{"results", list}};
        },
        on_error);
  } else if (command == "status") {
    self->request(sup, control_timeout, atom::status_v, names)
      .receive(
        [&](std::vector<resource_status>& all) {
          auto list = nlohmann::json::array();
          for (auto& st : all)
            list.push_back(to_json(st));
          reply = {{"resources", list}};
        },
        on_error);
  } else if (command == "resync") {
    if (!request.value("discard_local", false))
      return {{"error", "resync needs --discard-local (this node gives up its own changes)"}};
    self->request(sup, control_timeout, atom::resync_v, names)
      .receive(
        [&](std::vector<role_outcome>& outcomes) {
          auto list = nlohmann::json::array();
          for (auto& o : outcomes)
            list.push_back(
              {{"resource", o.resource}, {"error", o.error}, {"error_number", o.error_number}});
          reply = {{"results", list}};
        },
        on_error);
  } else if (command == "verify") {
    self->request(sup, control_timeout, atom::verify_v, names, request.value("repair", false),
                  request.value("stop", false))
      .receive(
        [&](std::vector<verify_outcome>& outcomes) {
          auto list = nlohmann::json::array();
          for (auto& o : outcomes)
            list.push_back({{"resource", o.resource}, {"message", o.message}, {"error", o.error},
                            {"error_number", o.error_number}});
          reply = {{"results", list}};
        },
        on_error);
  } else if (command == "grow") {
    self->request(sup, control_timeout, atom::grow_v, names, request.value("assume_clean", false))
      .receive(
        [&](std::vector<verify_outcome>& outcomes) {
          auto list = nlohmann::json::array();
          for (auto& o : outcomes)
            list.push_back({{"resource", o.resource}, {"message", o.message}, {"error", o.error},
                            {"error_number", o.error_number}});
          reply = {{"results", list}};
        },
        on_error);
  } else {
    spdlog::warn("control: unknown command '{}'", command);
    reply = {{"error", "unknown command '" + command + "'"}};
  }
  return reply;
}

namespace {

/// Routes a connection the peer listener accepted. The listener asks
/// allows() at accept, before reading anything: only addresses that some
/// resource's `remote` names get in, or any address on a witness node (the
/// key is required there). With a `secret`, the first frame is
/// session_open and the router runs the session handshake with the
/// resource's key (io/peer_transport.hpp accept_session) before it reads
/// the hello; the secondary then takes the link only from an address its
/// `remote` names (IP compared, port ignored, as in HAST) and hands it to
/// the resource through the supervisor.
class peer_router : public std::enable_shared_from_this<peer_router> {
public:
  peer_router(asio::io_context& io, supervisor_actor sup, node_config config,
              std::shared_ptr<data_threads> data)
    : io_(io), sup_(std::move(sup)), config_(std::move(config)), data_(std::move(data)) {}

  /// Call once after construction (it needs shared_from_this).
  void update(node_config config) {
    std::lock_guard lock{mutex_};
    config_ = std::move(config);
    refresh_addresses();
  }

  /// Whether a connection from `ip` may send anything at all.
  bool allows(const std::string& ip) {
    std::lock_guard lock{mutex_};
    return any_address_ || allowed_.count(ip) > 0;
  }

  void route(std::shared_ptr<peer::connection> conn, const peer::header& h, buffer_ptr payload) {
    auto who = conn->remote_address();
    if (h.type == peer::msg_type::session_open)
      return route_session(std::move(conn), std::move(payload));
    if (h.type != peer::msg_type::hello) {
      spdlog::warn("peer {}: first message is {}, not hello or session_open; closing", who,
                   peer::to_string(h.type));
      conn->close("expected hello");
      return;
    }
    auto hello = peer::decode_hello(payload);
    if (!hello) {
      spdlog::warn("peer {}: bad hello: {}; closing", who, hello.error().message());
      conn->close("bad hello");
      return;
    }
    resource_config res;
    {
      std::lock_guard lock{mutex_};
      auto found = config_.find(hello->resource);
      if (found == nullptr) {
        spdlog::warn("peer {} asked for resource '{}', which is not configured; closing", who,
                     hello->resource);
        conn->close("resource not configured");
        return;
      }
      res = *found;
    }
    // Fail closed: a resource with a `secret` takes only authenticated links.
    if (!res.secret.empty()) {
      spdlog::warn("{}: peer {} refused: it did not authenticate, and this node has a `secret` for "
                   "the resource (configure the same key on both nodes)",
                   res.name, who);
      conn->close("authentication required");
      return;
    }
    resolve_and_admit(std::move(conn), std::move(*hello), std::move(res));
  }

private:
  /// The session handshake, for the peer and the witness link alike.
  void route_session(std::shared_ptr<peer::connection> conn, buffer_ptr payload) {
    auto who = conn->remote_address();
    auto open = peer::decode_session_open(payload);
    if (!open) {
      spdlog::warn("peer {}: bad session_open: {}; closing", who, open.error().message());
      conn->close("bad session_open");
      return;
    }
    resource_config res;
    std::string node;
    {
      std::lock_guard lock{mutex_};
      auto found = config_.find(open->resource);
      node = config_.node;
      if (found == nullptr) {
        spdlog::warn("peer {} asked for resource '{}', which is not configured; closing", who,
                     open->resource);
        conn->close("resource not configured");
        return;
      }
      res = *found;
    }
    const bool witness = open->link == "witness";
    std::string refusal;
    if (witness && !res.is_witness)
      refusal = "this node is not the witness of the resource";
    else if (!witness && (res.is_witness || res.standalone()))
      refusal = "the resource has no remote";
    else if (res.secret_key.empty())
      refusal = "no `secret` is configured here for the resource, but the other node has one";
    if (!refusal.empty()) {
      spdlog::warn("{}: {} refused: {}", res.name, who, refusal);
      conn->close(refusal);
      return;
    }
    peer::session_params mine{{res.secret_key.begin(), res.secret_key.end()},
                              res.name,
                              node,
                              open->link,
                              res.encryption,
                              peer::preferred_cipher()};
    conn->accept_session(
      std::move(mine), std::move(payload),
      [self = shared_from_this(), conn, res = std::move(res), witness, who,
       claimed = open->node](status st, const peer::header& h, buffer_ptr first) mutable {
        if (!st) {
          spdlog::warn("{}: {} at {} did not authenticate: {}", res.name, claimed, who,
                       st.message());
          return;
        }
        spdlog::info("{}: {} at {} authenticated ({} link)", res.name, claimed, who,
                     witness ? "witness" : "peer");
        const auto expected = witness ? peer::msg_type::witness_hello : peer::msg_type::hello;
        auto hello = h.type == expected ? peer::decode_hello(first)
                                        : result<peer::hello_message>(status{
                                            errc::protocol_error,
                                            "first sealed frame is " + std::string(peer::to_string(h.type))});
        if (hello && hello->resource != res.name)
          hello = status{errc::protocol_error, "the hello names another resource"};
        if (!hello) {
          spdlog::warn("{}: {}: {}; closing", res.name, who, hello.error().message());
          conn->close("bad hello");
          return;
        }
        if (witness)
          return self->hand_to_witness(std::move(conn), std::move(*hello), res);
        self->resolve_and_admit(std::move(conn), std::move(*hello), std::move(res));
      });
  }

  /// Keeps allowed_ in step with config_ (under mutex_): the IP literals of
  /// every `remote`, plus what host names resolve to, when it arrives.
  void refresh_addresses() {
    allowed_.clear();
    any_address_ = false;
    ++generation_;
    for (const auto& r : config_.resources) {
      any_address_ = any_address_ || r.is_witness;
      std::string host;
      uint16_t port = 0;
      if (r.is_witness || r.standalone() || !split_tcp_address(r.remote, host, port))
        continue;
      std::error_code ec;
      const auto literal = asio::ip::make_address(host, ec);
      if (!ec) {
        allowed_.insert(literal.to_string());
        continue;
      }
      auto resolver = std::make_shared<asio::ip::tcp::resolver>(io_);
      resolver->async_resolve(host, "",
                              [weak = weak_from_this(), resolver, generation = generation_](
                                std::error_code ec, asio::ip::tcp::resolver::results_type results) {
                                auto self = weak.lock();
                                if (!self || ec)
                                  return;
                                std::lock_guard lock{self->mutex_};
                                if (generation != self->generation_)
                                  return;
                                for (const auto& entry : results)
                                  self->allowed_.insert(entry.endpoint().address().to_string());
                              });
    }
  }

  void resolve_and_admit(std::shared_ptr<peer::connection> conn, peer::hello_message hello,
                         resource_config res) {
    auto who = conn->remote_address();
    std::string host;
    uint16_t port = 0;
    if (res.standalone() || !split_tcp_address(res.remote, host, port)) {
      spdlog::warn("{}: peer {} refused: the resource has no remote", res.name, who);
      conn->close("no access to the resource");
      return;
    }
    // This runs on an Asio thread: a host name is resolved by Asio's
    // asynchronous resolver, never by a blocking getaddrinfo here.
    auto resolver = std::make_shared<asio::ip::tcp::resolver>(io_);
    resolver->async_resolve(
      host, "",
      [self = shared_from_this(), resolver, conn = std::move(conn), hello = std::move(hello),
       res = std::move(res)](std::error_code ec,
                             asio::ip::tcp::resolver::results_type results) mutable {
        self->admit(std::move(conn), std::move(hello), res, ec, results);
      });
  }

  /// A data node's link to the witness, authenticated (no address check:
  /// the key is required).
  void hand_to_witness(std::shared_ptr<peer::connection> conn, peer::hello_message hello,
                       const resource_config& res) {
    auto timeout = std::chrono::milliseconds(std::chrono::seconds(res.timeout));
    caf::anon_send(sup_, atom::witness_accept_v,
                   accepted_link{make_tcp_link(std::move(conn), timeout / 4, timeout),
                                 std::move(hello)});
  }

  /// Hands the connection to the resource if it comes from an address that
  /// the resource's `remote` names.
  void admit(std::shared_ptr<peer::connection> conn, peer::hello_message hello,
             const resource_config& res, std::error_code ec,
             const asio::ip::tcp::resolver::results_type& results) {
    auto who = conn->remote_address();
    bool allowed = false;
    if (!ec)
      for (const auto& entry : results)
        allowed = allowed || entry.endpoint().address().to_string() == conn->remote_ip();
    if (!allowed) {
      spdlog::warn("{}: peer {} refused: not the configured remote {}{}", res.name, who,
                   res.remote, ec ? " (" + ec.message() + ")" : "");
      conn->close("no access to the resource");
      return;
    }
    auto timeout = std::chrono::milliseconds(std::chrono::seconds(res.timeout));
    // From here on the resource's data thread serves the link, as it does
    // the link a primary opens.
    if (data_)
      conn = conn->rehome(data_->of(res.name).io());
    caf::anon_send(sup_, atom::peer_accept_v,
                   accepted_link{make_tcp_link(std::move(conn), peer::default_keepalive, timeout),
                                 std::move(hello)});
  }

  asio::io_context& io_;
  supervisor_actor sup_;
  std::mutex mutex_;
  node_config config_;
  std::set<std::string> allowed_;  // source IPs that may connect (mutex_)
  bool any_address_ = false;       // a witness node: every address, the key decides
  uint64_t generation_ = 0;        // of allowed_, so a late resolution of an old config is dropped
  std::shared_ptr<data_threads> data_;  // null: links stay on io_
};

/// The peer listeners, as groups of addresses opened together. A reload
/// diffs the configured set against the open one: added addresses open as a
/// new group, a group that holds a removed address closes and its other
/// addresses open again at once, every other group stays open untouched.
class peer_listeners {
public:
  peer_listeners(asio::io_context& io, std::shared_ptr<peer_router> router)
    : io_(io), router_(std::move(router)) {}
  peer_listeners(const peer_listeners&) = delete;
  peer_listeners& operator=(const peer_listeners&) = delete;
  ~peer_listeners() { stop(); }

  /// Opens `addresses` (none: nothing to do) at start-up.
  status open(const std::vector<std::string>& addresses) {
    if (addresses.empty())
      return status::ok();
    return open_group(addresses);
  }

  /// Makes the open set `wanted`. Returns what changed ("+tcp://a, -tcp://b"),
  /// empty if nothing did. If the added addresses cannot be opened, the
  /// open set stays as it was and the reason is logged.
  std::string apply(const std::vector<std::string>& wanted) {
    std::vector<std::string> now = addresses();
    std::vector<std::string> added;
    std::vector<std::string> removed;
    for (const auto& a : wanted)
      if (std::find(now.begin(), now.end(), a) == now.end()
          && std::find(added.begin(), added.end(), a) == added.end())
        added.push_back(a);
    for (const auto& a : now)
      if (std::find(wanted.begin(), wanted.end(), a) == wanted.end())
        removed.push_back(a);
    if (added.empty() && removed.empty())
      return "";
    auto touched = [&](const group& g) {
      return std::any_of(g.addresses.begin(), g.addresses.end(), [&](const std::string& a) {
        return std::find(removed.begin(), removed.end(), a) != removed.end();
      });
    };
    bool closed_first = false;
    if (!added.empty()) {
      auto st = open_group(added);
      if (!st && !removed.empty()) {
        // A removed address may hold the port an added one wants (0.0.0.0:P
        // replacing 127.0.0.1:P): close the removed ones first and retry.
        close_groups(touched);
        closed_first = true;
        st = open_group(added, after_close);
        if (!st)
          reopen_closed();
      }
      if (!st) {
        spdlog::error("reload: the peer listen addresses stay {}: {}", join(now), st.message());
        return "";
      }
    }
    if (!closed_first)
      close_groups(touched);
    // The rest of each closed group opens again.
    for (auto& g : closed_) {
      std::vector<std::string> rest;
      for (const auto& a : g)
        if (std::find(removed.begin(), removed.end(), a) == removed.end())
          rest.push_back(a);
      if (rest.empty())
        continue;
      if (auto st = open_group(rest, after_close); !st)
        spdlog::error("reload: cannot listen on {} again: {}", join(rest), st.message());
    }
    closed_.clear();
    std::string change;
    for (const auto& a : added)
      change += (change.empty() ? "+" : ", +") + a;
    for (const auto& a : removed)
      change += (change.empty() ? "-" : ", -") + a;
    return change;
  }

  void stop() {
    for (auto& g : groups_)
      g.listener->stop();
    groups_.clear();
  }

  /// The addresses open now, as configured.
  std::vector<std::string> addresses() const {
    std::vector<std::string> all;
    for (const auto& g : groups_)
      all.insert(all.end(), g.addresses.begin(), g.addresses.end());
    return all;
  }

private:
  struct group {
    std::vector<std::string> addresses;
    std::unique_ptr<peer::listener> listener;
  };

  static std::string join(const std::vector<std::string>& addresses) {
    std::string text;
    for (const auto& a : addresses)
      text += (text.empty() ? "" : ", ") + a;
    return text.empty() ? "(none)" : text;
  }

  /// Opens `addresses` as one group. `retry_for`: a listener stopped just
  /// before closes its sockets on its own strand a moment later, so an
  /// address it held may still be taken; try again until then.
  status open_group(const std::vector<std::string>& addresses,
                    std::chrono::milliseconds retry_for = std::chrono::milliseconds(0)) {
    auto until = std::chrono::steady_clock::now() + retry_for;
    for (;;) {
      auto listener = std::make_unique<peer::listener>(
        io_, addresses,
        [router = router_](std::shared_ptr<peer::connection> conn, const peer::header& h,
                           buffer_ptr payload) { router->route(std::move(conn), h, payload); },
        peer::authentication_timeout,
        peer::admission{[router = router_](const std::string& ip) { return router->allows(ip); }});
      auto st = listener->start();
      if (st) {
        groups_.push_back({addresses, std::move(listener)});
        return status::ok();
      }
      if (std::chrono::steady_clock::now() >= until)
        return status{st.code(), "cannot listen for peers: " + st.message()};
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  static constexpr auto after_close = std::chrono::milliseconds(2000);

  template <class Pred> void close_groups(Pred touched) {
    for (auto it = groups_.begin(); it != groups_.end();) {
      if (!touched(*it)) {
        ++it;
        continue;
      }
      it->listener->stop();
      closed_.push_back(it->addresses);
      it = groups_.erase(it);
    }
  }

  /// Undoes close_groups() after the added addresses could not be opened.
  void reopen_closed() {
    for (auto& addresses : closed_)
      if (auto st = open_group(addresses, after_close); !st)
        spdlog::error("reload: cannot listen on {} again: {}", join(addresses), st.message());
    closed_.clear();
  }

  asio::io_context& io_;
  std::shared_ptr<peer_router> router_;
  std::list<group> groups_;
  std::vector<std::vector<std::string>> closed_;  // groups closed by the reload under way
};

/// The peer addresses a configuration needs open: none while every
/// resource is stand-alone (nobody is to connect).
std::vector<std::string> wanted_listen(const node_config& config) {
  bool needed = std::any_of(config.resources.begin(), config.resources.end(),
                            [](const resource_config& r) { return !r.standalone() || r.is_witness; });
  return needed ? config.listen : std::vector<std::string>{};
}

/// CAF workers, and as many Asio threads: half the cores each, at least one.
unsigned worker_threads() {
  return std::max(1u, std::thread::hardware_concurrency() / 2);
}

} // namespace

caf::actor_system_config& configure(caf::actor_system_config& cfg) {
  // Chosen by measurement (docs/DESIGN.md, "Threads"): on a 2-core VM one
  // CAF worker and one Asio thread beat two of each (fewer wake-ups per
  // request: 0.7 context switches per 4k write at QD32 instead of 3), and a
  // worker that runs dry waits on its condition variable (woken by the next
  // message) instead of polling with 50 us sleeps, which halved QD1 latency
  // and CPU per write.
  cfg.set("scheduler.max-threads", static_cast<size_t>(worker_threads()));
  cfg.set("work-stealing.moderate-poll-attempts", size_t{0});
  cfg.add_error_category(caf::atom("hast"),
                         [](uint8_t code, caf::atom_value, const caf::message& ctx) {
                           // Our errors carry one sentence; show it as is.
                           if (ctx.size() == 1 && ctx.match_element<std::string>(0))
                             return ctx.get_as<std::string>(0);
                           std::string text{describe(static_cast<errc>(code))};
                           if (!ctx.empty())
                             text += ": " + caf::to_string(ctx);
                           return text;
                         });
  return cfg;
}

namespace {

/// Runs the daemon from the first actor to the last: control socket, peer
/// listener, signal loop, ordered shutdown. Returns the exit status when
/// every actor is done.
int serve(caf::actor_system& sys, asio::io_context& io, std::shared_ptr<data_threads> data,
          node_config& config, const daemon_options& options, const sigset_t& signals) {
  int exit_status = 0;
  auto hub = sys.spawn(event_hub);
  data->attach(sys);
  // The supervisor, and with it every resource (their providers, NBD
  // exports, stale /dev/hast clean-up), starts only once this hastd owns
  // its control socket: a second hastd stops there and touches nothing.
  supervisor_actor sup;
  std::atomic<bool> supervising{false};

  // The control socket; a reload with a new `control` opens another one
  // and closes this (FreeBSD moves it the same way).
  auto control_at = [&](const std::string& path) {
    return std::make_unique<control::server>(
      path,
      [&](const nlohmann::json& req) {
        if (!supervising.load(std::memory_order_acquire))
          return nlohmann::json{{"error", "hastd is starting"}};
        return handle_control(sys, sup, req);
      },
      [&](const nlohmann::json& req, int fd) { handle_stream(hub, req, fd); });
  };
  auto ctl = control_at(unix_socket_path(config.control));
  std::string pidfile = options.pidfile;  // the pid file in use, if it follows the configuration
  status started = ctl->start();
  // As FreeBSD's hastd: another hastd on the control socket is EX_TEMPFAIL,
  // an address that cannot be listened on EX_OSERR.
  int start_failure = started ? EX_OSERR : (started.code() == errc::busy ? EX_TEMPFAIL : EX_OSERR);
  if (started) {
    sup = sys.spawn(supervisor, config,
                    runtime{&io, options.disk_engine, options.env, {}, hub, data});
    supervising.store(true, std::memory_order_release);
  }
  metrics_server metrics{[&] { return render_scrape(sys, sup); }};
  auto router = std::make_shared<peer_router>(io, sup, config, data);
  router->update(config);
  peer_listeners listeners{io, router};
  if (started)
    started = listeners.open(wanted_listen(config));
  if (started && !config.metrics.empty())
    started = metrics.start(config.metrics);
  if (auto st = started; !st) {
    spdlog::critical("{}", st.message());
    if (options.on_ready)
      options.on_ready(st.message());
    exit_status = start_failure;
  } else {
    spdlog::info("started on node {} with {} resource(s); control socket {}", config.node,
                 config.resources.size(), config.control);
    if (options.on_ready)
      options.on_ready("");
    for (;;) {
      int sig = 0;
      if (sigwait(&signals, &sig) != 0)
        continue;
      if (sig == SIGHUP) {
        spdlog::info("SIGHUP: reloading {}", config.path);
        if (options.on_reloading)
          options.on_reloading();
        try {
          auto fresh = load_config(config.path, config.node);
          read_secrets(fresh);
          for (const auto& warning : unauthenticated_links(fresh))
            spdlog::warn("reload: {}", warning);
          // A new control socket opens first: if it cannot, nothing of the
          // new configuration applies (as in FreeBSD's hastd_reload()).
          std::unique_ptr<control::server> moved_ctl;
          if (unix_socket_path(fresh.control) != unix_socket_path(config.control)) {
            moved_ctl = control_at(unix_socket_path(fresh.control));
            if (auto st = moved_ctl->start(); !st)
              throw config_error({config.path, 0}, "control",
                                 "cannot serve the new control address " + fresh.control + ": "
                                   + st.message());
          }
          if (fresh.metrics != config.metrics)
            spdlog::warn("reload: a new metrics address takes effect at the next start");
          caf::scoped_actor self{sys, true};
          self->request(sup, control_timeout, atom::reload_v, fresh)
            .receive([](std::string&) {},
                     [&](caf::error& err) {
                       spdlog::error("reload failed: {}", render_error(sys, err));
                     });
          router->update(fresh);
          // What this loop owns applies here: the peer listen set and the
          // pid file. (Resources are the supervisor's, above.)
          std::string applied;
          if (auto change = listeners.apply(wanted_listen(fresh)); !change.empty())
            applied = "listen " + change;
          if (options.move_pidfile && !pidfile.empty() && fresh.pidfile != pidfile) {
            if (auto err = options.move_pidfile(fresh.pidfile); err.empty()) {
              applied += (applied.empty() ? "" : "; ") + ("pidfile " + pidfile + " -> " + fresh.pidfile);
              pidfile = fresh.pidfile;
            } else {
              spdlog::error("reload: the pid file stays {}: {}", pidfile, err);
            }
          }
          if (moved_ctl) {
            // Waits for a request the old socket is serving to be answered.
            ctl->stop();
            ctl = std::move(moved_ctl);
            applied += (applied.empty() ? "" : "; ")
                       + ("control " + config.control + " -> " + fresh.control);
          }
          spdlog::info("reload: {}", applied.empty() ? "listen and pidfile unchanged" : applied);
          config = std::move(fresh);
        } catch (const config_error& e) {
          spdlog::error("reload refused, keeping the running configuration: {}", e.what());
        }
        if (options.on_reloaded)
          options.on_reloaded(config);
        continue;
      }
      spdlog::info("{}: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      if (options.on_stopping)
        options.on_stopping();
      break;
    }
  }
  // Ordered shutdown: no new commands, then resources stop serving and
  // flush, then the actors go, then Asio.
  ctl->stop();
  metrics.stop();
  listeners.stop();
  if (sup) {
    caf::scoped_actor self{sys, true};
    self->request(sup, resource_stop_timeout + supervisor_margin, atom::stop_v)
      .receive([](bool) {},
               [&](caf::error& err) {
                 spdlog::error("shutdown: {}", render_error(sys, err));
                 exit_status = EX_SOFTWARE;
               });
    caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
  }
  caf::anon_send_exit(hub, caf::exit_reason::user_shutdown);  // closes the event streams
  sys.await_all_actors_done();
  data->detach();
  return exit_status;
}

} // namespace

int run_daemon(node_config config, const daemon_options& options) {
  // Signals are taken synchronously by this thread only; every thread made
  // from here on inherits the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  // Declared before the actor system so that it outlives every actor: an
  // actor object may be freed during the system's destruction, and what it
  // still owns (an NBD server) posts its last clean-up to Asio.
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  std::vector<std::thread> io_threads;
  std::atomic<unsigned> io_running{worker_threads()};
  for (unsigned i = 0; i < worker_threads(); ++i)
    io_threads.emplace_back([&io, &io_running] {
      run_catching(io, [](std::string_view what) {
        spdlog::error("an I/O handler failed: {}; the I/O thread goes on", what);
      });
      --io_running;
    });
  // Each resource's data path runs on a thread of its own (docs/DESIGN.md,
  // "Threads"); the threads outlive the actor system as the
  // shared context does.
  auto data = std::make_shared<data_threads>();
  int exit_status = 0;
  {
    caf::actor_system_config cfg;
    use_pinning_scheduler(configure(cfg));
    caf::actor_system sys{cfg};
    exit_status = serve(sys, io, data, config, options, signals);
  }
  data->stop(std::chrono::seconds(5));
  // The work queued by the actors' last steps runs before Asio stops (an NBD
  // server's clean-up removes its socket file); whatever still waits after a
  // few seconds (a connection nobody closed) is abandoned.
  work.reset();
  auto drain_until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (io_running > 0 && std::chrono::steady_clock::now() < drain_until)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  io.stop();
  for (auto& t : io_threads)
    t.join();
  finish_hooks();  // the last role change's hook runs before we exit
  spdlog::info("stopped");
  return exit_status;
}

} // namespace hast
