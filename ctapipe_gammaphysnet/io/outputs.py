"""Outputs that appear only when complete: nothing half-written under the final name.

Every file and directory the package writes goes through `AtomicOutput`, with one policy:

- The output is written under a hidden temporary name next to it, ``.<name>.<pid>.tmp``
  (``<pid>``: the writing process), and renamed to ``<name>`` only when complete. An existing
  output is replaced only with ``overwrite``, and in one rename.
- The temporary is removed on every exit Python sees (an error, Ctrl-C, ``sys.exit``). A
  temporary that outlived its process (``kill -9``, a power cut) is removed by the next write of
  the same output, with a log message.
- Outputs get the permissions the user's umask gives, whatever the writing library chose.
- A missing output directory is created (and logged); a directory that cannot be written in is
  refused with one message naming it.
"""
import errno
import logging
import os
import re
import shutil
from pathlib import Path

__all__ = [
    "AtomicOutput",
    "OutputError",
    "atomic_output",
    "atomic_output_directory",
    "check_output",
    "prepare_output_directory",
    "sweep_stale_temporaries",
    "temporary_name",
]

log = logging.getLogger(__name__)


class OutputError(OSError):
    """An output cannot be written (exists, unwritable directory); the message names it."""

    def __str__(self):
        return self.strerror


def temporary_name(path, pid=None):
    """The temporary ``.<name>.<pid>.tmp`` under which ``path`` is written."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid() if pid is None else pid}.tmp")


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_stale_temporaries(path):
    """Remove the temporaries of ``path`` left by processes that no longer run; their names."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.tmp(\.old)?")
    removed = []
    if not path.parent.is_dir():
        return removed
    for candidate in path.parent.iterdir():
        match = pattern.fullmatch(candidate.name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        _remove(candidate)
        log.warning("removed %s, left by an interrupted run (process %s)", candidate, match.group(1))
        removed.append(candidate)
    return removed


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _unwritable(directory, err):
    return OutputError(
        err.errno, f"{directory}: cannot write there ({os.strerror(err.errno)}); choose another "
        "output location or make the directory writable", str(directory))


def prepare_output_directory(directory):
    """Create ``directory`` if missing (the policy of every tool) and check it is writable."""
    directory = Path(directory)
    if directory.is_dir():
        return directory
    if directory.exists():
        raise OutputError(errno.ENOTDIR, f"{directory}: not a directory", str(directory))
    try:
        directory.mkdir(parents=True)
    except FileExistsError:  # made meanwhile by another process
        pass
    except OSError as err:
        raise _unwritable(directory.parent, err) from None
    log.info("created the output directory %s", directory)
    return directory


class AtomicOutput:
    """An output ``path`` written under a temporary name and renamed when complete.

    Use it as a context manager (renamed if the block succeeds, removed if it fails)::

        with AtomicOutput(path) as tmp:
            write(tmp)

    or, where the writing spans a Tool's ``setup``/``start``/``finish``, call `commit` at the
    end and register `discard` for every other exit (it does nothing after `commit`).

    Parameters
    ----------
    path : path-like
        The final output.
    overwrite : bool
        Replace an existing ``path``; without it an existing output is refused.
    directory : bool
        The output is a directory (the temporary is created empty); else a file (that the
        writer creates; the directory is checked to be writable).
    """

    def __init__(self, path, overwrite=False, directory=False):
        self.path = Path(path).expanduser().absolute()
        self.overwrite = overwrite
        self.directory = directory
        self._check_exists()
        prepare_output_directory(self.path.parent)
        sweep_stale_temporaries(self.path)
        self.tmp = temporary_name(self.path)
        _remove(self.tmp)  # a pid reused from an interrupted run
        try:
            if directory:
                self.tmp.mkdir()
            else:  # the writer creates it (some warn about overwriting a file)
                os.close(os.open(self.tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
                self.tmp.unlink()
        except OSError as err:
            raise _unwritable(self.path.parent, err) from None
        self.done = self.committed = False

    def _check_exists(self):
        if self.path.exists() and not self.overwrite:
            raise OutputError(errno.EEXIST, f"{self.path}: exists already; use --overwrite to "
                              "replace it", str(self.path))

    def commit(self):
        """Give the temporary the umask's permissions and rename it to the output."""
        if self.committed:
            return self.path
        if self.done:
            raise RuntimeError(f"{self.tmp} was discarded: nothing to commit")
        self._forget_in_provenance()
        try:
            self._check_exists()
            os.chmod(self.tmp, (0o777 if self.tmp.is_dir() else 0o666) & ~_umask())
            if self.directory and self.path.exists():
                old = self.tmp.with_name(self.tmp.name + ".old")
                self.path.rename(old)
                self.tmp.rename(self.path)
                shutil.rmtree(old)
            else:
                os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        self.done = self.committed = True
        return self.path

    def _forget_in_provenance(self):
        """Writers that register their output (DataWriter, HDF5Merger) registered the temporary,
        which is gone: the tools register their final outputs themselves."""
        from ctapipe.core import Provenance

        activity = Provenance().current_activity
        if activity is not None:
            activity.output[:] = [e for e in activity.output if e["url"] != str(self.tmp)]

    def discard(self):
        """Remove the temporary (nothing happens after `commit`)."""
        if not self.done:
            _remove(self.tmp)
            self._forget_in_provenance()
            self.done = True

    def __enter__(self):
        return self.tmp

    def __exit__(self, exc_type, exc_value, traceback):
        if exc_type is None:
            self.commit()
        else:
            self.discard()
        return False


def atomic_output(path, overwrite=False):
    """`AtomicOutput` of a file: ``with atomic_output(path) as tmp: write(tmp)``."""
    return AtomicOutput(path, overwrite)


def atomic_output_directory(path, overwrite=False):
    """`AtomicOutput` of a directory: ``with atomic_output_directory(path) as tmp: …``."""
    return AtomicOutput(path, overwrite, directory=True)


def check_output(path, overwrite=False, directory=False):
    """What `AtomicOutput` checks, before a long computation writes ``path``: an existing output
    refused without ``overwrite``, the directory created and writable, stale temporaries gone."""
    AtomicOutput(path, overwrite, directory).discard()
