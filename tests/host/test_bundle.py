"""A bundle made from a freshly trained and exported run (the device tier checks the committed one)."""

from helpers import check_bundle


def test_bundle_contents_and_selftest(bundle_file):
    check_bundle(bundle_file, golden=50)
