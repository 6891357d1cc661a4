"""Capture what slide libraries print while opening a file, so the CLI can keep its one-line errors.

tifffile, pydicom and wsidicom report problems (a bad IFD offset, an over-long UID) through ``logging``
and ``warnings``. Left alone, Python prints those records on stderr next to our own message. While a slide
is opened we collect them instead; callers turn the serious ones into a :class:`SlideFormatError`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Iterator

LIBRARY_LOGGERS = ("tifffile", "tiffslide", "pydicom", "wsidicom", "opentile", "imagecodecs")
# Logger handlers and warning filters are process-wide; the lock keeps concurrent openings (threaded Dask
# workers) from restoring each other's temporary handlers.
_CAPTURE_LOCK = threading.RLock()


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def captured_library_output() -> Iterator[list[logging.LogRecord]]:
    """Collect log records of the slide libraries (and silence their warnings) inside the block."""
    collector = _Collector()
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    with _CAPTURE_LOCK:
        saved = [(logger.propagate, logger.handlers[:]) for logger in loggers]
        for logger in loggers:
            logger.propagate = False
            logger.handlers = [collector]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield collector.records
        finally:
            for logger, (propagate, handlers) in zip(loggers, saved, strict=True):
                logger.propagate = propagate
                logger.handlers = handlers


def has_errors(records: list[logging.LogRecord]) -> bool:
    return any(record.levelno >= logging.ERROR for record in records)
