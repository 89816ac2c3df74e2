// eaglet verify-usp: the USP health check a user runs after a driver or NCCL change.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <iostream>

#include "cli/commands.h"
#include "cli/session.h"
#include "train/verify_usp.h"

namespace eaglet::cli {

Command verify_usp_command() {
  auto opts = session_options();
  opts.push_back({"--seq", "N", "sample length (default data.max_seq_length)"});
  opts.push_back({"--seed", "N", "seed of the synthetic sample (default 1)"});
  opts.push_back(
      {"--tol", "X",
       "tolerance for losses, gradients and row-normalised errors (default fp32 1e-5, rows "
       "1e-4; bf16 2e-2 losses, 3e-2 gradients, 1e-1 rows)"});
  opts.push_back(
      {"--loss-in-last-shard", "", "put every loss token in the last shard (others have none)"});
  opts.push_back({"--documents", "N",
                  "pack N documents in each sample (manifest segments; needs parallel.ring = 1)"});
  return {
      "verify-usp",
      "run D x grad_accum synthetic samples through the training step of this config (layout, "
      "kernels, accumulation, gradient sync) and compare every loss and gradient with an fp64 "
      "dense reference on one rank (bf16: with the same step on one rank in bf16, and with fp64 "
      "for gross errors) (last line: verify-usp: ... PASS or FAIL)",
      opts, [](const ParsedArgs& args) {
        return run_distributed(args, "verify-usp", [&](Session& s) {
          train::VerifyOptions o;
          o.seq_len = std::stoll(args.get("--seq", "0"));
          o.seed = std::stoll(args.get("--seed", "1"));
          if (args.has("--tol")) o.tol_loss = o.tol_grad = o.tol_row = std::stod(args.get("--tol"));
          o.loss_in_last_shard = args.has("--loss-in-last-shard");
          o.documents = std::stoll(args.get("--documents", "1"));
          auto r = train::verify_usp(s.config, *s.groups, o);
          spdlog::info(
              "verify-usp: {} samples against {}; tolerance loss {:g}, gradients {:g}, rows {:g}; "
              "losses {}; worst gradient {} {}; against the fp64 reference: {} (tolerance {:g})",
              r.samples, r.against, r.tol_loss, r.tol_grad, r.tol_row, r.loss.text(), r.worst_grad,
              r.grad.text(), r.fp64.text(), r.tol_fp64);
          if (s.env.rank() == 0)
            std::cout << fmt::format("verify-usp: max_rel_loss={:.3e} max_rel_grad={:.3e} {}\n",
                                     r.max_rel_loss, r.max_rel_grad, r.pass ? "PASS" : "FAIL")
                      << std::flush;
          return r.pass ? 0 : 1;
        });
      }};
}

}  // namespace eaglet::cli
