// detail/context_executor.hpp (internal): the executor a per-context service binds its
// I/O objects to.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

namespace oomwatch::detail {

/// The context's own executor behind `ex`: a shared service serves every client on the
/// context, so it must not run its handlers on the first caller's strand.
inline boost::asio::any_io_executor context_executor(const boost::asio::any_io_executor& ex) {
    using io_ex = boost::asio::io_context::executor_type;
    if (auto* s = ex.target<boost::asio::strand<io_ex>>()) return s->get_inner_executor();
    if (auto* s2 = ex.target<boost::asio::strand<boost::asio::any_io_executor>>()) return s2->get_inner_executor();
    return ex;
}

} // namespace oomwatch::detail
