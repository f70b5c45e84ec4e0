"""The Lightning callback: the same run as the CLI's, resumes in the coarse phase, step-based switches,
and its run logs read by ``coarse2fine compare``."""

from __future__ import annotations

import json
import logging
import os
import warnings

import pytest
import torch
from safetensors.torch import load_file

pl = pytest.importorskip("lightning.pytorch")

from coarse2fine.cli import main  # noqa: E402
from coarse2fine.compression import Compression  # noqa: E402
from coarse2fine.config import load_config  # noqa: E402
from coarse2fine.core import Schedule  # noqa: E402
from coarse2fine.data.sources import load_splits  # noqa: E402
from coarse2fine.integrations import lightning as lightning_integration  # noqa: E402
from coarse2fine.integrations.lightning import CoarseToFine, ConfigModule, config_loaders  # noqa: E402
from coarse2fine.phases import Phase  # noqa: E402
from coarse2fine.report.savings import load_records  # noqa: E402
from coarse2fine.runtime import cpu_name  # noqa: E402
from coarse2fine.training.loop import train_run  # noqa: E402

# 32 clips in batches of 8: 4 steps per epoch; 4-1 with one coarse epoch and two at full resolution.
TINY = ["data.train_clips=32", "data.val_clips=16", "train.batch_size=8", "train.optim.warmup_steps=2",
        "train.threads=1", "model.preset=micro", "c2f.schedule=4-1", "c2f.phase_epochs=[1, 2]", "data.in_memory=off"]
# Patch PI with mixup (on waveforms, before the features) and SpecAugment (after compression);
# HTS-AT (its Swin windows follow the token grid) with stochastic depth and gradient clipping.
AUGMENTED = ["c2f.method=patch", "augment.mixup=0.5", "augment.freqm=8", "augment.timem=16"]
HTSAT = ["model.arch=htsat", "model.overrides.num_chunks=1", "model.overrides.depths=[1, 1]",
         "model.overrides.num_heads=[2, 4]", "model.drop_path_rate=0.2", "train.optim.clip_grad_norm=1.0",
         "c2f.method=avgpool"]
CASES = {"fshift": ["c2f.method=fshift", "model.overrides.depth=1"], "patch+augment": [*AUGMENTED, "model.overrides.depth=1"],
         "htsat": HTSAT}

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")


def _config(case: str):
    return load_config("demo", [*TINY, *CASES[case]])


def _lightning_run(cfg, splits, out, *, ckpt_path=None, callbacks=(), module_cls=ConfigModule, **trainer_kwargs):
    module = module_cls(cfg, splits.train.num_classes, len(splits.train))
    c2f = CoarseToFine.from_config(cfg, log_path=out / "c2f_log.json", classes=splits.train.class_names)
    train, val = config_loaders(cfg, splits)
    trainer_kwargs.setdefault("max_epochs", cfg.schedule().epochs)
    trainer = pl.Trainer(callbacks=[c2f, *callbacks], accelerator="cpu", devices=1, default_root_dir=out,
                         logger=pl.loggers.CSVLogger(out, name="csv"), enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, **trainer_kwargs)
    trainer.fit(module, train, val, ckpt_path=ckpt_path)
    return module, c2f, trainer


def _max_diff(a, b) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _metrics(records) -> dict:
    """Every record's ``train_loss`` and metrics, keyed ``epoch/name`` (for ``pytest.approx``)."""
    return {f"{x.epoch}/{name}": value for x in records
            for name, value in {"train_loss": x.train_loss, **x.metrics}.items()}


class _Logging(ConfigModule):
    """``ConfigModule`` (``train_loss`` logged with ``on_epoch=True``, weighted by batch size) that
    also logs a sum and a max over the epoch, and keeps every step's loss to check the records by."""

    def __init__(self, *args):
        super().__init__(*args)
        self.steps = []  # (epoch, global step, loss, batch size)

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("train_clips", float(len(batch[0])), on_step=False, on_epoch=True, reduce_fx="sum")
        self.log("train_worst", loss.detach(), on_step=True, on_epoch=True, reduce_fx="max")
        self.steps.append((self.current_epoch, self.global_step, loss.item(), len(batch[0])))
        return loss


def _means(steps, part=lambda epoch, step: epoch) -> list[float]:
    """The mean loss per clip of each epoch (or ``part``) of ``_Logging.steps``."""
    parts: dict = {}
    for epoch, step, loss, n in steps:
        parts.setdefault(part(epoch, step), []).append((loss, n))
    return [sum(loss * n for loss, n in p) / sum(n for _, n in p) for _, p in sorted(parts.items())]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each case trained by the CLI and in Lightning (shared by the tests below)."""
    out = {}
    for case in CASES:
        cfg = _config(case)
        splits = load_splits(cfg)
        root = tmp_path_factory.mktemp(case.replace("+", "_"))
        cli = train_run(cfg, splits, root / "cli", progress=False)
        module, c2f, trainer = _lightning_run(cfg, splits, root / "lightning")
        out[case] = dict(cfg=cfg, splits=splits, root=root, cli=cli, module=module, c2f=c2f, trainer=trainer,
                         cli_weights=load_file(root / "cli" / "model.safetensors"))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_lightning_run_matches_the_cli_run(runs, case):
    r = runs[case]
    cli, lit = r["cli"].records, r["c2f"].records
    assert [(x.epoch, x.phase, x.R, x.phase_epoch, x.tokens) for x in lit] == \
        [(x.epoch, x.phase, x.R, x.phase_epoch, x.tokens) for x in cli]
    assert [(x.epoch, x.phase, x.R, x.phase_epoch) for x in lit] == [(1, 0, 4, 1), (2, 1, 1, 1), (3, 1, 1, 2)]
    assert lit[0].tokens * 4 == lit[1].tokens
    assert [x.train_flops for x in lit] == [x.train_flops for x in cli]
    assert [x.cum_flops for x in lit] == [x.cum_flops for x in cli]
    assert [(x.clips, x.steps) for x in lit] == [(x.clips, x.steps) for x in cli] == [(32, 4)] * 3
    # The optimizer and LR schedule restart at the phase change (warm-up from its first step).
    assert [x.lr for x in lit] == pytest.approx([x.lr for x in cli]) and lit[1].lr == pytest.approx(lit[0].lr)
    assert [x.metric("acc") for x in lit] == pytest.approx([x.metric("acc") for x in cli], abs=1e-6)
    assert [x.metric("val_loss") for x in lit] == pytest.approx([x.metric("val_loss") for x in cli], rel=1e-5)
    # Each epoch's own training loss (the mean per clip), in the run log and the records as the CLI
    # records it: not the epoch's before.
    logged = [x.train_loss for x in load_records(r["root"] / "lightning" / "c2f_log.json")]
    assert logged == pytest.approx([x.train_loss for x in load_records(r["root"] / "cli" / "log.json")], rel=1e-5)
    assert [x.train_loss for x in lit] == logged and [x.train_loss for x in cli] == pytest.approx(logged, rel=1e-5)
    # Same seed, same data order, same augmentation draws: the same final weights.
    assert _max_diff(r["cli_weights"], r["module"].model.state_dict()) <= 1e-5
    # The records are a run log that the savings tables read.
    assert [x.epoch for x in load_records(r["root"] / "lightning" / "c2f_log.json")] == [1, 2, 3]


def test_flops_and_time_reach_the_lightning_logger(runs):
    r = runs["fshift"]
    rows = list(__import__("csv").DictReader(open(r["trainer"].logger.log_dir + "/metrics.csv")))
    logged = [float(row["c2f/train_flops"]) for row in rows if row.get("c2f/train_flops")]
    assert logged == [x.train_flops for x in r["c2f"].records]  # float64, not self.log's float32
    times = [float(row["c2f/train_time"]) for row in rows if row.get("c2f/train_time")]
    assert len(times) == 3 and all(t > 0 for t in times)
    phase_flops = [float(row["c2f/phase_flops"]) for row in rows if row.get("c2f/phase_flops")]
    recs = r["c2f"].records
    assert phase_flops == [recs[0].train_flops, recs[1].train_flops, recs[1].train_flops + recs[2].train_flops]


def test_records_time_the_steps_as_the_cli_does(runs):
    r = runs["fshift"]
    cli, lit = r["cli"].records, r["c2f"].records
    assert [x.batch_size for x in lit] == [x.batch_size for x in cli] == [8] * 3
    for x in lit:
        assert x.step_median > 0 and len(x.step_deciles) == 9 and x.step_deciles == sorted(x.step_deciles)
        assert x.machine.startswith(cpu_name())  # what the time was measured on, as the loop records it
        assert x.data_time >= 0 and x.step_time > 0
        # waiting for data and stepping happen inside the epoch's training time (validation left out)
        assert x.data_time + x.step_time <= x.train_time * 1.001 + 1e-3
    # so the savings table has the step time column for a Lightning run as for the CLI's
    assert all(x.step_deciles for x in cli)


def test_resumes_from_a_checkpoint_of_the_coarse_phase(runs, tmp_path):
    r = runs["patch+augment"]
    cfg, splits = r["cfg"], r["splits"]
    # A run killed after its coarse epoch left this end-of-epoch checkpoint ...
    every_epoch = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, filename="{epoch}")
    _lightning_run(cfg, splits, tmp_path / "killed", callbacks=[every_epoch], max_epochs=1)
    ckpt = tmp_path / "ckpt" / "epoch=0.ckpt"
    state = torch.load(ckpt, weights_only=True)
    assert state["callbacks"]["CoarseToFine"]["phase"] == 0
    assert state["state_dict"]["model.patch_embed.proj.weight"].shape[-1] == 16 * 4  # Patch: 16 x 64 patches
    # ... and resuming from it ends where the uninterrupted run ended.
    module, c2f, _ = _lightning_run(cfg, splits, tmp_path / "resumed", ckpt_path=ckpt)
    assert [(x.epoch, x.R, x.train_flops) for x in c2f.records] == [(x.epoch, x.R, x.train_flops) for x in r["c2f"].records]
    assert _metrics(c2f.records) == pytest.approx(_metrics(r["c2f"].records), rel=1e-5)
    assert _max_diff(module.model.state_dict(), r["module"].model.state_dict()) <= 1e-6


def test_resumes_in_the_middle_of_a_coarse_epoch(runs, tmp_path):
    r = runs["fshift"]
    cfg, splits = r["cfg"], r["splits"]
    every_2 = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1,
                                           filename="{step}")
    _lightning_run(cfg, splits, tmp_path / "killed", callbacks=[every_2], max_steps=2)
    partial = torch.load(tmp_path / "ckpt" / "step=2.ckpt", weights_only=True)["callbacks"]["CoarseToFine"]["partial"]
    assert partial["steps"] == 2 and len(partial["step_times"]) == 2 and partial["batch"] == 8
    # Lightning's checkpoints keep no sums of what was logged: the callback's carry the epoch's so far.
    assert partial["logged"]["training_step.train_loss"]["count"] == 16
    module, c2f, _ = _lightning_run(cfg, splits, tmp_path / "resumed", ckpt_path=tmp_path / "ckpt" / "step=2.ckpt")
    assert [(x.epoch, x.R, x.clips, x.train_flops) for x in c2f.records] == \
        [(x.epoch, x.R, x.clips, x.train_flops) for x in r["c2f"].records]
    assert _metrics(c2f.records) == pytest.approx(_metrics(r["c2f"].records), rel=1e-5)  # epoch 1's loss: all 4 steps'
    assert _max_diff(module.model.state_dict(), r["module"].model.state_dict()) <= 1e-6


def test_resumes_from_a_checkpoint_written_at_an_epochs_validation(runs, tmp_path):
    """Validating every 2nd epoch, ModelCheckpoint saves at the validation, before the epoch's end
    (and record): resuming from it records the epoch with its validation and training metrics, and
    trains the next epoch whole."""
    r = runs["fshift"]
    cfg, splits = r["cfg"], r["splits"]
    every_2nd = dict(check_val_every_n_epoch=2, module_cls=_Logging)
    _, whole, _ = _lightning_run(cfg, splits, tmp_path / "whole", **every_2nd)
    at_validation = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, filename="{epoch}")
    _lightning_run(cfg, splits, tmp_path / "killed", callbacks=[at_validation], max_epochs=2, **every_2nd)
    ckpt = tmp_path / "ckpt" / "epoch=1.ckpt"
    state = torch.load(ckpt, weights_only=True)["callbacks"]["CoarseToFine"]
    assert len(state["records"]) == 1 and state["partial"]["steps"] == 4 and "acc" in state["partial"]["val_metrics"]
    module, c2f, _ = _lightning_run(cfg, splits, tmp_path / "resumed", ckpt_path=ckpt, **every_2nd)
    assert [(x.epoch, x.steps, x.clips) for x in c2f.records] == [(1, 4, 32), (2, 4, 32), (3, 4, 32)]
    assert [x.epoch for x in c2f.records if "acc" in x.metrics] == [2]
    assert _metrics(c2f.records) == pytest.approx(_metrics(whole.records), rel=1e-6)
    assert _max_diff(module.model.state_dict(), r["module"].model.state_dict()) <= 1e-6


# Trainer settings of validation, and the epochs that validate.
VALIDATION = {"every epoch": ({}, [1, 2, 3]), "every 2nd epoch": ({"check_val_every_n_epoch": 2}, [2]),
              "none": ({"limit_val_batches": 0}, []), "twice an epoch": ({"val_check_interval": 0.5}, [1, 2, 3])}


@pytest.mark.parametrize("validation", list(VALIDATION))
def test_records_carry_each_epochs_own_training_metrics(runs, tmp_path, validation):
    """What training logs with on_epoch=True is the epoch's own, reduced as logged (Lightning
    reduces it after the epoch's validation), the last epoch's included; validation metrics only in
    the epochs that validate (their last validation's); the run log written after each epoch the same."""
    r = runs["fshift"]
    settings, validated = VALIDATION[validation]
    module, c2f, _ = _lightning_run(r["cfg"], r["splits"], tmp_path, module_cls=_Logging, **settings)
    recs = c2f.records
    assert [x.epoch for x in recs] == [1, 2, 3]
    assert [x.train_loss for x in recs] == pytest.approx(_means(module.steps), rel=1e-6)
    assert [x.metric("train_clips") for x in recs] == [32.0] * 3  # a sum over the epoch's 4 steps
    worst = [max(loss for e, _, loss, _ in module.steps if e == epoch) for epoch in range(3)]
    assert [x.metric("train_worst") for x in recs] == pytest.approx(worst)  # a max, logged on step and epoch
    assert [x.metric("train_worst_epoch") for x in recs] == [x.metric("train_worst") for x in recs]
    assert not [name for x in recs for name in x.metrics if name in ("train_loss", "train_worst_step")]
    assert [x.epoch for x in recs if "val_loss" in x.metrics] == validated
    whole = r["c2f"].records  # validating every epoch: the same weights at each epoch's end
    for x in recs:
        if x.epoch in validated:
            assert x.metrics == pytest.approx({**whole[x.epoch - 1].metrics, **{k: x.metrics[k] for k in x.metrics
                                                                              if k.startswith("train")}}, rel=1e-5)
    assert _metrics(load_records(tmp_path / "c2f_log.json")) == _metrics(recs)


def test_a_lightning_that_keeps_its_logged_values_elsewhere_falls_back_to_callback_metrics(runs, tmp_path,
                                                                                           monkeypatch, caplog):
    """The exact sums come from Lightning 2.6's loops; another layout of them must not lose the
    epoch's values: each record then takes trainer.callback_metrics at the epoch's end."""
    monkeypatch.setattr(lightning_integration, "_keeps_results", lambda trainer: False)
    r = runs["fshift"]
    with caplog.at_level(logging.WARNING):
        module, c2f, _ = _lightning_run(r["cfg"], r["splits"], tmp_path, module_cls=_Logging)
    assert "each epoch's record takes trainer.callback_metrics" in caplog.text
    assert [x.train_loss for x in c2f.records] == pytest.approx(_means(module.steps), rel=1e-6)
    assert [x.epoch for x in c2f.records if "val_loss" in x.metrics] == [1, 2, 3]


class _Probe(pl.Callback):
    """Per step: the optimizer object, its LR and the input's frames (after CoarseToFine)."""

    def __init__(self):
        self.steps = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        opt = trainer.optimizers[0]
        self.steps.append((id(opt), opt.param_groups[0]["lr"], batch[0].shape[1]))


def test_switches_phase_at_a_step_in_the_middle_of_an_epoch(runs, tmp_path):
    r = runs["fshift"]
    cfg, splits = r["cfg"], r["splits"]
    module = _Logging(cfg, splits.train.num_classes, len(splits.train))
    schedule = Schedule((Phase(4, 1), Phase(1, 1)), frames=128, mel_bins=128, method="avgpool")
    c2f = CoarseToFine(schedule, inputs="waveforms", features=cfg.features.spec(), switch="step", steps_per_epoch=2)
    probe = _Probe()
    train, val = config_loaders(cfg, splits)
    pl.Trainer(max_epochs=1, callbacks=[c2f, probe], accelerator="cpu", logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0).fit(module, train, val)
    (opt0, *_), (opt1, *_) = probe.steps[0], probe.steps[2]
    assert [frames for *_, frames in probe.steps] == [32, 32, 128, 128]
    assert opt0 == probe.steps[1][0] and opt1 != opt0  # a new optimizer at step 2
    lrs = [lr for _, lr, _ in probe.steps]
    assert lrs[2] == pytest.approx(lrs[0]) and lrs[1] > lrs[0]  # the warm-up starts again
    assert [(x.epoch, x.phase, x.R, x.steps) for x in c2f.records] == [(1, 0, 4, 2), (1, 1, 1, 2)]
    # Each part's own training metrics (Lightning's sums at the switch taken off) and the epoch's
    # validation in the part that ends with it.
    parts = _means(module.steps, lambda epoch, step: step // 2)
    assert [x.train_loss for x in c2f.records] == pytest.approx(parts, rel=1e-6)
    assert [x.metric("train_clips") for x in c2f.records] == [16.0, 16.0]
    assert ["acc" in x.metrics for x in c2f.records] == [False, True]


def _spec():
    """The full-resolution features of the tests' config."""
    return _config("fshift").features.spec()


def test_clear_errors():
    schedule = Schedule((Phase(4, 1), Phase(1, 1)), frames=128, mel_bins=128, method="fshift")
    with pytest.raises(ValueError, match="features=FeatureSpec"):
        CoarseToFine(schedule, inputs="waveforms")
    with pytest.raises(ValueError, match="needs inputs='waveforms'"):
        CoarseToFine(schedule, inputs="features")
    cb = CoarseToFine(Schedule((Phase(2, 1), Phase(1, 1)), 128, 128, "avgpool"), inputs="features")
    with pytest.raises(ValueError, match="cannot be changed in place"):
        cb._compress((torch.zeros(2, 128, 128), torch.zeros(2)))
    with pytest.raises(ValueError, match="mode must be one of max, min and come with metric="):
        CoarseToFine(schedule, inputs="waveforms", features=_spec(), mode="min")
    with pytest.raises(ValueError, match="mode must be one of max, min"):
        CoarseToFine(schedule, inputs="waveforms", features=_spec(), metric="eer", mode="down")
    logged = CoarseToFine(schedule, inputs="waveforms", features=_spec(), metric="eer", mode="min").run_log()
    assert (logged["metric"], logged["metrics"], logged["done"]) == ("eer", {"eer": "min"}, False)
    with pytest.raises(ValueError, match="augment.wa_start"):
        ConfigModule(load_config("demo", [*TINY, "augment.wa_start=1"]), 8, 32)
    with pytest.raises(ValueError, match="in_memory=off"):
        cfg = load_config("demo", [t for t in TINY if not t.startswith("data.in_memory")])
        config_loaders(cfg, load_splits(cfg))


@pytest.fixture
def ddp_cleanup():
    """Lightning's DDP leaves its environment variables and process group in this process."""
    environ = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(environ)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def test_ddp_model_is_wrapped_again_after_a_phase_change(runs, tmp_path, ddp_cleanup):
    r = runs["fshift"]
    # One process under DDP (its reducer would keep the old parameters); the CLI's data order, not
    # DistributedSampler's.
    ddp = pl.strategies.DDPStrategy(process_group_backend="gloo")
    module, c2f, _ = _lightning_run(r["cfg"], r["splits"], tmp_path, strategy=ddp, use_distributed_sampler=False)
    assert [x.R for x in c2f.records] == [4, 1, 1]
    # Float tolerance only: Lightning's DDP sets its own number of CPU threads.
    assert _max_diff(module.model.state_dict(), r["module"].model.state_dict()) <= 1e-3


def test_compare_checks_a_from_config_run_log_against_the_cli_run(runs, capsys, caplog):
    """The run log of ``CoarseToFine.from_config`` holds what compare checks: config, classes,
    metric directions; against the CLI's run of the same config everything is compared."""
    r = runs["fshift"]
    lit = r["root"] / "lightning" / "c2f_log.json"
    saved = json.loads(lit.read_text())
    assert saved["done"] is True and saved["metric"] == "acc" and saved["config"]["c2f"]["method"] == "fshift"
    assert saved["metrics"]["acc"] == "max" and saved["metrics"]["val_loss"] == "min"
    assert saved["classes"] == list(r["splits"].train.class_names)
    assert saved["schedule"] == {"name": "4-1", "phases": [[4, 1], [1, 2]], "epochs": 3, "method": "fshift",
                                 "patch_resize": "pi", "frames": 128, "mel_bins": 128}
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):
        assert main(["compare", str(r["root"] / "cli"), str(lit)]) == 0
    assert "lightning" in capsys.readouterr().out
    assert not [rec.message for rec in caplog.records if rec.levelno >= logging.WARNING]  # nothing left unchecked


def _users_log(log: dict) -> dict:
    """A run log as the callback wrote it before it wrote what compare needs (name, source and
    records only) around a module of one's own that logs ``val_acc``."""
    records = [{**{k: v for k, v in rec.items() if k not in ("acc", "mAP", "mAUC", "d_prime", "val_loss")},
                "val_acc": rec["acc"]} for rec in log["records"]]
    return {"name": "log", "source": "lightning", "records": records}


def test_compare_reads_the_run_log_of_a_callback_made_by_hand(runs, tmp_path, capsys, caplog):
    """``CoarseToFine(schedule, log_path=...)`` around a module of one's own: no config in its log,
    so compare checks what it can (train clips, the input size), says what it could not, takes the
    metric from ``metric=``, from the records or from ``--metric``, and marks an unfinished run."""
    r = runs["fshift"]
    cfg, splits = r["cfg"], r["splits"]
    mine = tmp_path / "mine"
    c2f = CoarseToFine(cfg.schedule(), inputs="waveforms", features=cfg.features.spec(), log_path=mine / "log.json",
                       metric="acc")
    train, val = config_loaders(cfg, splits)
    pl.Trainer(max_epochs=3, callbacks=[c2f], accelerator="cpu", logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0).fit(
        ConfigModule(cfg, splits.train.num_classes, len(splits.train)), train, val)
    saved = json.loads((mine / "log.json").read_text())
    assert "config" not in saved and "classes" not in saved and saved["done"] is True and saved["metric"] == "acc"
    assert saved["name"] == "mine" and saved["metrics"]["acc"] == "max" and saved["schedule"]["frames"] == 128

    # Against the from_config run's log (which has a config): compared by train clips and input size.
    lit = r["root"] / "lightning" / "c2f_log.json"
    with caplog.at_level(logging.WARNING, logger="coarse2fine"):
        assert main(["compare", str(lit), str(mine)]) == 0
    assert "mine" in capsys.readouterr().out
    assert f"{mine}: compared with the baseline {lit.parent} by train clips, input size only; not checked: classes, " \
        f"data settings, features, model, objective and metric (no config in the run log of {mine})" in caplog.messages
    # The log of another input size is refused, naming the difference.
    other = tmp_path / "other"
    other.mkdir()
    (other / "log.json").write_text(json.dumps({**saved, "schedule": {**saved["schedule"], "frames": 96}}))
    assert main(["compare", str(mine), str(other)]) == 2
    assert f"{other}: features differs from the baseline {mine} (input 128 x 128 -> 96 x 128)" in capsys.readouterr().err

    # The user's logs (name, source, records): the metric is the records' one validation metric.
    for name, source in (("base", mine / "log.json"), ("c2f", lit)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "log.json").write_text(json.dumps(_users_log(json.loads(source.read_text()))))
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "c2f")]) == 0
    assert "Best val_acc" in capsys.readouterr().out
    # With several validation metrics in the records and no metric named, --metric is asked for.
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "log.json").write_text(json.dumps({k: v for k, v in saved.items() if k != "metric"}))
    assert main(["compare", str(tmp_path / "plain"), str(mine)]) == 2
    assert "log.json: the run log names no metric (no config, no 'metric'): give --metric (one of acc, d_prime, " \
        in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "plain"), str(mine), "--metric", "mAP"]) == 0
    assert "Best mAP" in capsys.readouterr().out

    # A run stopped after its coarse epoch: unfinished, 1 of the schedule's 3 epochs.
    (tmp_path / "stopped").mkdir()
    (tmp_path / "stopped" / "log.json").write_text(json.dumps({**saved, "done": False, "records": saved["records"][:1]}))
    assert main(["compare", str(mine), str(tmp_path / "stopped"), "--format", "text"]) == 0
    assert "stopped: unfinished: 1 of 3 epochs; not in the table (--include-unfinished)" in capsys.readouterr().out


class _Flat(pl.LightningModule):
    """A module whose model is a plain ``Sequential``: no coarse2fine family, no transformers AST."""

    def __init__(self):
        super().__init__()
        self.model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 128, 2))

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.cross_entropy(self.model(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_takes_the_clis_method_names_and_refuses_a_model_it_cannot_move():
    cb = CoarseToFine(Schedule.build("4-1", 2, frames=128, mel_bins=128, method="patch-bl"), inputs="features")
    assert cb.compression == Compression("patch", 4, "bilinear")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(4, 128, 128),
                                                                        torch.zeros(4, dtype=torch.long)), batch_size=2)
    trainer = pl.Trainer(max_epochs=1, callbacks=[cb], accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(TypeError, match="cannot move a Sequential") as err:
        trainer.fit(_Flat(), loader)
    assert "'Model families'" in str(err.value) and "C2FModel subclass" in str(err.value)
