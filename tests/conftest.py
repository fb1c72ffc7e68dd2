"""Test-wide settings: hypothesis draws are derandomized (seeded), so every run checks the same examples.

Set HYPOTHESIS_PROFILE=explore to search fresh random examples instead.
"""

import os

from hypothesis import settings

settings.register_profile("seeded", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "seeded"))

# The browser test of the built site runs by `make test-site`, once a site is built (tests/site).
collect_ignore = ["site"]
