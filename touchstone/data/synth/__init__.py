"""Synthetic region crops: the embedded default data set.

No public data set of counterfeit luxury goods exists, so Touchstone makes its own: items of
fictional brands, photographed region by region, with counterfeit cues of known strength: as
square crops, or as whole phone photos with EXIF (`phone.py`). See datasets/README.md for the
data card.
"""

from touchstone.data.synth.generate import SynthConfig, generate_dataset

__all__ = ["SynthConfig", "generate_dataset"]
