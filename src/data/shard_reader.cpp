// Per-rank shard reading: store reads with size checks, local rebuild, device placement, and the
// SP-wide fail / neutralise decision through one all-reduce.
#include "data/shard_reader.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <bit>

#include "core/error.h"
#include "core/tensor_text.h"
#include "dist/communicator.h"

namespace eaglet::data {
namespace {

static_assert(std::endian::native == std::endian::little,
              "store values are little-endian raw bytes; a big-endian host would need byte swaps");

at::ScalarType scalar_type_of(const std::string& dtype) {
  if (dtype == "bfloat16") return at::kBFloat16;
  if (dtype == "float16") return at::kHalf;
  if (dtype == "float32") return at::kFloat;
  if (dtype == "int64") return at::kLong;
  if (dtype == "int32") return at::kInt;
  EAGLET_FAIL("dtype \"{}\" is not supported", dtype);
}

// The stand-in layout of a line that failed validation: one own row per rank, so every SP rank
// runs the model on identically shaped zero tensors.
ShardGeometry stand_in_geometry(const ReaderOptions& opt) {
  return shard_geometry(opt.sp_size, std::max<int64_t>(opt.sp_size, opt.max_seq_length),
                        opt.sp_size, opt.ttt_length);
}

// Slots of the all-reduced vector: per SP rank [kind, object, expected, actual], then the loss
// tokens. Ranks fill only their own slots, so a sum is a gather.
constexpr int64_t kSlot = 4;

template <typename Bits>
int64_t first_row_with(const Bits* p, int64_t rows, int64_t cols, Bits exponent) {
  for (int64_t r = 0; r < rows; ++r) {
    const Bits* row = p + r * cols;
    bool bad = false;
    for (int64_t c = 0; c < cols; ++c) bad |= (row[c] & exponent) == exponent;
    if (bad) return r;
  }
  return -1;
}

}  // namespace

const char* problem_text(ProblemKind kind) {
  switch (kind) {
    case ProblemKind::none:
      return "none";
    case ProblemKind::manifest:
      return "invalid manifest line";
    case ProblemKind::missing:
      return "missing object";
    case ProblemKind::size:
      return "object of the wrong size";
    case ProblemKind::io:
      return "store read failed";
    case ProblemKind::nonfinite:
      return "non-finite hidden state";
  }
  return "unknown";
}

int64_t first_nonfinite_row(const at::Tensor& t) {
  EAGLET_CHECK(t.device().is_cpu() && t.is_contiguous() && t.dim() >= 1,
               "first_nonfinite_row: needs a contiguous host tensor, got {}", tensor_text(t));
  const int64_t rows = t.size(0), cols = rows > 0 ? t.numel() / rows : 0;
  switch (t.scalar_type()) {
    case at::kBFloat16:
      return first_row_with(static_cast<const uint16_t*>(t.data_ptr()), rows, cols,
                            uint16_t{0x7F80});
    case at::kHalf:
      return first_row_with(static_cast<const uint16_t*>(t.data_ptr()), rows, cols,
                            uint16_t{0x7C00});
    case at::kFloat:
      return first_row_with(static_cast<const uint32_t*>(t.data_ptr()), rows, cols,
                            uint32_t{0x7F800000});
    default:
      EAGLET_FAIL("first_nonfinite_row: {} is not a float tensor", tensor_text(t));
  }
}

ReaderOptions reader_options(const Config& cfg, const Layout& layout, const RankCoord& coord,
                             c10::Device device, at::ScalarType hidden_dtype) {
  ReaderOptions o;
  o.sp_rank = coord.sp;
  o.sp_size = layout.sp();
  o.ulysses = layout.ulysses;
  o.ring_rank = coord.ring;
  o.ttt_length = cfg.training.ttt_length;
  o.max_seq_length = cfg.data.max_seq_length;
  o.hidden_size = cfg.model.config.target_hidden_size;
  o.num_aux = cfg.model.config.num_aux_hidden_states;
  o.skip_errors = cfg.data.on_error == "skip";
  o.consume = cfg.data.consume;
  o.device = device;
  o.hidden_dtype = hidden_dtype;
  o.pin_memory = device.is_cuda();
  o.manifest_path = manifest_path(cfg.data);
  return o;
}

std::array<ObjectSpec, 3> shard_objects(const ManifestEntry& e, const ShardGeometry& g,
                                        int64_t sp_rank) {
  const int64_t n = g.local_len, ht = e.hidden_size;
  const int64_t stored_rows = e.usp_sharded ? n : e.seq_len;
  const auto own = g.rows(sp_rank);
  std::array<ObjectSpec, 3> out;
  const std::string dtypes[] = {e.hs_dtype, e.ids_dtype, e.lhs_dtype};
  const int64_t widths[] = {e.num_aux * ht, 0, ht};  // 0: a vector
  for (size_t i = 0; i < 3; ++i) {
    auto& o = out[i];
    o.key = e.usp_sharded ? object_key(e.key, sp_rank, kShardObjects[i])
                          : full_object_key(e.key, kShardObjects[i]);
    o.dtype = dtypes[i];
    o.scalar_type = scalar_type_of(o.dtype);
    o.shape = widths[i] > 0 ? std::vector<int64_t>{stored_rows, widths[i]}
                            : std::vector<int64_t>{stored_rows};
    o.buffer_shape = o.shape;
    o.buffer_shape[0] = n;
    const DtypeInfo* d = find_dtype(o.dtype);
    EAGLET_CHECK(d != nullptr, "sample {}: dtype \"{}\" is not supported", e.key, o.dtype);
    o.row_bytes = d->bytes * std::max<int64_t>(widths[i], 1);
    o.bytes = o.row_bytes * stored_rows;
    o.ranged = !e.usp_sharded;
    o.first_row = o.ranged ? own.begin : 0;
    o.rows = o.ranged ? own.size() : n;
  }
  return out;
}

namespace {
// Reads the objects into their buffers (each spec.buffer_shape, zeroed beforehand where ranged);
// result i is the object's byte count (compare with spec.bytes), kMissing or kTooLarge.
std::vector<int64_t> read_objects(Store& store, const std::vector<const ObjectSpec*>& specs,
                                  const std::vector<void*>& ptrs) {
  std::vector<std::string> keys;
  std::vector<int64_t> offsets, lengths, caps;
  for (const auto* spec : specs) {
    keys.push_back(spec->key);
    offsets.push_back(spec->first_row * spec->row_bytes);
    lengths.push_back(spec->rows * spec->row_bytes);
    caps.push_back(spec->bytes);
  }
  const bool ranged = !specs.empty() && specs[0]->ranged;
  return ranged ? store.batch_get_range_into(keys, offsets, lengths, ptrs)
                : store.batch_get_into(keys, ptrs, caps);
}

// "N bytes" for an object larger than its buffer; "more than B bytes" when it went meanwhile.
std::string too_large_text(Store& store, const std::string& key, int64_t bytes) {
  const int64_t n = store.size(key);
  return n >= 0 ? fmt::format("{} bytes", n) : fmt::format("more than {} bytes", bytes);
}
}  // namespace

at::Tensor read_shard_ids(Store& store, const ManifestEntry& e, const ShardGeometry& g,
                          int64_t sp_rank, const std::string& what) {
  const auto spec = shard_objects(e, g, sp_rank)[1];
  auto ids = at::zeros(spec.buffer_shape, at::TensorOptions().dtype(spec.scalar_type));
  const int64_t got = read_objects(store, {&spec}, {ids.data_ptr()})[0];
  EAGLET_CHECK(got != kMissing,
               "{}: object {} is not in the {} store (consumed by an earlier run with "
               "data.consume=true, or never written) ({} [{}], SP rank {})",
               what, spec.key, store.backend(), spec.dtype, spec.shape[0], sp_rank);
  EAGLET_CHECK(got == spec.bytes, "{}: object {} ({} [{}]) on SP rank {} has {}, expected {} bytes",
               what, spec.key, spec.dtype, spec.shape[0], sp_rank,
               got == kTooLarge ? too_large_text(store, spec.key, spec.bytes)
                                : fmt::format("{} bytes", got),
               spec.bytes);
  return ids.to(at::kLong);
}

FetchedShard fetch_shard(Store& store, const ManifestRecord& record, const ReaderOptions& opt,
                         int64_t position) {
  FetchedShard f;
  f.position = position;
  f.record = record;
  const int64_t s = opt.sp_rank;
  if (!record.ok()) {
    f.geometry = stand_in_geometry(opt);
    f.problem = {ProblemKind::manifest, -1, 0, -1, record.error};
  } else {
    const auto& e = record.entry;
    f.geometry = shard_geometry(e.seq_len, e.max_seq_length, opt.sp_size, opt.ttt_length);
    const auto specs = shard_objects(e, f.geometry, s);
    std::vector<at::Tensor> bufs;
    std::vector<std::string> keys;
    std::vector<void*> ptrs;
    for (const auto& spec : specs) {
      auto options = at::TensorOptions().dtype(spec.scalar_type);
      if (opt.pin_memory) options = options.pinned_memory(true);
      bufs.push_back(at::empty(spec.buffer_shape, options));
      if (spec.ranged) bufs.back().zero_();  // the tail padding past the rows read
      keys.push_back(spec.key);
      ptrs.push_back(bufs.back().data_ptr());
    }
    try {
      const auto got = read_objects(store, {&specs[0], &specs[1], &specs[2]}, ptrs);
      for (int64_t i = 0; i < 3 && f.problem.kind == ProblemKind::none; ++i) {
        const int64_t n = got.at(i), want = specs[i].bytes;
        if (n == kMissing)
          f.problem = {ProblemKind::missing, i, want, -1, ""};
        else if (n == kTooLarge)
          f.problem = {ProblemKind::size, i, want, store.size(keys[i]), ""};
        else if (n != want)
          f.problem = {ProblemKind::size, i, want, n, ""};
      }
    } catch (const StoreUnavailable&) {
      throw;  // an outage, not bad content: fatal whatever data.on_error says
    } catch (const std::exception& ex) {
      f.problem = {ProblemKind::io, -1, 0, -1,
                   fmt::format("{} store read of {}, {}, {} failed: {}", store.backend(), keys[0],
                               keys[1], keys[2], ex.what())};
    }
    for (int64_t i : {0, 2}) {  // _hs, _lhs: a NaN or Inf would poison the whole step
      if (f.problem.kind != ProblemKind::none) break;
      const int64_t row = first_nonfinite_row(bufs[i]);
      if (row >= 0) f.problem = {ProblemKind::nonfinite, i, 0, row, ""};
    }
    if (f.problem.kind == ProblemKind::none) {
      f.hs = bufs[0];
      f.ids = bufs[1];
      f.lhs = bufs[2];
      if (opt.consume && e.usp_sharded) {
        try {
          for (const auto& k : keys) store.remove(k);
        } catch (const StoreUnavailable&) {
          throw;
        } catch (const std::exception& ex) {
          // The sample was read: failing to free its space must not stop training.
          spdlog::warn("data.consume: removing the objects of sample {} failed: {}", e.key,
                       ex.what());
        }
      }
    }
    const auto mask = unpack_loss_mask(e.packed_loss_mask);
    f.loss_mask = shard_loss_mask(mask, f.geometry, s);
    f.local_loss_tokens = own_loss_tokens(mask, f.geometry, s);
  }
  if (!f.loss_mask.defined()) f.loss_mask = at::zeros({f.geometry.local_len}, at::kFloat);
  f.attention_mask = shard_attention_mask(f.geometry, s);
  f.positions = ring_chunk_positions(f.geometry, opt.ulysses, opt.ring_rank);
  if (f.problem.kind == ProblemKind::none && f.hs.defined() && !f.record.entry.segments.empty()) {
    // A packed sample: its documents' runs, halos, positions and block-0 segments, here on the
    // host in the prefetch thread.
    EAGLET_CHECK(opt.ulysses == opt.sp_size,
                 "sample {}: a packed sample (segments) needs parallel.ring = 1",
                 f.record.entry.key);
    ShardInput in{f.hs, f.ids, f.lhs, f.loss_mask, f.positions};
    pack_documents(in, f.record.entry.segments, f.geometry, s);
    f.hs = in.hs;
    f.ids = in.ids;
    f.lhs = in.lhs;
    f.loss_mask = in.loss_mask;
    f.positions = in.positions;
    f.runs = std::move(in.runs);
    f.segments = std::move(in.segments);
  }
  return f;
}

void place_shard(FetchedShard& f, const ReaderOptions& opt) {
  const bool async = opt.pin_memory && opt.device.is_cuda();
  auto move = [&](at::Tensor& t, std::optional<at::ScalarType> dtype) {
    if (!t.defined()) return;
    t = t.to(opt.device, /*non_blocking=*/async);
    if (dtype && t.scalar_type() != *dtype) t = t.to(*dtype);
  };
  move(f.hs, opt.hidden_dtype);
  move(f.lhs, opt.hidden_dtype);
  move(f.ids, at::kLong);
  move(f.loss_mask, std::nullopt);
  move(f.attention_mask, std::nullopt);
  move(f.positions, std::nullopt);
}

ShardReader::ShardReader(Store& store, Communicator& sp, ReaderOptions opt)
    : store_(store), sp_(sp), opt_(std::move(opt)) {
  EAGLET_CHECK(sp_.size() == opt_.sp_size && sp_.rank() == opt_.sp_rank,
               "shard reader: the SP communicator is rank {} of {}, the options say {} of {}",
               sp_.rank(), sp_.size(), opt_.sp_rank, opt_.sp_size);
  EAGLET_CHECK(std::string(sp_.backend()) != "nccl",
               "shard reader: the SP communicator must work on host tensors (host_group), not {}",
               sp_.backend());
}

std::string ShardReader::describe(const FetchedShard& f, int64_t rank, ProblemKind kind,
                                  int64_t object, int64_t expected, int64_t actual) const {
  const auto& r = f.record;
  const int64_t world = sp_.members().at(static_cast<size_t>(rank));
  if (kind == ProblemKind::manifest) return r.error;
  const std::string sample =
      fmt::format("sample {} (manifest {}:{})", r.entry.key, opt_.manifest_path, r.line);
  const std::string who = fmt::format("SP rank {}, world rank {}", rank, world);
  if (kind == ProblemKind::io)
    return fmt::format("{}: reading the shard failed on {} ({})", sample, who,
                       rank == opt_.sp_rank ? f.problem.message : "details in that rank's log");
  EAGLET_CHECK(object >= 0 && object < 3, "shard reader: bad object index {} from SP rank {}",
               object, rank);
  const auto spec = shard_objects(r.entry, f.geometry, rank)[static_cast<size_t>(object)];
  const std::string layout = fmt::format("{} {}", spec.dtype, shape_text(spec.shape));
  if (kind == ProblemKind::nonfinite)
    return fmt::format(
        "{}: object {} holds a non-finite value (NaN or Inf) in row {} of its {} "
        "rows ({}; {})",
        sample, spec.key, actual, spec.buffer_shape[0], layout, who);
  if (kind == ProblemKind::missing)
    return fmt::format(
        "{}: object {} is not in the {} store (consumed by an earlier run with "
        "data.consume=true, or never written) ({}; expected {} bytes = {})",
        sample, spec.key, store_.backend(), who, expected, layout);
  const std::string got =
      actual < 0 ? fmt::format("more than {}", expected) : std::to_string(actual);
  return fmt::format("{}: object {} has {} bytes, expected {} bytes = {} ({})", sample, spec.key,
                     got, expected, layout, who);
}

ShardSample ShardReader::finish(FetchedShard f) {
  if (f.ready) f.ready();
  const int64_t P = opt_.sp_size, s = opt_.sp_rank;
  auto info = at::zeros({kSlot * P + 1}, at::TensorOptions().dtype(at::kLong));
  auto* v = info.data_ptr<int64_t>();
  const auto& p = f.problem;
  v[kSlot * s + 0] = static_cast<int64_t>(p.kind);
  v[kSlot * s + 1] = p.object;
  v[kSlot * s + 2] = p.expected;
  v[kSlot * s + 3] = p.actual;
  v[kSlot * P] = p.kind == ProblemKind::none ? f.local_loss_tokens : 0;
  if (p.kind != ProblemKind::none && !p.message.empty() && p.kind != ProblemKind::manifest)
    spdlog::error("data: {}", p.message);  // the local detail stays in this rank's log
  sp_.all_reduce(info, ReduceOp::sum);     // on the host: nothing waits for the device's queue

  std::vector<std::string> problems;
  ProblemKind first = ProblemKind::none;
  for (int64_t r = 0; r < P; ++r) {
    const auto kind = static_cast<ProblemKind>(v[kSlot * r]);
    if (kind == ProblemKind::none) continue;
    EAGLET_CHECK(v[kSlot * r] > 0 && v[kSlot * r] < kProblemKinds,
                 "shard reader: bad problem kind {} from SP rank {}", v[kSlot * r], r);
    if (first == ProblemKind::none) first = kind;
    // Every rank of a group sees the same invalid line: report it once.
    if (kind == ProblemKind::manifest && !problems.empty()) continue;
    problems.push_back(describe(f, r, kind, v[kSlot * r + 1], v[kSlot * r + 2], v[kSlot * r + 3]));
  }

  ShardSample out;
  out.geometry = f.geometry;
  out.position = f.position;
  out.key = f.record.ok() ? f.record.entry.key : fmt::format("<invalid line {}>", f.record.line);
  out.global_loss_tokens = v[kSlot * P];
  out.attention_mask = f.attention_mask;
  out.input.positions = f.positions;
  if (f.record.ok()) out.documents = f.record.entry.segments;

  if (!problems.empty()) {
    std::string all;
    for (const auto& m : problems) all += (all.empty() ? "" : "; ") + m;
    EAGLET_CHECK(opt_.skip_errors,
                 "data: {} (data.on_error=fail; data.on_error=skip neutralises such samples)", all);
    ++skipped_errors_;
    ++skipped_by_kind_[static_cast<size_t>(first)];
    spdlog::warn("data: neutralised (data.on_error=skip, {} so far): {}", skipped_errors_, all);
    const auto& g = f.geometry;
    const int64_t ht = f.record.ok() ? f.record.entry.hidden_size : opt_.hidden_size;
    EAGLET_CHECK(ht >= 1, "data: cannot build a stand-in for {}: model hidden size unknown",
                 out.key);
    auto hidden = at::TensorOptions().dtype(opt_.hidden_dtype).device(opt_.device);
    const int64_t aux = f.record.ok() ? f.record.entry.num_aux : opt_.num_aux;
    out.input.hs = at::zeros({g.local_len, aux * ht}, hidden);
    out.input.lhs = at::zeros({g.local_len, ht}, hidden);
    out.input.ids = at::zeros({g.local_len}, hidden.dtype(at::kLong));
    out.input.loss_mask = at::zeros({g.local_len}, hidden.dtype(at::kFloat));
    out.neutralised = true;
    out.reason = all;
    out.global_loss_tokens = 0;
    return out;
  }
  if (opt_.consume && f.record.ok() && !f.record.entry.usp_sharded && s == 0) {
    // The objects are shared by the SP group; after the all-reduce every SP rank has read them.
    try {
      for (auto obj : kShardObjects) store_.remove(full_object_key(f.record.entry.key, obj));
    } catch (const std::exception& ex) {
      spdlog::warn("data.consume: removing the objects of sample {} failed: {}",
                   f.record.entry.key, ex.what());
    }
  }
  out.input.hs = f.hs;
  out.input.ids = f.ids;
  out.input.lhs = f.lhs;
  out.input.loss_mask = f.loss_mask;
  out.input.runs = f.runs;
  out.input.segments = f.segments;
  if (out.global_loss_tokens == 0) {
    // Decided from the global count, so every SP rank agrees (DESIGN §3).
    ++empty_samples_;
    out.neutralised = true;
    out.reason =
        fmt::format("sample {} has no loss token in its first {} rows", out.key, f.geometry.length);
    spdlog::debug("data: {}", out.reason);
  }
  return out;
}

ShardSample ShardReader::read(const ManifestRecord& record, int64_t position) {
  auto f = fetch(record, position);
  place_shard(f, opt_);
  return finish(std::move(f));
}

}  // namespace eaglet::data
