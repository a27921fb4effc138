// `oomwatch watch --metrics/--textfile`: the metrics registry fed by the pumps, served
// over HTTP (http_server) and/or written for node_exporter (textfile_writer).
#pragma once

#include "http_server.hpp"
#include "metrics.hpp"
#include "textfile.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace oomwatch::cli {

/// What the command line asked for.
struct metrics_config {
    std::optional<boost::asio::ip::tcp::endpoint> listen;  ///< --metrics ADDR:PORT
    std::optional<std::filesystem::path> textfile;          ///< --textfile PATH
    std::chrono::seconds retention = std::chrono::minutes(10);  ///< --metrics-retention
    bool enabled() const { return listen || textfile; }
};

/// "90", "90s", "10m", "2h": a duration in whole seconds; empty on a malformed one.
std::optional<std::chrono::seconds> parse_duration(std::string_view text);

class metrics_exporter {
public:
    /// Binds the listening socket (throws boost::system::system_error, e.g. address in
    /// use). The registry's retention is cfg.retention.
    metrics_exporter(boost::asio::any_io_executor ex, const metrics_config& cfg, metrics_registry::options opts);

    metrics_registry& registry() { return registry_; }
    /// "http://127.0.0.1:9100/metrics": where it serves (the port chosen for port 0).
    std::optional<std::string> url() const;

    /// Writes the text file (so that it exists from the start) and starts serving. The
    /// error of the first write, which then is fatal: nothing is started.
    [[nodiscard]] boost::system::error_code start();

    /// An event as printed.
    void record(const oom_event& ev);

    /// A pressure event as printed, of the trigger named `trigger`.
    void record(const pressure_event& ev, const std::string& trigger);

    /// Stops serving, and writes the text file a last time. Idempotent.
    void stop();

private:
    metrics_registry registry_;
    std::optional<http_server> server_;
    std::optional<textfile_writer> textfile_;
    bool stopped_ = false;
};

/// The exporter of `oomwatch watch`: the series of `cgroups` (the watched directories)
/// at 0 for `kinds`, the text file written, the server listening, `version` in
/// oomwatch_build_info, the event counts of `pressure_triggers` (cgroup, trigger) at 0. Null, with the reason on stderr, when it cannot start.
std::unique_ptr<metrics_exporter> start_exporter(boost::asio::any_io_executor ex, const metrics_config& cfg,
                                                 kind_set kinds, const std::vector<std::string>& cgroups,
                                                 const std::vector<std::pair<std::string, std::string>>& pressure_triggers,
                                                 std::function<std::size_t()> watched_cgroups);

} // namespace oomwatch::cli
