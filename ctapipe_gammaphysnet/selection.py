"""The images γ-PhysNet learns from and predicts for: one selection for training and inference.

The criteria are ``(name, expression)`` pairs on the DL1 parameter columns as ctapipe writes them
(``hillas_intensity``, ``leakage_intensity_width_2``, …), the syntax of ctapipe's
``QualityQuery`` on tables and of its machine-learning tools (``baseline_rf.yaml``). The same
expressions select rows of a parameter table (training, ``ctapipe-apply-gammaphysnet``) and
telescope events of ``ctapipe-process``: an event's ``ImageParametersContainer`` is flattened into
those column names by ctapipe itself (``as_dict(flatten=True, add_prefix=True)``).

Training writes its criteria into the model file (``io.model_file``); the reconstruction
components apply the model's criteria unless the configuration sets others
(``GammaPhysNetImageSelection.for_models``). Images outside them are written invalid.

Besides the parameters, an expression may use the image itself, ``image`` and ``peak_time``
(arrays of the pixels; a column of one row per image in tables read with images), for checks on
the charges that the parameters cannot express.
"""
import logging

import numpy as np
from ctapipe.core import QualityQuery
from ctapipe.core.traits import List, Tuple, Unicode

__all__ = ["TRAINING_CRITERIA", "GammaPhysNetImageSelection", "event_columns"]

log = logging.getLogger(__name__)

#: the training cuts of ctapipe-train-gammaphysnet, and what a model file without recorded
#: criteria (written before they were recorded) was trained with
TRAINING_CRITERIA = (
    ("enough intensity", "hillas_intensity >= 50"),
    ("not at the edge", "leakage_intensity_width_2 <= 0.2"),
    ("valid width", "np.isfinite(hillas_width) & (hillas_width > 0)"),
)


def event_columns(dl1):
    """The namespace of one telescope event (a ``DL1CameraContainer``): its parameters under
    their table column names, and the ``image`` and ``peak_time``."""
    columns = dl1.parameters.as_dict(recursive=True, flatten=True, add_prefix=True)
    columns["image"] = dl1.image
    columns["peak_time"] = dl1.peak_time
    return columns


def _normalized(expression):
    return "".join(expression.split())


class GammaPhysNetImageSelection(QualityQuery):
    """Image selection of γ-PhysNet: the images a model is trained on, and the only ones it
    predicts for (the others are written invalid)."""

    quality_criteria = List(
        Tuple(Unicode(), Unicode()),
        default_value=list(TRAINING_CRITERIA),
        help=(
            "(name, expression) pairs on the DL1 parameter columns (e.g. hillas_intensity, "
            "leakage_intensity_width_2; also image and peak_time) that an image must pass. "
            "Training records them in the model file; inference applies the model's unless "
            "they are configured (a warning says when that admits images outside the training "
            "cuts)."
        ),
    ).tag(config=True)

    def table_mask(self, table):
        """Boolean mask of the rows of a table (parameter columns) that pass."""
        if len(table) == 0:
            return np.zeros(0, dtype=bool)
        return self.get_table_mask(table)

    def passes(self, dl1):
        """Whether one telescope event (``event.dl1.tel[tel_id]``) passes."""
        return bool(np.all(self(**event_columns(dl1))))

    def missing_from(self, criteria):
        """The criteria of ``criteria`` that this selection does not apply (by expression)."""
        own = {_normalized(expression) for _, expression in self.quality_criteria}
        return [(name, expression) for name, expression in criteria
                if _normalized(expression) not in own]

    @classmethod
    def for_models(cls, recorded, parent, description="the model"):
        """The selection to apply with models trained with ``recorded`` criteria.

        Parameters
        ----------
        recorded : list
            The criteria of each model (list of (name, expression)), None for a model file that
            records none (then ``TRAINING_CRITERIA``, with a log message).
        parent : Component
            Its configuration decides: a configured ``quality_criteria`` replaces the models'
            (with a warning if it leaves out one of them).
        description : str
            Names the models in messages.
        """
        if any(criteria is None for criteria in recorded):
            log.info("%s: no image selection recorded in the model file (written before it was);"
                     " applying the training defaults %s", description, list(TRAINING_CRITERIA))
        sets = {tuple(map(tuple, TRAINING_CRITERIA if c is None else c)) for c in recorded}
        if len(sets) > 1:
            log.warning("%s: the models were trained with different image selections; applying "
                        "all their criteria", description)
        training = list(dict.fromkeys(criterion for criteria in sorted(sets)
                                      for criterion in criteria))
        selection = cls(parent=parent)
        if "quality_criteria" not in selection._find_my_config(selection.config):
            # the criteria are compiled when the query is made
            return cls(parent=parent, quality_criteria=training)
        missing = selection.missing_from(training)
        if missing:
            selection.log.warning(
                "%s: the configured %s.quality_criteria leave out the training cuts %s: "
                "predictions for images the network was not trained on are written as valid",
                description, cls.__name__, missing)
        return selection
