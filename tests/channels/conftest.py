import pytest

# Plain asserts in the shared harness should explain themselves like a test's do.
pytest.register_assert_rewrite("tests.support.provider_harness")
