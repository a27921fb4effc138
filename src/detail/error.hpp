// detail/error.hpp (internal, not installed): helpers for the library's throwing overloads.
#pragma once

#include <oomwatch/error.hpp>

#include <filesystem>

namespace oomwatch {

/// Throws `cgroup_error(ec, path)` when `ec` is set.
void throw_if(const boost::system::error_code& ec, const std::filesystem::path& path);

} // namespace oomwatch
