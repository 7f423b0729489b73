"""The int8 fast path of the decoder: GPT-2's linear layers as dynamically quantised ``nn.Linear``.

GPT-2 stores its projections as ``Conv1D`` (weight ``(in, out)``, ``y = x @ W + b``),
which :func:`torch.ao.quantization.quantize_dynamic` does not know. Each one is
rewritten as an ``nn.Linear`` (weight ``(out, in)``, the transpose) and the set is
quantised with ``quantize_dynamic`` (int8 weights, activations quantised per call,
float accumulation). The output projection, tied to the token embedding, is
quantised the same way; the embeddings, layer norms and attention stay float32.

The float decoder is the fallback: :func:`quantize_decoder` raises
:class:`QuantizationUnavailable` when no int8 engine works on this machine, and
:func:`fast_decoder` then returns the float decoder and says why in the log.
``tests/test_music_v2.py`` checks that the two agree in held-out loss.

Engines: ``x86`` / ``fbgemm`` (AVX2 or better) are fast at the batch sizes the
composer uses (8 candidates); ``qnnpack`` (ARM) is tried after them.
"""

from __future__ import annotations

import copy
import logging
import warnings

import torch
from torch import nn

from st_agent.music.decoding import AddMM, CachedDecoder

__all__ = ["ENGINES", "Int8Linear", "QuantizationUnavailable", "fast_decoder", "quantize_decoder"]

logger = logging.getLogger(__name__)

#: int8 engines tried in order (the first one that this torch build supports and
#: that runs a test product wins).
ENGINES = ("x86", "fbgemm", "qnnpack")


class QuantizationUnavailable(RuntimeError):
    """No int8 engine of :data:`ENGINES` works in this torch build or on this CPU."""


def _quantize(linears: list[nn.Linear]) -> list[nn.Module]:
    """``quantize_dynamic`` over a list of float ``nn.Linear`` (its warnings about the
    ``torch.ao`` deprecation are silenced: the API is what this torch offers)."""
    from torch.ao.quantization import quantize_dynamic

    holder = nn.ModuleList(linears)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize_dynamic(holder, {nn.Linear}, dtype=torch.qint8)
    return list(q)


def _as_linear(layer: AddMM) -> nn.Linear:
    """A ``Conv1D`` read as :class:`AddMM` (``W`` (in, out)) as an ``nn.Linear``."""
    n_in, n_out = layer.weight.shape
    lin = nn.Linear(n_in, n_out)
    with torch.no_grad():
        lin.weight.copy_(layer.weight.T)
        lin.bias.copy_(layer.bias)
    return lin


def _supported_engines() -> list[str]:
    """The quantised engines this torch build lists."""
    return list(torch.backends.quantized.supported_engines)


def _pick_engine(engine: str | None) -> str:
    supported = set(_supported_engines())
    wanted = ENGINES if engine is None else (engine,)
    if engine is not None and engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)} or None, got {engine!r}")
    for name in wanted:
        if name not in supported:
            continue
        torch.backends.quantized.engine = name
        try:
            probe = _quantize([nn.Linear(8, 8)])[0]
            with torch.inference_mode():
                probe(torch.zeros(2, 8))
        except RuntimeError as e:  # the engine is listed but cannot run here
            logger.debug("int8 engine %s does not run: %s", name, e)
            continue
        return name
    raise QuantizationUnavailable(
        f"no int8 engine of {list(wanted)} works in this torch build (supported: "
        f"{sorted(supported)}); use the float decoder (ComposerConfig(int8=False))")


class Int8Linear:
    """A dynamically quantised ``nn.Linear`` called through its packed int8 weights.

    The same arithmetic as the module's ``forward`` (``reduce_range=True``, float32
    in and out), without the module call and operator-dispatch overhead: at batch 1
    that overhead was about a third of each decoding step.
    """

    def __init__(self, module: nn.Module) -> None:
        packed = module._packed_params
        if packed.dtype != torch.qint8:
            raise TypeError(f"expected a qint8 dynamic linear layer, got {packed.dtype}")
        self.packed = packed._packed_params
        overload = torch.ops.quantized.linear_dynamic.default
        # the overload's C++ function when this torch exposes it (2.x does): its Python
        # __call__ scans the arguments for fake script objects (export/compile only),
        # about a tenth of a batch-1 step; any other torch calls the overload itself
        self._op = getattr(overload, "_op", overload)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._op(x, self.packed, True)


def _tied_head(wte: torch.Tensor) -> Int8Linear:
    """The tied output projection (V, C) as an int8 linear layer (bias zero)."""
    lin = nn.Linear(wte.shape[1], wte.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(wte)
    return Int8Linear(_quantize([lin])[0])


def quantize_decoder(decoder: CachedDecoder, engine: str | None = None,
                     head: bool = True) -> CachedDecoder:
    """An int8 copy of a float decoder (the float one is left as it is).

    Parameters
    ----------
    decoder : CachedDecoder
        A float32 decoder.
    engine : str, optional
        One of :data:`ENGINES`; None tries them in order.
    head : bool
        Also quantise the output projection (800 x 256 for the bundled model).

    Returns
    -------
    decoder : CachedDecoder
        Shares the embeddings and layer norms with ``decoder``; its
        :attr:`~CachedDecoder.precision` is ``"int8"``.

    Raises
    ------
    TypeError
        When ``decoder`` is not a float :class:`CachedDecoder`.
    QuantizationUnavailable
        When no int8 engine runs here.
    """
    if not isinstance(decoder, CachedDecoder) or decoder.precision != "float32":
        raise TypeError(f"decoder must be a float32 CachedDecoder, got {decoder!r}")
    chosen = _pick_engine(engine)
    out = copy.copy(decoder)
    names = ("attn", "attn_proj", "fc", "proj")
    floats = [_as_linear(blk[n]) for blk in decoder.blocks for n in names]
    quant = iter(Int8Linear(q) for q in _quantize(floats))
    out.blocks = [{**blk, **{n: next(quant) for n in names}} for blk in decoder.blocks]
    if head:
        out.lm_head = _tied_head(decoder.wte)
    out.precision = "int8"
    logger.debug("int8 decoder on engine %s (%d linear layers%s)", chosen, len(floats),
                 " and the output head" if head else "")
    return out


def fast_decoder(decoder: CachedDecoder, int8: bool = True) -> CachedDecoder:
    """The int8 decoder when ``int8`` and an engine works, else ``decoder`` itself.

    Parameters
    ----------
    decoder : CachedDecoder
        The float decoder (the fallback).
    int8 : bool
        Try the int8 path.

    Returns
    -------
    decoder : CachedDecoder
    """
    if not int8:
        return decoder
    try:
        return quantize_decoder(decoder)
    except QuantizationUnavailable as e:
        logger.warning("int8 decoding unavailable, using float32: %s", e)
        return decoder
