#pragma once

// The witness (docs/FAILOVER.md): a hastd on a third host that holds no
// data and decides who may write. For every resource whose `on` section
// for this node says `role witness` it keeps a lease record (actors/
// lease_book.hpp), made durable in a small state file before any answer
// that depends on a change of it; the data nodes reach it through the
// peer listener with a witness_hello and must prove the resource's key.

#include "actors/lease_book.hpp"
#include "messages/actors.hpp"

#include <array>
#include <map>
#include <optional>

namespace hast {

struct witnessed_resource {
  resource_config config;
  std::string state_path;
  std::optional<lease_book> book;
};

struct member_link {
  peer_link_ptr link;
  std::string resource;
  std::string node;
  // Every member link proved the resource's key (the daemon's router ran
  // the session handshake before handing it over).
};

struct witness_state {
  std::map<std::string, witnessed_resource> resources;
  std::map<uint64_t, member_link> links;
  uint64_t next_link = 1;

  static inline const char* name = "hast.witness";
};

witness_actor::behavior_type witness(witness_actor::stateful_pointer<witness_state> self,
                                     node_config config);

/// Where a witnessed resource's record lives when `local` does not say.
std::string default_witness_state(const std::string& resource);

/// The record on disk: JSON, written to a temporary file, synced and
/// renamed over the old one. load_lease_record: no file (ENOENT) is an
/// empty record; a file that cannot be opened, read or parsed for any other
/// reason is an error. The caller logs it and starts with an empty record,
/// but save_lease_record never replaces a file that load_lease_record
/// cannot read, so every request that would change the record (any grant
/// of a claim) is refused until the file is repaired or removed.
result<lease_record> load_lease_record(const std::string& path);
status save_lease_record(const std::string& path, const lease_record& record);

} // namespace hast
