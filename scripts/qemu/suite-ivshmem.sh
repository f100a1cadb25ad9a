# The ivshmem suite (kgpu_suite=ivshmem, KGPU_SUITE=ivshmem; scripts/gpu-e2e
# on a GPU machine): kgpu.ko takes its region from an ivshmem device whose
# memory is a file on the VM's host, and kgpu-helper serves it from the host
# (`serve --ivshmem FILE`): with its CUDA backend on a GPU machine, with its
# CPU backend in CI. The guest cannot signal the host's processes, so it asks
# the host on the console ("KGPU-HOST: kill-helper", "start-helper",
# "stop-helper"); scripts/qemu-test acts on those lines.
#
# The work is forced onto the helper: gaes at priority 1000 (above every
# AES-NI and VAES driver) with no small-request path, gpq at threshold 0, and
# on the host the helper's GPU crossover at 0 (KGPU_GPU_MIN_BYTES=0).
# KGPU_E2E_BACKEND (cuda or cpu, on the kernel command line) says which
# backend the host runs: with cuda every data test must find answers computed
# by the GPU in the kernel's per-backend counters.
# SPDX-License-Identifier: GPL-2.0-only

KGPU_DEFINE_ONLY=1
. /guest-tests.sh
. /tests-gaes.sh
. /tests-gpq.sh
for f in /services/*.sh; do [ -f "$f" ] && . "$f"; done
KGPU_DEFINE_ONLY=
HAVE_HELPER=1
E2E_BACKEND=${KGPU_E2E_BACKEND:-cpu}
# The helper is a process on a host that also runs this guest's vCPUs: a
# 5 s heartbeat bound, so a busy host is not taken for a dead helper.
KGPU_INSMOD_ARGS="transport=ivshmem heartbeat_timeout_ms=$((5000 * SLOW)) gaes_priority=1000 gaes_cpu_max_bytes=0 gpq_threshold=0 gpq_spin_us=100000 gpq_wake_us=20000"
# IVSHMEM_QUICK=1 (`make test-ivshmem`, in `make test`): the transport's own
# tests and one of each data path; the full list runs on the GPU machine.
if [ "${IVSHMEM_QUICK:-0}" = 1 ]; then
    ONLY="module_* ivshmem_* gaes_proc_crypto_* gaes_dmcrypt_xts_cross_read gaes_dmcrypt_helper_killed
gpq_md_raid6_write_check gpq_md_helper_killed_in_resync gpq_md_teardown no_kmemleak_* dmesg_clean"
    for e in $SERVICE_E2E; do ONLY="$ONLY ${e%%:*}"; done
fi
# A helper starting on the host (CUDA initialisation, the first NVRTC
# compile) may take a while before it offers the region.
ATTACH_WAIT_S=${KGPU_ATTACH_WAIT_S:-180}

# host WORDS: a request to the host, on the console.
host() {
    echo "KGPU-HOST: $*" > /dev/console
}

# The tests of the other suites start a helper with start_server and kill it
# with `kill -9 $SERVER_PID`. Here the helper is the host's: start_server
# asks for one unless one is attached, and stands a guest process in for it
# (SERVER_PID); `kill -9` of that process asks the host to SIGKILL the helper.
# Between tests the helper stays (stop_server only ends the stand-in).
start_server() {
    if [ "$(stat_of state)" != attached ]; then
        wait_state detached 30 || return 1
        host start-helper
        wait_state attached $ATTACH_WAIT_S || return 1
    fi
    expect_eq transport "$(stat_of transport)" ivshmem || return 1
    sleep 100000 &
    SERVER_PID=$!
}

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    command kill -9 "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=
}

kill() {
    if [ "$1" = -9 ] && [ -n "$SERVER_PID" ] && [ "$2" = "$SERVER_PID" ]; then
        host kill-helper
        command kill -9 "$2"
        return 0
    fi
    command kill "$@"
}

# The small-request path stays off.
gaes_defaults() {
    echo 0 > $P/gaes_cpu_max_bytes
    echo $GAES_WINDOW_US > $P/gaes_window_us
    echo 256 > $P/gaes_batch_reqs
}

# svc_col SERVICE COLUMN: a column of the module's per-service counters.
# gpu_note SERVICES...: what the helper computed since the module was loaded,
# by backend, for the record; with the CUDA backend (and its crossover at 0)
# every answer of the services named must have come from the GPU (echo runs
# on the helper's CPU by design).
gpu_note() {
    line=
    for s in $(awk '$1 == "service" { rows = 1; next } rows && $1 != "other" { print $1 }' $D/stats); do
        line="$line $s ok=$(svc_col $s ok) gpu_ok=$(svc_col $s gpu_ok) gpu_bytes=$(svc_col $s gpu_bytes);"
    done
    echo "kernel counters since load:$line" >> /tmp/t.info
    [ "$E2E_BACKEND" = cuda ] || return 0
    for s in "$@"; do
        [ "$(svc_col $s gpu_ok)" -gt 0 ] && [ "$(svc_col $s gpu_ok)" = "$(svc_col $s ok)" ] \
            || { echo "$s: not every answer computed on the GPU"; cat $D/stats; return 1; }
    done
}

# e2e NAME SERVICES FUNCTION: a test, then gpu_note SERVICES.
e2e() {
    name=$1 svcs=$2
    shift 2
    t "$name" e2e_run "$svcs" "$@"
}

e2e_run() {
    svcs=$1
    shift
    "$@" && gpu_note $svcs
}

# ---- the load-time choice --------------------------------------------------

# With the host's helper: what it published (CUDA: its GPU path's figures;
# the CPU backend: none), the decisions each service logged from them and
# this guest's own timings (under TCG: emulated, slow CPU code), each
# consistent with the cost model; dm-crypt under `auto` follows gaes's.
test_ivs_policy() {
    start_server || return 1
    dmesg | grep -E 'kgpu: (copies|gaes: [a-z]+\(aes\): [cg]pu|gpq: raid6: [cg]pu)' | tail -n 10 \
        | sed 's/^\[[ 0-9.]*\] //' >> /tmp/t.info
    gaes_decisions_check || return 1
    line=$(sed -n 's/^decision: //p' $D/gpq)
    decision_check "$line" || return 1
    echo "    gpq: $line" >> /tmp/t.info
    if [ "$E2E_BACKEND" = cuda ]; then
        [ "$d_gpu_mbps" -gt 0 ] || { echo "the CUDA helper published no GPU path"; return 1; }
    else
        expect_eq "gpu figures of a CPU helper" "$d_gpu_mbps" 0 || return 1
    fi
    echo auto > $P/gaes_policy
    policy_follows "auto, the host's helper"
    r=$?
    echo gpu > $P/gaes_policy
    return $r
}

# ---- the transport --------------------------------------------------------

test_ivs_load() {
    echo clear > /sys/kernel/debug/kmemleak 2>/dev/null
    insmod /kgpu.ko || return 1
    expect_eq transport_param "$(stat_of transport_param)" ivshmem || return 1
    [ "$(stat_of ivshmem_bar_bytes)" -ge $((1 << 20)) ] || { cat $D/stats; return 1; }
    dmesg | grep 'kgpu' | grep -i ivshmem | sed 's/^\[[ 0-9.]*\] //' | head -n 3 >> /tmp/t.info
}

test_ivs_attach() {
    start_server || return 1
    dmesg | grep 'kgpu: helper .* attached (ivshmem)' | tail -n1 | sed 's/^\[[ 0-9.]*\] //' >> /tmp/t.info
    # /dev/kgpu refuses a region of its own: there is one transport.
    out=$($KTEST attach-one 2>&1)
    echo "$out" | grep -q 'errno 95' || { echo "attach through /dev/kgpu: $out"; return 1; }
    expect_eq transport "$(stat_of transport)" ivshmem
}

test_ivs_selftest() {
    start_server || return 1
    selftest "$@" || return 1
    grep -q 'result: PASS' $D/selftest
}

# The helper SIGKILLed on the host: the module notices the stopped heartbeat,
# detaches, and requests fail fast to the CPU path; a new helper attaches.
test_ivs_kill_restart() {
    start_server || return 1
    s0=$(stat_of stalls)
    kill -9 "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=
    wait_state detached 30 || return 1
    dmesg | grep -q 'kgpu: helper .* detached (ivshmem: its heartbeat stopped)' || { dmesg | tail; return 1; }
    selftest echo 200 || return 1
    expect_eq nohelper "$(field nohelper)" 200 || return 1
    start_server || return 1
    selftest echo 2000 32 && grep -q 'result: PASS' $D/selftest || return 1
    echo "killed: detached after $(( $(stat_of stalls) - s0 )) stall(s); a new helper attached and served 2000 requests" >> /tmp/t.info
}

# SIGTERM on the host: the helper finishes, says it left, the module detaches
# at once (no heartbeat wait).
test_ivs_graceful_stop() {
    start_server || return 1
    stop_server
    host stop-helper
    wait_state detached 10 || return 1
    dmesg | grep -q 'kgpu: helper .* detached (ivshmem: it left)' || { dmesg | tail; return 1; }
    start_server
}

# The module unloaded and loaded again: the same helper offers again.
test_ivs_reload() {
    start_server || return 1
    pid=$(stat_of helper_pid)
    stop_server
    rmmod kgpu || return 1
    insmod /kgpu.ko || return 1
    wait_state attached 30 || return 1
    expect_eq "helper pid after the reload" "$(stat_of helper_pid)" "$pid" || return 1
    selftest echo 1000 16 && grep -q 'result: PASS' $D/selftest
}

test_ivs_kill_mid_selftest() {
    kill_mid_run
}

# Every mode written through gaes dm-crypt, read back with kgpu unloaded
# through the kernel's own ciphers.
test_ivs_dm_unloaded() {
    start_server || return 1
    dm_setup 10 || { dm_teardown; return 1; }
    set -- xts capi:gaes_xts-plain64 aes-xts-plain64 64 \
        xts4k capi:gaes_xts-plain64 aes-xts-plain64 64 \
        ctr capi:gaes_ctr-plain64 'capi:ctr(aes)-plain64' 32 \
        cbc capi:gaes_cbc-plain64 aes-cbc-plain64 32 \
        ecb capi:gaes_ecb aes-ecb 16
    echo reset > $D/gaes
    r=0 modes=
    while [ $# -ge 4 ]; do
        m=$1 g=$2 key=$(hexkey $4)
        opts=
        [ $m = xts4k ] && opts=sector_size:4096
        dd if=/dev/urandom of=/tmp/ivs-$m bs=1M count=2 2>/dev/null
        echo "$m $3 $key $opts" >> /tmp/ivs-keys
        dm_write "$g" $key /tmp/ivs-$m "$opts" || { echo "$m: write failed"; r=1; break; }
        cp $DISK /tmp/ivs-disk-$m
        modes="$modes $m"
        shift 4
    done
    gpu=$(gstat gpu_requests $D/gaes)
    helper_failed=$(gstat helper_failed $D/gaes)
    aes_gpu=$(svc_col aes gpu_ok) aes_gpu_bytes=$(svc_col aes gpu_bytes) aes_ok=$(svc_col aes ok)
    stop_server
    rmmod kgpu || r=1
    if [ $r = 0 ]; then
        grep -q gaes_ /proc/crypto && { echo "gaes still registered"; r=1; }
        while read m spec key opts; do
            [ $r = 0 ] || break
            cp /tmp/ivs-disk-$m $DISK
            dm_read "$spec" $key /tmp/gaes-back "$opts" || { r=1; break; }
            head -c 2097152 /tmp/gaes-back | cmp - /tmp/ivs-$m || { echo "$m: reads back wrong through $spec"; r=1; }
        done < /tmp/ivs-keys
    fi
    dm_teardown
    rm -f /tmp/ivs-* /tmp/gaes-back
    insmod /kgpu.ko || return 1
    [ $r = 0 ] || return 1
    expect_eq helper_failed "$helper_failed" 0 || return 1
    echo "modes$modes: written through gaes (gpu_requests=$gpu; kernel aes ok=$aes_ok gpu_ok=$aes_gpu gpu_bytes=$aes_gpu_bytes), read back with kgpu unloaded" >> /tmp/t.info
    [ "$E2E_BACKEND" != cuda ] || { [ "$aes_gpu" -gt 0 ] && [ "$aes_gpu" = "$aes_ok" ]; } \
        || { echo "not every AES answer from the GPU"; return 1; }
    wait_state attached 30
}

# ---- run ----------------------------------------------------------------------

echo "kgpu-guest: ivshmem suite, host backend $E2E_BACKEND"
t module_load test_ivs_load
t ivshmem_attached test_ivs_attach
e2e ivshmem_selftest_echo "" test_ivs_selftest echo 5000 32 16384
e2e ivshmem_selftest_aes aes test_ivs_selftest aes 3000 32 4096
e2e ivshmem_selftest_aes_parallel aes test_ivs_selftest aes 4000 32 4096 par=4
e2e ivshmem_selftest_raid6 raid6 test_ivs_selftest raid6 1000 16
e2e ivshmem_nosleep_spinning_calls raid6 test_helper_nosleep
# Each service's own round trip (services/NAME/tests/guest.sh adds
# NAME:SERVICE:FUNCTION to SERVICE_E2E).
for e in $SERVICE_E2E; do
    rest=${e#*:}
    e2e "${e%%:*}" "${rest%%:*}" "${rest#*:}"
done
t ivshmem_helper_killed_then_restarted test_ivs_kill_restart
t ivshmem_helper_stopped_gracefully test_ivs_graceful_stop
t ivshmem_module_reload_reattaches test_ivs_reload
t ivshmem_helper_killed_mid_selftest test_ivs_kill_mid_selftest
# tests-gaes.sh and tests-gpq.sh both name their debugfs file G.
G=$D/gaes
e2e gaes_proc_crypto_selftest_passed "" test_gaes_proc_crypto
e2e gaes_afalg_vs_generic_helper aes test_gaes_afalg_helper
e2e gaes_testmgr_with_helper aes test_gaes_selftest_helper
e2e gaes_dmcrypt_xts_cross_read aes test_gaes_dm_xts
e2e gaes_dmcrypt_xts_4k_cross_read aes test_gaes_dm_xts_4k
e2e gaes_dmcrypt_ctr_cross_read aes test_gaes_dm_ctr
e2e gaes_dmcrypt_cbc_cross_read aes test_gaes_dm_cbc
e2e gaes_dmcrypt_ecb_cross_read aes test_gaes_dm_ecb
t ivshmem_dmcrypt_all_modes_read_unloaded test_ivs_dm_unloaded
e2e gaes_dmcrypt_helper_killed aes test_gaes_dm_helper_killed
t ivshmem_policy_auto_decides test_ivs_policy
G=$D/gpq
e2e gpq_md_raid6_write_check raid6 test_md_create_check
e2e gpq_md_two_failed_reads raid6 test_md_two_failed
e2e gpq_md_readd_resync_check raid6 test_md_readd_resync
e2e gpq_md_rmw_xor_syndrome raid6 test_md_rmw
e2e gpq_md_concurrent_spinners_bounded raid6 test_md_concurrent_spinners
t gpq_md_helper_killed_in_resync test_md_helper_killed_in_resync
t gpq_md_teardown test_md_teardown
stop_server >/dev/null 2>&1
echo "kgpu-guest: module counters at the end:"
ktap_diag $D/stats
t module_unload test_unload
t no_kmemleak_reports test_no_leaks
t dmesg_clean test_dmesg_clean

ktap_summary
