"""The cache digests are part of the on-disk format: these values freeze their byte layouts.

If one of these tests fails, every cache keyed by that digest (including the committed study
caches under ``studies/``) would silently be recomputed — change a layout only on purpose.
"""

from __future__ import annotations

import numpy as np

from dataplan import digests
from dataplan.data.loading import Example

EXAMPLES = [
    Example(id="a", prompt="2+2=", answer="4", choices=("4", "5")),
    Example(id="b", prompt="Héllo", answer="x"),
]


def test_json_digest_is_frozen_and_accepts_numpy() -> None:
    assert digests.json_digest({"n": [1, 2.5, None]}) == "f49609c57e5eceb3"
    assert digests.json_digest({"n": [np.int64(1), np.float64(2.5), None]}) == "f49609c57e5eceb3"
    assert digests.json_digest({"n": [1, 2.5]}) != digests.json_digest({"n": [1, 2.4]})


def test_example_digests_are_frozen_and_order_sensitive() -> None:
    assert digests.examples_digest(EXAMPLES) == "f534e5d2cd49d5d3"
    assert digests.examples_key(EXAMPLES) == "66b73d2b7532"
    assert digests.task_digest("t", "p/q.json", EXAMPLES) == (
        "317dc2db9157b94b743a63289f79db525ca9c7c4c4b45124255f1df7a0eca0ba"
    )
    reversed_ = EXAMPLES[::-1]
    assert digests.examples_digest(reversed_) != digests.examples_digest(EXAMPLES)
    assert digests.examples_key(reversed_) != digests.examples_key(EXAMPLES)


def test_options_change_examples_digest_but_not_the_gradient_key() -> None:
    other = [EXAMPLES[0], Example(id="b", prompt="Héllo", answer="x", choices=("x", "y"))]
    assert digests.examples_digest(other) != digests.examples_digest(EXAMPLES)
    assert digests.examples_key(other) == digests.examples_key(EXAMPLES)


def test_file_digest_of_files_and_folders(tmp_path) -> None:
    (tmp_path / "x.txt").write_text("abc")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "y.bin").write_bytes(b"\x00\x01")
    # sha256("abc"), the textbook value.
    assert digests.file_digest(tmp_path / "x.txt") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert digests.file_digest(tmp_path) == (
        "1ac5def6ecda6b0dce8772b2d4a07a9881710574a06b86235598f7527b86990e"
    )
    (tmp_path / "sub" / "y.bin").rename(tmp_path / "sub" / "z.bin")  # same bytes, new name
    assert digests.file_digest(tmp_path) != (
        "1ac5def6ecda6b0dce8772b2d4a07a9881710574a06b86235598f7527b86990e"
    )
