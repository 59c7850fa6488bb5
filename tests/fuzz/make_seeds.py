# Writes small valid (and a few deliberately damaged) inputs for each fuzz target of
# tests/fuzz/targets.hpp, one folder per target:
#   /usr/bin/python3 tests/fuzz/make_seeds.py OUTDIR
# scripts/fuzz.sh runs it to seed the fuzzers; tests/fuzz/corpus/ holds its output as of the
# last time it was committed. Needs PyTorch (Debian's python3-torch). Deterministic.
import collections, io, json, os, pickle, struct, sys, zipfile
import torch

out = sys.argv[1]
torch.manual_seed(0)


def put(target, name, data):
    os.makedirs(f'{out}/{target}', exist_ok=True)
    with open(f'{out}/{target}/{name}', 'wb') as f:
        f.write(data)


def saved(obj, **kw):
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    return buf.getvalue()


def rezip(data, compression, force_zip64=False):
    """The same archive with every record stored with `compression` (the reader takes both)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', compression) as dst:
        for info in src.infolist():
            with dst.open(info.filename, 'w', force_zip64=force_zip64) as f:
                f.write(src.read(info))
    return buf.getvalue()


def data_pkl(data):
    z = zipfile.ZipFile(io.BytesIO(data))
    return z.read(next(n for n in z.namelist() if n.endswith('/data.pkl')))


# torch.save archives, as PyTorch writes them and rewritten by Python's zipfile.
w = torch.arange(6.).reshape(2, 3)
sd = collections.OrderedDict(w=w, tied=w, t=w.t(), b=torch.ones(2).half(), n=torch.tensor(3))
sd._metadata = collections.OrderedDict({'': {'version': 1}})
files = {
    'state_dict.pt': saved(sd),
    'ckpt.pt': saved({'model': sd, 'epoch': 3, 'args': {'lr': 0.1, 'l': [1, (2, 3)], 's': {1}}, 'b': b'xy'}),
    'param.pt': saved(torch.nn.Parameter(torch.ones(2))),
    'misc.pt': saved([torch.zeros(0, 2), torch.tensor(True), torch.randn(2, dtype=torch.complex64),
                      torch.device('cpu'), torch.Size([1]), torch.int8, w[1:, ::2], w[:, :1].expand(2, 4)]),
    'dtypes.pt': saved({str(d): torch.ones(2, dtype=d) for d in
                        (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool,
                         torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex128)}),
    'protocol2.pt': saved({'a': w, 'b': b'\x00\xff'}, pickle_protocol=2),
    'storage.pt': saved(w.storage()),
}
files['deflated.pt'] = rezip(files['state_dict.pt'], zipfile.ZIP_DEFLATED)
files['zip64.pt'] = rezip(files['param.pt'], zipfile.ZIP_STORED, force_zip64=True)
for name, data in files.items():
    put('torch_save', name, data)
    put('zip', name, data)
    put('pickle', name.replace('.pt', '.pkl'), data_pkl(data))
put('read', 'ckpt.pt', files['ckpt.pt'])

# Plain pickles in every protocol: the text opcodes of protocol 0 and 1 as well as the binary ones.
plain = {'a': [1, -2, 2 ** 40, -(2 ** 63), 1.5, 'x', b'y', None, True, (1,), (1, 2), (1, 2, 3), ()],
         'b': collections.OrderedDict(k=[]), 'c': {1, 2}, 'd': frozenset(), 'e': bytearray(b'z')}
for proto in range(0, 6):
    put('pickle', f'plain_protocol{proto}.pkl', pickle.dumps(plain, protocol=proto))

# Zips that are not torch.save archives.
buf = io.BytesIO()
with zipfile.ZipFile(buf, 'w') as z:
    z.writestr('a.txt', b'hello')
    z.writestr(zipfile.ZipInfo('empty'), b'')
    z.comment = b'a comment'
put('zip', 'plain.zip', buf.getvalue())


# safetensors files, written by hand (the format is an 8-byte length, JSON, then the data).
def safetensors(tensors, metadata=None, pad=0):
    header, data, offset = {}, b'', 0
    if metadata is not None:
        header['__metadata__'] = metadata
    for name, (code, shape, raw) in tensors.items():
        header[name] = {'dtype': code, 'shape': shape, 'data_offsets': [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    text = json.dumps(header, separators=(',', ':')).encode() + b' ' * pad
    return struct.pack('<Q', len(text)) + text + data


f32 = lambda *v: struct.pack(f'<{len(v)}f', *v)
st = {
    'simple.safetensors': safetensors({'w': ('F32', [2, 2], f32(1, 2, 3, 4)), 'b': ('I64', [1], struct.pack('<q', 7))},
                                      {'format': 'pt'}),
    'dtypes.safetensors': safetensors({c: (c, [2], bytes(2 * n)) for c, n in
                                       (('BOOL', 1), ('U8', 1), ('I8', 1), ('I16', 2), ('I32', 4), ('I64', 8),
                                        ('F16', 2), ('BF16', 2), ('F32', 4), ('F64', 8))}),
    'empty.safetensors': safetensors({'e': ('F32', [0, 3], b''), 's': ('F64', [], bytes(8))}, pad=5),
    'unaligned.safetensors': safetensors({'u': ('U8', [3], b'abc'), 'f': ('F32', [1], f32(1))}),
    'no_tensors.safetensors': safetensors({}, {}),
    'unknown_dtype.safetensors': safetensors({'x': ('U16', [1], bytes(2))}),
    'gap.safetensors': safetensors({'x': ('F32', [1], f32(1))})[:-1] + b'\x00\x00',
}
for name, data in st.items():
    put('safetensors', name, data)
put('read', 'simple.safetensors', st['simple.safetensors'])

# Sharded indexes; the fuzz target writes shards a.safetensors (x, y) and b.safetensors (z, w).
indexes = {
    'both.json': {'metadata': {'total_size': 60}, 'weight_map': {'x': 'a.safetensors', 'y': 'a.safetensors',
                                                                 'z': 'b.safetensors', 'w': 'b.safetensors'}},
    'missing.json': {'weight_map': {'x': 'a.safetensors', 'q': 'a.safetensors', 'y': 'a.safetensors'}},
    'wrong_shard.json': {'weight_map': {'x': 'b.safetensors', 'y': 'a.safetensors', 'z': 'b.safetensors',
                                        'w': 'b.safetensors'}},
    'path.json': {'weight_map': {'x': '../a.safetensors'}},
    'no_map.json': {'metadata': {}},
}
for name, obj in indexes.items():
    put('safetensors_index', name, json.dumps(obj).encode())


# TorchScript archives (what graft reads as libtorch archives) and a legacy torch.save file.
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 1)
        self.register_buffer('steps', torch.tensor(4))


buf = io.BytesIO()
torch.jit.save(torch.jit.script(Net()), buf)
put('read', 'scripted.pt', buf.getvalue())
put('zip', 'scripted.pt', buf.getvalue())
put('read', 'legacy.pt', saved({'w': torch.ones(1)}, _use_new_zipfile_serialization=False))

# Legacy torch.save streams (PyTorch < 1.6's format): protocols 2 and 4, shared and viewed
# storages, nested checkpoints; and one with the view metadata of older releases, by hand.
for name, proto in (('state_dict', 2), ('state_dict_p4', 4)):
    put('torch_save_legacy', f'{name}.pt', saved(sd, _use_new_zipfile_serialization=False, pickle_protocol=proto))
put('torch_save_legacy', 'ckpt.pt', saved({'model': sd, 'epoch': 3, 'b': b'xy', 'p': torch.nn.Parameter(torch.ones(2))},
                                          _use_new_zipfile_serialization=False))


class Pid:
    def __init__(self, t): self.t = t


class Rebuild:
    def __init__(self, *a): self.a = a

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, (Pid(self.a[0]),) + self.a[1:] + (False, collections.OrderedDict()))


class LegacyPickler(pickle.Pickler):
    def persistent_id(self, o): return o.t if isinstance(o, Pid) else None


root = ('storage', torch.FloatStorage, 'root', 'cpu', 10)
buf = io.BytesIO()
for x in (0x1950a86a20f9469cfc6c, 1001, {'protocol_version': 1001, 'little_endian': True}):
    pickle.dump(x, buf, protocol=2)
LegacyPickler(buf, protocol=2).dump({'whole': Rebuild(root + (None,), 0, (10,), (1,)),
                                     'part': Rebuild(root + (('v', 2, 6),), 1, (2, 2), (2, 1))})
pickle.dump(['root'], buf, protocol=2)
buf.write(struct.pack('<q', 10) + bytes(range(40)))
put('torch_save_legacy', 'views.pt', buf.getvalue())
put('read', 'legacy_views.pt', buf.getvalue())
put('read', 'text.txt', b'not a checkpoint\n')
