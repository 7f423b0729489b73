"""Read ``samples.seg`` back: keep every segment that verifies, name each lost span.

The byte layout is in :mod:`st_agent.biometrics.segments`. A segment that is
torn, fails its checksum or fails authentication (encrypted sessions) is lost
alone: the scanner looks for the next ``STSG`` magic whose header
CRC verifies, checks the whole segment there, and goes on from it. The bytes in
between become a :class:`~st_agent.biometrics.segments.LostSpan`, placed by the
intact headers inside it where there are any, else by the sequence numbers and
the byte count.

Everything read from disk is bounded by what the file can hold before anything is
allocated from it: a header's sample count by its body length, the file size and
``segment_samples`` (one second); a jump in sequence numbers by the bytes that
could hold the missing segments; and the NaN fill between the first and the last
good segment by :data:`~st_agent.biometrics.segments.MAX_FILL_RATIO`. A file that
breaks a bound was forged or damaged beyond chance (its CRCs verify) and is
refused with :class:`~st_agent.biometrics.session_meta.CorruptSessionError`; so is
a verified segment out of order (its sequence number or ``first_sample`` goes
back), since keeping it or the segments around it would silently drop verified
data. An exact duplicate of a segment already read is skipped.
"""

from __future__ import annotations

import itertools
import math
import zlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from st_agent.biometrics.crypto import SEAL_OVERHEAD, segment_aad, unseal
from st_agent.biometrics.segments import (
    _HEAD,
    _U32,
    FILL_ALLOWANCE_VALUES,
    HEADER_LEN,
    MAGIC,
    MAX_FILL_RATIO,
    DropReport,
    LostSpan,
    Segment,
    sample_dtype,
    segment_flags,
)
from st_agent.biometrics.session_meta import (
    FORMAT_VERSION,
    SAMPLES_FILE,
    CorruptSessionError,
    SessionMeta,
)

__all__ = ["first_segment_time", "scan_segments"]

_TRAILER = 4  # the body's CRC32


class _Header(NamedTuple):
    seq: int
    first_sample: int
    t0_sec: float
    n_times: int
    body_len: int


@dataclass
class _Good:
    """A verified segment and where it lies in the file."""

    seq: int
    pos: int
    end: int
    seg: Segment

    @property
    def first(self) -> int:
        return self.seg[0]

    @property
    def stop(self) -> int:
        return self.seg[0] + self.seg[2].shape[1]


@dataclass
class _Bad:
    """A stretch of bytes in no good segment, and the intact headers found in it."""

    pos: int
    end: int
    reason: str
    headers: list[_Header] = field(default_factory=list)


class _Scanner:
    """Reads segment records of one session out of ``samples.seg``'s bytes."""

    def __init__(self, buf: bytes, meta: SessionMeta, aead: Any, source: str) -> None:
        self.buf = buf
        self.n_ch = meta.n_channels
        self.dtype = sample_dtype(meta.dtype)
        self.frame = self.n_ch * self.dtype.itemsize  # bytes per sample, all channels
        self.flags = segment_flags(meta.encrypted, meta.dtype)
        self.overhead = SEAL_OVERHEAD if meta.encrypted else 0
        # A full segment is one second at most; older files may not say (0).
        self.max_times = meta.segment_samples or max(1, round(meta.sfreq))
        self.aead = aead
        self.sid = meta.session_id.encode("ascii")
        self.source = source

    @property
    def min_record(self) -> int:
        """Bytes of the smallest possible segment (one sample)."""
        return HEADER_LEN + self.overhead + self.frame + _TRAILER

    def header(self, at: int) -> _Header | None:
        """The header at byte ``at`` if it is complete, intact and fits this session."""
        buf = self.buf
        if len(buf) - at < HEADER_LEN:
            return None
        head = buf[at:at + _HEAD.size]
        (crc,) = _U32.unpack_from(buf, at + _HEAD.size)
        if zlib.crc32(head) != crc:
            return None
        magic, version, flags, seq, first, t0, nc, nt, blen = _HEAD.unpack(head)
        if magic != MAGIC or version != FORMAT_VERSION or flags != self.flags \
                or nc != self.n_ch or not 0 < nt <= self.max_times \
                or blen != nt * self.frame + self.overhead or not math.isfinite(t0):
            return None
        return _Header(seq, first, t0, nt, blen)

    def segment(self, pos: int) -> tuple[_Good | None, _Header | None, str]:
        """The segment at ``pos`` if all of it verifies; else None, its header if
        intact, and why not."""
        buf = self.buf
        h = self.header(pos)
        if h is None:
            return None, None, (f"incomplete segment header at byte {pos}"
                                if len(buf) - pos < HEADER_LEN
                                else f"bad segment header at byte {pos}")
        end = pos + HEADER_LEN + h.body_len + _TRAILER
        if end > len(buf):
            return None, h, f"segment {h.seq} at byte {pos} is truncated"
        body = buf[pos + HEADER_LEN:end - _TRAILER]
        (crc,) = _U32.unpack_from(buf, end - _TRAILER)
        if zlib.crc32(body) != crc:
            return None, h, f"segment {h.seq} at byte {pos} fails its checksum"
        if self.aead is not None:
            plain = unseal(self.aead, body, segment_aad(self.sid, buf[pos:pos + HEADER_LEN]))
            if plain is None:
                return None, h, f"segment {h.seq} at byte {pos} fails authentication"
            body = plain
        data = np.frombuffer(body, dtype=self.dtype).reshape(self.n_ch, h.n_times)
        return _Good(h.seq, pos, end, (h.first_sample, h.t0_sec, data)), h, ""

    def resync(self, bad: _Bad, goods: list[_Good]) -> _Good | None:
        """Scan on from ``bad.pos`` for the next segment that verifies and follows
        ``goods``; extend ``bad`` up to it."""
        at = bad.pos
        while True:
            nxt = self.buf.find(MAGIC, at + 1)
            if nxt < 0:
                bad.end = len(self.buf)
                return None
            good, h, _ = self.segment(nxt)
            if good is not None and self.in_order(good, goods):
                bad.end = nxt
                return good
            if h is not None:
                bad.headers.append(h)
            at = nxt

    def in_order(self, good: _Good, goods: list[_Good]) -> bool:
        """Whether a verified segment follows ``goods``: True, or False for an exact
        duplicate of one of them (skipped); anything else is refused."""
        prev = goods[-1] if goods else None
        if prev is None or (good.seq > prev.seq and good.first >= prev.stop):
            return True
        if any(g.seq == good.seq and g.first == good.first for g in goods[-64:]):
            return False
        raise CorruptSessionError(
            f"{self.source}: segment at byte {good.pos} verifies but is out of order "
            f"(sequence {good.seq}, first_sample {good.first}) after segment {prev.seq} "
            f"(samples {prev.first}-{prev.stop}); the file is damaged or forged")

    def scan(self) -> tuple[list[_Good], list[_Bad]]:
        """All good segments and the bad stretches between them, in file order."""
        goods: list[_Good] = []
        bads: list[_Bad] = []
        pos = 0
        while pos < len(self.buf):
            good, h, reason = self.segment(pos)
            bad = None
            if good is not None and not self.in_order(good, goods):
                good, h, reason = None, None, (f"segment {good.seq} at byte {pos} is a "
                                               f"duplicate")
            if good is None:
                bad = _Bad(pos, pos, reason, [h] if h is not None else [])
                bads.append(bad)
                good = self.resync(bad, goods)
                if good is None:
                    break
            if good.seq != (goods[-1].seq + 1 if goods else 0):
                self.check_seq_jump(goods[-1] if goods else None, good, bad)
            goods.append(good)
            pos = good.end
        return goods, bads

    def check_seq_jump(self, prev: _Good | None, good: _Good, bad: _Bad | None) -> None:
        """Refuse a jump in sequence numbers that the bytes in between cannot hold."""
        missing = good.seq - (prev.seq + 1 if prev is not None else 0)
        room = 0 if bad is None else bad.end - bad.pos
        if missing * self.min_record > room:
            raise CorruptSessionError(
                f"{self.source}: segment at byte {good.pos} has sequence number {good.seq}, "
                f"{missing} after the previous one, but the {room} bytes before it can hold "
                f"at most {room // self.min_record} segments; the file is damaged or forged")

    def check_fill(self, goods: list[_Good]) -> None:
        """Refuse gaps (``first_sample`` jumps) that would need more NaN fill than allowed."""
        n_recorded = sum(g.seg[2].shape[1] for g in goods)
        allowed = int(MAX_FILL_RATIO * n_recorded) + FILL_ALLOWANCE_VALUES // self.n_ch
        fill = 0
        for prev, g in itertools.pairwise(goods):
            fill += g.first - prev.stop
            if fill > allowed:
                raise CorruptSessionError(
                    f"{self.source}: segment {g.seq} at byte {g.pos} has first_sample "
                    f"{g.first}, a jump of {g.first - prev.stop} samples after segment "
                    f"{prev.seq}; the gaps would total over {allowed} samples, the most "
                    f"allowed for {n_recorded} recorded samples (MAX_FILL_RATIO "
                    f"{MAX_FILL_RATIO:g} x recorded + {FILL_ALLOWANCE_VALUES} values); the "
                    f"file is damaged or forged")

    def bytes_to_samples(self, n_bytes: int, n_segments: int) -> int:
        """Samples that ``n_bytes`` of ``n_segments`` whole records hold (0 if fewer)."""
        payload = n_bytes - n_segments * (HEADER_LEN + self.overhead + _TRAILER)
        return max(0, payload // self.frame)


def _span(scanner: _Scanner, bad: _Bad, lo: int, hi: int | None, n_segments: int,
          origin: int, sfreq: float) -> LostSpan | None:
    """The lost span of ``bad``, between stream index ``lo`` (end of the good segment
    before; -1 if none) and ``hi`` (start of the good one after; None if none)."""
    n_bytes = bad.end - bad.pos
    # Intact headers inside the stretch that fit between its neighbours place it exactly.
    fits = sorted({(h.first_sample, h.n_times, h.body_len) for h in bad.headers
                   if h.first_sample >= max(lo, 0)
                   and (hi is None or h.first_sample + h.n_times <= hi)})
    explained = sum(HEADER_LEN + blen + _TRAILER for _, _, blen in fits)
    if fits and (n_segments == len(fits) or (hi is None and n_bytes <= explained)):
        first = fits[0][0]
        n = sum(nt for _, nt, _ in fits)
        exact = True
    else:
        if n_segments == 0 and hi is not None:
            return None  # bytes between consecutive segments: junk, not samples
        est = scanner.bytes_to_samples(n_bytes, max(n_segments, 1))
        if n_bytes <= HEADER_LEN + _TRAILER and not fits:
            est = 0  # a torn header: its samples were never fully written
        if hi is None:
            first = max(lo, 0)
            n = est
            exact = False
        elif lo < 0:
            first = max(0, hi - est)
            n = hi - first
            exact = n == est
        else:
            first, n = lo, min(est, hi - lo)
            exact = est == hi - lo
    return LostSpan(first_sample=first, n_samples=n, start_sec=(first - origin) / sfreq,
                    duration_sec=n / sfreq, n_segments=max(n_segments, 1 if n else 0),
                    byte_offset=bad.pos, n_bytes=n_bytes, exact=exact, reason=bad.reason)


def _lost_spans(scanner: _Scanner, goods: list[_Good], bads: list[_Bad],
                sfreq: float) -> list[LostSpan]:
    """One span per bad stretch, placed between the good segments around it."""
    origin = goods[0].first if goods else 0
    spans: list[LostSpan] = []
    gi = 0
    for bad in bads:
        while gi < len(goods) and goods[gi].pos < bad.pos:
            gi += 1
        prev = goods[gi - 1] if gi > 0 else None
        nxt = goods[gi] if gi < len(goods) else None
        lo = prev.stop if prev is not None else -1
        if nxt is not None:
            n_seg = nxt.seq - (prev.seq + 1 if prev is not None else 0)
        else:
            n_seg = max(1, len({h.seq for h in bad.headers
                                if prev is None or h.seq > prev.seq}))
        span = _span(scanner, bad, lo, nxt.first if nxt is not None else None, n_seg,
                     origin, sfreq)
        if span is not None:
            spans.append(span)
    return spans


def scan_segments(buf: bytes, meta: SessionMeta, aead: Any, source: str = SAMPLES_FILE
                  ) -> tuple[list[Segment], DropReport]:
    """Parse every segment that verifies; a bad one is lost alone.

    Parameters
    ----------
    buf : bytes
        Contents of ``samples.seg``.
    meta : SessionMeta
        The session's metadata (channels, dtype, encryption, segment size).
    aead : AESGCM or None
        Cipher of an encrypted session (its key already checked).
    source : str
        The file's path, named in errors.

    Returns
    -------
    segments : list of (int, float, ndarray)
        ``(first_sample, t0_sec, data)``, data shape (n_channels, n_times), in
        stream order; consecutive ones may leave gaps.
    report : DropReport
        Segments and samples read, and every lost span.

    Raises
    ------
    CorruptSessionError
        If verified segments break a bound (a sequence jump the bytes cannot hold,
        gaps over :data:`~st_agent.biometrics.segments.MAX_FILL_RATIO`) or are out
        of order.
    """
    scanner = _Scanner(buf, meta, aead, source)
    goods, bads = scanner.scan()
    scanner.check_fill(goods)
    report = DropReport(n_segments=len(goods),
                        n_samples=sum(g.seg[2].shape[1] for g in goods))
    report.dropped_bytes = sum(b.end - b.pos for b in bads)
    report.lost = _lost_spans(scanner, goods, bads, meta.sfreq)
    report.dropped_samples = sum(s.n_samples for s in report.lost)
    report.approximate = any(not s.exact for s in report.lost)
    report.reason = bads[0].reason if bads else None
    return [g.seg for g in goods], report


def first_segment_time(buf: Any, meta: SessionMeta, aead: Any, source: str = SAMPLES_FILE
                       ) -> tuple[int, float] | None:
    """``(first_sample, t0_sec)`` of the first segment that verifies, the one
    :func:`scan_segments` would start from, without reading the rest of the file.

    Parameters
    ----------
    buf : bytes or mmap
        Contents of ``samples.seg`` (a memory map reads only the pages it touches).
    meta, aead, source
        As for :func:`scan_segments`.

    Returns
    -------
    first : tuple of (int, float) or None
        None when no segment verifies.
    """
    scanner = _Scanner(buf, meta, aead, source)
    good, _, reason = scanner.segment(0)
    if good is None:
        good = scanner.resync(_Bad(0, 0, reason), [])
    return None if good is None else (good.first, good.seg[1])
