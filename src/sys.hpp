// Private helpers over the system calls the library needs (not installed).
#pragma once

#include <boost/system/error_code.hpp>

#include <sys/stat.h>

#include <filesystem>
#include <string>

namespace oomwatch::detail {

/// Owns a file descriptor; closes it on destruction. Move-only.
class unique_fd {
public:
    unique_fd() noexcept = default;
    explicit unique_fd(int fd) noexcept : fd_(fd) {}
    unique_fd(unique_fd&& other) noexcept : fd_(other.release()) {}
    unique_fd& operator=(unique_fd&& other) noexcept {
        if (this != &other) reset(other.release());
        return *this;
    }
    unique_fd(const unique_fd&) = delete;
    unique_fd& operator=(const unique_fd&) = delete;
    ~unique_fd() { reset(); }

    int get() const noexcept { return fd_; }
    /// Gives up ownership without closing.
    int release() noexcept {
        int fd = fd_;
        fd_ = -1;
        return fd;
    }
    /// Closes the owned descriptor (if any and if different from `fd`) and owns `fd`.
    void reset(int fd = -1) noexcept;
    explicit operator bool() const noexcept { return fd_ >= 0; }

private:
    int fd_ = -1;
};

/// Reads the whole file into `out` (replacing its contents): open(O_RDONLY|O_CLOEXEC),
/// read to EOF (EINTR retried), close. Errors are errno values in `system_category()`;
/// a file larger than 64 MiB gives `EFBIG`, a path with a NUL byte `EINVAL`.
boost::system::error_code read_file(const std::filesystem::path& path, std::string& out);
boost::system::error_code read_file(const std::string& path, std::string& out);
inline boost::system::error_code read_file(const char* path, std::string& out) { return read_file(std::string(path), out); }

/// `read_file` for a small cgroup file (`memory.events`, `memory.oom_control`): the kernel
/// makes such a file whole on the first read (one seq_file record), so a read shorter
/// than the 4 KiB buffer is taken as the end, saving the read that would return 0. Not
/// for files of many records (mountinfo), whose reads may stop short before the end.
/// With `file_ino`, also the inode of the file read (fstat on the open descriptor).
boost::system::error_code read_small_file(const std::string& path, std::string& out, ino_t* file_ino = nullptr);

/// Whether a watched cgroup directory still exists: `alive` when `dir` is there with
/// inode `ino`; `gone` when it is missing (ENOENT, ENODEV) or is a namesake with another
/// inode; `unknown` when stat(2) failed otherwise (the error is in `ec`).
enum class liveness { alive, gone, unknown };
liveness check_liveness(const std::string& dir, ino_t ino, boost::system::error_code& ec);

/// stat(2); errors are errno values in `system_category()`.
boost::system::error_code stat_path(const std::filesystem::path& path, struct stat& st);
boost::system::error_code stat_path(const std::string& path, struct stat& st);
inline boost::system::error_code stat_path(const char* path, struct stat& st) { return stat_path(std::string(path), st); }

} // namespace oomwatch::detail
