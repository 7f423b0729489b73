"""Fast sampling from a trained ``GPT2LMHeadModel`` with a preallocated KV cache.

``model.generate`` spends more than half of each step at batch 1 outside the
arithmetic (REFERENCE_FIGURES.md). This module reads the same weights into a
minimal GPT-2 forward pass that reads top to bottom: embeddings, then per block
``x + attn(ln_1(x))`` and ``x + mlp(ln_2(x))``, then ``ln_f`` and the tied
output embedding. The prompt is run once at batch 1 and its cache is copied to
all candidates, so a batch of candidates costs one prefill.

The output is the same distribution as the model's (tests compare the logits
with ``GPT2LMHeadModel``'s to float tolerance).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Collection, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel

__all__ = ["AddMM", "CachedDecoder", "Linear", "StepHook", "TiedHead"]

#: A linear layer as the decoder calls it: (N, in) -> (N, out).
Linear = Callable[["torch.Tensor"], "torch.Tensor"]


class AddMM:
    """A GPT-2 ``Conv1D`` read as ``y = b + x @ W`` with ``W`` of shape (in, out)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        self.weight, self.bias = weight, bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x, self.weight)


class TiedHead:
    """The output projection tied to the token embedding ``wte`` (V, C)."""

    def __init__(self, wte: torch.Tensor) -> None:
        self.wte = wte

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.wte.T

#: Called after each sampled step with the new token of every continuation;
#: returns an additive logit bias for the next step, shape (n, V) (a tensor or a
#: float32 array), or None, and which continuations are finished (they stop as
#: if they had hit a stop id).
StepHook = Callable[[list[int]], tuple["torch.Tensor | np.ndarray | None", list[bool]]]


class CachedDecoder:
    """Sampler over a GPT-2's weights with a static KV cache.

    Parameters
    ----------
    model : GPT2LMHeadModel
        A trained model; its weights are shared, not copied.
    max_len : int, optional
        Longest prompt plus continuation, default the model's ``n_positions``.
    """

    def __init__(self, model: GPT2LMHeadModel, max_len: int | None = None) -> None:
        cfg = model.config
        if cfg.activation_function not in ("gelu_new", "gelu_pytorch_tanh", "gelu"):
            raise ValueError(
                f"activation {cfg.activation_function!r} is not supported; expected gelu_new"
            )
        self.n_layer, self.n_head, self.n_embd = cfg.n_layer, cfg.n_head, cfg.n_embd
        self.head_dim = cfg.n_embd // cfg.n_head
        self.eps = cfg.layer_norm_epsilon
        self.max_len = int(max_len or cfg.n_positions)
        if not 1 <= self.max_len <= cfg.n_positions:
            raise ValueError(f"max_len must be in [1, {cfg.n_positions}], got {max_len}")
        self.approx = "none" if cfg.activation_function == "gelu" else "tanh"
        tr = model.transformer
        self.wte = tr.wte.weight.detach()  # (V, C), tied with lm_head
        self.wpe = tr.wpe.weight.detach()  # (P, C)
        # GPT-2's Conv1D stores weights as (in, out): y = x @ W + b.
        self.blocks = [
            dict(
                ln1=(b.ln_1.weight.detach(), b.ln_1.bias.detach()),
                attn=AddMM(b.attn.c_attn.weight.detach(), b.attn.c_attn.bias.detach()),
                attn_proj=AddMM(b.attn.c_proj.weight.detach(), b.attn.c_proj.bias.detach()),
                ln2=(b.ln_2.weight.detach(), b.ln_2.bias.detach()),
                fc=AddMM(b.mlp.c_fc.weight.detach(), b.mlp.c_fc.bias.detach()),
                proj=AddMM(b.mlp.c_proj.weight.detach(), b.mlp.c_proj.bias.detach()),
            )
            for b in tr.h
        ]
        self.ln_f = (tr.ln_f.weight.detach(), tr.ln_f.bias.detach())
        self.vocab_size = self.wte.shape[0]
        #: The output projection (tied embedding), (B, C) -> (B, V).
        self.lm_head: Linear = TiedHead(self.wte)
        #: "float32" or the fast path that replaced the linear layers (e.g. "int8").
        self.precision = "float32"
        self._local = threading.local()  # this thread's KV caches, see _new_cache

    def __copy__(self) -> CachedDecoder:
        """A shallow copy (shared weights) with caches of its own."""
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        out._local = threading.local()
        return out

    # -- the forward pass -------------------------------------------------
    def _forward(self, ids: torch.Tensor, pos0: int, k_cache: torch.Tensor,
                 v_cache: torch.Tensor, every_position: bool = False) -> torch.Tensor:
        """Run tokens ``ids`` (B, T) at positions ``pos0..pos0+T-1``; fill the
        caches (L, B, H, max_len, D) in place; return last-position logits (B, V),
        or (B, T, V) at every position with ``every_position``."""
        B, T = ids.shape
        C, H, D = self.n_embd, self.n_head, self.head_dim
        x = self.wte[ids] + self.wpe[pos0:pos0 + T]  # (B, T, C)
        end = pos0 + T
        for i, blk in enumerate(self.blocks):
            h = F.layer_norm(x, (C,), *blk["ln1"], self.eps)
            qkv = blk["attn"](h.view(B * T, C))
            q, k, v = qkv.view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)  # each (B, H, T, D)
            k_cache[i, :, :, pos0:end] = k
            v_cache[i, :, :, pos0:end] = v
            att = F.scaled_dot_product_attention(
                q, k_cache[i, :, :, :end], v_cache[i, :, :, :end], is_causal=T > 1 and pos0 == 0
            )  # (B, H, T, D)
            att = att.transpose(1, 2).reshape(B * T, C)
            x = x + blk["attn_proj"](att).view(B, T, C)
            h = F.layer_norm(x, (C,), *blk["ln2"], self.eps)
            h = F.gelu(blk["fc"](h.view(B * T, C)), approximate=self.approx)
            x = x + blk["proj"](h).view(B, T, C)
        if every_position:
            x = F.layer_norm(x, (C,), *self.ln_f, self.eps).view(B * T, C)
            return self.lm_head(x).view(B, T, -1)
        x = F.layer_norm(x[:, -1], (C,), *self.ln_f, self.eps)  # (B, C)
        return self.lm_head(x)  # (B, V)

    def _step(self, tok: torch.Tensor, pos: int, k_cache: torch.Tensor,
              v_cache: torch.Tensor) -> torch.Tensor:
        """:meth:`_forward` of one new token per row, tokens ``tok`` (B,) at position
        ``pos``: the same arithmetic with fewer reshapes (what each sampled step costs).
        Returns the logits (B, V)."""
        B = tok.shape[0]
        C, H, D = self.n_embd, self.n_head, self.head_dim
        x = self.wte[tok] + self.wpe[pos]  # (B, C)
        end = pos + 1
        # select/narrow/copy_ rather than tuple indexing: fewer Python-side steps per
        # call, which at batch 1 is a good part of what a step costs
        for blk, kc, vc in zip(self.blocks, k_cache, v_cache, strict=True):  # (B, H, P, D)
            h = torch.layer_norm(x, (C,), *blk["ln1"], self.eps)
            q, k, v = blk["attn"](h).view(B, 3, H, D).unbind(1)  # each (B, H, D)
            kc.select(2, pos).copy_(k)
            vc.select(2, pos).copy_(v)
            att = F.scaled_dot_product_attention(q.unsqueeze(2), kc.narrow(2, 0, end),
                                                 vc.narrow(2, 0, end))  # (B, H, 1, D)
            x = x + blk["attn_proj"](att.view(B, C))
            h = torch.layer_norm(x, (C,), *blk["ln2"], self.eps)
            x = x + blk["proj"](F.gelu(blk["fc"](h), approximate=self.approx))
        return self.lm_head(torch.layer_norm(x, (C,), *self.ln_f, self.eps))

    def _new_cache(self, batch: int, role: str = "scratch") -> tuple[torch.Tensor, torch.Tensor]:
        """Key and value caches (L, batch, H, max_len, D), zeroed.

        They are kept per thread and ``role`` and handed out again at the next call:
        every position is written before it is read, and a batch's caches are tens of MB,
        which glibc would otherwise take from and return to the heap at every phrase
        (the resident memory of a long session crept up by about 0.5 MB per 100
        phrases, against 0.17 with the caches kept). One thread uses one pair of a role
        at a time; ``prefill`` and ``batch`` are sampling's two.

        They are zeroed once when made, so all their pages are resident from the start:
        left uninitialised, a page became resident only when a longer prompt first
        reached its positions, and a long session's memory crept up (about 0.8 MB an
        hour) towards the caches' full size (``benchmarks/bench_session_rss.py --vmas``).
        """
        store = self._local.__dict__.setdefault("caches", {})
        pair = store.get((role, batch))
        if pair is None:
            shape = (self.n_layer, batch, self.n_head, self.max_len, self.head_dim)
            pair = (torch.zeros(shape, dtype=self.wte.dtype, device=self.wte.device),
                    torch.zeros(shape, dtype=self.wte.dtype, device=self.wte.device))
            store[(role, batch)] = pair
        return pair

    @torch.inference_mode()
    def prompt_logits(self, prompt_ids: Sequence[int]) -> torch.Tensor:
        """Logits (V,) of the token after ``prompt_ids`` (for tests and scoring)."""
        k, v = self._new_cache(1)
        ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self.wte.device)
        return self._forward(ids, 0, k, v)[0]

    @torch.inference_mode()
    def sequence_nll(self, ids: Sequence[int]) -> tuple[float, int]:
        """Summed negative log-likelihood (nats) of ``ids[1:]`` given what precedes
        each token, and the number of tokens scored (held-out loss, int8 vs float).

        Parameters
        ----------
        ids : sequence of int
            At least two tokens and at most ``max_len``.

        Returns
        -------
        nll_nats, n_tokens : float, int
        """
        if not 2 <= len(ids) <= self.max_len:
            raise ValueError(f"ids must hold 2 to {self.max_len} tokens, got {len(ids)}")
        k, v = self._new_cache(1)
        x = torch.tensor([list(ids)], dtype=torch.long, device=self.wte.device)
        logits = self._forward(x, 0, k, v, every_position=True)[0, :-1].float()  # (T-1, V)
        return float(F.cross_entropy(logits, x[0, 1:], reduction="sum")), len(ids) - 1

    # -- sampling ---------------------------------------------------------
    def _prefill(self, prompt_ids: Sequence[int], n: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the prompt once at batch 1 and copy its cache to ``n`` rows.

        Returns the next-token logits (n, V) and the caches (L, n, H, max_len, D).
        """
        T0 = len(prompt_ids)
        k1, v1 = self._new_cache(1, "prefill")
        logits = self._forward(torch.tensor([list(prompt_ids)], device=self.wte.device), 0, k1, v1)
        k_cache, v_cache = self._new_cache(n, "batch")
        k_cache[:, :, :, :T0] = k1[:, :, :, :T0]  # broadcast over the batch
        v_cache[:, :, :, :T0] = v1[:, :, :, :T0]
        return logits.expand(n, -1), k_cache, v_cache

    def _check_sample_args(self, prompt_ids: Sequence[int], n: int, max_new_tokens: int,
                           temperature: float) -> None:
        if not prompt_ids:
            raise ValueError("prompt_ids must hold at least one token")
        if n < 1 or max_new_tokens < 1:
            raise ValueError(f"n ({n}) and max_new_tokens ({max_new_tokens}) must be >= 1")
        if not temperature > 0 or not math.isfinite(temperature):
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if len(prompt_ids) + max_new_tokens > self.max_len:
            raise ValueError(
                f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({max_new_tokens}) exceeds "
                f"the context of {self.max_len} tokens; shorten the context"
            )

    @staticmethod
    def _pick(scores: torch.Tensor, temperature: float, top_k: int,
              generator: torch.Generator | None) -> torch.Tensor:
        """One token per row (n,) from the scores (n, V)."""
        if 0 < top_k < scores.shape[-1]:
            # Sample among the top k only: a softmax over (n, k), not (n, V).
            top, idx = torch.topk(scores, top_k, dim=-1)
            pick = torch.multinomial(torch.softmax(top.float() / temperature, dim=-1), 1,
                                     generator=generator)
            return idx.gather(1, pick)[:, 0]
        return torch.multinomial(torch.softmax(scores.float() / temperature, dim=-1), 1,
                                 generator=generator)[:, 0]

    @torch.inference_mode()
    def sample(
        self,
        prompt_ids: Sequence[int],
        n: int,
        max_new_tokens: int,
        stop_ids: Collection[int],
        banned_ids: Collection[int] = (),
        temperature: float = 1.0,
        top_k: int = 0,
        generator: torch.Generator | None = None,
        step_hook: StepHook | None = None,
        first_bias: torch.Tensor | np.ndarray | None = None,
    ) -> list[list[int]]:
        """Sample ``n`` continuations of one prompt.

        Parameters
        ----------
        prompt_ids : sequence of int
            The prompt, at least one token.
        n : int
            Continuations, sampled as one batch.
        max_new_tokens : int
            Most tokens per continuation.
        stop_ids : collection of int
            A continuation ends after emitting one of these (it is included).
        banned_ids : collection of int
            Tokens never sampled.
        temperature : float
            Softmax temperature (> 0).
        top_k : int
            Sample among the ``top_k`` most likely tokens (0 = all).
        generator : torch.Generator, optional
            Source of randomness, for reproducible samples.
        step_hook : StepHook, optional
            Steers decoding from outside (e.g. no end of phrase before four
            bars of music); see :data:`StepHook`.
        first_bias : tensor or ndarray, shape (n, V) or (V,), optional
            Additive logit bias for the first new token (a step hook's bias
            applies from the second on).

        Returns
        -------
        continuations : list of list of int
            ``n`` lists of new tokens; one that did not stop within
            ``max_new_tokens`` does not end with a stop id.
        """
        self._check_sample_args(prompt_ids, n, max_new_tokens, temperature)
        T0 = len(prompt_ids)
        device = self.wte.device
        logits, k_cache, v_cache = self._prefill(prompt_ids, n)
        bias = torch.zeros(self.vocab_size, device=device)
        if banned_ids:
            bias[list(banned_ids)] = float("-inf")
        stops = set(stop_ids)
        # The bookkeeping is plain Python: at these batch sizes a tensor operation
        # per step costs more than the loop over n.
        seqs: list[list[int]] = [[] for _ in range(n)]
        done = [False] * n
        extra = _as_bias(first_bias, device)
        for step in range(max_new_tokens):
            scores = logits + bias
            if extra is not None:
                scores += extra
            tok = self._pick(scores, temperature, top_k, generator)
            toks = tok.tolist()
            finished = None
            if step_hook is not None:
                hook_bias, finished = step_hook(toks)
                extra = _as_bias(hook_bias, device)
            for i, t in enumerate(toks):
                if not done[i]:
                    seqs[i].append(t)
                    done[i] = t in stops or (finished is not None and bool(finished[i]))
            if all(done) or step == max_new_tokens - 1:
                break
            logits = self._step(tok, T0 + step, k_cache, v_cache)
        return seqs


def _as_bias(bias: torch.Tensor | np.ndarray | None, device: torch.device
             ) -> torch.Tensor | None:
    """A step hook's bias as a tensor on ``device`` (arrays are shared, not copied)."""
    if bias is None or torch.is_tensor(bias):
        return bias
    return torch.from_numpy(np.asarray(bias, dtype=np.float32)).to(device)
