// Root-side helper of the `unprivileged` test (run-unprivileged.sh runs it as root):
//
//   oomwatch_unprivileged_helper setup UID
//       Creates a scratch memory cgroup (under this process's own memory cgroup, see
//       scratch_cgroup.hpp) with three children, each with a 32 MiB limit:
//         owned   cgroup.event_control chowned to UID (v1), so UID may register for OOM
//                 notifications there;
//         plain   left as the kernel made it (root's cgroup.event_control is 0200);
//         locked  the directory chmod 0700: UID cannot even look inside.
//       Leaves them in place (the script removes them) and prints, one a line:
//         OOMWATCH_UNPRIV_VERSION=1|2
//         OOMWATCH_UNPRIV_MOUNT=<the hierarchy's mount point>
//         OOMWATCH_UNPRIV_PARENT=<dir>  OOMWATCH_UNPRIV_OWNED=<dir>
//         OOMWATCH_UNPRIV_PLAIN=<dir>   OOMWATCH_UNPRIV_LOCKED=<dir>
//       Exit status 77 when there is no memory cgroup hierarchy (the caller decides
//       whether that is a skip), 1 on any other failure (and nothing is left behind).
//
//   oomwatch_unprivileged_helper oom DIR N
//       Runs N victims (256 MiB each) in DIR one after the other; each must be killed by
//       the OOM killer. Prints the kernel's oom_kill counter of DIR afterwards.
#include "detail/parse.hpp"
#include "scratch/scratch_cgroup.hpp"

#include <oomwatch/cgroup.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

using namespace oomwatch;
namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t limit = 32u << 20;
constexpr std::size_t hog = 256u << 20;

int fail(const std::string& what) {
    std::cerr << "oomwatch_unprivileged_helper: " << what << "\n";
    return 1;
}

std::optional<std::uint64_t> kernel_oom_kill(const fs::path& dir, cgroup_version v) {
    std::ifstream in(dir / (v == cgroup_version::v1 ? "memory.oom_control" : "memory.events"));
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) return std::nullopt;
    if (v == cgroup_version::v1) {
        auto oc = parse_oom_control(text);
        if (!oc || !oc->oom_kill) return std::nullopt;
        return *oc->oom_kill;
    }
    auto c = parse_memory_events(text);
    if (!c) return std::nullopt;
    return c->oom_kill;
}

int setup(uid_t uid) {
    boost::system::error_code ec;
    auto h = find_memory_hierarchy(ec);
    if (ec) {
        std::cerr << "oomwatch_unprivileged_helper: no memory cgroup hierarchy: " << ec.message() << "\n";
        return 77;
    }
    auto parent = scratch::scratch_cgroup::create("oomwatch-unpriv", 0);
    if (!parent) return fail("cannot create a scratch cgroup: " + parent.error().message());
    auto owned = parent->create_child("owned", limit);
    if (!owned) return fail("cannot create " + (parent->path() / "owned").string() + ": " + owned.error().message());
    auto plain = parent->create_child("plain", limit);
    if (!plain) return fail("cannot create " + (parent->path() / "plain").string() + ": " + plain.error().message());
    auto locked = parent->create_child("locked", limit);
    if (!locked) return fail("cannot create " + (parent->path() / "locked").string() + ": " + locked.error().message());

    if (parent->version() == cgroup_version::v1) {
        auto ctl = owned->path() / "cgroup.event_control";
        if (::chown(ctl.c_str(), uid, static_cast<gid_t>(uid)) != 0)
            return fail("chown " + ctl.string() + ": " + std::strerror(errno));
    }
    if (::chmod(locked->path().c_str(), 0700) != 0)
        return fail("chmod 0700 " + locked->path().string() + ": " + std::strerror(errno));

    std::cout << "OOMWATCH_UNPRIV_VERSION=" << static_cast<int>(parent->version()) << "\n"
              << "OOMWATCH_UNPRIV_MOUNT=" << h.mount_point.string() << "\n"
              << "OOMWATCH_UNPRIV_PARENT=" << parent->path().string() << "\n"
              << "OOMWATCH_UNPRIV_OWNED=" << owned->path().string() << "\n"
              << "OOMWATCH_UNPRIV_PLAIN=" << plain->path().string() << "\n"
              << "OOMWATCH_UNPRIV_LOCKED=" << locked->path().string() << std::endl;
    if (!std::cout) return fail("cannot print the paths");
    // From here on the script owns them (and removes them in its trap).
    locked->release();
    plain->release();
    owned->release();
    parent->release();
    return 0;
}

int oom(const fs::path& dir, int n) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) return fail(dir.string() + ": " + std::strerror(errno));
    boost::system::error_code ec;
    auto loc = resolve_cgroup(dir, ec);
    if (ec) return fail(dir.string() + ": " + ec.message());
    for (int i = 0; i < n; ++i) {
        auto v = scratch::victim::spawn(dir, hog);
        if (!v) return fail("cannot start a victim in " + dir.string() + ": " + v.error().message());
        auto status = v->wait(std::chrono::seconds(20));
        if (!status) return fail("victim " + std::to_string(i) + " did not die: " + status.error().message());
        if (!scratch::victim::killed_by_sigkill(*status))
            return fail("victim " + std::to_string(i) + " was not OOM-killed (status " + std::to_string(*status) + ")");
    }
    auto k = kernel_oom_kill(dir, loc.version);
    if (!k) return fail("cannot read the oom_kill counter of " + dir.string());
    std::cout << *k << std::endl;
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (::geteuid() != 0) return fail("must run as root");
    if (args.size() == 2 && args[0] == "setup") return setup(static_cast<uid_t>(std::stoul(args[1])));
    if (args.size() == 3 && args[0] == "oom") return oom(args[1], std::stoi(args[2]));
    std::cerr << "usage: oomwatch_unprivileged_helper setup UID | oom DIR N\n";
    return 2;
}
