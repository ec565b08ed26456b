"""A GGUF file whose per-tensor types follow a plan, for llama.cpp (`compress run --target llama.cpp`).

Route: the source GGUF (the model compress loaded) is read with the `gguf` package; its metadata and tokenizer
are copied, each decoder Linear is dequantized and re-quantized at its unit's type by gguf's reference
quantizer (compress.quant.ggml: the same weights the allocator costed), other 2-D tensors (embeddings, output)
are written F16 and 1-D ones (norms) F32, as GPTQ folders keep them in 16 bits. Removed layers are dropped and
the rest renumbered. No compiler is needed. Not covered: a safetensors folder as the source (convert it first
with llama.cpp's convert_hf_to_gguf.py, which ships in llama-cpp-python's source package), K-quants (gguf 0.19
cannot write them), and GPTQ checkpoints (their packed integer grids are not llama.cpp's block formats; the
float model is re-quantized instead).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from compress.errors import CompressError
from compress.plan import Option


def gguf_names(arch: str, n_blocks: int, modules: Sequence[str]) -> dict[str, str]:
    """{HF module name: GGUF tensor name without '.weight'} ('model.layers.3.self_attn.q_proj' -> 'blk.3.attn_q')
    through gguf's own TensorNameMap of the architecture (the table convert_hf_to_gguf.py uses)."""
    import gguf

    archs = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}
    if arch not in archs:
        raise CompressError(f"the gguf package does not know the architecture {arch!r}")
    names = gguf.TensorNameMap(archs[arch], n_blocks)
    mapped = {m: names.get_name(m) for m in modules}
    missing = [m for m, n in mapped.items() if n is None]
    if missing:
        raise CompressError(f"no GGUF tensor name for {missing[0]} in gguf's {arch} table")
    return mapped


def _kv(reader, kept: Sequence[int], arch: str, n_source: int):
    """(key, value, type, sub_type) of the source's metadata to copy: the block count set to the kept layers,
    per-layer arrays sliced to them, GGUF's own and file-type keys left to the writer."""
    import gguf

    for field in reader.fields.values():
        if field.name in (gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.FILE_TYPE) or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name == f"{arch}.block_count":
            value = len(kept)
        elif sub is not None and field.name.startswith(f"{arch}.") and len(value) == n_source:
            value = [value[i] for i in kept]
        yield field.name, value, vtype, sub


def export_gguf(source: Path, options: Mapping[str, Option | None], kept: Sequence[int], out: Path,
                progress: bool = True) -> dict:
    """Write `out` from the GGUF `source`: options {HF module name of the saved (reduced) model: gguf Option or
    None (F16)}, kept = the source's layer indices that remain, in order. -> stats (bytes, types, bits)."""
    import gguf
    from tqdm.auto import tqdm

    from compress.quant.ggml import qtype, quantize_rows

    reader = gguf.GGUFReader(str(source))
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    n_source = int(reader.fields[f"{arch}.block_count"].contents())
    by_name = {name: options[m] for m, name in gguf_names(arch, len(kept), list(options)).items()}
    renumber = {old: new for new, old in enumerate(kept)}
    writer = gguf.GGUFWriter(str(out), arch)
    for key, value, vtype, sub in _kv(reader, kept, arch, n_source):
        writer.add_key_value(key, value, vtype, sub_type=sub)
    types, linear_bytes, linear_params = Counter(), 0, 0
    for tensor in tqdm(reader.tensors, desc="writing GGUF", unit="tensor", disable=not progress, leave=False):
        name = tensor.name
        if name.startswith("blk."):
            _, index, rest = name.split(".", 2)
            if int(index) not in renumber:
                continue  # a removed layer
            name = f"blk.{renumber[int(index)]}.{rest}"
        base = name.removesuffix(".weight")
        weight = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        weight = weight.reshape([int(d) for d in reversed(tensor.shape)])
        if base in by_name and by_name[base] is not None:
            option = by_name[base]
            data = quantize_rows(weight.reshape(-1, weight.shape[-1]), option).reshape(*weight.shape[:-1], -1)
            writer.add_tensor(name, data, raw_dtype=qtype(option))
            types[option.label] += weight.size
            linear_bytes, linear_params = linear_bytes + data.nbytes, linear_params + weight.size
        else:
            data = weight.astype(np.float16 if weight.ndim > 1 else np.float32)
            writer.add_tensor(name, data)
            if base in by_name:
                types["f16"] += weight.size
                linear_bytes, linear_params = linear_bytes + data.nbytes, linear_params + weight.size
    main = types.most_common(1)[0][0] if types else "f16"
    writer.add_file_type(int(getattr(gguf.LlamaFileType, f"MOSTLY_{main.upper()}")))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    return {"method": "gguf", "format": "gguf", "file": out.name, "size_bytes": out.stat().st_size,
            "decoder_bytes": linear_bytes, "effective_bits": 8 * linear_bytes / max(1, linear_params),
            "types": dict(types), "source": os.path.basename(source)}


def source_gguf(model: str | None) -> Path:
    """The GGUF a llama.cpp export starts from: the bundled default's file or the given .gguf; a folder is
    refused in one line (llama.cpp's converter makes the GGUF)."""
    from compress.model.gguf import default_gguf_path

    if model is None:
        return default_gguf_path()
    if str(model).endswith(".gguf"):
        return Path(model).expanduser()
    raise CompressError(f"--target llama.cpp re-quantizes a GGUF: convert {model} first with llama.cpp's "
                        "convert_hf_to_gguf.py --outtype f16 (in llama-cpp-python's source package) and pass the .gguf")


def apply_ggml(model, options: Mapping[str, Option | None]) -> None:
    """Round the model's Linears in place as the GGUF holds them ({module name: gguf Option or None}), so the
    plan can be evaluated in torch next to llama.cpp."""
    import torch

    from compress.quant.ggml import ggml_weights

    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, option in options.items():
            if option is not None:
                weight = modules[name].weight
                weight.copy_(ggml_weights(weight, option).to(weight.dtype))
