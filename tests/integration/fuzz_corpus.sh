#!/bin/bash
# Every fuzz harness over its corpus (tests/fuzz/corpus/<name>/): no crash,
# no sanitizer report. The coverage-guided runs are `make fuzz` (clang).
set -eu
ran=0
for f in "$BUILD"/tests/fuzz_*; do
    [ -x "$f" ] || continue
    name=$(basename "$f"); name=${name#fuzz_}
    dir=$(dirname "$0")/../fuzz/corpus/$name
    [ -d "$dir" ] || { echo "no corpus for $name"; exit 1; }
    "$f" "$dir"/*
    ran=$((ran + 1))
done
[ $ran -gt 0 ] || { echo "no fuzz harness built"; exit 77; }
