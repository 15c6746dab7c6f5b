import pytest


@pytest.fixture(autouse=True)
def lookaside_of_the_test(settings, tmp_path):
    """Each test's GPG signatures in a lookaside store of its own."""
    settings.SUPPLY_CHAIN_LOOKASIDE_DIR = str(tmp_path / "lookaside")
