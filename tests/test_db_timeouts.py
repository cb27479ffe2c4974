"""The server process bounds its waits on the database (LEEK["db_timeout"]); workers do not."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from leek import conf
from leek.models import Server
from leek.server.dbtimeouts import bounded_options
from tests import tasks
from tests.conftest import KIND, requires_server_db, wait_until

# What each database says when the bound cut a statement short.
TIMED_OUT = {
    "postgres": "canceling statement due to statement timeout",
    "mariadb": "Lost connection",
}


def test_db_timeout_is_validated():
    assert conf.from_mapping({}).db_timeout == 10
    assert conf.from_mapping({"db_timeout": 0}).db_timeout == 0
    with pytest.raises(ImproperlyConfigured, match="db_timeout"):
        conf.from_mapping({"db_timeout": -1})
    with pytest.raises(ImproperlyConfigured, match="db_timeout"):
        conf.from_mapping({"db_timeout": "10"})


def test_postgresql_gets_every_bound_and_keeps_the_projects_own():
    found = bounded_options("postgresql", {"options": "-c search_path=app"}, 2.5)
    assert found["connect_timeout"] == 3
    assert found["tcp_user_timeout"] == 2500
    assert found["keepalives"] == 1
    assert found["options"] == (
        "-c search_path=app -c statement_timeout=2500 -c idle_in_transaction_session_timeout=2500"
        " -c tcp_keepalives_idle=2 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=2"
    )
    # A silent peer is dropped by the keepalives within the bound.
    probes = found["keepalives_idle"] + found["keepalives_interval"] * found["keepalives_count"]
    assert probes <= 5
    own = bounded_options("postgresql", {"options": "-c statement_timeout=0", "keepalives": 0}, 9)
    assert own["options"].startswith("-c statement_timeout=0 -c idle_in")
    assert own["options"].count("statement_timeout") == 1
    assert own["keepalives"] == 0


def test_mysql_gets_client_timeouts_and_sqlite_nothing():
    found = bounded_options("mysql", {"charset": "utf8mb4", "read_timeout": 30}, 0.5)
    assert found == {
        "charset": "utf8mb4",
        "connect_timeout": 2,
        "read_timeout": 30,
        "write_timeout": 2,
    }
    assert bounded_options("sqlite", {"timeout": 20}, 5) == {"timeout": 20}


@requires_server_db
def test_a_statement_of_the_server_that_waits_too_long_gives_up(start_server):
    # The heartbeat's UPDATE of the server's row waits for a lock this test holds: without
    # the bound it would wait for ever (PostgreSQL) or for innodb_lock_wait_timeout.
    server = start_server(
        workers=1, env={"LEEK_TEST_DB_TIMEOUT": "1", "LEEK_TEST_HEARTBEAT_INTERVAL": "0.5"}
    )
    wait_until(lambda: Server.objects.filter(pid=server.pid).exists(), 30, "the server's row")
    with transaction.atomic():
        Server.objects.select_for_update().get(pid=server.pid)
        wait_until(lambda: TIMED_OUT[KIND] in server.log(), 30, "the heartbeat to give up")
    assert "cannot write the server's heartbeat, trying again" in server.log()
    # The workers' connections are the project's own: a task's query is not cut short.
    if KIND == "postgres":
        assert tasks.statement_timeout.offload().wait(60).return_value == "0"
    assert tasks.add.offload(1, 2).wait(60).return_value == 3
