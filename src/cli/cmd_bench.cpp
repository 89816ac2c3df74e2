// eaglet bench: timed optimizer steps on random data of the config's shapes.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <iostream>

#include "cli/commands.h"
#include "cli/session.h"
#include "core/error.h"
#include "dist/nvtx.h"
#include "train/bench.h"

namespace eaglet::cli {

Command bench_command() {
  auto opts = session_options();
  opts.push_back({"--seq", "N", "global sequence length (default 8192)"});
  opts.push_back({"--steps", "N", "timed steps (default 5)"});
  opts.push_back({"--warmup", "N", "untimed steps first (default 2)"});
  opts.push_back({"--peak-tflops", "X",
                  "dense bf16 peak of one GPU for the MFU (default 989, H100/H200 SXM)"});
  opts.push_back({"--profile", "FILE",
                  "after timing, trace one more step with the PyTorch (Kineto) profiler into FILE "
                  "(Chrome trace JSON; rank 0); scripts/bench/profile_summary.py sums it up"});
  opts.push_back({"--no-floor", "",
                  "skip timing this GPU's GEMM and attention rates (the floor and ratio columns)"});
  opts.push_back({"--no-split", "",
                  "skip the time split (one more step after timing, the device waited for after "
                  "each phase: forward, backward, gradient sync, clip + AdamW; with several ranks also "
                  "each phase's collectives: calls, bytes, time, bus bandwidth)"});
  opts.push_back({"--attention", "",
                  "also time block 0 alone (Ulysses all-to-alls + ring + merges, forward and "
                  "backward) against one GPU's causal attention over the sequence / (U x R)"});
  opts.push_back({"--length-mix", "NAME",
                  "time a mix of document lengths instead of one --seq sample: sharegpt-like "
                  "(mean ~1.45K tokens, 512-8192)"});
  opts.push_back({"--lengths-from", "FILE",
                  "time the document lengths in FILE (one per line, or manifest lines' seq_len)"});
  opts.push_back({"--pack", "",
                  "with a mix: pack documents up to --seq tokens per step (manifest segments; "
                  "needs parallel.ring = 1); without: one document per step"});
  return {"bench",
          "time full optimizer steps (fwd + bwd + sync + clip + AdamW, target distribution "
          "included) on random "
          "data of the config's shapes: ms/step, tokens/s, peak GiB, TFLOP/step, MFU, the time "
          "split",
          opts, [](const ParsedArgs& args) {
            return run_distributed(args, "bench", [&](Session& s) {
              train::BenchOptions o;
              o.seq_len = std::stoll(args.get("--seq", "8192"));
              o.steps = std::stoll(args.get("--steps", "5"));
              o.warmup = std::stoll(args.get("--warmup", "2"));
              o.peak_tflops = std::stod(args.get("--peak-tflops", "989"));
              o.profile = args.get("--profile", "");
              o.floor = !args.has("--no-floor");
              o.attention = args.has("--attention");
              o.split = !args.has("--no-split");
              if (s.env.rank() == 0 && s.device.is_cuda() && s.config.runtime.collectives == "host")
                spdlog::warn(
                    "bench: runtime.collectives=host moves every exchange through host memory "
                    "(ranks may share a GPU): the times below do not represent NCCL runs");
              const std::string mix = args.get("--length-mix", ""),
                                from = args.get("--lengths-from", "");
              if (!mix.empty() || !from.empty()) {
                o.lengths = from.empty() ? train::length_mix(mix, 4096) : train::lengths_from(from);
                o.pack = args.has("--pack");
                auto r = train::run_mix_bench(s.config, *s.groups, o);
                if (s.env.rank() == 0)
                  std::cout << fmt::format(
                      "bench: mix {} {}: {} documents, {} tokens (mean {:.0f}) in {} timed steps "
                      "(world {}, U {} x R {}, T {}): {:.1f} ms/step, {:.0f} tokens/s, peak {:.2f} "
                      "GiB\n",
                      from.empty() ? mix : from,
                      o.pack ? fmt::format("packed into {}-token samples", o.seq_len)
                             : std::string("one document per step"),
                      r.mix_documents, r.mix_tokens,
                      static_cast<double>(r.mix_tokens) / static_cast<double>(r.mix_documents),
                      r.mix_steps, s.groups->layout().world, s.groups->layout().ulysses,
                      s.groups->layout().ring, s.config.training.ttt_length, r.ms_per_step,
                      r.tokens_per_s, r.peak_gib);
                return 0;
              }
              EAGLET_CHECK(!args.has("--pack"), "bench: --pack needs --length-mix or --lengths-from");
              auto r = train::run_bench(s.config, *s.groups, o);
              if (s.env.rank() == 0)
                std::cout << fmt::format(
                    "bench: seq {} world {} (U {} x R {}) T {}: {:.1f} ms/step, {:.0f} tokens/s, "
                    "peak {:.2f} GiB, "
                    "{:.1f} TFLOP/step, MFU {:.1f}%\n",
                    o.seq_len, s.groups->layout().world, s.groups->layout().ulysses,
                    s.groups->layout().ring, s.config.training.ttt_length, r.ms_per_step,
                    r.tokens_per_s, r.peak_gib, r.tflop_per_step, 100 * r.mfu);
              if (s.env.rank() == 0)
                std::cout << fmt::format("steps: {} timed, fastest {:.1f} ms, slowest {:.1f} ms\n",
                                         o.steps, r.fastest_step_ms, r.slowest_step_ms);
              if (s.env.rank() == 0 && o.split)
                std::cout << fmt::format(
                    "split: forward {:.1f} ms, backward {:.1f} ms, gradient sync {:.1f} ms, "
                    "clip + AdamW {:.1f} ms (one more step, the device waited for after each "
                    "phase)\n",
                    r.split_ms[0], r.split_ms[1], r.split_ms[2], r.split_ms[3]);
              if (s.env.rank() == 0 && kNvtx)
                std::cout << "nvtx: ranges forward, ttt step k, backward, gradient sync, clip + "
                             "AdamW (nsys profile -t cuda,nvtx shows them)\n";
              if (s.env.rank() == 0 && o.split && s.groups->layout().world > 1)
                std::cout << fmt::format(
                    "collectives (rank 0, one more step, each timed alone): forward: {}; "
                    "backward: {}; gradient sync: {}; clip + AdamW: {}\n",
                    collectives::text(r.split_collectives[0]),
                    collectives::text(r.split_collectives[1]),
                    collectives::text(r.split_collectives[2]),
                    collectives::text(r.split_collectives[3]));
              if (s.env.rank() == 0 && r.usp_attn_ms > 0)
                std::cout << fmt::format(
                    "attention: block 0 {:.2f} ms per TTT step (slowest rank), one GPU's share "
                    "{:.2f} ms, overhead {:.3f}x\n",
                    r.usp_attn_ms, r.local_attn_ms, r.usp_attn_ms / r.local_attn_ms);
              if (s.env.rank() == 0 && r.floor_ms > 0)
                std::cout << fmt::format(
                    "floor: {:.1f} ms/step (GEMM {:.0f} TFLOP/s, causal attention {:.0f} TFLOP/s "
                    "measured here; single-GPU floor / {}), ratio {:.2f}x, efficiency {:.0f}%\n",
                    r.floor_ms, r.gemm_tflops, r.attn_tflops, s.groups->layout().sp(),
                    r.ms_per_step / r.floor_ms, 100 * r.floor_ms / r.ms_per_step);
              return 0;
            });
          }};
}

}  // namespace eaglet::cli
