"""Outputs that appear only when complete: nothing half-written under the final name."""
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_output_directory"]


@contextmanager
def atomic_output_directory(path, overwrite=False):
    """A temporary directory next to ``path`` that becomes ``path`` when the block succeeds.

    On an error the temporary directory is removed and an existing ``path`` is left untouched;
    an existing ``path`` is replaced only with ``overwrite``.
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    # a plain mkdir (not mkdtemp's private directory): the output gets the user's permissions
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.mkdir()
    try:
        yield tmp
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path}: exists already (use --overwrite)")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        old = path.with_name(tmp.name + ".old")
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old)
    else:
        tmp.rename(path)
