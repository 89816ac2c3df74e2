// The embedded `dir` store backend: one file per object under a folder (data.path), named by its
// key escaped (dir_file_name: [A-Za-z0-9_-] kept, every other byte as %XX, so any key stays a
// single file inside the folder and keys of only those characters keep their own name). Writes go to a hidden temporary file, are fsynced and renamed into place (then the folder is
// fsynced), so a reader sees either the whole old value, the whole new one, or none.
#pragma once

#include <atomic>
#include <string>

#include "data/store.h"

namespace eaglet::data {

// The file name of a key: bytes in [A-Za-z0-9_-] as they are, every other byte (the escape
// character '%' included) as '%' and two uppercase hex digits. Injective, never empty, never '.'
// or '..', never holding '/' or starting with '.' (temporaries do); checks the key (check_key).
std::string dir_file_name(const std::string& key);
// The inverse; throws eaglet::Error naming `name` when it is not a file name dir_file_name makes.
std::string dir_key_of_file(const std::string& name);
// Longest file name a key may map to: the temporary `.<name>.tmp<pid>-<n>` stays within NAME_MAX.
inline constexpr size_t kMaxDirFileName = 220;

// Thread-safe: no state besides the folder; concurrent readers and writers of different keys
// (and of the same key, by the rename) are fine.
class DirStore final : public Store {
 public:
  // Creates the folder when missing; throws eaglet::Error naming it when that fails.
  explicit DirStore(std::string folder);

  const char* backend() const override { return "dir"; }
  const std::string& folder() const { return folder_; }
  std::string path_of(const std::string& key) const;  // the object's file (key checked)

  // Reads only the byte range asked for (pread).
  std::vector<int64_t> batch_get_range_into(const std::vector<std::string>& keys,
                                            const std::vector<int64_t>& offsets,
                                            const std::vector<int64_t>& lengths,
                                            const std::vector<void*>& buffers) override;

  int64_t size(const std::string& key) override;
  std::vector<int64_t> batch_get_into(const std::vector<std::string>& keys,
                                      const std::vector<void*>& buffers,
                                      const std::vector<int64_t>& capacities) override;
  void put(const std::string& key, const void* data, int64_t bytes) override;
  void remove(const std::string& key) override;

 private:
  std::string file_name_of(const std::string& key) const;  // escaped and length-checked
  std::string folder_;
  std::atomic<int64_t> tmp_counter_{0};
};

}  // namespace eaglet::data
