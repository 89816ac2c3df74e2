#!/usr/bin/env python3
"""Writes samples the way TorchSpec's producers do, for ctest mpi_torchspec_dropin*.

What SGLang with TorchSpec's patch leaves behind, and nothing eaglet-specific:
  * keys `{data_id}_{uuid4().hex[:8]}` with the dataset's id unsanitised (here
    `ultrachat.v2/conv:<i>`: '.', '/' and ':' in every key);
  * with TORCHSPEC_USP_SHARDED_MOONCAKE=1 (the layout in TORCHSPEC_USP_SP_SIZE / _TTT_LENGTH /
    _MAX_SEQ_LENGTH, as SglEngine exports them): `put_usp_shards` objects `{key}_usp{s}_hs|_ids|_lhs`
    (split_usp_batch's layout, which scripts/mooncake_producer.py's ShardWriter.shard_objects
    reproduces byte for byte); otherwise the non-USP `put`: full-length `{key}_hs|_ids|_lhs`;
  * no manifest: one metadata record per sample, as SglEngine.generate returns it plus what the
    controller adds: mooncake_key, the full tensor_shapes, tensor_dtypes in torch's names,
    packed_loss_mask, and metadata {"usp_sharded": true} for sharded samples only.
The samples come from full-sample safetensors files (`eaglet data synth --save-full`), any number
of aux layers; each is also copied to --reference DIR/<key>.safetensors for `eaglet data check
--reference`.
"""

import argparse
import glob
import json
import os
import shutil
import sys
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import mooncake_producer as mp  # noqa: E402  (the sinks and the shard layout)


def env_int(name):
    text = os.environ.get(name, "")
    if not text.isdigit() or int(text) < 1:
        sys.exit(f"torchspec_writer: {name}={text!r}: set it as TorchSpec's SglEngine does")
    return int(text)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--from", dest="source", required=True, help="folder of full-sample safetensors")
    p.add_argument("--records", required=True, help="JSONL of metadata records to write")
    p.add_argument("--reference", required=True, help="copies of the samples under their new keys")
    p.add_argument("--data-id", default="ultrachat.v2/conv:", help="dataset id prefix of the keys")
    mp.add_sink_args(p)
    a = p.parse_args()

    sharded = os.environ.get("TORCHSPEC_USP_SHARDED_MOONCAKE") == "1"
    writer = None
    if sharded:
        writer = mp.ShardWriter(None, os.devnull, env_int("TORCHSPEC_USP_SP_SIZE"),
                                env_int("TORCHSPEC_USP_TTT_LENGTH"),
                                env_int("TORCHSPEC_USP_MAX_SEQ_LENGTH"))
    sink = mp.open_sink(a)
    files = sorted(glob.glob(os.path.join(a.source, "*.safetensors")))
    if not files:
        sys.exit(f"torchspec_writer: no *.safetensors in {a.source}")
    with open(a.records, "w") as records:
        for i, path in enumerate(files):
            t = mp.load_safetensors(path)
            hs, lhs = mp.to_bf16_bits(t["hidden_states"]), mp.to_bf16_bits(t["last_hidden_states"])
            ids = mp.to_int64(t["input_ids"])
            key = f"{a.data_id}{i}_{uuid.uuid4().hex[:8]}"
            if sharded:
                objects = writer.shard_objects(key, hs, ids, lhs)
            else:
                objects = [(f"{key}_hs", hs.tobytes()), (f"{key}_ids", ids.tobytes()),
                           (f"{key}_lhs", lhs.tobytes())]
            sink.put(objects)
            ref = os.path.join(a.reference, key + ".safetensors")
            os.makedirs(os.path.dirname(ref), exist_ok=True)
            shutil.copyfile(path, ref)
            seq_len = int(ids.shape[0])
            record = {
                "mooncake_key": key,
                "tensor_shapes": {"hidden_states": [seq_len, int(hs.shape[1])],
                                  "input_ids": [seq_len],
                                  "last_hidden_states": [seq_len, int(lhs.shape[1])]},
                "tensor_dtypes": {"hidden_states": "torch.bfloat16", "input_ids": "torch.int64",
                                  "last_hidden_states": "torch.bfloat16"},
                "packed_loss_mask": mp.pack_loss_mask(t["loss_mask"]),
                "metadata": {"usp_sharded": True} if sharded else {},
            }
            records.write(json.dumps(record) + "\n")
    print(f"torchspec_writer: {len(files)} samples ({'USP-sharded' if sharded else 'unsharded'}) "
          f"into {a.dir or a.master}, records {a.records}", flush=True)
    sink.close()


if __name__ == "__main__":
    main()
