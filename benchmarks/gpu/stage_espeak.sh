#!/usr/bin/env bash
# Pack this machine's espeak-ng for the GPU machine, whose image has none and cannot install one, so that the
# learning proof can build synthetic-aqa's speech family there (spoken_digit, spoken_language).
#
#   bash benchmarks/gpu/stage_espeak.sh [DEST]     # default .gpu-carry/c6/espeak (carried with the last chunk)
#
# DEST holds the real binary, every shared library it loads (glibc and the dynamic loader included, so the host's
# glibc version does not matter), espeak-ng-data, and bin/espeak-ng: a wrapper that runs the binary through the
# carried loader with ESPEAK_DATA_PATH set. benchmarks/gpu/session_env.sh (sourced by parallel_session.sh) puts
# DEST/bin on PATH when it finds it (ESPEAK_BUNDLE, default /tmp/gpucarry/c6/espeak). Needs `apt-get install
# espeak-ng` here first.
set -euo pipefail
DEST=${1:-.gpu-carry/c6/espeak}
BIN=$(command -v espeak-ng) || { echo "espeak-ng is not on PATH here: apt-get install espeak-ng" >&2; exit 1; }
BIN=$(readlink -f "$BIN")
DATA=$(espeak-ng --version | sed -n 's/.*Data at: *//p')
[ -f "$DATA/phontab" ] || { echo "espeak-ng-data not found (espeak-ng --version says '$DATA')" >&2; exit 1; }
rm -rf "$DEST"; mkdir -p "$DEST/real" "$DEST/lib" "$DEST/bin"
cp "$BIN" "$DEST/real/espeak-ng"
# every library the loader resolves, by its real file under its soname (ldd: "name => path (addr)" or "/path (addr)")
LIBS=$(ldd "$BIN")
awk '/=>/ && $3 ~ /^\// {print $1, $3} !/=>/ && $1 ~ /^\// {print $1, $1}' <<< "$LIBS" |
  while read -r name path; do cp -L "$path" "$DEST/lib/$(basename "$name")"; done
LOADER=$(awk '!/=>/ && $1 ~ /^\// {print $1}' <<< "$LIBS")
[ -f "$DEST/lib/$(basename "$LOADER")" ] || { echo "no dynamic loader in ldd's output" >&2; exit 1; }
cp -r "$DATA" "$DEST/espeak-ng-data"
cat > "$DEST/bin/espeak-ng" <<EOF
#!/bin/sh
# espeak-ng carried by benchmarks/gpu/stage_espeak.sh: its own loader, libraries and data
d=\$(dirname "\$(readlink -f "\$0")")/..
ESPEAK_DATA_PATH="\$d" exec "\$d/lib/$(basename "$LOADER")" --library-path "\$d/lib" "\$d/real/espeak-ng" "\$@"
EOF
chmod +x "$DEST/bin/espeak-ng"
"$DEST/bin/espeak-ng" --version > /dev/null
echo "espeak-ng $(espeak-ng --version | awk '{print $4}') -> $DEST ($(du -sh "$DEST" | cut -f1)," \
     "$(ls "$DEST/lib" | wc -l) libraries)"
