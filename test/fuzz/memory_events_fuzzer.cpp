// libFuzzer target: parse_memory_events (cgroup v2 memory.events / memory.events.local)
// and compute_delta on what it returns; parse_vmstat_oom_kill on the same text (the
// same line format).
//
// Invariants checked on every input:
// - it never throws; a failure is error::malformed_counters;
// - it accepts exactly what the documented grammar accepts, with the same values
//   (reference parser in fuzz_common.hpp);
// - re-serialised as "key value\n" lines in the file's order, in another order with
//   zero counters left out, or with other blanks, the counters parse back equal;
//   an extra '\n' changes nothing;
// - parse_vmstat_oom_kill fails only with error::malformed_counters, and reads any
//   valid flat-keyed text, giving its oom_kill value (none without that key);
// - compute_delta(c, c) is empty and never went_backwards; from zero it gives each
//   counter, filtered by the kinds asked for; back to zero went_backwards exactly when a
//   counter was non-zero; one more on one counter gives exactly 1 for that kind.
#include "detail/parse.hpp"
#include "fuzz_common.hpp"

#include <oomwatch/error.hpp>
#include <oomwatch/event.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace {

using oomwatch::event_kind;
using oomwatch::memory_counters;

constexpr std::array<event_kind, 6> counted = {event_kind::oom,  event_kind::oom_kill, event_kind::oom_group_kill,
                                               event_kind::high, event_kind::max,      event_kind::low};

std::uint64_t* field(memory_counters& c, event_kind k) {
    switch (k) {
    case event_kind::oom: return &c.oom;
    case event_kind::oom_kill: return &c.oom_kill;
    case event_kind::oom_group_kill: return &c.oom_group_kill;
    case event_kind::high: return &c.high;
    case event_kind::max: return &c.max;
    case event_kind::low: return &c.low;
    default: break;  // removed, and whatever else has no counter in memory.events
    }
    return nullptr;
}

memory_counters expected_from(const fuzz::pairs& ps) {
    memory_counters c;
    for (const auto& [k, v] : ps) {
        if (auto kind = oomwatch::event_kind_from_string(k); kind && field(c, *kind)) *field(c, *kind) = v;
        else c.other.emplace_back(k, v);
    }
    return c;
}

void check_same(std::string_view text, const memory_counters& expected) {
    auto r = oomwatch::parse_memory_events(text);
    FUZZ_CHECK(r.has_value());
    FUZZ_CHECK(*r == expected);
}

void check_deltas(const memory_counters& c, std::uint64_t seed) {
    using oomwatch::compute_delta;
    using oomwatch::kind_set;

    auto same = compute_delta(c, c, kind_set::all());
    FUZZ_CHECK(!same.went_backwards);
    FUZZ_CHECK(same.empty());

    // The kinds to ask for, derived from the input.
    kind_set kinds;
    for (std::size_t i = 0; i < oomwatch::event_kind_count; ++i) {
        if (seed & (1u << i)) kinds.insert(static_cast<event_kind>(i));
    }
    const memory_counters zero;
    auto up = compute_delta(zero, c, kinds);
    FUZZ_CHECK(!up.went_backwards);
    FUZZ_CHECK(up.get(event_kind::removed) == 0);
    for (auto k : counted) FUZZ_CHECK(up.get(k) == (kinds.contains(k) ? c.get(k) : 0));

    bool any = false;
    for (auto k : counted) any = any || c.get(k) != 0;
    auto down = compute_delta(c, zero, kind_set::all());
    FUZZ_CHECK(down.went_backwards == any);
    if (down.went_backwards) FUZZ_CHECK(down.empty());

    // One more on one counter (chosen by the input) is exactly one event of that kind.
    event_kind k = counted[(seed >> 8) % counted.size()];
    memory_counters next = c;
    if (*field(next, k) != UINT64_MAX) {
        ++*field(next, k);
        auto one = compute_delta(c, next, kind_set::all());
        FUZZ_CHECK(!one.went_backwards);
        for (auto other : counted) FUZZ_CHECK(one.get(other) == (other == k ? 1u : 0u));
        auto back = compute_delta(next, c, kind_set::all());
        FUZZ_CHECK(back.went_backwards);
    }
}

void check_vmstat(std::string_view text, const std::optional<fuzz::pairs>& ref) {
    auto v = oomwatch::parse_vmstat_oom_kill(text);
    if (!v) FUZZ_CHECK(v.error() == make_error_code(oomwatch::error::malformed_counters));
    if (!ref) return;
    FUZZ_CHECK(v.has_value());
    std::optional<std::uint64_t> expected;
    for (const auto& [k, value] : *ref)
        if (k == "oom_kill") expected = value;
    FUZZ_CHECK(*v == expected);
}

void run(std::string_view text) {
    auto r = oomwatch::parse_memory_events(text);
    auto ref = fuzz::ref_flat_keyed(text);
    check_vmstat(text, ref);

    if (!r) FUZZ_CHECK(r.error() == make_error_code(oomwatch::error::malformed_counters));
    FUZZ_CHECK(r.has_value() == ref.has_value());

    // Blank lines are skipped, so a trailing '\n' never changes the outcome.
    std::string more(text);
    more += '\n';
    auto r_more = oomwatch::parse_memory_events(more);
    FUZZ_CHECK(r_more.has_value() == r.has_value());
    if (!r) return;
    FUZZ_CHECK(*r_more == *r);

    const memory_counters& c = *r;
    FUZZ_CHECK(c == expected_from(*ref));
    FUZZ_CHECK(!c.under_oom);  // a v1 field; memory.events never sets it

    // The file's order, canonical spelling.
    std::string same_order;
    for (const auto& [k, v] : *ref) same_order += k + ' ' + std::to_string(v) + '\n';
    check_same(same_order, c);

    // Known keys in reverse order with zero counters left out (missing keys read as 0),
    // then the unknown ones (whose order is kept), odd blanks, no final '\n'.
    std::string reordered;
    for (auto it = counted.rbegin(); it != counted.rend(); ++it) {
        if (c.get(*it) != 0) reordered += std::string(to_string(*it)) + '\t' + std::to_string(c.get(*it)) + '\n';
    }
    for (const auto& [k, v] : c.other) reordered += "\t" + k + "  \t" + std::to_string(v) + " \n\n";
    if (reordered.find_first_not_of(" \t\n") == std::string::npos) reordered = "oom 0";  // all zero: some key must be there
    else if (reordered.back() == '\n') reordered.pop_back();
    check_same(reordered, c);

    check_deltas(c, fuzz::fnv1a(text));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FUZZ_NO_THROW(run(fuzz::as_text(data, size)));
    return 0;
}
