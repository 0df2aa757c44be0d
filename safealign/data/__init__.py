"""Data layer: read sources, parse preference formats and behaviors, build the E-RLHF reference view,
tokenize with chat templates and collate batches. See each module's docstring."""

from safealign.data.behaviors import behavior_prompt, load_behaviors
from safealign.data.collate import PreferenceBatch, PreferenceCollator, UnpairedBatch, UnpairedCollator
from safealign.data.formats import FORMATS, DroppedRow, ParseResult, load_preferences
from safealign.data.tokenize import EncodedPair, EncodedUnpaired, PairEncoder, TruncationReport
from safealign.data.transforms import (
    PREFIXES,
    TRANSFORMS,
    IdentityTransform,
    PromptTransform,
    SafetyPrefix,
    build_transform,
)

__all__ = [
    "FORMATS",
    "PREFIXES",
    "TRANSFORMS",
    "DroppedRow",
    "EncodedPair",
    "EncodedUnpaired",
    "IdentityTransform",
    "PairEncoder",
    "ParseResult",
    "PreferenceBatch",
    "PreferenceCollator",
    "PromptTransform",
    "SafetyPrefix",
    "TruncationReport",
    "UnpairedBatch",
    "UnpairedCollator",
    "behavior_prompt",
    "build_transform",
    "load_behaviors",
    "load_preferences",
]
