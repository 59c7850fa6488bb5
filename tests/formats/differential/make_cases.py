#!/usr/bin/env python3
"""Random torch.save checkpoints for graft's differential test (test_torch_save_differential.cpp).

  python make_cases.py write OUT_DIR SEED COUNT PREFIX
      writes OUT_DIR/PREFIX_0000.pt ... with this interpreter's torch (1.13 or 2.x); case i
      depends only on (SEED, PREFIX, i) and the torch release (legacy-format files name their
      storages by address, so their bytes, not their content, change from run to run). Some
      storages are tagged with a foreign location (cuda:0, cuda:1, mps) by patching
      torch.serialization.location_tag while saving: no GPU needed;
  python make_cases.py oracle OUT_DIR
      loads every OUT_DIR/*.pt, sorted by name, with torch.load(p, weights_only=True,
      map_location="cpu") and writes OUT_DIR/expected.txt: per file a block "== NAME", then
      the summary lines or "REFUSED <exception class>".

The safe loader of PyTorch 2.x reads only pickle protocol 2's opcodes (and PROTO 3's header):
it refuses every protocol 4/5 pickle (FRAME) and protocol 3's bytes (SHORT_BINBYTES), which
graft reads by design. For such files (UnpicklingError "Unsupported operand N" on a pickle of
protocol > 2) the block holds a "# ..." note and the summary of torch.load(weights_only=False):
the files are our own. Run with torch 1.13 (no 2.x at hand), whose safe loader refuses floats,
sets and bytes as well, every "Unsupported operand/class" refusal falls back so.

Summary lines are those of tests/formats/test_torch_save_support.hpp's py_summary, with a
tensor's stride, storage offset and storage group (tensors sharing a storage share the number,
numbered by first appearance) appended. Strings and bytes are generated so that Python's repr
is the C++ twin's plain quoting (no quotes, no backslash in str, printable str).
"""
import collections, math, os, pickle, random, re, sys, warnings, zipfile, zlib

import torch

warnings.filterwarnings("ignore")

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.complex64, torch.complex128,
          torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool]
FLOATING = {torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.complex64, torch.complex128}
INTS = [0, 1, -1, 7, 255, 256, -256, 65535, 65536, 2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**32, 10**15, 2**53 + 1,
        2**63 - 1, -2**63]
FLOATS = [0.1, 1e-05, 0.0003, 123456789012345.0, 1e16, 1.5e300, 5e-324, -0.0, float("inf"), float("-inf"), float("nan")]
STRS = ["", "lr", "a b", "weight", "module.layer.0", "caf\u00e9", "\u00fcn\u00efc\u00f6d\u00e9", "\u4e2d\u6587",
        "x" * 300]
KEYS = ["w", "b", "weight", "bias", "model", "optimizer", "state", "param_groups", "epoch", "layer.0.w", "running_mean",
        "\u00e9t\u00e9"]
LOCATIONS = ["cuda:0", "cuda:1", "mps"]
OLD_TORCH = int(torch.__version__.split(".")[0]) < 2
BYTE_CHOICES = bytes(c for c in range(256) if c not in (0x22, 0x27))  # no quotes: repr is b'...'


class Case:
    def __init__(self, rng):
        self.rng, self.bases, self.tensors, self.subtrees = rng, [], [], []

    def data(self, dtype, shape):
        n, r = math.prod(shape), self.rng
        if n == 0:
            return torch.zeros(shape, dtype=dtype)
        if dtype == torch.bool:
            buf = bytes(r.getrandbits(1) for _ in range(n))
        else:
            buf = r.randbytes(n * torch.empty((), dtype=dtype).element_size())  # any bits: NaN payloads too
        return torch.frombuffer(bytearray(buf), dtype=dtype).clone().reshape(shape)

    def shape(self, allow_empty=True):
        r = self.rng
        if r.random() < 0.05:
            return [r.randint(100, 3000)]
        lo = 0 if allow_empty and r.random() < 0.15 else 1
        return [r.randint(lo, 5) for _ in range(r.choice([0, 1, 1, 2, 2, 3]))]

    def base(self):
        t = self.data(self.rng.choice(DTYPES), self.shape(allow_empty=False))
        self.bases.append(t)
        return t

    def view(self):
        r = self.rng
        b = r.choice(self.bases) if self.bases and r.random() < 0.7 else self.base()
        flat, n, k = b.reshape(-1), b.numel(), r.randrange(7)
        if k == 0 and b.dim() >= 2:
            return b.transpose(0, b.dim() - 1)
        if k == 1 and b.dim() >= 1:
            return b[r.randrange(b.shape[0] + 1)::r.randint(1, 3)]
        if k == 2 and b.dim() >= 2:
            return b[r.randrange(b.shape[0]):, ::r.randint(1, 3)]
        if k == 3 and n >= 1:
            i = r.randrange(n)
            return flat[i:i + 1].expand(r.randint(1, 4), r.randint(0, 3))
        if k == 4 and b.dim() >= 2:
            return b.diagonal(r.randrange(-1, 2) if min(b.shape[:2]) > 1 else 0)
        if k == 5:  # any strides that stay inside the storage, overlaps and stride 0 included
            for _ in range(10):
                size = [r.randint(0, 4) for _ in range(r.randint(1, 3))]
                stride = [r.randint(0, 5) for _ in size]
                reach = sum((s - 1) * st for s, st in zip(size, stride)) if 0 not in size else 0
                if reach < n:
                    return flat.as_strided(size, stride, r.randint(0, n - 1 - reach))
        start = r.randint(0, n)
        return flat[start:r.randint(start, n):r.randint(1, 3)]

    def tensor(self):
        r, k = self.rng, self.rng.random()
        if k < 0.12 and self.tensors:
            return r.choice(self.tensors)  # the same object again (the pickle's memo)
        if k < 0.45:
            t = self.data(r.choice(DTYPES), self.shape())
        elif k < 0.8:
            t = self.view()
        else:
            t = self.view() if r.random() < 0.4 else self.base()
            grad = t.dtype in FLOATING and r.random() < 0.7
            if r.random() < 0.8:
                t = torch.nn.Parameter(t, requires_grad=grad)
            elif grad:
                t = t.clone().requires_grad_()  # a plain leaf that requires grad
        self.tensors.append(t)
        return t

    def plain(self):
        r, k = self.rng, self.rng.randrange(9)
        if k == 0:
            return r.choice(INTS) if r.random() < 0.5 else r.randint(-1000, 1000)
        if k == 1:
            return r.choice(FLOATS) if r.random() < 0.3 else r.randint(-8000, 8000) / 8
        if k == 2:
            return r.random() < 0.5
        if k == 3:
            return None
        if k == 4:
            return r.choice(STRS)
        if k == 5:
            return bytes(r.choice(BYTE_CHOICES) for _ in range(r.randint(1, 12)))  # b"" is REDUCE(bytes): 2.x refuses
        if k == 6:
            return torch.Size([r.randint(0, 9) for _ in range(r.randint(0, 4))])
        if k == 7:
            return set(r.sample(range(8), r.randint(0, 5)))  # ints < 8: iterated ascending, as pickled
        return r.choice(INTS)

    def value(self, depth):
        r = self.rng
        if depth >= 3 or r.random() < 0.3 + 0.15 * depth:
            return self.tensor() if r.random() < 0.6 else self.plain()
        if self.subtrees and r.random() < 0.05:
            return r.choice(self.subtrees)  # a container referenced twice
        n, k = r.randint(0, 6), r.randrange(4)
        if k < 2:
            d = collections.OrderedDict() if k == 1 else {}
            for i in range(n):
                key = r.choice(KEYS) + str(i) if r.random() < 0.8 else r.randint(-5, 100)
                d[key] = self.value(depth + 1)
            if k == 1 and r.random() < 0.3:  # as state_dict() carries it; neither summary shows it
                d._metadata = collections.OrderedDict([("", {"version": 1}), ("layer", {"version": 2})])
            out = d
        else:
            items = [self.value(depth + 1) for _ in range(n)]
            out = tuple(items) if k == 3 else items
        self.subtrees.append(out)
        return out


def make(seed, prefix, index):
    rng = random.Random(f"{seed}:{prefix}:{index}")
    case = Case(rng)
    obj = case.value(0) if rng.random() < 0.25 else {f"k{i}": case.value(1) for i in range(rng.randint(1, 6))}
    legacy = rng.random() < 0.25
    protocol = 2 if legacy else rng.choice([2, 2, 3, 4, 5])
    return obj, legacy, protocol, rng.random() < 0.3, rng


def save(obj, path, legacy, protocol, tag, rng):
    real = torch.serialization.location_tag
    tags = {}

    def foreign(storage):  # the same storage the same foreign location, decided on first sight
        key = getattr(storage, "_cdata", id(storage))
        if key not in tags:
            tags[key] = rng.choice(LOCATIONS) if rng.random() < 0.5 else real(storage)
        return tags[key]

    if tag:
        torch.serialization.location_tag = foreign
    try:
        torch.save(obj, path, pickle_protocol=protocol, _use_new_zipfile_serialization=not legacy)
    finally:
        torch.serialization.location_tag = real


def write(out_dir, seed, count, prefix):
    os.makedirs(out_dir, exist_ok=True)
    for i in range(count):
        obj, legacy, protocol, tag, rng = make(seed, prefix, i)
        save(obj, os.path.join(out_dir, f"{prefix}_{i:04d}.pt"), legacy, protocol, tag, rng)


def storage_id(t):
    if hasattr(t, "untyped_storage"):
        return t.untyped_storage()._cdata
    return t.storage()._storage._cdata  # torch 1.13


def summary(obj):
    out, groups = [], {}

    def walk(o, p):
        if isinstance(o, torch.Tensor):
            c = torch.empty(o.shape, dtype=o.dtype).copy_(o.detach())  # strides [..., 1] even for size-1 dims
            b = c.reshape(-1).view(torch.uint8).numpy().tobytes()
            g = groups.setdefault(storage_id(o), len(groups))
            out.append(f"T {p} {str(o.dtype)[6:]} {list(o.shape)} {zlib.crc32(b)} {int(o.requires_grad)} "
                       f"stride={list(o.stride())} offset={o.storage_offset()} storage={g}")
        elif isinstance(o, dict):
            out.append(f"D {p} {len(o)}")
            for k, v in o.items():
                walk(v, f"{p}.{k}" if p else str(k))
        elif isinstance(o, (list, tuple, set, frozenset)):
            out.append(f"S {p} {'tuple' if isinstance(o, tuple) else 'list'} {len(o)}")
            for i, v in enumerate(o):
                walk(v, f"{p}.{i}" if p else str(i))
        else:
            out.append(f"V {p} {type(o).__name__} {o!r}")

    walk(obj, "")
    return out


def pickle_protocol(path):
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            head = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))[:2]
    else:
        with open(path, "rb") as f:
            head = f.read(2)
    return head[1] if head[:1] == b"\x80" else 0


def oracle(out_dir):
    lines = []
    for name in sorted(n for n in os.listdir(out_dir) if n.endswith(".pt")):
        path = os.path.join(out_dir, name)
        lines.append(f"== {name}")
        try:
            obj = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as e:
            op = re.search(r"Unsupported (operand \d+|class \S+)", str(e))
            protocol = pickle_protocol(path)
            # 1.13's safe loader is narrower still (no float, set or bytes): lenient throughout.
            if not (isinstance(e, pickle.UnpicklingError) and op and (protocol > 2 or OLD_TORCH)):
                lines.append(f"REFUSED {type(e).__name__}")
                continue
            lines.append(f"# safe loader of torch {torch.__version__}: {type(e).__name__} ({op.group(0)}) on "
                         f"protocol {protocol}; summary from weights_only=False")
            obj = torch.load(path, weights_only=False, map_location="cpu")
        lines += summary(obj)
    with open(os.path.join(out_dir, "expected.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "write":
        write(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    elif len(sys.argv) == 3 and sys.argv[1] == "oracle":
        oracle(sys.argv[2])
    else:
        sys.exit(__doc__)
