"""Option groups and helpers the commands share."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Sequence

from coarse2fine.compression import METHODS, VARIANTS
from coarse2fine.data.sources import count_classes
from coarse2fine.experiments.settings import parse_controls
from coarse2fine.run_folders import runs_held

PATCH_VARIANTS = tuple(name for name, (method, _) in VARIANTS.items() if method == "patch")  # patch-bl, patch-pi
METHOD_CHOICES = (*METHODS, *PATCH_VARIANTS)
DEVICE_HELP = "where the model runs: auto (a GPU when there is one), cpu, cuda, cuda:N or mps"


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that ends each option's text with its default, ``(default: X)``, unless the text
    says it already or there is nothing to show (no default, a flag that is off, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text.lower() or default is None or default is False
                or default == argparse.SUPPRESS or default == []):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """The CLI's parser: every option's help shows its default (:class:`DefaultsHelpFormatter`);
    its subcommands' parsers are of this class too."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def add_quiet(p: argparse.ArgumentParser) -> None:
    """``--quiet``, which every command takes: warnings and errors only (no progress bars, no
    info lines); what the command prints (its tables, its results) is still printed."""
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=10 (repeatable)")
    add_quiet(p)


def add_method_option(p: argparse.ArgumentParser, methods: Sequence[str] = METHOD_CHOICES) -> None:
    """``--method`` of the commands that train or measure one setting."""
    patch = ("; patch-bl / patch-pi: patch with c2f.patch_resize bilinear / pi, as --methods names them"
             if any(m in PATCH_VARIANTS for m in methods) else "")
    p.add_argument("--method", choices=list(methods), help=f"override c2f.method (default: the config's){patch}")


def add_schedules_option(p: argparse.ArgumentParser, default: str | None, text: str) -> None:
    """``--schedules``, also spelt ``--schedule``: one option under both names."""
    p.add_argument("--schedules", "--schedule", dest="schedules", default=default, metavar="SCHEDULES", help=text)


def method_overrides(method: str | None) -> list[str]:
    """``--method``'s config values: ``c2f.method``, and for ``patch-bl`` / ``patch-pi`` (the names
    the multi-method commands use) ``c2f.method=patch`` with its ``c2f.patch_resize``."""
    if not method:
        return []
    if method in PATCH_VARIANTS:
        base, resize = VARIANTS[method]
        return [f"c2f.method={base}", f"c2f.patch_resize={resize}"]
    return [f"c2f.method={method}"]


def config_methods(text: str, patch_resize: str) -> str:
    """``--methods`` with a bare ``patch`` read as the config's own ``c2f.patch_resize``
    (``patch-bl`` or ``patch-pi``); a method named twice counts once."""
    own = next(name for name in PATCH_VARIANTS if VARIANTS[name][1] == patch_resize)
    names = [own if m.strip() == "patch" else m.strip() for m in text.split(",") if m.strip()]
    return ",".join(dict.fromkeys(names))


def add_grid_options(p: argparse.ArgumentParser, calibrate_rounds: int = 0) -> None:
    """Options of the commands that train several runs and compare them (``calibrate_rounds``:
    the default of ``--calibrate-rounds``)."""
    p.add_argument("--fresh", action="store_true", help="retrain runs even when finished results exist")
    default = (f"default {calibrate_rounds}; 0: wall and step time only" if calibrate_rounds
               else "0, the default: wall and step time only")
    p.add_argument("--calibrate-rounds", type=int, default=calibrate_rounds,
                   help="also time each phase's real step in N interleaved rounds for a calibrated time save "
                        f"({default}, both measured in the runs)")
    p.add_argument("--recalibrate", action="store_true", help="calibrate again even when calibration.json covers the runs")


def add_report_only(p: argparse.ArgumentParser) -> None:
    """``--report-only`` of the commands that train an experiment."""
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write and print the tables of the runs finished in --out so far (every seed "
                        "in which all settings have finished; the rest are named), e.g. while the experiment runs")


def add_evidence_options(p: argparse.ArgumentParser) -> None:
    """Options of the commands that compare settings: controls and seeds (they override the
    config's ``experiment.controls`` and ``experiment.seeds``)."""
    p.add_argument("--controls", default=None,
                   help="comma-separated controls to train beside the variants: restart (the variants' phases, epochs "
                        "and resets, all at R = 1), equal-epochs (the baseline trained as many epochs as the longest "
                        "variant), all or none (default: experiment.controls of the config, none)")
    p.add_argument("--seeds", type=int, default=None,
                   help="train every setting with N seeds (train.seed varied) and report mean ± std, the paired gain "
                        "with a bootstrap interval and mean curves (default: experiment.seeds of the config, 1)")
    p.add_argument("--interleave", action=argparse.BooleanOptionalAction, default=None,
                   help="train a seed's settings in turns of one epoch each in this process, so that a machine whose "
                        "speed drifts over minutes charges every run alike (the same runs, every run's model in "
                        "memory at once; default: experiment.interleave of the config: on in the demo preset)")


def interleaved(cfg, args) -> bool:
    """Whether a seed's settings train in turns: ``--interleave`` / ``--no-interleave``, else the
    config's ``experiment.interleave``."""
    return cfg.experiment.interleave if args.interleave is None else args.interleave


def evidence(cfg, args) -> tuple[list[str], int]:
    """The controls and the number of seeds: ``--controls`` / ``--seeds``, else the config's."""
    controls = parse_controls(args.controls) if args.controls is not None else list(cfg.experiment.controls)
    seeds = args.seeds if args.seeds is not None else cfg.experiment.seeds
    if seeds < 1:
        raise ValueError(f"--seeds: at least 1, got {seeds}")
    return controls, seeds


def add_run_options(p: argparse.ArgumentParser, methods: Sequence[str], out_help: str) -> None:
    """Options of the commands that train one run."""
    p.add_argument("config", help="preset name or YAML path")
    p.add_argument("--schedule", help="override c2f.schedule (1 = full resolution only; default: the config's)")
    add_method_option(p, methods)
    p.add_argument("--out", required=True, help=out_help)
    folder = p.add_mutually_exclusive_group()
    folder.add_argument("--resume", action="store_true",
                        help="continue the run of this config in --out, and refuse when --out holds none (without "
                             "it, a run found there is continued too, and an empty --out starts one)")
    folder.add_argument("--fresh", action="store_true",
                        help="discard what --out holds (checkpoint, logs, weights) and start over")
    add_common(p)


def run_overrides(args) -> list[str]:
    """``--set`` values plus the ``--schedule`` / ``--method`` shortcuts of train, flops and bench."""
    extra = [f"c2f.schedule={args.schedule}"] if getattr(args, "schedule", None) else []
    if getattr(args, "schedule", None) == "1":  # the baseline: train.epochs at full resolution, whatever a preset's phases
        extra += ["c2f.phase_epochs=null", "c2f.phase_steps=null"]
    return [*args.overrides, *extra, *method_overrides(getattr(args, "method", None))]


def classes_from_data(cfg) -> int:
    """The config's number of classes, read from its data; the error says how to do without."""
    try:
        return count_classes(cfg)
    except (OSError, ValueError) as err:
        raise ValueError(f"{err} (or give --classes N: only the classifier's size needs the data)") from err


def log_path(path: str) -> Path:
    """The ``log.json`` of a run folder (or a log given as a ``.json`` file); another file, such as
    the run's ``config.yaml``, is refused: the command needs the run folder."""
    p = Path(path)
    if p.is_dir():
        if not (p / "log.json").is_file():
            held = runs_held(p)  # an experiment's folder: the runs in it
            raise ValueError(f"{p}: not a run folder; {held}" if held else
                             f"{p}: not a run folder (no log.json in it: no epoch of a run has finished there)")
        return p / "log.json"
    if p.is_file() and p.suffix != ".json":
        raise ValueError(f"{p}: a file, not a run folder; give the run folder (one with log.json), e.g. {p.parent}")
    return p


def _positive(text: str, convert: Callable[[str], float], what: str, unit: str = "") -> float:
    """``text`` as a number above 0 (``convert``: int or float; ``what`` and ``unit`` name it in errors)."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0{unit}, got {text}")
    return value


def positive_int(text: str) -> int:
    """An option's whole number, at least 1."""
    return int(_positive(text, int, "a whole number"))


def positive_seconds(text: str) -> float:
    """An option's seconds, more than 0."""
    return _positive(text, float, "seconds", " seconds")
