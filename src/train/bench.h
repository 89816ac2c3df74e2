// `eaglet bench`: full optimizer steps (forward + backward + gradient sync + clipping + AdamW,
// including the target-distribution computation) on random data of the config's shapes, timed
// on the device: ms/step, tokens/s, peak memory, model FLOPs and MFU against a given peak.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/config.h"
#include "dist/collective_stats.h"
#include "dist/process_groups.h"

namespace eaglet::train {

struct BenchOptions {
  int64_t seq_len = 8192;  // global sequence length S (split over the SP group)
  int64_t warmup = 2, steps = 5;
  double peak_tflops = 989.0;  // dense bf16 peak of one GPU (H100/H200 SXM)
  std::string profile;     // when set: one more step under the Kineto profiler, trace saved here
  bool floor = true;       // time this GPU's GEMM and attention rates and derive the floor
  bool attention = false;  // time block 0 alone: USP attention vs one GPU's share of it
  bool split = true;       // one more step, timed phase by phase (the time split)
  // A length mix (run_mix_bench): document lengths, used in order and cycled, each cut to
  // seq_len. pack: each step packs documents up to seq_len tokens into one sample (manifest
  // segments, DESIGN §6); otherwise each step trains one document. Both modes train the same
  // documents: those of warmup + steps packed steps.
  std::vector<int64_t> lengths;
  bool pack = false;
};

struct BenchResult {
  double ms_per_step = 0, tokens_per_s = 0, peak_gib = 0, tflop_per_step = 0, mfu = 0;
  double fastest_step_ms = 0, slowest_step_ms = 0;  // rank 0's timed steps, one by one
  double gemm_tflops = 0, attn_tflops = 0;  // rates measured on this GPU (0: not measured)
  double floor_ms = 0;  // single-GPU floor at this length ÷ SP size (0: not measured)
  // Block 0 forward + backward (Ulysses all-to-alls and ring included) per TTT step, against one
  // GPU's causal attention over the whole sequence ÷ SP size (0: not measured).
  double usp_attn_ms = 0, local_attn_ms = 0;
  // The time split of one more step with the device waited for after each phase (rank 0):
  // forward (target side included), backward, gradient sync, clip + AdamW; all 0: not measured.
  double split_ms[4] = {0, 0, 0, 0};
  // The collectives of each phase of one more step (with the split, on a world of more than one
  // rank), each timed alone (dist/collective_stats.h): calls, bytes, ms, bus bandwidth.
  CollectiveCounts split_collectives[4];
  // A length mix: timed steps, their documents and tokens (per replica).
  int64_t mix_steps = 0, mix_documents = 0, mix_tokens = 0;
};

// Necessary FLOPs of one optimizer step over S tokens (nothing recomputed counted): matrix
// products (the T steps' projections, MLP and lm_head forward and backward, fc, the target rows)
// and causal attention (block 0 forward and backward; the diagonal blocks are negligible).
struct StepFlops {
  double gemm = 0, attention = 0;
  double total() const { return gemm + attention; }
};
StepFlops step_flops(const DraftArchConfig& arch, int64_t ttt_length, int64_t seq_len);

// Document lengths of a named mix: "sharegpt-like" (log-normal, median 1200 tokens, σ 0.6, cut
// to [512, 8192]: mean ≈ 1.45K, mostly 0.5-4K), `count` of them, the same every run. Throws for
// an unknown name.
std::vector<int64_t> length_mix(const std::string& name, int64_t count);
// Document lengths from a file: one integer per line, or manifest lines (their seq_len).
std::vector<int64_t> lengths_from(const std::string& path);

// Collective over the world. With opt.lengths: the length mix (ms/step and tokens/s over the
// mix's steps; no floor, split or attention timing).
BenchResult run_mix_bench(const Config& cfg, const ProcessGroups& groups, const BenchOptions& opt);

// Collective over the world.
BenchResult run_bench(const Config& cfg, const ProcessGroups& groups, const BenchOptions& opt);

}  // namespace eaglet::train
