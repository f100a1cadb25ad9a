# In-guest tests of the kgpu module (busybox sh). Run by /init in the test
# initramfs built by scripts/qemu-test. Prints KTAP (/ktap.sh): an "ok N name"
# / "not ok N name" / "ok N name # SKIP why" line per test, each after its
# diagnostic lines, and a final "# N passed, N failed, N skipped" line.
# SPDX-License-Identifier: GPL-2.0-only

D=/sys/kernel/debug/kgpu
P=/sys/module/kgpu/parameters
KTEST=/bin/kgpu-ktest
HELPER=/bin/kgpu-helper
# SLOW: how much slower than the plain test kernel this guest runs (kgpu_slow=N
# on the kernel command line; the debug kernel's KASAN under TCG is ~10x).
# The module's latency knobs (helper heartbeat, gaes batching window) scale
# with it at every insmod; the tests that shorten them restore the scaled value.
SLOW=${kgpu_slow:-1}
HEARTBEAT_MS=$((2000 * SLOW))
GAES_WINDOW_US=$((200 * SLOW))
SLOW_ARGS=
[ "$SLOW" -gt 1 ] && SLOW_ARGS="heartbeat_timeout_ms=$HEARTBEAT_MS gaes_window_us=$GAES_WINDOW_US"

# gaes drivers whose crypto-manager self-test has not finished: 6.12 runs the
# tests after registration, asynchronously (with the debug kernel's extra fuzz
# tests under TCG, for minutes).
crypto_untested() {
    awk '$1 == "driver" { d = $3 } $1 == "selftest" && d ~ /^gaes_/ && $3 == "unknown" { n++ } END { print n + 0 }' /proc/crypto
}

# Every insmod of kgpu waits for the self-tests of its algorithms, so that no
# test uses (or unloads) a driver that the crypto manager is still testing.
# KGPU_INSMOD_ARGS (set by a suite): parameters for every load of kgpu.
# Every load also forces gaes_policy=gpu (before the test's own arguments,
# which may say otherwise): the tests' helper is a CPU backend that publishes
# no GPU figures, so under the default `auto` gaes would keep every request on
# the kernel's CPU code and the data-path tests would test nothing. The
# policy tests set `auto` themselves.
insmod() {
    ko=$1
    shift
    command insmod "$ko" gaes_policy=gpu "$@" $SLOW_ARGS ${KGPU_INSMOD_ARGS:-} || return
    i=0
    while [ "$(crypto_untested)" != 0 ]; do
        if [ $i -ge $((1200 * SLOW)) ]; then
            echo "insmod: gaes self-tests still running after $((i / 10)) s"
            return 1
        fi
        sleep 0.1
        i=$((i + 1))
    done
}
. /ktap.sh

# ONLY (set by a suite that sources this file, e.g. suite-debug.sh): a
# space-separated list of glob patterns; tests whose name matches none are not
# run, counted or numbered.
t() {
    name=$1
    shift
    if [ -n "${ONLY:-}" ]; then
        wanted=
        set -f
        for pat in $ONLY; do
            case $name in $pat) wanted=1 ;; esac
        done
        set +f
        [ -n "$wanted" ] || return 0
    fi
    start=$(cut -d' ' -f1 /proc/uptime)
    rm -f /tmp/t.info
    if "$@" >/tmp/t.out 2>&1; then
        [ -f /tmp/t.info ] && ktap_diag /tmp/t.info
        ktap_ok "$name" "$(awk -v s="$start" '{printf "%.1f", $1 - s}' /proc/uptime) s"
    else
        ktap_diag /tmp/t.out
        ktap_not_ok "$name"
    fi
    # No test leaves a helper behind for the next one.
    stop_server >/dev/null 2>&1
}

# skip NAME WHY
skip() {
    ktap_skip "$1" "$2"
}

# field NAME: the value of NAME=... in the last self-test report.
field() {
    sed -n "s/.*[ :]$1=\([0-9]*\).*/\1/p" $D/selftest | head -n1
}

stat_of() {
    sed -n "s/^$1: //p" $D/stats
}

# svc_col SERVICE COLUMN: one column of a service's row in the statistics.
svc_col() {
    awk -v s="$1" -v c="$2" '$1 == "service" { for (i = 1; i <= NF; i++) col[$i] = i }
        $1 == s && col[c] { print $col[c] }' $D/stats
}

selftest() {
    echo "$*" > $D/selftest || return 1
    cat $D/selftest
    head -n1 $D/selftest >> /tmp/t.info
}

# wait_state STATE [SECONDS]: until the module's state is STATE (default 10 s).
wait_state() {
    i=0
    while [ $i -lt $((${2:-10} * 20)) ]; do
        [ "$(stat_of state)" = "$1" ] && return 0
        sleep 0.05
        i=$((i + 1))
    done
    echo "state is '$(stat_of state)' after ${2:-10} s, wanted '$1'"
    return 1
}

# Starts a serving peer in the background ($SERVER_PID); "$@" is its command.
start_server() {
    expect_eq "state before starting a helper" "$(stat_of state)" detached || return 1
    "$@" >/tmp/server.log 2>&1 &
    SERVER_PID=$!
    wait_state attached || { cat /tmp/server.log; return 1; }
    expect_eq "attached helper" "$(stat_of helper_pid)" "$SERVER_PID"
}

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill -9 "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=
    wait_state detached
}

# decision_check TEXT: TEXT is a debugfs decision line after its name
# ("gpu G threshold T cpu_mbps ... reason R"); recomputes the cost model
# (common/src/cost.rs) from the inputs the line gives and fails, saying
# what differs, unless the numbers and the reason are what they give.
# Leaves the pairs in d_NAME variables.
decision_check() {
    set -- $1
    while [ $# -ge 2 ]; do
        case $1 in
        gpu | threshold | cpu_mbps | copy_mbps | copy_num | copy_den | gpu_mbps | rtt_ns | crossover | at | cpu_ns | gpu_cpu_ns | gpu_latency_ns | reason) eval "d_$1=\$2" ;;
        *) echo "decision: unknown field $1"; return 1 ;;
        esac
        shift 2
    done
    [ -n "$d_reason" ] && [ -n "$d_at" ] || { echo "decision: incomplete line"; return 1; }
    if [ "$d_gpu_mbps" = 0 ]; then
        want=no_gpu_path
    elif [ "$d_cpu_mbps" = 0 ] || [ "$d_copy_mbps" = 0 ] || [ "$d_copy_den" = 0 ]; then
        want=bad_inputs
    else
        cpu=$(( (d_at * 1000 + d_cpu_mbps - 1) / d_cpu_mbps ))
        copied=$(( d_at * d_copy_num / d_copy_den ))
        copy=$(( (copied * 1000 + d_copy_mbps - 1) / d_copy_mbps ))
        xfer=$(( (d_at * 1000 + d_gpu_mbps - 1) / d_gpu_mbps ))
        gcpu=$((copy + xfer))
        lat=$((d_rtt_ns + xfer + copy))
        expect_eq "cpu_ns of $d_at B at $d_cpu_mbps MB/s" "$d_cpu_ns" "$cpu" || return 1
        expect_eq "gpu path cpu_ns" "$d_gpu_cpu_ns" "$gcpu" || return 1
        expect_eq "gpu path latency" "$d_gpu_latency_ns" "$lat" || return 1
        if [ "$d_at" -lt "$d_crossover" ]; then
            want=below_crossover
        elif [ $gcpu -ge $cpu ]; then
            want=costs_more_cpu
        elif [ $lat -gt $cpu ]; then
            want=slower
        else
            want=gpu
        fi
    fi
    expect_eq "reason at $d_at B" "$d_reason" "$want"
}

expect_eq() {
    [ "$2" = "$3" ] && return 0
    echo "$1: got '$2', wanted '$3'"
    return 1
}

# ---- tests --------------------------------------------------------------------

test_load() {
    echo clear > /sys/kernel/debug/kmemleak 2>/dev/null
    insmod /kgpu.ko || return 1
    dmesg | grep -q 'kgpu: /dev/kgpu ready' || { dmesg | tail; return 1; }
    [ -d $D ] && [ -r $P/sync_timeout_ms ]
}

test_node() {
    [ -c /dev/kgpu ] || { echo "/dev/kgpu missing"; return 1; }
    expect_eq mode "$(stat -c %a /dev/kgpu)" 600 && expect_eq owner "$(stat -c %u /dev/kgpu)" 0
}

test_open_twice() {
    $KTEST open-twice
}

test_nonroot() {
    $KTEST open-as-nobody || return 1
    # Even with the node opened up, the module itself refuses non-admins.
    chmod 666 /dev/kgpu
    $KTEST open-as-nobody
    r=$?
    chmod 600 /dev/kgpu
    return $r
}

test_attach_errors() {
    $KTEST attach-errors && [ "$(stat_of state)" = detached ]
}

test_no_helper() {
    selftest echo 200 || return 1
    expect_eq nohelper "$(field nohelper)" 200 && expect_eq ok "$(field ok)" 0 \
        && expect_eq outstanding "$(field outstanding)" 0
}

test_echo_standin() {
    start_server $KTEST serve echo || return 1
    selftest echo 5000 32 16384 || return 1
    grep -q 'result: PASS' $D/selftest || return 1
    expect_eq in_flight "$(stat_of in_flight)" 0 && stop_server
}

test_parallel_standin() {
    # Four submitting threads racing on the rings, the slot table and the
    # allocator, with the doorbell and the poll reaping concurrently.
    start_server $KTEST serve echo || return 1
    selftest echo 20000 64 4096 par=4 || return 1
    grep -q 'result: PASS' $D/selftest && expect_eq in_flight "$(stat_of in_flight)" 0
}

test_error_status_propagates() {
    # The stand-in only knows ECHO: AES requests come back with an error.
    start_server $KTEST serve echo || return 1
    selftest aes 100 || return 1
    expect_eq failed "$(field failed)" 100 && expect_eq mismatches "$(field mismatches)" 0 \
        && grep -q 'result: FAIL' $D/selftest
}

test_selftest_detects_wrong_data() {
    start_server $KTEST serve wrongdata || return 1
    selftest echo 300 || return 1
    stop_server || return 1
    grep -q 'result: FAIL' $D/selftest && [ "$(field mismatches)" -gt 0 ]
}

# figure NAME: NAME=... from the stand-in's last "figures" line.
figure() {
    grep 'figures' /tmp/server.log | tail -n1 | sed -n "s/.* $1=\([0-9]*\).*/\1/p"
}

test_hostile_completions() {
    before=$(stat_of bad_completions)
    start_server $KTEST serve garbage || return 1
    selftest echo 1000 16 || return 1
    grep -q 'result: PASS' $D/selftest && expect_eq doubles "$(field doubles)" 0 || return 1
    # Every bad record (invalid slot, stale generation, generation 0, a slot
    # never submitted, unknown status, overlong bytes, a duplicate in the same
    # batch, a duplicate after the kernel took the answer) is read and
    # rejected exactly once. The last duplicates go out a round after the last
    # answer: wait for the stand-in's count to settle.
    i=0
    while [ $i -lt 100 ]; do
        written=$(figure bad_records)
        rejected=$(( $(stat_of bad_completions) - before ))
        [ -n "$written" ] && [ "$written" = "$rejected" ] && break
        sleep 0.1
        i=$((i + 1))
    done
    echo "garbage: bad records written $written, rejected $rejected, answers $(figure answers)" >> /tmp/t.info
    expect_eq "bad records rejected" "$rejected" "$written" || return 1
    [ "$written" -ge 8000 ] || { echo "only $written bad records for 1000 requests"; return 1; }
    stop_server
}

# accounted [WRONG_OK]: every request of the last self-test completed exactly
# once; with WRONG_OK, wrong answers (a helper lying in valid records, which
# the kernel cannot tell from right ones) count among the outcomes, else
# there must be none.
accounted() {
    sum=$(( $(field ok) + $(field failed) + $(field nohelper) + $(field refused) + $(field timeouts) ))
    if [ -n "${1:-}" ]; then
        sum=$(( sum + $(field mismatches) ))
    else
        expect_eq mismatches "$(field mismatches)" 0 || return 1
    fi
    expect_eq accounted "$sum" "$(field total)" \
        && expect_eq doubles "$(field doubles)" 0 && expect_eq outstanding "$(field outstanding)" 0 \
        && expect_eq stalled "$(field stalled)" 0
}

# hostile_run PATTERN [WRONG_OK]: self-tests (200 echo requests, 16 in flight)
# while the stand-in misbehaves, until it prints PATTERN (at most 40); each
# must account for every request (see accounted). Sums the outcomes into
# $runs_* for the record.
hostile_run() {
    runs=0 runs_ok=0 runs_failed=0 runs_timeouts=0 runs_nohelper=0 runs_refused=0 runs_wrong=0
    while ! grep -q "$1" /tmp/server.log; do
        [ $runs -lt 40 ] || { echo "the stand-in never printed '$1'"; tail -n 5 /tmp/server.log; return 1; }
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "the stand-in died"; cat /tmp/server.log; return 1; }
        echo "echo 200 16" > $D/selftest || return 1
        accounted ${2:-} || { cat $D/selftest; return 1; }
        runs=$((runs + 1))
        runs_ok=$((runs_ok + $(field ok)))
        runs_failed=$((runs_failed + $(field failed)))
        runs_timeouts=$((runs_timeouts + $(field timeouts)))
        runs_nohelper=$((runs_nohelper + $(field nohelper)))
        runs_refused=$((runs_refused + $(field refused)))
        runs_wrong=$((runs_wrong + $(field mismatches)))
    done
    echo "self-tests during it: $runs x 200 requests: ok=$runs_ok failed=$runs_failed timeouts=$runs_timeouts nohelper=$runs_nohelper refused=$runs_refused wrong=$runs_wrong, none lost, none twice" >> /tmp/t.info
}

# timeouts_ms REQUEST SYNC: the module's request and sync-call timeouts;
# `timeouts_ms` alone restores the defaults (10000, 5000).
timeouts_ms() {
    echo "${1:-10000}" > $P/request_timeout_ms
    echo "${2:-5000}" > $P/sync_timeout_ms
}

# After a hostile stand-in: a new well-behaved one attaches and serves.
fallback_ok() {
    start_server $KTEST serve echo || return 1
    selftest echo 500 16 || return 1
    grep -q 'result: PASS' $D/selftest && stop_server
}

test_hostile_random() {
    seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
    bad0=$(stat_of bad_completions) late0=$(stat_of late_completions) corrupt0=$(stat_of ring_corrupt)
    timeouts_ms 500 500
    r=1
    if start_server $KTEST serve random $seed; then
        echo "random: seed $seed" >> /tmp/t.info
        hostile_run 'random: done' && r=0
    fi
    timeouts_ms
    [ $r = 0 ] || return 1
    grep 'not ok' /tmp/server.log && return 1
    # Then the same process serves correctly (a fresh region).
    wait_state attached && selftest echo 1000 16 && grep -q 'result: PASS' $D/selftest || return 1
    rejected=$(( $(stat_of bad_completions) - bad0 ))
    late=$(( $(stat_of late_completions) - late0 ))
    corrupt=$(( $(stat_of ring_corrupt) - corrupt0 ))
    grep 'figures (random done)' /tmp/server.log | sed 's/^kgpu-ktest: //' >> /tmp/t.info
    echo "kernel: bad_completions +$rejected late_completions +$late ring_corrupt +$corrupt" >> /tmp/t.info
    sessions=$(figure reattaches)
    hangups=$(figure hangups)
    [ "$rejected" -gt 0 ] || { echo "no bad record rejected"; return 1; }
    # Each hang-up the stand-in saw is one region the kernel found broken,
    # and the kernel breaks off a region at most once.
    [ "$corrupt" -ge "$hangups" ] && [ "$corrupt" -le "$sessions" ] \
        || { echo "ring_corrupt +$corrupt, hangups $hangups, sessions $sessions"; return 1; }
    stop_server && fallback_ok
}

# A second thread of the stand-in rewrites completion records while the
# kernel copies them (published and not yet consumed, or about to be), some
# with the slot and generation of another request in flight. The kernel may
# accept a wrong answer that way (it cannot tell), but it validates its own
# copy of each record: no request completed twice, none lost, nothing touched
# outside the region (KASAN on the debug kernel); then it serves correctly.
test_hostile_race() {
    seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
    bad0=$(stat_of bad_completions) late0=$(stat_of late_completions)
    timeouts_ms 500 500
    r=1
    if start_server $KTEST serve race $seed; then
        echo "race: seed $seed" >> /tmp/t.info
        hostile_run 'race: done' wrong_ok && r=0
    fi
    timeouts_ms
    [ $r = 0 ] || return 1
    grep 'not ok' /tmp/server.log && return 1
    # The same process, racer stopped, serves correctly.
    selftest echo 1000 16 && grep -q 'result: PASS' $D/selftest || return 1
    rejected=$(( $(stat_of bad_completions) - bad0 ))
    late=$(( $(stat_of late_completions) - late0 ))
    grep 'race: done' /tmp/server.log | sed 's/^kgpu-ktest: //' >> /tmp/t.info
    echo "kernel: bad_completions +$rejected late_completions +$late" >> /tmp/t.info
    [ "$rejected" -gt 0 ] || { echo "no racing record rejected"; return 1; }
    stop_server && fallback_ok
}

test_hostile_jumps() {
    bad0=$(stat_of bad_completions) corrupt0=$(stat_of ring_corrupt)
    start_server $KTEST serve jumps || return 1
    hostile_run 'jumps: done' || return 1
    grep -E '^(ok|not ok): ' /tmp/server.log
    grep -q 'jumps: done, 0 checks failed' /tmp/server.log && ! grep -q '^not ok' /tmp/server.log || return 1
    wait_state attached && selftest echo 1000 16 && grep -q 'result: PASS' $D/selftest || return 1
    rejected=$(( $(stat_of bad_completions) - bad0 ))
    corrupt=$(( $(stat_of ring_corrupt) - corrupt0 ))
    echo "$(grep -c '^ok: ' /tmp/server.log) checks; kernel: bad_completions +$rejected (a ring of old records) ring_corrupt +$corrupt (one per fatal jump)" >> /tmp/t.info
    # Six jumps are fatal (one broken region each); the legal one-ring jump
    # makes the kernel read 512 old records, every one rejected.
    expect_eq ring_corrupt "$corrupt" 6 && expect_eq bad_completions "$rejected" 512 || return 1
    stop_server && fallback_ok
}

test_hostile_header() {
    start_server $KTEST serve header || return 1
    # 1000 requests answered with the header overwritten after every round.
    selftest echo 1000 16 || return 1
    grep -q 'result: PASS' $D/selftest || return 1
    i=0
    while ! grep -q 'header: done' /tmp/server.log && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    grep -E '^(ok|not ok): ' /tmp/server.log
    grep -q 'header: done, 0 checks failed' /tmp/server.log && ! grep -q '^not ok' /tmp/server.log \
        || { cat /tmp/server.log; return 1; }
    echo "header overwritten $(figure header_overwrites) times while answering $(figure answers) requests" >> /tmp/t.info
    # Restored, the same region is attached again and served.
    wait_state attached && selftest echo 300 16 && grep -q 'result: PASS' $D/selftest && stop_server
}

test_timeouts() {
    timeouts_ms 300 300
    start_server $KTEST serve silent || return 1
    selftest echo 64 16
    r=$?
    timeouts_ms
    [ $r = 0 ] || return 1
    expect_eq timeouts "$(field timeouts)" 64 && expect_eq outstanding "$(field outstanding)" 0 || return 1
    # The abandoned requests hold their slots until the helper goes away.
    [ "$(stat_of in_flight)" -gt 0 ] || { echo "no request left in flight"; return 1; }
    stop_server && expect_eq in_flight "$(stat_of in_flight)" 0
}

test_nosleep_timeouts() {
    # A helper that never answers: spinning callers give up after
    # spin_timeout_us, and nothing hangs.
    echo 300 > $P/request_timeout_ms
    start_server $KTEST serve silent || return 1
    echo 20000 > $P/spin_timeout_us
    selftest echo 80 8 512 nosleep
    r=$?
    echo 2000 > $P/spin_timeout_us
    echo 10000 > $P/request_timeout_ms
    [ $r = 0 ] || return 1
    spins=$(sed -n 's/.* spin_timeouts=\([0-9]*\).*/\1/p' $D/selftest)
    grep nosleep: $D/selftest >> /tmp/t.info
    expect_eq "timeouts + spin timeouts" "$(( $(field timeouts) + spins ))" 80 \
        && expect_eq spin_timeouts "$spins" 10 && expect_eq outstanding "$(field outstanding)" 0
}

test_heartbeat_stall() {
    # A helper that stops (heartbeat included) with requests in flight: they
    # fail after heartbeat_timeout_ms, not request_timeout_ms, and new ones go
    # to the CPU path at once.
    echo 500 > $P/heartbeat_timeout_ms
    before=$(stat_of stalls)
    start_server $KTEST serve freeze || return 1
    selftest echo 3000 16
    r=$?
    echo $HEARTBEAT_MS > $P/heartbeat_timeout_ms
    [ $r = 0 ] || return 1
    expect_eq outstanding "$(field outstanding)" 0 && expect_eq mismatches "$(field mismatches)" 0 || return 1
    [ "$(field ok)" -le 100 ] && [ "$(field timeouts)" -gt 0 ] && [ "$(field nohelper)" -gt 0 ] \
        || { echo "unexpected split"; return 1; }
    [ "$(field elapsed_ms)" -lt 5000 ] || { echo "took the request timeout, not the heartbeat"; return 1; }
    expect_eq state "$(stat_of state)" stalled && [ "$(stat_of stalls)" -gt "$before" ] || return 1
    stop_server
}

test_corrupt_ring() {
    before=$(stat_of ring_corrupt)
    start_server $KTEST serve corrupt || return 1
    selftest echo 500 16 || return 1
    expect_eq outstanding "$(field outstanding)" 0 && expect_eq mismatches "$(field mismatches)" 0 || return 1
    [ "$(field failed)" -gt 0 ] || { echo "nothing failed"; return 1; }
    [ "$(stat_of ring_corrupt)" -gt "$before" ] || { echo "ring_corrupt not counted"; return 1; }
    # poll() reports POLLHUP: the stand-in exits on its own.
    i=0
    while kill -0 "$SERVER_PID" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    kill -0 "$SERVER_PID" 2>/dev/null && { echo "helper not told to hang up"; return 1; }
    wait "$SERVER_PID"
    SERVER_PID=
    wait_state detached
}

test_drain() {
    start_server $KTEST serve drain || return 1
    selftest echo 3000 16 || return 1
    expect_eq outstanding "$(field outstanding)" 0 && expect_eq mismatches "$(field mismatches)" 0 || return 1
    [ "$(field ok)" -ge 200 ] && [ "$(field nohelper)" -gt 0 ] || { echo "drain did not stop submissions"; return 1; }
    # Once nothing is in flight, poll() says POLLHUP and the stand-in leaves.
    i=0
    while kill -0 "$SERVER_PID" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    kill -0 "$SERVER_PID" 2>/dev/null && { echo "no POLLHUP after the drain"; return 1; }
    wait "$SERVER_PID"
    SERVER_PID=
    grep -q 'drain requested (errno 0)' /tmp/server.log || { cat /tmp/server.log; return 1; }
    wait_state detached
}

# $1: a command that serves (stand-in or real helper).
kill_mid_run() {
    start_server "$@" || return 1
    rm -f /tmp/st.done
    (echo "echo 500000 64 4096" > $D/selftest; echo $? > /tmp/st.done) &
    bg=$!
    sleep 1
    kill -9 "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=
    i=0
    while [ ! -e /tmp/st.done ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e /tmp/st.done ] || { echo "self-test hangs after the helper died"; return 1; }
    wait $bg
    cat $D/selftest
    head -n1 $D/selftest >> /tmp/t.info
    total=$(field total)
    ok=$(field ok)
    sum=$(( ok + $(field failed) + $(field nohelper) + $(field refused) + $(field timeouts) ))
    expect_eq accounted "$sum" "$total" && expect_eq mismatches "$(field mismatches)" 0 \
        && expect_eq outstanding "$(field outstanding)" 0 && expect_eq stalled "$(field stalled)" 0 || return 1
    [ "$ok" -gt 0 ] && [ "$ok" -lt "$total" ] || { echo "helper not killed mid-run (ok=$ok)"; return 1; }
    wait_state detached && expect_eq in_flight "$(stat_of in_flight)" 0
}

test_kill_standin() {
    kill_mid_run $KTEST serve echo
}

test_reattach_standin() {
    start_server $KTEST serve echo || return 1
    selftest echo 2000 || return 1
    grep -q 'result: PASS' $D/selftest && stop_server
}

test_rmmod_refused_while_attached() {
    start_server $KTEST serve echo || return 1
    if rmmod kgpu 2>/dev/null; then echo "rmmod succeeded with a helper attached"; return 1; fi
    [ -c /dev/kgpu ] || return 1
    selftest echo 100 && grep -q 'result: PASS' $D/selftest && stop_server
}

helper_cmd() {
    echo "$HELPER serve --device /dev/kgpu --backend cpu --data-mib 16"
}

test_helper_echo() {
    start_server $(helper_cmd) || return 1
    selftest echo 5000 32 16384 || return 1
    grep -q 'result: PASS' $D/selftest || return 1
    # The per-service counters (submitted ok errors timeouts nohelper busy
    # detach_failed bytes_in bytes_out avg_latency_ns), for the record.
    grep -E '^(service|echo) ' $D/stats >> /tmp/t.info
}

test_helper_aes() {
    start_server $(helper_cmd) || return 1
    selftest aes 3000 32 4096 || return 1
    grep -q 'result: PASS' $D/selftest
}

test_helper_aes_parallel() {
    start_server $(helper_cmd) || return 1
    selftest aes 4000 32 4096 par=4 || return 1
    grep -q 'result: PASS' $D/selftest
}

test_helper_raid6() {
    start_server $(helper_cmd) || return 1
    selftest raid6 1000 16 || return 1
    grep -q 'result: PASS' $D/selftest
}

test_helper_nosleep() {
    # One request in eight spins with preemption off (as md's gen_syndrome
    # runs). The test kernel's DEBUG_ATOMIC_SLEEP (see dmesg_clean) catches
    # any sleep on that path; every request must be answered correctly or,
    # for the spinning ones, be handed back for the CPU path.
    start_server $(helper_cmd) || return 1
    echo 100000 > $P/spin_timeout_us
    selftest raid6 800 16 8192 nosleep
    r=$?
    echo 2000 > $P/spin_timeout_us
    [ $r = 0 ] && grep -q 'result: PASS' $D/selftest || return 1
    grep nosleep: $D/selftest >> /tmp/t.info
    expect_eq async_ok "$(field ok)" "$(( 700 + $(sed -n 's/^nosleep: answered=\([0-9]*\).*/\1/p' $D/selftest) ))"
}

test_helper_second_refused() {
    start_server $(helper_cmd) || return 1
    out=$($(helper_cmd) 2>&1)
    r=$?
    echo "$out"
    [ $r != 0 ] || { echo "second helper exited 0"; return 1; }
    echo "$out" | grep -qi 'another helper' || { echo "no 'another helper' message"; return 1; }
    [ "$(stat_of state)" = attached ] && stop_server
}

test_helper_kill() {
    kill_mid_run $(helper_cmd)
}

test_helper_reattach() {
    start_server $(helper_cmd) || return 1
    selftest echo 2000 || return 1
    grep -q 'result: PASS' $D/selftest && stop_server
}

# runkgpu / stopkgpu, with the real helper when there is one.
run_env() {
    if [ -n "$HAVE_HELPER" ]; then
        echo "KGPU_MODULE=/kgpu.ko KGPU_HELPER=$HELPER KGPU_LOG=/tmp/kgpu-helper.log"
    else
        echo "KGPU_MODULE=/kgpu.ko KGPU_HELPER=$KTEST KGPU_LOG=/tmp/kgpu-helper.log"
    fi
}

runkgpu() {
    if [ -n "$HAVE_HELPER" ]; then
        env $(run_env) /bin/runkgpu "$@" -- serve --device /dev/kgpu --backend cpu --data-mib 16
    else
        env $(run_env) /bin/runkgpu "$@" -- serve echo
    fi
}

# expect_refusal MESSAGE COMMAND...: the command fails and prints MESSAGE.
expect_refusal() {
    msg=$1
    shift
    out=$("$@" 2>&1)
    r=$?
    echo "$out"
    [ $r != 0 ] || { echo "exit status 0"; return 1; }
    echo "$out" | grep -q "$msg" || { echo "message lacks '$msg'"; return 1; }
}

test_runkgpu_errors() {
    rmmod kgpu 2>/dev/null
    expect_refusal "must be run as root" su -s /bin/sh nobody -c "/bin/runkgpu" || return 1
    expect_refusal "must be run as root" su -s /bin/sh nobody -c "/bin/stopkgpu" || return 1
    expect_refusal "not built" env KGPU_MODULE=/nonexistent/kgpu.ko /bin/runkgpu || return 1
    expect_refusal "nothing running" /bin/stopkgpu || return 1
    # A pid file naming another process (the pid reused): never signalled.
    mkdir -p /tmp/stoprun
    sleep 60 &
    other=$!
    echo $other > /tmp/stoprun/kgpu-helper.pid
    expect_refusal "not kgpu-helper: not signalled" env KGPU_RUN_DIR=/tmp/stoprun /bin/stopkgpu
    r=$?
    kill -0 $other 2>/dev/null || { echo "stopkgpu signalled an unrelated process"; r=1; }
    kill $other
    wait $other 2>/dev/null
    [ ! -f /tmp/stoprun/kgpu-helper.pid ] || { echo "stale pid file left"; r=1; }
    rm -rf /tmp/stoprun
    return $r
}

test_runkgpu_cycle() {
    runkgpu sync_timeout_ms=4000 || { cat /tmp/kgpu-helper.log; return 1; }
    expect_eq param "$(cat $P/sync_timeout_ms)" 4000 || return 1
    expect_refusal "already running" runkgpu || return 1
    selftest echo 1000 || return 1
    grep -q 'result: PASS' $D/selftest || return 1
    /bin/stopkgpu || return 1
    [ ! -d /sys/module/kgpu ] || { echo "kgpu still loaded"; return 1; }
    expect_refusal "nothing running" /bin/stopkgpu || return 1
    # And again, after a clean stop.
    runkgpu && /bin/stopkgpu
}

test_unload() {
    rmmod kgpu || return 1
    [ ! -e /dev/kgpu ] && dmesg | grep -q 'kgpu: unloaded'
}

test_reload_cycles() {
    for i in 1 2 3; do
        insmod /kgpu.ko && rmmod kgpu || return 1
    done
}

test_no_leaks() {
    [ -w /sys/kernel/debug/kmemleak ] || { echo "kmemleak unavailable"; return 1; }
    echo scan > /sys/kernel/debug/kmemleak
    sleep 1
    echo scan > /sys/kernel/debug/kmemleak
    if grep -q kgpu /sys/kernel/debug/kmemleak; then
        cat /sys/kernel/debug/kmemleak
        return 1
    fi
}

test_dmesg_clean() {
    if dmesg | grep -E 'BUG:|WARNING:|Oops|KASAN|UBSAN|ODEBUG|INFO: (possible|task|rcu)|circular locking|inconsistent lock|sleeping function called from invalid context|detected stall|kgpu: internal error'; then
        return 1
    fi
}

# ---- run ---------------------------------------------------------------------

# A suite (/suite-NAME.sh) sources this file for its definitions only.
[ -n "$KGPU_DEFINE_ONLY" ] && return 0

t module_load test_load
t dev_node_0600 test_node
t second_opener_refused test_open_twice
t non_root_refused test_nonroot
t attach_validation test_attach_errors
t no_helper_fails_fast test_no_helper
t standin_echo_selftest test_echo_standin
t parallel_submitters_standin test_parallel_standin
t error_status_propagates test_error_status_propagates
t selftest_detects_wrong_data test_selftest_detects_wrong_data
t hostile_completions_ignored test_hostile_completions
t hostile_random_writes test_hostile_random
t hostile_records_raced test_hostile_race
t hostile_index_jumps test_hostile_jumps
t hostile_header_overwritten test_hostile_header
t timeouts_complete_everything test_timeouts
t nosleep_calls_time_out test_nosleep_timeouts
t heartbeat_stall_fails_fast test_heartbeat_stall
t corrupt_ring_fails_safely test_corrupt_ring
t drain_then_hangup test_drain
t standin_killed_mid_run test_kill_standin
t standin_reattach test_reattach_standin
t rmmod_refused_while_attached test_rmmod_refused_while_attached

HAVE_HELPER=
if [ -x $HELPER ] && $HELPER serve --help >/dev/null 2>&1; then
    HAVE_HELPER=1
    t helper_echo_selftest test_helper_echo
    t helper_aes_matches_kernel test_helper_aes
    t helper_aes_parallel_submitters test_helper_aes_parallel
    t helper_raid6_matches_kernel test_helper_raid6
    t helper_nosleep_spinning_calls test_helper_nosleep
    t helper_second_refused test_helper_second_refused
    t helper_killed_mid_run test_helper_kill
    t helper_reattach test_helper_reattach
else
    skip helper "kgpu-helper not built or has no 'serve' (helper tests not run)"
fi

[ -f /tests-gaes.sh ] && . /tests-gaes.sh
. /tests-gpq.sh
# Each service's own guest tests (services/NAME/tests/guest.sh).
for f in /services/*.sh; do [ -f "$f" ] && . "$f"; done

stop_server >/dev/null 2>&1
t module_unload test_unload
t reload_cycles test_reload_cycles
t runkgpu_stopkgpu_errors test_runkgpu_errors
t runkgpu_stopkgpu_cycle test_runkgpu_cycle
t no_kmemleak_reports test_no_leaks
t dmesg_clean test_dmesg_clean

ktap_summary
