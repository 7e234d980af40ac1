"""Synthetic Aff-Wild2-layout dataset with drawn faces, speech-like audio and temporal labels.

    >>> from pipeline.data.synth import SynthConfig, generate_dataset
    >>> summary = generate_dataset(Path("/tmp/synthetic"), SynthConfig.from_preset("tiny", seed=0))
"""

from pipeline.data.synth.config import SynthConfig
from pipeline.data.synth.generate import generate_dataset

__all__ = ["SynthConfig", "generate_dataset"]
