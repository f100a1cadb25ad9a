# The hostile-helper suite (kgpu_suite=hostile, KGPU_SUITE=hostile): the
# attach checks, the misbehaving stand-ins and the fallback to a well-behaved
# one, and the final checks. A quick run of what docs/SECURITY.md quotes,
# e.g. under the debug (KASAN) kernel.
# SPDX-License-Identifier: GPL-2.0-only

KGPU_DEFINE_ONLY=1
. /guest-tests.sh
KGPU_DEFINE_ONLY=

t module_load test_load
t non_root_refused test_nonroot
t attach_validation test_attach_errors
t selftest_detects_wrong_data test_selftest_detects_wrong_data
t hostile_completions_ignored test_hostile_completions
t hostile_random_writes test_hostile_random
t hostile_records_raced test_hostile_race
t hostile_index_jumps test_hostile_jumps
t hostile_header_overwritten test_hostile_header
t corrupt_ring_fails_safely test_corrupt_ring
t standin_killed_mid_run test_kill_standin
stop_server >/dev/null 2>&1
t module_unload test_unload
t no_kmemleak_reports test_no_leaks
t dmesg_clean test_dmesg_clean

ktap_summary
