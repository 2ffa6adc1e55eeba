"""`make test` runs the store's tests twice: with the C read path (store/native), then with
PINHOLE_STORE_NATIVE=0. Each pass must take the path it names, in this process and in the
store node processes the tests start (they inherit the environment)."""

from __future__ import annotations

import os

from store import native


def test_this_pass_takes_the_read_path_it_names() -> None:
    python_pass = os.environ.get(native.ENV_SWITCH, "1") == "0"
    hot = native.load(enabled=True)
    if python_pass:
        assert hot is None
    else:
        assert hot is not None, "store/native is not built (pip install -e .)"
