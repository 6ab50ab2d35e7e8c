from itertools import product

import pytest

from engine.errors import InvalidTransition
from engine.state import TERMINAL, TRANSITIONS, JobStatus, check_transition

# The lifecycle as the cloud shows it (datasphere-behaviour.md 4.1), written out independently of the table.
LEGAL = {
    ("CREATING", "PREPARING"), ("CREATING", "CANCELLED"), ("CREATING", "ERROR"),
    ("PREPARING", "EXECUTING"), ("PREPARING", "CANCELLING"), ("PREPARING", "CANCELLED"), ("PREPARING", "ERROR"),
    ("EXECUTING", "UPLOADING_OUTPUT"), ("EXECUTING", "CANCELLING"), ("EXECUTING", "ERROR"),
    ("UPLOADING_OUTPUT", "SUCCESS"), ("UPLOADING_OUTPUT", "ERROR"), ("UPLOADING_OUTPUT", "CANCELLING"),
    ("UPLOADING_OUTPUT", "CANCELLED"),
    ("CANCELLING", "CANCELLED"), ("CANCELLING", "ERROR"),
}


@pytest.mark.parametrize("frm,to", list(product(JobStatus, JobStatus)))
def test_transition_table(frm, to):
    if (frm.name, to.name) in LEGAL:
        check_transition(frm, to)
    else:
        with pytest.raises(InvalidTransition):
            check_transition(frm, to)


def test_terminal_states_are_final_and_values_match_the_api():
    assert {s.name for s in TERMINAL} == {"SUCCESS", "ERROR", "CANCELLED"}
    assert all(not TRANSITIONS[s] for s in TERMINAL)
    assert JobStatus.PREPARING.value == 8 and JobStatus.CANCELLING.value == 7
