#include "actors/supervisor.hpp"

#include "actors/resource.hpp"
#include "actors/witness.hpp"
#include "io/net/nbd_server.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <memory>

namespace hast {

namespace {

using supervisor_ptr = supervisor_actor::stateful_pointer<supervisor_state>;

/// Who may connect to the resource's NBD export: from its configuration,
/// in force for the export's next connection.
void apply_nbd_access(const resource_config& config) {
  nbd::access rules;
  rules.allow = config.nbd_allow;
  nbd::set_access(config.name, std::move(rules));
}

void spawn_resource(supervisor_ptr self, const resource_config& config) {
  apply_nbd_access(config);
  // Linked: when the supervisor goes, its resources go with it.
  auto io = self->state.io;
  io.supervisor = caf::actor_cast<supervisor_actor>(self);
  auto handle = self->spawn<caf::linked>(resource, config, self->state.config.node, io);
  self->monitor(handle);
  auto& entry = self->state.resources[config.name];
  entry.config = config;
  entry.handle = handle;
  entry.address = handle.address();
  entry.started = std::chrono::steady_clock::now();
}

/// Is this node the witness of `name` (`role witness` in its section)?
bool witnessed(supervisor_ptr self, const std::string& name) {
  const auto* rc = self->state.config.find(name);
  return rc != nullptr && rc->is_witness;
}

/// Names the witness resources of `config` and starts (or updates) the
/// witness actor that serves them.
void serve_witnessed(supervisor_ptr self, const node_config& config) {
  auto& s = self->state;
  if (s.witness) {
    self->send(s.witness, atom::configure_v, config);
    return;
  }
  if (std::any_of(config.resources.begin(), config.resources.end(),
                  [](const resource_config& rc) { return rc.is_witness; }))
    s.witness = self->spawn<caf::linked>(witness, config);
}

caf::error no_role_here(const std::string& name) {
  return caf::make_error(errc::invalid_argument,
                         "this node is the witness of " + name + "; it holds no data and has no role");
}

/// One name of a request: a resource to act on, or the error to answer for
/// that name alone (the others go ahead, as in FreeBSD's control_handle()).
struct named {
  std::string name;
  caf::error refusal;
};

/// `all`, or no name: every resource (a cron job's form on both nodes).
bool names_every(const std::vector<std::string>& wanted) {
  return wanted.empty() || (wanted.size() == 1 && wanted[0] == "all");
}

/// The resources a request names: "all" or nothing means every one, in the
/// order of the configuration file (as FreeBSD's hastctl lists them).
/// Resources this node witnesses are named only `with_witnessed` (status).
/// A name that is not configured here, or a witnessed one without
/// `with_witnessed`, comes back with its refusal.
std::vector<named> select(supervisor_ptr self, const std::vector<std::string>& names,
                          bool with_witnessed = false) {
  std::vector<named> out;
  if (names_every(names)) {
    for (auto& rc : self->state.config.resources)
      if (self->state.resources.count(rc.name) || (with_witnessed && witnessed(self, rc.name)))
        out.push_back({rc.name, {}});
    for (auto& entry : self->state.resources) {
      // A named variable, not a structured binding: clang before 16 does
      // not let a lambda capture a binding.
      const auto& name = entry.first;
      if (std::none_of(out.begin(), out.end(), [&](const named& n) { return n.name == name; }))
        out.push_back({name, {}});
    }
    return out;
  }
  for (auto& name : names) {
    if (witnessed(self, name))
      out.push_back({name, with_witnessed ? caf::error{} : no_role_here(name)});
    else if (!self->state.resources.count(name))
      out.push_back({name, caf::make_error(errc::no_such_resource, "unknown resource '" + name + "'")});
    else
      out.push_back({name, {}});
  }
  return out;
}

/// The number hastctl exits with for a resource's error (FreeBSD's hastctl
/// exits with the first resource's error number).
int error_number(const caf::error& err) {
  if (err.category() != caf::atom("hast"))
    return err == caf::sec::request_timeout ? ETIMEDOUT : EIO;
  switch (static_cast<errc>(err.code())) {
  case errc::none:
    return 0;
  case errc::no_such_resource:
    return ehast_noentry;
  case errc::invalid_argument:
    return ehast_invalid;
  case errc::busy:
    return EBUSY;
  case errc::timeout:
    return ETIMEDOUT;
  case errc::disconnected:
    return ENOTCONN;
  case errc::shutting_down:
    return ESHUTDOWN;
  case errc::io_error:
  case errc::protocol_error:
    return EIO;
  case errc::not_created:
  case errc::bad_metadata:
  case errc::wrong_resource:
  case errc::not_primary:
    return EINVAL;
  }
  return EIO;
}

/// The event stream hears of a resource's failure and restart (the
/// resource itself tells it everything else).
void tell_events(supervisor_ptr self, const std::string& name, const std::string& resource,
                 event_fields fields) {
  if (self->state.io.events)
    self->send(self->state.io.events, atom::event_v,
               event_record{name, resource, event_clock_ms(), std::move(fields)});
}

/// The answer for a resource that is waiting to be restarted.
caf::error restarting(const supervised_resource& entry) {
  if (entry.replacing)
    return caf::make_error(errc::busy, "the resource is restarting with new settings");
  return caf::make_error(errc::busy, "the resource failed (" + entry.failure
                                       + ") and is being restarted");
}

/// Collects one answer per resource and delivers them all at once.
template <class T>
struct gather {
  caf::typed_response_promise<std::vector<T>> promise;
  std::vector<T> answers;
  size_t outstanding = 0;

  void add(size_t index, T value) {
    answers[index] = std::move(value);
    if (--outstanding == 0)
      promise.deliver(answers);
  }
};

/// The answer of `verify` and `grow` for a resource that refused.
verify_outcome verify_refused(const std::string& name, std::string why, int number) {
  return verify_outcome{name, "", std::move(why), number};
}

/// A hastctl request's fan-out: one answer per named resource, in the
/// order named, as FreeBSD's control_handle() answers. `refused(name, why,
/// number)` is the answer for a name that is not asked (unknown here,
/// witnessed where that is refused, waiting for a restart); `ask(name,
/// entry, reply)` asks the others (`entry` null for a resource this node
/// witnesses) and calls reply(T) once. When nothing is asked the refusals
/// are answered at once: a promise made takes over the answer, and a value
/// returned after it would reach nobody.
template <class T, class Refused, class Ask>
caf::result<std::vector<T>> fan_out(supervisor_ptr self, const std::vector<named>& names,
                                    Refused refused, Ask ask) {
  auto& sys = self->system();
  if (std::all_of(names.begin(), names.end(), [](const named& n) { return bool{n.refusal}; })) {
    std::vector<T> answers;
    for (auto& n : names)
      answers.push_back(refused(n.name, sys.render(n.refusal), error_number(n.refusal)));
    return answers;
  }
  auto g = std::make_shared<gather<T>>();
  g->promise = self->template make_response_promise<std::vector<T>>();
  g->answers.resize(names.size());
  g->outstanding = names.size();
  for (size_t i = 0; i < names.size(); ++i) {
    const auto& name = names[i].name;
    if (names[i].refusal) {
      g->add(i, refused(name, sys.render(names[i].refusal), error_number(names[i].refusal)));
      continue;
    }
    auto it = self->state.resources.find(name);
    const supervised_resource* entry = it == self->state.resources.end() ? nullptr : &it->second;
    if (entry != nullptr && !entry->handle) {
      g->add(i, refused(name, sys.render(restarting(*entry)), EAGAIN));
      continue;
    }
    ask(name, entry, [g, i](T answer) { g->add(i, std::move(answer)); });
  }
  return g->promise;
}

/// Options a running primary may change without a restart (as HAST's reload).
bool live_changeable(const resource_config& a, const resource_config& b) {
  auto x = a;
  x.remote = b.remote;
  x.source = b.source;
  x.replication = b.replication;
  x.checksum = b.checksum;
  x.compression = b.compression;
  x.timeout = b.timeout;
  x.exec = b.exec;
  x.metaflush = b.metaflush;
  x.resync_checksum = b.resync_checksum;
  x.syncrate = b.syncrate;
  x.secret = b.secret;
  x.secret_where = b.secret_where;
  x.secret_key = b.secret_key;
  x.nbd_allow = b.nbd_allow;
  x.where = b.where;
  return x == b;
}

/// Puts a freshly started resource back in the role it is wanted in. Its
/// provider may for a moment still be locked by the actors of the resource
/// it replaces (they close it as they exit): a `busy` answer is tried again
/// after role_busy_retry, role_attempts_left times.
void return_to_role(supervisor_ptr self, const std::string& name) {
  auto it = self->state.resources.find(name);
  if (it == self->state.resources.end() || !it->second.handle || it->second.wanted == role::init)
    return;
  auto handle = it->second.handle;
  auto wanted = it->second.wanted;
  self->request(handle, role_change_timeout, atom::role_v, wanted, false)
    .then(
      [=](role) { spdlog::info("resource {} is {} again", name, to_string(wanted)); },
      [=](caf::error& err) {
        auto& s = self->state;
        auto e = s.resources.find(name);
        if (e == s.resources.end() || e->second.handle != handle)
          return;  // replaced meanwhile
        if (err == errc::busy && e->second.role_attempts_left > 0) {
          --e->second.role_attempts_left;
          e->second.role_retry_due = true;
          self->delayed_send(self, role_busy_retry, atom::restart_v, name);
          return;
        }
        spdlog::error("resource {} could not return to role {}: {}", name, to_string(wanted),
                      self->system().render(err));
      });
}

/// SIGHUP changed settings that need a restart of a resource that is not
/// primary and went to init: `old` stops; once its NBD export has stopped
/// listening (atom::export_closed, from the old actor's last act), a
/// resource with `config` starts and returns to `previous`. Spawning at
/// once raced the old listener for an unchanged `nbd` address.
void restart_with(supervisor_ptr self, const resource_actor& old, const resource_config& config,
                  role previous) {
  auto& s = self->state;
  auto it = s.resources.find(config.name);
  if (s.stopping || it == s.resources.end() || it->second.handle != old)
    return;  // removed, failed or replaced meanwhile: the newer change rules
  self->demonitor(old.address());
  self->send_exit(old, caf::exit_reason::user_shutdown);
  auto& entry = it->second;
  entry.config = config;
  entry.handle = nullptr;
  entry.wanted = previous;
  entry.replacing = old.address();
}

/// The replaced actor's export is closed: its replacement starts.
void start_replacement(supervisor_ptr self, const std::string& name) {
  auto& s = self->state;
  auto entry = s.resources[name];
  spawn_resource(self, entry.config);
  auto& fresh = s.resources[name];
  fresh.wanted = entry.wanted;
  fresh.role_attempts_left = role_busy_attempts;
  fresh.replacing = nullptr;
  spdlog::info("reload: resource {} restarted with its new settings; returning to role {}", name,
               to_string(entry.wanted));
  return_to_role(self, name);
}

} // namespace

supervisor_actor::behavior_type supervisor(supervisor_actor::stateful_pointer<supervisor_state> self,
                                           node_config config, runtime io) {
  self->state.config = std::move(config);
  self->state.io = io;
  for (auto& rc : self->state.config.resources)
    if (!rc.is_witness)
      spawn_resource(self, rc);
  serve_witnessed(self, self->state.config);
  // Exits of linked resources are handled as DOWN messages below; any other
  // exit (the daemon's shutdown) ends the supervisor and, through the links,
  // every resource.
  self->set_exit_handler([=](const caf::exit_msg& msg) {
    for (auto& [name, entry] : self->state.resources)
      if (entry.address == msg.source)
        return;
    if (self->state.witness && msg.source == self->state.witness.address()) {
      spdlog::error("the witness failed ({}); starting it again",
                    self->system().render(msg.reason));
      self->state.witness = nullptr;
      if (!self->state.stopping)
        serve_witnessed(self, self->state.config);
      return;
    }
    if (msg.reason)
      self->quit(msg.reason);
  });
  // A resource that fails is started again after a back-off, in the role
  // it had; its clients reconnect.
  self->set_down_handler([=](const caf::down_msg& msg) {
    auto& s = self->state;
    for (auto& [name, entry] : s.resources) {
      if (!entry.handle || entry.handle.address() != msg.source)
        continue;
      if (s.stopping)
        return;
      auto ran = std::chrono::steady_clock::now() - entry.started;
      entry.backoff = ran >= restart_stable || entry.backoff.count() == 0
                        ? restart_backoff_min
                        : std::min(entry.backoff * 2, restart_backoff_max);
      entry.failure = self->system().render(msg.reason);
      entry.handle = nullptr;
      spdlog::error("resource {} failed ({}); restarting it in role {} in {} ms", name,
                    entry.failure, to_string(entry.wanted), entry.backoff.count());
      tell_events(self, "failed", name,
                  {{"reason", entry.failure}, {"restart_ms", std::to_string(entry.backoff.count())}});
      self->delayed_send(self, entry.backoff, atom::restart_v, name);
      return;
    }
  });
  return {
    [=](atom::role, role_request& req) -> caf::result<std::vector<role_outcome>> {
      auto refused = [](const std::string& name, std::string why, int number) {
        return role_outcome{name, role::init, std::move(why), number};
      };
      auto target = req.target;
      auto force = req.force;
      return fan_out<role_outcome>(
        self, select(self, req.resources), refused,
        [=](const std::string& name, const supervised_resource* entry, auto reply) {
          self->request(entry->handle, role_change_timeout, atom::role_v, target, force)
            .then(
              [=](role previous) {
                if (auto it = self->state.resources.find(name); it != self->state.resources.end())
                  it->second.wanted = target;
                reply({name, previous, "", 0});
              },
              [=](caf::error& err) {
                reply({name, role::init, self->system().render(err), error_number(err)});
              });
        });
    },
    [=](atom::status, std::vector<std::string>& wanted)
      -> caf::result<std::vector<resource_status>> {
      // An unknown name gets FreeBSD's row: the name and an error number.
      auto refused = [](const std::string& name, std::string why, int number) {
        resource_status st;
        st.name = name;
        st.status = "-";
        st.last_error = std::move(why);
        st.error = number;
        return st;
      };
      return fan_out<resource_status>(
        self, select(self, wanted, true), refused,
        [=](const std::string& name, const supervised_resource* entry, auto reply) {
          auto failed = [=](caf::error& err) {
            reply(refused(name, self->system().render(err), ETIMEDOUT));
          };
          auto answered = [=](resource_status& st) { reply(std::move(st)); };
          if (entry == nullptr)  // witnessed here
            self->request(self->state.witness, resource_answer_timeout, atom::status_v, name)
              .then(answered, failed);
          else
            self->request(entry->handle, resource_answer_timeout, atom::status_v)
              .then(answered, failed);
        });
    },
    [=](atom::reload, node_config& fresh) -> std::string {
      auto& s = self->state;
      std::vector<std::string> notes;
      // Removed resources go away (HAST sets them to init first).
      for (auto it = s.resources.begin(); it != s.resources.end();) {
        if (auto found = fresh.find(it->first); found == nullptr || found->is_witness) {
          notes.push_back("removed " + it->first);
          auto handle = it->second.handle;
          if (!handle) {  // waiting for a restart: nothing runs
            it = s.resources.erase(it);
            continue;
          }
          self->demonitor(handle.address());
          self->request(handle, resource_stop_timeout, atom::stop_v)
            .then([=](bool) { self->send_exit(handle, caf::exit_reason::user_shutdown); },
                  [=](caf::error&) { self->send_exit(handle, caf::exit_reason::user_shutdown); });
          it = s.resources.erase(it);
        } else {
          ++it;
        }
      }
      serve_witnessed(self, fresh);
      for (auto& rc : fresh.resources) {
        if (rc.is_witness)
          continue;
        auto it = s.resources.find(rc.name);
        if (it == s.resources.end()) {
          spawn_resource(self, rc);
          notes.push_back("added " + rc.name);
          continue;
        }
        if (it->second.config == rc)
          continue;
        if (!it->second.handle) {  // the restart takes the new settings
          it->second.config = rc;
          apply_nbd_access(rc);
          notes.push_back("updated " + rc.name + " (restarting)");
          continue;
        }
        if (live_changeable(it->second.config, rc)) {
          auto link = link_changes(it->second.config, rc);
          it->second.config = rc;
          apply_nbd_access(rc);
          caf::anon_send(it->second.handle, atom::configure_v, rc);
          notes.push_back("updated " + rc.name
                          + (link.empty() ? "" : " (reconnecting: " + link + ")"));
          continue;
        }
        // name, local, nbd or device changed: the resource restarts with the
        // new settings, as in FreeBSD's hastd_reload(): to init (its
        // provider closed, the role hook run), then started again and back
        // in the role it had. Refused while it is primary (its clients and
        // /dev/hast/<name> would go; docs/CONFIG.md).
        auto handle = it->second.handle;
        auto name = rc.name;
        notes.push_back("restarting " + rc.name + " if not primary");
        self->request(handle, resource_answer_timeout, atom::status_v)
          .then([=](resource_status& st) {
            if (st.current_role == role::primary) {
              spdlog::warn("reload: resource {} is primary; changes to name, local, nbd or device "
                           "need 'hastctl role init {}' first; keeping the old settings",
                           name, name);
              return;
            }
            auto previous = st.current_role;
            self->request(handle, resource_stop_timeout, atom::role_v, role::init, false)
              .then([=](role) { restart_with(self, handle, rc, previous); },
                    [=](caf::error& err) {
                      spdlog::warn("reload: resource {} could not go to role init ({}); keeping "
                                   "its old settings",
                                   name, self->system().render(err));
                    });
          },
          [=](caf::error& err) {
            // A resource that does not answer keeps its settings; the
            // supervisor and every other resource go on.
            spdlog::warn("reload: resource {} did not answer ({}); keeping its old settings",
                         name, self->system().render(err));
          });
      }
      s.config = std::move(fresh);
      std::string summary = notes.empty() ? "no changes" : "";
      for (auto& n : notes)
        summary += (summary.empty() ? "" : ", ") + n;
      spdlog::info("configuration reloaded: {}", summary);
      return summary;
    },
    [=](atom::resync, std::vector<std::string>& wanted)
      -> caf::result<std::vector<role_outcome>> {
      auto refused = [](const std::string& name, std::string why, int number) {
        return role_outcome{name, role::init, std::move(why), number};
      };
      return fan_out<role_outcome>(
        self, select(self, wanted), refused,
        [=](const std::string& name, const supervised_resource* entry, auto reply) {
          self->request(entry->handle, resource_answer_timeout, atom::resync_v)
            .then([=](bool) { reply({name, role::secondary, "", 0}); },
                  [=](caf::error& err) {
                    reply(refused(name, self->system().render(err), error_number(err)));
                  });
        });
    },
    [=](atom::verify, std::vector<std::string>& wanted, bool repair, bool stop)
      -> caf::result<std::vector<verify_outcome>> {
      // `verify all` (a cron job on both nodes) verifies what is primary
      // here and passes over the rest; a named resource must be primary.
      auto every = names_every(wanted);
      return fan_out<verify_outcome>(
        self, select(self, wanted), verify_refused,
        [=](const std::string& name, const supervised_resource* entry, auto reply) {
          self->request(entry->handle, resource_answer_timeout, atom::verify_v, repair, stop)
            .then([=](std::string& message) { reply({name, message, "", 0}); },
                  [=](caf::error& err) {
                    if (every && err == errc::not_primary && !stop)
                      reply({name, "not primary here; passed over", "", 0});
                    else if (every && stop && err == errc::invalid_argument)
                      reply({name, "no verify running", "", 0});
                    else
                      reply(verify_refused(name, self->system().render(err), error_number(err)));
                  });
        });
    },
    [=](atom::grow, std::vector<std::string>& wanted, bool assume_clean)
      -> caf::result<std::vector<verify_outcome>> {
      // `grow all` on both nodes grows what is primary here. A resource in
      // role init grows offline only when named (docs/METADATA.md).
      auto every = names_every(wanted);
      return fan_out<verify_outcome>(
        self, select(self, wanted), verify_refused,
        [=](const std::string& name, const supervised_resource* entry, auto reply) {
          auto handle = entry->handle;
          auto grow = [=] {
            self->request(handle, resource_grow_timeout, atom::grow_v, assume_clean)
              .then([=](std::string& message) { reply({name, message, "", 0}); },
                    [=](caf::error& err) {
                      if (every && err == errc::not_primary)
                        reply({name, "not primary here; passed over", "", 0});
                      else
                        reply(verify_refused(name, self->system().render(err), error_number(err)));
                    });
          };
          if (!every) {
            grow();
            return;
          }
          self->request(handle, resource_answer_timeout, atom::status_v)
            .then(
              [=](resource_status& st) {
                if (st.current_role == role::init)
                  reply({name, "in role init here; passed over (name it to grow it offline)", "",
                         0});
                else
                  grow();
              },
              [=](caf::error& err) {
                reply(verify_refused(name, self->system().render(err), error_number(err)));
              });
        });
    },
    [=](atom::peer_accept, accepted_link& accepted) {
      auto it = self->state.resources.find(accepted.hello.resource);
      if (it == self->state.resources.end()) {
        spdlog::warn("peer {} asked for unknown resource '{}'; closing",
                     accepted.link->remote_address(), accepted.hello.resource);
        accepted.link->close("unknown resource");
        return;
      }
      if (!it->second.handle) {
        accepted.link->close("the resource is restarting");
        return;
      }
      self->send(it->second.handle, atom::peer_accept_v, std::move(accepted));
    },
    [=](atom::serving, std::string& name) -> caf::actor_addr {
      auto it = self->state.resources.find(name);
      if (it == self->state.resources.end() || !it->second.handle)
        return nullptr;
      return it->second.handle.address();
    },
    [=](atom::stop) -> caf::result<bool> {
      auto& s = self->state;
      s.stopping = true;
      if (s.resources.empty())
        return true;
      auto running = std::count_if(s.resources.begin(), s.resources.end(),
                                   [](auto& r) { return static_cast<bool>(r.second.handle); });
      if (running == 0)
        return true;
      auto rp = self->make_response_promise<bool>();
      auto done = std::make_shared<size_t>(static_cast<size_t>(running));
      for (auto& [name, entry] : s.resources) {
        auto finish = [=](bool) mutable {
          if (--*done == 0)
            rp.deliver(true);
        };
        (void) name;
        if (!entry.handle)
          continue;
        self->request(entry.handle, resource_stop_timeout, atom::stop_v)
          .then(finish, [=](caf::error&) mutable { finish(false); });
      }
      return rp;
    },
    [=](atom::failover, std::string& name, role target, std::string& why) {
      auto it = self->state.resources.find(name);
      if (self->state.stopping || it == self->state.resources.end() || !it->second.handle)
        return;
      spdlog::warn("failover: {} becomes {} ({})", name, to_string(target), why);
      // Forced: a primary that lost its lease must stop serving whatever
      // clients or mounts it has.
      self->request(it->second.handle, role_change_timeout, atom::role_v, target, true)
        .then(
          [=](role) {
            if (auto e = self->state.resources.find(name); e != self->state.resources.end())
              e->second.wanted = target;
            spdlog::info("failover: {} is {}", name, to_string(target));
          },
          [=](caf::error& err) {
            spdlog::error("failover: {} could not become {}: {}", name, to_string(target),
                          self->system().render(err));
          });
    },
    [=](atom::witness_accept, accepted_link& accepted) {
      if (!self->state.witness) {
        accepted.link->close("this node is not a witness");
        return;
      }
      self->send(self->state.witness, atom::peer_accept_v, std::move(accepted));
    },
    [=](atom::restart, std::string& name) {
      auto& s = self->state;
      auto it = s.resources.find(name);
      if (s.stopping || it == s.resources.end())
        return;  // removed by a reload meanwhile, or shutting down
      if (it->second.replacing)
        return;  // a reload restart: atom::export_closed starts it
      if (it->second.handle) {
        // Running: a return to its role may be due again (return_to_role).
        if (it->second.role_retry_due) {
          it->second.role_retry_due = false;
          return_to_role(self, name);
        }
        return;
      }
      auto entry = it->second;
      spawn_resource(self, entry.config);
      auto& fresh = s.resources[name];
      fresh.wanted = entry.wanted;
      fresh.backoff = entry.backoff;
      fresh.failure = entry.failure;
      spdlog::info("resource {} restarted", name);
      tell_events(self, "restarted", name, {{"role", to_string(entry.wanted)}});
      fresh.role_attempts_left = role_busy_attempts;
      return_to_role(self, name);
    },
    [=](atom::export_closed, caf::actor_addr& gone) {
      auto& s = self->state;
      if (s.stopping)
        return;
      for (auto& [name, entry] : s.resources)
        if (!entry.handle && entry.replacing && entry.replacing == gone)
          return start_replacement(self, name);
    },
  };
}

} // namespace hast
