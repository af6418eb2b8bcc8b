#!/bin/bash
# Issue 10's benchmark: a real guest's launch with one NIC beside one without (added time
# < 50 ms), beside raw `virsh create` of the same domains; see bench_launch_nic.py.
# Usage: bench-launch-nic.sh BUILD_DIR [N]
exec "${PYTHON:-$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3 )}" "$(dirname "$0")/bench_launch_nic.py" "$@"
