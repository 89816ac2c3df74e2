// The safetensors format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {..}}, then raw data.
// Reads are memory-mapped; writes go to a temporary file, are fsynced and renamed into place.
// Every error names the file and, where there is one, the tensor.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace eaglet::io {

struct TensorInfo {
  std::string dtype;  // "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data section
};

// One memory-mapped .safetensors file.
class SafetensorsFile {
 public:
  // Throws eaglet::Error (naming the file) for a missing file, a truncated file, a bad header
  // (not JSON, offsets outside the data, overlapping or mis-sized tensors, unknown dtype).
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool has(const std::string& name) const { return tensors_.count(name) > 0; }
  // dtype, shape and offsets without reading data. Throws naming file and tensor when missing.
  const TensorInfo& info(const std::string& name) const;

  // A CPU tensor owning a copy of the data. Throws naming file and tensor when it is missing.
  at::Tensor get(const std::string& name) const;
  // The same, and throws naming file, tensor and both shapes when the shape differs.
  at::Tensor get(const std::string& name, const std::vector<int64_t>& expected_shape) const;

 private:
  std::string path_;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
  const uint8_t* map_ = nullptr;
  size_t map_size_ = 0;
  size_t data_start_ = 0;
};

// The tensors of an HF folder: model.safetensors, or the shards listed by
// model.safetensors.index.json ({"weight_map": {name: file}}); also accepts a single file path,
// and a folder of other *.safetensors files (each tensor in exactly one). Shards are opened
// lazily: share one set between threads only with external locking.
class SafetensorsSet {
 public:
  explicit SafetensorsSet(const std::string& folder_or_file);
  bool has(const std::string& name) const;
  std::vector<std::string> names() const;
  // Errors name the folder, the shard and the tensor. Shards are mapped on first use.
  at::Tensor get(const std::string& name) const;
  at::Tensor get(const std::string& name, const std::vector<int64_t>& expected_shape) const;
  const TensorInfo& info(const std::string& name) const;
  const std::string& where() const { return where_; }

 private:
  const SafetensorsFile& file_of(const std::string& name) const;
  std::string where_;
  std::map<std::string, std::string> weight_map_;  // tensor -> shard file
  mutable std::map<std::string, std::unique_ptr<SafetensorsFile>> files_;
};

// Writes tensors (any device; copied to CPU, made contiguous) in the given order, with optional
// string metadata, atomically: <path>.tmp, fsync, rename, fsync of the folder. The header is
// padded with spaces to a multiple of 8 bytes and lists the tensors in the given order. Throws
// naming the file (and the tensor: unsupported dtype, duplicate name) on failure.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace eaglet::io
