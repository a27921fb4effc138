// The metrics exporter: one registry, its two outlets.
#include "exporter.hpp"

#include <boost/asio/execution/context.hpp>
#include <boost/asio/query.hpp>

#ifndef OOMWATCH_VERSION
#define OOMWATCH_VERSION "0.1.0"
#endif

#include <charconv>
#include <cstdint>
#include <iostream>
#include <utility>

namespace oomwatch::cli {

namespace {
metrics_registry::options with_retention(metrics_registry::options opts, std::chrono::seconds retention) {
    opts.retention = retention;
    return opts;
}
} // namespace

std::optional<std::chrono::seconds> parse_duration(std::string_view text) {
    std::int64_t unit = 1;
    if (!text.empty()) {
        switch (text.back()) {
        case 's': unit = 1; text.remove_suffix(1); break;
        case 'm': unit = 60; text.remove_suffix(1); break;
        case 'h': unit = 3600; text.remove_suffix(1); break;
        default: break;
        }
    }
    std::int64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    // Digits only (no sign), and no overflow once in seconds.
    if (text.empty() || text.front() == '-' || ec != std::errc{} || end != text.data() + text.size() ||
        value > INT64_MAX / 3600 / unit)
        return std::nullopt;
    return std::chrono::seconds(value * unit);
}

metrics_exporter::metrics_exporter(boost::asio::any_io_executor ex, const metrics_config& cfg,
                                   metrics_registry::options opts)
    : registry_(with_retention(std::move(opts), cfg.retention)) {
    if (cfg.listen) {
        server_.emplace(ex, *cfg.listen,
                        http_server::document{"/metrics", std::string(metrics_content_type),
                                              [this] { return registry_.render(); }});
    }
    if (cfg.textfile) {
        textfile_.emplace(ex, *cfg.textfile, [this] {
            std::string text = registry_.render();
            // A removed cgroup's series leave the file when their retention ends, even
            // without a further event. (Called from a write: the rate limit applies.)
            if (auto at = registry_.next_expiry()) textfile_->schedule(*at);
            return text;
        });
    }
}

std::optional<std::string> metrics_exporter::url() const {
    if (!server_) return std::nullopt;
    const auto ep = server_->local_endpoint();
    const auto addr = ep.address().to_string();
    return "http://" + (ep.address().is_v6() ? "[" + addr + "]" : addr) + ":" + std::to_string(ep.port()) + "/metrics";
}

boost::system::error_code metrics_exporter::start() {
    if (textfile_) {
        if (auto ec = textfile_->write_now()) return ec;
    }
    if (server_) server_->start();
    return {};
}

void metrics_exporter::record(const oom_event& ev) {
    registry_.record(ev);
    if (textfile_) textfile_->schedule(textfile_writer::clock::now());
}

void metrics_exporter::record(const pressure_event& ev, const std::string& trigger) {
    registry_.record(ev, trigger);
    if (textfile_) textfile_->schedule(textfile_writer::clock::now());
}

void metrics_exporter::stop() {
    if (std::exchange(stopped_, true)) return;
    if (server_) server_->stop();
    if (textfile_) {
        textfile_->stop();
        // The last events may be within the rate limit's wait: written now.
        if (auto ec = textfile_->write_now())
            std::cerr << "oomwatch: " << textfile_->path().string() << ": " << ec.message() << '\n';
    }
}

std::unique_ptr<metrics_exporter> start_exporter(boost::asio::any_io_executor ex, const metrics_config& cfg,
                                                 kind_set kinds, const std::vector<std::string>& cgroups,
                                                 const std::vector<std::pair<std::string, std::string>>& pressure_triggers,
                                                 std::function<std::size_t()> watched_cgroups) {
    metrics_registry::options opts;
    opts.version = OOMWATCH_VERSION;
    opts.process_start = std::chrono::system_clock::now();
    opts.watched_cgroups = std::move(watched_cgroups);
    opts.kernel_log = [ctx = &boost::asio::query(ex, boost::asio::execution::context)] {
        return kernel_log_statistics(*ctx);
    };
    std::unique_ptr<metrics_exporter> exporter;
    try {
        exporter = std::make_unique<metrics_exporter>(std::move(ex), cfg, std::move(opts));
    } catch (const boost::system::system_error& e) {
        std::cerr << "oomwatch: --metrics: " << e.code().message() << '\n';
        return nullptr;
    }
    for (const auto& cg : cgroups) exporter->registry().add_cgroup(cg, kinds);
    for (const auto& [cg, trigger] : pressure_triggers) exporter->registry().add_pressure_trigger(cg, trigger);
    if (auto ec = exporter->start()) {
        std::cerr << "oomwatch: " << cfg.textfile->string() << ": " << ec.message() << '\n';
        return nullptr;
    }
    return exporter;
}

} // namespace oomwatch::cli
