"""The singer-sdk's standard tap tests, against the fake APIs.

Note: the SDK's primary-key uniqueness test can never fail (it compares generator objects);
tests/test_streams.py has a real one.
"""

from __future__ import annotations

import atexit

from singer_sdk.testing import SuiteConfig, get_tap_test_class

from tap_jobresults.tap import TapJobResults
from tests.conftest import populate
from tests.fakeapi import FakeAPIs

# The standard tests are generated at import time, so the fake APIs start here, once per module.
_APIS = FakeAPIs().__enter__()
atexit.register(_APIS.__exit__, None, None, None)
populate(_APIS)

TestTapJobResults = get_tap_test_class(
    tap_class=TapJobResults,
    config=_APIS.config(),
    suite_config=SuiteConfig(ignore_no_records_for_streams=[], max_records_limit=None),
)
