#include "detail/kmsg_parse.hpp"

#include <charconv>
#include <limits>
#include <system_error>

namespace oomwatch {

namespace {

// Decimal digits (and a '-' for signed T), nothing else, no overflow.
template <class T>
bool parse_number(std::string_view s, T& out) noexcept {
    if (s.empty() || s.front() == '+') return false;
    T v{};
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 10);
    if (ec != std::errc{} || end != s.data() + s.size()) return false;
    out = v;
    return true;
}

bool parse_pid(std::string_view s, pid_t& out) noexcept {
    pid_t v = 0;
    if (!parse_number(s, v) || v < 0) return false;
    out = v;
    return true;
}

// A size printed as "%lukB", in bytes.
bool parse_kb(std::string_view s, std::uint64_t& bytes) noexcept {
    if (!s.ends_with("kB")) return false;
    std::uint64_t kb = 0;
    if (!parse_number(s.substr(0, s.size() - 2), kb)) return false;
    if (kb > std::numeric_limits<std::uint64_t>::max() / 1024) return false;
    bytes = kb * 1024;
    return true;
}

int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// A node list as "%*pbl" prints it ("0", "0-1,3"), or "(null)" for no nodemask.
bool is_node_list(std::string_view s) noexcept {
    if (s == "(null)") return true;
    if (s.empty()) return false;
    for (char c : s) {
        if ((c < '0' || c > '9') && c != ',' && c != '-') return false;
    }
    return true;
}

// The node list at the start of s: "(null)", or digits and '-', with a ',' only when a
// digit follows (a ',' before a letter starts the next key). Its length.
std::size_t node_list_length(std::string_view s) noexcept {
    if (s.starts_with("(null)")) return 6;
    std::size_t i = 0;
    while (i < s.size()) {
        char c = s[i];
        if ((c >= '0' && c <= '9') || c == '-') {
            ++i;
        } else if (c == ',' && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '9') {
            ++i;
        } else {
            break;
        }
    }
    return i;
}

// `sub` is `root` or lies below it (cgroup paths, both starting with '/').
bool is_under(std::string_view sub, std::string_view root) noexcept {
    if (root == "/") return true;
    if (!sub.starts_with(root)) return false;
    return sub.size() == root.size() || sub[root.size()] == '/';
}

// Where `key` splits s into two cgroup paths (both starting with '/'), when a name may
// hold `key` itself: the split where the one path lies under the other (the victim's
// cgroup under the one whose limit was hit, as it always does), else the first; npos
// when there is none. `ancestor_first`: the ancestor is the left path.
std::size_t split_paths(std::string_view s, std::string_view key, bool ancestor_first) noexcept {
    auto first = std::string_view::npos;
    for (auto at = s.find(key); at != std::string_view::npos; at = s.find(key, at + 1)) {
        std::string_view left = s.substr(0, at);
        std::string_view right = s.substr(at + key.size());
        if (!left.starts_with('/') || !right.starts_with('/')) continue;
        if (first == std::string_view::npos) first = at;
        if (ancestor_first ? is_under(right, left) : is_under(left, right)) return at;
    }
    return first;
}

// "N (COMM" + terminator, where terminator is the LAST occurrence of `term` in s: the
// text after a comm is the kernel's own, so a comm holding `term` cannot move the split.
// Returns the position just after the terminator, or npos.
std::size_t parse_pid_comm(std::string_view s, std::string_view term, pid_t& pid, std::string& comm) {
    auto open = s.find(" (");
    if (open == std::string_view::npos || !parse_pid(s.substr(0, open), pid)) return std::string_view::npos;
    auto close = s.rfind(term);
    if (close == std::string_view::npos || close < open + 2) return std::string_view::npos;
    comm = std::string(s.substr(open + 2, close - open - 2));
    return close + term.size();
}

// "key:value" fields separated by ' ' (a ',' may end a field): calls on(key, value) for
// each; false when a field is empty, has no ':', or on() refuses it.
template <class F>
bool for_each_colon_field(std::string_view s, F&& on) {
    if (s.empty()) return false;
    for (;;) {
        auto sp = s.find(' ');
        std::string_view field = s.substr(0, sp);
        if (field.ends_with(',')) field.remove_suffix(1);
        auto colon = field.find(':');
        if (colon == std::string_view::npos || colon == 0) return false;
        if (!on(field.substr(0, colon), field.substr(colon + 1))) return false;
        if (sp == std::string_view::npos) return true;
        s.remove_prefix(sp + 1);
    }
}

// A known field: false when it does not parse or was seen before (both malformed).
bool assign_kb(std::optional<std::uint64_t>& slot, std::string_view value) {
    std::uint64_t bytes = 0;
    if (slot || !parse_kb(value, bytes)) return false;
    slot = bytes;
    return true;
}

template <class T, class Stored = T>
bool assign_number(std::optional<Stored>& slot, std::string_view value) {
    T v{};
    if (slot || !parse_number(value, v)) return false;
    slot = static_cast<Stored>(v);
    return true;
}

// The `REASON: ` before a line's phrase found at `at` (none when it starts the line):
// false when what precedes the phrase is not a reason.
bool take_reason(std::string_view line, std::size_t at, std::string& reason) {
    if (at == 0) return true;
    if (at < 3 || line.substr(at - 2, 2) != ": ") return false;
    reason = std::string(line.substr(0, at - 2));
    return true;
}

std::optional<oom_log_line> parse_killed(std::string_view line, std::size_t at) {
    killed_process_line k;
    if (!take_reason(line, at, k.reason)) return std::nullopt;
    std::string_view rest = line.substr(at + std::string_view("Killed process ").size());
    auto tail = parse_pid_comm(rest, ") total-vm:", k.pid, k.comm);
    if (tail == std::string_view::npos) return std::nullopt;
    tail -= std::string_view("total-vm:").size();
    std::optional<std::uint64_t> total_vm, anon, file, shmem, pgtables;
    std::optional<uid_t> uid;
    std::optional<int> adj;
    bool ok = for_each_colon_field(rest.substr(tail), [&](std::string_view key, std::string_view value) {
        if (key == "total-vm") return assign_kb(total_vm, value);
        if (key == "anon-rss") return assign_kb(anon, value);
        if (key == "file-rss") return assign_kb(file, value);
        if (key == "shmem-rss") return assign_kb(shmem, value);
        if (key == "pgtables") return assign_kb(pgtables, value);
        if (key == "UID") return assign_number<uid_t>(uid, value);
        if (key == "oom_score_adj") return assign_number<short, int>(adj, value);  // printed with %hd
        return true;  // a field of a later kernel
    });
    if (!ok || !total_vm || !anon || !file) return std::nullopt;
    k.total_vm = *total_vm;
    k.anon_rss = *anon;
    k.file_rss = *file;
    k.shmem_rss = shmem;
    k.uid = uid;
    k.pgtables = pgtables;
    k.oom_score_adj = adj;
    return k;
}

std::optional<oom_log_line> parse_reaped(std::string_view rest) {
    oom_reaped_line r;
    auto tail = parse_pid_comm(rest, "), now ", r.pid, r.comm);
    if (tail == std::string_view::npos) return std::nullopt;
    std::optional<std::uint64_t> anon, file, shmem;
    bool ok = for_each_colon_field(rest.substr(tail), [&](std::string_view key, std::string_view value) {
        if (key == "anon-rss") return assign_kb(anon, value);
        if (key == "file-rss") return assign_kb(file, value);
        if (key == "shmem-rss") return assign_kb(shmem, value);
        return true;
    });
    if (!ok || !anon || !file || !shmem) return std::nullopt;
    r.anon_rss = *anon;
    r.file_rss = *file;
    r.shmem_rss = *shmem;
    return r;
}

std::optional<oom_log_line> parse_invoked(std::string_view line, std::size_t at) {
    oom_invoked_line v;
    v.comm = std::string(line.substr(0, at));
    std::string_view rest = line.substr(at + std::string_view(" invoked oom-killer: ").size());
    std::optional<std::uint64_t> gfp;
    std::optional<int> order, adj;
    for (;;) {
        auto sep = rest.find(", ");
        std::string_view field = rest.substr(0, sep);
        auto eq = field.find('=');
        if (eq == std::string_view::npos || eq == 0) return std::nullopt;
        std::string_view key = field.substr(0, eq);
        std::string_view value = field.substr(eq + 1);
        if (key == "gfp_mask") {
            if (gfp) return std::nullopt;
            auto paren = value.find('(');
            std::string_view number = value.substr(0, paren);
            if (paren != std::string_view::npos) {
                if (!value.ends_with(')')) return std::nullopt;
                v.gfp_flags = std::string(value.substr(paren + 1, value.size() - paren - 2));
            }
            std::uint64_t mask = 0;
            if (number == "0") {
                mask = 0;
            } else {
                if (!number.starts_with("0x") || number.size() == 2) return std::nullopt;
                number.remove_prefix(2);
                auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), mask, 16);
                if (ec != std::errc{} || end != number.data() + number.size()) return std::nullopt;
            }
            gfp = mask;
        } else if (key == "nodemask") {
            if (v.nodemask || !is_node_list(value)) return std::nullopt;
            v.nodemask = std::string(value);
        } else if (key == "order") {
            if (!assign_number<int>(order, value)) return std::nullopt;
        } else if (key == "oom_score_adj") {
            if (!assign_number<int>(adj, value)) return std::nullopt;
        }
        if (sep == std::string_view::npos) break;
        rest.remove_prefix(sep + 2);
    }
    if (!gfp || !order || !adj) return std::nullopt;
    v.gfp_mask = *gfp;
    v.order = *order;
    v.oom_score_adj = *adj;
    return v;
}

kmsg_constraint constraint_of(std::string_view text) noexcept {
    for (auto c : {kmsg_constraint::none, kmsg_constraint::cpuset, kmsg_constraint::memory_policy,
                   kmsg_constraint::memcg}) {
        if (text == to_string(c)) return c;
    }
    return kmsg_constraint::other;
}

std::optional<oom_log_line> parse_summary(std::string_view line) {
    constexpr std::string_view head = "oom-kill:constraint=";
    oom_summary_line s;

    // From the right: uid, pid, then the comm, which may hold anything (commas too).
    auto uid_at = line.rfind(",uid=");
    if (uid_at == std::string_view::npos) return std::nullopt;
    int uid = 0;  // printed with %d
    if (!parse_number(line.substr(uid_at + 5), uid)) return std::nullopt;
    s.uid = static_cast<uid_t>(uid);
    auto pid_at = line.substr(0, uid_at).rfind(",pid=");
    if (pid_at == std::string_view::npos || !parse_pid(line.substr(pid_at + 5, uid_at - pid_at - 5), s.pid))
        return std::nullopt;
    // The comm is at most 15 bytes (TASK_COMM_LEN), maybe 63 in later kernels: the first
    // ",task=" that close to ",pid=" starts it, even when the comm holds ",task=" itself.
    std::string_view before_pid = line.substr(0, pid_at);
    auto task_at = std::string_view::npos;
    for (std::size_t longest : {15u, 63u}) {
        std::size_t from = pid_at > longest + 6 ? pid_at - longest - 6 : 0;
        task_at = before_pid.find(",task=", from);
        if (task_at != std::string_view::npos) break;
    }
    if (task_at == std::string_view::npos) return std::nullopt;
    s.task = std::string(before_pid.substr(task_at + 6));

    // From the left: the constraint and the nodemask, both the kernel's own text.
    if (!line.starts_with(head) || task_at < head.size()) return std::nullopt;
    std::string_view rest = line.substr(head.size(), task_at - head.size());
    auto comma = rest.find(',');
    if (comma == std::string_view::npos || comma == 0) return std::nullopt;
    s.constraint_text = std::string(rest.substr(0, comma));
    s.constraint = constraint_of(s.constraint_text);
    rest.remove_prefix(comma);
    if (!rest.starts_with(",nodemask=")) return std::nullopt;
    rest.remove_prefix(10);
    auto n = node_list_length(rest);
    if (n == 0) return std::nullopt;
    s.nodemask = std::string(rest.substr(0, n));
    rest.remove_prefix(n);

    // Then what the cpuset and memcg controllers add, each part optional.
    if (rest.starts_with(",cpuset=")) {
        auto mems = rest.find(",mems_allowed=");
        if (mems == std::string_view::npos) return std::nullopt;
        s.cpuset = std::string(rest.substr(8, mems - 8));
        rest.remove_prefix(mems + 14);
        n = node_list_length(rest);
        if (n == 0) return std::nullopt;
        s.mems_allowed = std::string(rest.substr(0, n));
        rest.remove_prefix(n);
    }
    if (rest.starts_with(",global_oom")) {
        s.global_oom = true;
        rest.remove_prefix(11);
        if (rest.starts_with(",task_memcg=")) {
            rest.remove_prefix(12);
            if (!rest.starts_with('/')) return std::nullopt;
            s.task_memcg = std::string(rest);
            rest = {};
        }
    } else if (rest.starts_with(",oom_memcg=")) {
        rest.remove_prefix(11);
        constexpr std::string_view key = ",task_memcg=";
        auto split = split_paths(rest, key, true);
        if (split == std::string_view::npos) {
            s.oom_memcg = std::string(rest);
        } else {
            s.oom_memcg = std::string(rest.substr(0, split));
            s.task_memcg = std::string(rest.substr(split + key.size()));
        }
        if (!s.oom_memcg->starts_with('/')) return std::nullopt;
        rest = {};
    }
    if (!rest.empty()) return std::nullopt;
    return s;
}

std::optional<oom_log_line> parse_memcg_info(std::string_view line) {
    memcg_oom_info_line m;
    if (line.starts_with("Memory limit reached of cgroup ")) {
        m.oom_memcg = std::string(line.substr(31));
        if (!m.oom_memcg.starts_with('/')) return std::nullopt;
        return m;
    }
    std::string_view rest = line.substr(std::string_view("Task in ").size());
    constexpr std::string_view key = " killed as a result of limit of ";
    auto split = split_paths(rest, key, false);
    if (split == std::string_view::npos) return std::nullopt;
    m.task_memcg = std::string(rest.substr(0, split));
    m.oom_memcg = std::string(rest.substr(split + key.size()));
    return m;
}

std::optional<oom_log_line> parse_kill_choice(std::string_view line, std::size_t at) {
    kill_choice_line k;
    k.reason = std::string(line.substr(0, at));
    std::string_view rest = line.substr(at + std::string_view(": Kill process ").size());
    constexpr std::string_view suffix = " or sacrifice child";
    if (!rest.ends_with(suffix)) return std::nullopt;
    rest.remove_suffix(suffix.size());
    auto tail = parse_pid_comm(rest, ") score ", k.pid, k.comm);
    if (tail == std::string_view::npos || !parse_number(rest.substr(tail), k.score)) return std::nullopt;
    return k;
}

std::optional<oom_log_line> parse_victim_exiting(std::string_view line, std::size_t at) {
    victim_exiting_line v;
    if (!take_reason(line, at, v.reason)) return std::nullopt;
    std::string_view rest = line.substr(at + std::string_view("OOM victim ").size());
    constexpr std::string_view term = ") is already exiting. Skip killing the task";
    auto end = parse_pid_comm(rest, term, v.pid, v.comm);
    if (end != rest.size()) return std::nullopt;
    return v;
}

} // namespace

std::string decode_kmsg_escapes(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\\' && i + 3 < text.size() && text[i + 1] == 'x') {
            int hi = hex_value(text[i + 2]);
            int lo = hex_value(text[i + 3]);
            if (hi >= 0 && lo >= 0) {
                out.push_back(static_cast<char>(static_cast<unsigned char>(hi * 16 + lo)));
                i += 3;
                continue;
            }
        }
        out.push_back(text[i]);
    }
    return out;
}

result<kmsg_record> parse_kmsg_record(std::string_view text) {
    const auto malformed = make_error_code(error::malformed_log_record);
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    std::string_view rest = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);

    auto semi = line.find(';');
    if (semi == std::string_view::npos) return malformed;
    std::string_view header = line.substr(0, semi);
    kmsg_record r;
    for (std::size_t field = 0;; ++field) {
        auto comma = header.find(',');
        std::string_view value = header.substr(0, comma);
        bool ok = true;
        switch (field) {
        case 0: {
            unsigned prio = 0;
            ok = parse_number(value, prio);
            r.facility = prio >> 3;
            r.level = prio & 7;
            break;
        }
        case 1: ok = parse_number(value, r.seq); break;
        case 2: ok = parse_number(value, r.ts_usec); break;
        case 3:
            ok = value.size() == 1 && (value[0] == '-' || value[0] == 'c' || value[0] == '+');
            if (ok) r.flag = value[0];
            break;
        default:
            if (value.starts_with("caller=")) r.caller = std::string(value.substr(7));
            break;
        }
        if (!ok) return malformed;
        if (comma == std::string_view::npos) {
            if (field < 3) return malformed;
            break;
        }
        header.remove_prefix(comma + 1);
    }
    r.message = decode_kmsg_escapes(line.substr(semi + 1));

    while (!rest.empty()) {
        nl = rest.find('\n');
        std::string_view dict_line = rest.substr(0, nl);
        rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
        if (!dict_line.starts_with(' ')) return malformed;
        dict_line.remove_prefix(1);
        auto eq = dict_line.find('=');
        if (eq == std::string_view::npos || eq == 0) return malformed;
        r.dict.emplace_back(decode_kmsg_escapes(dict_line.substr(0, eq)), decode_kmsg_escapes(dict_line.substr(eq + 1)));
    }
    return r;
}

std::vector<std::string_view> split_kmsg_records(std::string_view stream) {
    std::vector<std::string_view> records;
    std::size_t start = std::string_view::npos;  // of the record being gathered
    std::size_t i = 0;
    while (i < stream.size()) {
        auto nl = stream.find('\n', i);
        std::size_t end = nl == std::string_view::npos ? stream.size() : nl + 1;
        bool empty = end - i == 1 && stream[i] == '\n';
        bool continues = stream[i] == ' ' && start != std::string_view::npos;
        if (!continues && start != std::string_view::npos) {
            records.push_back(stream.substr(start, i - start));
            start = std::string_view::npos;
        }
        if (!empty && start == std::string_view::npos) start = i;
        i = end;
    }
    if (start != std::string_view::npos) records.push_back(stream.substr(start));
    return records;
}

std::string_view to_string(kmsg_constraint c) noexcept {
    switch (c) {
    case kmsg_constraint::none: return "CONSTRAINT_NONE";
    case kmsg_constraint::cpuset: return "CONSTRAINT_CPUSET";
    case kmsg_constraint::memory_policy: return "CONSTRAINT_MEMORY_POLICY";
    case kmsg_constraint::memcg: return "CONSTRAINT_MEMCG";
    case kmsg_constraint::other: return "";
    }
    return "";
}

std::optional<oom_log_line> parse_oom_line(std::string_view message) {
    if (message.ends_with('\n')) message.remove_suffix(1);
    // Lines that start with the kernel's own text.
    if (message.starts_with("oom-kill:")) return parse_summary(message);
    if (message.starts_with("oom_reaper: reaped process "))
        return parse_reaped(message.substr(std::string_view("oom_reaper: reaped process ").size()));
    if (message.starts_with("Task in ") || message.starts_with("Memory limit reached of cgroup "))
        return parse_memcg_info(message);
    constexpr std::string_view group_head = "Tasks in ";
    constexpr std::string_view group_tail = " are going to be killed due to memory.oom.group set";
    if (message.size() > group_head.size() + group_tail.size() && message.starts_with(group_head) &&
        message.ends_with(group_tail)) {
        std::string_view path = message.substr(group_head.size(), message.size() - group_head.size() - group_tail.size());
        if (!path.starts_with('/')) return std::nullopt;
        return oom_group_line{std::string(path)};
    }
    // Lines where a comm (any bytes) may come before the key text: each candidate in
    // turn, so that a comm that mimics another line's key text cannot hide the line.
    std::optional<oom_log_line> line;
    // The comm comes first here and the kernel's text after it: the last occurrence.
    if (auto at = message.rfind(" invoked oom-killer: "); at != std::string_view::npos) line = parse_invoked(message, at);
    // A reason (the kernel's text) comes first in these: the first occurrence.
    if (auto at = message.find("Killed process "); !line && at != std::string_view::npos)
        line = parse_killed(message, at);
    if (auto at = message.find(": Kill process "); !line && at != std::string_view::npos && at > 0)
        line = parse_kill_choice(message, at);
    if (auto at = message.find("OOM victim "); !line && at != std::string_view::npos)
        line = parse_victim_exiting(message, at);
    return line;
}

} // namespace oomwatch
