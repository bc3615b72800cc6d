#!/usr/bin/env python3
"""Writes the crafted seed files of issue #11's defects (standard library only; run from any
folder, files land beside this script). Each one is also read by a regression test:

- safetensors/header_len_0x80.safetensors: a header length whose low byte is 0x80, so the file
  starts like a pickle PROTO opcode (runtime/tests/weights_safetensors.rs checks the same shape).
- safetensors/control_chars.safetensors: a tensor name and a metadata key holding an ESC
  sequence that clears the screen (examples/cli/tests/files.rs: `inspect` escapes them).
- pytorch/os_system_call.pth and pickle/os_system_call.pkl: a state dict next to an
  `os.system('echo pwned')` call, which must be skipped and reported, never run.
- gguf/nan_rope_freq_base.gguf, gguf/inf_rms_epsilon.gguf: non-finite LLM settings.
- gguf/nested_loop_template.gguf: a chat template whose nested loops would run for hours.
"""
import json
import math
import os
import struct
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))


def write(rel, data):
    path = os.path.join(HERE, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def safetensors(header, data, pad_to_low_byte=None):
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad_to_low_byte is not None:
        while len(h) % 256 != pad_to_low_byte:
            h += b" "
    return struct.pack("<Q", len(h)) + h + data


def pickle_str(v):
    b = v.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def pickle_int(v):
    return b"\x8a\x09" + struct.pack("<Q", v) + b"\x00"


def pickle_ints(vs):
    return b"(" + b"".join(pickle_int(v) for v in vs) + b"t"


def state_dict_pickle(extra):
    """`{'w': <FloatStorage '0' of 6 elements viewed [2, 3]>, <extra>}`, protocol 2."""
    p = b"\x80\x02}(" + pickle_str("w") + b"ctorch._utils\n_rebuild_tensor_v2\n(("
    p += pickle_str("storage") + b"ctorch\nFloatStorage\n" + pickle_str("0") + pickle_str("cpu") + pickle_int(6)
    p += b"tQ" + pickle_int(0) + pickle_ints([2, 3]) + pickle_ints([3, 1]) + b"\x89}tR"
    return p + extra + b"u."


def gguf(entries):
    """A metadata-only GGUF v3: entries of (key, value type, packed value)."""
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(entries))
    for key, ty, value in entries:
        k = key.encode()
        out += struct.pack("<Q", len(k)) + k + struct.pack("<I", ty) + value
    return out


def gguf_str(v):
    b = v.encode()
    return struct.pack("<Q", len(b)) + b


def llama(extra):
    base = [
        ("general.architecture", 8, gguf_str("llama")),
        ("llama.block_count", 4, struct.pack("<I", 2)),
        ("llama.context_length", 4, struct.pack("<I", 64)),
        ("llama.embedding_length", 4, struct.pack("<I", 64)),
        ("llama.feed_forward_length", 4, struct.pack("<I", 128)),
        ("llama.attention.head_count", 4, struct.pack("<I", 4)),
        ("llama.vocab_size", 4, struct.pack("<I", 100)),
    ]
    return gguf(base + extra)


def main():
    f32 = struct.pack("<6f", *range(6))
    header = {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, "__metadata__": {"format": "pt"}}
    write("safetensors/header_len_0x80.safetensors", safetensors(header, f32, pad_to_low_byte=0x80))
    esc = "\x1b[2J\x1b[Hforged"
    header = {esc: {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]}, "__metadata__": {"key" + esc: "v"}}
    write("safetensors/control_chars.safetensors", safetensors(header, f32))

    call = pickle_str("cfg") + b"cos\nsystem\n" + pickle_str("echo pwned") + b"\x85R"
    pkl = state_dict_pickle(call)
    write("pickle/os_system_call.pkl", pkl)
    buf = os.path.join(HERE, "pytorch/os_system_call.pth")
    os.makedirs(os.path.dirname(buf), exist_ok=True)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in [("archive/data.pkl", pkl), ("archive/byteorder", b"little"), ("archive/data/0", f32)]:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            z.writestr(info, data)

    write("gguf/nan_rope_freq_base.gguf", llama([("llama.rope.freq_base", 6, struct.pack("<f", math.nan))]))
    write("gguf/inf_rms_epsilon.gguf", llama([("llama.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", math.inf))]))
    template = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}ok"
    write("gguf/nested_loop_template.gguf", llama([("tokenizer.chat_template", 8, gguf_str(template))]))


if __name__ == "__main__":
    main()
