"""A CTranslate2 Whisper folder as an openai-whisper checkpoint: the same weights, another engine.

A checkpoint is what ``whisper.load_model(path)`` reads: ``{"dims": ..., "model_state_dict":
...}``, plus two keys openai-whisper ignores: ``alignment_heads`` (the cross-attention
heads its word timestamps read; openai-whisper knows them per model name only, and a
checkpoint loaded from a path would otherwise use the last half of the decoder's heads) and
``rtlab`` (the model's name and where it was converted from).

How CTranslate2's Whisper variables map onto openai-whisper's state dict, per layer:

====================================================  ==============================================
CTranslate2 (``model.bin``)                           openai-whisper (``model_state_dict``)
====================================================  ==============================================
``encoder/conv1``, ``encoder/conv2``                  ``encoder.conv1``, ``encoder.conv2``
``encoder/position_encodings/encodings``              ``encoder.positional_embedding``
``*/layer_N/self_attention/linear_0`` (q, k, v fused)  ``*.blocks.N.attn.query`` / ``key`` / ``value``
``*/layer_N/self_attention/linear_1``                 ``*.blocks.N.attn.out``
``*/layer_N/self_attention/layer_norm`` gamma, beta    ``*.blocks.N.attn_ln`` weight, bias
``decoder/layer_N/attention/linear_0``                ``decoder.blocks.N.cross_attn.query``
``decoder/layer_N/attention/linear_1`` (k, v fused)    ``decoder.blocks.N.cross_attn.key`` / ``value``
``decoder/layer_N/attention/linear_2``                ``decoder.blocks.N.cross_attn.out``
``decoder/layer_N/attention/layer_norm``              ``decoder.blocks.N.cross_attn_ln``
``*/layer_N/ffn/linear_0``, ``linear_1``, layer_norm   ``*.blocks.N.mlp.0``, ``mlp.2``, ``mlp_ln``
``encoder/layer_norm``, ``decoder/layer_norm``        ``encoder.ln_post``, ``decoder.ln``
``decoder/embeddings/weight``                         ``decoder.token_embedding.weight``
``decoder/position_encodings/encodings``              ``decoder.positional_embedding``
====================================================  ==============================================

openai-whisper's keys have no bias: CTranslate2 stores zeros there, and a key bias would
only add the same number to every attention logit of a query, which the softmax ignores.
int8 and int16 weights are dequantized (see :meth:`ModelBin.float32`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtlab.backends import folders_removed_on_failure, remove_abandoned_partials, written_whole
from rtlab.errors import ModelNotFound

from .ct2 import ModelBin, read_model_bin

#: openai-whisper's model sizes by (n_mels, n_vocab, width, encoder layers, decoder layers).
SIZES: dict[tuple[int, int, int, int, int], tuple[str, ...]] = {
    (80, 51864, 384, 4, 4): ("tiny.en",),
    (80, 51865, 384, 4, 4): ("tiny",),
    (80, 51864, 512, 6, 6): ("base.en",),
    (80, 51865, 512, 6, 6): ("base",),
    (80, 51864, 768, 12, 12): ("small.en",),
    (80, 51865, 768, 12, 12): ("small",),
    (80, 51864, 1024, 24, 24): ("medium.en",),
    (80, 51865, 1024, 24, 24): ("medium",),
    (80, 51865, 1280, 32, 32): ("large-v1", "large-v2"),
    (128, 51866, 1280, 32, 32): ("large-v3",),
    (128, 51866, 1280, 32, 4): ("large-v3-turbo",),
}
#: Scalars of CTranslate2's WhisperSpec that configure its own runtime, not weights.
RUNTIME_FLAGS = {
    "activation", "alibi", "alignment_heads", "alignment_layer", "num_heads", "pre_norm",
    "scale_embeddings", "start_from_zero_embedding",
}  # fmt: skip
HEAD_WIDTH = 64  # every Whisper size's attention head width
CHECKPOINT = "model.pt"


@dataclass(frozen=True)
class Source:
    """A CTranslate2 Whisper model: its folder (config.json, vocabulary) and its model.bin,
    one file or parts to read in order (an embedded package ships it in two)."""

    folder: Path
    parts: tuple[Path, ...]

    @classmethod
    def folder_of(cls, folder: str | os.PathLike[str]) -> Source:
        """The CTranslate2 folder ``folder`` (one with a model.bin)."""
        path = Path(folder).expanduser()
        if not (path / "model.bin").is_file():
            raise ModelNotFound(
                f"openai-whisper: {str(path)!r} has no model.bin: give a CTranslate2 Whisper folder "
                f"(model.bin, config.json, vocabulary) to convert"
            )
        return cls(path, (path / "model.bin",))

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this source's bytes cheaply: paths, total size, newest mtime."""
        stats = [part.stat() for part in self.parts]
        return {
            "source": [str(part) for part in self.parts],
            "bytes": sum(s.st_size for s in stats),
            "mtime_ns": max(s.st_mtime_ns for s in stats),
        }


def size_name(dims: dict[str, int]) -> str | None:
    """openai-whisper's name for a model of these dimensions (None: not one of its sizes;
    ``large-v1`` and ``large-v2`` share theirs and are named ``large-v2``)."""
    names = SIZES.get(
        (dims["n_mels"], dims["n_vocab"], dims["n_audio_state"], dims["n_audio_layer"], dims["n_text_layer"])
    )
    return names[-1] if names else None


def describe(dims: dict[str, int]) -> str:
    """``base (512 wide, 6+6 layers)``: a model's size in words, for messages."""
    name = size_name(dims) or "a Whisper model"
    return f"{name} ({dims['n_audio_state']} wide, {dims['n_audio_layer']}+{dims['n_text_layer']} layers)"


def read_source(source: Source) -> tuple[ModelBin, dict[str, Any]]:
    """The variables of ``source``'s model.bin and its config.json (``{}`` when absent)."""
    model = read_model_bin(source.parts)
    if model.spec != "WhisperSpec":
        raise ModelNotFound(
            f"openai-whisper: {source.folder} holds a CTranslate2 {model.spec or 'unnamed'} model, "
            f"not Whisper: give a folder converted from a Whisper model"
        )
    config_path = source.folder / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    except (OSError, ValueError) as error:
        raise ModelNotFound(f"openai-whisper: {config_path} is not readable JSON ({error})") from None
    return model, config


def checkpoint_from(model: ModelBin, config: dict[str, Any], *, label: str) -> dict[str, Any]:
    """The openai-whisper checkpoint of a CTranslate2 Whisper model (see the module docstring).

    ``label`` names the model in errors. Tensors keep the source's float16 or float32;
    dequantized weights are float32.
    """
    import torch
    from whisper.model import ModelDimensions, Whisper

    try:
        dims = dimensions(model)
        arrays = state_dict_arrays(model, dims)
    except KeyError as missing:
        raise ModelNotFound(f"openai-whisper: {label} lacks the Whisper variable {missing}: is it a Whisper model?") from None
    state = {name: torch.from_numpy(np.array(value)) for name, value in arrays.items()}
    try:  # openai-whisper's own model refuses a missing, unknown or misshaped tensor
        Whisper(ModelDimensions(**dims)).load_state_dict(state, strict=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:300]
        raise ModelNotFound(f"openai-whisper: {label} does not fit Whisper's layout: {detail}") from None
    name = size_name(dims)
    return {
        "dims": dims,
        "model_state_dict": state,
        "alignment_heads": alignment_heads(name, config, dims),
        "rtlab": {"name": name},
    }


def dimensions(model: ModelBin) -> dict[str, int]:
    """openai-whisper's ``ModelDimensions`` of a CTranslate2 Whisper model, as a dict."""
    variables = model.variables
    conv1 = variables["encoder/conv1/weight"]
    embeddings = variables["decoder/embeddings/weight"]

    def layers(stack: str) -> int:
        found = {int(m.group(1)) for name in variables if (m := re.match(rf"{stack}/layer_(\d+)/", name))}
        if found != set(range(len(found))):
            raise ModelNotFound(f"openai-whisper: the {stack} layers are not numbered 0 to {len(found) - 1}")
        return len(found)

    def heads(stack: str, width: int) -> int:
        value = variables.get(f"{stack}/num_heads")
        return int(value) if value is not None else width // HEAD_WIDTH

    return {
        "n_mels": int(conv1.shape[1]),
        "n_audio_ctx": int(variables["encoder/position_encodings/encodings"].shape[0]),
        "n_audio_state": int(conv1.shape[0]),
        "n_audio_head": heads("encoder", int(conv1.shape[0])),
        "n_audio_layer": layers("encoder"),
        "n_vocab": int(embeddings.shape[0]),
        "n_text_ctx": int(variables["decoder/position_encodings/encodings"].shape[0]),
        "n_text_state": int(embeddings.shape[1]),
        "n_text_head": heads("decoder", int(embeddings.shape[1])),
        "n_text_layer": layers("decoder"),
    }


def state_dict_arrays(model: ModelBin, dims: dict[str, int]) -> dict[str, np.ndarray]:
    """openai-whisper's state dict as numpy arrays (the table in the module docstring).

    Raises ModelNotFound for a variable it does not know: a weight silently left behind
    would be a different model."""
    used: set[str] = set()

    def value(name: str) -> np.ndarray:
        used.update((name, name + "_scale"))
        stored = model.variables[name]
        return stored.copy() if stored.dtype in (np.float16, np.float32) else model.float32(name)

    def linear(source: str, target: str, out: dict[str, np.ndarray], bias: bool = True) -> None:
        out[f"{target}.weight"] = value(f"{source}/weight")
        if bias:
            out[f"{target}.bias"] = value(f"{source}/bias")

    def norm(source: str, target: str, out: dict[str, np.ndarray]) -> None:
        out[f"{target}.weight"], out[f"{target}.bias"] = value(f"{source}/gamma"), value(f"{source}/beta")

    def fused(source: str, targets: Sequence[str], out: dict[str, np.ndarray]) -> None:
        weight, bias = value(f"{source}/weight"), value(f"{source}/bias")
        width = weight.shape[1]
        for index, target in enumerate(targets):
            rows = slice(index * width, (index + 1) * width)
            out[f"{target}.weight"] = weight[rows]
            if not target.endswith(".key"):  # see the module docstring
                out[f"{target}.bias"] = bias[rows]

    out: dict[str, np.ndarray] = {}
    out["encoder.positional_embedding"] = value("encoder/position_encodings/encodings")
    linear("encoder/conv1", "encoder.conv1", out)
    linear("encoder/conv2", "encoder.conv2", out)
    for stack, count in (("encoder", dims["n_audio_layer"]), ("decoder", dims["n_text_layer"])):
        for n in range(count):
            source, target = f"{stack}/layer_{n}", f"{stack}.blocks.{n}"
            norm(f"{source}/self_attention/layer_norm", f"{target}.attn_ln", out)
            fused(f"{source}/self_attention/linear_0", [f"{target}.attn.{p}" for p in ("query", "key", "value")], out)
            linear(f"{source}/self_attention/linear_1", f"{target}.attn.out", out)
            if stack == "decoder":
                norm(f"{source}/attention/layer_norm", f"{target}.cross_attn_ln", out)
                linear(f"{source}/attention/linear_0", f"{target}.cross_attn.query", out)
                fused(f"{source}/attention/linear_1", [f"{target}.cross_attn.{p}" for p in ("key", "value")], out)
                linear(f"{source}/attention/linear_2", f"{target}.cross_attn.out", out)
            norm(f"{source}/ffn/layer_norm", f"{target}.mlp_ln", out)
            linear(f"{source}/ffn/linear_0", f"{target}.mlp.0", out)
            linear(f"{source}/ffn/linear_1", f"{target}.mlp.2", out)
    norm("encoder/layer_norm", "encoder.ln_post", out)
    out["decoder.token_embedding.weight"] = value("decoder/embeddings/weight")
    out["decoder.positional_embedding"] = value("decoder/position_encodings/encodings")
    norm("decoder/layer_norm", "decoder.ln", out)

    scale_embeddings = model.variables.get("decoder/scale_embeddings")
    if scale_embeddings is not None and bool(scale_embeddings):
        raise ModelNotFound("openai-whisper: this model scales its embeddings, which Whisper does not")
    left = sorted(
        name for name in model.variables
        if name not in used and name.rpartition("/")[2] not in RUNTIME_FLAGS
    )  # fmt: skip
    if left:
        raise ModelNotFound(
            f"openai-whisper: unexpected variable {left[0]!r} (and {len(left) - 1} more): "
            f"not a Whisper layout this converter knows"
        )
    return out


def alignment_heads(name: str | None, config: dict[str, Any], dims: dict[str, int]) -> list[list[int]] | None:
    """The (layer, head) pairs whose cross-attention word timestamps read: openai-whisper's
    own for a model it names (``whisper._ALIGNMENT_HEADS``), else the folder's
    config.json's, else None (openai-whisper then uses the last half of the layers)."""
    import base64
    import gzip

    import whisper

    if name in whisper._ALIGNMENT_HEADS:
        packed = whisper._ALIGNMENT_HEADS[name]
        mask = np.frombuffer(gzip.decompress(base64.b85decode(packed)), dtype=bool)
        pairs = np.argwhere(mask.reshape(dims["n_text_layer"], dims["n_text_head"])).tolist()
    elif config.get("alignment_heads"):
        pairs = [[int(layer), int(head)] for layer, head in config["alignment_heads"]]
    else:
        return None
    bad = [p for p in pairs if not (0 <= p[0] < dims["n_text_layer"] and 0 <= p[1] < dims["n_text_head"])]
    if bad:
        raise ModelNotFound(f"openai-whisper: alignment head {bad[0]} lies outside the decoder's layers and heads")
    return pairs


def convert(source: Source, dest: str | os.PathLike[str], *, label: str | None = None) -> dict[str, Any]:
    """Convert ``source`` into the checkpoint file ``dest``, written whole or not at all
    (a temporary file beside it, then renamed). Returns the checkpoint's summary."""
    import torch

    model, config = read_source(source)
    checkpoint = checkpoint_from(model, config, label=label or str(source.folder))
    checkpoint["rtlab"].update(source.fingerprint())
    target = Path(dest)
    with folders_removed_on_failure(target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned_partials(target.parent)  # what a killed conversion left here
        with written_whole(target) as temporary:
            torch.save(checkpoint, temporary)
    return summary(checkpoint)


def summary(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint is, in a few JSON-ready fields."""
    dims = checkpoint["dims"]
    return {
        "name": (checkpoint.get("rtlab") or {}).get("name") or size_name(dims),
        "size": describe(dims),
        "dims": dict(dims),
        "alignment_heads": checkpoint.get("alignment_heads"),
        "parameters": int(sum(t.numel() for t in checkpoint["model_state_dict"].values())),
    }
