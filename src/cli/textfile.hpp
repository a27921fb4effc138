// `--textfile PATH`: the metrics as a file for node_exporter's textfile collector,
// replaced atomically (written to PATH.tmp, which the collector ignores, then renamed),
// rewritten after a batch of changes, at most once per interval.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>

namespace oomwatch::cli {

class textfile_writer {
public:
    using clock = std::chrono::steady_clock;

    /// `durable`: each write is flushed to disk (the file, then its directory) before it
    /// counts as done, so that a crash or power loss leaves the old file or the new one.
    textfile_writer(boost::asio::any_io_executor ex, std::filesystem::path path, std::function<std::string()> render,
                    clock::duration min_interval = std::chrono::seconds(1), bool durable = false);

    /// Writes the file now (at start, so that it exists, and at the end); the error of a
    /// write that failed, the file left as it was.
    [[nodiscard]] boost::system::error_code write_now();

    /// Asks for a rewrite at `at` at the earliest (now: as soon as the interval since
    /// the last write allows), coalesced with every other request until then.
    void schedule(clock::time_point at);

    /// Cancels a pending rewrite.
    void stop();

    const std::filesystem::path& path() const { return path_; }

private:
    void on_timer();

    std::filesystem::path path_;
    std::filesystem::path tmp_;
    std::function<std::string()> render_;
    clock::duration min_interval_;
    bool durable_;
    boost::asio::steady_timer timer_;
    bool pending_ = false;
    bool stopped_ = false;
    bool failing_ = false;  // a failure was reported: the next ones are not, until a write works
    clock::time_point last_write_{};
};

} // namespace oomwatch::cli
