// Shared by the fuzz targets: the invariant check, and small reference parsers written
// from the grammars that src/detail/parse.hpp documents. The targets compare the
// library's parsers with these (differential fuzzing) besides checking round trips, so
// a parser that accepts or rejects the wrong input fails, not only one that crashes.
//
// The references are deliberately naive (character loops, no from_chars, no shared
// helpers with src/parse.cpp) so that a bug in one is unlikely to hide in the other.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// An invariant that does not hold is a finding: abort so libFuzzer saves the input.
#define FUZZ_CHECK(cond)                                                                            \
    do {                                                                                            \
        if (!(cond)) {                                                                              \
            std::fprintf(stderr, "fuzz: invariant violated: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            std::abort();                                                                           \
        }                                                                                           \
    } while (0)

// Runs `body`; any exception escaping it is a finding (the parsers report errors as
// values and must never throw on any input).
#define FUZZ_NO_THROW(body)                                                                         \
    do {                                                                                            \
        try {                                                                                       \
            body;                                                                                   \
        } catch (const std::exception& e) {                                                         \
            std::fprintf(stderr, "fuzz: exception escaped (%s:%d): %s\n", __FILE__, __LINE__, e.what()); \
            std::abort();                                                                           \
        } catch (...) {                                                                             \
            std::fprintf(stderr, "fuzz: unknown exception escaped (%s:%d)\n", __FILE__, __LINE__);    \
            std::abort();                                                                           \
        }                                                                                           \
    } while (0)

namespace fuzz {

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) noexcept {
    // No copy: libFuzzer's buffer is exactly `size` bytes, so ASan sees any read past the end.
    return {reinterpret_cast<const char*>(data), size};
}

// Lines as parse.hpp defines them: split at '\n'; a final '\n' ends the last line and
// does not start an empty one; empty text has no lines.
inline std::vector<std::string_view> ref_lines(std::string_view text) {
    std::vector<std::string_view> lines;
    std::size_t start = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\n') {
            lines.push_back(text.substr(start, i - start));
            start = i + 1;
        }
    }
    if (start < text.size()) lines.push_back(text.substr(start));
    return lines;
}

// Decimal digits only, at least one, no sign, no overflow of T.
template <class T>
std::optional<T> ref_decimal(std::string_view s) {
    if (s.empty()) return std::nullopt;
    T v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return std::nullopt;
        T d = static_cast<T>(c - '0');
        if (v > (std::numeric_limits<T>::max() - d) / 10) return std::nullopt;
        v = static_cast<T>(v * 10 + d);
    }
    return v;
}

// Flat keyed files (memory.events, memory.oom_control): each line is blank (only ' '
// and '\t') or exactly two fields separated by runs of ' '/'\t': a key of printable
// ASCII without blanks (0x21..0x7e) and a decimal uint64. Keys are unique; at least one
// pair. Returns the pairs in file order, or nullopt for malformed text.
using pairs = std::vector<std::pair<std::string, std::uint64_t>>;

inline std::optional<pairs> ref_flat_keyed(std::string_view text) {
    pairs out;
    for (std::string_view line : ref_lines(text)) {
        std::vector<std::string_view> fields;
        std::size_t i = 0;
        while (i < line.size()) {
            if (line[i] == ' ' || line[i] == '\t') {
                ++i;
                continue;
            }
            std::size_t j = i;
            while (j < line.size() && line[j] != ' ' && line[j] != '\t') ++j;
            fields.push_back(line.substr(i, j - i));
            i = j;
        }
        if (fields.empty()) continue;
        if (fields.size() != 2) return std::nullopt;
        for (char c : fields[0]) {
            auto u = static_cast<unsigned char>(c);
            if (u < 0x21 || u > 0x7e) return std::nullopt;
        }
        auto v = ref_decimal<std::uint64_t>(fields[1]);
        if (!v) return std::nullopt;
        for (const auto& [k, old] : out) {
            if (k == fields[0]) return std::nullopt;
        }
        out.emplace_back(std::string(fields[0]), *v);
    }
    if (out.empty()) return std::nullopt;
    return out;
}

// A cheap deterministic hash of the input, to derive choices (predicates, kinds) from it.
inline std::uint64_t fnv1a(std::string_view s, std::uint64_t h = 1469598103934665603ULL) noexcept {
    for (char c : s) {
        h ^= static_cast<unsigned char>(c);
        h *= 1099511628211ULL;
    }
    return h;
}

} // namespace fuzz
