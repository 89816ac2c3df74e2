// Plain POSIX file-system helpers for eaglet's I/O: path joining, tests, listing, mkdir -p,
// rm -rf, durable writes. Not std::filesystem on purpose: the PyTorch wheels export their own
// (older) std::filesystem symbols from libtorch_cpu.so, which take precedence over the system
// libstdc++'s; on the GPU image std::filesystem::remove_all then crashes (SIGSEGV).
#pragma once

#include <cstdint>
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
// Size in bytes of the regular file `path`. Throws naming it.
int64_t file_size(const std::string& path);
// The whole file as text. Throws naming it.
std::string read_text_file(const std::string& path);

// rename(2): `from` takes the name `to` in one step (replacing a file or an empty folder there).
// Throws naming both.
void rename_path(const std::string& from, const std::string& to);
// Swaps the names of `a` and `b` (both must exist, on one file system) in one atomic step:
// renameat2(RENAME_EXCHANGE). Returns false and changes nothing where the file system or kernel
// cannot (EINVAL, ENOSYS, ENOTSUP: NFS, older FUSE); throws naming both on any other error.
bool exchange_paths(const std::string& a, const std::string& b);
// Hard link `to` -> the file `from` (link(2)). Throws naming both.
void link_file(const std::string& from, const std::string& to);

// fsync of the folder holding `path`, so a rename into it survives a crash. Throws naming `path`.
void fsync_parent_dir(const std::string& path);
// Writes `text` to `path` and fsyncs it (no rename: callers write into a temporary folder or
// rename themselves). Throws naming the file.
void write_file_synced(const std::string& path, const std::string& text);

}  // namespace eaglet::io
