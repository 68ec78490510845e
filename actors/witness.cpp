#include "actors/witness.hpp"

#include "io/codec/checksum.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <unistd.h>

namespace hast {

std::string default_witness_state(const std::string& resource) {
  return "/var/lib/hast/" + resource + ".witness";
}

result<lease_record> load_lease_record(const std::string& path) {
  // Only a file that does not exist is "no record": one that exists but
  // cannot be read (permissions, an I/O error, a loop of links) may hold a
  // lease granted before, and forgetting it could let two nodes be primary.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT)
    return lease_record{};
  if (fd < 0)
    return status{errc::io_error,
                  "the witness state file " + path + " cannot be read: " + std::strerror(errno)};
  std::string text;
  char chunk[4096];
  for (;;) {
    auto n = ::read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      auto error = errno;
      ::close(fd);
      return status{errc::io_error,
                    "the witness state file " + path + " cannot be read: " + std::strerror(error)};
    }
    if (n == 0)
      break;
    text.append(chunk, static_cast<size_t>(n));
  }
  ::close(fd);
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return status{errc::io_error, "the witness state file " + path + " is not valid JSON"};
  try {
    lease_record r;
    r.holder = j.at("holder").get<std::string>();
    r.epoch = j.at("epoch").get<uint64_t>();
    r.resuid = j.at("resuid").get<uint64_t>();
    r.localcnt = j.at("localcnt").get<uint64_t>();
    r.in_sync = j.at("in_sync").get<bool>();
    return r;
  } catch (const std::exception& e) {
    return status{errc::io_error, "the witness state file " + path + " lacks a field: " + e.what()};
  }
}

status save_lease_record(const std::string& path, const lease_record& r) {
  // A record that could not be read is never replaced: the grant that would
  // replace it is refused instead, until an operator repairs or removes it.
  if (auto existing = load_lease_record(path); !existing)
    return {errc::io_error, existing.error().message()
                                + "; not replacing it (repair or remove it to let the witness "
                                  "grant the lease again)"};
  nlohmann::json j = {{"holder", r.holder},     {"epoch", r.epoch}, {"resuid", r.resuid},
                      {"localcnt", r.localcnt}, {"in_sync", r.in_sync}};
  auto text = j.dump() + "\n";
  std::filesystem::path target{path};
  std::error_code ec;
  if (target.has_parent_path())
    std::filesystem::create_directories(target.parent_path(), ec);
  auto tmp = path + ".new";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return {errc::io_error, "cannot write " + tmp + ": " + std::strerror(errno)};
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size())
            && ::fsync(fd) == 0;
  auto err = errno;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0)
    return {errc::io_error, "cannot write " + path + ": " + std::strerror(ok ? errno : err)};
  auto dir = target.has_parent_path() ? target.parent_path().string() : std::string{"."};
  if (int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return status::ok();
}

namespace {

using witness_ptr = witness_actor::stateful_pointer<witness_state>;
using peer::msg_type;

std::chrono::milliseconds lease_of(const resource_config& rc) {
  return std::chrono::milliseconds(std::chrono::seconds(rc.timeout));
}

void close_link(witness_ptr self, uint64_t id, const std::string& reason) {
  auto it = self->state.links.find(id);
  if (it == self->state.links.end())
    return;
  if (!it->second.resource.empty())
    spdlog::info("{}: witness link of {} closed: {}", it->second.resource, it->second.node, reason);
  it->second.link->close(reason);
  self->state.links.erase(it);
}

void add_resource(witness_ptr self, const resource_config& rc) {
  auto& w = self->state.resources[rc.name];
  w.config = rc;
  w.state_path = rc.local.empty() ? default_witness_state(rc.name) : rc.local;
  if (w.book) {
    w.book->set_lease(lease_of(rc));
    return;
  }
  auto record = load_lease_record(w.state_path);
  if (!record)
    spdlog::error("{}: {}; no lease is granted until the file is repaired or removed",
                  rc.name, record.error().message());
  auto r = record ? *record : lease_record{};
  w.book.emplace(lease_of(rc), r, std::chrono::steady_clock::now());
  spdlog::info("{}: witness for {}; lease {} s; {}", rc.name,
               rc.members.empty() ? std::string{"?"} : rc.members.front() + " and " + rc.members.back(),
               rc.timeout,
               r.holder.empty() ? std::string{"no primary recorded"}
                                : "last holder " + r.holder + " (epoch " + std::to_string(r.epoch) + ")");
}

void on_request(witness_ptr self, uint64_t id, member_link& m, peer::frame& f) {
  auto req = peer::decode_lease_request(f.payload);
  if (!req)
    return close_link(self, id, req.error().message());
  if (req->node != m.node)
    return close_link(self, id, "protocol error: a lease request for node " + req->node
                                  + " on the link of " + m.node);
  auto it = self->state.resources.find(m.resource);
  if (it == self->state.resources.end())
    return close_link(self, id, "the resource is no longer witnessed here");
  auto& w = it->second;
  auto before = w.book->record();
  bool changed = false;
  auto reply = w.book->decide(*req, std::chrono::steady_clock::now(), changed);
  if (changed) {
    if (auto st = save_lease_record(w.state_path, w.book->record()); !st) {
      // Nothing may depend on a change that a restart would forget.
      spdlog::error("{}: {}; refusing the request", m.resource, st.message());
      *w.book = lease_book(w.book->lease(), before, std::chrono::steady_clock::now());
      reply = peer::lease_reply{};
      reply.holder = before.holder;
      reply.epoch = before.epoch;
      reply.reason = "the witness cannot write its state file";
    }
  }
  if (reply.granted && (req->kind == "claim" || before.holder != w.book->record().holder))
    spdlog::info("{}: lease granted to {} (epoch {}{})", m.resource, req->node, reply.epoch,
                 req->manual ? ", by hand" : "");
  else if (!reply.granted && req->kind == "claim")
    spdlog::debug("{}: claim of {} refused: {}", m.resource, req->node, reply.reason);
  else if (req->kind == "release" && reply.granted)
    spdlog::info("{}: {} released the lease", m.resource, req->node);
  if (before.in_sync != w.book->record().in_sync)
    spdlog::info("{}: the primary reports its secondary {}", m.resource,
                 w.book->record().in_sync ? "in sync" : "missing writes");
  m.link->send(peer::make_header(msg_type::lease_reply, f.h.seq), peer::encode_lease_reply(reply));
}

void on_frame(witness_ptr self, uint64_t id, peer::frame& f) {
  auto& m = self->state.links.at(id);
  switch (f.h.type) {
    case msg_type::lease_request:
      return on_request(self, id, m, f);
    case msg_type::goodbye:
      return close_link(self, id, "goodbye");
    default:
      return close_link(self, id, "protocol error: unexpected "
                                    + std::string{peer::to_string(f.h.type)} + " at the witness");
  }
}

} // namespace

witness_actor::behavior_type witness(witness_ptr self, node_config config) {
  for (auto& rc : config.resources)
    if (rc.is_witness)
      add_resource(self, rc);
  self->set_exit_handler([=](const caf::exit_msg& msg) {
    for (auto& [id, m] : self->state.links)
      m.link->close("witness stopped");
    self->state.links.clear();
    self->quit(msg.reason);
  });
  return {
    [=](atom::peer_accept, accepted_link& accepted) {
      auto& s = self->state;
      auto& hello = accepted.hello;
      auto who = accepted.link->remote_address();
      auto it = s.resources.find(hello.resource);
      std::string refusal;
      if (it == s.resources.end())
        refusal = "this node is not the witness of resource '" + hello.resource + "'";
      else if (std::find(it->second.config.members.begin(), it->second.config.members.end(),
                         hello.node) == it->second.config.members.end())
        refusal = "node '" + hello.node + "' is not a data node of resource '" + hello.resource + "'";
      else if (it->second.config.secret_key.empty())
        refusal = "no shared key was read for the resource; refusing every node";
      else if (!accepted.link->authenticated())
        refusal = "the link is not authenticated";
      if (!refusal.empty()) {
        spdlog::warn("witness: {} refused: {}", who, refusal);
        accepted.link->close(refusal);
        return;
      }
      // One link per node and resource: a new one replaces the old. Only a
      // link that proved the key gets here, so a stranger naming the
      // primary cannot close the primary's link.
      for (auto& [id, m] : s.links)
        if (m.resource == hello.resource && m.node == hello.node) {
          close_link(self, id, "replaced by a new connection");
          break;
        }
      auto id = s.next_link++;
      auto& m = s.links[id];
      m.link = accepted.link;
      m.resource = hello.resource;
      m.node = hello.node;
      spdlog::info("{}: {} connected to the witness from {}", m.resource, m.node, who);
      auto hdl = caf::actor_cast<witness_actor>(self);
      m.link->start(
        [hdl, id](std::vector<peer::frame> frames) {
          caf::anon_send(hdl, atom::peer_frame_v, peer_frames{id, std::move(frames)});
        },
        [hdl, id](const std::string& reason) { caf::anon_send(hdl, atom::peer_closed_v, id, reason); });
    },
    [=](atom::peer_frame, peer_frames& batch) {
      for (auto& f : batch.frames) {
        if (!self->state.links.count(batch.epoch))
          break;
        on_frame(self, batch.epoch, f);
      }
    },
    [=](atom::peer_closed, uint64_t id, std::string& reason) { close_link(self, id, reason); },
    [=](atom::status, std::string& name) -> caf::result<resource_status> {
      auto it = self->state.resources.find(name);
      if (it == self->state.resources.end())
        return caf::make_error(errc::no_such_resource, "not witnessed here: " + name);
      auto& w = it->second;
      auto now = std::chrono::steady_clock::now();
      resource_status st;
      st.name = name;
      st.witness_node = true;
      st.failover = "auto";
      st.status = "complete";
      st.workerpid = static_cast<uint64_t>(::getpid());
      st.local = w.state_path;
      st.remote = "none";
      const auto& r = w.book->record();
      st.lease_holder = r.holder;
      st.lease_epoch = r.epoch;
      st.lease_remaining_ms = static_cast<uint64_t>(w.book->remaining(now).count());
      st.lease = st.lease_remaining_ms > 0 ? "held" : "none";
      st.eligibility = r.holder.empty()
                         ? "no primary recorded"
                         : std::string{"the holder reports its secondary "}
                             + (r.in_sync ? "in sync" : "missing writes");
      for (auto& [id, m] : self->state.links)
        if (m.resource == name)
          st.members_connected.push_back(m.node);
      std::sort(st.members_connected.begin(), st.members_connected.end());
      return st;
    },
    [=](atom::configure, node_config& fresh) {
      auto& s = self->state;
      for (auto it = s.resources.begin(); it != s.resources.end();) {
        auto found = fresh.find(it->first);
        if (found == nullptr || !found->is_witness) {
          for (auto l = s.links.begin(); l != s.links.end();) {
            auto next = std::next(l);
            if (l->second.resource == it->first)
              close_link(self, l->first, "no longer witnessed here");
            l = next;
          }
          it = s.resources.erase(it);
        } else {
          ++it;
        }
      }
      for (auto& rc : fresh.resources)
        if (rc.is_witness)
          add_resource(self, rc);
    },
  };
}

} // namespace hast
