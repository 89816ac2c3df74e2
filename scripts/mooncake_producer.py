#!/usr/bin/env python3
"""Writes samples into a Mooncake Store in eaglet's pre-sharded layout, as an SGLang-side writer does.

DESIGN §2: for each sample of S tokens, L = min(S, max_seq_length), C = ceil(L / P),
local_len = C + T; shard s holds rows [s*C, min(s*C + local_len, L)) zero-padded to local_len, in
three objects of raw little-endian row-major bytes (no header):
  {key}_usp{s}_hs   bf16  [local_len, 3*Ht]   (three aux layers concatenated)
  {key}_usp{s}_ids  int64 [local_len]
  {key}_usp{s}_lhs  bf16  [local_len, Ht]     (target last hidden states)
Once all P*3 objects of a sample are in the store, one JSON line is appended (and fsynced) to the
manifest: key, seq_len, hidden_size, num_aux, packed_loss_mask, sp_size, ttt_length,
max_seq_length, dtypes.

With --dir DIR the same objects go to eaglet's `dir` store instead (one file per object, named
by its key escaped as eaglet's C++ reader does: `dir_file_name`), which needs no Mooncake. A key
is any non-empty string without NUL (e.g. `ultrachat.v2/conv:7_1a2b3c4d`); it goes to Mooncake
unchanged.

Samples come from random data (--lengths or --num-samples) or from safetensors files (--from),
each holding hidden_states [S, 3*Ht], input_ids [S], last_hidden_states [S, Ht] and optionally
loss_mask [S] (default: all ones). Only numpy and the mooncake wheel are needed; the writer class
(`ShardWriter`) also takes torch tensors when used as a module.

Objects live in the memory of the processes that lend segments to the store: run
`scripts/mooncake_master.sh start` (master plus a segment holder) and keep the default
--segment-size 0, or lend memory here and keep this process alive with --hold.

Example (loopback; see docs/MOONCAKE.md):
  scripts/mooncake_master.sh start
  python scripts/mooncake_producer.py --manifest runs/mc/manifest.jsonl --sp-size 4 \\
      --ttt-length 3 --max-seq-length 256 --hidden-size 64 --lengths 300,129,77
"""

import argparse
import json
import os
import re
import signal
import struct
import sys
import time

import numpy as np

if sys.byteorder != "little":
    sys.exit("mooncake_producer: objects are little-endian and this host is not")

DTYPES = {"hs": "bfloat16", "ids": "int64", "lhs": "bfloat16"}
NUM_AUX = 3


# --- layout (the same arithmetic as src/data/sharding.h) -------------------------------------------
def geometry(seq_len, max_seq_length, sp_size, ttt_length):
    """(L, C, local_len) of a sample."""
    length = min(seq_len, max_seq_length)
    chunk = -(-length // sp_size)
    return length, chunk, chunk + ttt_length


def shard_rows(shard, length, chunk, local_len):
    """[begin, end) rows of the sample that shard `shard` holds (end <= begin: all padding)."""
    begin = shard * chunk
    return begin, max(begin, min(begin + local_len, length))


def pack_loss_mask(mask):
    """Run lengths alternating 0-runs and 1-runs, starting with a (possibly empty) 0-run."""
    runs, current, count = [], 0, 0
    for v in (1 if x else 0 for x in mask):
        if v == current:
            count += 1
        else:
            runs.append(count)
            current, count = v, 1
    runs.append(count)
    return ",".join(str(r) for r in runs)


def check_key(key):
    """A store key is any non-empty string without NUL (src/data/store.cpp check_key)."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"store key {key!r} is empty (a key is any non-empty byte string)")
    if "\0" in key:
        raise ValueError(f"store key {key!r}: byte {key.index(chr(0))} is NUL, which no backend can store")
    return key


_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
MAX_DIR_FILE_NAME = 220  # kMaxDirFileName: the temporary name stays within NAME_MAX


def dir_file_name(key):
    """The dir store's file name of a key, as src/data/dir_store.cpp writes it: bytes (UTF-8) in
    [A-Za-z0-9_-] kept, every other byte, '%' included, as %XX (uppercase hex). Injective; a key of
    only those characters keeps its own name; never '.', '..', a '/' or a leading '.'."""
    check_key(key)
    return "".join(chr(b) if b in _PLAIN else f"%{b:02X}" for b in key.encode("utf-8"))


def sanitize_key(key):
    """A key made of [A-Za-z0-9_-] only, a leading digit prefixed with 'k' (as TorchSpec does).
    Optional cleanup for key prefixes (produce_hf's); the stores themselves take any key."""
    key = re.sub(r"[^A-Za-z0-9_-]", "_", key)
    return "k" + key if key[:1].isdigit() else key


def to_bf16_bits(a):
    """bf16 bit patterns (uint16) of a float array, rounded to nearest even; torch tensors too."""
    if hasattr(a, "detach"):  # torch.Tensor
        import torch

        t = a.detach().to("cpu", torch.bfloat16).contiguous()
        return t.view(torch.int16).numpy().view(np.uint16)
    a = np.asarray(a)
    if a.dtype == np.uint16:  # already bf16 bits (e.g. from a BF16 safetensors entry)
        return a
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(a), np.uint16(0x7FC0), r)


def to_int64(a):
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.ascontiguousarray(a, dtype=np.int64)


def load_safetensors(path):
    """{name: numpy array}; BF16 entries come back as uint16 bit patterns."""
    kinds = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32, "F64": np.float64,
             "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
             "BOOL": np.bool_}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in kinds:
            raise SystemExit(f"{path}: tensor {name}: dtype {info['dtype']} is not supported")
        b, e = info["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype=kinds[info["dtype"]]).reshape(info["shape"])
    return out


# --- where objects go ------------------------------------------------------------------------------
class MooncakeSink:
    """A Mooncake client: objects staged in one registered buffer, written by batch_upsert_from."""

    def __init__(self, store):
        self.store = store
        self._buf = None

    def _staging(self, nbytes):
        if self._buf is None or self._buf.nbytes < nbytes:
            if self._buf is not None:
                self.store.unregister_buffer(self._buf.ctypes.data)
            self._buf = np.empty(max(nbytes, 1 << 20), dtype=np.uint8)
            rc = self.store.register_buffer(self._buf.ctypes.data, self._buf.nbytes)
            if rc != 0:
                raise RuntimeError(f"register_buffer of {self._buf.nbytes} bytes failed: {rc}")
        return self._buf

    def put(self, objects):
        buf = self._staging(sum(len(v) for _, v in objects))
        ptrs, sizes, offset = [], [], 0
        for _, value in objects:
            buf[offset: offset + len(value)] = np.frombuffer(value, dtype=np.uint8)
            ptrs.append(buf.ctypes.data + offset)
            sizes.append(len(value))
            offset += len(value)
        # upsert: a plain Mooncake put of an existing key keeps the old value without an error.
        codes = self.store.batch_upsert_from([k for k, _ in objects], ptrs, sizes)
        bad = [(k, c) for (k, _), c in zip(objects, codes) if c != 0]
        if bad:
            raise RuntimeError(f"writing {bad[0][0]} failed with Mooncake code {bad[0][1]} "
                               f"({len(bad)} of {len(objects)} objects failed)")

    def close(self):
        self.store.close()


class DirSink:
    """eaglet's `dir` store: one file per object named by its key, written to a hidden temporary
    file, fsynced and renamed (a reader never sees part of a value)."""

    def __init__(self, folder):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)

    def put(self, objects):
        for key, value in objects:
            name = dir_file_name(key)
            if len(name) > MAX_DIR_FILE_NAME:
                raise RuntimeError(f"dir store {self.folder}: key {key!r} needs a {len(name)}-byte "
                                   f"file name once escaped (at most {MAX_DIR_FILE_NAME})")
            tmp = os.path.join(self.folder, f".{name}.tmp{os.getpid()}")
            with open(tmp, "wb") as f:
                f.write(value)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, os.path.join(self.folder, name))
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self):
        pass


# --- the writer ----------------------------------------------------------------------------------
class ShardWriter:
    """Writes whole samples (all P shards, then the manifest line) into a sink."""

    def __init__(self, sink, manifest, sp_size, ttt_length, max_seq_length, dump_dir=None):
        self.sink, self.manifest = sink, manifest
        self.sp_size, self.ttt_length, self.max_seq_length = sp_size, ttt_length, max_seq_length
        self.dump_dir = dump_dir
        if dump_dir:
            os.makedirs(dump_dir, exist_ok=True)
        if os.path.dirname(manifest):
            os.makedirs(os.path.dirname(manifest), exist_ok=True)

    def shard_objects(self, key, hs, ids, lhs):
        """[(object key, bytes)] of every shard, in shard order, hs/ids/lhs each."""
        seq_len = ids.shape[0]
        length, chunk, local_len = geometry(seq_len, self.max_seq_length, self.sp_size,
                                            self.ttt_length)
        objects = []
        for s in range(self.sp_size):
            b, e = shard_rows(s, length, chunk, local_len)
            parts = {
                "hs": np.zeros((local_len, hs.shape[1]), dtype=np.uint16),
                "ids": np.zeros((local_len,), dtype=np.int64),
                "lhs": np.zeros((local_len, lhs.shape[1]), dtype=np.uint16),
            }
            parts["hs"][: e - b] = hs[b:e]
            parts["ids"][: e - b] = ids[b:e]
            parts["lhs"][: e - b] = lhs[b:e]
            for suffix in ("hs", "ids", "lhs"):
                objects.append((f"{key}_usp{s}_{suffix}", parts[suffix].tobytes()))
        return objects

    def write(self, key, hidden_states, input_ids, last_hidden_states, loss_mask=None):
        """Stores one sample (bf16 hs/lhs, int64 ids) and appends its manifest line. The key is
        stored as given (any non-empty string without NUL)."""
        key = check_key(key)
        hs, lhs, ids = to_bf16_bits(hidden_states), to_bf16_bits(last_hidden_states), to_int64(input_ids)
        seq_len = ids.shape[0]
        hidden = lhs.shape[1] if lhs.ndim == 2 else -1
        if ids.ndim != 1 or seq_len < 1 or hs.shape != (seq_len, NUM_AUX * hidden) or lhs.shape != (seq_len, hidden):
            raise ValueError(f"sample {key}: expected hidden_states [S, 3*Ht], input_ids [S], "
                             f"last_hidden_states [S, Ht]; got {tuple(hs.shape)}, "
                             f"{tuple(ids.shape)}, {tuple(lhs.shape)}")
        mask = np.ones(seq_len, dtype=np.uint8) if loss_mask is None else np.asarray(
            loss_mask.detach().cpu().numpy() if hasattr(loss_mask, "detach") else loss_mask)
        if mask.shape != (seq_len,):
            raise ValueError(f"sample {key}: loss_mask has shape {tuple(mask.shape)}, expected ({seq_len},)")

        objects = self.shard_objects(key, hs, ids, lhs)
        try:
            self.sink.put(objects)
        except RuntimeError as e:
            raise RuntimeError(f"sample {key}: {e}") from None
        if self.dump_dir:
            for k, value in objects:
                with open(os.path.join(self.dump_dir, dir_file_name(k)), "wb") as f:
                    f.write(value)
        line = json.dumps({
            "key": key, "seq_len": int(seq_len), "hidden_size": int(hidden), "num_aux": NUM_AUX,
            "packed_loss_mask": pack_loss_mask(mask), "sp_size": self.sp_size,
            "ttt_length": self.ttt_length, "max_seq_length": self.max_seq_length,
            "dtypes": DTYPES,
        })
        # One write of the whole line, then fsync: a reader never sees half a line.
        fd = os.open(self.manifest, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return key


def random_sample(rng, seq_len, hidden, vocab):
    hs = rng.standard_normal((seq_len, NUM_AUX * hidden), dtype=np.float32)
    lhs = rng.standard_normal((seq_len, hidden), dtype=np.float32)
    ids = rng.integers(0, vocab, size=seq_len, dtype=np.int64)
    # A prompt (no loss), an answer, and a second prompt/answer turn when long enough.
    mask = np.zeros(seq_len, dtype=np.uint8)
    prompt = max(1, seq_len // 4)
    mask[prompt:] = 1
    if seq_len >= 16:
        mask[seq_len // 2: seq_len // 2 + seq_len // 8] = 0
    return hs, ids, lhs, mask


def parse_size(text):
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: expected bytes like 0, 512MB, 1GB")
    return int(m.group(1)) * 1024 ** "_KMGT".index(m.group(2).upper() or "_")


def connect(a):
    """A set-up Mooncake client per the command line, or exit with what is wrong."""
    if a.local_hostname.startswith("127.") or a.local_hostname == "localhost":
        # The loopback trap: otherwise the transfer engine advertises the first non-lo address.
        os.environ.setdefault("MC_TCP_BIND_ADDRESS", a.local_hostname)
    os.environ.setdefault("MC_LOG_LEVEL", "WARNING")
    try:
        from mooncake.store import MooncakeDistributedStore
    except ImportError as e:
        sys.exit(f"mooncake_producer: cannot import mooncake.store ({e}); "
                 "pip install mooncake-transfer-engine-non-cuda (docs/MOONCAKE.md)")
    store = MooncakeDistributedStore()
    rc = store.setup(a.local_hostname, a.metadata, a.segment_size, a.buffer_size, a.protocol,
                     a.rdma_device, a.master)
    if rc != 0:
        sys.exit(f"mooncake_producer: setup failed ({rc}) with master {a.master}, "
                 f"metadata {a.metadata}: is the master running (scripts/mooncake_master.sh)?")
    return store


def add_sink_args(p, rdma_device_flag="--device"):
    """--dir and the Mooncake client's options; scripts/produce_hf.py shares them (there the RDMA
    device list is --mooncake-device, as --device picks the torch device)."""
    p.add_argument("--dir", help="write into eaglet's dir store at DIR instead of Mooncake")
    mc = p.add_argument_group("Mooncake client (unless --dir)")
    mc.add_argument("--master", default="127.0.0.1:50051")
    mc.add_argument("--metadata", default="http://127.0.0.1:8090/metadata")
    mc.add_argument("--protocol", default="tcp", choices=["tcp", "rdma"])
    mc.add_argument(rdma_device_flag, dest="rdma_device", default="", help="RDMA device names")
    mc.add_argument("--local-hostname", default="127.0.0.1")
    mc.add_argument("--segment-size", type=parse_size, default=0,
                    help="memory this process lends the store (objects vanish when it exits)")
    mc.add_argument("--buffer-size", type=parse_size, default=parse_size("64MB"))
    mc.add_argument("--hold", action="store_true",
                    help="after writing, keep running (and lending memory) until SIGTERM/SIGINT")


def open_sink(a):
    """The sink that the options of add_sink_args name: the dir store or a Mooncake client."""
    return DirSink(a.dir) if a.dir else MooncakeSink(connect(a))


def hold_if_asked(a, name):
    """With --hold, keeps the process (and the memory it lends the store) alive until a signal."""
    if not a.hold:
        return
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print(f"{name}: holding (SIGTERM to stop)", flush=True)
    while not stop:
        time.sleep(0.2)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--manifest", required=True, help="manifest JSONL to append to")
    p.add_argument("--sp-size", type=int, required=True, help="P = parallel.ulysses * parallel.ring")
    p.add_argument("--ttt-length", type=int, required=True, help="T = training.ttt_length")
    p.add_argument("--max-seq-length", type=int, required=True, help="data.max_seq_length")
    src = p.add_argument_group("samples (random unless --from)")
    src.add_argument("--lengths", help="comma-separated token counts S, one sample each")
    src.add_argument("--num-samples", type=int, default=0, help="random lengths instead")
    src.add_argument("--min-len", type=int, default=8)
    src.add_argument("--max-len", type=int, default=512)
    src.add_argument("--hidden-size", type=int, default=64, help="Ht (random samples)")
    src.add_argument("--vocab", type=int, default=256, help="token ids drawn from [0, vocab)")
    src.add_argument("--seed", type=int, default=0)
    src.add_argument("--key-prefix", default="sample", help="keys are PREFIX_<index>")
    src.add_argument("--from", dest="inputs", nargs="+", default=[],
                     help="safetensors files, one sample each (key = file name)")
    src.add_argument("--dump", help="also write each object's exact bytes to DIR/<object key>")
    add_sink_args(p)
    a = p.parse_args()
    if a.sp_size < 1 or a.ttt_length < 0 or a.max_seq_length < 1:
        p.error("--sp-size >= 1, --ttt-length >= 0 and --max-seq-length >= 1 are required")

    sink = open_sink(a)
    writer = ShardWriter(sink, a.manifest, a.sp_size, a.ttt_length, a.max_seq_length, a.dump)

    rng = np.random.default_rng(a.seed)
    count = 0
    if a.inputs:
        for path in a.inputs:
            t = load_safetensors(path)
            missing = {"hidden_states", "input_ids", "last_hidden_states"} - set(t)
            if missing:
                sys.exit(f"mooncake_producer: {path} lacks {', '.join(sorted(missing))}")
            key = os.path.splitext(os.path.basename(path))[0]
            key = writer.write(key, t["hidden_states"], t["input_ids"], t["last_hidden_states"],
                               t.get("loss_mask"))
            print(f"wrote {key}: S={t['input_ids'].shape[0]} from {path}", flush=True)
            count += 1
    else:
        if a.lengths:
            lengths = [int(x) for x in a.lengths.split(",") if x.strip()]
        else:
            lengths = [int(x) for x in rng.integers(a.min_len, a.max_len + 1, size=a.num_samples)]
        if not lengths:
            p.error("give --lengths, --num-samples or --from")
        for i, seq_len in enumerate(lengths):
            hs, ids, lhs, mask = random_sample(rng, seq_len, a.hidden_size, a.vocab)
            key = writer.write(f"{a.key_prefix}_{i}", hs, ids, lhs, mask)
            length, chunk, local_len = geometry(seq_len, a.max_seq_length, a.sp_size, a.ttt_length)
            print(f"wrote {key}: S={seq_len} L={length} C={chunk} local_len={local_len}", flush=True)
            count += 1
    print(f"mooncake_producer: {count} samples, {count * a.sp_size * 3} objects, manifest "
          f"{a.manifest}", flush=True)
    hold_if_asked(a, "mooncake_producer")
    sink.close()


if __name__ == "__main__":
    main()
