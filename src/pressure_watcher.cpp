// Memory-pressure watchers (issue 12): PSI triggers on cgroup v2 and /proc/pressure/memory,
// pressure levels on cgroup v1.
//
// PSI: each trigger is an open pressure file on which the trigger was written
// ("some 200000 2000000\0": the kernel overwrites the write's last byte with NUL, so the
// NUL must be sent). The kernel signals POLLPRI when the trigger fires (at most once a
// window), and POLLERR once the file's cgroup is gone (kernfs reports a deactivated file
// so). v1: an eventfd registered on memory.pressure_level, signalled once per level
// event and once more when the cgroup is torn down.
#include <oomwatch/pressure_watcher.hpp>

#include "detail/cgroup.hpp"
#include "detail/parse.hpp"
#include "logger.hpp"
#include "pressure_state.hpp"
#include "sys.hpp"
#include "v1_watcher.hpp"

#include <boost/asio/append.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <string>

namespace asio = boost::asio;
using boost::system::error_code;

namespace oomwatch {

std::string_view to_string(pressure_kind k) noexcept {
    switch (k) {
    case pressure_kind::pressure: return "pressure";
    case pressure_kind::removed: return "removed";
    case pressure_kind::failed: return "failed";
    }
    return "unknown";
}

std::string_view to_string(stall s) noexcept { return s == stall::full ? "full" : "some"; }

std::string_view to_string(pressure_level l) noexcept {
    switch (l) {
    case pressure_level::low: return "low";
    case pressure_level::medium: return "medium";
    case pressure_level::critical: return "critical";
    }
    return "unknown";
}

error_code validate(const pressure_trigger& t) noexcept {
    using namespace std::chrono_literals;
    // The kernel's own limits (kernel/sched/psi.c, WINDOW_MIN_US and WINDOW_MAX_US; 6.6
    // dropped the minimum, older kernels still have it).
    if (t.window < 500ms || t.window > 10s || t.threshold <= 0us || t.threshold > t.window)
        return error::invalid_pressure_trigger;
    return {};
}

namespace detail {

namespace {

error_code last_errno() { return {errno, boost::system::system_category()}; }

// How often a cgroup's existence is checked besides the kernel's POLLERR (a safety net:
// the kernel wakes pollers when it destroys a trigger, see docs/kernel.md).
constexpr std::chrono::seconds liveness_interval{2};

// The trigger as the kernel reads it, NUL included (psi_write overwrites the last byte).
std::string trigger_text(const pressure_trigger& t) {
    std::string s = t.kind == stall::full ? "full " : "some ";
    s += std::to_string(t.threshold.count()) + " " + std::to_string(t.window.count());
    s += '\0';
    return s;
}

// EOPNOTSUPP is PSI disabled at boot; the kernel's EINVAL (after our own checks) or
// EPERM is a refused trigger.
error_code psi_error(error_code ec, bool writing) {
    if (ec == boost::system::errc::operation_not_supported) return error::psi_disabled;
    if (writing && (ec == boost::system::errc::invalid_argument || ec == boost::system::errc::operation_not_permitted))
        return error::pressure_trigger_refused;
    return ec;
}

const char system_file[] = "/proc/pressure/memory";

// A recent kernel with PSI off (psi=0, or CONFIG_PSI_DEFAULT_DISABLED without psi=1)
// has no pressure files at all: no /proc/pressure, no memory.pressure in a cgroup that
// exists (Debian's 6.1 booted with psi=0: the v1 VM test); older ones fail with
// EOPNOTSUPP. The file missing while its directory is there is PSI off, not a missing
// cgroup.
error_code psi_missing(error_code ec, const std::string& file) {
    if (ec != boost::system::errc::no_such_file_or_directory) return ec;
    // The system file's directory goes too: then /proc itself must be there.
    const auto slash = file.rfind('/');
    const std::string dir = file == system_file ? "/proc/self" : file.substr(0, slash == std::string::npos ? 0 : slash);
    struct stat st{};
    if (dir.empty() || ::stat(dir.c_str(), &st) != 0) return ec;
    return error::psi_disabled;
}

// What both kinds of source share: one descriptor, the lock their handlers take, and
// the flag that makes a handler run after stop() a no-op.
class descriptor_source : public pressure_state::source {
public:
    void stop() noexcept override {
        std::lock_guard lk(m_);
        stopped_ = true;
        error_code ignored;
        sd_.close(ignored);  // v1: unregisters the eventfd too
        stopped_locked();
    }

protected:
    explicit descriptor_source(const asio::any_io_executor& ex) : sd_(ex) {}

    /// Takes `fd` over and starts waiting on it (`first_wait`, with the lock held).
    template <class FirstWait>
    error_code adopt(unique_fd& fd, FirstWait first_wait) {
        error_code ec;
        sd_.assign(fd.get(), ec);
        if (ec) return ec;
        fd.release();
        std::lock_guard lk(m_);
        first_wait();
        return {};
    }

    virtual void stopped_locked() noexcept {}

    std::mutex m_;
    asio::posix::stream_descriptor sd_;
    bool stopped_ = false;
};

// One PSI trigger: its own open pressure file.
class psi_source final : public descriptor_source, public std::enable_shared_from_this<psi_source> {
public:
    psi_source(const asio::any_io_executor& ex, std::weak_ptr<pressure_state> st, std::size_t index, std::string file,
               std::string dir)
        : descriptor_source(ex), st_(std::move(st)), index_(index), file_(std::move(file)), dir_(std::move(dir)), timer_(ex) {}

    error_code start(const pressure_trigger& t) {
        unique_fd fd(::open(file_.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));
        if (!fd) return psi_missing(psi_error(last_errno(), false), file_);
        const std::string text = trigger_text(t);
        ssize_t w;
        do w = ::write(fd.get(), text.data(), text.size());
        while (w < 0 && errno == EINTR);
        if (w < 0) return psi_error(last_errno(), true);
        if (!dir_.empty()) {
            struct stat st{};
            if (auto ec = stat_path(dir_, st)) return ec;
            ino_ = st.st_ino;
        }
        return adopt(fd, [this] {
            wait();
            if (!dir_.empty()) arm_timer();
        });
    }

private:
    void stopped_locked() noexcept override { timer_.cancel(); }

    void wait() {
        sd_.async_wait(asio::posix::descriptor_base::wait_error,
                       [self = shared_from_this()](error_code ec) { self->on_wake(ec); });
    }

    void arm_timer() {
        timer_.expires_after(liveness_interval);
        timer_.async_wait([self = shared_from_this()](error_code ec) {
            if (ec) return;
            std::unique_lock lk(self->m_);
            if (self->stopped_) return;
            if (self->gone()) return self->end_removed(lk);
            self->arm_timer();
        });
    }

    bool gone() const {
        error_code ec;
        return check_liveness(dir_, ino_, ec) == liveness::gone;
    }

    void on_wake(error_code ec) {
        std::unique_lock lk(m_);
        if (stopped_) return;
        auto st = st_.lock();
        if (!st) return;
        if (ec) {
            lk.unlock();
            st->publish_end(ec, file_);
            return;
        }
        // POLLERR and POLLPRI look alike here: the read (which fails with ENODEV on a
        // removed cgroup) and the directory tell them apart.
        char buf[512];
        ssize_t n;
        do n = ::pread(sd_.native_handle(), buf, sizeof buf, 0);
        while (n < 0 && errno == EINTR);
        const error_code rec = n < 0 ? last_errno() : error_code{};
        if (!dir_.empty() && (rec || gone()) && gone()) return end_removed(lk);
        if (rec) {
            lk.unlock();
            st->publish_end(psi_error(rec, false), file_);
            return;
        }
        auto a = parse_pressure(std::string_view(buf, static_cast<std::size_t>(n)));
        if (!a) OOMWATCH_LOG(warning) << file_ << ": cannot parse the averages: " << a.error().message();
        wait();
        lk.unlock();
        st->publish(index_, 1, a ? std::optional<pressure_averages>(*a) : std::nullopt);
    }

    void end_removed(std::unique_lock<std::mutex>& lk) {
        auto st = st_.lock();
        lk.unlock();
        OOMWATCH_LOG(debug) << dir_ << ": cgroup removed";
        if (st) st->publish_end({}, dir_);
    }

    std::weak_ptr<pressure_state> st_;
    const std::size_t index_;
    const std::string file_;
    const std::string dir_;  // empty: system-wide
    ino_t ino_ = 0;
    asio::steady_timer timer_;
};

std::string level_args(const pressure_level_trigger& t) {
    std::string s(to_string(t.level));
    if (t.mode == pressure_mode::hierarchy) s += ",hierarchy";
    else if (t.mode == pressure_mode::local) s += ",local";
    return s;
}

// One v1 pressure level: an eventfd registered on memory.pressure_level.
class level_source final : public descriptor_source, public std::enable_shared_from_this<level_source> {
public:
    level_source(const asio::any_io_executor& ex, std::weak_ptr<pressure_state> st, std::size_t index, std::string dir)
        : descriptor_source(ex), st_(std::move(st)), index_(index), dir_(std::move(dir)) {}

    error_code start(const pressure_level_trigger& t) {
        unique_fd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!efd) return last_errno();
        if (auto ec = register_event(dir_, efd.get(), "memory.pressure_level", level_args(t))) return ec;
        struct stat st{};
        if (auto ec = stat_path(dir_, st)) return ec;
        ino_ = st.st_ino;
        return adopt(efd, [this] { read_next(); });
    }

private:
    void read_next() {
        asio::async_read(sd_, asio::buffer(&value_, sizeof value_),
                         [self = shared_from_this()](error_code ec, std::size_t) { self->on_read(ec); });
    }

    void on_read(error_code ec) {
        std::unique_lock lk(m_);
        if (stopped_) return;
        auto st = st_.lock();
        if (!st) return;
        if (ec) {
            lk.unlock();
            st->publish_end(ec, dir_ + " (pressure eventfd)");
            return;
        }
        std::uint64_t signals = value_;
        error_code lec;
        if (check_liveness(dir_, ino_, lec) == liveness::gone) {
            // The kernel signals once more as it tears the registration down (after the
            // directory went): the last signal is the removal, any before it pressure.
            lk.unlock();
            if (signals > 1) st->publish(index_, signals - 1, std::nullopt);
            st->publish_end({}, dir_);
            return;
        }
        read_next();
        lk.unlock();
        st->publish(index_, signals, std::nullopt);
    }

    std::weak_ptr<pressure_state> st_;
    const std::size_t index_;
    const std::string dir_;
    ino_t ino_ = 0;
    std::uint64_t value_ = 0;
};

const std::filesystem::path empty_path;

result<cgroup_location> locate(const std::filesystem::path& cgroup) {
    std::error_code ec;
    auto real = std::filesystem::canonical(cgroup, ec);
    return resolve_cgroup(ec ? cgroup.lexically_normal() : real);
}

// PSI needs no memory controller: every v2 cgroup but the root has memory.pressure (a
// hybrid machine's /sys/fs/cgroup/unified, a subtree without +memory). Such a
// directory on a cgroup2 mount is a cgroup for PSI triggers.
result<cgroup_location> locate_for_psi(const std::filesystem::path& cgroup) {
    auto loc = locate(cgroup);
    if (loc || loc.error() != error::no_memory_controller) return loc;
    std::error_code ec;
    auto real = std::filesystem::canonical(cgroup, ec);
    struct statfs fs{};
    if (ec || ::statfs(real.c_str(), &fs) != 0 || fs.f_type != CGROUP2_SUPER_MAGIC ||
        !std::filesystem::exists(real / "cgroup.type", ec))
        return loc;
    return cgroup_location{real, cgroup_version::v2};
}

} // namespace
} // namespace detail

void pressure_watcher::open_psi(const std::filesystem::path& cgroup, bool system,
                                std::vector<pressure_trigger> triggers) {
    std::filesystem::path name = system ? std::filesystem::path(detail::system_file) : cgroup;
    if (triggers.empty()) throw cgroup_error(error::invalid_pressure_trigger, name);
    for (const auto& t : triggers)
        if (auto ec = validate(t)) throw cgroup_error(ec, name);
    std::string dir;
    std::string file = detail::system_file;
    if (!system) {
        auto loc = detail::locate_for_psi(cgroup);
        if (!loc) throw cgroup_error(loc.error(), cgroup);
        if (loc->version != cgroup_version::v2) throw cgroup_error(error::pressure_trigger_mismatch, loc->directory);
        name = loc->directory;
        dir = loc->directory.native();
        file = dir + "/memory.pressure";
    }
    auto st = std::make_shared<detail::pressure_state>(
        ex_, name, std::vector<std::optional<pressure_level>>(triggers.size()));
    for (std::size_t i = 0; i < triggers.size(); ++i) {
        auto s = std::make_shared<detail::psi_source>(ex_, st, i, file, dir);
        if (auto ec = s->start(triggers[i])) {
            st->close();
            OOMWATCH_LOG(debug) << file << ": cannot set the pressure trigger: " << ec.message();
            throw cgroup_error(ec, file);
        }
        st->attach(std::move(s));
    }
    state_ = std::move(st);
}

void pressure_watcher::open_levels(const std::filesystem::path& cgroup, std::vector<pressure_level_trigger> triggers) {
    if (triggers.empty()) throw cgroup_error(error::invalid_pressure_trigger, cgroup);
    auto loc = detail::locate(cgroup);
    if (!loc) throw cgroup_error(loc.error(), cgroup);
    if (loc->version != cgroup_version::v1) throw cgroup_error(error::pressure_trigger_mismatch, loc->directory);
    std::vector<std::optional<pressure_level>> levels;
    for (const auto& t : triggers) levels.emplace_back(t.level);
    auto st = std::make_shared<detail::pressure_state>(ex_, loc->directory, std::move(levels));
    for (std::size_t i = 0; i < triggers.size(); ++i) {
        auto s = std::make_shared<detail::level_source>(ex_, st, i, loc->directory.native());
        if (auto ec = s->start(triggers[i])) {
            st->close();
            throw cgroup_error(ec, loc->directory / "memory.pressure_level");
        }
        st->attach(std::move(s));
    }
    state_ = std::move(st);
}

pressure_watcher::pressure_watcher(const executor_type& ex, const std::filesystem::path& cgroup, pressure_trigger t)
    : pressure_watcher(ex, cgroup, std::vector<pressure_trigger>{t}) {}

pressure_watcher::pressure_watcher(const executor_type& ex, const std::filesystem::path& cgroup,
                                   std::vector<pressure_trigger> triggers)
    : ex_(ex) {
    open_psi(cgroup, false, std::move(triggers));
}

pressure_watcher::pressure_watcher(const executor_type& ex, system_pressure, pressure_trigger t)
    : pressure_watcher(ex, system_pressure{}, std::vector<pressure_trigger>{t}) {}

pressure_watcher::pressure_watcher(const executor_type& ex, system_pressure, std::vector<pressure_trigger> triggers)
    : ex_(ex) {
    open_psi({}, true, std::move(triggers));
}

pressure_watcher::pressure_watcher(const executor_type& ex, const std::filesystem::path& cgroup,
                                   pressure_level_trigger t)
    : pressure_watcher(ex, cgroup, std::vector<pressure_level_trigger>{t}) {}

pressure_watcher::pressure_watcher(const executor_type& ex, const std::filesystem::path& cgroup,
                                   std::vector<pressure_level_trigger> triggers)
    : ex_(ex) {
    open_levels(cgroup, std::move(triggers));
}

pressure_watcher::pressure_watcher(pressure_watcher&& other) noexcept
    : ex_(other.ex_), state_(std::move(other.state_)) {}

pressure_watcher& pressure_watcher::operator=(pressure_watcher&& other) noexcept {
    if (this != &other) {
        close();
        ex_ = other.ex_;
        state_ = std::move(other.state_);
    }
    return *this;
}

pressure_watcher::~pressure_watcher() { close(); }

bool pressure_watcher::is_open() const noexcept { return state_ && state_->open(); }

const std::filesystem::path& pressure_watcher::cgroup() const noexcept {
    return state_ ? state_->name() : detail::empty_path;
}

std::optional<cgroup_error> pressure_watcher::failure() const { return state_ ? state_->failure() : std::nullopt; }

void pressure_watcher::cancel() {
    if (state_) state_->cancel_wait();
}

void pressure_watcher::close() {
    if (state_) state_->close();
}

void pressure_watcher::async_next_event_impl(event_handler handler) {
    if (!state_) {
        asio::post(ex_, asio::append(std::move(handler), error_code(error::watcher_closed), pressure_event{}));
        return;
    }
    state_->async_next(std::move(handler));
}

subscription pressure_watcher::subscribe_impl(executor_type ex, std::function<void(const pressure_event&)> fn) {
    if (!state_) return subscription{};
    return subscription(state_->subscribe(std::move(ex), std::move(fn)));
}

asio::awaitable<pressure_event> pressure_watcher::next_event() {
    auto st = state_;
    return asio::async_initiate<const asio::use_awaitable_t<>&, void(std::exception_ptr, pressure_event)>(
        [this, st](auto handler) {
            auto slot = asio::get_associated_cancellation_slot(handler);
            auto hex = asio::get_associated_executor(handler, ex_);
            async_next_event_impl(asio::bind_cancellation_slot(
                slot, asio::bind_executor(hex, [h = std::move(handler), st](error_code ec, pressure_event ev) mutable {
                    std::exception_ptr e;
                    if (ec) {
                        std::filesystem::path p = st ? st->name() : std::filesystem::path{};
                        if (st && ec == st->failure_code())
                            if (auto f = st->failure()) p = f->path();
                        e = std::make_exception_ptr(cgroup_error(ec, p));
                    }
                    std::move(h)(e, std::move(ev));
                })));
        },
        asio::use_awaitable);
}

} // namespace oomwatch
