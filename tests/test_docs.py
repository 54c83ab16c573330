"""The Sphinx documentation builds without a warning (the configuration reference included)."""
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_docs_build_without_warnings(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "html" / "config_reference.html").read_text()
    for option in ("GammaPhysNetTrainer.loss_balancing", "GammaPhysNetImageSelection.quality_criteria"):
        assert option in html
