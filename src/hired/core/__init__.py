"""Pure tensor algorithms, with no model knowledge: phase 1 (allocation), phase 2 (selection),
merging, the CLS-row math, one image's layout in the language model's sequence, the per-image
plan (view -> policy -> keep mask -> packed features) and the report."""
