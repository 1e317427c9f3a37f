"""Hypothesis profiles for the whole suite: HYPOTHESIS_PROFILE=ci|dev|deep (default dev).

The profiles are registered by graphrnn.testing (so users' suites get them too);
.ci/run selects ``ci``: derandomized, no example database, reproducible.
"""
import os

from hypothesis import settings

import graphrnn.testing  # noqa: F401  (registers the profiles)

settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
