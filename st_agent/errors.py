"""The project's typed errors and the exit status each gives on the command line.

Every error a user can cause (a bad option, a malformed file, a missing device) is one
of these; the CLI prints its message on one line (no traceback) and exits with its
:attr:`STAgentError.exit_code`. Anything else is a bug and keeps its traceback.

======  =====================================================================
status  meaning
======  =====================================================================
0       done
1       an unexpected error (a bug: please report it with the traceback)
2       usage: a bad option or value, an unknown command (``UsageError``)
3       data: a file the user handed is missing, malformed or unsafe
        (``DataError``: recordings, sessions, policies, models, ABC, keys)
4       device: a board, audio or MIDI device, a stream or a system tool is
        missing or failed (``DeviceError``)
130     interrupted before the session could stop cleanly (Ctrl-C twice)
======  =====================================================================

Module errors subclass these *and* the builtin they always were (``AbcError`` is
still a ``ValueError``), so existing ``except ValueError`` code keeps working.
"""

from __future__ import annotations

__all__ = ["EXIT_DATA", "EXIT_DEVICE", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_USAGE",
           "DataError", "DeviceError", "STAgentError", "UsageError"]

EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_DEVICE = 4
EXIT_INTERRUPTED = 130


class STAgentError(Exception):
    """Base of the errors a user can cause; the message names the thing and the fix."""

    exit_code: int = EXIT_INTERNAL


class UsageError(STAgentError, ValueError):
    """A bad option, value or combination of options."""

    exit_code = EXIT_USAGE


class DataError(STAgentError, ValueError):
    """A file the user handed (recording, session, policy, model, ABC, key) is missing,
    malformed or unsafe."""

    exit_code = EXIT_DATA


class DeviceError(STAgentError, RuntimeError):
    """A board, audio/MIDI device, stream or system tool is missing or failed."""

    exit_code = EXIT_DEVICE
