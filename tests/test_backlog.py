"""The backlog window in this process: order, bounds, eviction, ids handed out and back."""

from hypothesis import given
from hypothesis import strategies as st

from leek.server.backlog import Backlog
from tests import tasks


def test_higher_priority_first_then_oldest():
    backlog = Backlog()
    backlog.add([(5, 0), (3, 0), (9, 2), (4, 2), (1, -1)])
    assert backlog.take(10) == [4, 9, 3, 5, 1]
    assert len(backlog) == 0


def test_an_id_is_held_once_until_released():
    backlog = Backlog()
    assert backlog.add([(1, 0), (1, 0)]) == 1
    assert backlog.take() == [1]
    assert backlog.add([(1, 0)]) == 0  # handed out, not released
    backlog.release(1)
    assert backlog.add([(1, 0)]) == 1


def test_an_id_given_back_runs_in_its_place():
    backlog = Backlog()
    backlog.add([(1, 0), (2, 0), (3, 0)])
    first, second = backlog.take(2)
    backlog.give_back(first)
    assert backlog.take(5) == [first, 3]
    backlog.release(second)
    backlog.give_back(second)  # released: nothing to give back
    assert len(backlog) == 0


def test_an_id_given_back_and_then_run_by_its_worker_leaves_the_window():
    backlog = Backlog(capacity=2)
    backlog.add([(1, 0), (2, 0)])
    assert backlog.take() == [1]
    backlog.give_back(1)  # its worker retired...
    backlog.release(1)  # ...and ran it all the same
    assert backlog.add([(1, 0)]) == 1  # a later sweep finds it READY again: held once
    assert backlog.add([(3, 5), (4, 5)]) == 2  # the window is full: evicts cleanly
    assert backlog.take(5) == [3, 4]


def test_a_full_window_leaves_out_ids_that_would_run_last():
    backlog = Backlog(capacity=3)
    assert backlog.add([(1, 0), (2, 0), (3, 0), (4, 0)]) == 3
    assert backlog.overflowed
    assert backlog.take(5) == [1, 2, 3]


def test_a_full_window_makes_room_for_a_higher_priority_id():
    backlog = Backlog(capacity=3)
    backlog.add([(1, 0), (2, 0), (3, 0)])
    assert backlog.add([(99, 5)]) == 1
    assert len(backlog) == 3
    assert backlog.take(5) == [99, 1, 2]
    # The one left out is forgotten, so that the sweep can bring it back.
    assert backlog.add([(3, 0)]) == 1


@given(st.dictionaries(st.integers(1, 50), st.integers(-3, 3), max_size=50))
def test_the_window_holds_the_best_ids_in_order(priorities):
    backlog = Backlog(capacity=10)
    for task_id, priority in priorities.items():  # one at a time, as announced
        backlog.add([(task_id, priority)])
    best = sorted(priorities, key=lambda i: (-priorities[i], i))[:10]
    assert backlog.take(100) == best


def test_the_sweep_pages_past_the_ids_already_held():
    from leek.models import Task
    from leek.server.sweep import Sweeper
    from tests.test_server import ready_row

    ids = [ready_row(tasks.add, n, n).pk for n in range(30)]
    backlog = Backlog(capacity=10)
    sweeper = Sweeper(backlog, interval=60)
    assert sweeper.sweep() == 10
    assert backlog.overflowed
    handed_out = backlog.take(6)  # still READY: no worker has claimed them yet
    assert handed_out == ids[:6]
    assert sweeper.sweep() == 6
    assert backlog.take(100) == ids[6:16]
    for task_id in handed_out:
        backlog.release(task_id)
    Task.objects.filter(pk__in=ids[:16]).update(status="SUCCESSFUL")
    assert sweeper.sweep() == 10
    assert sweeper.sweep() == 0  # nothing new past the window: it does not spin
    assert backlog.take(100) == ids[16:26]
