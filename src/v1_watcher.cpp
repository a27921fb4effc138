// cgroup v1 watcher.
//
// The kernel signals the eventfd once per OOM notification and once when the cgroup is
// removed; the 8-byte value read is the number of signals since the last read (a count,
// never "one event"). After every wake-up the directory is checked and
// memory.oom_control re-read, so v1 reports `oom` (the signals) and `oom_kill` (the
// counter's growth) like v2 does.
//
// Removal: the kernel signals a registration's eventfd when it tears the registration
// down, some 10-40 ms after rmdir (css offline runs from a work queue). A wake-up that
// finds the directory gone therefore may or may not include that removal signal. To
// count OOMs exactly, a second eventfd (the "probe") is registered first, as a memory
// threshold that usage can never cross: it fires only at teardown, and since the kernel
// queues the teardown of the later registration (ours) first and the probe's teardown
// sleeps (synchronize_rcu) before it signals, the probe firing means our removal signal
// has been sent. Without a probe (the registration was refused), a bounded wait for the
// removal signal decides instead.
#include "v1_watcher.hpp"

#include "detail/parse.hpp"
#include "fault_injection.hpp"
#include "logger.hpp"
#include "sys.hpp"

#include <oomwatch/error.hpp>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/system_error.hpp>

#include <sys/eventfd.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <mutex>
#include <new>
#include <string>

namespace asio = boost::asio;
using boost::system::error_code;
using boost::system::system_category;

namespace oomwatch::detail {
namespace {

error_code last_errno() { return {errno, system_category()}; }

// How long to wait for the removal signal when there is no probe, and for the probe
// when there is one (it always fires at teardown; this only bounds a broken kernel).
constexpr std::chrono::milliseconds removal_grace{300};
constexpr std::chrono::milliseconds probe_timeout{10'000};

class v1_watch final : public source, public std::enable_shared_from_this<v1_watch> {
public:
    v1_watch(const asio::any_io_executor& ex, const std::shared_ptr<watcher_state>& sink, node_role role)
        : src_(role.src ? std::move(role.src) : sink->root()), dir_(src_->cgroup), oom_control_(dir_ + "/memory.oom_control"),
          efd_(ex), probe_(ex), settle_(ex), sink_(sink), observer_(std::move(role.observer)), report_removed_(role.report_removed), local_failure_(role.local_failure),
          from_zero_(role.from_zero) {}

    error_code start(memory_counters& baseline, const std::optional<memory_counters>& resume) {
        // The probe first: the kernel tears registrations down newest first.
        unique_fd probe(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!probe) return last_errno();
        if (auto pec = register_event(dir_, probe.get(), "memory.usage_in_bytes", "-1")) {
            OOMWATCH_LOG(debug) << dir_ << ": no removal probe (" << pec.message()
                                << "); removal is confirmed by a bounded wait";
            probe.reset();
        }
        unique_fd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!efd) return last_errno();
        if (auto ec = register_event(dir_, efd.get(), "memory.oom_control", {})) return ec;

        // A cgroup under OOM right now signals at registration. What happened before the
        // watcher existed is not an event: drain it, then read the baseline.
        std::uint64_t drained = 0;
        while (::read(efd.get(), &drained, sizeof drained) < 0 && errno == EINTR) {}

        struct stat st{};
        if (auto ec = stat_path(dir_, st)) return ec;
        ino_ = st.st_ino;
        memory_counters c;
        if (auto ec = read_counters(c)) return ec;
        baseline = c;
        last_ = c;
        if (from_zero_) {
            // Made after the tree started: its kills so far are news (the notifications
            // before the registration are not to be had).
            last_.oom_kill = 0;
        }

        error_code ec;
        efd_.assign(efd.get(), ec);
        if (ec) return ec;
        efd.release();
        if (probe) {
            probe_.assign(probe.get(), ec);
            if (ec) return ec;
            probe.release();
        }
        std::lock_guard lk(m_);
        if (auto sink = sink_.lock()) sink->watch_victims(src_, weak_from_this());
        if (from_zero_ && c.oom_kill > 0 && !reread(0)) return {};
        if (!from_zero_ && resume) {
            // Only oom_kill is the kernel's: `oom` counts the notifications a watch saw.
            memory_counters saved;
            saved.oom_kill = resume->oom_kill;
            const auto d = resume_delta(saved, c);
            if (auto sink = sink_.lock(); sink && !d.empty()) sink->publish_resumed(src_, d, c);
        }
        read_next();
        return {};
    }

    void stop() noexcept override {
        std::lock_guard lk(m_);
        shut_down();
    }

    memory_counters last_counters() const override {
        std::lock_guard lk(m_);
        return last_;
    }

    // The kernel log named a victim here: the kill is counted already (the kernel raises
    // oom_kill before it logs the kill), so read it now rather than at the next step of
    // the back-off after the OOM notification.
    void kill_logged() noexcept override {
        std::lock_guard lk(m_);
        if (stopped_ || removing_) return;
        if (!reread(0)) return;
        if (settle_step_ < settle_steps && last_.oom_kill - kills_before_ >= unsettled_ && !last_.under_oom) {
            settle_step_ = settle_steps;  // settled: the schedule's next step finds nothing to do
            unsettled_ = 0;
            settle_.cancel();
        }
    }

private:
    // With m_ held.
    void read_next() {
        read_pending_ = true;
        asio::async_read(efd_, asio::buffer(&value_, sizeof value_),
                         [self = shared_from_this()](error_code ec, std::size_t) { self->on_read(ec); });
    }

    void on_read(error_code ec) {
        std::lock_guard lk(m_);
        read_pending_ = false;
        if (stopped_) return;  // stopped: operation_aborted, or the close raced with completion
        if (removing_) {
            on_read_while_removing(ec);
            return;
        }
        if (!ec) ec = fault::take(fault::eventfd_read_errno);
        if (ec) {
            // An eventfd read fails only if something is badly wrong. Retrying would
            // spin on the same error: end the watch, and say so to every consumer.
            if (auto sink = sink_.lock()) fail(*sink, ec);
            return;
        }
        std::uint64_t signals = value_;
        std::uint64_t kills_before = last_.oom_kill;
        if (!reread(signals)) return;
        // The kernel signals before it picks and kills a victim, so oom_kill moves a
        // moment later: look again shortly after, backing off.
        if (unsettled_ == 0) kills_before_ = kills_before;
        unsettled_ += signals;
        settle_step_ = 0;
        arm_settle();
        read_next();
    }

    static constexpr int settle_steps = 7;

    // With m_ held.
    void arm_settle() {
        static constexpr std::chrono::milliseconds delays[settle_steps] = {
            std::chrono::milliseconds(1),   std::chrono::milliseconds(3),   std::chrono::milliseconds(10),
            std::chrono::milliseconds(30),  std::chrono::milliseconds(100), std::chrono::milliseconds(300),
            std::chrono::milliseconds(1000)};
        settle_.expires_after(delays[settle_step_]);
        settle_.async_wait([self = shared_from_this()](error_code ec) { self->on_settle(ec); });
    }

    void on_settle(error_code ec) {
        std::lock_guard lk(m_);
        if (stopped_ || removing_ || ec) return;
        if (!reread(0)) return;
        // Done once every notification has its kill and the OOM is over; an OOM that
        // kills nobody (oom_kill_disable, memory freed) just runs the schedule out.
        bool settled = last_.oom_kill - kills_before_ >= unsettled_ && !last_.under_oom;
        if (!settled && stale_ && settle_step_ == settle_steps - 1) {
            // The counters could not be read (out of descriptors, ...): keep trying at
            // the slowest step until a read works, or the kills would show only at the
            // next OOM (and never, if the next wake-up is the removal).
            arm_settle();
            return;
        }
        if (settled || ++settle_step_ == settle_steps) {
            settle_step_ = settle_steps;
            unsettled_ = 0;
            return;
        }
        arm_settle();
    }

    // Re-reads the counters and publishes `signals` OOMs and the oom_kill growth.
    // False when the cgroup turned out to be removed (the removal is being confirmed).
    bool reread(std::uint64_t signals) {
        auto sink = sink_.lock();
        if (!sink) return false;
        if (check_alive() == liveness::gone) {
            begin_removal(signals);
            return false;
        }
        memory_counters c;
        if (auto rec = read_counters(c)) {
            if (check_alive() == liveness::gone) {
                begin_removal(signals);
                return false;
            }
            // Still there but unreadable: report the signals now; the kills show up in
            // the delta of the next successful read, since the baseline stays put.
            OOMWATCH_LOG(warning) << oom_control_ << ": cannot read: " << rec.message();
            c = last_;
            stale_ = true;
        } else {
            stale_ = false;
        }
        ooms_ += signals;
        c.oom = ooms_;
        counter_delta d = compute_delta(last_, c, kind_set::all());
        if (d.went_backwards) {
            OOMWATCH_LOG(warning) << oom_control_ << ": oom_kill went down from " << last_.oom_kill << " to "
                                  << c.oom_kill << "; taking it as the new baseline";
            d = counter_delta{};
            d.by_kind[static_cast<std::size_t>(event_kind::oom)] = signals;
            kills_before_ = c.oom_kill;
        }
        last_ = c;
        if (!d.empty())
            OOMWATCH_LOG(debug) << dir_ << ": " << signals << " OOM notification(s), oom_kill "
                                << c.oom_kill;
        sink->publish(src_, d, c);
        return true;
    }

    // The directory is gone. `signals` were read with that discovery and not published:
    // one of the signals read from now on, these included, is the removal's.
    // With m_ held.
    void begin_removal(std::uint64_t signals) {
        removing_ = true;
        held_ = signals;
        settle_.cancel();
        if (probe_.is_open()) {
            probe_.async_wait(asio::posix::stream_descriptor::wait_read,
                              [self = shared_from_this()](error_code ec) { self->on_probe(ec); });
        }
        settle_.expires_after(probe_.is_open() ? probe_timeout : removal_grace);
        settle_.async_wait([self = shared_from_this()](error_code ec) { self->on_removal_timeout(ec); });
        if (!read_pending_) read_next();
    }

    // With m_ held.
    void on_read_while_removing(const error_code& ec) {
        if (ec == asio::error::operation_aborted && !confirmed_) return;
        if (!ec) held_ += value_;
        if (confirmed_) {
            // The probe fired (or timed out) and the pending read was cancelled to
            // collect what it had: take whatever else is in the counter, and finish.
            std::uint64_t more = 0;
            ssize_t n;
            do n = ::read(efd_.native_handle(), &more, sizeof more);
            while (n < 0 && errno == EINTR);
            if (n == sizeof more) held_ += more;
            finish_removed();
            return;
        }
        if (ec) {
            finish_removed();  // cannot read on: the held signals include the removal's, or it is lost
            return;
        }
        if (!probe_.is_open()) {
            // No probe: a signal after the directory is gone can only be the removal's.
            finish_removed();
            return;
        }
        read_next();  // with a probe, wait for it: it says when the removal signal is in
    }

    void on_probe(error_code ec) {
        std::lock_guard lk(m_);
        if (stopped_ || ec == asio::error::operation_aborted) return;
        confirm();
    }

    void on_removal_timeout(error_code ec) {
        std::lock_guard lk(m_);
        if (stopped_ || ec) return;
        if (probe_.is_open())
            OOMWATCH_LOG(warning) << dir_ << ": the removal probe did not fire within "
                                  << probe_timeout.count() << " ms; counting the last signal as the removal";
        confirm();
    }

    // The removal signal is in (or waited for long enough). With m_ held.
    void confirm() {
        if (confirmed_) return;
        confirmed_ = true;
        // The pending read completes (with its value, if it had one, or aborted), and
        // on_read_while_removing finishes.
        error_code ignored;
        efd_.cancel(ignored);
    }

    // Every signal read since the directory was found gone, less the removal's, was an OOM.
    // With m_ held.
    void finish_removed() {
        auto sink = sink_.lock();
        if (!sink) {
            shut_down();
            return;
        }
        const std::uint64_t ooms = held_ > 0 ? held_ - 1 : 0;
        if (ooms > 0) {
            memory_counters c = last_;
            ooms_ += ooms;
            c.oom = ooms_;
            counter_delta d;
            d.by_kind[static_cast<std::size_t>(event_kind::oom)] = ooms;
            last_ = c;
            sink->publish(src_, d, c);
        }
        OOMWATCH_LOG(debug) << dir_ << ": cgroup removed";
        if (report_removed_) sink->publish_removed(src_, clock::now(), last_);
        shut_down();
        if (auto o = observer_.lock()) o->on_end();
    }

    void fail(watcher_state& sink, const error_code& ec) {
        shut_down();
        if (local_failure_) {
            OOMWATCH_LOG(warning) << dir_ << ": reading the OOM eventfd failed, no longer watched: " << ec.message();
            sink.publish_skipped(src_, ec);
            return;
        }
        OOMWATCH_LOG(error) << dir_ << ": reading the OOM eventfd failed: " << ec.message();
        sink.publish_failed(ec, dir_ + " (OOM eventfd)");
    }

    // With m_ held.
    void shut_down() noexcept {
        if (!stopped_)
            if (auto sink = sink_.lock()) sink->unwatch_victims(src_);
        stopped_ = true;
        error_code ignored;
        // Closing the eventfds also unregisters them: the kernel sees POLLHUP and drops the events.
        efd_.close(ignored);
        probe_.close(ignored);
        settle_.cancel();
    }

    liveness check_alive() const {
        error_code ec;
        auto l = check_liveness(dir_, ino_, ec);
        if (l == liveness::unknown)
            OOMWATCH_LOG(warning) << dir_ << ": cannot check whether the cgroup exists: " << ec.message();
        return l;
    }

    error_code read_counters(memory_counters& c) const {
        thread_local std::string text;  // its capacity is reused: no allocation per read
        if (auto ec = read_small_file(oom_control_, text)) return ec;
        auto oc = parse_oom_control(text);
        if (!oc) return oc.error();
        c = memory_counters{};
        c.oom_kill = oc->oom_kill.value_or(0);
        c.under_oom = oc->under_oom;
        c.oom = ooms_;
        return {};
    }

    const source_ref src_;
    // Strings, not std::filesystem::path, which keeps a list of its components.
    const std::string& dir_;  // the source's

    const std::string oom_control_;
    mutable std::mutex m_;  // the descriptors and the counters; completion handlers may run on any thread
    asio::posix::stream_descriptor efd_;
    asio::posix::stream_descriptor probe_;  // fires only when the cgroup is torn down; may be closed
    asio::steady_timer settle_;  // re-reads after a notification, until the kills show; bounds the removal
    std::weak_ptr<watcher_state> sink_;
    const std::weak_ptr<node_observer> observer_;
    const bool report_removed_;
    const bool local_failure_;  // a failure of this watch alone is `skipped` for it (a tree's descendant)
    const bool from_zero_;
    std::uint64_t value_ = 0;
    std::uint64_t ooms_ = 0;  // v1 keeps no OOM counter: ours, since the watch started
    memory_counters last_;
    ino_t ino_ = 0;
    int settle_step_ = settle_steps;  // settle_steps: not settling
    std::uint64_t unsettled_ = 0;     // notifications whose kills may still come
    std::uint64_t kills_before_ = 0;  // oom_kill before them
    std::uint64_t held_ = 0;          // signals since the directory was found gone
    bool stale_ = false;  // the last read of memory.oom_control failed
    bool removing_ = false;   // the directory is gone; waiting for the removal signal
    bool confirmed_ = false;  // ... and it is in
    bool read_pending_ = false;
    bool stopped_ = false;
};

} // namespace

error_code register_event(const std::string& dir, int efd, const std::string& event_file, std::string_view args) {
    unique_fd target(::open((dir + "/" + event_file).c_str(), O_RDONLY | O_CLOEXEC));
    if (!target) return last_errno();
    unique_fd evc(::open((dir + "/cgroup.event_control").c_str(), O_WRONLY | O_CLOEXEC));
    if (!evc) return last_errno();
    std::string line = std::to_string(efd) + " " + std::to_string(target.get());
    if (!args.empty()) (line += ' ') += args;
    ssize_t w;
    do w = ::write(evc.get(), line.data(), line.size());
    while (w < 0 && errno == EINTR);
    // The registration is made: the kernel no longer needs our fds of the two files.
    return w < 0 ? last_errno() : error_code{};
}

std::shared_ptr<source> start_v1_watch(const asio::any_io_executor& ex, const std::shared_ptr<watcher_state>& sink,
                                       error_code& ec, node_role role) {
    const bool own = !role.src;
    const auto resume = std::move(role.resume_from);  // needed at start only
    std::shared_ptr<v1_watch> w;
    try {
        // Its descriptor and timer may be the first I/O objects of a fresh execution
        // context: making Asio's reactor throws when out of descriptors.
        w = std::make_shared<v1_watch>(ex, sink, std::move(role));
    } catch (const boost::system::system_error& e) {
        ec = e.code();
        return nullptr;
    } catch (const std::bad_alloc&) {
        ec = make_error_code(boost::system::errc::not_enough_memory);
        return nullptr;
    }
    memory_counters baseline;
    ec = w->start(baseline, resume);
    if (ec) return nullptr;
    if (own) sink->set_baseline(baseline);
    return w;
}

} // namespace oomwatch::detail
