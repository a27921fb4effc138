#include "sys.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <new>
#include <stdexcept>

namespace oomwatch::detail {

namespace {

boost::system::error_code errno_code(int e) noexcept {
    return {e, boost::system::system_category()};
}

constexpr std::size_t max_file_size = std::size_t{64} << 20;  // guards against endless files such as /dev/zero

} // namespace

void unique_fd::reset(int fd) noexcept {
    if (fd_ >= 0 && fd_ != fd) {
        // Not retried on EINTR: Linux has released the descriptor whatever close returns.
        ::close(fd_);
    }
    fd_ = fd;
}

namespace {

boost::system::error_code read_whole(const std::string& path, std::string& out, bool small, ino_t* file_ino = nullptr) {
    out.clear();
    if (path.find('\0') != std::string::npos) return errno_code(EINVAL);
    unique_fd fd;
    do {
        fd.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    } while (!fd && errno == EINTR);
    if (!fd) return errno_code(errno);
    if (file_ino) {
        struct stat st{};
        if (::fstat(fd.get(), &st) != 0) return errno_code(errno);
        *file_ino = st.st_ino;
    }

    // Read through a stack buffer and append: no zero-filling, and a caller that reuses
    // `out` (its capacity survives clear()) allocates nothing for small files.
    char buf[4096];
    try {
        for (;;) {
            ssize_t n = ::read(fd.get(), buf, sizeof buf);
            if (n < 0) {
                if (errno == EINTR) continue;
                int e = errno;
                out.clear();
                return errno_code(e);
            }
            if (n == 0) break;
            if (out.size() + static_cast<std::size_t>(n) > max_file_size) {
                out.clear();
                return errno_code(EFBIG);
            }
            out.append(buf, static_cast<std::size_t>(n));
            if (small && static_cast<std::size_t>(n) < sizeof buf) break;
        }
    } catch (const std::bad_alloc&) {
        out.clear();
        return errno_code(ENOMEM);
    } catch (const std::length_error&) {
        out.clear();
        return errno_code(ENOMEM);
    }
    return {};
}

} // namespace

boost::system::error_code read_file(const std::string& path, std::string& out) {
    return read_whole(path, out, false);
}

boost::system::error_code read_small_file(const std::string& path, std::string& out, ino_t* file_ino) {
    return read_whole(path, out, true, file_ino);
}

boost::system::error_code read_file(const std::filesystem::path& path, std::string& out) {
    return read_file(path.native(), out);
}

boost::system::error_code stat_path(const std::string& path, struct stat& st) {
    if (path.find('\0') != std::string::npos) return errno_code(EINVAL);
    if (::stat(path.c_str(), &st) != 0) return errno_code(errno);
    return {};
}

liveness check_liveness(const std::string& dir, ino_t ino, boost::system::error_code& ec) {
    struct stat st{};
    ec = stat_path(dir, st);
    if (!ec) return st.st_ino == ino ? liveness::alive : liveness::gone;
    if (ec == boost::system::errc::no_such_file_or_directory || ec == boost::system::errc::no_such_device)
        return liveness::gone;
    return liveness::unknown;
}

boost::system::error_code stat_path(const std::filesystem::path& path, struct stat& st) {
    return stat_path(path.native(), st);
}

} // namespace oomwatch::detail
