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

// c_str() would silently cut such a path short and name another file.
bool has_nul(const std::filesystem::path& p) noexcept {
    return p.native().find('\0') != std::string::npos;
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

boost::system::error_code read_file(const std::filesystem::path& path, std::string& out) {
    out.clear();
    if (has_nul(path)) return errno_code(EINVAL);
    unique_fd fd;
    do {
        fd.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    } while (!fd && errno == EINTR);
    if (!fd) return errno_code(errno);

    try {
        std::size_t size = 0;
        std::size_t chunk = 4096;
        for (;;) {
            if (size == out.size()) {
                if (size >= max_file_size) {
                    out.clear();
                    return errno_code(EFBIG);
                }
                out.resize(size + chunk);
                if (chunk < (std::size_t{1} << 20)) chunk *= 2;
            }
            ssize_t n = ::read(fd.get(), out.data() + size, out.size() - size);
            if (n < 0) {
                if (errno == EINTR) continue;
                int e = errno;
                out.clear();
                return errno_code(e);
            }
            if (n == 0) break;
            size += static_cast<std::size_t>(n);
        }
        out.resize(size);
    } catch (const std::bad_alloc&) {
        out.clear();
        return errno_code(ENOMEM);
    } catch (const std::length_error&) {
        out.clear();
        return errno_code(ENOMEM);
    }
    return {};
}

boost::system::error_code stat_path(const std::filesystem::path& path, struct stat& st) {
    if (has_nul(path)) return errno_code(EINVAL);
    if (::stat(path.c_str(), &st) != 0) return errno_code(errno);
    return {};
}

} // namespace oomwatch::detail
