# The soak test (busybox sh), run by /init for kgpu_suite=soak
# (`make test-soak`): the whole stack under a verifying load while the helper
# is killed and restarted and md resyncs and checks underneath.
#
#   ext4  <-  dm-crypt capi:gaes_xts-plain64  <-  md RAID6 (6 loop devices on tmpfs, gpq)
#
# For SOAK_SECONDS (kernel command line, default 120) fio passes (random
# writes with verify, direct and buffered, then a verify-only pass with the
# page cache dropped) run on the filesystem while
#   - the helper (`kgpu-helper serve`, CPU backend) is SIGKILLed after 3-7 s of service
#     and restarted after a random pause of 0.1-1.5 s;
#   - md runs its initial resync, then `check` and `repair` one after another.
# Then: e2fsck -fn, md `check` (mismatch_cnt 0), the helper stopped, and every
# request accounted for in the module's counters. Prints KTAP (/ktap.sh): a
# result line per check, one `soak: ...` summary line and `# N passed, N
# failed, N skipped`.
# SPDX-License-Identifier: GPL-2.0-only

D=/sys/kernel/debug/kgpu
P=/sys/module/kgpu/parameters
G=$D/gaes
Q=$D/gpq
HELPER=/bin/kgpu-helper
FIO=/bin/fio
# System V shared memory for fio (the test kernel has no SYSVIPC).
SHM_PRELOAD=/lib/kgpu-shm-preload.so
DMSETUP=/bin/dmsetup
MD=/dev/md0
MDS=/sys/block/md0/md
MNT=/mnt/soak
W=/tmp/soak
SOAK_SECONDS=${SOAK_SECONDS:-120}
DEV_MB=${SOAK_DEV_MB:-48}
# MiB written by each fio job in a pass (the 4 KiB random-write job: half).
# Under TCG a pass of the default 4 takes about a minute.
FIO_MB=${SOAK_FIO_MB:-4}
FIO_MB_SMALL=$(( FIO_MB / 2 > 0 ? FIO_MB / 2 : 1 ))
# The hung-task detector's bound (init sets 20 s; qemu-test passes more for
# the debug kernel, whose I/O under TCG is an order of magnitude slower).
HUNG_TASK_S=${SOAK_HUNG_TASK_S:-20}
export DM_DISABLE_UDEV=1

. /ktap.sh

# ko NAME [INFO]: NAME failed; INFO on a diagnostic line before it.
ko() {
    name=$1
    shift
    [ $# -gt 0 ] && echo "$*" | ktap_diag
    ktap_not_ok "$name"
}

# check NAME INFO CMD...: NAME passes when CMD succeeds; INFO and, when it
# fails, its output on diagnostic lines before the result.
check() {
    name=$1
    echo "$2" | ktap_diag
    shift 2
    if "$@" >$W/check.out 2>&1; then
        ktap_ok "$name"
    else
        ktap_diag $W/check.out
        ktap_not_ok "$name"
    fi
}

finish() {
    ktap_summary
    exit 0
}

# setup_step NAME CMD...: a step the soak cannot go on without.
setup_step() {
    name=$1
    shift
    if "$@" >$W/step.out 2>&1; then
        return 0
    fi
    tail -n 30 $W/step.out | ktap_diag
    dmesg | tail -n 30 | sed 's/^/dmesg: /' | ktap_diag
    ktap_not_ok "soak_setup_$name"
    finish
}

now() {
    cut -d' ' -f1 /proc/uptime | cut -d. -f1
}

# Uptime in milliseconds.
now_ms() {
    awk '{ printf "%d", $1 * 1000 }' /proc/uptime
}

# rand N: 0..N-1
rand() {
    echo $(( $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % $1 ))
}

stat_of() {
    sed -n "s/^$1: //p" $D/stats
}

gaes_of() {
    sed -n "s/^$1: //p" $G
}

gpq_of() {
    sed -n "s/^$1: //p" $Q | head -n1
}

# svc NAME COLUMN: a column of the per-service table of the stats file
# (service submitted ok errors timeouts nohelper busy detach_failed ...).
svc() {
    awk -v s="$1" -v c="$2" '$1 == s && NF >= 11 { print $c }' $D/stats
}

# wait_state STATE [TENTHS]
wait_state() {
    i=0
    while [ $i -lt "${2:-200}" ]; do
        [ "$(stat_of state)" = "$1" ] && return 0
        sleep 0.1
        i=$((i + 1))
    done
    echo "state is '$(stat_of state)', wanted '$1'"
    return 1
}

hexkey() {
    dd if=/dev/urandom bs=$1 count=1 2>/dev/null | od -An -v -tx1 | tr -d ' \n'
}

md_idle() {
    [ "$(cat $MDS/sync_action)" = idle ] && ! grep -qE 'resync|recovery|check|repair' /proc/mdstat
}

# md_wait_idle TENTHS
md_wait_idle() {
    i=0
    while [ $i -lt "$1" ]; do
        md_idle && return 0
        sleep 0.1
        i=$((i + 1))
    done
    cat /proc/mdstat
    return 1
}

# ---- the helper, killed and restarted -----------------------------------------

# start_helper: a new helper; waits until it has attached (HPID).
start_helper() {
    $HELPER serve --device /dev/kgpu --backend cpu --data-mib 16 >>$W/helper.log 2>&1 &
    HPID=$!
    echo $HPID > $W/helper.pid
    i=0
    while [ $i -lt 300 ]; do
        if [ "$(stat_of state)" = attached ] && [ "$(stat_of helper_pid)" = "$HPID" ]; then
            return 0
        fi
        kill -0 $HPID 2>/dev/null || { echo "helper $HPID exited before attaching"; return 1; }
        sleep 0.1
        i=$((i + 1))
    done
    echo "helper $HPID did not attach within 30 s (state $(stat_of state), pid $(stat_of helper_pid))"
    return 1
}

# The killer (background): runs the helper, SIGKILLs it after 3-7 s, restarts
# it after 0.1-1.5 s, until $W/stop exists; leaves one running. Counts in
# $W/kills and $W/reattach_failures.
killer() {
    kills=0
    failures=0
    while [ ! -e $W/stop ]; do
        wait_for=$((30 + $(rand 40)))
        i=0
        while [ $i -lt $wait_for ] && [ ! -e $W/stop ]; do sleep 0.1; i=$((i + 1)); done
        [ -e $W/stop ] && break
        k0=$(now_ms)
        kill -9 $HPID 2>/dev/null
        wait $HPID 2>/dev/null
        if ! wait_state detached 300; then
            echo "kill $((kills + 1)): no detach" >> $W/killer.log
            failures=$((failures + 1))
        fi
        k1=$(now_ms)
        kills=$((kills + 1))
        echo $kills > $W/kills
        sleep "0.$(( 1 + $(rand 9) ))$(rand 10)"
        [ $(rand 3) = 0 ] && sleep 0.5
        k2=$(now_ms)
        if ! start_helper >> $W/killer.log 2>&1; then
            failures=$((failures + 1))
            echo $failures > $W/reattach_failures
            # Try again at once: the soak goes on with a helper if it can.
            start_helper >> $W/killer.log 2>&1 || { failures=$((failures + 1)); }
        fi
        echo $failures > $W/reattach_failures
        k3=$(now_ms)
        # kill -> detached, pause, start -> attached (ms)
        echo "$((k1 - k0)) $((k2 - k1)) $((k3 - k2))" >> $W/kill-times
    done
}

# ---- md resync / check / repair under the load -------------------------------------

# The syncer (background): the initial resync runs first; then, whenever md
# is idle, a `check` or a `repair` (alternating), until $W/stop exists. Waits
# for the action in progress to end before leaving. After each completed
# action its mismatch_cnt goes to $W/sync.log.
syncer() {
    n=0
    while :; do
        if md_idle; then
            if [ -n "$act" ]; then
                echo "$act $(cat $MDS/mismatch_cnt)" >> $W/sync.log
                act=
            fi
            [ -e $W/stop ] && break
            if [ $((n % 2)) = 0 ]; then act=check; else act=repair; fi
            n=$((n + 1))
            echo $act > $MDS/sync_action || act=
        fi
        sleep 0.5
    done
}

# ---- fio -------------------------------------------------------------------------------

# fio_job SEED: the job file of one pass (files of the same names each pass).
fio_job() {
    cat <<EOF
[global]
directory=$MNT
size=${FIO_MB}m
randseed=$1
verify_fatal=0
verify_dump=0
verify_state_save=0
[direct4k]
size=${FIO_MB_SMALL}m
rw=randwrite
bs=4k
direct=1
ioengine=libaio
iodepth=8
verify=crc32c
[buffered64k]
rw=randwrite
bs=64k
ioengine=psync
verify=md5
end_fsync=1
[direct128k]
rw=randwrite
bs=128k
direct=1
ioengine=psync
verify=crc32c
EOF
}

# fio_run NAME ARGS...: runs fio on $W/job.fio; adds the bytes read (verified)
# to $W/verified_kb, the verify errors to $W/verify_errors; returns fio's
# status (non-zero on any error).
fio_run() {
    name=$1
    shift
    (cd $W && LD_PRELOAD=$SHM_PRELOAD $FIO --output-format=terse --terse-version=3 "$@" $W/job.fio) >$W/fio-$name.out 2>&1
    rc=$?
    kb=$(awk -F';' '$1 == 3 && NF > 50 { s += $6 } END { print s + 0 }' $W/fio-$name.out)
    jerr=$(awk -F';' '$1 == 3 && NF > 50 && $5 != 0 { n++ } END { print n + 0 }' $W/fio-$name.out)
    verr=$(grep -ciE 'verify.*(bad|fail)|bad magic|crc32c: |md5: ' $W/fio-$name.out)
    echo $(( $(cat $W/verified_kb) + kb )) > $W/verified_kb
    echo $(( $(cat $W/verify_errors) + verr )) > $W/verify_errors
    jobs=$(awk -F';' '$1 == 3 && NF > 50 { printf " %s(w %d KiB %d ms, r %d KiB %d ms)", $3, $47, $50, $6, $9 }' $W/fio-$name.out)
    echo "$name: rc=$rc verified_kb=$kb job_errors=$jerr verify_error_lines=$verr;$jobs" >> $W/fio.log
    if [ $rc != 0 ] || [ $jerr != 0 ] || [ $verr != 0 ]; then
        echo "--- $name" >> $W/fio-errors.log
        grep -v '^3;' $W/fio-$name.out | head -n 20 >> $W/fio-errors.log
        return 1
    fi
}

# ---- run ---------------------------------------------------------------------------------

mkdir -p $W $MNT
echo 0 > $W/verified_kb
echo 0 > $W/verify_errors
echo 0 > $W/kills
echo 0 > $W/reattach_failures
echo "kgpu-guest: soak: ${SOAK_SECONDS} s of load, 6 x ${DEV_MB} MiB RAID6, fio $((FIO_MB_SMALL + 2 * FIO_MB)) MiB a pass (3 jobs), hung-task bound ${HUNG_TASK_S} s"

for f in $HELPER $FIO $SHM_PRELOAD $DMSETUP /bin/mdadm /bin/mke2fs; do
    [ -e $f ] || { ko soak_prerequisites "$f missing from the initramfs"; finish; }
done
$HELPER serve --help >/dev/null 2>&1 || { ko soak_prerequisites "kgpu-helper has no serve"; finish; }

echo $HUNG_TASK_S > /proc/sys/kernel/hung_task_timeout_secs

# kgpu with every md syndrome sent to the helper (threshold 0). A spin bound
# of 20 ms: enough for most helper round trips under TCG (about 7 % time out),
# short enough that calls spinning with preemption off while the helper is
# being killed do not starve the rest of the guest.
setup_step insmod insmod /kgpu.ko gaes_policy=gpu gpq_threshold=0 gpq_spin_us=20000 gpq_wake_us=20000
setup_step helper start_helper

for i in 0 1 2 3 4 5; do
    setup_step backing dd if=/dev/zero of=/tmp/soak$i.img bs=1M count=$DEV_MB
    setup_step losetup losetup /dev/loop$i /tmp/soak$i.img
done
# A fresh array: its initial resync runs under the load.
setup_step mdadm_create mdadm --create $MD --run --level=6 --raid-devices=6 --chunk=64 --bitmap=none \
    /dev/loop0 /dev/loop1 /dev/loop2 /dev/loop3 /dev/loop4 /dev/loop5
sectors=$(( $(cat /sys/block/md0/size) ))
key=$(hexkey 64)
setup_step dmsetup $DMSETUP --noudevsync create soak \
    --table "0 $sectors crypt capi:gaes_xts-plain64 $key 0 $MD 0 1 sector_size:4096"
minor=$($DMSETUP info -c --noheadings -o minor soak)
DM=/dev/dm-$minor
i=0
while [ ! -b $DM ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
setup_step mkfs /bin/mke2fs -q -F -t ext4 -E lazy_itable_init=0,lazy_journal_init=0 $DM
setup_step mount mount -t ext4 $DM $MNT
echo "kgpu-guest: soak: md0 $((sectors / 2048)) MiB, ext4 on $DM, $(grep -o 'resync *= *[0-9.]*%' /proc/mdstat || echo 'resync done')"

echo reset > $G
killer &
KILLER=$!
syncer &
SYNCER=$!

t0=$(now)
npass=0
fio_failed=0
while [ $(( $(now) - t0 )) -lt $SOAK_SECONDS ]; do
    npass=$((npass + 1))
    fio_job $npass > $W/job.fio
    fio_run "pass$npass" || fio_failed=$((fio_failed + 1))
    sync
    echo 3 > /proc/sys/vm/drop_caches
    fio_run "verify$npass" --verify_only || fio_failed=$((fio_failed + 1))
    echo "kgpu-guest: soak: pass $npass done at $(( $(now) - t0 )) s, $(cat $W/kills) helper kills, verified $(( $(cat $W/verified_kb) / 1024 )) MiB"
done
load_s=$(( $(now) - t0 ))

touch $W/stop
wait $KILLER
wait $SYNCER
HPID=$(cat $W/helper.pid)
kills=$(cat $W/kills)
reattach_failures=$(cat $W/reattach_failures)
verified_kb=$(cat $W/verified_kb)
verify_errors=$(cat $W/verify_errors)
ktap_diag $W/fio.log

check soak_fio_verify "$npass passes in $load_s s, $((verified_kb / 1024)) MiB verified, $verify_errors verify errors" \
    sh -c "[ $fio_failed = 0 ] && [ $verify_errors = 0 ] && [ $verified_kb -gt 0 ] || { cat $W/fio-errors.log; false; }"

times=$(awk '{ d += $1; p += $2; a += $3; if ($1 > md) md = $1; if ($3 > ma) ma = $3 }
    END { if (NR) printf "kill to detach avg %d ms (max %d), pause avg %d ms, start to attach avg %d ms (max %d)", d / NR, md, p / NR, a / NR, ma }' $W/kill-times 2>/dev/null)
check soak_helper_kills "$kills kills, $reattach_failures restarts that did not re-attach; $times" \
    sh -c "[ $kills -gt 0 ] && [ $reattach_failures = 0 ] || { cat $W/killer.log; false; }"

syncs=$(wc -l < $W/sync.log 2>/dev/null || echo 0)
sync_mm=$(awk '{ s += $2 } END { print s + 0 }' $W/sync.log 2>/dev/null)
check soak_md_sync_under_load "$syncs check/repair runs completed under the load: $(tr '\n' ' ' < $W/sync.log 2>/dev/null)" \
    sh -c "[ $syncs -gt 0 ] && [ $sync_mm = 0 ]"

umount $MNT
fsck_rc=none
if [ -x /bin/e2fsck ]; then
    fsck_out=$(/bin/e2fsck -fn $DM 2>&1)
    fsck_rc=$?
    check soak_e2fsck "e2fsck -fn exit $fsck_rc" sh -c "[ $fsck_rc = 0 ] || { echo \"\$0\"; false; }" "$fsck_out"
else
    ktap_skip soak_e2fsck "e2fsck not in the initramfs"
fi
$DMSETUP --noudevsync remove soak

# The final check, helper attached: every stripe's P and Q recomputed.
echo check > $MDS/sync_action
sleep 0.5
md_wait_idle 6000
mismatch=$(cat $MDS/mismatch_cnt)
check soak_md_check_after "mismatch_cnt $mismatch" sh -c "[ '$mismatch' = 0 ]"

# The helper stopped: every request still held is completed (detach).
kill -9 $HPID 2>/dev/null
wait_state detached 300
sleep 0.5

# Accounting.
acc=0
acc_info=
for s in aes raid6; do
    sub=$(svc $s 2) okc=$(svc $s 3) err=$(svc $s 4) tmo=$(svc $s 5) nh=$(svc $s 6) busy=$(svc $s 7) det=$(svc $s 8)
    acc_info="$acc_info $s: submitted $sub = ok $okc + errors $err + timeouts $tmo + detach_failed $det (refused: nohelper $nh busy $busy);"
    [ "$sub" = $((okc + err + tmo + det)) ] || acc=1
done
g_req=$(gaes_of requests) g_q=$(gaes_of queued) g_gpu=$(gaes_of gpu_requests) g_redo=$(gaes_of cpu_redo)
g_inline=$(( $(gaes_of cpu_nohelper) + $(gaes_of cpu_small) + $(gaes_of cpu_busy) + $(gaes_of cpu_other) + $(gaes_of cpu_policy) ))
acc_info="$acc_info gaes: requests $g_req = queued $g_q + cpu inline $g_inline (nohelper $(gaes_of cpu_nohelper) small $(gaes_of cpu_small) busy $(gaes_of cpu_busy) other $(gaes_of cpu_other)), queued = helper $g_gpu + cpu_redo $g_redo;"
[ "$g_req" = $((g_q + g_inline)) ] && [ "$g_q" = $((g_gpu + g_redo)) ] || acc=1
q_calls=$(( $(gpq_of gen_calls) + $(gpq_of xor_calls) ))
q_gpu=$(gpq_of gpu)
q_cpu=0
for c in cpu_threshold cpu_nohelper cpu_context cpu_layout cpu_asleep cpu_busy cpu_fallback timeout; do
    q_cpu=$((q_cpu + $(gpq_of $c)))
done
acc_info="$acc_info gpq: calls $q_calls = helper $q_gpu + cpu $q_cpu (nohelper $(gpq_of cpu_nohelper) timeout $(gpq_of timeout) fallback $(gpq_of cpu_fallback) asleep $(gpq_of cpu_asleep) busy $(gpq_of cpu_busy)), active $(gpq_of active)"
[ "$q_calls" = $((q_gpu + q_cpu)) ] && [ "$(gpq_of active)" = 0 ] || acc=1
check soak_every_request_accounted "$acc_info" sh -c "[ $acc = 0 ]"

aes_ok=$(svc aes 3)
r6_ok=$(svc raid6 3)
check soak_both_paths_on_helper "gaes: $g_gpu requests answered by the helper (aes ok $aes_ok); gpq: $q_gpu calls (raid6 ok $r6_ok)" \
    sh -c "[ $g_gpu -gt 0 ] && [ $q_gpu -gt 0 ] && [ $aes_ok -gt 0 ] && [ $r6_ok -gt 0 ]"

# No hung task, no splat (the host checks the console too).
bad=$(dmesg | grep -E 'blocked for more than|hung_task|BUG:|WARNING:|Oops|Call Trace|KASAN|UBSAN|circular locking|detected stall' | head -n 20)
check soak_dmesg_clean "no hung task or splat in dmesg" sh -c "[ -z \"\$0\" ] || { echo \"\$0\"; false; }" "$bad"

pushed=$(( $(svc aes 2) + $(svc raid6 2) ))
echo "soak: load ${load_s}s passes $npass requests_pushed $pushed (aes $(svc aes 2) raid6 $(svc raid6 2))" \
    "gaes_requests $g_req gaes_helper $g_gpu gaes_redo $g_redo gpq_calls $q_calls gpq_helper $q_gpu" \
    "helper_kills_survived $kills reattach_failures $reattach_failures bytes_verified $((verified_kb * 1024))" \
    "verify_errors $verify_errors md_syncs_under_load $syncs mismatch_cnt $mismatch fsck_rc $fsck_rc accounting $([ $acc = 0 ] && echo ok || echo MISMATCH)"

mdadm --stop $MD >/dev/null 2>&1
for i in 0 1 2 3 4 5; do
    losetup -d /dev/loop$i 2>/dev/null
    rm -f /tmp/soak$i.img
done
rmmod kgpu || ko soak_rmmod "rmmod kgpu failed"
finish
