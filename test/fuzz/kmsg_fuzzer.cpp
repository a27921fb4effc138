// Fuzzes the kernel log parsers (src/detail/kmsg_parse.hpp): parse_kmsg_record against a
// naive reference written from the dev-kmsg grammar, a record written back in the
// kernel's format (its \xHH escaping) parses back to the same record,
// split_kmsg_records covers its input, and every OOM line parse_oom_line returns,
// written back in the kernel's format for its kind, parses back to the same value.
// The input is tried as one record, as a stream of records, and as a message.
#include "detail/kmsg_parse.hpp"
#include "fuzz_common.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace {

using namespace oomwatch;

// ---- reference record parser: character loops, no shared helpers ---------------------------

std::string ref_decode(std::string_view s) {
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    std::string out;
    std::size_t i = 0;
    while (i < s.size()) {
        if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] == 'x' && hex(s[i + 2]) >= 0 && hex(s[i + 3]) >= 0) {
            out.push_back(static_cast<char>(hex(s[i + 2]) * 16 + hex(s[i + 3])));
            i += 4;
        } else {
            out.push_back(s[i]);
            i += 1;
        }
    }
    return out;
}

std::optional<kmsg_record> ref_record(std::string_view text) {
    std::vector<std::string_view> lines = fuzz::ref_lines(text);
    if (lines.empty()) return std::nullopt;
    std::string_view first = lines[0];
    std::size_t semi = 0;
    while (semi < first.size() && first[semi] != ';') ++semi;
    if (semi == first.size()) return std::nullopt;
    std::vector<std::string_view> fields;
    {
        std::size_t start = 0;
        for (std::size_t i = 0; i <= semi; ++i) {
            if (i == semi || first[i] == ',') {
                fields.push_back(first.substr(start, i - start));
                start = i + 1;
            }
        }
    }
    if (fields.size() < 4) return std::nullopt;
    kmsg_record r;
    auto prio = fuzz::ref_decimal<unsigned>(fields[0]);
    auto seq = fuzz::ref_decimal<std::uint64_t>(fields[1]);
    auto ts = fuzz::ref_decimal<std::uint64_t>(fields[2]);
    if (!prio || !seq || !ts) return std::nullopt;
    if (fields[3] != "-" && fields[3] != "c" && fields[3] != "+") return std::nullopt;
    r.facility = *prio / 8;
    r.level = *prio % 8;
    r.seq = *seq;
    r.ts_usec = *ts;
    r.flag = fields[3][0];
    for (std::size_t i = 4; i < fields.size(); ++i) {
        if (fields[i].substr(0, 7) == "caller=") r.caller = std::string(fields[i].substr(7));
    }
    r.message = ref_decode(first.substr(semi + 1));
    for (std::size_t l = 1; l < lines.size(); ++l) {
        std::string_view d = lines[l];
        if (d.empty() || d[0] != ' ') return std::nullopt;
        std::size_t eq = 1;
        while (eq < d.size() && d[eq] != '=') ++eq;
        if (eq == d.size() || eq == 1) return std::nullopt;
        r.dict.emplace_back(ref_decode(d.substr(1, eq - 1)), ref_decode(d.substr(eq + 1)));
    }
    return r;
}

// ---- writing back in the kernel's format ---------------------------------------------------

// printk.c: bytes below ' ', from 0x7f, and '\' as \xHH (lower case). '=' too in a
// dictionary key, which the kernel never has, so that the key comes back whole.
std::string escape(std::string_view s, bool key = false) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        if (c < ' ' || c >= 0x7f || c == '\\' || (key && c == '=')) {
            out += "\\x";
            out.push_back(digits[c >> 4]);
            out.push_back(digits[c & 15]);
        } else {
            out.push_back(ch);
        }
    }
    return out;
}

std::string write_record(const kmsg_record& r) {
    std::string s = std::to_string(r.facility * 8 + r.level) + "," + std::to_string(r.seq) + "," +
                    std::to_string(r.ts_usec) + "," + r.flag;
    if (!r.caller.empty()) s += ",caller=" + r.caller;
    s += ";" + escape(r.message) + "\n";
    for (const auto& [k, v] : r.dict) s += " " + escape(k, true) + "=" + escape(v) + "\n";
    return s;
}

std::string kb(std::uint64_t bytes) { return std::to_string(bytes / 1024) + "kB"; }

struct writer {
    std::string operator()(const oom_invoked_line& l) const {
        std::string s = l.comm + " invoked oom-killer: gfp_mask=0x" + hex(l.gfp_mask);
        if (!l.gfp_flags.empty()) s += "(" + l.gfp_flags + ")";
        if (l.nodemask) s += ", nodemask=" + *l.nodemask;
        return s + ", order=" + std::to_string(l.order) + ", oom_score_adj=" + std::to_string(l.oom_score_adj);
    }
    std::string operator()(const oom_summary_line& l) const {
        std::string s = "oom-kill:constraint=" + l.constraint_text + ",nodemask=" + l.nodemask;
        if (l.cpuset) s += ",cpuset=" + *l.cpuset + ",mems_allowed=" + l.mems_allowed.value_or("");
        if (l.global_oom) s += ",global_oom";
        if (l.oom_memcg) s += ",oom_memcg=" + *l.oom_memcg;
        if (l.task_memcg) s += ",task_memcg=" + *l.task_memcg;
        return s + ",task=" + l.task + ",pid=" + std::to_string(l.pid) + ",uid=" +
               std::to_string(static_cast<int>(l.uid));
    }
    std::string operator()(const memcg_oom_info_line& l) const {
        if (!l.task_memcg) return "Memory limit reached of cgroup " + l.oom_memcg;
        return "Task in " + *l.task_memcg + " killed as a result of limit of " + l.oom_memcg;
    }
    std::string operator()(const kill_choice_line& l) const {
        return l.reason + ": Kill process " + std::to_string(l.pid) + " (" + l.comm + ") score " +
               std::to_string(l.score) + " or sacrifice child";
    }
    std::string operator()(const killed_process_line& l) const {
        std::string s = l.reason.empty() ? "" : l.reason + ": ";
        s += "Killed process " + std::to_string(l.pid) + " (" + l.comm + ") total-vm:" + kb(l.total_vm) +
             ", anon-rss:" + kb(l.anon_rss) + ", file-rss:" + kb(l.file_rss);
        if (l.shmem_rss) s += ", shmem-rss:" + kb(*l.shmem_rss);
        if (l.uid) s += ", UID:" + std::to_string(*l.uid);
        if (l.pgtables) s += " pgtables:" + kb(*l.pgtables);
        if (l.oom_score_adj) s += " oom_score_adj:" + std::to_string(*l.oom_score_adj);
        return s;
    }
    std::string operator()(const oom_group_line& l) const {
        return "Tasks in " + l.cgroup + " are going to be killed due to memory.oom.group set";
    }
    std::string operator()(const victim_exiting_line& l) const {
        std::string s = l.reason.empty() ? "" : l.reason + ": ";
        return s + "OOM victim " + std::to_string(l.pid) + " (" + l.comm + ") is already exiting. Skip killing the task";
    }
    std::string operator()(const oom_reaped_line& l) const {
        return "oom_reaper: reaped process " + std::to_string(l.pid) + " (" + l.comm + "), now anon-rss:" +
               kb(l.anon_rss) + ", file-rss:" + kb(l.file_rss) + ", shmem-rss:" + kb(l.shmem_rss);
    }
    static std::string hex(std::uint64_t v) {
        static const char digits[] = "0123456789abcdef";
        std::string out;
        do {
            out.insert(out.begin(), digits[v & 15]);
            v >>= 4;
        } while (v != 0);
        return out;
    }
};

void check_oom_line(std::string_view message) {
    std::optional<oom_log_line> line;
    FUZZ_NO_THROW(line = parse_oom_line(message));
    if (!line) return;
    // Sizes are whole kB, in bytes.
    if (auto* k = std::get_if<killed_process_line>(&*line)) {
        FUZZ_CHECK(k->total_vm % 1024 == 0 && k->anon_rss % 1024 == 0 && k->file_rss % 1024 == 0);
        FUZZ_CHECK(k->pid >= 0);
    }
    if (auto* s = std::get_if<oom_summary_line>(&*line)) {
        FUZZ_CHECK(s->pid >= 0);
        FUZZ_CHECK(!(s->global_oom && s->oom_memcg));
        FUZZ_CHECK(s->cpuset.has_value() == s->mems_allowed.has_value());
        FUZZ_CHECK(s->task.size() <= 63);
        FUZZ_CHECK((s->constraint == kmsg_constraint::other) == to_string(s->constraint).empty());
        if (s->constraint != kmsg_constraint::other) FUZZ_CHECK(to_string(s->constraint) == s->constraint_text);
    }
    // Written back in the kernel's format, it parses to the same value (and the same kind).
    std::string again = std::visit(writer{}, *line);
    std::optional<oom_log_line> back;
    FUZZ_NO_THROW(back = parse_oom_line(again));
    FUZZ_CHECK(back.has_value());
    FUZZ_CHECK(back->index() == line->index());
    FUZZ_CHECK(*back == *line);
    // One trailing newline changes nothing.
    if (!message.ends_with('\n')) FUZZ_CHECK(parse_oom_line(std::string(message) + "\n") == line);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text = fuzz::as_text(data, size);

    // One record.
    result<kmsg_record> r = make_error_code(error::malformed_log_record);
    FUZZ_NO_THROW(r = parse_kmsg_record(text));
    auto ref = ref_record(text);
    FUZZ_CHECK(r.has_value() == ref.has_value());
    if (!r) FUZZ_CHECK(r.error() == make_error_code(error::malformed_log_record));
    if (r) {
        FUZZ_CHECK(*r == *ref);
        FUZZ_CHECK(r->level < 8);
        auto back = parse_kmsg_record(write_record(*r));
        FUZZ_CHECK(back.has_value());
        FUZZ_CHECK(*back == *r);
        check_oom_line(r->message);
    }

    // A stream of records: the pieces are in order, do not overlap, and cover the input
    // but for empty lines; each piece ends where the next line starts.
    std::vector<std::string_view> pieces;
    FUZZ_NO_THROW(pieces = split_kmsg_records(text));
    std::size_t at = 0;
    std::size_t covered = 0;
    for (auto piece : pieces) {
        FUZZ_CHECK(!piece.empty());
        auto offset = static_cast<std::size_t>(piece.data() - text.data());
        FUZZ_CHECK(offset >= at && offset + piece.size() <= text.size());
        for (std::size_t i = at; i < offset; ++i) FUZZ_CHECK(text[i] == '\n');  // only empty lines skipped
        FUZZ_CHECK(piece.find("\n\n") == std::string_view::npos);
        for (std::size_t nl = piece.find('\n'); nl != std::string_view::npos && nl + 1 < piece.size();
             nl = piece.find('\n', nl + 1)) {
            FUZZ_CHECK(piece[nl + 1] == ' ');  // only dictionary lines inside a piece
        }
        at = offset + piece.size();
        covered += piece.size();
        auto pr = parse_kmsg_record(piece);
        if (pr) check_oom_line(pr->message);
    }
    for (std::size_t i = at; i < text.size(); ++i) FUZZ_CHECK(text[i] == '\n');
    FUZZ_CHECK(covered <= text.size());

    // The input as a message.
    check_oom_line(text);
    return 0;
}
