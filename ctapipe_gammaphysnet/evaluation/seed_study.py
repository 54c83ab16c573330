"""How much γ-PhysNet depends on its weight initialisation, with and without attention.

N networks are trained with attention and N without, on the same images in the same order and
with the same split; only the seed of the weight initialisation (and of dropout) differs. Every
member is saved as a model file (so the study doubles as the training of an ensemble), predicts
the same test images and explains the first of them with Grad-CAM. This module trains and
collects; `evaluation.seed_summary` makes the statistics, tables, summary and plots of them.
"""
from pathlib import Path

import numpy as np
from astropy.table import vstack
from ctapipe.core import Component
from ctapipe.core.traits import Float, Int, List

from ..io.dl1_dataset import ImageStreamOptions
from ..io.model_file import save_model_file
from ..training.trainer import GammaPhysNetTrainer
from .explain import explain_images
from .seed_summary import (
    GROUPS,
    SeedStudyResult,
    ensemble_table,
    grad_cam_agreement,
    performance,
    real_image_performance,
    seed_variability,
)

__all__ = ["SeedVariabilityStudy"]


class SeedVariabilityStudy(Component, ImageStreamOptions):
    """Trains N seeds with and N without attention and measures their spread."""

    n_seeds = Int(5, help="Networks trained per group (with / without attention)").tag(config=True)
    first_seed = Int(0, help="Seeds are first_seed … first_seed + n_seeds - 1").tag(config=True)
    ensemble_size = Int(
        2, help="Members per ensemble; two ensembles of disjoint seeds are compared, which needs "
                "n_seeds ≥ 2 × ensemble_size").tag(config=True)
    data_seed = Int(
        0, help="Seed of the image order, the same for every member, so members differ only by "
                "their initialisation").tag(config=True)
    energy_bins_tev = List(Float(), default_value=[0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0],
                           help="Edges of the true-energy bins (TeV)").tag(config=True)
    min_events_per_bin = Int(10, help="Bins with fewer test images get no metric").tag(config=True)
    n_explain_images = Int(100, help="Test images on which the Grad-CAM maps are compared").tag(config=True)
    grad_cam_stage = Int(-1, help="Stage whose output Grad-CAM explains").tag(config=True)

    classes = [GammaPhysNetTrainer]

    def __init__(self, config=None, parent=None, **kwargs):
        super().__init__(config=config, parent=parent, **kwargs)
        if self.n_seeds < 2:
            raise ValueError(f"n_seeds must be at least 2 to measure a spread, not {self.n_seeds}")
        if self.ensemble_size < 2:
            raise ValueError(f"ensemble_size must be at least 2, not {self.ensemble_size}")
        if 2 * self.ensemble_size > self.n_seeds:
            self.log.warning("%d seeds do not make two disjoint ensembles of %d: only single "
                             "networks are compared between trainings", self.n_seeds,
                             self.ensemble_size)
        edges = np.asarray(self.energy_bins_tev)
        if len(edges) < 2 or np.any(edges <= 0) or np.any(np.diff(edges) <= 0):
            raise ValueError(f"energy_bins_tev must be increasing positive edges, not {list(edges)}")
        self.trainer = GammaPhysNetTrainer(parent=self)

    @property
    def seeds(self):
        return list(range(self.first_seed, self.first_seed + self.n_seeds))

    def streams(self, files, tel_type, selection, test_files=None):
        """Training, validation and test streams; the test stream is the validation split unless
        test files are given (then all their images)."""
        streams = self.image_streams(files, tel_type, selection, self.data_seed, test_files)
        return streams["train"], streams["validation"], streams.get("test", streams["validation"])

    def real_streams(self, real_files, grid, selection):
        """One stream per real file and telescope type whose camera is the studied one (the same
        LST camera is LSTCam, LSTS-design or LSTN-design in sim_telarray files; types that differ
        in their optics only share a name, which selects them together)."""
        return [self.image_streams([f], tel_type, selection, self.data_seed, [f])["test"]
                for f in real_files
                for tel_type in dict.fromkeys(str(t) for t in f.subarray.telescope_types
                                              if grid.matches(t.camera.geometry))]

    def run(self, grid, tel_type, streams, output_dir, metadata=None, final_dir=None,
            real_streams=()):
        """Train and evaluate all members; write tables, summary and plots into ``output_dir``.

        ``final_dir``: where ``output_dir`` will be moved when complete (default: ``output_dir``);
        the ensemble configurations name the member files there. ``real_streams``
        (`real_streams`): real images every member also predicts.
        """
        output_dir = Path(output_dir)
        final_dir = Path(final_dir or output_dir).absolute()
        train, validation, test = streams
        explain_inputs = self._explain_inputs(test)
        predictions, grad_cams, model_files, rows = {}, {}, {}, []
        targets = None
        for attention in (True, False):
            for seed in self.seeds:
                name = f"{GROUPS[attention]}_seed{seed}"
                self.trainer.seed, self.trainer.attention = seed, attention
                self.log.info("training %s", name)
                network, summary = self.trainer.train(grid, train, validation,
                                                      output_dir / "training" / name)
                path = output_dir / "members" / f"{name}.safetensors"
                trainer_config = {k: v for k, v in self.trainer.trait_values().items()
                                  if self.trainer.traits()[k].metadata.get("config")}
                save_model_file(path, {tel_type: network}, {tel_type: {
                    "image_selection": train.selection.quality_criteria,
                    "training": {**(metadata or {}), "trainer": trainer_config, **summary}}})
                model_files[(attention, seed)] = path.relative_to(output_dir)

                device = self.trainer.torch_device()
                outputs, member_targets = self.trainer.predict(network.to(device), test, device)
                if targets is None:
                    targets = member_targets
                elif not np.array_equal(targets["log_energy"], member_targets["log_energy"]):
                    raise RuntimeError("the test stream gave different images to two members")
                predictions[(attention, seed)] = outputs
                explained = explain_images(network, *explain_inputs, stage=self.grad_cam_stage)
                grad_cams[(attention, seed)] = explained["grad_cam"]
                table = performance(outputs, targets, self.energy_bins_tev, self.min_events_per_bin)
                if real_streams:
                    table = vstack([table, real_image_performance(
                        *self._predict_all(network, real_streams, device))])
                table.add_column(attention, 0, name="attention")
                table.add_column(seed, 1, name="seed")
                rows.append(table)

        members = vstack(rows)
        trainer = self.trainer
        result = SeedStudyResult(
            seeds=self.seeds,
            training=f"preset `{trainer.preset}`, {trainer.epochs} epochs max., batch {trainer.batch_size}",
            members=members,
            variability=seed_variability(members),
            grad_cam=grad_cam_agreement(grad_cams, self.seeds, len(explain_inputs[0]), explained["stage"]),
            ensembles=ensemble_table(predictions, targets, self.seeds, self.ensemble_size),
            model_files=model_files,
        )
        result.write(output_dir, final_dir)
        return result

    def _predict_all(self, network, streams, device):
        """Outputs and targets of ``network`` over several streams, concatenated."""
        predicted = [self.trainer.predict(network, stream, device) for stream in streams]
        return tuple({k: np.concatenate([p[i][k] for p in predicted]) for k in predicted[0][i]}
                     for i in (0, 1))

    def _explain_inputs(self, test):
        """The first test images, on which every member's Grad-CAM maps are computed."""
        images, times = [], []
        for sample in test:
            images.append(sample["image"])
            times.append(sample["peak_time"])
            if len(images) >= self.n_explain_images:
                break
        if not images:
            raise RuntimeError("the test stream gave no images")
        return np.stack(images), np.stack(times)

