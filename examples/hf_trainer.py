"""Coarse-to-fine with the Hugging Face Trainer: ASTForAudioClassification + ASTFeatureExtractor.

    pip install "coarse2fine[hf]"
    python examples/hf_trainer.py [--epochs 4] [--clips 200] [--out hf-ast-c2f]
"""
import argparse

import torch
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, TrainingArguments, pipeline

from coarse2fine.core import Schedule
from coarse2fine.data.synthetic import CLASSES, SyntheticConfig, make_split
from coarse2fine.integrations.hf import CoarseToFineTrainer

args = argparse.ArgumentParser()
args.add_argument("--epochs", type=int, default=4)
args.add_argument("--clips", type=int, default=200)
args.add_argument("--out", default="hf-ast-c2f")
args = args.parse_args()
extractor = ASTFeatureExtractor(num_mel_bins=128, max_length=128, mean=-2.3, std=3.85)


def dataset(split, n):  # {"input_values": full-resolution features, "labels": class} per clip
    waves, labels = make_split(split, SyntheticConfig(num_clips=n))
    feats = extractor(list(waves.numpy()), sampling_rate=16000, return_tensors="pt")["input_values"]
    return [{"input_values": f, "labels": int(y)} for f, y in zip(feats, labels)], waves


train, _ = dataset("train", args.clips)
val, val_waves = dataset("val", args.clips // 4)
torch.manual_seed(0)
model = ASTForAudioClassification(ASTConfig(
    hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256, max_length=128,
    num_labels=len(CLASSES), id2label=dict(enumerate(CLASSES)), label2id={c: i for i, c in enumerate(CLASSES)}))
schedule = Schedule.build("4-1", args.epochs, frames=128, mel_bins=128, method="avgpool")  # 1 coarse + N fine epochs
training = TrainingArguments(args.out, num_train_epochs=schedule.epochs, per_device_train_batch_size=16,
                             learning_rate=1e-3, warmup_steps=10, eval_strategy="epoch", save_strategy="no",
                             report_to=[], use_cpu=True, disable_tqdm=True)
trainer = CoarseToFineTrainer(model=model, args=training, train_dataset=train, eval_dataset=val,
                              processing_class=extractor, schedule=schedule,
                              compute_metrics=lambda p: {"acc": float((p.predictions.argmax(-1) == p.label_ids).mean())})
trainer.train()
for r in trainer.c2f_records:
    print(f"epoch {r.epoch}: R={r.R} FLOPs={r.train_flops:.3g} time={r.train_time:.1f}s acc={r.metrics['eval_acc']:.3f}")
trainer.save_model(args.out)  # full resolution again: a standard transformers model folder
scores = pipeline("audio-classification", model=args.out)(list(val_waves.numpy()))
print(f"pipeline accuracy {sum(s[0]['label'] == CLASSES[v['labels']] for s, v in zip(scores, val)) / len(val):.3f}, "
      f"trainer.evaluate {trainer.evaluate()['eval_acc']:.3f}")
