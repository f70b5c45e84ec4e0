"""coarse2fine: coarse-to-fine training of audio spectrogram transformers.

The pipeline, one module per step:
audio -> features -> compression -> model -> phases -> report.
"""

__version__ = "0.1.0"
