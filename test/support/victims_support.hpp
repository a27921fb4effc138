// Helpers of the real-kernel tests of victims (watchers and the system watcher):
// collecting events, checking their sums, killing until the kernel names a victim.
#pragma once

#include "test_support.hpp"

#include "scratch/scratch_cgroup.hpp"

#include <oomwatch/event.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/system/error_code.hpp>
#include <boost/test/unit_test.hpp>

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <vector>

namespace oomwatch::test {

using namespace std::chrono_literals;

// Every oom_kill event's victims add up with its unattributed kills to its count.
inline void check_sums(const std::vector<oom_event>& events) {
    for (auto& e : events) {
        if (e.kind == event_kind::oom_kill)
            BOOST_TEST(e.victims.size() + e.unattributed == e.count, e.cgroup << ": " << e.victims.size() << " victims + "
                                                                         << e.unattributed << " unattributed");
        else
            BOOST_TEST((e.victims.empty() && e.unattributed == 0u), "a " << e.kind << " event with victims");
    }
}

// Collects the events of a watcher or a tree watcher.
template <class W>
struct collector {
    W& w;
    std::vector<oom_event> events;
    boost::system::error_code last_error;
    void arm() {
        w.async_next_event([this](boost::system::error_code ec, oom_event ev) {
            if (ec) {
                last_error = ec;
                return;
            }
            events.push_back(std::move(ev));
            arm();
        });
    }
    // The victims of the oom_kill events so far, and their kills.
    std::vector<victim> victims() const {
        std::vector<victim> r;
        for (auto& e : events)
            if (e.kind == event_kind::oom_kill) r.insert(r.end(), e.victims.begin(), e.victims.end());
        return r;
    }
    std::uint64_t kills() const {
        std::uint64_t n = 0;
        for (auto& e : events)
            if (e.kind == event_kind::oom_kill) n += e.count;
        return n;
    }
};

// One victim OOM-killed in `dir`; the events are collected until its kill is reported,
// and only then is it reaped (its /proc entry can complete a record whose report was
// rate limited). Returns its pid.
template <class W>
inline pid_t kill_one(boost::asio::io_context& ctx, collector<W>& c, const std::filesystem::path& dir) {
    auto v = scratch::victim::spawn(dir, oom_hog);
    BOOST_TEST_REQUIRE(v.has_value(), "cannot start a victim: " << v.error().message());
    const std::uint64_t before = c.kills();
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return c.kills() > before; }, 15s), "no oom_kill event for " << v->pid());
    auto status = v->wait(10s);
    BOOST_TEST_REQUIRE(status.has_value());
    BOOST_TEST_REQUIRE(scratch::victim::killed_by_sigkill(*status));
    return v->pid();
}

inline const victim* find(const std::vector<victim>& vs, pid_t pid) {
    for (auto& v : vs)
        if (v.pid == pid) return &v;
    return nullptr;
}

// Kills one victim after another in `dir` until `named(pid)` holds for one: the
// kernel's OOM report (which names the victim's cgroup) is rate limited machine-wide to
// 10 every 5 s, and without it a victim is named only if the log is read before the
// victim exits; earlier tests may have used the burst up. Bounded by 15 s (three
// windows); past it the test fails when the kernel is required, else it is let go.
// Returns the pid named, if any.
template <class W>
std::optional<pid_t> kill_until_named(boost::asio::io_context& ctx, collector<W>& c, const std::filesystem::path& dir,
                                      const std::function<bool(pid_t)>& named) {
    const auto deadline = std::chrono::steady_clock::now() + 15s;
    for (;;) {
        const pid_t pid = kill_one(ctx, c, dir);
        if (named(pid)) return pid;
        BOOST_TEST_MESSAGE("victim " << pid << " was not named (its report rate limited); again");
        if (std::chrono::steady_clock::now() >= deadline) {
            BOOST_TEST_REQUIRE(!kernel_required(), "no victim named for 15 s");
            return std::nullopt;
        }
    }
}


} // namespace oomwatch::test
