#pragma once

// The Prometheus text exposition (format 0.0.4) of what the resources
// report: the body of hastd's /metrics. Plain data in, text out; the names
// and their meaning are listed in docs/OPERATIONS.md.

#include "base/status.hpp"

#include <string>
#include <vector>

namespace hast {

std::string render_metrics(const std::vector<resource_status>& resources, const std::string& version);

} // namespace hast
