#include "test_support.hpp"

#include "scratch/scratch_cgroup.hpp"

#include <boost/cstdlib.hpp>
#include <boost/log/expressions.hpp>
#include <boost/log/utility/setup/console.hpp>

#include <boost/test/results_collector.hpp>
#include <boost/test/tree/observer.hpp>

#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <iostream>
#include <stdexcept>
#include <system_error>

namespace oomwatch::test {

namespace {
std::filesystem::path tmpfs_base() {
    // Fake cgroups belong on tmpfs (docs/kernel.md describes its inotify behaviour).
    if (std::filesystem::is_directory("/dev/shm")) return "/dev/shm";
    return std::filesystem::temp_directory_path();
}
} // namespace

scratch::scratch_cgroup make_scratch_cgroup(std::string_view prefix, std::uint64_t limit_bytes) {
    auto r = scratch::scratch_cgroup::create(prefix, limit_bytes);
    BOOST_TEST_REQUIRE(r.has_value(), "cannot create a scratch cgroup: " << r.error().message());
    return std::move(*r);
}

void oom_kill_one(const std::filesystem::path& cg, std::chrono::milliseconds timeout) {
    auto v = scratch::victim::spawn(cg, oom_hog);
    BOOST_TEST_REQUIRE(v.has_value(), "cannot start a victim in " << cg << ": " << v.error().message());
    auto status = v->wait(timeout);
    BOOST_TEST_REQUIRE(status.has_value(), "the victim did not die: " << status.error().message());
    BOOST_TEST_REQUIRE(scratch::victim::killed_by_sigkill(*status), "victim status " << *status);
}

scratch_oom::scratch_oom(std::string_view prefix, std::uint64_t limit_bytes) {
    OOMWATCH_REQUIRE_KERNEL_READY();
    cg.emplace(make_scratch_cgroup(prefix, limit_bytes));
}

scratch::scratch_cgroup scratch_oom::child(const std::string& name, std::uint64_t limit_bytes) {
    auto c = cg->create_child(name, limit_bytes);
    BOOST_TEST_REQUIRE(c.has_value(), "cannot create " << name << ": " << c.error().message());
    return std::move(*c);
}

namespace {
// The value of `key` in a flat-keyed cgroup file ("key value" lines), parsed here rather
// than by the library, which is what the witness checks.
std::uint64_t counter_in(const std::filesystem::path& file, std::string_view key) {
    std::ifstream in(file);
    BOOST_TEST_REQUIRE(in.good(), "cannot open " << file);
    std::string k;
    std::uint64_t v;
    while (in >> k >> v)
        if (k == key) return v;
    BOOST_TEST_REQUIRE(false, file << " has no " << key);
    return 0;
}
} // namespace

kernel_witness::kernel_witness(const std::filesystem::path& cg, cgroup_version v) : cg_(cg), v_(v) {
    base_ = read_file();
    if (v_ != cgroup_version::v1) return;
    efd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    BOOST_TEST_REQUIRE(efd_ >= 0, "eventfd: errno " << errno);
    const auto ctl_path = cg_ / "memory.oom_control";
    const auto evc_path = cg_ / "cgroup.event_control";
    int ctl = ::open(ctl_path.c_str(), O_RDONLY | O_CLOEXEC);
    BOOST_TEST_REQUIRE(ctl >= 0, "open " << ctl_path << ": errno " << errno);
    int evc = ::open(evc_path.c_str(), O_WRONLY | O_CLOEXEC);
    const int open_errno = errno;
    std::string line = std::to_string(efd_) + " " + std::to_string(ctl);
    ssize_t w = -1;
    int write_errno = 0;
    if (evc >= 0) {
        do w = ::write(evc, line.data(), line.size());
        while (w < 0 && errno == EINTR);
        write_errno = errno;
        ::close(evc);
    }
    ::close(ctl);  // the registration holds the eventfd, not the control file
    BOOST_TEST_REQUIRE(evc >= 0, "open " << evc_path << ": errno " << open_errno);
    BOOST_TEST_REQUIRE(w == static_cast<ssize_t>(line.size()), "register an eventfd: errno " << write_errno);
}

kernel_witness::~kernel_witness() {
    if (efd_ >= 0) ::close(efd_);
}

kernel_witness::file_counts kernel_witness::read_file() const {
    file_counts c;
    if (v_ == cgroup_version::v1) {
        c.oom_kill = counter_in(cg_ / "memory.oom_control", "oom_kill");
    } else {
        c.oom = counter_in(cg_ / "memory.events", "oom");
        c.oom_kill = counter_in(cg_ / "memory.events", "oom_kill");
    }
    return c;
}

void kernel_witness::take() {
    const auto now = read_file();
    kills_ = now.oom_kill - base_.oom_kill;
    if (v_ != cgroup_version::v1) {
        ooms_ = now.oom - base_.oom;
        return;
    }
    std::uint64_t n = 0;  // notifications since the last read; none: EAGAIN
    ssize_t r;
    do r = ::read(efd_, &n, sizeof n);
    while (r < 0 && errno == EINTR);
    BOOST_TEST_REQUIRE((r == sizeof n || (r < 0 && errno == EAGAIN)), "read the eventfd: errno " << errno);
    if (r == sizeof n) ooms_ += n;
}

kernel_fixture::kernel_fixture() {
    BOOST_TEST_MESSAGE("scratch cgroup " << cg->path() << " (cgroup " << cg->version() << ")");
}

log_to_stderr::log_to_stderr() {
    namespace logging = boost::log;
    const char* e = std::getenv("OOMWATCH_TEST_LOG");
    auto min = e && std::string_view(e) == "debug" ? log_severity::debug : log_severity::warning;
    namespace expr = logging::expressions;
    logging::add_console_log(
        std::clog,
        logging::keywords::format = expr::stream << "oomwatch[" << expr::attr<log_severity>("Severity")
                                                 << "]: " << expr::smessage,
        logging::keywords::filter = expr::attr<log_severity>("Severity") >= min);
    enable_logging(min);  // the library is silent until asked
}

fake_v2_tree::fake_v2_tree() {
    static std::atomic<int> n{0};
    root_ = tmpfs_base() / ("oomwatch-test-" + std::to_string(::getpid()) + "-" + std::to_string(n++));
    parent_ = root_ / "parent";
    std::filesystem::create_directories(parent_);
}

fake_v2_tree::~fake_v2_tree() {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
}

std::filesystem::path fake_v2_tree::make_cgroup(const std::string& name, const memory_counters& c) {
    auto dir = parent_ / name;
    std::filesystem::create_directory(dir);
    write_events(dir, c);
    write_events(dir, c, "memory.events.local");
    return dir;
}

std::string events_text(const memory_counters& c) {
    return "low " + std::to_string(c.low) + "\nhigh " + std::to_string(c.high) + "\nmax " + std::to_string(c.max) +
           "\noom " + std::to_string(c.oom) + "\noom_kill " + std::to_string(c.oom_kill) + "\noom_group_kill " +
           std::to_string(c.oom_group_kill) + "\n";
}

void fake_v2_tree::write_events(const std::filesystem::path& cg, const memory_counters& c, const char* file) {
    const std::string text = events_text(c);
    auto p = cg / file;
    int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), p.string());
    auto w = ::write(fd, text.data(), text.size());
    ::close(fd);
    if (w != static_cast<ssize_t>(text.size())) throw std::runtime_error("short write to " + p.string());
}

void fake_v2_tree::remove_cgroup(const std::filesystem::path& cg) {
    for (auto& e : std::filesystem::directory_iterator(cg)) std::filesystem::remove(e.path());
    std::filesystem::remove(cg);
}

namespace {

// Sees the end of the run (after the results of every test unit are in) and keeps how
// many test cases ran and how many were skipped.
struct skip_observer : boost::unit_test::test_observer {
    void test_finish() override {
        namespace ut = boost::unit_test;
        const auto& r = ut::results_collector.results(ut::framework::master_test_suite().p_id);
        finished = true;
        // "Skipped" includes the cases a --run_test filter left out; a case that ran
        // passed, warned, failed, aborted or timed out.
        ran = r.p_test_cases_passed + r.p_test_cases_warned + r.p_test_cases_failed + r.p_test_cases_aborted +
              r.p_test_cases_timed_out;
        skipped = r.p_test_cases_skipped;
    }
    bool finished = false;
    std::size_t ran = 0;
    std::size_t skipped = 0;
};

skip_observer the_skip_observer;
bool (*module_init)() = nullptr;

bool init_and_observe() {
    boost::unit_test::framework::register_observer(the_skip_observer);
    return module_init();
}

} // namespace

int run_test_program(bool (*init)(), int argc, char* argv[]) {
    const std::string name = argc > 0 ? std::filesystem::path(argv[0]).filename().string() : "test program";
    // A test program that died (a sanitizer's abort, SIGKILL) could not remove its
    // scratch cgroups: the next run does.
    if (::geteuid() == 0) {
        if (const auto n = scratch::remove_leftovers())
            std::cerr << name << ": removed " << n << " scratch cgroup(s) left by test programs that died" << std::endl;
    }
    module_init = init;
    const int rc = boost::unit_test::unit_test_main(&init_and_observe, argc, argv);
    const auto& o = the_skip_observer;
    if (rc != 0 || !o.finished || o.ran != 0 || o.skipped == 0) return rc;
    if (kernel_required()) {
        std::cerr << name << ": FAIL: every test case was skipped, and OOMWATCH_REQUIRE_KERNEL=1 allows no skipping"
                  << std::endl;
        return boost::exit_test_failure;
    }
    std::cerr << name << ": every test case was skipped: exit status " << all_skipped_exit
              << " (ctest shows it as skipped)" << std::endl;
    return all_skipped_exit;
}

void event_log::arm() {
    w_.async_next_event([this](boost::system::error_code ec, oom_event ev) {
        if (ec) {
            last_error = ec;
            return;
        }
        t.add(ev);
        events.push_back(ev);
        if (ev.kind != event_kind::removed) arm();
    });
}

} // namespace oomwatch::test
