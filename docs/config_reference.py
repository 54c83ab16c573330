"""Write the configuration reference of every tool from its traitlets (run by conf.py)."""
import textwrap

from ctapipe.core import Tool

TOOLS = [
    ("ctapipe_gammaphysnet.tools.simulate_showers", "SimulateShowers"),
    ("ctapipe_gammaphysnet.tools.train", "TrainGammaPhysNetTool"),
    ("ctapipe_gammaphysnet.reco.components", None),
    ("ctapipe_gammaphysnet.tools.apply", None),
    ("ctapipe_gammaphysnet.tools.report", None),
    ("ctapipe_gammaphysnet.tools.check_transfer", None),
    ("ctapipe_gammaphysnet.tools.explain", None),
    ("ctapipe_gammaphysnet.tools.seeds", None),
    ("ctapipe_gammaphysnet.tools.export", None),
]


def _configurables(module_name):
    """The Tool of a module and the components it configures (or the module's components)."""
    import importlib

    from ctapipe.core import Component

    module = importlib.import_module(module_name)
    found = []
    for value in vars(module).values():
        if isinstance(value, type) and value.__module__ == module_name and issubclass(value, (Tool, Component)):
            found.append(value)
            found.extend(getattr(value, "classes", []))
    unique = []
    for cls in found:
        if cls not in unique and cls.class_own_traits(config=True):
            unique.append(cls)
    return unique


def _trait_lines(cls):
    lines = []
    for name, trait in sorted(cls.class_traits(config=True).items()):
        default = trait.default_value_repr()
        help_text = " ".join((trait.help or "").split())
        lines.append(f"``{cls.__name__}.{name}`` = ``{default}``")
        lines.append(textwrap.indent(textwrap.fill(help_text or "(no description)", 90), "    "))
        lines.append("")
    return lines


def write_config_reference(path):
    out = [
        "Configuration reference",
        "=======================",
        "",
        "Every option below can be set on the command line (``--Class.option=value``) or in a",
        "YAML file given with ``--config`` (``Class: {option: value}``). Generated from the code.",
        "",
    ]
    seen = set()
    for module_name, _ in TOOLS:
        try:
            classes = _configurables(module_name)
        except ImportError:
            continue
        for cls in classes:
            if cls.__name__ in seen or not cls.__module__.startswith("ctapipe_gammaphysnet"):
                continue
            seen.add(cls.__name__)
            title = cls.__name__
            out += [title, "-" * len(title), ""]
            doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
            if doc:
                out += [doc.replace("*", "\\*").replace("`", "``").replace("````", "``"), ""]
            out += _trait_lines(cls)
    path.write_text("\n".join(out) + "\n")
