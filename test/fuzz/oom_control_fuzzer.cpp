// libFuzzer target: parse_oom_control (cgroup v1 memory.oom_control).
//
// Invariants checked on every input:
// - it never throws; a failure is error::malformed_counters;
// - it succeeds exactly when the text is a valid flat keyed file (reference parser in
//   fuzz_common.hpp) holding oom_kill_disable and under_oom, each 0 or 1; the values
//   match, oom_kill present exactly when the key is;
// - it agrees with parse_memory_events, which reads the same line format: whenever
//   parse_oom_control succeeds so does parse_memory_events, with the same oom_kill;
// - re-serialised in the kernel's layout (and in reverse order) it parses back equal.
#include "detail/parse.hpp"
#include "fuzz_common.hpp"

#include <oomwatch/error.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace {

bool same_control(const oomwatch::oom_control& a, const oomwatch::oom_control& b) {
    return a.oom_kill_disable == b.oom_kill_disable && a.under_oom == b.under_oom && a.oom_kill == b.oom_kill;
}

void check_same(std::string_view text, const oomwatch::oom_control& expected) {
    auto r = oomwatch::parse_oom_control(text);
    FUZZ_CHECK(r.has_value());
    FUZZ_CHECK(same_control(*r, expected));
}

void run(std::string_view text) {
    auto r = oomwatch::parse_oom_control(text);
    if (!r) FUZZ_CHECK(r.error() == make_error_code(oomwatch::error::malformed_counters));

    // What the documented grammar says.
    auto ref = fuzz::ref_flat_keyed(text);
    std::optional<std::uint64_t> disable, under, kills;
    if (ref) {
        for (const auto& [k, v] : *ref) {
            if (k == "oom_kill_disable") disable = v;
            else if (k == "under_oom") under = v;
            else if (k == "oom_kill") kills = v;
        }
    }
    bool valid = ref && disable && under && *disable <= 1 && *under <= 1;
    FUZZ_CHECK(r.has_value() == valid);

    // The same line format as memory.events: the two parsers agree on it.
    auto events = oomwatch::parse_memory_events(text);
    FUZZ_CHECK(events.has_value() == ref.has_value());

    if (!r) return;
    FUZZ_CHECK(r->oom_kill_disable == (*disable == 1));
    FUZZ_CHECK(r->under_oom == (*under == 1));
    FUZZ_CHECK(r->oom_kill == kills);
    FUZZ_CHECK(events->oom_kill == r->oom_kill.value_or(0));

    // The kernel's layout.
    std::string kernel = "oom_kill_disable " + std::to_string(int(r->oom_kill_disable)) + "\nunder_oom " +
                         std::to_string(int(r->under_oom)) + "\n";
    if (r->oom_kill) kernel += "oom_kill " + std::to_string(*r->oom_kill) + "\n";
    check_same(kernel, *r);

    // Reverse order, an unknown key (ignored), no final newline.
    std::string reversed;
    if (r->oom_kill) reversed += "oom_kill\t" + std::to_string(*r->oom_kill) + "\n";
    reversed += "some_future_key 7\nunder_oom " + std::to_string(int(r->under_oom)) + "\n  oom_kill_disable " +
                std::to_string(int(r->oom_kill_disable));
    check_same(reversed, *r);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FUZZ_NO_THROW(run(fuzz::as_text(data, size)));
    return 0;
}
