// The textfile writer: atomic replacement, rate-limited rewrites.
#include "textfile.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <iostream>
#include <string_view>

namespace oomwatch::cli {

namespace {

boost::system::error_code last_error() { return {errno, boost::system::system_category()}; }

// Writes `text` to a new `tmp`, then renames it over `path`: a reader sees the old file
// or the new one, never a part.
boost::system::error_code replace_file(const std::filesystem::path& path, const std::filesystem::path& tmp,
                                       std::string_view text, bool durable) {
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return last_error();
    boost::system::error_code ec;
    while (!text.empty()) {
        const ssize_t n = ::write(fd, text.data(), text.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            ec = last_error();
            break;
        }
        text.remove_prefix(static_cast<std::size_t>(n));
    }
    if (durable && !ec && ::fsync(fd) != 0) ec = last_error();
    if (::close(fd) != 0 && !ec) ec = last_error();  // NFS reports write errors here
    if (!ec && ::rename(tmp.c_str(), path.c_str()) != 0) ec = last_error();
    if (ec) {
        ::unlink(tmp.c_str());
        return ec;
    }
    if (durable) {
        // The rename itself is in the directory: flushed too, or a crash may undo it.
        const auto dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
        const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) return last_error();
        if (::fsync(dfd) != 0) ec = last_error();
        ::close(dfd);
    }
    return ec;
}

} // namespace

textfile_writer::textfile_writer(boost::asio::any_io_executor ex, std::filesystem::path path,
                                 std::function<std::string()> render, clock::duration min_interval, bool durable)
    : path_(std::move(path)), tmp_(path_.string() + ".tmp"), render_(std::move(render)),
      min_interval_(min_interval), durable_(durable), timer_(std::move(ex)) {}

boost::system::error_code textfile_writer::write_now() {
    last_write_ = clock::now();
    return replace_file(path_, tmp_, render_(), durable_);
}

void textfile_writer::schedule(clock::time_point at) {
    if (stopped_) return;
    at = std::max(at, last_write_ + min_interval_);
    if (pending_ && timer_.expiry() <= at) return;  // an earlier rewrite covers this one
    pending_ = true;
    timer_.expires_at(at);  // cancels a later wait, whose handler then does nothing
    timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) on_timer();
    });
}

void textfile_writer::on_timer() {
    pending_ = false;
    if (stopped_) return;
    // A failed rewrite is not fatal: events are still printed; the next change retries.
    if (auto ec = write_now()) {
        if (!failing_) std::cerr << "oomwatch: " << path_.string() << ": " << ec.message() << '\n';
        failing_ = true;
    } else {
        failing_ = false;
    }
}

void textfile_writer::stop() {
    stopped_ = true;
    pending_ = false;
    timer_.cancel();
}

} // namespace oomwatch::cli
