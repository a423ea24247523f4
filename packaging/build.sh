#!/usr/bin/env bash
# Build a one-folder Parley app into dist/parley (run from anywhere; uses the project's .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
make install
.venv/bin/pip install --quiet "pyinstaller>=6"
.venv/bin/pyinstaller --noconfirm --clean --distpath dist --workpath build/pyinstaller packaging/parley.spec
echo "Built dist/parley/parley. On Linux, install the launcher with:"
echo "  install -Dm644 packaging/parley.desktop ~/.local/share/applications/parley.desktop"
echo "  install -Dm644 desktop_app/resources/parley.png ~/.local/share/icons/hicolor/256x256/apps/parley.png"
