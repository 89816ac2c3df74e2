// Plain POSIX file-system helpers for eaglet's I/O: path joining, tests, listing, mkdir -p,
// rm -rf, durable writes. Not std::filesystem on purpose: the PyTorch wheels export their own
// (older) std::filesystem symbols from libtorch_cpu.so, which take precedence over the system
// libstdc++'s; on the GPU image std::filesystem::remove_all then crashes (SIGSEGV).
#pragma once

#include <string>
#include <vector>

namespace eaglet::io {

std::string join_path(const std::string& dir, const std::string& name);
// The folder part of `path` ("." for a bare name); trailing slashes of `path` are ignored.
std::string parent_dir(const std::string& path);
// `path` without trailing slashes ("out/" -> "out"; "/" stays).
std::string strip_trailing_slashes(const std::string& path);

bool path_exists(const std::string& path);  // anything, symlinks followed
bool is_dir(const std::string& path);
bool is_file(const std::string& path);  // a regular file

// Entry names of `dir` (no "." or ".."), sorted. Throws eaglet::Error naming the folder.
std::vector<std::string> list_dir(const std::string& dir);
// mkdir -p. Throws eaglet::Error naming the folder that could not be made.
void make_dirs(const std::string& dir);
// rm -rf, best effort (for temporary folders); never throws, never follows symlinks.
void remove_tree(const std::string& path) noexcept;

// fsync of the folder holding `path`, so a rename into it survives a crash. Throws naming `path`.
void fsync_parent_dir(const std::string& path);
// Writes `text` to `path` and fsyncs it (no rename: callers write into a temporary folder or
// rename themselves). Throws naming the file.
void write_file_synced(const std::string& path, const std::string& text);

}  // namespace eaglet::io
