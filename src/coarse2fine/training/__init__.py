"""The training loop and its state: the loop read top to bottom (:mod:`.loop`), the one training
step (:mod:`.step`), per-epoch records (:mod:`.records`), the optimizer and LR schedule
(:mod:`.optim`), augmentation (:mod:`.augment`), batch order and sharding (:mod:`.sampling`),
where a run stands (:mod:`.progress`), checkpoints (:mod:`.checkpoint`), weight averaging
(:mod:`.averaging`), when to leave a phase (:mod:`.switching`), torchrun (:mod:`.distributed`)
and TensorBoard (:mod:`.tensorboard`)."""
