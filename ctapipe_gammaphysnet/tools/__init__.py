"""The command-line tools, and what they share: one way to report bad input.

A problem with the input or the environment (a damaged file, a model that does not fit, an
unwritable directory) ends a tool with one ERROR line naming the file and what to do, without a
traceback (exit code 2 when ``setup`` finds it, 1 later); the traceback is shown with
``--log-level=DEBUG``. ctapipe's "Use --help for more info" follows only errors in the command
line itself. Unexpected exceptions (bugs) keep their traceback.

The tools that train share their training files (`TrainingFiles`).
"""
import logging

from ctapipe.core import Provenance, Tool, ToolConfigurationError
from ctapipe.core.traits import List, Path
from traitlets import HasTraits

__all__ = ["GammaPhysNetTool", "TrainingFiles", "TRAINER_ALIASES", "user_errors", "user_message"]

#: the trainer's options on the command line of every tool that trains
TRAINER_ALIASES = {
    "preset": "GammaPhysNetTrainer.preset",
    "epochs": "GammaPhysNetTrainer.epochs",
    "batch-size": "GammaPhysNetTrainer.batch_size",
    "device": "GammaPhysNetTrainer.device",
    "num-workers": "GammaPhysNetTrainer.num_workers",
}


def user_errors():
    """The exceptions that report bad input or environment, not a bug (imported when needed:
    ctapipe-simulate-showers need not load torch)."""
    import tables

    from ..evaluation.dl2 import DL2InputError
    from ..io.dl1_dataset import DL1InputError
    from ..io.model_file import ModelFileError
    from ..training.trainer import TrainingError

    # OSError covers io.outputs.OutputError
    return (DL1InputError, DL2InputError, ModelFileError, TrainingError, OSError,
            tables.HDF5ExtError)


def user_message(error):
    """The one line for a user error: ``file: problem``, without HDF5's C back-trace."""
    from ..io.hdf5 import hdf5_error_message
    from ..io.outputs import OutputError

    if isinstance(error, OSError) and not isinstance(error, OutputError) and error.filename:
        return f"{error.filename}: {error.strerror or error}"
    return hdf5_error_message(error)


class _UserErrorFilter(logging.Filter):
    """Turns ctapipe's "Caught unexpected exception" traceback for a user error into its line,
    and drops its "Use --help for more info" after an error in an input file (not an option)."""

    def __init__(self, tool):
        super().__init__()
        self.tool = tool
        self.input_error = False

    def filter(self, record):
        if record.msg == "Use --help for more info" and self.input_error:
            self.input_error = False
            return False
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and isinstance(error, user_errors()) and (
                self.tool.log.getEffectiveLevel() > logging.DEBUG):
            record.msg, record.args = "%s", (user_message(error),)
            record.exc_info = record.exc_text = None
        # setup() refusing an input file: a ToolConfigurationError raised from a user error
        if record.args and isinstance(record.args[0], ToolConfigurationError):
            self.input_error = isinstance(record.args[0].__context__, user_errors())
        return True


class GammaPhysNetTool(Tool):
    """Base of the package's tools: user errors as one message (see the module docstring)."""

    def run(self, argv=None, raises=False):
        error_filter = _UserErrorFilter(self)
        self.log.addFilter(error_filter)
        try:
            super().run(argv, raises=raises)
        finally:
            self.log.removeFilter(error_filter)


class TrainingFiles(HasTraits):
    """The signal and background files of a tool that trains (mixed in: the options stay in the
    tool's configuration section)."""

    signal_files = List(Path(), default_value=[],
                        help="DL1 files with images of gamma showers").tag(config=True)
    background_files = List(Path(), default_value=[],
                            help="DL1 files with images of hadron showers").tag(config=True)

    def check_training_files_given(self):
        for files, kind, option in ((self.signal_files, "signal", "--signal"),
                                    (self.background_files, "background", "--background")):
            if not files:
                raise ToolConfigurationError(f"no {kind} files given ({option})")

    def read_training_files(self):
        """The `TrainingFile` of every signal (with gammas) and background file (with hadrons),
        each given once, recorded as inputs in the provenance."""
        from ..io.dl1_dataset import DL1InputError, inspect_training_files

        try:
            files = (inspect_training_files(self.signal_files, need_gammas=True)
                     + inspect_training_files(self.background_files, need_hadrons=True))
        except DL1InputError as err:
            raise ToolConfigurationError(str(err)) from None
        seen = {}
        for role, paths in (("signal", self.signal_files), ("background", self.background_files)):
            for path in paths:
                key = path.resolve()
                if key in seen:
                    raise ToolConfigurationError(
                        f"{path}: given twice (as {seen[key]} and as {role}); give each file once")
                seen[key] = role
        for training_file in files:
            Provenance().add_input_file(str(training_file.path), role="DL1/Event")
        return files
