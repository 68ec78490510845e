// The Prometheus text of /metrics and the event records of hastctl events:
// plain data in, text out.

#include "base/events.hpp"
#include "base/metrics.hpp"

#include <gtest/gtest.h>

#include <sstream>

namespace hast {
namespace {

resource_status primary_with_writes() {
  resource_status r;
  r.name = "r\"1";
  r.current_role = role::primary;
  r.connected = true;
  r.counters.writes = 3;
  r.counters.write_bytes = 3 * 4096;
  auto& h = r.client_latency[static_cast<size_t>(io_op::write)];
  h.observe(std::chrono::microseconds(40));    // first bucket (<= 50 µs)
  h.observe(std::chrono::microseconds(700));   // <= 1 ms
  h.observe(std::chrono::seconds(30));         // above every bound
  return r;
}

std::string line_of(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(series + " ", 0) == 0)
      return line.substr(series.size() + 1);
  return "<missing>";
}

TEST(MetricsText, CountersAndGaugesCarryTheResourceLabelEscaped) {
  auto text = render_metrics({primary_with_writes()}, "1.2.3");
  EXPECT_EQ(line_of(text, R"(hast_build_info{version="1.2.3"})"), "1");
  EXPECT_EQ(line_of(text, R"(hast_role{resource="r\"1",role="primary"})"), "1");
  EXPECT_EQ(line_of(text, R"(hast_role{resource="r\"1",role="secondary"})"), "0");
  EXPECT_EQ(line_of(text, R"(hast_connected{resource="r\"1"})"), "1");
  EXPECT_EQ(line_of(text, R"(hast_requests_total{resource="r\"1",op="write"})"), "3");
  EXPECT_EQ(line_of(text, R"(hast_request_bytes_total{resource="r\"1",op="write"})"), "12288");
  EXPECT_NE(text.find("# TYPE hast_requests_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE hast_request_duration_seconds histogram\n"), std::string::npos);
}

TEST(MetricsText, HistogramBucketsAreCumulativeAndEndAtTheCount) {
  auto text = render_metrics({primary_with_writes()}, "x");
  const std::string w = R"(hast_request_duration_seconds_bucket{resource="r\"1",op="write",le=")";
  EXPECT_EQ(line_of(text, w + R"(5e-05"})"), "1");
  EXPECT_EQ(line_of(text, w + R"(0.0005"})"), "1");
  EXPECT_EQ(line_of(text, w + R"(0.001"})"), "2");
  EXPECT_EQ(line_of(text, w + R"(10"})"), "2");
  EXPECT_EQ(line_of(text, w + R"(+Inf"})"), "3");
  EXPECT_EQ(line_of(text, R"(hast_request_duration_seconds_count{resource="r\"1",op="write"})"), "3");
  auto sum = std::stod(line_of(text, R"(hast_request_duration_seconds_sum{resource="r\"1",op="write"})"));
  EXPECT_NEAR(sum, 30.00074, 1e-6);
}

TEST(MetricsText, AWitnessRecordHasARoleOnlyAndAFailedResourceNothing) {
  resource_status w;
  w.name = "wit";
  w.witness_node = true;
  resource_status failed;
  failed.name = "bad";
  failed.error = 11;
  auto text = render_metrics({w, failed}, "x");
  EXPECT_EQ(line_of(text, R"(hast_role{resource="wit",role="witness"})"), "1");
  EXPECT_EQ(line_of(text, R"(hast_connected{resource="wit"})"), "<missing>");
  EXPECT_EQ(text.find("resource=\"bad\""), std::string::npos);
  // failover series only for failover auto.
  EXPECT_EQ(text.find("hast_lease_held{"), std::string::npos);
}

TEST(MetricsText, ALinkOnlyWhereThereIsARemote) {
  auto alone = primary_with_writes();
  alone.remote = "none";
  auto text = render_metrics({alone}, "x");
  EXPECT_EQ(line_of(text, R"(hast_connected{resource="r\"1"})"), "<missing>");
  EXPECT_EQ(line_of(text, R"(hast_role{resource="r\"1",role="primary"})"), "1");
}

TEST(EventRecord, TextAndJsonForms) {
  event_record e{"disconnect", "shared", 1764561600123, {{"reason", "peer closed \"it\""}, {"n", "5"}}};
  EXPECT_EQ(event_time_text(e.time_ms), "2025-12-01T04:00:00.123Z");
  EXPECT_EQ(event_line(e),
            R"(2025-12-01T04:00:00.123Z disconnect shared reason="peer closed \"it\"" n=5)");
  auto j = to_json(e);
  EXPECT_EQ(j.dump(),
            R"({"time":"2025-12-01T04:00:00.123Z","event":"disconnect","resource":"shared",)"
            R"("reason":"peer closed \"it\"","n":"5"})");
  auto back = event_from_json(j);
  EXPECT_EQ(back.name, e.name);
  EXPECT_EQ(back.resource, e.resource);
  EXPECT_EQ(back.time_ms, e.time_ms);
  EXPECT_EQ(back.fields, e.fields);
}

TEST(EventRecord, AnEmptyValueIsQuoted) {
  event_record e{"connect", "r", 0, {{"address", ""}}};
  EXPECT_EQ(event_line(e), R"(1970-01-01T00:00:00.000Z connect r address="")");
}

} // namespace
} // namespace hast
