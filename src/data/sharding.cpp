// Shard layout arithmetic, packed-mask codec and per-rank rebuild (see sharding.h).
#include "data/sharding.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/ne.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/tensor_text.h"

namespace eaglet::data {
namespace {

// Packed masks can be long; messages quote the start only.
std::string quoted(const std::string& packed) {
  if (packed.size() <= 80) return "\"" + packed + "\"";
  return "\"" + packed.substr(0, 77) + "...\"";
}

// Longest mask accepted (runs are summed in int64; this keeps every sum far from overflow).
constexpr int64_t kMaxMaskLength = int64_t{1} << 40;

}  // namespace

const char* object_suffix(ShardObject obj) {
  switch (obj) {
    case ShardObject::hs:
      return "hs";
    case ShardObject::ids:
      return "ids";
    case ShardObject::lhs:
      return "lhs";
  }
  return "?";
}

std::string object_key(const std::string& key, int64_t sp_rank, ShardObject obj) {
  return fmt::format("{}_usp{}_{}", key, sp_rank, object_suffix(obj));
}

std::string full_object_key(const std::string& key, ShardObject obj) {
  return fmt::format("{}_{}", key, object_suffix(obj));
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

RowRange ShardGeometry::rows(int64_t sp_rank) const {
  const int64_t begin = sp_rank * chunk;
  return {begin, std::max(begin, std::min(begin + local_len, length))};
}

RowRange ShardGeometry::own_rows(int64_t sp_rank) const {
  const int64_t begin = sp_rank * chunk;
  return {begin, std::max(begin, std::min(begin + chunk, length))};
}

ShardGeometry shard_geometry(int64_t seq_len, int64_t max_seq_length, int64_t sp_size,
                             int64_t ttt_length) {
  EAGLET_CHECK(seq_len >= 1 && max_seq_length >= 1 && sp_size >= 1 && ttt_length >= 0,
               "shard geometry needs seq_len >= 1, max_seq_length >= 1, sp_size >= 1 and "
               "ttt_length >= 0 (got {}, {}, {}, {})",
               seq_len, max_seq_length, sp_size, ttt_length);
  ShardGeometry g;
  g.seq_len = seq_len;
  g.length = std::min(seq_len, max_seq_length);
  g.sp_size = sp_size;
  g.ttt_length = ttt_length;
  g.chunk = ceil_div(g.length, sp_size);
  g.local_len = g.chunk + ttt_length;
  return g;
}

PackedMaskInfo check_packed_loss_mask(const std::string& packed) {
  EAGLET_CHECK(!packed.empty(),
               "packed_loss_mask is empty (expected comma-separated run lengths starting with a "
               "0-run, e.g. \"2,3\" = 00111)");
  PackedMaskInfo info;
  int64_t run = 0;
  size_t pos = 0;
  while (true) {
    size_t comma = packed.find(',', pos);
    std::string text =
        packed.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    EAGLET_CHECK(
        !text.empty() && text.size() <= 13 &&
            std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }),
        "packed_loss_mask {}: run {} '{}' is not a non-negative decimal integer", quoted(packed),
        run + 1, text);
    const int64_t n = std::stoll(text);
    EAGLET_CHECK(n > 0 || run == 0,
                 "packed_loss_mask {}: run {} is 0 (only the first run, a 0-run, may be empty)",
                 quoted(packed), run + 1);
    info.length += n;
    if (run % 2 == 1) info.ones += n;
    EAGLET_CHECK(info.length <= kMaxMaskLength, "packed_loss_mask {}: total length exceeds {}",
                 quoted(packed), kMaxMaskLength);
    ++run;
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return info;
}

std::vector<uint8_t> unpack_loss_mask(const std::string& packed) {
  const auto info = check_packed_loss_mask(packed);
  std::vector<uint8_t> mask;
  mask.reserve(static_cast<size_t>(info.length));
  uint8_t value = 0;
  size_t pos = 0;
  while (pos <= packed.size()) {
    size_t comma = packed.find(',', pos);
    if (comma == std::string::npos) comma = packed.size();
    mask.insert(mask.end(), static_cast<size_t>(std::stoll(packed.substr(pos, comma - pos))),
                value);
    value ^= 1;
    pos = comma + 1;
  }
  return mask;
}

std::string pack_loss_mask(const std::vector<uint8_t>& mask) {
  std::string out;
  uint8_t value = 0;
  int64_t run = 0;
  for (uint8_t m : mask) {
    const uint8_t bit = m != 0;
    if (bit != value) {
      out += fmt::format("{},", run);
      value = bit;
      run = 0;
    }
    ++run;
  }
  out += fmt::format("{}", run);
  return out;
}

std::string pack_loss_mask(const at::Tensor& mask) {
  EAGLET_CHECK(mask.dim() == 1, "pack_loss_mask: expected a 1-D mask, got {}", tensor_text(mask));
  auto bits = mask.ne(0).to(at::kByte).cpu().contiguous();
  const auto* p = bits.data_ptr<uint8_t>();
  return pack_loss_mask(std::vector<uint8_t>(p, p + bits.numel()));
}

at::Tensor shard_loss_mask(const std::vector<uint8_t>& mask, const ShardGeometry& g,
                           int64_t sp_rank) {
  auto out = at::zeros({g.local_len}, at::TensorOptions().dtype(at::kFloat));
  auto* dst = out.data_ptr<float>();
  const RowRange r = g.rows(sp_rank);
  // The mask is cut to L (rows >= L never count) and zero-padded past its own end.
  const int64_t end = std::min<int64_t>(r.end, static_cast<int64_t>(mask.size()));
  for (int64_t row = r.begin; row < end; ++row) dst[row - r.begin] = mask[row] != 0 ? 1.f : 0.f;
  return out;
}

int64_t own_loss_tokens(const std::vector<uint8_t>& mask, const ShardGeometry& g, int64_t sp_rank) {
  const RowRange r = g.own_rows(sp_rank);
  const int64_t end = std::min<int64_t>(r.end, static_cast<int64_t>(mask.size()));
  int64_t n = 0;
  for (int64_t row = r.begin; row < end; ++row) n += mask[row] != 0;
  return n;
}

at::Tensor shard_attention_mask(const ShardGeometry& g, int64_t sp_rank) {
  auto out = at::zeros({g.local_len}, at::TensorOptions().dtype(at::kLong));
  const int64_t real = g.rows(sp_rank).size();
  if (real > 0) out.narrow(0, 0, real).fill_(1);
  return out;
}

at::Tensor ring_chunk_positions(const ShardGeometry& geom, int64_t ulysses, int64_t ring_rank) {
  const int64_t n = geom.chunk * ulysses;
  return at::arange(ring_rank * n, (ring_rank + 1) * n, at::TensorOptions().dtype(at::kLong));
}

void check_segments(const std::vector<int64_t>& documents, int64_t seq_len) {
  EAGLET_CHECK(!documents.empty(), "segments: no document lengths");
  int64_t sum = 0;
  for (size_t i = 0; i < documents.size(); ++i) {
    EAGLET_CHECK(documents[i] >= 1, "segments: document {} has length {}, expected >= 1", i,
                 documents[i]);
    sum += documents[i];
  }
  EAGLET_CHECK(sum == seq_len, "segments: the {} document lengths sum to {}, seq_len is {}",
               documents.size(), sum, seq_len);
}

void pack_documents(ShardInput& in, const std::vector<int64_t>& documents, const ShardGeometry& g,
                    int64_t sp_rank) {
  const int64_t L = g.length, C = g.chunk, T = g.ttt_length, total = C * g.sp_size;
  check_segments(documents, g.seq_len);
  // Document ends in [0, L] (cut to max_seq_length).
  std::vector<int64_t> ends;
  for (int64_t end = 0, i = 0; end < L; ++i) {
    end = std::min(end + documents[static_cast<size_t>(i)], L);
    ends.push_back(end);
  }
  // Over the whole chunk: positions restart per document, the tail padding continues the last.
  auto positions = at::empty({total}, at::TensorOptions().dtype(at::kLong));
  auto* pos = positions.data_ptr<int64_t>();
  in.segments.clear();
  for (size_t i = 0, start = 0; i < ends.size(); ++i) {
    const auto end = static_cast<size_t>(i + 1 == ends.size() ? total : ends[i]);
    for (size_t j = start; j < end; ++j) pos[j] = static_cast<int64_t>(j - start);
    in.segments.push_back(static_cast<int64_t>(end - start));
    start = end;
  }
  in.positions = positions;
  // The own rows [a, a + C), cut at each document end strictly inside them (L, where only the
  // tail padding follows, is no cut: the last document's rows past L are zero as stored).
  const int64_t a = sp_rank * C, b = a + C;
  std::vector<int64_t> cuts{a};
  for (int64_t e : ends)
    if (e > a && e < b && e < L) cuts.push_back(e);
  cuts.push_back(b);
  std::vector<at::Tensor*> tensors{&in.hs, &in.ids, &in.lhs, &in.loss_mask};
  std::vector<std::vector<at::Tensor>> parts(tensors.size());
  in.runs.clear();
  bool unchanged = cuts.size() == 2;
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    const int64_t p = cuts[i], q = cuts[i + 1];
    // The end of the document row q − 1 belongs to; the halo keeps its rows before that end
    // (all T for the last document: its rows past L are the stored zero padding).
    auto doc_end = std::lower_bound(ends.begin(), ends.end(), q);
    const int64_t end = doc_end == ends.end() ? L : *doc_end;
    const int64_t keep = end >= L ? T : std::clamp(end - q, int64_t{0}, T);
    unchanged = unchanged && keep == T;
    in.runs.push_back(q - p);
    for (size_t t = 0; t < tensors.size(); ++t) {
      auto& x = *tensors[t];
      parts[t].push_back(x.narrow(0, p - a, q - p + keep));
      if (keep < T) {
        auto shape = x.sizes().vec();
        shape[0] = T - keep;
        parts[t].push_back(at::zeros(shape, x.options()));
      }
    }
  }
  if (unchanged) return;  // one piece with its whole halo: the tensors as read
  for (size_t t = 0; t < tensors.size(); ++t) *tensors[t] = at::cat(parts[t]);
}

void check_full_sample(const FullSample& s, const std::string& what) {
  EAGLET_CHECK(s.ids.defined() && s.ids.dim() == 1 && s.ids.size(0) >= 1,
               "{}: input_ids must be 1-D with at least one token, got {}", what,
               tensor_text(s.ids));
  const int64_t S = s.ids.size(0);
  EAGLET_CHECK(s.lhs.defined() && s.lhs.dim() == 2 && s.lhs.size(0) == S && s.lhs.size(1) >= 1,
               "{}: last_hidden_states must be [{}, Ht], got {}", what, S, tensor_text(s.lhs));
  const int64_t ht = s.lhs.size(1);
  EAGLET_CHECK(s.hs.defined() && s.hs.dim() == 2 && s.hs.size(0) == S &&
                   s.hs.size(1) % ht == 0 && s.hs.size(1) >= ht,
               "{}: hidden_states must be [{}, num_aux*{}] (num_aux aux layers of Ht={}), got {}",
               what, S, ht, ht, tensor_text(s.hs));
  EAGLET_CHECK(s.loss_mask.defined() && s.loss_mask.dim() == 1 && s.loss_mask.size(0) == S,
               "{}: loss_mask must be [{}], got {}", what, S, tensor_text(s.loss_mask));
}

ShardTensors slice_shard(const FullSample& s, const ShardGeometry& g, int64_t sp_rank) {
  EAGLET_CHECK(s.ids.size(0) >= g.length,
               "slice_shard: the sample has {} rows, the layout needs {}", s.ids.size(0), g.length);
  auto rows_padded = [&](const at::Tensor& x) {
    auto shape = x.sizes().vec();
    shape[0] = g.local_len;
    auto out = at::zeros(shape, x.options());
    const RowRange r = g.rows(sp_rank);
    if (r.size() > 0) out.narrow(0, 0, r.size()).copy_(x.narrow(0, r.begin, r.size()));
    return out;
  };
  return {rows_padded(s.hs), rows_padded(s.ids), rows_padded(s.lhs)};
}

ShardTensors reference_shard(const FullSample& s, const ShardGeometry& g, int64_t sp_rank) {
  EAGLET_CHECK(s.ids.size(0) >= g.length,
               "reference_shard: the sample has {} rows, the layout needs {}", s.ids.size(0),
               g.length);
  auto one = [&](const at::Tensor& x) {
    auto src = x.cpu().contiguous();
    auto shape = src.sizes().vec();
    shape[0] = g.local_len;
    auto out = at::zeros(shape, src.options());
    const int64_t row_bytes = src.numel() == 0 ? 0 : src.nbytes() / src.size(0);
    for (int64_t i = 0; i < g.local_len; ++i) {
      const int64_t row = sp_rank * g.chunk + i;  // global row of local row i
      if (row >= g.length) break;                 // past L: tail padding stays zero
      std::memcpy(static_cast<char*>(out.data_ptr()) + i * row_bytes,
                  static_cast<const char*>(src.data_ptr()) + row * row_bytes, row_bytes);
    }
    return out;
  };
  return {one(s.hs), one(s.ids), one(s.lhs)};
}

}  // namespace eaglet::data
