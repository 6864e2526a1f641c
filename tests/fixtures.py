"""Test data generators live in the package (resadapt_eval.synth); re-exported for the tests."""

from resadapt_eval.synth import make_videomme, write_video  # noqa: F401
