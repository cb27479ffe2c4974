"""Periodic tasks: slots, declarations, and real servers taking each slot once.

The slot arithmetic and the settings' validation are pure functions. The servers are real
`manage.py leek` processes on this run's database; the schedules come from LEEK["schedules"]
(tests/settings.py reads LEEK_TEST_SCHEDULES as JSON) and from tests/scheduled_tasks.py.
"""

import json
import os
import signal
import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from leek import Leek, conf, control, schedules
from leek.models import Schedule, ScheduleRun, SlotSkip, Task, TaskStatus
from tests.conftest import holds_for, wait_until
from tests.models import Row

RIGA = zoneinfo.ZoneInfo("Europe/Riga")


def spec(**fields):
    return schedules.Spec(name="s", task="tests.dt_tasks.noop", **fields)


def test_every_slots_are_multiples_of_the_interval_since_the_epoch():
    every = spec(every=300)
    now = datetime(2026, 3, 1, 10, 7, 31, 500, tzinfo=UTC)
    assert schedules.latest_slot(every, now, RIGA) == datetime(2026, 3, 1, 10, 5, tzinfo=UTC)
    assert schedules.next_slot(every, now, RIGA) == datetime(2026, 3, 1, 10, 10, tzinfo=UTC)
    on_slot = datetime(2026, 3, 1, 10, 5, tzinfo=UTC)
    assert schedules.latest_slot(every, on_slot, RIGA) == on_slot


def test_cron_slots_are_in_the_time_zone_and_a_skipped_hour_runs_after_the_jump():
    daily = spec(cron="30 3 * * *")
    now = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)  # 14:00 in Riga (UTC+2)
    assert schedules.latest_slot(daily, now, RIGA) == datetime(2026, 1, 10, 3, 30, tzinfo=RIGA)
    # 2026-03-29: Riga's clocks jump from 03:00 to 04:00; 03:30 does not exist that day, and
    # cronsim (as Debian's cron) runs the job at once after the jump.
    jump = datetime(2026, 3, 29, 0, 59, tzinfo=UTC)  # 02:59 local
    found = schedules.next_slot(daily, jump, RIGA)
    assert found.astimezone(UTC) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 04:00 local
    # 2026-10-25: 03:30 comes twice (clocks fall back from 04:00 to 03:00); it runs once.
    fall = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    first = schedules.next_slot(daily, fall, RIGA)
    after = schedules.next_slot(daily, first + timedelta(minutes=1), RIGA)
    assert (after - first).total_seconds() > 86000


def test_decide_runs_on_time_skips_missed_and_catches_up_once():
    hourly = spec(cron="0 * * * *")
    since = datetime(2026, 1, 1, tzinfo=UTC)
    now = datetime(2026, 1, 2, 10, 0, 20, tzinfo=UTC)
    slot = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
    run = schedules.decide(hourly, now, UTC, None, since)
    assert run == schedules.Decision(schedules.Action.RUN, slot)
    assert schedules.decide(hourly, now, UTC, slot, since).action is schedules.Action.WAIT
    late = now + timedelta(minutes=20)  # no server was up at 10:00
    missed = schedules.decide(hourly, late, UTC, slot - timedelta(hours=5), since)
    assert missed == schedules.Decision(schedules.Action.SKIP_MISSED, slot)
    catch_up = spec(cron="0 * * * *", catch_up=True)
    # The latest of the five missed slots, only.
    caught = schedules.decide(catch_up, late, UTC, slot - timedelta(hours=5), since)
    assert caught == schedules.Decision(schedules.Action.RUN, slot)
    # A schedule recorded after the slot never runs it.
    assert schedules.decide(catch_up, late, UTC, None, late).action is schedules.Action.WAIT


def run_through(spec_, start, seconds, step, zone):
    """Ask decide() every `step` s for `seconds`, as a server would; return what ran when."""
    last, ran = None, []
    for n in range(0, seconds, step):
        now = start + timedelta(seconds=n)
        while True:
            decision = schedules.decide(spec_, now, zone, last, start)
            if decision.action is schedules.Action.WAIT:
                break
            assert decision.action is schedules.Action.RUN, (now, decision)
            ran.append((decision.slot, now))
            last = decision.slot
    return ran


def test_a_five_minute_cron_runs_every_five_minutes_through_the_autumn_change():
    # 2025-11-02 in New York: 02:00 EDT falls back to 01:00 EST. Jobs that run more often
    # than hourly run by the wall clock in both passes of the repeated hour: every five
    # minutes of real time, never before their slot, never an hour early.
    new_york = zoneinfo.ZoneInfo("America/New_York")
    start = datetime(2025, 11, 2, 4, 31, tzinfo=UTC)  # 00:31 EDT
    ran = run_through(spec(cron="*/5 * * * *"), start, 3 * 3600, 7, new_york)
    slots = [slot for slot, _ in ran]
    assert all(slot <= now for slot, now in ran)
    gaps = {(b - a).total_seconds() for a, b in zip(slots, slots[1:], strict=False)}
    assert gaps == {300.0}, sorted(gaps)
    assert len(slots) == 36  # 04:35 to 07:30 UTC


def test_slots_a_slow_round_left_behind_run_each_in_turn_while_on_time():
    every = spec(every=1)
    start = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    # Rounds 6 s apart (a database that paused): every one-second slot still runs, in order.
    ran = run_through(every, start, 30, 6, UTC)
    slots = [slot for slot, _ in ran]
    assert slots == [start + timedelta(seconds=n) for n in range(1, 25)]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"task": "a.b", "cron": "61 * * * *"}, "cron='61 * * * *' is not valid"),
        ({"task": "a.b", "cron": "* * * * * *"}, "five fields"),
        ({"task": "a.b"}, "give either cron"),
        ({"task": "a.b", "every": 0}, "must be above 0"),
        ({"task": "a.b", "every": "soon"}, "not a duration"),
        ({"task": "a b", "every": 5}, "dotted path"),
        ({"task": "a.b", "every": 5, "when": 1}, "'when' is not a key"),
        ({"task": "a.b", "every": 5, "args": [{1, 2}]}, "must be JSON"),
    ],
)
def test_a_bad_schedule_setting_names_the_schedule(entry, message):
    with pytest.raises(ImproperlyConfigured) as found:
        conf.from_mapping({"schedules": {"nightly": entry}})
    assert "LEEK['schedules']['nightly']" in str(found.value)
    assert message in str(found.value)


def test_schedule_settings_are_read_once_and_survive_replace():
    settings = conf.from_mapping(
        {"schedules": {"poll": {"task": "a.b", "every": "5m", "args": [1], "pool": "emails"}}}
    )
    (poll,) = settings.schedules
    assert (poll.every, poll.args, dict(poll.options)) == (300.0, (1,), {"pool": "emails"})
    assert settings.replace(workers=2).schedules == settings.schedules


def test_schedule_options_of_leek_task_need_cron_or_every():
    with pytest.raises(TypeError, match="add cron= or every="):
        Leek().task(catch_up=True)
    with pytest.raises(ValueError, match="five fields"):
        Leek().task(cron="daily")(lambda: None)


def env_for(entries, **extra):
    return {"LEEK_TEST_SCHEDULES": json.dumps(entries), **extra}


def runs_of(name):
    return ScheduleRun.objects.filter(schedule__name=name)


def start_servers(start_server, count, env):
    """Start `count` servers at once, then wait for each one's worker."""
    servers = [start_server(env=env, expect_start=False) for _ in range(count)]
    for server in servers:
        server._wait_started()
        server.wait_workers(1)
    return servers


def test_three_servers_take_each_slot_of_a_one_second_schedule_once(start_server):
    entry = {"task": "tests.dt_tasks.write_row", "every": 1, "args": [7]}
    servers = start_servers(start_server, 3, env_for({"tick": entry}))
    wait_until(lambda: runs_of("tick").exists(), 30, "the first slot")
    first = runs_of("tick").order_by("slot").first().slot
    # Halfway, one server stops: the others go on without a gap.
    wait_until(lambda: runs_of("tick").filter(slot__gte=first + timedelta(seconds=15)).exists(),
               40, "15 s of slots")  # fmt: skip
    servers[0].signal(signal.SIGTERM)
    servers[0].wait_exit(30)
    wait_until(lambda: runs_of("tick").filter(slot__gte=first + timedelta(seconds=30)).exists(),
               40, "30 s of slots")  # fmt: skip
    assert control.disable_schedules(["tick"], "tester") == ["tick"]
    taken = runs_of("tick").count()
    # A server reads the switch within a second; a slot it took just before is the last one.
    assert holds_for(lambda: runs_of("tick").count() <= taken + 1, 3.0)
    runs = list(runs_of("tick").order_by("slot"))
    slots = [run.slot for run in runs]
    assert slots == [first + timedelta(seconds=i) for i in range(len(slots))], "a gap"
    assert all(run.task_id and not run.skipped for run in runs)
    assert len({run.server for run in runs}) >= 2, "one server took every slot"
    tasks = Task.objects.filter(callable_path="tests.dt_tasks.write_row")
    assert sorted(tasks.values_list("id", flat=True)) == sorted(r.task_id for r in runs)
    wait_until(lambda: tasks.filter(status=TaskStatus.SUCCESSFUL).count() == len(runs), 30,
               "every slot's task to end")  # fmt: skip
    assert Row.objects.filter(n=7).count() == len(runs), "a slot's task ran twice"


def minute_ago(minutes):
    return (timezone.now() - timedelta(minutes=minutes)).minute


def test_missed_slots_are_skipped_or_caught_up_once_and_overlap_is_skipped(start_server):
    hourly = f"{minute_ago(5)} * * * *"  # its latest slot was 5 to 6 minutes ago
    entries = {
        "skip": {"task": "tests.dt_tasks.write_row", "cron": hourly, "args": [1]},
        "catch-up": {
            "task": "tests.dt_tasks.write_row", "cron": hourly, "args": [2], "catch_up": True
        },
        "slow": {
            "task": "tests.dt_tasks.sleep_then_write_row", "every": 1, "args": [3, 1.5],
            "overlap": False,
        },
    }  # fmt: skip
    env = env_for(entries)
    server = start_server(env=env)
    wait_until(lambda: Schedule.objects.count() == 3, 30, "the schedules recorded")
    # Recorded after their latest slot: that one is not theirs to run.
    assert holds_for(lambda: not runs_of("skip").exists() and not runs_of("catch-up").exists(), 1)
    wait_until(lambda: runs_of("slow").filter(skipped=SlotSkip.OVERLAP).count() >= 2, 30,
               "slots skipped while the slow task runs")  # fmt: skip
    wait_until(lambda: runs_of("slow").exclude(task_id=None).count() >= 2, 30, "a second run")
    slow = Task.objects.filter(id__in=runs_of("slow").values("task_id")).order_by("id")
    control.disable_schedules(["slow"], "tester")
    wait_until(lambda: not slow.exclude(status=TaskStatus.SUCCESSFUL).exists(), 30, "the runs")
    spans = list(slow.values_list("enqueued_at", "finished_at"))
    for (_, finished), (enqueued, _) in zip(spans, spans[1:], strict=False):
        assert enqueued >= finished, "a run was enqueued while the previous one ran"
    # The server stops; it was down since before the hourly slot (no server ran it).
    server.stop()
    Schedule.objects.update(since=timezone.now() - timedelta(hours=2))
    slow_runs = runs_of("slow").count()
    start_server(env=env)
    wait_until(lambda: runs_of("skip").exists() and runs_of("catch-up").exists(), 30, "start")
    skip = runs_of("skip").get()
    assert (skip.skipped, skip.task_id) == (SlotSkip.MISSED, None)
    caught = runs_of("catch-up").get()
    assert (caught.slot, caught.skipped) == (skip.slot, "")
    assert caught.task_id
    wait_until(lambda: Row.objects.filter(n=2).exists(), 30, "the caught-up run")
    # Once: no burst of earlier slots, and nothing for the skipped one or the disabled one.
    assert holds_for(
        lambda: (
            (runs_of("catch-up").count(), Row.objects.filter(n__in=(1, 2)).count()) == (1, 1)
            and runs_of("slow").count() == slow_runs
        ),
        2.0,
    )


def test_schedules_declared_in_code_are_recorded_with_their_options_and_run(start_server):
    # Depends on JSON rows of plain @leek.task functions running in the worker.
    server = start_server(env={"LEEK_TEST_TASK_MODULES": "tests.scheduled_tasks"})
    wait_until(lambda: Row.objects.filter(n=1).count() >= 2, 30, "two runs of every_second")
    nightly = Schedule.objects.get(name="tests.scheduled_tasks.nightly")
    assert (nightly.source, nightly.cron, nightly.priority, nightly.retries) == (
        "code", "0 3 * * *", 3, 2
    )  # fmt: skip
    tick = Schedule.objects.get(name="tests.scheduled_tasks.every_second")
    done = Task.objects.filter(id__in=tick.runs.values("task_id"), status=TaskStatus.SUCCESSFUL)
    assert done.exists()
    assert done.first().return_value == "tick"
    # A worker booted without that module marks them gone, and they stop.
    server.stop()
    start_server()
    wait_until(lambda: not Schedule.objects.filter(declared=True).exists(), 30, "gone")
    taken = ScheduleRun.objects.count()
    assert holds_for(lambda: ScheduleRun.objects.count() == taken, 2.0)
    assert Schedule.objects.count() == 2  # kept, with their history


def test_in_a_rolling_deploy_the_newest_generation_declares_the_schedules(start_server):
    never = "0 3 1 1 *"  # declared, not run during the test
    kept = {"task": "tests.dt_tasks.write_row", "cron": never, "args": [1]}
    dropped = {"task": "tests.dt_tasks.write_row", "cron": never, "args": [2]}
    added = {"task": "tests.dt_tasks.write_row", "cron": never, "args": [3]}

    def declared():
        return set(Schedule.objects.filter(declared=True).values_list("name", flat=True))

    old = start_server(env=env_for({"kept": kept, "dropped": dropped}))
    wait_until(lambda: declared() == {"kept", "dropped"}, 30, "the old code's schedules")
    start_server(env=env_for({"kept": kept, "added": added}))
    wait_until(lambda: declared() == {"kept", "added"}, 30, "the new code's schedules")
    # A worker of the old server is replaced (as after a crash or its memory limit): it
    # neither takes back the schedule the new code dropped nor marks gone the one it added.
    (worker,) = old.stats()["workers"]
    old.known_pids.add(worker["pid"])
    os.kill(worker["pid"], signal.SIGKILL)

    def replaced():
        workers = old.stats()["workers"]
        return [w["state"] for w in workers if w["pid"] != worker["pid"]] == ["idle"]

    wait_until(replaced, 60, "the old server's new worker to boot")
    assert holds_for(lambda: declared() == {"kept", "added"}, 2.0)
    # A reload makes the old server's code the newest: its declarations hold now.
    old.signal(signal.SIGHUP)
    wait_until(lambda: declared() == {"kept", "dropped"}, 60, "the reloaded code's schedules")


def test_the_admin_lists_schedules_and_switches_them_and_status_shows_them():
    from django.contrib.admin.models import LogEntry
    from django.contrib.auth.models import User
    from django.test import Client

    from tests.test_commands import leek_here

    nightly = Schedule.objects.create(
        name="nightly", source="settings", callable_path="tests.dt_tasks.noop", cron="0 3 * * *"
    )
    task = Task.objects.create(callable_path="tests.dt_tasks.noop", payload=b"{}",
                               status=TaskStatus.FAILED)  # fmt: skip
    slot = timezone.now().replace(hour=3, minute=0, second=0, microsecond=0)
    ScheduleRun.objects.create(schedule=nightly, slot=slot, task_id=task.pk)
    User.objects.filter(username="ada").delete()
    User.objects.create_superuser("ada", password="pw")
    browser = Client()
    assert browser.login(username="ada", password="pw")
    try:
        page = browser.get("/admin/leek/schedule/").content.decode()
        assert "0 3 * * *" in page
        assert f"/admin/leek/task/{task.pk}/change/" in page
        assert 'leek-failed">FAILED' in page
        browser.post("/admin/leek/schedule/",
                     {"action": "disable", "_selected_action": [str(nightly.pk)]})  # fmt: skip
        nightly.refresh_from_db()
        assert (nightly.enabled, nightly.changed_by) == (False, "ada")
        assert nightly.next_at() is None
        code, out = leek_here("status")
        assert "schedule nightly (0 3 * * *) tests.dt_tasks.noop: disabled by ada, next -" in out
        assert f"task {task.pk} FAILED" in out
        assert control.enable_schedules(["nightly", "nightly"], "bob") == ["nightly"]
        nightly.refresh_from_db()
        assert nightly.enabled
        # From now on: the slots while it was disabled are not missed.
        assert nightly.since >= nightly.changed_at
        assert nightly.next_at().hour == 3
    finally:
        LogEntry.objects.all().delete()
        User.objects.filter(username="ada").delete()
