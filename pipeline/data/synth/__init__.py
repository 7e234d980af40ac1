"""Synthetic Aff-Wild2-layout dataset with drawn faces, speech-like audio and temporal labels.

Example (not run here: it writes a few hundred files; the test suite generates the tiny preset
once per session)::

    from pathlib import Path
    from pipeline.data.synth import SynthConfig, generate_dataset
    summary = generate_dataset(Path("data/synthetic"), SynthConfig.from_preset("tiny", seed=0))
"""

from pipeline.data.synth.config import SynthConfig
from pipeline.data.synth.generate import generate_dataset

__all__ = ["SynthConfig", "generate_dataset"]
