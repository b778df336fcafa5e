#!/usr/bin/env bash
# Train on this machine, optionally over N virtual CPU devices (the data-parallel code path a
# GPU/TPU host runs), e.g.:
#   DEVICES=8 launch/train_local.sh --config configs/adult_wide_deep.py --workdir /tmp/adult8
# Everything after the script name is passed to `recjax train`.
set -euo pipefail
if [[ -n "${DEVICES:-}" ]]; then
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${DEVICES}"
fi
exec recjax train "$@"
