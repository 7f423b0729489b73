"""What ``st-agent subjects`` and ``st-agent consent`` do, and the subject line a session
prints at its start (``--subject``; :mod:`st_agent.subjects`).

Handlers write their summary to stdout (as :mod:`st_agent.commands` does); errors a user
can fix are the project's typed errors.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from st_agent.biometrics.consent_auth import ConsentConfig
    from st_agent.subjects import SubjectsConfig

__all__ = ["announce_subject", "announce_subjects", "run_consent_command",
           "run_subjects_command"]


def _out(lines: list[str]) -> None:
    sys.stdout.write("\n".join(x for x in lines if x) + "\n")


def announce_subject(given: str) -> tuple[str, str]:
    """Resolve a ``--subject`` value (registering it) and say what it is.

    Parameters
    ----------
    given : str
        The pseudonym given, or ``""`` for a new one.

    Returns
    -------
    subject, line : str, str
        The pseudonym, and a line for the terminal: new (with how to reuse it), or how
        many sessions it already has.
    """
    from st_agent.subjects import is_registered, resolve_subject, sessions_for_subject

    known = bool(given) and is_registered(given)
    subject = resolve_subject(given or None)
    if not given:
        line = (f"subject {subject}: a new pseudonym for this listener; record their next "
                f"sessions with --subject {subject} (st-agent subjects lists them)")
    elif not known:
        line = (f"subject {subject}: first session under this pseudonym (registered; "
                f"check the spelling if this listener has sessions already)")
    else:
        n = len(sessions_for_subject(subject))
        line = f"subject {subject}: {n} earlier session(s)"
    return subject, line


def announce_subjects(cfg: Any) -> list[str]:
    """Resolve ``cfg.subject`` in place (a session's pseudonym, or a jam's comma-separated
    list, one per performer) and return the lines to print."""
    from st_agent.live.jam import JamConfig

    if isinstance(cfg, JamConfig):
        given = cfg.subject_list(len(cfg.board_specs()))
        pairs = [announce_subject(g) for g in given]
        cfg.subject = ",".join(s for s, _ in pairs)
        return [f"performer {i}: {line}" for i, (_, line) in enumerate(pairs)]
    cfg.subject, line = announce_subject(cfg.subject)
    return [line]


def run_subjects_command(cfg: SubjectsConfig) -> None:
    """``st-agent subjects``: one line per subject."""
    from st_agent.paths import data_dir
    from st_agent.subjects import registry_path, run_subjects

    rows = run_subjects(cfg)
    if not rows:
        _out([f"no subjects yet (registry {registry_path()}); a session records one with "
              "--subject or makes a new pseudonym"])
        return
    lines = [f"{'subject':<12} {'sessions':>8}  {'first':<10}  {'last':<10}  personal files"]
    for r in rows:
        files = ", ".join(r.personal_files) if r.personal_files else "-"
        lines.append(f"{r.subject:<12} {r.sessions:>8}  {(r.first_utc or '-')[:10]:<10}  "
                     f"{(r.last_utc or '-')[:10]:<10}  {files}"
                     + ("" if r.registered else "  (not in the registry)"))
    lines.append(f"registry {registry_path()}; personal files in "
                 f"{data_dir() / 'subjects'}/<subject>/")
    _out(lines)


def run_consent_command(cfg: ConsentConfig) -> None:
    """``st-agent consent``: record the listener's new consent on a session."""
    from st_agent.biometrics.consent_auth import run_consent

    consent = run_consent(cfg)
    _out([f"consent of {cfg.session} is now {','.join(consent.scopes)} (given "
          f"{consent.given_at_utc} by the {consent.given_by}, text {consent.text_version}); "
          "the previous record is kept in session.json's consent_history"])
