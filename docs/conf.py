"""Sphinx configuration of the ctapipe_gammaphysnet documentation."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from config_reference import write_config_reference  # noqa: E402

from ctapipe_gammaphysnet import __version__  # noqa: E402

project = "ctapipe_gammaphysnet"
author = "ctapipe_gammaphysnet developers"
copyright = "2026, ctapipe_gammaphysnet developers"
version = release = __version__

extensions = []
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = ["_static"]
suppress_warnings = []

# the configuration reference is generated from the tools' traitlets on every build
write_config_reference(Path(__file__).parent / "config_reference.rst")
