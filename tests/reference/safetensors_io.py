"""Plain-Python safetensors reader and writer (numpy only; no safetensors package).

Written from the format's description:
  - bytes 0..8: N, the header length, unsigned 64-bit little-endian;
  - bytes 8..8+N: a UTF-8 JSON object {name: {"dtype", "shape", "data_offsets": [begin, end]}}
    plus an optional "__metadata__": {str: str}; writers may pad it with spaces;
  - the rest: the data buffer; each tensor is row-major little-endian bytes at
    [begin, end) relative to the start of the buffer.

Reading returns numpy arrays. dtypes without a numpy equivalent are widened:
BF16 and F8_E4M3 (e4m3fn: bias 7, no infinities, S.1111.111 is NaN, max 448) become float32,
and the file's dtype string is kept in TensorInfo so callers can check it.
Writing accepts numpy arrays (or anything with .numpy(), e.g. CPU torch tensors);
`dtypes` may ask for BF16 (round to nearest even from float32) for a tensor, or F8_E4M3
for a uint8 array of e4m3fn bit patterns (no float -> FP8 rounding here).

`python3 safetensors_io.py FILE` lists the tensors (name, dtype, shape) and the metadata.

Validation: a bad header (length past the file, offsets that overlap or fall outside the
buffer, size that disagrees with shape x dtype) raises ValueError naming the tensor.
"""

import json
import math
import struct
import sys
from dataclasses import dataclass

import numpy as np

# safetensors dtype -> (numpy storage dtype, bytes per element)
_STORAGE = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "F8_E4M3": np.dtype("u1"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("u1"),
}

# numpy dtype -> safetensors dtype for writing
_FROM_NUMPY = {
    np.dtype("float64"): "F64",
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
    np.dtype("int16"): "I16",
    np.dtype("int8"): "I8",
    np.dtype("uint8"): "U8",
    np.dtype("bool"): "BOOL",
}


@dataclass
class TensorInfo:
    dtype: str          # safetensors dtype string as stored in the file
    shape: tuple
    data_offsets: tuple  # (begin, end) in the data buffer


def _e4m3_table():
    # float32 value of every e4m3fn byte: s eeee mmm, bias 7; e == 0 is subnormal;
    # 0x7f / 0xff are NaN (the format has no infinities).
    table = np.zeros(256, dtype=np.float32)
    for byte in range(256):
        sign = -1.0 if byte & 0x80 else 1.0
        exp = (byte >> 3) & 0xF
        man = byte & 0x7
        if exp == 0xF and man == 0x7:
            table[byte] = np.nan
        elif exp == 0:
            table[byte] = sign * (man / 8.0) * 2.0 ** (1 - 7)
        else:
            table[byte] = sign * (1.0 + man / 8.0) * 2.0 ** (exp - 7)
    return table


_E4M3 = _e4m3_table()


def bf16_bits_to_float32(bits):
    """uint16 array of bfloat16 bit patterns -> float32 array (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16_bits(x):
    """float32 array -> uint16 bfloat16 bit patterns, round to nearest even (NaN kept NaN)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    bits = rounded.astype(np.uint16)
    nan = np.isnan(x)
    bits[nan] = 0x7FC0
    return bits


def read_header(path):
    """Returns (tensors: dict name -> TensorInfo in file order, metadata: dict or None, data_start)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: too short for a safetensors file ({len(head)} bytes)")
        (n,) = struct.unpack("<Q", head)
        f.seek(0, 2)
        file_size = f.tell()
        if 8 + n > file_size:
            raise ValueError(f"{path}: header length {n} runs past the file end ({file_size} bytes)")
        f.seek(8)
        header = json.loads(f.read(n).decode("utf-8"))
    metadata = header.pop("__metadata__", None)
    buffer_size = file_size - 8 - n
    tensors = {}
    spans = []
    for name, entry in header.items():
        dtype = entry["dtype"]
        if dtype not in _STORAGE:
            raise ValueError(f"{path}: tensor '{name}' has unsupported dtype {dtype}")
        shape = tuple(int(s) for s in entry["shape"])
        begin, end = (int(v) for v in entry["data_offsets"])
        nbytes = math.prod(shape) * _STORAGE[dtype].itemsize
        if not (0 <= begin <= end <= buffer_size):
            raise ValueError(f"{path}: tensor '{name}' offsets [{begin}, {end}) outside the "
                             f"{buffer_size}-byte data buffer")
        if end - begin != nbytes:
            raise ValueError(f"{path}: tensor '{name}' spans {end - begin} bytes but "
                             f"shape {list(shape)} x {dtype} needs {nbytes}")
        tensors[name] = TensorInfo(dtype, shape, (begin, end))
        spans.append((begin, end, name))
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise ValueError(f"{path}: tensors '{n0}' and '{n1}' overlap in the data buffer")
    return tensors, metadata, 8 + n


def load(path, names=None):
    """Reads tensors (all, or those in `names`). Returns (dict name -> np.ndarray, infos, metadata).

    BF16 and F8_E4M3 come back as float32 (exact widening); infos[name].dtype says what was stored.
    """
    infos, metadata, data_start = read_header(path)
    wanted = list(infos) if names is None else list(names)
    out = {}
    with open(path, "rb") as f:
        for name in wanted:
            if name not in infos:
                raise KeyError(f"{path}: no tensor named '{name}'")
            info = infos[name]
            begin, end = info.data_offsets
            f.seek(data_start + begin)
            raw = f.read(end - begin)
            arr = np.frombuffer(raw, dtype=_STORAGE[info.dtype]).reshape(info.shape)
            if info.dtype == "BF16":
                arr = bf16_bits_to_float32(arr)
            elif info.dtype == "F8_E4M3":
                arr = _E4M3[arr]
            elif info.dtype == "BOOL":
                arr = arr.astype(bool)
            else:
                arr = arr.astype(arr.dtype.newbyteorder("="), copy=True)
            out[name] = arr
    return out, {n: infos[n] for n in wanted}, metadata


def save(path, tensors, metadata=None, dtypes=None):
    """Writes `tensors` (dict name -> array-like) in insertion order.

    dtypes: optional dict name -> "BF16" to store a float tensor as bfloat16, or
    "F8_E4M3" to store a uint8 array of bit patterns as FP8 (others keep their numpy dtype). metadata: optional dict str -> str.
    """
    dtypes = dtypes or {}
    header = {}
    blobs = []
    offset = 0
    for name, value in tensors.items():
        if name == "__metadata__":
            raise ValueError("'__metadata__' is reserved; pass metadata= instead")
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        arr = np.asarray(value)
        if dtypes.get(name) == "BF16":
            st_dtype = "BF16"
            data = float32_to_bf16_bits(arr.astype(np.float32)).astype("<u2").tobytes()
        elif dtypes.get(name) == "F8_E4M3":
            if arr.dtype != np.uint8:
                raise ValueError(f"tensor '{name}': F8_E4M3 is written from uint8 bit patterns")
            st_dtype = "F8_E4M3"
            data = np.ascontiguousarray(arr).tobytes()
        else:
            if arr.dtype not in _FROM_NUMPY:
                raise ValueError(f"tensor '{name}': cannot store numpy dtype {arr.dtype}")
            st_dtype = _FROM_NUMPY[arr.dtype]
            data = np.ascontiguousarray(arr, dtype=_STORAGE[st_dtype]).tobytes()
        header[name] = {"dtype": st_dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata is not None:
        header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}, **header}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-len(text)) % 8)  # pad so the data buffer starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)


def main(argv):
    if len(argv) != 2:
        print(f"usage: {argv[0]} FILE.safetensors", file=sys.stderr)
        return 2
    infos, metadata, _ = read_header(argv[1])
    if metadata:
        print(f"__metadata__ {json.dumps(metadata)}")
    for name, info in infos.items():
        print(f"{name} {info.dtype} {list(info.shape)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
