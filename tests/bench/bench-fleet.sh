#!/bin/bash
# Issue 4's benchmark (Kafka vs REST round trips; 50 agents vs one Placement).
exec "${PYTHON:-$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3 )}" "$(dirname "$0")/bench_fleet.py" "$@"
