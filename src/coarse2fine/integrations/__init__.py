"""Coarse-to-fine training inside training code people already have.

* :mod:`coarse2fine.integrations.lightning`: the ``CoarseToFine`` callback for PyTorch Lightning
  (``pip install "coarse2fine[lightning]"``), and ``ConfigModule``, a coarse2fine config's recipe
  as a ``LightningModule``;
* :mod:`coarse2fine.integrations.hf`: ``CoarseToFineTrainer``, a Hugging Face ``Trainer`` for
  ``ASTForAudioClassification`` (``pip install "coarse2fine[hf]"``).

Both build on the functional core, :mod:`coarse2fine.core`, which a plain PyTorch loop can call
directly. This package imports neither Lightning nor transformers: import the submodule you use.
"""
