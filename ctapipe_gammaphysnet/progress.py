"""Progress bars of the package: tqdm's, but quiet in log files.

On a terminal a bar redraws itself in place. Written to a file (``make demo > log 2>&1``, a
batch job) every redraw is a new line, so there a bar is drawn at most every `LOG_INTERVAL`
seconds, and once at its end.
"""
import sys

from tqdm.auto import tqdm

__all__ = ["LOG_INTERVAL", "progress_bar"]

#: seconds between two draws of a bar that is not written to a terminal
LOG_INTERVAL = 60.0

# in a notebook tqdm.auto draws a widget, which redraws in place
_IN_NOTEBOOK = any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no such method, or a closed stream
        return False


def progress_bar(iterable=None, **kwargs):
    """``tqdm(iterable, **kwargs)``, drawn every `LOG_INTERVAL` s when not on a terminal."""
    if not _IN_NOTEBOOK and not _is_terminal(kwargs.get("file") or sys.stderr):
        kwargs.setdefault("mininterval", LOG_INTERVAL)
        kwargs.setdefault("maxinterval", LOG_INTERVAL)
    return tqdm(iterable, **kwargs)
