#!/bin/sh
# Run the example: migrate, make the admin login (a new password each run, printed below),
# start `manage.py leek --workers 2` in the background, serve the page on
# http://127.0.0.1:${PORT:-8000}/, and stop the leek server (by pid) on the way out.
# PYTHON defaults to the checkout's .venv; LEEK_PORT (default 8002) moves the leek server.
set -eu
cd "$(dirname "$0")"
PYTHON=${PYTHON:-../.venv/bin/python}
"$PYTHON" manage.py migrate --verbosity 0
login=$("$PYTHON" manage.py demo_admin)
"$PYTHON" manage.py leek --workers 2 &
leek_pid=$!
trap 'kill -TERM "$leek_pid" 2>/dev/null; wait "$leek_pid" 2>/dev/null || true' EXIT INT TERM
echo
echo "  The example: http://127.0.0.1:${PORT:-8000}/"
echo "  The admin:   http://127.0.0.1:${PORT:-8000}/admin/leek/server/"
echo "  $login"
echo
"$PYTHON" manage.py runserver "127.0.0.1:${PORT:-8000}"
