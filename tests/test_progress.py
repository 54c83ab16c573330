"""Progress bars redraw in place on a terminal and at most every LOG_INTERVAL in a log file."""
import io

from ctapipe_gammaphysnet.progress import LOG_INTERVAL, progress_bar


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _draws(stream, n=200):
    with progress_bar(total=n, file=stream) as bar:
        for _ in range(n):
            bar.last_print_t -= 0.5  # as if half a second passed since the last draw
            bar.update(1)
    return stream.getvalue().count("\r")


def test_log_files_get_few_lines():
    assert _draws(_Terminal()) > 150  # 100 s: every update
    log = io.StringIO()
    assert _draws(log) <= 4  # 100 s: the start, one a minute, the end
    assert progress_bar(range(3), file=io.StringIO()).mininterval == LOG_INTERVAL
