// TorchSpec metadata records -> manifest entries: field names, shapes, torch dtype names, and the
// TORCHSPEC_USP_* layout.
#include "data/torchspec_records.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <map>
#include <nlohmann/json.hpp>

#include "core/env.h"
#include "core/error.h"
#include "data/sharding.h"
#include "data/store.h"

namespace eaglet::data {
namespace {

// torch's dtype names (str(torch.bfloat16) = "torch.bfloat16") and short forms -> eaglet's.
std::string dtype_name(std::string s) {
  if (s.rfind("torch.", 0) == 0) s = s.substr(6);
  static const std::map<std::string, std::string> aliases = {
      {"bfloat16", "bfloat16"}, {"bf16", "bfloat16"}, {"float16", "float16"},
      {"half", "float16"},      {"fp16", "float16"},  {"float32", "float32"},
      {"float", "float32"},     {"fp32", "float32"},  {"int64", "int64"},
      {"long", "int64"},        {"int32", "int32"},   {"int", "int32"}};
  auto it = aliases.find(s);
  return it == aliases.end() ? s : it->second;
}

int64_t positive_env(const std::optional<std::string>& text, const char* name) {
  if (!text) return 0;
  try {
    size_t used = 0;
    const long long v = std::stoll(*text, &used);
    if (used == text->size() && v > 0) return v;
  } catch (const std::exception&) {
  }
  EAGLET_FAIL("{}={}: expected a positive integer", name, *text);
}

}  // namespace

UspLayout usp_layout_from_env() {
  const auto v = env::torchspec_usp();
  UspLayout l;
  l.sp_size = positive_env(v.sp_size, "TORCHSPEC_USP_SP_SIZE");
  l.ttt_length = positive_env(v.ttt_length, "TORCHSPEC_USP_TTT_LENGTH");
  l.max_seq_length = positive_env(v.max_seq_length, "TORCHSPEC_USP_MAX_SEQ_LENGTH");
  const int64_t ring = positive_env(v.ring_size, "TORCHSPEC_USP_RING_SIZE");
  EAGLET_CHECK(ring == 0 || l.sp_size == 0 || l.sp_size % ring == 0,
               "TORCHSPEC_USP_RING_SIZE={} does not divide TORCHSPEC_USP_SP_SIZE={}", ring,
               l.sp_size);
  if (v.sharded) {
    EAGLET_CHECK(*v.sharded == "0" || *v.sharded == "1",
                 "TORCHSPEC_USP_SHARDED_MOONCAKE={}: expected 0 or 1", *v.sharded);
    l.sharded_default = *v.sharded == "1";
  }
  l.origin = "TORCHSPEC_USP_*";
  return l;
}

ManifestEntry entry_from_torchspec_record(const std::string& text, const UspLayout& layout,
                                          const std::vector<int64_t>& aux_layer_ids,
                                          const std::string& path, int64_t line) {
  std::string where = fmt::format("records {}:{}", path, line);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    EAGLET_FAIL("{}: not valid JSON: {}", where, e.what());
  }
  EAGLET_CHECK(j.is_object(), "{}: expected a JSON object, got {}", where, j.type_name());

  ManifestEntry e;
  const char* key_field = j.contains("mooncake_key") ? "mooncake_key" : "key";
  EAGLET_CHECK(j.contains(key_field) && j[key_field].is_string(),
               "{}: needs the sample's key as a string field \"mooncake_key\" (or \"key\")", where);
  e.key = j[key_field].get<std::string>();
  try {
    check_key(e.key);
  } catch (const Error& err) {
    EAGLET_FAIL("{}: {}", where, err.message());
  }
  where += fmt::format(": sample {}", e.key);

  // Full shapes: [S] / [.., S, width] with any leading 1s (TorchSpec's batch dimension).
  EAGLET_CHECK(j.contains("tensor_shapes") && j["tensor_shapes"].is_object(),
               "{}: needs \"tensor_shapes\" (an object of full, unsharded shapes)", where);
  const auto& shapes = j["tensor_shapes"];
  auto shape = [&](const char* name, size_t rank) {
    EAGLET_CHECK(shapes.contains(name),
                 "{}: tensor_shapes has no \"{}\"{}", where, name,
                 std::string(name) == "last_hidden_states"
                     ? " (eaglet trains from the target's last hidden states; a producer that "
                       "stores none, or only _tgt, cannot be used)"
                     : "");
    const auto& v = shapes[name];
    bool ok = v.is_array() && v.size() >= rank;
    for (size_t i = 0; ok && i < v.size(); ++i)
      ok = v[i].is_number_integer() && v[i].get<int64_t>() >= 1;
    for (size_t i = 0; ok && i + rank < v.size(); ++i) ok = v[i].get<int64_t>() == 1;
    EAGLET_CHECK(ok, "{}: tensor_shapes.{}={} must be {} positive integers (leading 1s allowed)",
                 where, name, v.dump(), rank);
    std::vector<int64_t> dims;
    for (size_t i = v.size() - rank; i < v.size(); ++i) dims.push_back(v[i].get<int64_t>());
    return dims;
  };
  const auto ids = shape("input_ids", 1), hs = shape("hidden_states", 2),
             lhs = shape("last_hidden_states", 2);
  e.seq_len = ids[0];
  EAGLET_CHECK(hs[0] == e.seq_len && lhs[0] == e.seq_len,
               "{}: tensor_shapes disagree on the length: input_ids has {}, hidden_states {}, "
               "last_hidden_states {}",
               where, e.seq_len, hs[0], lhs[0]);
  e.hidden_size = lhs[1];
  EAGLET_CHECK(hs[1] % e.hidden_size == 0,
               "{}: hidden_states is {} wide, not a multiple of last_hidden_states' {} (num_aux "
               "aux layers of the target's hidden size)",
               where, hs[1], e.hidden_size);
  e.num_aux = hs[1] / e.hidden_size;

  if (j.contains("tensor_dtypes")) {
    const auto& dt = j["tensor_dtypes"];
    EAGLET_CHECK(dt.is_object(), "{}: tensor_dtypes must be an object, got {}", where, dt.dump());
    auto dtype = [&](const char* name, std::string fallback, bool floating) {
      if (!dt.contains(name)) return fallback;
      EAGLET_CHECK(dt[name].is_string(), "{}: tensor_dtypes.{} must be a string, got {}", where,
                   name, dt[name].dump());
      const std::string s = dtype_name(dt[name].get<std::string>());
      const DtypeInfo* d = find_dtype(s);
      EAGLET_CHECK(d != nullptr && d->floating == floating,
                   "{}: tensor_dtypes.{}={} is not supported ({})", where, name, dt[name].dump(),
                   floating ? "bfloat16, float16 or float32" : "int64 or int32");
      return s;
    };
    e.hs_dtype = dtype("hidden_states", e.hs_dtype, true);
    e.ids_dtype = dtype("input_ids", e.ids_dtype, false);
    // TorchSpec's reader takes the last hidden states in hidden_states' dtype when none is named.
    e.lhs_dtype = dtype("last_hidden_states", e.hs_dtype, true);
  }

  EAGLET_CHECK(j.contains("packed_loss_mask") && j["packed_loss_mask"].is_string(),
               "{}: needs \"packed_loss_mask\" (a string of run lengths, e.g. \"2,3,2,2,1\")",
               where);
  e.packed_loss_mask = j["packed_loss_mask"].get<std::string>();
  PackedMaskInfo mask;
  try {
    mask = check_packed_loss_mask(e.packed_loss_mask);
  } catch (const Error& err) {
    EAGLET_FAIL("{}: {}", where, err.message());
  }
  EAGLET_CHECK(mask.length <= e.seq_len,
               "{}: packed_loss_mask covers {} tokens, more than the {} of tensor_shapes", where,
               mask.length, e.seq_len);

  e.usp_sharded = layout.sharded_default;
  const nlohmann::json* flag = nullptr;
  if (j.contains("metadata") && j["metadata"].is_object() && j["metadata"].contains("usp_sharded"))
    flag = &j["metadata"]["usp_sharded"];
  else if (j.contains("usp_sharded"))
    flag = &j["usp_sharded"];
  if (flag != nullptr) {
    EAGLET_CHECK(flag->is_boolean(), "{}: usp_sharded must be true or false, got {}", where,
                 flag->dump());
    e.usp_sharded = flag->get<bool>();
  }
  if (e.usp_sharded) {
    EAGLET_CHECK(layout.sp_size > 0 && layout.ttt_length > 0 && layout.max_seq_length > 0,
                 "{}: a usp_sharded sample needs the layout it was sharded for: set "
                 "TORCHSPEC_USP_SP_SIZE, TORCHSPEC_USP_TTT_LENGTH and "
                 "TORCHSPEC_USP_MAX_SEQ_LENGTH as the producer had them, or give --sp-size, "
                 "--ttt-length and --max-seq-length (have: {}, {}, {})",
                 where, layout.sp_size, layout.ttt_length, layout.max_seq_length);
    e.sp_size = layout.sp_size;
    e.ttt_length = layout.ttt_length;
    e.max_seq_length = layout.max_seq_length;
  } else {
    // Cut by each reader for its own layout: these describe nothing (DATA.md §2).
    e.sp_size = 1;
    e.ttt_length = 0;
    e.max_seq_length = e.seq_len;
  }

  std::vector<int64_t> aux = aux_layer_ids;
  if (j.contains("aux_layer_ids")) {
    const auto& v = j["aux_layer_ids"];
    bool ok = v.is_array();
    for (size_t i = 0; ok && i < v.size(); ++i)
      ok = v[i].is_number_integer() && v[i].get<int64_t>() >= 0;
    EAGLET_CHECK(ok, "{}: aux_layer_ids={} must be a list of integers >= 0", where, v.dump());
    aux = v.get<std::vector<int64_t>>();
  }
  EAGLET_CHECK(aux.empty() || static_cast<int64_t>(aux.size()) == e.num_aux,
               "{}: {} aux layer ids [{}] for hidden_states of {} aux layers ({} / {})", where,
               aux.size(), fmt::join(aux, ", "), e.num_aux, hs[1], e.hidden_size);
  e.aux_layer_ids = aux;
  return e;
}

}  // namespace eaglet::data
