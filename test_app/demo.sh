#!/bin/sh
# Run the example: migrate, start `manage.py leek --workers 2` in the background, serve the
# page on http://127.0.0.1:${PORT:-8000}/, and stop the leek server (by pid) on the way out.
# PYTHON defaults to the checkout's .venv; LEEK_PORT (default 8002) moves the leek server.
set -eu
cd "$(dirname "$0")"
PYTHON=${PYTHON:-../.venv/bin/python}
"$PYTHON" manage.py migrate --verbosity 0
"$PYTHON" manage.py leek --workers 2 &
leek_pid=$!
trap 'kill -TERM "$leek_pid" 2>/dev/null; wait "$leek_pid" 2>/dev/null || true' EXIT INT TERM
"$PYTHON" manage.py runserver "127.0.0.1:${PORT:-8000}"
