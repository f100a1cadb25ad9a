# The example service in the qemu guest: sourced by scripts/qemu/guest-tests.sh
# (scripts/qemu-test copies every services/NAME/tests/guest.sh into the
# initramfs as /services/NAME.sh), after the helper tests, with kgpu.ko
# loaded and no helper attached. KGPU_DEFINE_ONLY=1: define the tests only
# (the ivshmem suite runs them with the host's helper).
# SPDX-License-Identifier: GPL-2.0-only

EX=$D/example

# example_run ARGS: one command; its report goes to the test's output and
# its first line to the record.
example_run() {
    echo "$*" > $EX || return 1
    cat $EX
    head -n1 $EX >> /tmp/t.info
    grep -q 'result: PASS' $EX
}

example_field() {
    sed -n "s/.*[ :]$1=\([0-9]*\).*/\1/p" $EX | head -n1
}

# Without a helper every request takes the kernel half's CPU path.
test_example_no_helper() {
    expect_eq state "$(stat_of state)" detached || return 1
    example_run 50 4096 || return 1
    expect_eq helper "$(example_field helper)" 0 && expect_eq cpu "$(example_field cpu)" 50
}

# Through the ring: every answer from the helper, and the kernel's counters
# for the service agree.
test_example_helper() {
    start_server $(helper_cmd) || return 1
    before=$(svc_col example ok)
    example_run 400 4096 || return 1
    example_run 20 262144 || return 1
    expect_eq cpu "$(example_field cpu)" 0 || return 1
    expect_eq "example ok" "$(svc_col example ok)" $((before + 420)) || return 1
    grep -E '^(service|example) ' $D/stats >> /tmp/t.info
}

# Bad commands are refused with EINVAL and a usage line.
test_example_bad_commands() {
    for bad in "" "0" "5 6" "5 0" "5 524288" "x" "5 4096 7"; do
        if echo "$bad" > $EX 2>/dev/null; then
            echo "'$bad' was accepted"
            return 1
        fi
    done
    grep -q usage: $EX
}

# What the ivshmem suite runs with the host's helper (on a GPU machine, every
# answer must come from the GPU): NAME:SERVICE:FUNCTION.
SERVICE_E2E="${SERVICE_E2E:-} example_helper_roundtrip:example:test_example_helper"

if [ -z "${KGPU_DEFINE_ONLY:-}" ]; then
    t example_no_helper_cpu_path test_example_no_helper
    t example_bad_commands_refused test_example_bad_commands
    if [ -n "$HAVE_HELPER" ]; then
        t example_helper_roundtrip test_example_helper
    else
        skip example_helper "kgpu-helper not built"
    fi
fi
