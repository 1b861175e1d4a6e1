#!/usr/bin/env bash
# Static checks of the layer rules (DESIGN.md's table and the device-generic op layer):
#  1. includes only look down: runtime < autograd < ops < models < optim < io < tools;
#  2. above the backends, nothing touches a tensor's memory: no data<>(), raw_data() or
#     device_data() in the op files (ops/*.cc), models/, optim/ or autograd/ (kernels live in
#     ops/cpu/ and, later, ops/cuda/; values reach the host through the counted reads only).
# Usage: layering_test.sh [repository root]
set -u
root=${1:-$(dirname "$0")/..}
cd "$root" || exit 2
layers=(runtime autograd ops models optim io tools)
failed=0
rank() { for i in "${!layers[@]}"; do [[ ${layers[$i]} == "$1" ]] && echo "$i" && return; done; echo -1; }
for layer in "${layers[@]}"; do
  mine=$(rank "$layer")
  while IFS=: read -r file _ include; do
    target=$(sed -E 's/.*#include "([a-z_]+)\/.*/\1/' <<<"$include")
    theirs=$(rank "$target")
    if (( theirs > mine )); then
      echo "layering: $file includes $target/ (a layer above $layer/): $include"
      failed=$((failed + 1))
    fi
  done < <(grep -n '#include "[a-z_]*/' "$layer"/*.cc "$layer"/*.h 2>/dev/null)
done
while IFS= read -r hit; do
  echo "memory access above the backends: $hit"
  failed=$((failed + 1))
done < <(grep -nE '\.(data<|raw_data\(|device_data\()' ops/*.cc models/*.cc models/*.h optim/*.cc optim/*.h autograd/*.cc autograd/*.h 2>/dev/null)
if (( failed > 0 )); then
  echo "layering: 0 passed, $failed failed"
  exit 1
fi
echo "layering: 2 passed, 0 failed"
