#!/usr/bin/env bash
# Every MNIST, Fashion-MNIST (and toy AND) paper profile on one CUDA device: the estimate
# first, then the run, then the report. Resumable: run it again after a kill and it goes on
# from the last finished epoch and unit. Usage, from the checkout (after `make setup`):
#     bash benchmarks/paper_gpu.sh                        # every such spec
#     bash benchmarks/paper_gpu.sh galloway2018/table1    # some of them
# Environment: DEVICE (cuda), WORKERS (4: processes sharing the device; the exact attacks of
# Khalil et al. run on the CPU cores), STORE (runs/paper.sqlite), CHECKPOINTS
# (runs/paper-checkpoints), REPORT (report-paper), BIN (.venv/bin). The results go to
# results/ (commit them: `git add results`).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
DEVICE="${DEVICE:-cuda}"
WORKERS="${WORKERS:-4}"
STORE="${STORE:-runs/paper.sqlite}"
CHECKPOINTS="${CHECKPOINTS:-runs/paper-checkpoints}"
REPORT="${REPORT:-report-paper}"
SPECS=("$@")
if [ ${#SPECS[@]} -eq 0 ]; then
    SPECS=(galloway2018/table1 galloway2018/table2 galloway2018/table3 galloway2018/table4
           galloway2018/table6 galloway2018/jsma galloway2018/figure2 galloway2018/figure3
           galloway2018/figure4 galloway2018/figure5
           khalil2019/solve_times khalil2019/figure1 khalil2019/figure2_mnist
           khalil2019/figure2_fashion khalil2019/figure3 khalil2019/figure4 khalil2019/figure5
           khalil2019/figure6
           panda2019/table2_mnist panda2019/table3_mnist panda2019/table5 panda2019/table6_mnist
           panda2019/figure4_mnist panda2019/figure5_mnist panda2019/figure6)
fi
OPTIONS=(--profile paper --device "$DEVICE" --store "$STORE" --checkpoints "$CHECKPOINTS")
"$BIN/bnnrobust" reproduce "${SPECS[@]}" "${OPTIONS[@]}" --estimate
"$BIN/bnnrobust" reproduce "${SPECS[@]}" "${OPTIONS[@]}" --workers "$WORKERS" --report "$REPORT"
