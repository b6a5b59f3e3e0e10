#!/usr/bin/env bash
# Installs pymesos (the Mesos backend's scheduler and executor drivers) on Python 3.11.
#
# pymesos 0.3.15 requires http-parser 0.9.0, whose optional C extension is Cython output from 2020 that no
# longer compiles on Python 3.11 (longintrepr.h moved, frame internals changed). The same package ships a
# pure-Python parser (http_parser/pyparser.py) that it uses whenever the extension is absent, as on PyPy.
# So we build http-parser from its own sdist with the extension switched off (the only change: setup.py's
# `run_setup(not IS_PYPY)` becomes `run_setup(False)`), then install pymesos without letting pip try the
# C build again. Nothing of either package's code is changed.
set -euo pipefail
PYTHON=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m pip install --quiet six addict
if ! "$PYTHON" -c 'import http_parser.http' 2>/dev/null; then
    "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: http-parser==0.9.0 -d "$tmp"
    tar -xzf "$tmp"/http-parser-0.9.0.tar.gz -C "$tmp"
    sed -i 's/^    run_setup(not IS_PYPY)$/    run_setup(False)/' "$tmp"/http-parser-0.9.0/setup.py
    grep -q '^    run_setup(False)$' "$tmp"/http-parser-0.9.0/setup.py
    "$PYTHON" -m pip install --quiet --no-deps "$tmp"/http-parser-0.9.0
fi
"$PYTHON" -m pip install --quiet --no-deps pymesos==0.3.15
"$PYTHON" -c 'import pymesos, http_parser.http as h; assert h.HttpParser.__module__ == "http_parser.pyparser"'
echo "pymesos installed (http-parser with its pure-Python parser)"
