# Sourced by the GPU-machine scripts: logs and work folders, the carried stack's environment, and the plugin
# installed fresh from this checkout (files in /tmp last only while the machine is held; recipes ship inside).
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOGS=${OUT:-$REPO/gpu-logs}; mkdir -p "$LOGS"
W=${WORK:-/tmp/r1aqa-work}; mkdir -p "$W"
[ -f /tmp/gpuenv.sh ] && . /tmp/gpuenv.sh
export PYTHONPATH=/tmp/r1aqa-site${PYTHONPATH:+:$PYTHONPATH}
R1AQA="python3 -m r1aqa_plugin.cli"
# The image has no espeak-ng (synthetic-aqa's speech family): use the one stage_espeak.sh packed, when carried
ESPEAK_BUNDLE=${ESPEAK_BUNDLE:-/tmp/gpucarry/c6/espeak}
if ! command -v espeak-ng > /dev/null && [ -x "$ESPEAK_BUNDLE/bin/espeak-ng" ]; then
  export PATH=$ESPEAK_BUNDLE/bin:$PATH
  espeak-ng --version > /dev/null && echo "espeak-ng: the carried one ($ESPEAK_BUNDLE)" \
    || echo "espeak-ng: the carried one ($ESPEAK_BUNDLE) does not run here" >&2
fi

# Once per command: parallel_session.sh installs, then runs the other scripts as children (R1AQA_SITE_READY=1), so
# no child deletes the site another is importing from.
if [ "${R1AQA_SITE_READY:-0}" != 1 ]; then
  rm -rf /tmp/r1aqa-site
  python3 -m pip install -q --no-deps --no-build-isolation --no-index --target /tmp/r1aqa-site "$REPO" \
    > "$LOGS/install.log" 2>&1 || { cat "$LOGS/install.log"; exit 1; }
  export R1AQA_SITE_READY=1
fi
