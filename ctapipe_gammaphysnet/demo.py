"""The main job: simulate → train the Random-Forest baseline and γ-PhysNet → process → report.

Run as ``python -m ctapipe_gammaphysnet.demo --output-dir demo_output`` (``make demo``). Every
step calls the same command-line tools a user would, prints the command, and is skipped when its
output exists already, so a second run reuses the finished steps.

Training and test events are disjoint simulations (other seeds); γ-PhysNet and the baseline are
trained on the same training files and judged on the same test files.
"""
import argparse
import fnmatch
import importlib.resources
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .constants import CHECKPOINT_NAME
from .io.outputs import AtomicOutput, atomic_output_directory

log = logging.getLogger("ctapipe_gammaphysnet.demo")

BIN = Path(sys.executable).parent

#: view cone (deg) of every diffuse sample, centred on the pointing as in CTA productions: the
#: same for gammas and protons, so that the arrival direction tells the classifier nothing
VIEW_CONE = ["--view-cone=2.5", "--view-cone-centre=pointing"]


def _point_like(offset, position_angle=0):
    return [f"--source-offset={offset}", f"--source-position-angle={position_angle}"]


#: name → (particle, showers, seed, extra simulator options); sizes chosen so that the whole
#: demo ends within 30 min on 2 CPU cores. Training on diffuse gammas and protons; tests on
#: point-like gammas at 0°, at the standard 0.4° wobble offset in its four positions and at 1°,
#: on diffuse gammas (the report resolves their metrics by true offset) and on protons.
SAMPLES = {
    "train_gamma_diffuse": ("gamma-diffuse", 25000, 1, VIEW_CONE),
    "train_proton": ("proton", 35000, 2, VIEW_CONE),
    "test_gamma_0.0deg": ("gamma", 1500, 3, _point_like(0.0)),
    **{f"test_gamma_0.4deg_pa{angle}": ("gamma", 1000, 5 + i, _point_like(0.4, angle))
       for i, angle in enumerate((0, 90, 180, 270))},
    "test_gamma_1.0deg": ("gamma", 1500, 9, _point_like(1.0)),
    "test_gamma_diffuse": ("gamma-diffuse", 6000, 10, VIEW_CONE),
    "test_proton": ("proton", 18000, 4, VIEW_CONE),
}
TEST_SAMPLES = [name for name in SAMPLES if name.startswith("test_")]
#: the real sim_telarray files of the transfer check: the shared data next to this checkout
REAL_DATA = Path(os.environ.get("GAMMAPHYSNET_SHARED_DATA",
                                Path(__file__).resolve().parents[2] / "shared" / "data"))
GAMMA_OPTIONS = ["--energy-min=0.05TeV", "--energy-max=50TeV", "--max-impact=300"]
PROTON_OPTIONS = ["--energy-min=0.1TeV", "--energy-max=100TeV", "--max-impact=400"]


def resource(name):
    return Path(importlib.resources.files("ctapipe_gammaphysnet.resources") / name)


class Demo:
    def __init__(self, output_dir, scale=1.0, preset="small", epochs=14, workers=2, sample_scales=None,
                 compile=False, real_data=REAL_DATA):
        self.dir = Path(output_dir).absolute()
        self.scale = scale
        #: per-sample factors replacing ``scale`` (e.g. fewer test protons in the full benchmark),
        #: by name or shell-style pattern (``test_gamma*``), the first matching one counts
        self.sample_scales = dict(sample_scales or {})
        unknown = {p for p in self.sample_scales
                   if not any(fnmatch.fnmatchcase(name, p) for name in SAMPLES)}
        if unknown:
            raise ValueError(f"unknown sample(s) {sorted(unknown)}; the samples are {list(SAMPLES)}")
        self.preset = preset
        self.epochs = epochs
        self.workers = workers
        self.compile = compile
        self.real_data = Path(real_data)

    def path(self, name):
        return self.dir / name

    def step(self, title, output, command):
        """Run ``command(out)`` unless ``output`` exists.

        The command writes to a temporary name renamed on success, so an interrupted step leaves
        nothing that a second run would mistake for a finished one.
        """
        if output.exists():
            log.info("✓ %s: %s exists, reused", title, output.name)
            return
        with AtomicOutput(output) as tmp:
            args = [str(c) for c in command(tmp)]
            log.info("▶ %s\n    %s", title, shlex.join(args))
            start = time.perf_counter()
            subprocess.run(args, check=True, cwd=self.dir)
        log.info("  done in %.0f s", time.perf_counter() - start)

    def simulate(self):
        for name, (particle, n_showers, seed, extra) in SAMPLES.items():
            options = PROTON_OPTIONS if particle == "proton" else GAMMA_OPTIONS
            scale = next((factor for pattern, factor in self.sample_scales.items()
                          if fnmatch.fnmatchcase(name, pattern)), self.scale)
            self.step(f"simulate {name}", self.path(f"{name}.dl1.h5"), lambda out: [
                BIN / "ctapipe-simulate-showers", f"--particle={particle}",
                f"--n-showers={max(int(n_showers * scale), 100)}", f"--seed={seed}",
                f"--workers={self.workers}", f"--output={out}",
                *options, *extra,
            ])

    def train_gammaphysnet(self):
        work_dir = self.path("gammaphysnet_training")
        # an interrupted training (a long CPU benchmark spread over several sittings) goes on from
        # its last epoch's checkpoint
        resume = any(work_dir.glob(f"*/{CHECKPOINT_NAME}"))
        self.step(f"train γ-PhysNet ({self.preset} preset)", self.path("gammaphysnet.safetensors"), lambda out: [
            BIN / "ctapipe-train-gammaphysnet",
            f"--signal={self.path('train_gamma_diffuse.dl1.h5')}",
            f"--background={self.path('train_proton.dl1.h5')}",
            f"--output={out}", f"--work-dir={work_dir}",
            f"--preset={self.preset}", f"--epochs={self.epochs}", "--batch-size=64",
            "--resume" if resume else "--overwrite", "--compile" if self.compile else "--no-compile",
        ])

    def train_baseline(self):
        config = resource("baseline_rf.yaml")
        gammas = self.path("train_gamma_diffuse.dl1.h5")
        protons = self.path("train_proton.dl1.h5")

        def no_cross_validation(tool):
            # the test sample judges the forests; cross-validating would triple their training
            return f"--{tool}.CrossValidator.n_cross_validations=0"

        self.step("train baseline energy Random Forest", self.path("rf_energy.pkl"), lambda out: [
            BIN / "ctapipe-train-energy-regressor", f"--input={gammas}", f"--output={out}",
            f"--config={config}", no_cross_validation("TrainEnergyRegressor"), "--overwrite",
        ])
        self.step("train baseline gamma/hadron Random Forest", self.path("rf_classifier.pkl"),
                  lambda out: [
            BIN / "ctapipe-train-particle-classifier", f"--signal={gammas}",
            f"--background={protons}", f"--output={out}", f"--config={config}",
            no_cross_validation("TrainParticleClassifier"), "--overwrite",
        ])
        self.step("train baseline disp (direction) Random Forest", self.path("rf_disp.pkl"),
                  lambda out: [
            BIN / "ctapipe-train-disp-reconstructor", f"--input={gammas}", f"--output={out}",
            f"--config={config}", no_cross_validation("TrainDispReconstructor"), "--overwrite",
        ])

    def process_config(self):
        """gpn.yaml with the trained model, for ctapipe-process."""
        config = yaml.safe_load(resource("gpn.yaml").read_text())
        config.setdefault("GammaPhysNetComponent", {})["model_paths"] = [
            str(self.path("gammaphysnet.safetensors"))]
        path = self.path("process.yaml")
        path.write_text("# written by ctapipe_gammaphysnet.demo: gpn.yaml with the demo's model\n"
                        + yaml.safe_dump(config, sort_keys=False))
        return path

    def process(self):
        """γ-PhysNet through ctapipe-process, then the forests through ctapipe-apply-models.

        ctapipe-apply-models predicts whole tables at once; the forests in ctapipe-process's event
        loop predict one event at a time (docs/performance.rst).
        """
        config = self.process_config()
        forests = [self.path(name) for name in ("rf_energy.pkl", "rf_classifier.pkl", "rf_disp.pkl")]
        for name in TEST_SAMPLES:
            gammaphysnet = self.path(f"{name}.gammaphysnet.dl2.h5")
            if not self.path(f"{name}.dl2.h5").exists():
                self.step(f"ctapipe-process {name} (γ-PhysNet)", gammaphysnet, lambda out: [
                    BIN / "ctapipe-process", f"--input={self.path(name + '.dl1.h5')}",
                    f"--output={out}", f"--config={config}", "--progress",
                ])
            self.step(f"ctapipe-apply-models {name} (Random-Forest baseline)",
                      self.path(f"{name}.dl2.h5"), lambda out: [
                BIN / "ctapipe-apply-models", f"--input={gammaphysnet}", f"--output={out}",
                *(f"--reconstructor={path}" for path in forests), "--n-jobs=-1", "--progress",
            ])
            gammaphysnet.unlink(missing_ok=True)  # all of it is in the final DL2 file

    def process_real(self):
        """The real sim_telarray files with LST images of gammas or protons through γ-PhysNet and
        the forests (given a model for every real LST type), LSTs only; returns the DL2 files."""
        from .evaluation.real_files import (forests_for_telescopes, process_command,
                                            process_config, real_shower_files)

        directories = [d for d in (self.real_data / "simtel", self.real_data / "simtel-extra")
                       if d.is_dir()]
        files = real_shower_files(directories)
        if not files:
            log.info("no real sim_telarray files in %s: no transfer check", self.real_data)
            return []
        models = self.path("real_models")
        if not models.exists():
            with atomic_output_directory(models) as tmp:
                forests = forests_for_telescopes(
                    [self.path(f"rf_{name}.pkl") for name in ("energy", "classifier", "disp")],
                    [f.subarray for f in files], tmp)
                config = process_config(yaml.safe_load(self.process_config().read_text()),
                                        {name: models / p.name for name, p in forests.items()})
                (tmp / "process.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        outputs = []
        for real_file in files:
            output = self.path(f"real_{real_file.name}.dl2.h5")
            self.step(f"ctapipe-process real {real_file.name} (γ-PhysNet and forests, LSTs)",
                      output, lambda out: process_command(real_file, models / "process.yaml", out))
            outputs.append(output)
        return outputs

    def transfer(self, real_dl2):
        if not real_dl2:
            return
        self.step("transfer check on the real images", self.path("transfer"), lambda out: [
            BIN / "ctapipe-check-transfer-gammaphysnet", *(f"--real={p}" for p in real_dl2),
            *(f"--simulated={self.path(name + '.dl2.h5')}" for name in TEST_SAMPLES),
            "--reference-prefix=RandomForest", f"--output-dir={out}",
        ])

    def report(self):
        transfer = self.path("transfer")
        self.step("performance report", self.path("report"), lambda out: [
            BIN / "ctapipe-report-gammaphysnet",
            *(f"--dl2={self.path(name + '.dl2.h5')}" for name in TEST_SAMPLES),
            f"--output-dir={out}", "--reference-prefix=RandomForest",
            f"--model={self.path('gammaphysnet.safetensors')}",
            *([f"--transfer={transfer}"] if transfer.exists() else []),
        ])

    def run(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        self.simulate()
        # the forests first: minutes where γ-PhysNet may take hours (the full benchmark on CPU)
        self.train_baseline()
        self.train_gammaphysnet()
        self.process()
        self.transfer(self.process_real())
        self.report()
        log.info("demo finished in %.0f min; open %s", (time.perf_counter() - start) / 60,
                 self.path("report") / "report.html")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="demo_output", type=Path)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply the number of simulated showers (e.g. 0.1 for a quick look)")
    parser.add_argument("--preset", default="small", help="γ-PhysNet network preset")
    parser.add_argument("--epochs", type=int, default=14, help="γ-PhysNet training epochs")
    parser.add_argument("--workers", type=int, default=2, help="simulation worker processes")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile γ-PhysNet's training (worth it for the paper preset)")
    parser.add_argument("--sample-scale", nargs="*", default=[], metavar="SAMPLE=FACTOR",
                        help="factor for one sample (or a pattern: 'test_gamma*') instead of --scale;"
                        f" samples: {', '.join(SAMPLES)}")
    args = parser.parse_args(argv)
    try:
        sample_scales = {name: float(factor) for name, factor in
                         (item.split("=", 1) for item in args.sample_scale)}
    except ValueError:
        parser.error(f"--sample-scale takes SAMPLE=FACTOR items, got {args.sample_scale}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        demo = Demo(args.output_dir, args.scale, args.preset, args.epochs, args.workers, sample_scales,
                    args.compile)
    except ValueError as err:
        parser.error(str(err))
    try:
        demo.run()
    except subprocess.CalledProcessError as err:
        log.error("step failed (exit code %d): %s", err.returncode, shlex.join(err.cmd))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
