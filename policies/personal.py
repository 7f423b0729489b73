"""Personal controllers: trained on one person's fitted listener, found by their subject.

The loop (README, *Personalisation*)::

    st-agent session --subject S ...        # sessions recorded under the pseudonym S
    st-agent fit-listener --subject S       # -> <subject folder>/listener.json
    st-agent train --subject S              # -> runs/<name>/ and <subject folder>/controller/
    st-agent session --subject S            # uses <subject folder>/controller/

**Training on a fitted listener** (:func:`personal_listeners`): a fit from a few
sessions is uncertain, and a person is not the same from one session to the next,
so a policy trained on the fitted point alone would overfit it. Training draws
``draws`` listeners around the fit instead (the first is the fit itself): every
fitted parameter (those with a standard error in ``listener.json``) gets Gaussian
noise of standard deviation ``sqrt((jitter * width)^2 + min(std, width / 4)^2)``,
``width`` being the parameter's range (time constants on a log scale), clipped into
the range. ``jitter`` (default 0.1, a tenth of each range) is an assumption,
unsourced: it stands for how much one person changes between sessions. The fit's
own standard error is capped at a quarter of the range because an unidentified
parameter's standard error can exceed its whole range.

**File hashes** (:func:`controller_files`): a session records the SHA-256 of every
file that defines its controller (policy weights and JSON, shipped settings, the
personal controller's ``personal.json``) and of the listener and calibration files it
uses, once at its start (event ``controller_files``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.errors import UsageError
from st_agent.subjects import PERSONAL_CALIBRATION_FILE

__all__ = ["PERSONAL_FORMAT", "apply_subject", "controller_files", "install_personal_controller",
           "personal_listener_file", "personal_listeners", "sha256_file",
           "subject_controller", "subject_file"]

logger = logging.getLogger(__name__)

PERSONAL_FORMAT = "st-agent-personal-controller"
#: Where a subject's files live inside :func:`st_agent.subjects.subject_dir`.
LISTENER_FILE = "listener.json"
CONTROLLER_DIR = "controller"
CALIBRATION_FILE = PERSONAL_CALIBRATION_FILE
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def subject_file(subject: str, name: str) -> Path | None:
    """``<subject folder>/<name>`` when it exists, else None."""
    from st_agent.subjects import subject_dir

    path = subject_dir(subject) / name
    return path if path.exists() else None


def subject_controller(subject: str) -> Path | None:
    """The subject's personal controller folder (``st-agent train --subject``), or None."""
    folder = subject_file(subject, CONTROLLER_DIR)
    if folder is None or not (folder / "policy.json").is_file():
        return None
    return folder


def personal_listener_file(listener: str, subject: str) -> Path | None:
    """The listener file ``st-agent train`` uses: ``--listener``, else the subject's.

    Raises
    ------
    UsageError
        When the file is missing, or the subject has no fitted listener.
    """
    if listener:
        path = Path(listener)
        if not path.is_file():
            raise UsageError(f"--listener {listener}: no such file; write one with "
                             "`st-agent fit-listener`")
        return path
    if subject:
        path = subject_file(subject, LISTENER_FILE)
        if path is None:
            raise UsageError(f"--subject {subject} has no fitted listener yet; run "
                             f"`st-agent fit-listener --subject {subject}` first")
        return path
    return None


def _check_jitter(jitter: float, draws: int) -> None:
    if isinstance(jitter, bool) or not isinstance(jitter, int | float) \
            or not (math.isfinite(jitter) and 0.0 <= jitter <= 1.0):
        raise UsageError(f"--listener-jitter must be a number in [0, 1] (a fraction of each "
                         f"parameter's range), got {jitter!r}")
    if isinstance(draws, bool) or not isinstance(draws, int) or not 1 <= draws <= 100_000:
        raise UsageError(f"--listener-draws must be an int in [1, 100000], got {draws!r}")


def personal_listeners(path: str | Path, draws: int = 64, jitter: float = 0.1,
                       seed: int = 0) -> list[Any]:
    """Listeners around a fitted ``listener.json`` (module docstring).

    Parameters
    ----------
    path : str or Path
        A ``listener.json`` (:func:`st_agent.listener.fitting.load_fit` checks it).
    draws : int
        How many listeners; the first is the fit itself.
    jitter : float
        Spread added to every fitted parameter, as a fraction of its range, in [0, 1].
    seed : int
        Seed of the draws.

    Returns
    -------
    listeners : list of listener parameters (the fit's family), length ``draws``.
    """
    from st_agent.listener.fitting import load_fit

    _check_jitter(jitter, draws)
    fit = load_fit(path)
    stds = json.loads(Path(path).read_text(encoding="utf-8")).get("stds") or {}
    ranges = type(fit).RANGES
    names = [n for n in ranges if n in stds] or list(ranges)
    rng = np.random.default_rng([seed, 16])
    out = [fit]
    for _ in range(draws - 1):
        vals = {}
        for n in names:
            lo, hi = ranges[n]
            log = n.endswith("_sec") and lo > 0
            v = getattr(fit, n)
            std = stds.get(n, 0.0)
            if log:
                lo, hi = math.log(lo), math.log(hi)
                std = std / max(v, 1e-12)  # d(log v) = dv / v
                v = math.log(v)
            width = hi - lo
            std = std if isinstance(std, int | float) and math.isfinite(std) else width
            sd = math.hypot(jitter * width, min(abs(std), width / 4))
            x = float(np.clip(v + sd * rng.standard_normal(), lo, hi))
            lo0, hi0 = ranges[n]
            vals[n] = min(max(math.exp(x), lo0), hi0) if log else x  # exp(log) rounds
        out.append(replace(fit, **vals))
    return out


def install_personal_controller(run: Path, subject: str, listener: Path,
                                settings: dict[str, Any]) -> Path:
    """Copy a trained run's policy into ``<subject folder>/controller/``.

    ``personal.json`` beside it records the run, the listener file and its SHA-256,
    and the training settings (``settings``).

    Returns
    -------
    folder : Path
    """
    from st_agent.subjects import subject_dir

    folder = subject_dir(subject, create=True) / CONTROLLER_DIR
    tmp = folder.with_name(CONTROLLER_DIR + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("policy.json", "policy.safetensors"):
        shutil.copy2(run / name, tmp / name)
    doc = {"format": PERSONAL_FORMAT, "version": 1, "subject": subject, "run": str(run),
           "listener": str(listener), "listener_sha256": sha256_file(listener),
           "settings": settings}
    (tmp / "personal.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    logger.info("personal controller of %s installed in %s", subject, folder)
    return folder


def _shipped_files(policy: str, target: str) -> list[Path]:
    """The shipped files that define controller ``policy`` for ``target``."""
    from st_agent.contract import TARGET_PRESETS
    from st_agent.policies.loading import BUNDLED_DIR, bundled_policies

    tgt = target if target in TARGET_PRESETS else "calm"
    if policy in ("pid", "constant", "adaptive"):
        return [BUNDLED_DIR / policy / f"{tgt}.json"]
    files = []
    manifest = BUNDLED_DIR / policy / "controller.json"
    if policy in TARGET_PRESETS and manifest.is_file():
        files.append(manifest)
        doc = json.loads(manifest.read_text(encoding="utf-8"))
        if doc.get("kind") == "adaptive":
            files.append(BUNDLED_DIR / "adaptive" / f"{policy}.json")
        elif doc.get("run"):
            run = BUNDLED_DIR / policy / str(doc["run"])
            files += [run / "policy.json", run / "policy.safetensors"]
    elif policy in bundled_policies():
        files += [BUNDLED_DIR / policy / "policy.json", BUNDLED_DIR / policy / "policy.safetensors"]
    return files


def controller_files(policy: str, target: str = "calm", override: bool = False,
                     extra: dict[str, Path | None] | None = None) -> dict[str, dict[str, str]]:
    """SHA-256 of the files that define a session's controller (and its inputs).

    Parameters
    ----------
    policy : str
        The session's ``--policy`` (a name or a folder).
    target : str
        Target preset (the shipped settings are per target).
    override : bool
        A manual override (``--knobs``): no file defines the controller.
    extra : dict, optional
        Other files the session uses, by role (``listener``, ``calibration``); None
        values are skipped.

    Returns
    -------
    files : dict
        ``role -> {"path": str, "sha256": str}``; roles ``controller:<file name>``
        and those of ``extra``. Unreadable files are recorded with ``"sha256":
        "unreadable: <reason>"``.
    """
    paths: dict[str, Path] = {}
    if not override:
        folder = Path(policy)
        if folder.is_dir():
            for name in ("policy.json", "policy.safetensors", "personal.json"):
                if (folder / name).is_file():
                    paths[f"controller:{name}"] = folder / name
        else:
            for f in _shipped_files(policy, target):
                paths[f"controller:{f.parent.name}/{f.name}"] = f
    for role, p in (extra or {}).items():
        if p is not None:
            paths[role] = Path(p)
    out = {}
    for role, p in paths.items():
        try:
            digest = sha256_file(p)
        except OSError as e:
            digest = f"unreadable: {e.strerror or e}"
        out[role] = {"path": str(p), "sha256": digest}
    return out


def apply_subject(cfg: Any) -> str:
    """Point a session's config at its subject's personal files; one line saying what.

    With ``cfg.subject`` set: the personal controller (``<subject folder>/controller/``)
    replaces the default ``--policy`` (an explicit other ``--policy`` or ``--knobs``
    wins); the personal arousal map (``<subject folder>/calibration.json``, from
    ``st-agent calibrate``) is used unless ``--calibration`` is given; with ``--board
    virtual`` and no ``--listener``, the virtual listener is the subject's fitted one
    (``<subject folder>/listener.json``). ``cfg`` is changed in place and checked again.

    Parameters
    ----------
    cfg : SessionConfig

    Returns
    -------
    line : str
        What was picked (empty without a subject).
    """
    from dataclasses import fields

    subject = getattr(cfg, "subject", "") or ""
    if not subject:
        return ""
    from st_agent.live.common import VIRTUAL_BOARD

    default_policy = next(f.default for f in fields(cfg) if f.name == "policy")
    parts = []
    ctrl = subject_controller(subject)
    if ctrl is None:
        parts.append(f"no personal controller yet (st-agent train --subject {subject}), "
                     f"using {cfg.policy!r}")
    elif cfg.knobs is not None or cfg.policy != default_policy:
        parts.append(f"personal controller {ctrl} not used: "
                     + ("--knobs given" if cfg.knobs is not None else f"--policy {cfg.policy}"))
    else:
        cfg.policy = str(ctrl)
        parts.append(f"personal controller {ctrl}")
    calib = subject_file(subject, CALIBRATION_FILE)
    if calib is not None and cfg.calibration is None:
        cfg.calibration = calib
        parts.append(f"personal calibration {calib}")
    listener = subject_file(subject, LISTENER_FILE)
    if listener is not None and cfg.board == VIRTUAL_BOARD and cfg.listener is None:
        cfg.listener = listener
        parts.append(f"the virtual board simulates their fitted listener {listener}")
    cfg.check()
    return f"subject {subject}: " + "; ".join(parts)
