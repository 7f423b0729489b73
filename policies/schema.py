"""Schemas of the policy and model files a user can hand the program, checked before use.

Every JSON document that describes a controller is validated here, field by field,
with types and ranges, *before* anything is allocated from it (a network, an
observation buffer, an MPC grid): ``policy.json`` of a PPO run
(:data:`~st_agent.policies.loading.POLICY_FORMAT`), a jam policy (version 1: one
network, version 2: an ensemble), the shipped controller manifests
(``assets/<preset>/controller.json``) and settings (``assets/pid|constant|adaptive/``),
and ``listener.json`` of ``st-agent fit-listener`` (its schema lives with the fit, in
:mod:`st_agent.listener.fitting`, and uses the helpers of this module).

Why pydantic (v2, ``pydantic>=2.6``): the documents are nested (an ensemble of
members, a prior inside the adaptive settings), and pydantic gives, for free, typed
fields in *strict* mode (``true`` is not an int, ``"3"`` is not a number, ``3.5`` is
not a ``history_len``), declared ranges and the location of every failure
(``members[2].obs_var[7]``), which the messages below turn into one line naming the
file, the field, the bad value and the allowed range. A hand-written validator would
re-implement exactly that.

The files themselves are read through :func:`read_json_file`: only a regular file
(not a directory, FIFO or device, which are named as such), at most
:data:`MAX_JSON_BYTES`, UTF-8, JSON without pathological nesting. Every failure is a
:class:`PolicyFileError` (a :class:`~st_agent.errors.DataError`, exit status 3); a
missing file is a :class:`PolicyFileMissing`, which is also a ``FileNotFoundError``.

Ranges (module constants) are generous bounds around what training writes: they keep
a corrupt or malicious file from asking for absurd allocations, never a real policy out.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from st_agent.contract import observation_size
from st_agent.errors import DataError
from st_agent.policies.response import BASIS_NAMES, N_REG

__all__ = ["CLIP_OBS_MAX", "HISTORY_LEN_MAX", "MAX_JSON_BYTES", "MEMBERS_MAX",
           "NET_LAYERS_MAX", "NET_WIDTH_MAX", "OBS_ABS_MAX", "OBS_SIZE_MAX", "OBS_VAR_MAX",
           "AdaptiveConfigDoc", "AdaptiveSettings", "ConstantKnobsDoc", "ControllerManifest",
           "JamMemberDoc", "JamPolicyDocV1", "JamPolicyDocV2", "PIDGainsDoc", "PPOPolicyDoc",
           "PolicyFileError", "PolicyFileMissing", "ResidualConfigDoc", "ResidualPolicyDoc",
           "ResponsePriorDoc", "check_format",
           "check_regular_file", "describe_path", "read_bytes_bounded", "read_json_file",
           "validate_doc"]

#: Largest ``history_len`` (past phrases in an observation) a policy may declare.
HISTORY_LEN_MAX = 64
#: Largest observation vector a policy may declare (jam observations included).
OBS_SIZE_MAX = 4096
#: Hidden layers per network, and units per layer.
NET_LAYERS_MAX, NET_WIDTH_MAX = 8, 1024
#: Members of an ensemble jam policy.
MEMBERS_MAX = 16
#: Bounds of the observation-normalisation statistics and settings.
OBS_ABS_MAX, OBS_VAR_MAX, CLIP_OBS_MAX = 1e6, 1e12, 1e3
#: Largest JSON document read (the shipped ones are under 20 kB).
MAX_JSON_BYTES = 4 * 1024 * 1024
_MAX_DEPTH_HINT = "nested too deeply"


class PolicyFileError(DataError):
    """A policy or model file (JSON or weights) is missing, malformed or unsafe.

    The message names the file, the field or tensor, the bad value and what is allowed.
    """


class PolicyFileMissing(PolicyFileError, FileNotFoundError):
    """A policy or model file does not exist (also a ``FileNotFoundError``)."""


# --------------------------------------------------------------------------- files


def describe_path(path: str | Path) -> str:
    """What is at ``path``, in words: ``"is a directory"``, ``"does not exist"``, ...

    Symlinks are followed and named (``"is a character device (a symlink to
    /dev/zero)"``); ``"is a regular file"`` for a file.
    """
    p = Path(path)
    link = ""
    if p.is_symlink():
        try:
            link = f" (a symlink to {os.readlink(p)})"
        except OSError:
            link = " (a symlink)"
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        return f"is a broken symlink{link[2:-1].removeprefix('a symlink')}" if link \
            else "does not exist"
    except OSError as e:
        return f"cannot be examined ({e.strerror or e}){link}"
    kinds = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    return f"is {kind}{link}"


def check_regular_file(path: Path, expected: str, hint: str = "",
                       error: type[DataError] = PolicyFileError) -> int:
    """Raise unless ``path`` is a regular file; return its size in bytes.

    Parameters
    ----------
    path : Path
    expected : str
        What should be there, for the message (``"a regular .safetensors file"``).
    hint : str
        How to get one (appended to the message of a missing file).
    error : type of DataError
        The error raised (a missing file raises :class:`PolicyFileMissing` when
        ``error`` is :class:`PolicyFileError`).

    Raises
    ------
    DataError
        ``error``, naming what the path is and what was expected.
    """
    what = describe_path(path)
    if what == "is a regular file":
        try:
            return path.stat().st_size
        except OSError as e:
            raise error(f"{path} cannot be read ({e.strerror or e}); expected {expected}") \
                from e
    missing = what.startswith("does not exist") or what.startswith("is a broken symlink")
    cls = PolicyFileMissing if (missing and error is PolicyFileError) else error
    tail = f"; {hint}" if (missing and hint) else ""
    raise cls(f"{path} {what}; expected {expected}{tail}")


def read_bytes_bounded(path: Path, limit: int, expected: str, hint: str = "",
                       error: type[DataError] = PolicyFileError) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (checked before reading).

    Raises
    ------
    DataError
        ``error`` for a path that is not a regular file, or a file over ``limit``.
    """
    size = check_regular_file(path, expected, hint, error)
    if size > limit:
        raise error(f"{path} is {size} bytes, more than the {limit} bytes {expected} can "
                    "be; is it the right file?")
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as e:
        raise error(f"{path} cannot be read ({e.strerror or e}); expected {expected}") from e
    if len(data) > limit:
        raise error(f"{path} grew past {limit} bytes while being read")
    return data


def read_json_file(path: str | Path, what: str, hint: str = "",
                   error: type[DataError] = PolicyFileError,
                   limit: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON file safely: regular file, size-bounded, UTF-8, bounded nesting.

    Parameters
    ----------
    path : str or Path
    what : str
        What the file should be, for messages (``"policy.json"``).
    hint : str
        How to get a valid one.
    error : type of DataError
    limit : int
        Largest accepted size, bytes.

    Returns
    -------
    doc : Any
        The parsed document (``NaN``/``Infinity`` literals are kept: the schemas
        decide where they are allowed).

    Raises
    ------
    DataError
        ``error`` naming the file and what is wrong with it.
    """
    path = Path(path)
    raw = read_bytes_bounded(path, limit, f"a regular {what} file", hint, error)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path} is not UTF-8 text (byte {e.start}); expected a {what} "
                    "JSON file") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path} is not valid JSON ({e.msg} at line {e.lineno} column "
                    f"{e.colno}); expected a {what} file") from e
    except RecursionError as e:
        raise error(f"{path} is JSON {_MAX_DEPTH_HINT}; expected a {what} file") from e
    except ValueError as e:  # e.g. an integer literal with too many digits
        raise error(f"{path} holds a JSON value Python refuses ({e}); expected a {what} "
                    "file") from e


def check_format(doc: Any, path: Path, fmt: str, versions: tuple[int, ...], hint: str = "",
                 error: type[DataError] = PolicyFileError) -> None:
    """Raise unless ``doc`` is an object with ``format == fmt`` and a known ``version``.

    Raises
    ------
    DataError
        ``error``: ``"<path> is not an <fmt> version <v> file"`` (and what it has instead).
    """
    vs = " or ".join(str(v) for v in versions)
    if not isinstance(doc, dict):
        got = f"a JSON {type(doc).__name__}"
    elif doc.get("format") != fmt:
        got = f"format {_short(doc.get('format'))}"
    elif type(doc.get("version")) is not int or doc["version"] not in versions:
        got = f"version {_short(doc.get('version'))}"
    else:
        return
    raise error(f"{path} is not an {fmt} version {vs} file (it has {got})"
                + (f"; {hint}" if hint else ""))


def _short(value: Any, n: int = 60) -> str:
    r = repr(value)
    return r if len(r) <= n else r[:n - 3] + "..."


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate_doc(model: type[BaseModel], doc: Any, path: Path, what: str,
                 error: type[DataError] = PolicyFileError) -> Any:
    """``model.model_validate(doc)``, with failures as one-line typed errors.

    Raises
    ------
    DataError
        ``error``: ``"<path>: field obs_var[3] = -1.0: Input should be greater than or
        equal to 0 (a valid policy.json ...)"``; up to three failures are named.
    """
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        errs = e.errors(include_url=False)
        parts = []
        for err in errs[:3]:
            loc = _loc(tuple(err["loc"]))
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "missing":
                parts.append(f"field {loc} is missing")
            elif loc:
                parts.append(f"field {loc} = {_short(err.get('input'))}: {msg}")
            else:
                parts.append(msg)
        more = f" (and {len(errs) - 3} more)" if len(errs) > 3 else ""
        raise error(f"{path} is not a valid {what}: " + "; ".join(parts) + more) from None


# --------------------------------------------------------------------------- field types

_STRICT = ConfigDict(strict=True, extra="ignore", frozen=True)

Finite = Annotated[float, Field(allow_inf_nan=False)]
ObsMean = Annotated[float, Field(allow_inf_nan=False, ge=-OBS_ABS_MAX, le=OBS_ABS_MAX)]
ObsVar = Annotated[float, Field(allow_inf_nan=False, ge=0.0, le=OBS_VAR_MAX)]
Width = Annotated[int, Field(ge=1, le=NET_WIDTH_MAX)]
NetArch = Annotated[list[Width], Field(min_length=1, max_length=NET_LAYERS_MAX)]
Unit = Annotated[float, Field(allow_inf_nan=False, ge=0.0, le=1.0)]
Step = Annotated[int, Field(ge=0, le=10**15)]


class _Normalised(BaseModel):
    """Observation normalisation of a PPO network (VecNormalize statistics)."""

    model_config = _STRICT

    net_arch: NetArch
    obs_mean: Annotated[list[ObsMean], Field(max_length=OBS_SIZE_MAX)]
    obs_var: Annotated[list[ObsVar], Field(max_length=OBS_SIZE_MAX)]
    clip_obs: Annotated[float, Field(allow_inf_nan=False, gt=0.0, le=CLIP_OBS_MAX)] = 10.0
    epsilon: Annotated[float, Field(allow_inf_nan=False, gt=0.0, le=1.0)] = 1e-8
    step: Step = 0
    config: dict[str, Any] = Field(default_factory=dict)

    def _check_sizes(self, n_obs: int, why: str) -> None:
        for name in ("obs_mean", "obs_var"):
            n = len(getattr(self, name))
            if n != n_obs:
                raise ValueError(f"{name} has {n} entries; expected {n_obs} ({why})")


class PPOPolicyDoc(_Normalised):
    """``policy.json`` of a single-listener PPO policy (``st-agent train``)."""

    format: Literal["st-agent-ppo-policy"]
    version: Literal[1]
    history_len: Annotated[int, Field(ge=0, le=HISTORY_LEN_MAX)]
    ret_var: Annotated[float, Field(allow_inf_nan=False, ge=0.0)] | None = None

    @model_validator(mode="after")
    def _sizes(self) -> PPOPolicyDoc:
        n = observation_size(self.history_len)
        self._check_sizes(n, f"the observation size of history_len={self.history_len}")
        return self

    @property
    def obs_size(self) -> int:
        """Length of the observations the network takes."""
        return len(self.obs_mean)


class JamMemberDoc(_Normalised):
    """One network of a jam policy (a version 1 file, or a member of version 2)."""

    obs_size: Annotated[int, Field(ge=1, le=OBS_SIZE_MAX)]
    source: Annotated[str, Field(max_length=4096)] = ""

    @model_validator(mode="after")
    def _sizes(self) -> JamMemberDoc:
        self._check_sizes(self.obs_size, f"obs_size is {self.obs_size}")
        return self


class JamPolicyDocV1(JamMemberDoc):
    """A jam policy of one network (``st-agent train-jam``)."""

    format: Literal["st-agent-jam-policy"]
    version: Literal[1]


class JamPolicyDocV2(BaseModel):
    """An ensemble jam policy (``st-agent combine-jam``): members of the same observation."""

    model_config = _STRICT

    format: Literal["st-agent-jam-policy"]
    version: Literal[2]
    members: Annotated[list[JamMemberDoc], Field(min_length=1, max_length=MEMBERS_MAX)]

    @model_validator(mode="after")
    def _same_obs(self) -> JamPolicyDocV2:
        sizes = sorted({m.obs_size for m in self.members})
        if len(sizes) > 1:
            raise ValueError(f"members must share one obs_size, got {sizes}")
        return self


# --------------------------------------------------------------------------- controllers


class ControllerManifest(BaseModel):
    """``assets/<preset>/controller.json``: which shipped controller a preset loads."""

    model_config = _STRICT

    format: Literal["st-agent-controller"]
    version: Literal[1]
    kind: Literal["adaptive", "residual"]
    run: Annotated[str, Field(max_length=255, pattern=r"^[A-Za-z0-9_.-]+$")] | None = None
    why: Annotated[str, Field(max_length=4096)] = ""

    @model_validator(mode="after")
    def _run(self) -> ControllerManifest:
        if self.kind == "residual" and (self.run is None or self.run in (".", "..")):
            raise ValueError("a residual manifest needs run: the name of a folder beside it")
        return self


class PIDGainsDoc(BaseModel):
    """``assets/pid/<target>.json``: tuned PID gains (error -> knob change)."""

    model_config = _STRICT

    kp: Annotated[float, Field(allow_inf_nan=False, ge=0.0, le=100.0)]
    ki: Annotated[float, Field(allow_inf_nan=False, ge=0.0, le=100.0)]
    kd: Annotated[float, Field(allow_inf_nan=False, ge=0.0, le=100.0)]


class ConstantKnobsDoc(BaseModel):
    """``assets/constant/<target>.json``: the knobs (valence, tempo, energy) to hold."""

    model_config = _STRICT

    knobs: Annotated[list[Unit], Field(min_length=3, max_length=3)]


_Prior = Annotated[float, Field(allow_inf_nan=False, ge=-1e6, le=1e6)]
_Row = Annotated[list[_Prior], Field(min_length=N_REG, max_length=N_REG)]
_Mat = Annotated[list[_Row], Field(min_length=N_REG, max_length=N_REG)]


class ResponsePriorDoc(BaseModel):
    """A population prior of the adaptive controller (``st-agent-response-prior``)."""

    model_config = _STRICT

    format: Literal["st-agent-response-prior"]
    version: Literal[1]
    basis: Annotated[list[str], Field(min_length=len(BASIS_NAMES),
                                      max_length=len(BASIS_NAMES))]
    mean: Annotated[list[_Row], Field(min_length=2, max_length=2)]
    cov: Annotated[list[_Mat], Field(min_length=2, max_length=2)]
    noise_var: Annotated[list[Annotated[float, Field(allow_inf_nan=False, gt=0.0, le=1e6)]],
                         Field(min_length=2, max_length=2)]
    source: Annotated[str, Field(max_length=4096)] = ""


class AdaptiveConfigDoc(BaseModel):
    """:class:`~st_agent.policies.adaptive.AdaptiveConfig` fields, with ranges.

    ``grid ** 3`` destinations are scored over ``horizon`` phrases per decision, so
    both are bounded (11 ** 3 * 32 predictions stay well under a second).
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    horizon: Annotated[int, Field(ge=1, le=32)] = 6
    grid: Annotated[int, Field(ge=2, le=11)] = 5
    move_weight: Annotated[float, Field(allow_inf_nan=False, ge=0.0, le=1e3)] = 0.02
    process_noise: Annotated[float, Field(allow_inf_nan=False, ge=0.0, le=1e3)] = 0.01
    bias_process_noise: Annotated[float, Field(allow_inf_nan=False, ge=0.0, le=1e3)] = 0.002
    observer_gain: Unit = 0.7
    max_pole: Unit = 0.95
    min_confidence: Unit = 0.2
    learn: bool = True
    exposure_tau_sec: Annotated[float, Field(allow_inf_nan=False, gt=0.0, le=1e5)] = 60.0
    guard_margin: Annotated[float, Field(ge=0.0)] = 0.25
    """``inf`` (JSON ``Infinity``) turns the guard off; NaN fails ``ge``."""


class AdaptiveSettings(BaseModel):
    """``assets/adaptive/<target>.json``: the prior and settings of the adaptive controller."""

    model_config = _STRICT

    prior: ResponsePriorDoc
    config: AdaptiveConfigDoc


class ResidualConfigDoc(BaseModel):
    """The fields of a residual run's training ``config`` that loading uses."""

    model_config = _STRICT

    net_arch: NetArch
    log_std_init: Annotated[float, Field(allow_inf_nan=False, ge=-30.0, le=10.0)] = -1.0
    scale: Annotated[float, Field(allow_inf_nan=False, ge=0.0, le=10.0)] = 0.5


class ResidualPolicyDoc(BaseModel):
    """``policy.json`` of a residual PPO run (``st-agent-residual-ppo``)."""

    model_config = _STRICT

    format: Literal["st-agent-residual-ppo"]
    version: Literal[1]
    step: Step = 0
    config: ResidualConfigDoc
    obs_size: Annotated[int, Field(ge=1, le=OBS_SIZE_MAX)]
    obs_mean: Annotated[list[ObsMean], Field(max_length=OBS_SIZE_MAX)]
    obs_var: Annotated[list[ObsVar], Field(max_length=OBS_SIZE_MAX)]
    clip_obs: Annotated[float, Field(allow_inf_nan=False, gt=0.0, le=CLIP_OBS_MAX)] = 10.0
    epsilon: Annotated[float, Field(allow_inf_nan=False, gt=0.0, le=1.0)] = 1e-8
    prior: ResponsePriorDoc
    adaptive: AdaptiveConfigDoc

    @model_validator(mode="after")
    def _sizes(self) -> ResidualPolicyDoc:
        for name in ("obs_mean", "obs_var"):
            n = len(getattr(self, name))
            if n != self.obs_size:
                raise ValueError(f"{name} has {n} entries; expected obs_size = {self.obs_size}")
        return self
