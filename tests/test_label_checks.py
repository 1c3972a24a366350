"""Label validation keeps refusing what is wrong once the pairs it has seen are remembered
(cellstate/model.py, the validated-pairs set that a 100,000-machine snapshot leans on)."""

from __future__ import annotations

import pytest

from cellsched.cellstate.errors import InvalidJobError
from cellsched.cellstate.model import Machine, check_labels


def test_a_remembered_pair_passes_and_every_bad_pair_is_still_refused():
    assert check_labels("m", {"zone": "z1"}) == {"zone": "z1"}
    assert check_labels("m", {"zone": "z1"}) == {"zone": "z1"}  # second time: from the set
    with pytest.raises(InvalidJobError, match="63 characters"):
        check_labels("m", {"zone": "z" * 64})
    with pytest.raises(InvalidJobError, match="bad label key"):
        check_labels("m", {"-zone": "z1"})
    for bad in (["z1"], {"a": "b"}, 7, None):  # not a string, hashable or not: a clear error, never TypeError
        with pytest.raises(InvalidJobError, match="must be a string"):
            check_labels("m", {"zone": bad})


def test_a_machine_with_a_bad_label_names_it_after_many_good_ones():
    for i in range(1000):
        Machine(f"m{i}", (1000, 1000, 0), {"zone": f"z{i % 8}"})
    with pytest.raises(InvalidJobError, match="machine bad: label 'zone'"):
        Machine("bad", (1000, 1000, 0), {"zone": 5})
