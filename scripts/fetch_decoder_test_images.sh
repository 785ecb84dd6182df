#!/usr/bin/env bash
# Pillow's own decoder regression images (Tests/images of the installed Pillow's sdist) into
# .cache/decoder-test-images, for the hostile-input tests (tests/pipelines/hostile_corpus.py uses
# them when present; nothing is downloaded at test time). Idempotent; a failure only warns.
set -uo pipefail
VENV=${1:-.venv}
DEST=.cache/decoder-test-images
[ -f "$DEST/.complete" ] && exit 0
VERSION=$("$VENV/bin/python" -c "import PIL; print(PIL.__version__)") || exit 0
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if ! "$VENV/bin/pip" download -q --no-binary :all: --no-deps "pillow==$VERSION" -d "$TMP"; then
    echo "warning: could not fetch Pillow $VERSION's sdist; hostile-input tests run without its Tests/images" >&2
    exit 0
fi
mkdir -p "$DEST"
tar -xzf "$TMP"/pillow-*.tar.gz -C "$TMP" --wildcards '*/Tests/images/*'
cp -r "$TMP"/pillow-*/Tests/images/. "$DEST"/
touch "$DEST/.complete"
