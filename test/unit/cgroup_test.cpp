// Discovery of memory cgroups: the pure selection, fake folders and fake mount tables,
// and this machine (through the public error_code and throwing forms).
#include <oomwatch/cgroup.hpp>
#include <oomwatch/error.hpp>

#include "detail/cgroup.hpp"
#include "detail/parse.hpp"
#include "sys.hpp"

#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
namespace data = boost::unit_test::data;
namespace errc = boost::system::errc;

namespace {

using oomwatch::cgroup_version;
using oomwatch::error;

// ---- helpers ---------------------------------------------------------------------------

std::vector<oomwatch::mount_entry> mounts_of(const std::string& mountinfo) {
    auto r = oomwatch::parse_mountinfo(mountinfo);
    BOOST_TEST_REQUIRE(r.has_value(), "test table does not parse: " << r.error().message());
    return *r;
}

std::string slurp(const fs::path& p) {
    std::ifstream in(p);
    BOOST_TEST_REQUIRE(in.good(), "cannot open " << p);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void touch(const fs::path& p) {
    std::ofstream out(p);
    BOOST_TEST_REQUIRE(out.good(), "cannot create " << p);
}

void write_text(const fs::path& p, const std::string& text) {
    std::ofstream out(p);
    out << text;
    BOOST_TEST_REQUIRE(out.good(), "cannot write " << p);
}

// An empty directory under the system's temporary directory, removed with all its
// contents when the test ends, failed or not.
struct temp_dir {
    fs::path path;
    temp_dir() {
        static unsigned counter = 0;
        path = fs::temp_directory_path() /
               ("oomwatch-unit-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~temp_dir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;

    // A folder dressed up as a cgroup by the files it holds.
    fs::path fake(const std::string& name, std::initializer_list<const char*> files) const {
        fs::path dir = path / name;
        fs::create_directories(dir);
        for (const char* f : files) touch(dir / f);
        return dir;
    }
};

bool kernel_required() {
    const char* v = std::getenv("OOMWATCH_REQUIRE_KERNEL");
    return v != nullptr && std::string(v) == "1";
}

// Precondition of the tests on this machine's hierarchy: skipped when there is none,
// unless OOMWATCH_REQUIRE_KERNEL=1, where they run (and fail).
struct have_memory_hierarchy {
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
        if (kernel_required()) return true;
        boost::system::error_code ec;
        oomwatch::find_memory_hierarchy(ec);
        if (!ec) return true;
        BOOST_TEST_MESSAGE("skipped: no memory cgroup hierarchy (" << ec.message()
                                                                    << "); set OOMWATCH_REQUIRE_KERNEL=1 to fail");
        boost::test_tools::assertion_result r(false);
        r.message() << "no memory cgroup hierarchy: " << ec.message();
        return r;
    }
};

oomwatch::memory_hierarchy require_hierarchy() {
    boost::system::error_code ec;
    auto h = oomwatch::find_memory_hierarchy(ec);
    BOOST_TEST_REQUIRE(!ec, "find_memory_hierarchy: " << ec.message());
    return h;
}

// A value that an error_code form must overwrite.
boost::system::error_code stale_code() { return make_error_code(errc::io_error); }

// The public error_code forms, as results: the error_code is cleared on success, and
// the value is default-constructed on failure.
oomwatch::result<oomwatch::cgroup_location> checked(const oomwatch::cgroup_location& loc,
                                                    const boost::system::error_code& ec) {
    if (!ec) return loc;
    BOOST_TEST(loc.directory.empty(), "a failed lookup gave " << loc.directory);
    return ec;
}

oomwatch::result<oomwatch::cgroup_location> resolve(const fs::path& spec) {
    auto ec = stale_code();
    auto loc = oomwatch::resolve_cgroup(spec, ec);
    return checked(loc, ec);
}

oomwatch::result<oomwatch::cgroup_location> cgroup_of(pid_t pid) {
    auto ec = stale_code();
    auto loc = oomwatch::memory_cgroup_of(pid, ec);
    return checked(loc, ec);
}

std::vector<oomwatch::mount_entry> real_mounts() {
    return mounts_of(slurp("/proc/self/mountinfo"));
}

bool is(const boost::system::error_code& ec, errc::errc_t e) { return ec == e; }

// The memory cgroup path that /proc/self/cgroup shows, read without the library.
std::string own_memory_path(cgroup_version v) {
    std::istringstream in(slurp("/proc/self/cgroup"));
    std::string line;
    while (std::getline(in, line)) {
        auto c1 = line.find(':');
        auto c2 = line.find(':', c1 + 1);
        std::string controllers = "," + line.substr(c1 + 1, c2 - c1 - 1) + ",";
        bool match = v == cgroup_version::v1 ? controllers.find(",memory,") != std::string::npos
                                             : line.compare(0, 3, "0::") == 0;
        if (match) return line.substr(c2 + 1);
    }
    BOOST_FAIL("no memory line in /proc/self/cgroup");
    return {};
}

} // namespace

BOOST_AUTO_TEST_SUITE(cgroup)

// ---- select_memory_hierarchy (pure) ------------------------------------------------------

BOOST_AUTO_TEST_SUITE(select)

namespace {
struct select_case {
    const char* name;
    std::string mountinfo;
    std::set<std::string> v2_with_memory;  // cgroup2 mount points whose root lists memory
    std::optional<oomwatch::memory_hierarchy> expected;
};
std::ostream& operator<<(std::ostream& os, const select_case& c) { return os << c.name; }

// This machine's cgroup mounts, from /proc/self/mountinfo.
const std::string v1_lines = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
                             "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
                             "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
                             "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
                             "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n";
const std::string unified_line = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
const std::string base_lines = "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
                               "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard\n";
// A systemd machine on pure cgroup v2.
const std::string pure_v2 =
    "25 21 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n";

oomwatch::memory_hierarchy hierarchy(const char* mount_point, const char* root, cgroup_version v) {
    return {mount_point, root, v};
}

std::vector<select_case> select_cases() {
    return {
        {"pure v1", base_lines + v1_lines, {}, hierarchy("/sys/fs/cgroup/memory", "/", cgroup_version::v1)},
        {"hybrid: v1 memory wins over cgroup2 without memory", base_lines + v1_lines + unified_line, {},
         hierarchy("/sys/fs/cgroup/memory", "/", cgroup_version::v1)},
        {"hybrid: v1 memory wins over cgroup2 with memory", base_lines + unified_line + v1_lines,
         {"/sys/fs/cgroup/unified"}, hierarchy("/sys/fs/cgroup/memory", "/", cgroup_version::v1)},
        {"pure v2 with memory", base_lines + pure_v2, {"/sys/fs/cgroup"},
         hierarchy("/sys/fs/cgroup", "/", cgroup_version::v2)},
        {"pure v2 without memory", base_lines + pure_v2, {}, std::nullopt},
        {"no cgroup mounts", base_lines, {"/sys/fs/cgroup"}, std::nullopt},
        {"only non-memory v1 hierarchies", base_lines + "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
                                                        "40 31 0:37 / /x rw - cgroup cgroup rw,name=memory\n",
         {}, std::nullopt},
        {"v1 memory mounted from a sub-tree (docker)",
         base_lines + "35 31 0:32 /docker/x /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n", {},
         hierarchy("/sys/fs/cgroup/memory", "/docker/x", cgroup_version::v1)},
        {"v1 memory: the hierarchy's root mount is preferred",
         base_lines + "35 31 0:32 /docker/x /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
                      "36 31 0:32 / /host/memory rw - cgroup cgroup rw,memory\n",
         {}, hierarchy("/host/memory", "/", cgroup_version::v1)},
        {"v1 memory: of two root mounts the first",
         base_lines + "35 31 0:32 / /a rw - cgroup cgroup rw,memory\n36 31 0:32 / /b rw - cgroup cgroup rw,memory\n",
         {}, hierarchy("/a", "/", cgroup_version::v1)},
        {"v1 memory combined with other controllers",
         base_lines + "35 31 0:32 / /sys/fs/cgroup/cpu,memory rw - cgroup cgroup rw,cpu,memory\n", {},
         hierarchy("/sys/fs/cgroup/cpu,memory", "/", cgroup_version::v1)},
        {"v2: only the cgroup2 mount whose root has memory",
         base_lines + "41 31 0:38 / /no rw - cgroup2 cgroup2 rw\n42 31 0:38 / /yes rw - cgroup2 cgroup2 rw\n",
         {"/yes"}, hierarchy("/yes", "/", cgroup_version::v2)},
        {"v2 sub-tree mount (container without cgroupns)",
         base_lines + "41 31 0:38 /system.slice/c.scope /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
         {"/sys/fs/cgroup"}, hierarchy("/sys/fs/cgroup", "/system.slice/c.scope", cgroup_version::v2)},
        {"mount point with an escaped space",
         base_lines + "35 31 0:32 / /mnt/my\\040cg rw - cgroup cgroup rw,memory\n", {},
         hierarchy("/mnt/my cg", "/", cgroup_version::v1)},
    };
}
} // namespace

BOOST_DATA_TEST_CASE(table, data::make(select_cases()), c) {
    auto mounts = mounts_of(c.mountinfo);
    auto r = oomwatch::select_memory_hierarchy(
        mounts, [&c](const fs::path& p) { return c.v2_with_memory.count(p.string()) != 0; });
    BOOST_TEST_REQUIRE(r.has_value() == c.expected.has_value());
    if (!r) {
        BOOST_TEST(r.error() == make_error_code(error::no_memory_hierarchy));
        return;
    }
    BOOST_TEST(r->mount_point == c.expected->mount_point);
    BOOST_TEST(r->root == c.expected->root);
    BOOST_TEST(r->version == c.expected->version);
}

BOOST_AUTO_TEST_CASE(v2_not_probed_when_v1_has_memory) {
    // The probe reads files: not needed when a v1 memory mount is there.
    int calls = 0;
    auto r = oomwatch::select_memory_hierarchy(mounts_of(base_lines + unified_line + v1_lines),
                                               [&calls](const fs::path&) {
                                                   ++calls;
                                                   return true;
                                               });
    BOOST_TEST_REQUIRE(r.has_value());
    BOOST_TEST(r->version == cgroup_version::v1);
    BOOST_TEST(calls == 0);
}

BOOST_AUTO_TEST_CASE(empty_probe_means_no_v2_memory) {
    auto r = oomwatch::select_memory_hierarchy(mounts_of(base_lines + pure_v2), {});
    BOOST_TEST_REQUIRE(!r.has_value());
    BOOST_TEST(r.error() == make_error_code(error::no_memory_hierarchy));
    BOOST_TEST(!oomwatch::select_memory_hierarchy({}, {}).has_value());
}

BOOST_AUTO_TEST_SUITE_END()

// ---- check_cgroup_directory on fake folders ---------------------------------------------

BOOST_FIXTURE_TEST_SUITE(fake_folders, temp_dir)

BOOST_AUTO_TEST_CASE(v1_fake_cgroup) {
    fs::path dir = fake("v1", {"memory.oom_control", "cgroup.event_control", "cgroup.procs"});
    auto r = oomwatch::check_cgroup_directory(dir, cgroup_version::v1);
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST(r->directory == dir);
    BOOST_TEST(r->version == cgroup_version::v1);
}

BOOST_AUTO_TEST_CASE(v2_fake_cgroup) {
    fs::path dir = fake("v2", {"memory.events", "cgroup.controllers"});
    auto r = oomwatch::check_cgroup_directory(dir, cgroup_version::v2);
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST(r->directory == dir);
    BOOST_TEST(r->version == cgroup_version::v2);
}

BOOST_AUTO_TEST_CASE(directory_is_made_absolute_and_normal) {
    fs::path dir = fake("v2", {"memory.events"});
    for (const fs::path& spelled : {fs::path(dir.string() + "/"), dir / "." / ".." / "v2" / "",
                                    fs::path(dir.string() + "//"), fs::relative(dir, fs::current_path())}) {
        BOOST_TEST_CONTEXT(spelled) {
            auto r = oomwatch::check_cgroup_directory(spelled, cgroup_version::v2);
            BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
            BOOST_TEST(r->directory == dir);
            BOOST_TEST(r->directory.is_absolute());
            BOOST_TEST(r->directory.has_filename());
        }
    }
}

namespace {
struct fake_case {
    const char* name;
    std::vector<const char*> files;
    cgroup_version version;
    boost::system::error_code expected;  // empty: accepted
};
std::ostream& operator<<(std::ostream& os, const fake_case& c) { return os << c.name; }

std::vector<fake_case> fake_cases() {
    const auto ok = boost::system::error_code();
    const auto not_a_cgroup = make_error_code(error::not_a_cgroup);
    const auto no_memory = make_error_code(error::no_memory_controller);
    return {
        {"v1 complete", {"memory.oom_control", "cgroup.event_control"}, cgroup_version::v1, ok},
        {"v1 without cgroup.event_control", {"memory.oom_control"}, cgroup_version::v1, not_a_cgroup},
        {"v1 without memory.oom_control", {"cgroup.event_control", "cgroup.procs"}, cgroup_version::v1, not_a_cgroup},
        {"v1 empty folder", {}, cgroup_version::v1, not_a_cgroup},
        {"v1 given a v2 folder", {"memory.events", "cgroup.controllers"}, cgroup_version::v1, not_a_cgroup},
        {"v2 complete", {"memory.events", "cgroup.controllers"}, cgroup_version::v2, ok},
        {"v2 without memory controller", {"cgroup.controllers", "cgroup.procs"}, cgroup_version::v2, no_memory},
        {"v2 empty folder", {}, cgroup_version::v2, not_a_cgroup},
        {"v2 given a v1 folder", {"memory.oom_control", "cgroup.event_control"}, cgroup_version::v2, not_a_cgroup},
        {"v2 with memory.events.local only", {"memory.events.local", "cgroup.controllers"}, cgroup_version::v2,
         no_memory},
    };
}
} // namespace

BOOST_DATA_TEST_CASE(files_decide, data::make(fake_cases()), c) {
    temp_dir tmp;
    fs::path dir = tmp.path / "cg";
    fs::create_directories(dir);
    for (const char* f : c.files) touch(dir / f);
    auto r = oomwatch::check_cgroup_directory(dir, c.version);
    if (!c.expected) {
        BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
        BOOST_TEST(r->directory == dir);
        BOOST_TEST(r->version == c.version);
    } else {
        BOOST_TEST_REQUIRE(!r.has_value());
        BOOST_TEST(r.error() == c.expected);
    }
}

BOOST_AUTO_TEST_CASE(required_file_that_is_a_directory) {
    fs::path dir = fake("v2", {"cgroup.controllers"});
    fs::create_directory(dir / "memory.events");
    auto r = oomwatch::check_cgroup_directory(dir, cgroup_version::v2);
    BOOST_TEST_REQUIRE(!r.has_value());
    BOOST_TEST(r.error() == make_error_code(error::no_memory_controller));
}

BOOST_AUTO_TEST_CASE(missing_directory_is_enoent) {
    for (auto v : {cgroup_version::v1, cgroup_version::v2}) {
        BOOST_TEST_CONTEXT(v) {
            auto r = oomwatch::check_cgroup_directory(path / "no-such-dir", v);
            BOOST_TEST_REQUIRE(!r.has_value());
            BOOST_TEST(is(r.error(), errc::no_such_file_or_directory), r.error().message());
            BOOST_TEST((r.error().category() == boost::system::system_category()));
        }
    }
    auto empty = oomwatch::check_cgroup_directory({}, cgroup_version::v1);
    BOOST_TEST_REQUIRE(!empty.has_value());
    BOOST_TEST(is(empty.error(), errc::no_such_file_or_directory));
}

BOOST_AUTO_TEST_CASE(regular_file_is_not_a_cgroup) {
    touch(path / "file");
    for (auto v : {cgroup_version::v1, cgroup_version::v2}) {
        BOOST_TEST_CONTEXT(v) {
            auto r = oomwatch::check_cgroup_directory(path / "file", v);
            BOOST_TEST_REQUIRE(!r.has_value());
            BOOST_TEST(r.error() == make_error_code(error::not_a_cgroup));
        }
    }
    // Below a regular file: stat's ENOTDIR is passed on.
    auto r = oomwatch::check_cgroup_directory(path / "file" / "sub", cgroup_version::v2);
    BOOST_TEST_REQUIRE(!r.has_value());
    BOOST_TEST(is(r.error(), errc::not_a_directory), r.error().message());
}

BOOST_AUTO_TEST_CASE(resolve_takes_existing_non_cgroup_paths_as_no_cgroup) {
    // Not in a cgroup file system, not a path inside the memory hierarchy either.
    boost::system::error_code ec;
    oomwatch::find_memory_hierarchy(ec);
    if (ec) {
        BOOST_TEST(!resolve(path).has_value());
        return;
    }
    auto r = resolve(path);
    BOOST_TEST_REQUIRE(!r.has_value());
    BOOST_TEST(r.error() == make_error_code(error::not_a_cgroup));
}

BOOST_AUTO_TEST_SUITE_END()

// ---- the root of a cgroup v2 hierarchy: fake folders and fake mount tables ---------------

BOOST_FIXTURE_TEST_SUITE(v2_root, temp_dir)

namespace {

// A fake cgroup v2 hierarchy at `top`, laid out as the kernel has it: the root lists the
// hierarchy's controllers in cgroup.controllers and has neither cgroup.type nor
// memory.events; below it a cgroup with the memory controller and one without.
void fake_v2_hierarchy(const fs::path& top, const std::string& controllers) {
    fs::create_directories(top);
    write_text(top / "cgroup.controllers", controllers + "\n");
    touch(top / "cgroup.procs");
    touch(top / "cgroup.subtree_control");
    for (const char* child : {"with-memory", "without-memory"}) {
        fs::create_directory(top / child);
        touch(top / child / "cgroup.type");
        touch(top / child / "cgroup.procs");
    }
    write_text(top / "with-memory" / "cgroup.controllers", "cpu memory\n");
    touch(top / "with-memory" / "memory.events");
    write_text(top / "without-memory" / "cgroup.controllers", "cpu\n");
}

oomwatch::mount_entry mount_of(unsigned id, const std::string& root, const fs::path& mount_point, const char* type,
                            const char* options) {
    return {id, 1, root, mount_point.string(), type, type, options};
}

// A mount table with the root file system and `more`.
std::vector<oomwatch::mount_entry> table(std::initializer_list<oomwatch::mount_entry> more) {
    std::vector<oomwatch::mount_entry> t{mount_of(1, "/", "/", "ext4", "rw")};
    t.insert(t.end(), more);
    return t;
}

// resolve_cgroup against a fake mount table, with the library's probe of cgroup2 roots
// (it reads the fake cgroup.controllers).
oomwatch::result<oomwatch::cgroup_location> resolve_in(const std::vector<oomwatch::mount_entry>& mounts,
                                                       const fs::path& spec) {
    return oomwatch::resolve_cgroup_in(mounts, spec, oomwatch::v2_root_has_memory);
}

void expect_error(const oomwatch::result<oomwatch::cgroup_location>& r, const boost::system::error_code& want) {
    BOOST_TEST_REQUIRE(!r.has_value(), "accepted as " << (r ? r->directory : fs::path()));
    BOOST_TEST((r.error().default_error_condition() == want.default_error_condition()), r.error().message());
}

} // namespace

BOOST_AUTO_TEST_CASE(check_of_the_root_is_root_cgroup) {
    const fs::path top = path / "v2";
    fake_v2_hierarchy(top, "cpuset cpu io memory pids");
    BOOST_TEST(oomwatch::v2_root_has_memory(top));
    for (const fs::path& spelled : {top, fs::path(top.string() + "/"), top / "with-memory" / ".."}) {
        BOOST_TEST_CONTEXT(spelled) {
            expect_error(oomwatch::check_cgroup_directory(spelled, cgroup_version::v2),
                         make_error_code(error::root_cgroup));
        }
    }
    // Its children are told apart by memory.events, as before.
    auto child = oomwatch::check_cgroup_directory(top / "with-memory", cgroup_version::v2);
    BOOST_TEST_REQUIRE(child.has_value(), child.error().message());
    BOOST_TEST(child->directory == top / "with-memory");
    expect_error(oomwatch::check_cgroup_directory(top / "without-memory", cgroup_version::v2),
                 make_error_code(error::no_memory_controller));
    // Taken as v1 it is no cgroup at all.
    expect_error(oomwatch::check_cgroup_directory(top, cgroup_version::v1), make_error_code(error::not_a_cgroup));
}

BOOST_AUTO_TEST_CASE(root_of_a_hierarchy_without_memory_has_no_memory_controller) {
    // Hybrid's /sys/fs/cgroup/unified: a v2 root, but memory is bound to v1 (this
    // machine's lists "hugetlb"); watching below it would not help either.
    for (const char* controllers : {"", "hugetlb", "cpu io memoryx"}) {
        BOOST_TEST_CONTEXT('"' << controllers << '"') {
            temp_dir tmp;
            fake_v2_hierarchy(tmp.path / "unified", controllers);
            BOOST_TEST(!oomwatch::v2_root_has_memory(tmp.path / "unified"));
            expect_error(oomwatch::check_cgroup_directory(tmp.path / "unified", cgroup_version::v2),
                         make_error_code(error::no_memory_controller));
        }
    }
}

BOOST_AUTO_TEST_CASE(non_root_without_memory_events_is_no_memory_controller) {
    // cgroup.type marks a cgroup below the root, whatever cgroup.controllers says.
    fs::path dir = fake("child", {"cgroup.type", "cgroup.procs"});
    write_text(dir / "cgroup.controllers", "memory\n");
    expect_error(oomwatch::check_cgroup_directory(dir, cgroup_version::v2),
                 make_error_code(error::no_memory_controller));
}

BOOST_AUTO_TEST_CASE(resolve_the_root_of_pure_v2) {
    const fs::path top = path / "cgroup";
    fake_v2_hierarchy(top, "cpu io memory pids");
    const auto mounts = table({mount_of(25, "/", top, "cgroup2", "rw,nsdelegate")});

    // By its directory and by its path in the hierarchy.
    for (const fs::path& spec : {top, fs::path(top.string() + "/"), fs::path("/"), fs::path("/with-memory/..")}) {
        BOOST_TEST_CONTEXT(spec) { expect_error(resolve_in(mounts, spec), make_error_code(error::root_cgroup)); }
    }
    // The cgroups below it as before.
    for (const fs::path& spec : {top / "with-memory", fs::path("/with-memory"), fs::path("with-memory")}) {
        BOOST_TEST_CONTEXT(spec) {
            auto r = resolve_in(mounts, spec);
            BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
            BOOST_TEST(r->directory == top / "with-memory");
            BOOST_TEST(r->version == cgroup_version::v2);
        }
    }
    for (const fs::path& spec : {top / "without-memory", fs::path("/without-memory")}) {
        BOOST_TEST_CONTEXT(spec) {
            expect_error(resolve_in(mounts, spec), make_error_code(error::no_memory_controller));
        }
    }
    expect_error(resolve_in(mounts, top / "cgroup.procs"), make_error_code(error::not_a_cgroup));
    expect_error(resolve_in(mounts, "/oomwatch-no-such-cgroup"), make_error_code(errc::no_such_file_or_directory));
}

BOOST_AUTO_TEST_CASE(resolve_on_hybrid) {
    // v1 memory, and a cgroup2 hierarchy without memory beside it.
    const fs::path v1 = fake("memory", {"memory.oom_control", "cgroup.event_control", "cgroup.procs"});
    const fs::path unified = path / "unified";
    fake_v2_hierarchy(unified, "hugetlb");
    const auto mounts =
        table({mount_of(35, "/", v1, "cgroup", "rw,memory"), mount_of(41, "/", unified, "cgroup2", "rw")});

    expect_error(resolve_in(mounts, unified), make_error_code(error::no_memory_controller));
    expect_error(resolve_in(mounts, unified / "with-memory" / ".."), make_error_code(error::no_memory_controller));
    for (const fs::path& spec : {v1, fs::path("/")}) {
        BOOST_TEST_CONTEXT(spec) {
            auto r = resolve_in(mounts, spec);
            BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
            BOOST_TEST(r->directory == v1);
            BOOST_TEST(r->version == cgroup_version::v1);
        }
    }
}

BOOST_AUTO_TEST_CASE(resolve_v2_without_memory_anywhere) {
    const fs::path top = path / "cgroup";
    fake_v2_hierarchy(top, "cpu io pids");
    const auto mounts = table({mount_of(25, "/", top, "cgroup2", "rw")});
    expect_error(resolve_in(mounts, top), make_error_code(error::no_memory_controller));
    expect_error(resolve_in(mounts, "/"), make_error_code(error::no_memory_hierarchy));
}

BOOST_AUTO_TEST_CASE(top_of_a_sub_tree_mount_is_no_root) {
    // A container without a cgroup namespace: the mount shows a cgroup below the root.
    // Its top has cgroup.type, so it is judged by memory.events like any other cgroup.
    const fs::path top = path / "v2";
    fake_v2_hierarchy(top, "cpu memory");
    const auto mounts = table({mount_of(41, "/system.slice/c.scope", top / "with-memory", "cgroup2", "rw"),
                               mount_of(42, "/system.slice/d.scope", top / "without-memory", "cgroup2", "rw")});
    auto r = resolve_in(mounts, top / "with-memory");
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST(r->directory == top / "with-memory");
    expect_error(resolve_in(mounts, top / "without-memory"), make_error_code(error::no_memory_controller));
    // What lies outside the sub-tree cannot be reached through these mounts.
    expect_error(resolve_in(mounts, "system.slice/d.scope"), make_error_code(errc::no_such_file_or_directory));
}

BOOST_AUTO_TEST_SUITE_END()

// ---- the private system helpers ----------------------------------------------------------

BOOST_FIXTURE_TEST_SUITE(sys, temp_dir)

BOOST_AUTO_TEST_CASE(read_file_whole_content) {
    // Larger than any single read chunk, with NUL bytes.
    std::string content;
    for (int i = 0; i < 100000; ++i) content += static_cast<char>(i % 251);
    {
        std::ofstream out(path / "big", std::ios::binary);
        out << content;
    }
    std::string got = "stale";
    auto ec = oomwatch::detail::read_file(path / "big", got);
    BOOST_TEST_REQUIRE(!ec, ec.message());
    BOOST_TEST(got.size() == content.size());
    BOOST_TEST((got == content));

    touch(path / "empty");
    ec = oomwatch::detail::read_file(path / "empty", got);
    BOOST_TEST(!ec);
    BOOST_TEST(got.empty());
}

BOOST_AUTO_TEST_CASE(read_file_proc) {
    // /proc files report size 0: reading must not trust st_size.
    std::string got;
    auto ec = oomwatch::detail::read_file("/proc/self/mountinfo", got);
    BOOST_TEST_REQUIRE(!ec, ec.message());
    BOOST_TEST(got.find(" - ") != std::string::npos);
    BOOST_TEST(oomwatch::parse_mountinfo(got).has_value());
}

BOOST_AUTO_TEST_CASE(read_file_errors) {
    std::string got = "stale";
    auto ec = oomwatch::detail::read_file(path / "missing", got);
    BOOST_TEST(is(ec, errc::no_such_file_or_directory), ec.message());
    BOOST_TEST((ec.category() == boost::system::system_category()));
    BOOST_TEST(got.empty());

    ec = oomwatch::detail::read_file(path, got);
    BOOST_TEST(is(ec, errc::is_a_directory), ec.message());

    ec = oomwatch::detail::read_file(std::string("/etc/hostname\0x", 15), got);
    BOOST_TEST(is(ec, errc::invalid_argument), ec.message());

    ec = oomwatch::detail::read_file("/dev/zero", got);  // endless
    BOOST_TEST(is(ec, errc::file_too_large), ec.message());
    BOOST_TEST(got.empty());
}

BOOST_AUTO_TEST_CASE(read_file_closes_its_descriptor) {
    touch(path / "f");
    int probe = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    BOOST_TEST_REQUIRE(probe >= 0);
    ::close(probe);
    std::string got;
    for (int i = 0; i < 10; ++i) {
        BOOST_TEST(!oomwatch::detail::read_file(path / "f", got));
        BOOST_TEST(oomwatch::detail::read_file(path / "missing", got));
    }
    // The lowest free descriptor is the same again: nothing leaked.
    int again = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    BOOST_TEST(again == probe);
    ::close(again);
}

BOOST_AUTO_TEST_CASE(stat_path_results) {
    struct stat st {};
    BOOST_TEST(!oomwatch::detail::stat_path(path, st));
    BOOST_TEST(S_ISDIR(st.st_mode));
    auto ec = oomwatch::detail::stat_path(path / "missing", st);
    BOOST_TEST(is(ec, errc::no_such_file_or_directory), ec.message());
    BOOST_TEST((ec.category() == boost::system::system_category()));
}

namespace {
bool fd_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }
} // namespace

BOOST_AUTO_TEST_CASE(unique_fd_owns) {
    using oomwatch::detail::unique_fd;
    int raw = -1;
    {
        unique_fd a(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        BOOST_TEST_REQUIRE(static_cast<bool>(a));
        raw = a.get();
        unique_fd b(std::move(a));
        BOOST_TEST(!a);  // moved-from owns nothing
        BOOST_TEST(b.get() == raw);
        unique_fd c;
        BOOST_TEST(!c);
        c = std::move(b);
        BOOST_TEST(c.get() == raw);
        BOOST_TEST(fd_open(raw));
    }
    BOOST_TEST(!fd_open(raw));  // closed by the destructor

    unique_fd d(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    int first = d.get();
    d.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    BOOST_TEST((!fd_open(first) || d.get() == first));  // the old one was closed
    int second = d.get();
    d.reset(second);  // resetting to the same descriptor keeps it open
    BOOST_TEST(fd_open(second));
    int released = d.release();
    BOOST_TEST(!d);
    BOOST_TEST(fd_open(released));
    ::close(released);
}

BOOST_AUTO_TEST_SUITE_END()

// ---- this machine -----------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(this_machine, *boost::unit_test::precondition(have_memory_hierarchy()))

BOOST_AUTO_TEST_CASE(find_memory_hierarchy_matches_mountinfo) {
    auto h = require_hierarchy();
    BOOST_TEST(h.mount_point.is_absolute());
    BOOST_TEST(fs::is_directory(h.mount_point));
    bool found = false;
    for (const auto& m : real_mounts()) {
        if (fs::path(m.mount_point) != h.mount_point) continue;
        found = true;
        if (h.version == cgroup_version::v1) {
            BOOST_TEST(m.fs_type == "cgroup");
            BOOST_TEST(oomwatch::has_option(m.super_options, "memory"));
        } else {
            BOOST_TEST(m.fs_type == "cgroup2");
        }
        BOOST_TEST(m.root == h.root);
    }
    BOOST_TEST(found);
}

BOOST_AUTO_TEST_CASE(mount_point_resolves_to_itself) {
    auto h = require_hierarchy();
    if (h.version == cgroup_version::v2) {
        // The v2 root has no memory.events.
        auto r = resolve(h.mount_point);
        BOOST_TEST_REQUIRE(!r.has_value());
        BOOST_TEST(r.error() == make_error_code(h.root == "/" ? error::root_cgroup : error::no_memory_controller),
                   r.error().message());
        return;
    }
    const std::string mp = h.mount_point.string();
    for (const fs::path& spelled : {h.mount_point, fs::path(mp + "/"), fs::path(mp + "/./"), fs::path(mp + "//."),
                                    h.mount_point / "x" / ".."}) {
        BOOST_TEST_CONTEXT(spelled) {
            auto r = resolve(spelled);
            BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
            BOOST_TEST(r->directory == h.mount_point);
            BOOST_TEST(r->version == cgroup_version::v1);
        }
    }
}

BOOST_AUTO_TEST_CASE(own_cgroup_by_hierarchy_path) {
    auto h = require_hierarchy();
    std::string own = own_memory_path(h.version);
    auto rel = fs::path(own).lexically_relative(h.root);
    BOOST_TEST_REQUIRE(!rel.empty(), own << " is not below the mount root " << h.root);
    fs::path expected = (h.mount_point / rel).lexically_normal();
    if (!expected.has_filename()) expected = expected.parent_path();
    if (h.version == cgroup_version::v2 && expected == h.mount_point) return;  // the v2 root is no memory cgroup

    std::vector<fs::path> specs = {own, own + "/", h.mount_point / rel};
    if (own.size() > 1) specs.emplace_back(own.substr(1));  // relative: from the hierarchy's root
    for (const auto& spec : specs) {
        BOOST_TEST_CONTEXT(spec) {
            auto r = resolve(spec);
            BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
            BOOST_TEST(r->directory == expected);
            BOOST_TEST(r->version == h.version);
        }
    }
}

BOOST_AUTO_TEST_CASE(hierarchy_root_by_slash) {
    auto h = require_hierarchy();
    auto r = resolve("/");
    if (h.version == cgroup_version::v2 && h.root == "/") {
        BOOST_TEST_REQUIRE(!r.has_value());
        BOOST_TEST(r.error() == make_error_code(error::root_cgroup), r.error().message());
    } else if (h.root == "/") {
        BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
        BOOST_TEST(r->directory == h.mount_point);
    } else {
        // The hierarchy's root lies outside a sub-tree mount.
        BOOST_TEST_REQUIRE(!r.has_value());
        BOOST_TEST(is(r.error(), errc::no_such_file_or_directory));
    }
}

BOOST_AUTO_TEST_CASE(missing_cgroup_is_enoent) {
    auto h = require_hierarchy();
    const std::string name = "oomwatch-no-such-cgroup-" + std::to_string(::getpid());
    for (const fs::path& spec : {h.mount_point / name, fs::path("/" + name), fs::path(name),
                                 fs::path("/" + name + "/deeper"), fs::path("/../" + name), fs::path("..")}) {
        BOOST_TEST_CONTEXT(spec) {
            auto r = resolve(spec);
            BOOST_TEST_REQUIRE(!r.has_value());
            BOOST_TEST(is(r.error(), errc::no_such_file_or_directory), r.error().message());
        }
    }
    auto empty = resolve(fs::path());
    BOOST_TEST_REQUIRE(!empty.has_value());
    BOOST_TEST(is(empty.error(), errc::no_such_file_or_directory));
}

BOOST_AUTO_TEST_CASE(regular_file_in_cgroup_mount_is_not_a_cgroup) {
    auto h = require_hierarchy();
    // cgroup.procs exists in every cgroup of both versions.
    auto r = resolve(h.mount_point / "cgroup.procs");
    BOOST_TEST_REQUIRE(!r.has_value());
    BOOST_TEST(r.error() == make_error_code(error::not_a_cgroup), r.error().message());
}

BOOST_AUTO_TEST_CASE(other_cgroup_hierarchies_have_no_memory_controller) {
    // Every mounted cgroup hierarchy without the memory controller: v1 ones (cpu, ...)
    // and a cgroup2 one without memory (hybrid's /sys/fs/cgroup/unified).
    auto h = require_hierarchy();
    int checked = 0;
    for (const auto& m : real_mounts()) {
        bool v1_other = m.fs_type == "cgroup" && !oomwatch::has_option(m.super_options, "memory");
        bool v2_other = m.fs_type == "cgroup2" && fs::path(m.mount_point) != h.mount_point;
        if (!v1_other && !v2_other) continue;
        BOOST_TEST_CONTEXT(m.mount_point) {
            auto r = resolve(m.mount_point);
            BOOST_TEST_REQUIRE(!r.has_value());
            BOOST_TEST(r.error() == make_error_code(error::no_memory_controller), r.error().message());
        }
        ++checked;
    }
    if (checked == 0) BOOST_TEST_MESSAGE("no cgroup hierarchy without memory is mounted here");
    // The memory hierarchy itself is accepted (v1) whatever the others say.
    if (h.version == cgroup_version::v1) BOOST_TEST(resolve(h.mount_point).has_value());
}

BOOST_AUTO_TEST_CASE(real_oom_control_parses) {
    auto h = require_hierarchy();
    if (h.version != cgroup_version::v1) {
        BOOST_TEST_MESSAGE("memory is on cgroup v2 here: no memory.oom_control");
        BOOST_TEST(!fs::exists(h.mount_point / "memory.oom_control"));
        return;
    }
    auto r = oomwatch::parse_oom_control(slurp(h.mount_point / "memory.oom_control"));
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST(r->oom_kill.has_value());  // kernel 4.13 and later
}

BOOST_AUTO_TEST_CASE(memory_cgroup_of_self) {
    auto h = require_hierarchy();
    auto r = cgroup_of(::getpid());
    std::string own = own_memory_path(h.version);
    if (h.version == cgroup_version::v2 && own == h.root) {
        BOOST_TEST_REQUIRE(!r.has_value());  // in the v2 root, which is no memory cgroup
        if (own == "/") BOOST_TEST(r.error() == make_error_code(error::root_cgroup), r.error().message());
        return;
    }
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    fs::path expected = (h.mount_point / fs::path(own).lexically_relative(h.root)).lexically_normal();
    if (!expected.has_filename()) expected = expected.parent_path();
    BOOST_TEST(r->directory == expected);
    BOOST_TEST(r->version == h.version);
    // Same answer as resolving the path /proc/self/cgroup shows.
    auto by_path = resolve(own);
    BOOST_TEST_REQUIRE(by_path.has_value(), by_path.error().message());
    BOOST_TEST(by_path->directory == r->directory);
}

BOOST_AUTO_TEST_CASE(throwing_forms_agree_and_name_the_path) {
    auto h = require_hierarchy();
    auto thrown_h = oomwatch::find_memory_hierarchy();
    BOOST_TEST(thrown_h.mount_point == h.mount_point);
    BOOST_TEST(thrown_h.root == h.root);
    BOOST_TEST(thrown_h.version == h.version);

    // Success: the same answer as the error_code form.
    auto own = cgroup_of(::getpid());
    if (own) {
        BOOST_TEST(oomwatch::memory_cgroup_of(::getpid()).directory == own->directory);
        BOOST_TEST(oomwatch::resolve_cgroup(own->directory).directory == own->directory);
    }

    // Failure: cgroup_error with the code, naming the path as given.
    const fs::path missing = h.mount_point / ("oomwatch-no-such-cgroup-" + std::to_string(::getpid()));
    for (const fs::path& spec : {missing, fs::path(missing.string() + "/"), missing.filename()}) {
        BOOST_TEST_CONTEXT(spec) {
            try {
                oomwatch::resolve_cgroup(spec);
                BOOST_ERROR("no exception");
            } catch (const oomwatch::cgroup_error& e) {
                BOOST_TEST(is(e.code(), errc::no_such_file_or_directory), e.what());
                BOOST_TEST(e.path() == spec);
                BOOST_TEST(std::string(e.what()).find(spec.string()) != std::string::npos, e.what());
            }
        }
    }
    try {
        oomwatch::resolve_cgroup(h.mount_point / "cgroup.procs");
        BOOST_ERROR("no exception");
    } catch (const oomwatch::cgroup_error& e) {
        BOOST_TEST(e.code() == make_error_code(error::not_a_cgroup), e.what());
    }

    long pid_max = 0;
    std::istringstream(slurp("/proc/sys/kernel/pid_max")) >> pid_max;
    BOOST_TEST_REQUIRE(pid_max > 0);
    const auto gone = static_cast<pid_t>(pid_max + 1);
    try {
        oomwatch::memory_cgroup_of(gone);
        BOOST_ERROR("no exception");
    } catch (const oomwatch::cgroup_error& e) {
        BOOST_TEST(is(e.code(), errc::no_such_process), e.what());
        BOOST_TEST(e.path() == fs::path("/proc/" + std::to_string(gone) + "/cgroup"));
    }
}

BOOST_AUTO_TEST_CASE(memory_cgroup_of_missing_process) {
    // Above pid_max no process can exist.
    long pid_max = 0;
    std::istringstream(slurp("/proc/sys/kernel/pid_max")) >> pid_max;
    BOOST_TEST_REQUIRE(pid_max > 0);
    for (pid_t pid : {static_cast<pid_t>(pid_max + 1), pid_t{0}, pid_t{-1}}) {
        BOOST_TEST_CONTEXT("pid " << pid) {
            auto r = cgroup_of(pid);
            BOOST_TEST_REQUIRE(!r.has_value());
            BOOST_TEST(is(r.error(), errc::no_such_process), r.error().message());
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE_END()
