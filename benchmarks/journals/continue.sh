#!/usr/bin/env bash
# Continue the exact-attack issue's measurement where the committed journals stop, in two lanes
# (one per core), each from a worktree at the commit its journal's records name. Every command
# skips the points its journal holds; kill at any moment and run again. Usage, from the repository:
#     bash benchmarks/journals/continue.sh          # starts both lanes in the background
# Progress: runs/lane1.log, runs/lane2.log (git-ignored). It refuses to start while a benchmark
# writes to these journals. Stop, from the repository:
#     pkill -f "bash -c lane"; pkill -f -- "--journal $PWD/benchmarks/journals/"
# and commit benchmarks/journals and benchmarks/checkpoints before the session ends.
set -euo pipefail
MAIN="$(cd "$(dirname "$0")/../.." && pwd)"
# the exact attack's code of the Khalil journals, and certification's of the B64 journal (whose
# start rule and class order changed after; the exact attack toward the second class, as the
# Khalil journals run it, did not: git diff 7c72e2c 6874a32 -- src)
ATTACK=7c72e2c CERTIFY=6874a32
worktree() {
    [ -d "$MAIN/../bench-$1" ] || git -C "$MAIN" worktree add -q "$MAIN/../bench-$1" "$1"
}
worktree $ATTACK
worktree $CERTIFY
# the benchmark scripts are main's (its journal and checkpoint options), the package they
# attack with is a worktree's (PYTHONPATH): the records name its commit; the networks are the
# committed ones (the scripts' --checkpoints default)
export BNNROBUST_DATA="${BNNROBUST_DATA:-$MAIN/../shared/data}"
mkdir -p "$MAIN/runs"
J="$MAIN/benchmarks/journals" PY="$MAIN/.venv/bin/python" B="$MAIN/benchmarks"
# two processes appending to one journal would attack every point twice
if pgrep -f -- "--journal $J/" >/dev/null; then
    echo "a benchmark is writing to $J already (pgrep -af -- '--journal $J/'); stop it first" >&2
    exit 1
fi
NETS="2x100 3x100 2x200 4x100 5x100 2x300 2x400 2x500"
lane1() {
    cd "$MAIN/../bench-$ATTACK"
    export PYTHONPATH="$PWD/src"
    $PY $B/milp_speed.py --models $NETS --eps 0.01 0.005 --backends cpsat-lp \
        --points 20 --journal "$J/networks_cpsat-lp.jsonl"
    (cd "$MAIN/../bench-$CERTIFY" && PYTHONPATH="$PWD/src" \
        $PY $B/galloway_exact.py --points 100 --time-limit 20 --journal "$J/b64.jsonl")
    # the paper's limit on its 100 points: 0-62 here, 80-99, 68-79 and 63-67 in lane 2 (the
    # split was 72 until session 19, then 80; session 21 found lane 2's 80-99 done and lane 1
    # at 56, so lane 2 took 68-79, then 63-67, where no point had run, into journals of their
    # own)
    $PY $B/milp_speed.py --models 2x200 --eps 0.01 --backends cpsat-lp --points 63 \
        --time-limit 1800 --journal "$J/networks_1800s.jsonl"
}
lane2() {
    cd "$MAIN/../bench-$ATTACK"
    export PYTHONPATH="$PWD/src"
    $PY $B/milp_speed.py --models 2x200 --eps 0.01 --backends cpsat-lp highs \
        --points 100 --time-limit 30 --journal "$J/soundness_30s.jsonl"
    $PY $B/milp_speed.py --models 2x500 2x400 2x300 5x100 4x100 2x200 3x100 2x100 \
        --eps 0.01 0.005 --backends highs --points 20 --journal "$J/networks_highs.jsonl"
    $PY $B/milp_speed.py --models 2x200 --eps 0.01 --backends cpsat-lp --points 100 --start 80 \
        --time-limit 1800 --journal "$J/networks_1800s_b.jsonl"
    $PY $B/milp_speed.py --models 2x200 --eps 0.01 --backends cpsat-lp --points 80 --start 68 \
        --time-limit 1800 --journal "$J/networks_1800s_c.jsonl"
    $PY $B/milp_speed.py --models 2x200 --eps 0.01 --backends cpsat-lp --points 67 --start 63 \
        --time-limit 1800 --journal "$J/networks_1800s_d.jsonl"
    $PY $B/milp_speed.py --models 2x200 --eps 0.01 --backends cpsat-lp --points 68 --start 67 \
        --time-limit 1800 --journal "$J/networks_1800s_e.jsonl"
}
# one core each (taskset, where there is one), so that neither lane's times depend on the other
PIN0="" PIN1=""
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then PIN0="taskset -c 0" PIN1="taskset -c 1"; fi
export -f lane1 lane2
export MAIN ATTACK CERTIFY J PY B NETS
($PIN0 bash -c lane1 >> "$MAIN/runs/lane1.log" 2>&1 &)
($PIN1 bash -c lane2 >> "$MAIN/runs/lane2.log" 2>&1 &)
echo "lanes started: tail -f $MAIN/runs/lane1.log $MAIN/runs/lane2.log"
