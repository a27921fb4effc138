#include "kernel_log.hpp"

#include <oomwatch/kernel_log.hpp>

#include "detail/cgroup.hpp"
#include "detail/context_executor.hpp"
#include "detail/parse.hpp"
#include "fault_injection.hpp"
#include "logger.hpp"
#include "sys.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/system_error.hpp>

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <new>
#include <string_view>
#include <vector>

namespace asio = boost::asio;
using boost::system::error_code;
using boost::system::system_category;

namespace oomwatch::detail {

asio::execution_context::id kernel_log_service::id;

namespace {

std::string trimmed(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

bool is_under(std::string_view sub, std::string_view root) noexcept {
    if (root == "/") return sub.starts_with('/');
    return sub.starts_with(root) && (sub.size() == root.size() || sub[root.size()] == '/');
}

} // namespace

kernel_log_service::kernel_log_service(asio::execution_context& ctx) : asio::execution_context::service(ctx) {}

kernel_log_service::~kernel_log_service() = default;

void kernel_log_service::shutdown() {
    std::lock_guard lk(m_);
    shut_down_ = true;
    // Destroyed while the reactor still exists; the pending read's handler is dropped.
    fd_.reset();
    exec_.reset();
    clients_.clear();
    hook_ = nullptr;
}

error_code kernel_log_service::open_locked(const asio::any_io_executor& ex) {
    if (fd_) return {};
    unique_fd fd(::open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    if (!fd) return {errno, system_category()};
    // Only what is logged from now on: a kill already in the ring buffer happened
    // before anyone watched, and must not be reported as new.
    if (::lseek(fd.get(), 0, SEEK_END) < 0) return {errno, system_category()};
    if (boot_id_.empty()) {
        std::string text;
        if (!read_file("/proc/sys/kernel/random/boot_id", text)) boot_id_ = trimmed(std::move(text));
    }
    // No strand: one read is pending at a time and the state is under the lock.
    const bool fresh = !exec_;
    try {
        if (fresh) exec_.emplace(context_executor(ex));
        if (!buf_) buf_.reset(new char[read_buffer_size]);
        fd_.emplace(*exec_, fd.get());
        fd.release();
    } catch (const boost::system::system_error& e) {  // the reactor's first use: out of fds
        fd_.reset();
        if (fresh) exec_.reset();
        return e.code();
    } catch (const std::bad_alloc&) {
        fd_.reset();
        if (fresh) exec_.reset();
        return make_error_code(boost::system::errc::not_enough_memory);
    }
    ++gen_;
    // A new position in the log: nothing before it is missing, nothing gathered
    // before belongs to what comes.
    last_seq_.reset();
    epipe_ = false;
    assembler_ = oom_report_assembler{};
    return {};
}

void kernel_log_service::close_locked() {
    fd_.reset();  // closes it; a pending read ends with operation_aborted, ignored by gen_
    ++gen_;
    reading_ = false;
}

std::uint64_t kernel_log_service::add(const asio::any_io_executor& ex, std::weak_ptr<kernel_log_client> client,
                                      error_code* why) {
    error_code ec;
    {
        std::lock_guard lk(m_);
        if (shut_down_) return 0;
        ec = open_locked(ex);
        if (!ec) {
            const auto k = next_key_++;
            clients_.emplace(k, std::move(client));
            start_reading();
            return k;
        }
        if (!open_failure_logged_) {
            // Once: every watcher of the context would say the same.
            open_failure_logged_ = true;
            OOMWATCH_LOG(warning) << "kernel log: cannot open /dev/kmsg: " << ec.message()
                                  << "; OOM victims will not be named (watchers still count kills; a system watcher cannot start)";
        }
    }
    if (why) *why = ec;
    // Posted, not called: the caller may hold its own lock while it registers.
    asio::post(ex, [client = std::move(client), ec] {
        if (auto c = client.lock()) c->on_log_unavailable(ec);
    });
    return 0;
}

void kernel_log_service::remove(std::uint64_t registration) {
    std::lock_guard lk(m_);
    if (shut_down_ || !clients_.erase(registration)) return;
    // Nobody listens: stop reading, so that the context can run out of work.
    if (clients_.empty() && fd_) close_locked();
}

std::uint64_t kernel_log_service::records_lost() const {
    std::lock_guard lk(m_);
    return lost_;
}

std::uint64_t kernel_log_service::records_seen() const {
    std::lock_guard lk(m_);
    return seen_;
}

std::uint64_t kernel_log_service::foreign_records() const {
    std::lock_guard lk(m_);
    return assembler_.foreign_records();
}

kernel_log_service::log_position kernel_log_service::position() const {
    std::lock_guard lk(m_);
    return {boot_id_, position_seq_};
}

bool kernel_log_service::is_open() const {
    std::lock_guard lk(m_);
    return fd_.has_value();
}

std::size_t kernel_log_service::client_count() const {
    std::lock_guard lk(m_);
    return clients_.size();
}

void kernel_log_service::set_record_hook(std::function<void(const kmsg_record&)> hook) {
    std::lock_guard lk(m_);
    hook_ = std::move(hook);
}

void kernel_log_service::start_reading() {
    if (reading_ || !fd_ || clients_.empty()) return;
    reading_ = true;
    // One record per read (the kernel's rule for /dev/kmsg). A read, not a wait: a
    // record may be there already.
    const auto gen = gen_;
    fd_->async_read_some(asio::buffer(buf_.get(), read_buffer_size),
                         [this, gen](error_code ec, std::size_t n) { on_read(gen, ec, n); });
}

void kernel_log_service::count_lost_locked(std::uint64_t n) {
    if (n == 0) return;
    lost_ += n;
    lost_unlogged_ += n;
    // Once per burst: overwriting goes on while the reader is behind, and each EPIPE
    // would say the same.
    const auto now = std::chrono::steady_clock::now();
    if (last_loss_log_ == std::chrono::steady_clock::time_point{} || now - last_loss_log_ >= std::chrono::seconds(1)) {
        OOMWATCH_LOG(warning) << "kernel log: " << lost_unlogged_
                              << " record(s) lost (overwritten before they were read); " << lost_
                              << " in all; OOM kills among them are not named";
        lost_unlogged_ = 0;
        last_loss_log_ = now;
    }
}

void kernel_log_service::on_read(std::uint64_t gen, error_code ec, std::size_t n) {
    std::vector<kill_record> kills;
    std::vector<std::weak_ptr<kernel_log_client>> targets;
    std::function<void(const kmsg_record&)> hook;
    std::optional<kmsg_record> record;
    error_code failure;
    {
        std::lock_guard lk(m_);
        if (gen != gen_ || shut_down_ || !fd_) return;  // closed meanwhile
        if (ec == asio::error::operation_aborted || ec == asio::error::interrupted) {
            reading_ = false;
            start_reading();
            return;
        }
        if (!ec) ec = fault::take(fault::kmsg_read_errno);
        if (ec.value() == EPIPE && ec.category() == system_category()) {
            // The kernel overwrote records before we read them and moved us to the
            // oldest one left; the next record's sequence number tells how many.
            count_lost_locked(1);
            epipe_ = true;
            assembler_.note_lost();
            reading_ = false;
            start_reading();
            return;
        }
        if (ec) {
            // EIO, EINVAL (a record larger than the buffer): not retried in a loop.
            failure = ec;
            OOMWATCH_LOG(error) << "kernel log: reading /dev/kmsg failed: " << ec.message() << "; "
                                << clients_.size() << " client(s) stop getting OOM victims";
            for (auto& [k_, c] : clients_) targets.push_back(c);
            clients_.clear();
            close_locked();
        } else {
            auto r = parse_kmsg_record(std::string_view(buf_.get(), n));
            if (!r) {
                OOMWATCH_LOG(debug) << "kernel log: a record that does not parse: "
                                    << std::string_view(buf_.get(), n);
            } else {
                ++seen_;
                if (last_seq_ && r->seq > *last_seq_ + 1) {
                    const std::uint64_t missing = r->seq - *last_seq_ - 1;
                    count_lost_locked(epipe_ ? missing - 1 : missing);  // an EPIPE counted one already
                    if (!epipe_) assembler_.note_lost();
                }
                epipe_ = false;
                last_seq_ = r->seq;
                position_seq_ = r->seq;
                kills = assembler_.feed_record(*r);
                if (!kills.empty())
                    for (auto& [k_, c] : clients_) targets.push_back(c);
                hook = hook_;
                if (hook) record = std::move(*r);
            }
            // reading_ stays set while the clients are told: no second read (and no
            // later record) overtakes this one on another thread.
        }
    }
    if (failure) {
        for (auto& w : targets)
            if (auto c = w.lock()) c->on_log_unavailable(failure);
        return;
    }
    if (hook && record) hook(*record);
    for (auto& k : kills) {
        fill_from_proc(k);
        for (auto& w : targets)
            if (auto c = w.lock()) c->on_kill(k);
    }
    std::lock_guard lk(m_);
    if (gen != gen_ || shut_down_ || !fd_) return;
    reading_ = false;
    if (clients_.empty())
        close_locked();
    else
        start_reading();
}

void kernel_log_service::fill_from_proc(kill_record& k) {
    // Only when the kernel's report did not say (rate limited): /proc tells where the
    // victim is now, which is where it was killed as long as it is the same process.
    if (!k.task_memcg.empty() || k.pid <= 0) return;
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    const auto now_usec = static_cast<std::uint64_t>(now.tv_sec) * 1'000'000u + static_cast<std::uint64_t>(now.tv_nsec) / 1000u;
    const auto max_age = static_cast<std::uint64_t>(proc_lookup_age.count()) * 1000u;
    if (now_usec > k.ts_usec && now_usec - k.ts_usec > max_age) return;  // the pid may be reused by now
    const std::string proc = "/proc/" + std::to_string(k.pid);
    std::string comm;
    if (read_file(proc + "/comm", comm) || trimmed(std::move(comm)) != k.comm) return;  // gone, or another process
    std::string text;
    if (read_file(proc + "/cgroup", text)) return;
    auto entries = parse_proc_cgroup(text);
    if (!entries) return;
    if (!v2_hierarchy_) {
        auto h = detail::find_memory_hierarchy();
        if (!h) return;
        v2_hierarchy_ = h->version == cgroup_version::v2;
    }
    auto path = memory_cgroup_path(*entries, *v2_hierarchy_);
    if (!path) return;
    // Only while it lives: an exiting task has left its cgroups (cgroup_exit, before it
    // becomes a zombie), and /proc shows the root then (seen on v1: `4:memory:/` for a
    // zombie of a scratch cgroup). Its state is read after its cgroup, so a task not
    // yet a zombie then was one whose cgroup was read before; the root is never taken.
    std::string stat;
    if (read_file(proc + "/stat", stat)) return;
    const auto close_paren = stat.rfind(')');
    if (close_paren == std::string::npos || close_paren + 2 >= stat.size()) return;
    const char state = stat[close_paren + 2];
    if (state == 'Z' || state == 'X' || *path == "/") return;
    if (k.group && !is_under(*path, k.group_memcg)) return;
    k.task_memcg = std::move(*path);
    k.task_memcg_from_proc = true;
}

} // namespace oomwatch::detail

namespace oomwatch {

kernel_log_stats kernel_log_statistics(boost::asio::execution_context& ctx) {
    auto& svc = boost::asio::use_service<detail::kernel_log_service>(ctx);
    kernel_log_stats s;
    s.records_read = svc.records_seen();
    s.records_lost = svc.records_lost();
    s.foreign_records = svc.foreign_records();
    s.reading = svc.is_open();
    return s;
}

} // namespace oomwatch
