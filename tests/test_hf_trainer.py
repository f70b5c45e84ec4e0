"""CoarseToFineTrainer: 4-1 on an ESC-50 subset with pipeline = evaluate, resume in the coarse phase, Fshift."""

from __future__ import annotations

import csv
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import (  # noqa: E402
    ASTConfig,
    ASTFeatureExtractor,
    ASTForAudioClassification,
    TrainerCallback,
    TrainingArguments,
    pipeline,
)

from coarse2fine.audio import load_audio  # noqa: E402
from coarse2fine.core import Schedule, savings, step_flops  # noqa: E402
from coarse2fine.integrations.hf import STATE_FILE, CoarseToFineTrainer, ast_feature_spec  # noqa: E402
from coarse2fine.model.ast.hf import hf_ast_config  # noqa: E402
from coarse2fine.runtime import cpu_name  # noqa: E402

ESC50 = Path(__file__).resolve().parents[2] / "shared" / "data" / "esc50"
SR, MEL = 16000, 128
logging.getLogger("transformers").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", ".*")


class Clips(torch.utils.data.Dataset):
    """``{"input_values": features or waveform, "labels": class}`` per clip."""

    def __init__(self, inputs: torch.Tensor, labels: list[int]):
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"input_values": self.inputs[i], "labels": self.labels[i]}


def _tiny_ast(frames: int, labels: list[str]) -> ASTForAudioClassification:
    transformers.set_seed(0)
    cfg = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_mel_bins=MEL,
                    max_length=frames, patch_size=16, frequency_stride=16, time_stride=16, num_labels=len(labels),
                    id2label=dict(enumerate(labels)), label2id={c: i for i, c in enumerate(labels)})
    return ASTForAudioClassification(cfg)


def _args(out: Path, epochs: int, **kw) -> TrainingArguments:
    settings = dict(output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=8, per_device_eval_batch_size=8,
                    learning_rate=2e-3, warmup_steps=2, save_strategy="no", logging_steps=1, report_to=[], use_cpu=True,
                    seed=0, disable_tqdm=True, dataloader_num_workers=0)
    return TrainingArguments(**{**settings, **kw})


def _accuracy(pred) -> dict[str, float]:
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}


def _esc10(per_class_train: int, per_class_eval: int):
    rows = [r for r in csv.DictReader(open(ESC50 / "esc50.csv")) if r["esc10"] == "True"]
    classes = sorted({r["category"] for r in rows})
    out = {"train": ([], []), "eval": ([], [])}
    for c in classes:
        mine = [r for r in rows if r["category"] == c]
        for split, keep, n in (("train", lambda r: r["fold"] != "1", per_class_train),
                               ("eval", lambda r: r["fold"] == "1", per_class_eval)):
            for r in [r for r in mine if keep(r)][:n]:
                out[split][0].append(load_audio(ESC50 / "audio" / r["filename"], SR).numpy())
                out[split][1].append(classes.index(c))
    return classes, out


@pytest.mark.skipif(not (ESC50 / "esc50.csv").exists(), reason="ESC-50 not present in ../shared/data")
def test_trains_4_1_on_esc50_and_the_exported_model_scores_the_same_in_pipeline(tmp_path):
    classes, data = _esc10(per_class_train=3, per_class_eval=2)  # ESC-10: folds 2-5 train, fold 1 evaluates
    fe = ASTFeatureExtractor(sampling_rate=SR, num_mel_bins=MEL, max_length=512, mean=-6.6268, std=5.3585)
    (train_w, train_y), (eval_w, eval_y) = data["train"], data["eval"]
    train = Clips(fe(train_w, sampling_rate=SR, return_tensors="pt")["input_values"], train_y)
    val = Clips(fe(eval_w, sampling_rate=SR, return_tensors="pt")["input_values"], eval_y)
    model = _tiny_ast(512, classes)
    schedule = Schedule.build("4-1", 2, phase_epochs=[1, 2], frames=512, mel_bins=MEL, method="avgpool")
    trainer = CoarseToFineTrainer(model=model, args=_args(tmp_path / "run", 3, eval_strategy="epoch"), train_dataset=train,
                                  eval_dataset=val, processing_class=fe, compute_metrics=_accuracy, schedule=schedule)
    trainer.train()
    recs = trainer.c2f_records
    assert [(r.epoch, r.phase, r.R, r.tokens, r.clips) for r in recs] == [(1, 0, 4, 64, 30), (2, 1, 1, 256, 30), (3, 1, 1, 256, 30)]
    fine = step_flops(model, 30)  # the model is back at full resolution
    assert [r.train_flops for r in recs[1:]] == [fine, fine] and recs[0].train_flops < fine / 3
    assert all("eval_accuracy" in r.metrics for r in recs)
    # The LR schedule restarts (warm-up included) at the phase change: 4 steps per epoch.
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h and "loss" in h]
    assert len(lrs) == 12 and lrs[4] == pytest.approx(lrs[0]) and lrs[3] != pytest.approx(lrs[0])
    assert model.config.max_length == 512 and model.config.time_stride == 16  # full resolution again
    evaluated = trainer.evaluate()
    logits = trainer.predict(val).predictions

    trainer.save_model(tmp_path / "final")
    assert json.loads((tmp_path / "final" / STATE_FILE).read_text())["R"] == 1
    classify = pipeline("audio-classification", model=str(tmp_path / "final"), device="cpu")
    results = classify(list(eval_w), top_k=len(classes))
    scores = np.array([[next(d["score"] for d in res if d["label"] == c) for c in classes] for res in results])
    assert np.abs(scores - torch.from_numpy(logits).softmax(-1).numpy()).max() < 1e-5
    assert float((scores.argmax(1) == np.array(eval_y)).mean()) == pytest.approx(evaluated["eval_accuracy"])


@pytest.fixture(scope="module")
def tones():
    """32 clips of 4 classes (1.28 s tones), features [128 frames x 128 bins] and waveforms."""
    g = np.random.default_rng(0)
    labels = [int(v) for v in g.integers(0, 4, 32)]
    t = np.arange(int(SR * 1.28)) / SR
    waves = [(0.3 * np.sin(2 * np.pi * 300 * (1 + y) * t) + 0.05 * g.standard_normal(len(t))).astype(np.float32)
             for y in labels]
    fe = ASTFeatureExtractor(sampling_rate=SR, num_mel_bins=MEL, max_length=128, mean=-6.0, std=4.0)
    return fe, fe(waves, sampling_rate=SR, return_tensors="pt")["input_values"], torch.from_numpy(np.stack(waves)), labels


class _Crash(TrainerCallback):
    """Stops the run like a crash right after the checkpoint of ``step`` is written."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


PATCH_4_1 = Schedule.build("4-1", 2, phase_epochs=[1, 1], frames=128, mel_bins=MEL, method="patch")


def _patch_trainer(tones, out, **kw) -> CoarseToFineTrainer:
    fe, feats, _, labels = tones
    return CoarseToFineTrainer(model=_tiny_ast(128, list("abcd")), args=_args(out, 2, **kw),
                               train_dataset=Clips(feats, labels), processing_class=fe, schedule=PATCH_4_1)


@pytest.fixture(scope="module")
def patch_runs(tones, tmp_path_factory):
    """Patch 4-1 trained without interruption, and a run that crashed after step 4 (4 steps an
    epoch) leaving checkpoints at steps 2 (the middle of the coarse epoch) and 4 (its last step)."""
    root = tmp_path_factory.mktemp("hf_patch")
    whole = _patch_trainer(tones, root / "whole")
    whole.train()
    crashed = _patch_trainer(tones, root / "crashed", save_strategy="steps", save_steps=2)
    crashed.add_callback(_Crash(4))
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    return whole, root / "crashed"


@pytest.mark.parametrize("step", [2, 4])
def test_resumes_in_the_coarse_phase_with_identical_weights(tones, patch_runs, step):
    whole, crashed = patch_runs
    ckpt = crashed / f"checkpoint-{step}"
    state = json.loads((ckpt / STATE_FILE).read_text())
    assert (state["phase"], state["R"]) == (0, 4) and state["partial"]["steps"] == step
    kernel = load_file(ckpt / "model.safetensors")["audio_spectrogram_transformer.embeddings.patch_embeddings.projection.weight"]
    assert kernel.shape[-2:] == (16, 64)  # the coarse phase's 16 x 64 patches
    resumed = _patch_trainer(tones, crashed)
    resumed.train(resume_from_checkpoint=str(ckpt))
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    assert [(r.epoch, r.R, r.clips, r.train_flops) for r in resumed.c2f_records] == \
        [(r.epoch, r.R, r.clips, r.train_flops) for r in whole.c2f_records]
    # the steps timed before the crash count in the resumed epoch's record
    assert [(r.steps, len(r.step_deciles)) for r in resumed.c2f_records] == [(4, 9), (4, 9)]


class _Frames(TrainerCallback):
    """The model's input frames at every step."""

    def __init__(self, model):
        self.model, self.frames = model, []

    def on_step_end(self, args, state, control, **kwargs):
        self.frames.append(hf_ast_config(self.model).target_length)


def test_fshift_from_waveforms(tmp_path, tones):
    fe, _, waves, labels = tones
    waves, labels = waves[:16], labels[:16]  # 2 steps an epoch
    schedule = Schedule.build("4-1", 2, phase_epochs=[1, 1], frames=128, mel_bins=MEL, method="fshift")
    with pytest.raises(ValueError, match="inputs='waveforms'"):
        CoarseToFineTrainer(model=_tiny_ast(128, list("abcd")), args=_args(tmp_path, 2), train_dataset=Clips(waves, labels),
                            schedule=schedule)
    trainer = CoarseToFineTrainer(model=_tiny_ast(128, list("abcd")), args=_args(tmp_path, 2),
                                  train_dataset=Clips(waves, labels), schedule=schedule, inputs="waveforms",
                                  features=ast_feature_spec(fe))
    probe = _Frames(trainer.model)
    trainer.add_callback(probe)
    trainer.train()
    assert probe.frames == [32] * 2 + [128] * 2  # 40 ms frames in the coarse phase, 10 ms at full resolution
    assert [(r.R, r.tokens) for r in trainer.c2f_records] == [(4, 16), (1, 64)]


def test_records_are_filled_from_what_the_trainer_knows(tmp_path, tones):
    """Integer epochs (in memory, in coarse2fine_state.json and in a savings table), the global
    batch, the LR of each epoch's first step, optimizer steps, and the step times as the CLI times
    them; evaluation metrics without the Trainer's epoch and speed numbers. The CLI's method name
    ``patch-bl`` works here too."""
    fe, feats, _, labels = tones
    schedule = Schedule.build("4-1", 2, phase_epochs=[1, 2], frames=128, mel_bins=MEL, method="patch-bl")
    args = _args(tmp_path / "run", 3, per_device_train_batch_size=4, gradient_accumulation_steps=2, warmup_steps=0,
                 eval_strategy="epoch")
    trainer = CoarseToFineTrainer(model=_tiny_ast(128, list("abcd")), args=args, train_dataset=Clips(feats, labels),
                                  eval_dataset=Clips(feats[:8], labels[:8]), processing_class=fe,
                                  compute_metrics=_accuracy, schedule=schedule)
    assert (trainer.c2f_compression.method, trainer.c2f_compression.patch_resize) == ("patch", "bilinear")
    trainer.train()
    recs = trainer.c2f_records
    # 32 clips in micro-batches of 4, two per optimizer step: 4 steps of 8 clips an epoch.
    assert [(r.epoch, r.R, r.clips, r.steps, r.batch_size) for r in recs] == [(1, 4, 32, 4, 8), (2, 1, 32, 4, 8),
                                                                            (3, 1, 32, 4, 8)]
    assert all(type(r.epoch) is int and type(r.to_dict()["epoch"]) is int for r in recs)
    # The LR of each epoch's first optimizer step, as the Trainer logs it (a fresh schedule per phase).
    lrs = {h["step"]: h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h and "loss" in h}
    assert [r.lr for r in recs] == pytest.approx([lrs[1], lrs[5], lrs[9]]) and recs[2].lr < recs[1].lr
    assert recs[0].lr == pytest.approx(2e-3) == recs[1].lr
    # Each epoch's training loss is the mean of the step losses the Trainer logs (it was None).
    losses = {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}
    assert [r.train_loss for r in recs] == pytest.approx(
        [sum(losses[s] for s in range(first, first + 4)) / 4 for first in (1, 5, 9)], abs=2e-4)
    for r in recs:
        assert r.step_median > 0 and len(r.step_deciles) == 9 and r.step_time > 0 and r.data_time >= 0
        assert r.machine.startswith(cpu_name())
        assert r.data_time + r.step_time <= r.train_time * 1.001 + 1e-3
        assert r.eval_time > 0 and {"eval_loss", "eval_accuracy"} <= set(r.metrics)
        assert not {"epoch", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second"} & set(r.metrics)
    trainer.save_model(tmp_path / "final")
    saved = json.loads((tmp_path / "final" / STATE_FILE).read_text())["records"]
    assert [r["epoch"] for r in saved] == [1, 2, 3] and all(type(r["epoch"]) is int for r in saved)
    rows = savings(recs, {"patch-bl 4-1": saved}, "eval_accuracy", fmt=None)
    assert all("." not in row["Beat epoch"] and "." not in row["Best epoch"] for row in rows)
