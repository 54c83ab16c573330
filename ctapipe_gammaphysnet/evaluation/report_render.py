"""Rendering the report: the HTML page from the templates in ``templates/`` (the standard
library's ``string.Template``), the figures and their tables written next to it.

Every text put into a template is escaped here; only fragments rendered by this module (tables,
figures, sections) go in as HTML.
"""
import html
import io
from functools import cache
from importlib.resources import files
from string import Template

from astropy.table import QTable

from ..constants import GAMMA_ID

__all__ = [
    "write_camera_images",
    "html_table",
    "irf_section",
    "level_section",
    "offsets_section",
    "write_figures",
    "write_page",
]


@cache
def template(name):
    """The template ``templates/<name>`` (its final newline dropped: fragments join inline)."""
    text = (files(__package__) / "templates" / name).read_text(encoding="utf-8")
    return Template(text.rstrip("\n"))


def _list(items):
    return "<ul>" + "".join(f"<li>{html.escape(str(item))}</li>" for item in items) + "</ul>"


def html_table(table):
    """``table`` as an HTML table, floats to 4 significant digits."""
    table = QTable(table, copy=True)
    for column in table.itercols():
        if column.dtype.kind == "f":
            column.info.format = ".4g"
    buffer = io.StringIO()
    table.write(buffer, format="ascii.html")
    text = buffer.getvalue()
    return text[text.index("<table"): text.index("</table>") + len("</table>")]


def _write(output_dir, stem, table, fig, dpi):
    fig.savefig(output_dir / f"{stem}.png", dpi=dpi)
    table.write(output_dir / f"{stem}.ecsv")


def write_figures(output_dir, figures, dpi=100):
    """Write each ``(stem, title, table, figure)`` as ``<stem>.png`` and ``<stem>.ecsv`` into
    ``output_dir``; returns their HTML (title, image, table link), one line each."""
    parts = []
    for stem, title, table, fig in figures:
        _write(output_dir, stem, table, fig, dpi)
        parts.append(template("figure.html").substitute(
            title=html.escape(title), image=html.escape(f"{stem}.png"),
            table=html.escape(f"{stem}.ecsv")))
    return "\n".join(parts)


def level_section(level, figures_html):
    """The section of one level (subarray, a telescope type)."""
    return template("level.html").substitute(level=html.escape(level), figures=figures_html)


def write_camera_images(output_dir, figure, dpi=80):
    """Write the camera image figure (``report_figures.camera_image_figure``) and its table;
    returns its section."""
    (stem, _, table, fig), = figure
    _write(output_dir, stem, table, fig, dpi)
    return template("camera_images.html").substitute()


def offsets_section(samples, notes, figures_html):
    """The section of the metrics by source position: the point-like ``samples`` (names), the
    ``notes`` and the figures."""
    return template("offsets.html").substitute(
        samples=html.escape(", ".join(samples) or "none"),
        notes=_list(notes) if notes else "", figures=figures_html)


def irf_section(result, irf, min_events, cuts_file, figures_html):
    """The section of the effective area and sensitivity: the analysis chains, how ctapipe
    computed them (``irf``: the PointLikeIRF), the notes, the cuts file and the figures."""
    chains = ""
    if result.chains:
        chains = "<p>Analysis chains: " + ", ".join(
            html.escape(f"{c.name} = {c.energy} + {c.classifier} + {c.geometry}")
            for c in result.chains) + ".</p>"
    return template("irf.html").substitute(
        chains=chains,
        gamma_efficiency=f"{irf.gamma_efficiency:.0%}",
        direction_containment=f"{irf.direction_containment:.0%}",
        min_events=min_events,
        observation_time=html.escape(str(irf.observation_time)),
        gamma_spectrum=html.escape(irf.gamma_target_spectrum.name),
        ring=html.escape(f"{irf.background_offset_min}–{irf.background_offset_max}"),
        alpha=irf.alpha,
        notes=_list(result.notes) if result.notes else "",
        cuts=(f'<p>cuts: <a href="{html.escape(cuts_file)}">{html.escape(cuts_file)}</a></p>'
              if cuts_file else ""),
        figures=figures_html,
    )


def write_page(path, paths, summary, comparison, sections, camera_images, min_events,
               common_events):
    """Write the report page to ``path``: the inputs, the definitions, the summary and
    comparison tables, then the ``sections`` and the camera images (HTML)."""
    comparison_html = ""
    if comparison is not None:
        comparison_html = template("comparison.html").substitute(table=html_table(comparison))
    events_used = ("Each property is compared on the events every reconstructor of that"
                   " property reconstructed." if common_events
                   else "Each reconstructor is evaluated on its own valid events.")
    page = template("report.html").substitute(
        inputs="".join(f"<li>{html.escape(str(p))}</li>" for p in paths),
        gamma_id=GAMMA_ID, min_events=min_events, events_used=events_used,
        summary=html_table(summary), comparison=comparison_html, sections="".join(sections),
        camera_images=camera_images,
    )
    path.write_text(page + "\n", encoding="utf-8")
