# The in-guest tests' results in KTAP, version 1 (the kernel's
# Documentation/dev-tools/ktap.rst), busybox sh. Sourced by /guest-tests.sh,
# /suite-soak.sh and /init; sourcing it starts the KTAP output:
#
#   KTAP version 1
#   #     TEXT                          a test's diagnostics, before its result
#   ok 1 NAME # 1.2 s                   passed (the time is diagnostic data)
#   not ok 2 NAME                       failed
#   ok 3 NAME # SKIP WHY                skipped
#   # 1 passed, 1 failed, 1 skipped     the end (scripts/qemu-test reads it)
#
# There is no plan line. ktap.rst has the plan follow the version line and
# lets it be omitted where the number of tests is not known in advance, as
# here (it depends on the suite, ONLY and what the initramfs holds). A plan
# as the last line is TAP 13, not KTAP: the kernel's parser
# (tools/testing/kunit/kunit_parser.py, 6.12) reads a "1..N" only right after
# a version line and, met after the results, never gets past it.
# SPDX-License-Identifier: GPL-2.0-only

echo "KTAP version 1"
pass=0
fail=0
skipped=0
ktap_n=0

# ktap_result RESULT NAME [DATA]: the next numbered result line.
ktap_result() {
    ktap_n=$((ktap_n + 1))
    echo "$1 $ktap_n $2${3:+ # $3}"
}

# ktap_ok NAME [DATA], ktap_not_ok NAME, ktap_skip NAME WHY: a test passed,
# failed, was skipped.
ktap_ok() {
    ktap_result ok "$@"
    pass=$((pass + 1))
}

ktap_not_ok() {
    ktap_result "not ok" "$1"
    fail=$((fail + 1))
}

ktap_skip() {
    ktap_result ok "$1" "SKIP $2"
    skipped=$((skipped + 1))
}

# ktap_diag [FILE...]: FILE (or stdin) as diagnostic lines, "#     TEXT".
ktap_diag() {
    sed 's/^/#     /' "$@"
}

# The last line of the output.
ktap_summary() {
    echo "# $pass passed, $fail failed, $skipped skipped"
}
