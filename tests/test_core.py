"""The functional core: schedule position, compression of every input kind, carrying models (ours and
transformers' AST), FLOPs per step and per phase, and savings from plain records."""

from __future__ import annotations

import pytest
import torch

from coarse2fine.cli.options import method_overrides
from coarse2fine.compression import Compression, pool_time
from coarse2fine.config import load_config
from coarse2fine.core import (
    PhaseAt,
    Schedule,
    carry,
    compress,
    epoch_records,
    geometry_of,
    phase_at,
    savings,
    schedule_flops,
    step_flops,
)
from coarse2fine.experiments.settings import VARIANTS
from coarse2fine.features import FbankConfig, FeatureSpec, extract
from coarse2fine.model.ast import AST, ASTConfig
from coarse2fine.model.flops import measured_training_flops
from coarse2fine.phases import Phase
from coarse2fine.training.sampling import EpochSampler, epoch_batches

SPEC = FeatureSpec(FbankConfig(num_mel_bins=64), target_length=128, mean=-4.0, std=4.0)


def test_phase_at_epoch_and_step():
    s = Schedule.build("4-2-1", 10, phase_epochs=[1, 2, 3], frames=128, mel_bins=64, method="avgpool")
    assert s.epochs == 6 and [s.start_epoch(i) for i in range(3)] == [0, 1, 3]
    assert [(p.index, p.R, p.phase_epoch) for p in map(s.at_epoch, range(7))] == \
        [(0, 4, 0), (1, 2, 0), (1, 2, 1), (2, 1, 0), (2, 1, 1), (2, 1, 2), (2, 1, 3)]  # past the end: the last phase
    assert s.at_epoch(5) == PhaseAt(2, 1, 2, True) and not s.at_epoch(0).last
    assert [s.at_step(step, steps_per_epoch=4).R for step in (0, 3, 4, 11, 12)] == [4, 4, 2, 2, 1]
    assert phase_at([Phase(2, 3), Phase(1, 1)], 2) == PhaseAt(0, 2, 2, False)
    with pytest.raises(ValueError, match="full resolution"):
        Schedule((Phase(4, 1), Phase(2, 1)), 128, 64)
    with pytest.raises(ValueError, match="unknown compression method"):
        Schedule((Phase(1, 1),), 128, 64, method="crop")
    with pytest.raises(ValueError, match="0-based"):
        s.at_epoch(-1)


@pytest.mark.parametrize("method", ["fshift", "avgpool", "maxpool", "patch"])
def test_config_phases_are_the_schedules(method):
    cfg = load_config("demo", ["model.preset=micro", "c2f.schedule=4-2-1", f"c2f.method={method}"])
    schedule = cfg.schedule()
    for i in range(len(schedule.phases)):
        setup = cfg.phase(i)
        assert (setup.compression, setup.geometry) == (schedule.compression(i), schedule.geometry(i))


@pytest.mark.parametrize("method", ["fshift", "avgpool", "maxpool", "patch"])
def test_compress_gives_each_phase_its_model_input(method):
    waves = torch.randn(3, 16000 * 128 // 100, generator=torch.Generator().manual_seed(0)) * 0.1
    comp = Compression(method, 4)
    geo = comp.input_geometry(128, 64)
    x = compress(waves, comp, "waveforms", SPEC)
    assert tuple(x.shape) == (3, geo.frames, geo.mel_bins)
    full = extract(waves, SPEC)
    if method == "fshift":
        assert torch.equal(x, extract(waves, comp.feature_spec(SPEC)))  # an R times longer frame shift
        with pytest.raises(ValueError, match="give waveforms"):
            compress(full, comp, "features")
    else:
        expected = full if method == "patch" else pool_time(full, 4, method[:3])
        assert torch.equal(x, expected) and torch.equal(compress(full, comp, "features"), expected)
    assert compress(x, comp, "model_input") is x
    assert torch.equal(compress(full, Compression(method, 1), "features"), full)  # R = 1: full resolution
    with pytest.raises(ValueError, match="FeatureSpec"):
        compress(waves, comp, "waveforms")


def _tiny_ast(**kw) -> AST:
    torch.manual_seed(0)
    model = AST(ASTConfig(num_classes=5, embed_dim=32, depth=1, num_heads=2, num_mel_bins=64, target_length=128,
                          patch_size=(16, 16), stride=(16, 16), layer_norm_eps=1e-12, **kw))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.1)
    return model.eval()


def test_carry_our_ast_and_schedule_flops():
    model = _tiny_ast()
    schedule = Schedule.build("4-1", 4, frames=128, mel_bins=64, method="patch", patch_resize="bilinear")
    per_phase = schedule_flops(model, schedule, batch_size=2)
    assert geometry_of(model).time_patch_factor == 1 and model.pos_embed.device.type == "cpu"  # untouched
    carry(model, schedule.geometry(0))
    assert geometry_of(model) == schedule.geometry(0) and model.patch_embed.proj.weight.shape[-1] == 64
    assert per_phase == [step_flops(model, 2), step_flops(_tiny_ast(), 2)]
    assert per_phase[0] < per_phase[1] / 2
    with pytest.raises(TypeError, match="carry"):
        carry(torch.nn.Linear(2, 2), schedule.geometry(0))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_schedule_takes_the_clis_method_names(name):
    """Every --method name of the CLI builds the schedule the CLI's config would give."""
    cfg = load_config("demo", ["c2f.schedule=4-1", "c2f.phase_epochs=[1, 2]", *method_overrides(name)])
    schedule = Schedule.build("4-1", 2, phase_epochs=[1, 2], frames=128, mel_bins=128, method=name)
    assert schedule == cfg.schedule() and (schedule.method, schedule.patch_resize) == VARIANTS[name]
    assert schedule.compression(0) == cfg.phase(0).compression


def test_patch_variants_refuse_a_contradicting_patch_resize():
    full = {"frames": 128, "mel_bins": 64}
    bl = Schedule.build("4-1", 4, method="patch-bl", **full)
    assert bl == Schedule.build("4-1", 4, method="patch", patch_resize="bilinear", **full)
    assert bl == Schedule.build("4-1", 4, method="patch-bl", patch_resize="bilinear", **full)
    assert Schedule((Phase(4, 1), Phase(1, 1)), 128, 64, "patch-bl").patch_resize == "bilinear"
    assert Schedule.build("4-1", 4, method="patch", **full).patch_resize == "pi"
    with pytest.raises(ValueError, match="'patch-bl' is 'patch' with patch_resize='bilinear'; patch_resize='pi' contradicts"):
        Schedule.build("4-1", 4, method="patch-bl", patch_resize="pi", **full)
    with pytest.raises(ValueError, match="choose one of fshift, avgpool, maxpool, patch, patch-bl, patch-pi"):
        Schedule.build("4-1", 4, method="patch-xx", **full)


def test_carry_refuses_another_model_naming_what_works():
    with pytest.raises(TypeError, match="cannot move a Sequential") as err:
        carry(torch.nn.Sequential(torch.nn.Linear(2, 2)), Schedule.build("4-1", 4, frames=128, mel_bins=64).geometry(0))
    assert "C2FModel subclass" in str(err.value) and "'Model families'" in str(err.value)
    assert "ASTForAudioClassification" in str(err.value)


def test_epoch_sampler_is_the_loops_order():
    sampler = EpochSampler(10, seed=3)
    sampler.set_epoch(2)  # 0-based: the loop's epoch 3
    assert list(sampler) == epoch_batches(10, 10, 3, 3)[0]
    sampler.skip = 4
    assert list(sampler) == epoch_batches(10, 10, 3, 3)[0][4:] and len(list(sampler)) == 10  # skip is one-shot


def test_savings_from_plain_records():
    baseline = [(1, 1, 0.50, 100.0, 10.0), (2, 1, 0.70, 100.0, 10.0), (3, 1, 0.80, 100.0, 10.0)]
    c2f = [(1, 4, 0.30, 25.0, 3.0), (2, 1, 0.75, 100.0, 10.0), (3, 1, 0.85, 100.0, 10.0)]
    records = epoch_records(c2f)
    assert [(r.phase, r.R, r.phase_epoch, r.cum_flops, r.cum_time) for r in records] == \
        [(0, 4, 1, 25.0, 3.0), (1, 1, 1, 125.0, 13.0), (1, 1, 2, 225.0, 23.0)]
    rows = savings(baseline, {"4-1": c2f}, fmt=None)
    assert rows[1]["Setting"] == "4-1" and rows[1]["Beat epoch"] == "3"
    assert rows[1]["FLOPs save (%)"] == "25.00" and rows[1]["Wall time save (%)"] == "23.33"
    assert rows[1]["Best Acc (gain)"] == "85.00 (+5.00)"
    dicts = [{"epoch": e, "R": R, "acc": a, "train_flops": f, "train_time": t} for e, R, a, f, t in c2f]
    assert "| 4-1 " in savings(baseline, {"4-1": dicts}) and savings(baseline, {"4-1": dicts}, fmt=None) == rows
    restart = [{"epoch": e, "R": 1, "phase": p, "acc": 0.5, "train_flops": 1.0, "train_time": 1.0}
               for e, p in ((1, 0), (2, 1), (3, 1))]  # "1-1": the phase changes, R does not
    assert [(r.phase, r.phase_epoch) for r in epoch_records(restart)] == [(0, 1), (1, 1), (1, 2)]
    with pytest.raises(ValueError, match="lacks 'acc'"):
        epoch_records([{"epoch": 1, "R": 1, "train_flops": 1.0, "train_time": 1.0}])
    with pytest.raises(ValueError, match="record 0 lacks 'time' or 'train_time' \\(needs epoch, R, 'acc', flops or "):
        epoch_records([{"epoch": 1, "R": 1, "acc": 0.5, "flops": 1.0, "seconds": 1.0}])  # it named 'time', asked 'train_time'


@pytest.fixture
def transformers():
    return pytest.importorskip("transformers")


def _hf_pair(transformers):
    """Our tiny AST and the same weights as a transformers ASTForAudioClassification."""
    from coarse2fine.model.ast.hf import hf_config_dict, hf_state_dict_for, to_hf_state_dict

    ours = _tiny_ast()
    hf_cfg = transformers.ASTConfig(**{k: v for k, v in hf_config_dict(ours.config, dict(enumerate("abcde"))).items()
                                       if k not in ("architectures", "model_type")})
    hf = transformers.ASTForAudioClassification(hf_cfg).eval()
    hf.load_state_dict(hf_state_dict_for(hf, to_hf_state_dict(ours.state_dict())))
    return ours, hf


@pytest.mark.parametrize("method", ["patch", "avgpool"])
def test_carry_transformers_ast_like_ours(transformers, method, tmp_path):
    ours, hf = _hf_pair(transformers)
    schedule = Schedule.build("4-1", 4, frames=128, mel_bins=64, method=method)
    for i in (0, 1):
        geo = schedule.geometry(i)
        carry(ours, geo)
        carry(hf, geo)
        assert geometry_of(hf) == geo
        x = torch.randn(2, geo.frames, 64, generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            torch.testing.assert_close(hf(x).logits, ours(x), rtol=1e-5, atol=1e-5)
        assert step_flops(hf, 2) == step_flops(ours, 2) == measured_training_flops(hf, x, lambda out: out.logits.sum())
    # Back at full resolution the config is the original one: save_pretrained / from_pretrained work.
    assert (hf.config.max_length, hf.config.time_stride) == (128, 16)
    hf.save_pretrained(tmp_path)
    again = transformers.ASTForAudioClassification.from_pretrained(tmp_path).eval()
    x = torch.randn(1, 128, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, hf(x).logits)




def _own_family():
    from dataclasses import dataclass

    from coarse2fine.compression import InputGeometry
    from coarse2fine.model import C2FModel

    @dataclass
    class Cfg:
        num_classes: int = 4
        mel_bins: int = 64
        dim: int = 16

    class Mine(C2FModel):
        def __init__(self, config):
            super().__init__()
            self.config, self._geo = config, InputGeometry(128, config.mel_bins)
            self.proj = torch.nn.Linear(config.mel_bins, config.dim)
            self.enc = torch.nn.TransformerEncoderLayer(config.dim, 2, 32, batch_first=True)
            self.head = torch.nn.Linear(config.dim, config.num_classes)

        @property
        def geometry(self):
            return self._geo

        def set_geometry(self, geometry):
            self._geo = InputGeometry(geometry.frames, geometry.mel_bins, geometry.time_factor)  # no wider patches

        @property
        def num_tokens(self):
            return self._geo.frames

        def forward(self, x):
            return self.head(self.enc(self.proj(x)).mean(1))

    return Mine(Cfg())


def test_measured_flops_of_a_family_that_keeps_its_geometry_on_the_model_follow_the_geometry():
    """A new user's case: FLOPs measured once per (class, config) gave the R = 4 phase the full
    resolution's count when the geometry lived on the model."""
    model = _own_family()
    schedule = Schedule.build("4-1", 4, frames=128, mel_bins=64, method="avgpool")
    coarse, fine = schedule_flops(model, schedule)
    assert fine > 3 * coarse
    carry(model, schedule.geometry(0))
    assert step_flops(model) == coarse
    carry(model, schedule.geometry(1))
    assert step_flops(model) == fine


def test_a_family_that_ignores_part_of_a_geometry_is_refused_by_carry():
    model = _own_family()
    schedule = Schedule.build("4-1", 4, frames=128, mel_bins=64, method="patch")
    with pytest.raises(ValueError, match=r"set_geometry\(\) left the model at another input than asked "
                                         r"\(time_patch_factor 1, not 4\): this family cannot take the Patch method"):
        carry(model, schedule.geometry(0))


def test_the_core_functions_say_what_they_take_when_given_something_else():
    import numpy as np

    model, schedule = _tiny_ast(), Schedule.build("4-1", 4, frames=128, mel_bins=64, method="avgpool")
    with pytest.raises(TypeError, match=r"geometry must be an InputGeometry, e\.g\. schedule\.geometry\(i\), not a "
                                        r"Compression \(schedule\.compression\(i\) is what compress\(\) takes\)"):
        carry(model, schedule.compression(0))
    with pytest.raises(TypeError, match=r"compression must be a Compression, not a PhaseAt \(schedule\.compression\(i\)"):
        compress(torch.zeros(2, 128, 64), schedule.at_epoch(0), "features")
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor, not a ndarray"):
        compress(np.zeros((2, 128, 64)), schedule.compression(0), "features")
    with pytest.raises(ValueError, match=r"waveforms must be \[batch, samples\], got shape \[20800\]"):
        compress(torch.zeros(20800), schedule.compression(0), "waveforms", SPEC)
    with pytest.raises(TypeError, match=r"schedule must be a Schedule, e\.g\. Schedule\.build"):
        schedule_flops(model, "4-1")
    with pytest.raises(TypeError, match=r"torch\.compile wrapper\): carry the model itself \(model\._orig_mod\)"):
        carry(torch.compile(model), schedule.geometry(0))
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got -3"):
        step_flops(model, -3)
    with pytest.raises(IndexError, match=r"phase 5: the schedule has 2 phases"):
        schedule.compression(5)
    for bad in ({"epochs": 4.5}, {"epochs": "4"}, {"initial_fraction": 2.0}, {"initial_fraction": -1}):
        with pytest.raises(ValueError, match="epochs must be an integer|initial_fraction must be in"):
            Schedule.build("4-1", **{"epochs": 4, **bad}, frames=128, mel_bins=64)
    with pytest.raises(ValueError, match=r"epoch must be an integer >= 0 \(0-based\), got 1\.5"):
        phase_at(schedule.phases, 1.5)


def test_savings_leaves_out_a_run_that_never_reached_full_resolution_and_wants_fractions():
    baseline = [(1, 1, 0.5, 1e9, 1.0), (2, 1, 0.6, 1e9, 1.0)]
    rows = savings(baseline, {"c2f": [(1, 4, 0.9, 2e8, 0.3)]}, fmt=None)  # read while still at R = 4
    assert rows[1]["Acc at first beat (delta)"] == "not at full resolution (last phase R=4)"
    assert rows[1]["Best Acc (gain)"] == "-" and rows[1]["FLOPs save (%)"] == "-"
    with pytest.raises(ValueError, match=r"c2f: acc 30 at epoch 1: acc is a fraction \(0 to 1"):
        savings(baseline, {"c2f": [(1, 4, 30.0, 2e8, 0.3), (2, 1, 90.0, 1e9, 1.0)]})
