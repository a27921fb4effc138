// One inotify instance per execution context, shared by every cgroup v2 watcher on it,
// dispatching events by watch descriptor. Ten thousand cgroups need one inotify fd
// (the default limit is 128 instances per user), and one liveness timer.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace oomwatch::detail {

/// What the service tells a watched cgroup. Called from the service's handlers (on any
/// thread running the context, possibly two at once: a read's and the timer's), never with
/// the service's lock held.
class inotify_client {
public:
    virtual ~inotify_client() = default;
    /// Its counters file changed (or may have: queue overflow).
    virtual void on_counters_changed() = 0;
    /// It may be gone (the parent saw a delete or move of its name, the liveness timer
    /// fired, or the queue overflowed).
    virtual void on_maybe_removed() = 0;
    /// The kernel dropped the watch on its counters file (the file or the cgroup went
    /// away): no more IN_MODIFY will come for it.
    virtual void on_watch_lost() = 0;
    /// The inotify instance failed for good (`ec`); the client's registration is gone.
    virtual void on_service_failed(const boost::system::error_code& ec) = 0;
};

/// What the service tells a watched directory of a tree: its subdirectories come and go.
/// Called as `inotify_client`'s functions are, never with the service's lock held.
class inotify_dir_client {
public:
    virtual ~inotify_dir_client() = default;
    /// A subdirectory `name` appeared: made there, or (`moved_in`) renamed into it.
    virtual void on_child_appeared(const std::string& name, bool moved_in) = 0;
    /// A subdirectory `name` went: removed, or renamed away.
    virtual void on_child_gone(const std::string& name) = 0;
    /// Events may have been lost (queue overflow): list the directory again.
    virtual void on_rescan() = 0;
    /// The instance failed for good; the registration is gone.
    virtual void on_dir_service_failed(const boost::system::error_code& ec) = 0;
};

class inotify_service : public boost::asio::execution_context::service {
public:
    using key_type = inotify_service;
    static boost::asio::execution_context::id id;

    explicit inotify_service(boost::asio::execution_context& ctx);
    ~inotify_service() override;

    struct registration {
        int file_wd = -1;
        int dir_wd = -1;
        std::uint64_t key = 0;
    };

    /// Watches `file` for IN_MODIFY and, unless `dir` is empty, the parent of directory
    /// `dir` for its removal (empty: the caller sees that itself). `ex` is an executor of
    /// this service's context. Errors: errno of inotify_init1 (EMFILE: the instance
    /// limit) and inotify_add_watch (ENOSPC: the watch limit, ENOENT, EACCES).
    boost::system::error_code add(const boost::asio::any_io_executor& ex, const std::string& file,
                                  const std::string& dir, std::weak_ptr<inotify_client> client,
                                  std::chrono::milliseconds liveness_interval, registration& reg);
    /// Undoes `add`; removes the kernel watches that no other client uses.
    void remove(const registration& reg);

    /// Watches directory `dir` for subdirectories appearing and going. Errors as `add`.
    boost::system::error_code add_dir(const boost::asio::any_io_executor& ex, const std::string& dir,
                                      std::weak_ptr<inotify_dir_client> client, registration& reg);
    /// Undoes `add_dir`.
    void remove_dir(const registration& reg);

    /// How many cgroups are registered, the inotify watches in use, and the liveness
    /// interval in force (max() when none) (for tests).
    std::size_t client_count() const;
    std::size_t watch_count() const;
    std::chrono::milliseconds liveness_interval() const;

private:
    // A kernel watch, and who relies on it. Kept small: a tree has two per cgroup.
    struct watch {
        std::size_t refs = 0;
        std::vector<std::pair<std::uint64_t, std::weak_ptr<inotify_client>>> file_clients;  // a counters file
        // A parent directory: name -> client key (made on first need: a tree's
        // directories have none).
        std::unique_ptr<std::unordered_multimap<std::string, std::uint64_t>> children;
        std::vector<std::pair<std::uint64_t, std::weak_ptr<inotify_dir_client>>> dir_clients;  // a tree's directory
    };

    void shutdown() override;
    void start_reading();  // with m_ held
    void start_timer();    // with m_ held
    void on_read(boost::system::error_code ec, std::size_t n);
    void on_timer(boost::system::error_code ec);
    void drop_watch_ref(int wd);  // with m_ held
    boost::system::error_code open_locked(const boost::asio::any_io_executor& ex);  // the instance, on first need
    // A read or wait error that will not go away: every client learns it, and the
    // instance is closed (a later add() makes a new one) rather than retried in a loop.
    void fail_locked(const boost::system::error_code& ec, std::vector<std::weak_ptr<inotify_client>>& told,
                     std::vector<std::weak_ptr<inotify_dir_client>>& dirs_told);

    struct client_entry {
        std::weak_ptr<inotify_client> client;
        std::chrono::milliseconds interval;
    };

    mutable std::mutex m_;
    std::optional<boost::asio::any_io_executor> exec_;  // of the context; set with the first instance
    std::optional<boost::asio::posix::stream_descriptor> fd_;
    std::optional<boost::asio::steady_timer> timer_;
    // What a read fills: room for many events (each at most 16 + NAME_MAX + 1 bytes).
    struct read_buffer {
        alignas(8) char bytes[16384];
    };
    std::unique_ptr<read_buffer> buf_;
    std::unordered_map<int, watch> watches_;
    std::unordered_map<std::uint64_t, client_entry> clients_;
    std::unordered_map<std::uint64_t, std::weak_ptr<inotify_dir_client>> dir_clients_;
    std::uint64_t next_key_ = 1;
    // How many clients asked for each liveness interval: the timer follows the shortest
    // one still asked for, found without a pass over every client.
    std::map<std::chrono::milliseconds, std::size_t> intervals_;
    std::chrono::milliseconds interval_ = std::chrono::milliseconds::max();
    bool reading_ = false;
    bool timing_ = false;
    bool shut_down_ = false;
};

} // namespace oomwatch::detail
