# In-guest tests of gaes, the GPU AES skciphers (busybox sh). Sourced by
# guest-tests.sh after the helper tests, with kgpu.ko loaded and no helper
# attached; uses its t/skip/start_server/stop_server/helper_cmd helpers.
# SPDX-License-Identifier: GPL-2.0-only

G=/sys/kernel/debug/kgpu/gaes
AFALG=/bin/gaes-afalg
DMSETUP=/bin/dmsetup
export DM_DISABLE_UDEV=1

# gstat NAME [FILE]: a counter of gaes (or of a copy of its counters in FILE).
gstat() {
    sed -n "s/^$1: //p" "${2:-$G}"
}

gaes_defaults() {
    echo 2048 > $P/gaes_cpu_max_bytes
    echo $GAES_WINDOW_US > $P/gaes_window_us
    echo 256 > $P/gaes_batch_reqs
}

# /proc/crypto: each gaes driver registered, async, priority from the
# parameter, and passed the kernel's self-tests (testmgr, run at registration
# with no helper attached).
test_gaes_proc_crypto() {
    prio=$(cat $P/gaes_priority)
    for m in ecb cbc ctr xts; do
        blk=$(awk -v d="gaes_$m" '
            /^$/ { if (hit) exit; blk = ""; next }
            { blk = blk $0 "\n" }
            $1 == "driver" && $3 == d { hit = 1 }
            END { if (hit) printf "%s", blk }' /proc/crypto)
        [ -n "$blk" ] || { echo "gaes_$m not in /proc/crypto"; return 1; }
        echo "$blk" | grep -q "^name *: $m(aes)\$" || { echo "$blk"; echo "gaes_$m: wrong name"; return 1; }
        echo "$blk" | grep -q '^selftest *: passed$' || { echo "$blk"; echo "gaes_$m: self-test not passed"; return 1; }
        echo "$blk" | grep -q '^async *: yes$' || { echo "$blk"; echo "gaes_$m: not async"; return 1; }
        echo "$blk" | grep -q "^priority *: $prio\$" || { echo "$blk"; echo "gaes_$m: priority"; return 1; }
    done
    dmesg | grep -E 'alg: .*gaes' && return 1
    echo "gaes_ecb gaes_cbc gaes_ctr gaes_xts: selftest passed, priority $prio" >> /tmp/t.info
}

# AF_ALG against the generic drivers with no helper: everything on the CPU path.
test_gaes_afalg_nohelper() {
    echo reset > $G
    for m in ecb cbc ctr xts; do
        $AFALG $m || return 1
    done
    expect_eq gpu_requests "$(gstat gpu_requests)" 0 || return 1
    [ "$(gstat cpu_nohelper)" -gt 0 ] || { cat $G; return 1; }
}

# The same with a helper attached and every request eligible for the helper.
test_gaes_afalg_helper() {
    start_server $(helper_cmd) || return 1
    echo 0 > $P/gaes_cpu_max_bytes
    echo reset > $G
    for m in ecb cbc ctr xts; do
        $AFALG $m 2 || { cat $G; gaes_defaults; return 1; }
    done
    gaes_defaults
    cat $G
    # Only a length or key the helper path does not take may go to the CPU.
    # Every length and key of the checker suits the helper path.
    for c in cpu_nohelper cpu_small cpu_busy cpu_other cpu_redo helper_failed submit_refused; do
        expect_eq $c "$(gstat $c)" 0 || return 1
    done
    [ "$(gstat gpu_requests)" -gt 1000 ] || { echo "too few requests reached the helper"; return 1; }
    echo "gpu_requests=$(gstat gpu_requests) batches=$(gstat batches) avg_batch_latency_ns=$(gstat avg_batch_latency_ns)" >> /tmp/t.info
}

# The kernel's self-tests again, with the helper serving them: test copies of
# the four drivers (gaes_*_t, same code) registered while it is attached.
test_gaes_selftest_helper() {
    start_server $(helper_cmd) || return 1
    echo 0 > $P/gaes_cpu_max_bytes
    echo reset > $G
    echo selftest > $G
    r=$?
    gaes_defaults
    cat $G
    [ $r = 0 ] || { echo "a test copy failed its self-tests"; dmesg | grep 'alg:' | tail; return 1; }
    for m in ecb cbc ctr xts; do
        awk -v d="gaes_${m}_t" '
            /^$/ { if (hit) exit; blk = ""; next }
            { blk = blk $0 "\n" }
            $1 == "driver" && $3 == d { hit = 1 }
            END { if (hit) printf "%s", blk }' /proc/crypto | grep -q '^selftest *: passed$' \
            || { echo "gaes_${m}_t: selftest not passed in /proc/crypto"; return 1; }
    done
    dmesg | grep -E 'alg: .*gaes' && return 1
    expect_eq helper_failed "$(gstat helper_failed)" 0 && expect_eq cpu_redo "$(gstat cpu_redo)" 0 || return 1
    [ "$(gstat gpu_requests)" -gt 100 ] || { echo "the self-tests did not reach the helper"; return 1; }
    echo "testmgr through the helper: gpu_requests=$(gstat gpu_requests) cpu_other=$(gstat cpu_other) (lengths or keys the helper path does not take)" >> /tmp/t.info
}

# ---- dm-crypt ----------------------------------------------------------------

DISK=/tmp/gaes-disk.img
DM_MB=4

hexkey() {
    dd if=/dev/urandom bs=$1 count=1 2>/dev/null | od -An -v -tx1 | tr -d ' \n'
}

# dm_map NAME SPEC KEY [OPTS...]: a crypt mapping of $LOOP; prints its node.
dm_map() {
    name=$1 spec=$2 key=$3
    shift 3
    sectors=$(( $(stat -c %s $DISK) / 512 ))
    nopt=$#
    if [ $nopt = 0 ]; then
        $DMSETUP --noudevsync create "$name" --table "0 $sectors crypt $spec $key 0 $LOOP 0" || return 1
    else
        $DMSETUP --noudevsync create "$name" --table "0 $sectors crypt $spec $key 0 $LOOP 0 $nopt $*" || return 1
    fi
    dm_node "$name"
}

# dm_halves SPEC KEY_A KEY_B: mappings gaes_a and gaes_b of the two halves of
# $LOOP, with different keys; their nodes in $da and $db.
dm_halves() {
    half=$(( $(stat -c %s $DISK) / 512 / 2 ))
    $DMSETUP --noudevsync create gaes_a --table "0 $half crypt $1 $2 0 $LOOP 0" &&
    $DMSETUP --noudevsync create gaes_b --table "0 $half crypt $1 $3 0 $LOOP $half" &&
    da=$(dm_node gaes_a) && db=$(dm_node gaes_b)
}

# dm_node NAME: the device node of mapping NAME, once it exists.
dm_node() {
    minor=$($DMSETUP info -c --noheadings -o minor "$1") || return 1
    dev=/dev/dm-$minor
    i=0
    while [ ! -b $dev ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    [ -b $dev ] || { echo "$dev did not appear"; return 1; }
    echo $dev
}

dm_unmap() {
    $DMSETUP --noudevsync remove "$1"
}

dm_setup() {
    [ -x $DMSETUP ] || return 1
    rm -f $DISK
    dd if=/dev/zero of=$DISK bs=1M count=$1 2>/dev/null || return 1
    LOOP=$(losetup -f) || return 1
    losetup $LOOP $DISK || return 1
}

dm_teardown() {
    for n in gaes_a gaes_b; do $DMSETUP --noudevsync remove $n >/dev/null 2>&1; done
    [ -n "$LOOP" ] && losetup -d $LOOP 2>/dev/null
    LOOP=
    rm -f $DISK /tmp/gaes-plain /tmp/gaes-back /tmp/gaes-ct1 /tmp/gaes-ct2
}

# dm_write SPEC KEY FILE [OPTS]: writes FILE through a mapping (direct I/O).
dm_write() {
    dev=$(dm_map gaes_a "$1" "$2" $4) || { echo "$dev"; return 1; }
    dd if="$3" of=$dev bs=64k oflag=direct conv=fsync 2>/dev/null || { dm_unmap gaes_a; return 1; }
    dm_unmap gaes_a
}

# dm_read SPEC KEY FILE [OPTS]: reads the whole mapping into FILE.
dm_read() {
    dev=$(dm_map gaes_b "$1" "$2" $4) || { echo "$dev"; return 1; }
    dd if=$dev of="$3" bs=64k iflag=direct 2>/dev/null || { dm_unmap gaes_b; return 1; }
    dm_unmap gaes_b
}

# cross GAES_SPEC VANILLA_SPEC KEYBYTES [OPTS]: data written through gaes reads
# back through the kernel's own cipher and the reverse; the ciphertexts on the
# device are byte-identical for the same data.
cross() {
    gspec=$1 vspec=$2 kbytes=$3 opts=$4
    start_server $(helper_cmd) || return 1
    dm_setup $DM_MB || { dm_teardown; return 1; }
    key=$(hexkey $kbytes)
    echo reset > $G
    r=1
    {
        dd if=/dev/urandom of=/tmp/gaes-plain bs=1M count=$DM_MB 2>/dev/null &&
        dm_write "$gspec" $key /tmp/gaes-plain "$opts" && cp $DISK /tmp/gaes-ct1 &&
        dm_read "$vspec" $key /tmp/gaes-back "$opts" &&
        { cmp /tmp/gaes-plain /tmp/gaes-back || { echo "gaes-written data reads back wrong through $vspec"; false; }; } &&
        dd if=/dev/zero of=$DISK bs=1M count=$DM_MB conv=notrunc 2>/dev/null &&
        dm_write "$vspec" $key /tmp/gaes-plain "$opts" && cp $DISK /tmp/gaes-ct2 &&
        { cmp /tmp/gaes-ct1 /tmp/gaes-ct2 || { echo "ciphertext differs from $vspec"; false; }; } &&
        dm_read "$gspec" $key /tmp/gaes-back "$opts" &&
        { cmp /tmp/gaes-plain /tmp/gaes-back || { echo "$vspec-written data reads back wrong through gaes"; false; }; } &&
        r=0
    }
    dm_teardown
    cat $G
    [ $r = 0 ] || return 1
    expect_eq helper_failed "$(gstat helper_failed)" 0 || return 1
    [ "$(gstat gpu_requests)" -gt 0 ] || { echo "no request reached the helper"; return 1; }
    echo "$gspec $opts: gpu_requests=$(gstat gpu_requests) batches=$(gstat batches) avg_batch_requests=$(gstat avg_batch_requests) avg_batch_latency_ns=$(gstat avg_batch_latency_ns) max_batch_latency_ns=$(gstat max_batch_latency_ns) avg_batch_open_ns=$(gstat avg_batch_open_ns) cpu_small=$(gstat cpu_small) cpu_busy=$(gstat cpu_busy)" >> /tmp/t.info
    echo "    $(gstat batch_hist)" >> /tmp/t.info
}

test_gaes_dm_xts() {
    cross capi:gaes_xts-plain64 aes-xts-plain64 64
}

test_gaes_dm_xts_4k() {
    cross capi:gaes_xts-plain64 aes-xts-plain64 64 sector_size:4096
}

test_gaes_dm_ctr() {
    cross capi:gaes_ctr-plain64 'capi:ctr(aes)-plain64' 32
}

test_gaes_dm_ecb() {
    cross capi:gaes_ecb aes-ecb 16
}

test_gaes_dm_cbc() {
    cross capi:gaes_cbc-plain64 aes-cbc-plain64 32
}

# ---- the load-time choice (gaes_policy) ----------------------------------------

# gaes_decisions_check: every mode's debugfs decision line agrees with the
# cost model recomputed from its own inputs; the chosen path ("gpu" 0/1) is
# the model's answer at the largest batch.
gaes_decisions_check() {
    for m in ecb cbc ctr xts; do
        line=$(sed -n "s/^decision $m: //p" $G)
        [ -n "$line" ] || { echo "no decision line for $m"; cat $G; return 1; }
        decision_check "$line" || { echo "$m: $line"; return 1; }
        if [ "$d_reason" = gpu ]; then want=1; else want=0; fi
        expect_eq "$m: gpu for reason $d_reason" "$d_gpu" $want || return 1
        echo "    $m: $line" >> /tmp/t.info
    done
}

# policy_write MODE: 1 MiB through dm-crypt capi:gaes_xts with the policy in
# force, read back through the kernel's own aes-xts-plain64; the gaes
# counters of the write in /tmp/gaes-pol.stats.
policy_write() {
    dm_setup 1 || { dm_teardown; return 1; }
    key=$(hexkey 64)
    dd if=/dev/urandom of=/tmp/gaes-plain bs=1M count=1 2>/dev/null
    echo reset > $G
    r=1
    dm_write capi:gaes_xts-plain64 $key /tmp/gaes-plain && cp $G /tmp/gaes-pol.stats &&
        dm_read aes-xts-plain64 $key /tmp/gaes-back &&
        { cmp /tmp/gaes-plain /tmp/gaes-back || { echo "data reads back wrong"; false; }; } && r=0
    dm_teardown
    [ $r = 0 ] || return 1
    pg=$(gstat gpu_requests /tmp/gaes-pol.stats) pc=$(gstat cpu_policy /tmp/gaes-pol.stats)
    pb=$(gstat batch_cpu /tmp/gaes-pol.stats)
    echo "  $1: gpu_requests=$pg cpu_policy=$pc batch_cpu=$pb cpu_redo=$(gstat cpu_redo /tmp/gaes-pol.stats) requests=$(gstat requests /tmp/gaes-pol.stats)" >> /tmp/t.info
}

# policy_follows LABEL: under `auto`, dm-crypt xts goes where the decision
# says: every request placed in a batch when it is gpu (batches below the
# threshold are redone on the CPU), none when it is cpu.
policy_follows() {
    decision_check "$(sed -n "s/^decision xts: //p" $G)" || return 1
    policy_write "$1: xts gpu $d_gpu threshold $d_threshold" || return 1
    if [ "$d_gpu" = 1 ]; then
        expect_eq cpu_policy "$pc" 0 && [ $((pg + pb)) -gt 0 ] || { cat /tmp/gaes-pol.stats; return 1; }
    else
        expect_eq gpu_requests "$pg" 0 && [ "$pc" -gt 0 ] || { cat /tmp/gaes-pol.stats; return 1; }
    fi
}

# gaes_policy: the kernel's own AES is timed per mode at load (logged, the
# driver named); with a helper that publishes no GPU path `auto` keeps every
# request on the CPU; with GPU figures published (--gpu-figures, for this
# test: the CPU backend still answers) `auto` decides per mode from the
# numbers it logs, and dm-crypt follows the decision; `gpu` and `cpu` force
# either path whatever the figures say.
test_gaes_policy() {
    for m in ecb cbc ctr xts; do
        dmesg | grep -qE "kgpu: gaes: $m\(aes\): cpu [^ ]+ [1-9][0-9]* MB/s/core \(gaes's own cpu path [^ ]+ [1-9][0-9]* MB/s/core\)" \
            || { dmesg | grep 'kgpu: gaes'; echo "no timing of $m at load"; return 1; }
    done
    dmesg | grep -qE 'kgpu: copies: [1-9][0-9]* MB/s' || { echo "no copy timing at load"; return 1; }
    dmesg | grep -E 'kgpu: (copies|gaes: [a-z]+\(aes\): cpu [^(]*\(gaes)' | sed 's/^\[[ 0-9.]*\] //' >> /tmp/t.info
    echo auto > $P/gaes_policy || return 1
    # No GPU path published: the CPU.
    start_server $(helper_cmd) || { echo gpu > $P/gaes_policy; return 1; }
    for m in ecb cbc ctr xts; do
        dmesg | tail -n 40 | grep -q "kgpu: gaes: $m(aes): cpu (no gpu path)" \
            || { dmesg | tail -n 20; echo gpu > $P/gaes_policy; return 1; }
    done
    gaes_decisions_check || { echo gpu > $P/gaes_policy; return 1; }
    policy_write "auto, no gpu path" || { echo gpu > $P/gaes_policy; return 1; }
    expect_eq "gpu_requests, no gpu path" "$pg" 0 && [ "$pc" -gt 0 ] || { cat /tmp/gaes-pol.stats; echo gpu > $P/gaes_policy; return 1; }
    # Forced gpu: the helper, figures or not.
    echo gpu > $P/gaes_policy
    policy_write "gpu, no gpu path" || return 1
    [ "$pg" -gt 0 ] && expect_eq cpu_policy "$pc" 0 || { cat /tmp/gaes-pol.stats; return 1; }
    stop_server || return 1
    # Published figures: a fast GPU path, a small round trip and crossover.
    echo auto > $P/gaes_policy
    start_server $(helper_cmd) --gpu-figures aes=50000,20,4096 || { echo gpu > $P/gaes_policy; return 1; }
    dmesg | tail -n 40 | grep 'kgpu: gaes: [a-z]*(aes): [cg]pu' | sed 's/^\[[ 0-9.]*\] /  /' >> /tmp/t.info
    gaes_decisions_check || { echo gpu > $P/gaes_policy; return 1; }
    policy_follows "auto, figures published" || { echo gpu > $P/gaes_policy; return 1; }
    # Forced cpu: never the helper.
    echo cpu > $P/gaes_policy
    policy_write "cpu, figures published" || { echo gpu > $P/gaes_policy; return 1; }
    echo gpu > $P/gaes_policy
    expect_eq "gpu_requests under cpu" "$pg" 0 && [ "$pc" -gt 0 ] || { cat /tmp/gaes-pol.stats; return 1; }
}

# Two dm-crypt mappings with different keys written at once (two halves of
# one loop device): each stream fills batches of its own (one open batch per
# operation, key and length); both halves read back through the kernel's own
# xts(aes). Batches of 128 requests (one 64 KiB bio of 512-byte sectors),
# every request to the helper and a window of 300 ms make the batch sizes
# independent of the machine's speed: each batch is sent full, unless a
# request of the other stream cuts it short (as it did with one open batch
# per operation: 105 of 195 batches sent early, 23 of them with 1 request).
test_gaes_dm_two_keys() {
    mb=8
    start_server $(helper_cmd) || return 1
    dm_setup $mb || { dm_teardown; return 1; }
    k1=$(hexkey 64)
    k2=$(hexkey 64)
    dd if=/dev/urandom of=/tmp/gaes-plain bs=1M count=$((mb / 2)) 2>/dev/null
    dd if=/dev/urandom of=/tmp/gaes-plain2 bs=1M count=$((mb / 2)) 2>/dev/null
    r=1
    {
        dm_halves capi:gaes_xts-plain64 $k1 $k2 &&
        echo 0 > $P/gaes_cpu_max_bytes && echo 128 > $P/gaes_batch_reqs &&
        echo 300000 > $P/gaes_window_us &&
        echo reset > $G &&
        { dd if=/tmp/gaes-plain of=$da bs=64k oflag=direct conv=fsync 2>/tmp/gaes-dd.err & pa=$!; } &&
        { dd if=/tmp/gaes-plain2 of=$db bs=64k oflag=direct conv=fsync 2>/tmp/gaes-dd2.err & pb=$!; } &&
        wait $pa && wait $pb &&
        cp $G /tmp/gaes-two.stats && gaes_defaults &&
        dm_unmap gaes_a && dm_unmap gaes_b &&
        dm_halves aes-xts-plain64 $k1 $k2 &&
        dd if=$da of=/tmp/gaes-back bs=64k iflag=direct 2>/dev/null &&
        dd if=$db of=/tmp/gaes-back2 bs=64k iflag=direct 2>/dev/null &&
        { cmp /tmp/gaes-plain /tmp/gaes-back && cmp /tmp/gaes-plain2 /tmp/gaes-back2 ||
            { echo "a half reads back wrong through aes-xts-plain64"; false; }; } &&
        r=0
    }
    gaes_defaults
    dm_teardown
    rm -f /tmp/gaes-plain2 /tmp/gaes-back2
    cat /tmp/gaes-two.stats 2>/dev/null
    [ $r = 0 ] || { cat /tmp/gaes-dd.err /tmp/gaes-dd2.err 2>/dev/null; return 1; }
    st() { gstat "$1" /tmp/gaes-two.stats; }
    expect_eq helper_failed "$(st helper_failed)" 0 || return 1
    gpu=$(st gpu_requests) batches=$(st batches)
    echo "two keys at once: gpu_requests=$gpu batches=$batches avg_batch_requests=$(st avg_batch_requests) flush_full=$(st flush_full) flush_timer=$(st flush_timer) flush_nofit=$(st flush_nofit) cpu_busy=$(st cpu_busy) cpu_small=$(st cpu_small)" >> /tmp/t.info
    echo "    $(st batch_hist)" >> /tmp/t.info
    [ "$batches" -gt 0 ] || { echo "no batch reached the helper"; return 1; }
    expect_eq "requests not sent to the helper" $(( $(st requests) - gpu )) 0 || return 1
    [ "$gpu" = $(( 128 * batches )) ] && [ "$(st flush_full)" = "$batches" ] ||
        { echo "$batches batches for $gpu requests, $(st flush_full) sent full: the two streams cut each other's batches short"; return 1; }
}

# The helper killed during a long dm-crypt write: the write completes (the
# requests it held are redone on the CPU) and the data verifies.
test_gaes_dm_helper_killed() {
    mb=24
    start_server $(helper_cmd) || return 1
    dm_setup $mb || { dm_teardown; return 1; }
    key=$(hexkey 64)
    dd if=/dev/urandom of=/tmp/gaes-plain bs=1M count=$mb 2>/dev/null
    echo reset > $G
    dev=$(dm_map gaes_a capi:gaes_xts-plain64 $key) || { echo "$dev"; dm_teardown; return 1; }
    rm -f /tmp/gaes-dd.rc
    (dd if=/tmp/gaes-plain of=$dev bs=256k oflag=direct conv=fsync 2>/tmp/gaes-dd.err; echo $? > /tmp/gaes-dd.rc) &
    bg=$!
    # Kill once the helper has answered some batches.
    i=0
    while [ "$(gstat batches)" -lt 20 ] && [ ! -e /tmp/gaes-dd.rc ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i + 1)); done
    kill -9 "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=
    i=0
    while [ ! -e /tmp/gaes-dd.rc ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e /tmp/gaes-dd.rc ] || { echo "the write hangs after the helper died"; dm_teardown; return 1; }
    wait $bg
    rc=$(cat /tmp/gaes-dd.rc)
    dm_unmap gaes_a
    cat $G
    r=0
    [ "$rc" = 0 ] || { cat /tmp/gaes-dd.err; echo "dd exit $rc"; r=1; }
    if [ $r = 0 ]; then
        dm_read aes-xts-plain64 $key /tmp/gaes-back && cmp /tmp/gaes-plain /tmp/gaes-back || r=1
    fi
    dm_teardown
    [ $r = 0 ] || return 1
    gpu=$(gstat gpu_requests)
    cpu=$(( $(gstat cpu_nohelper) + $(gstat cpu_redo) ))
    echo "killed mid-write: gpu_requests=$gpu cpu_after_kill=$cpu cpu_redo=$(gstat cpu_redo)" >> /tmp/t.info
    [ "$gpu" -gt 0 ] && [ "$cpu" -gt 0 ] || { echo "the helper was not killed mid-write"; return 1; }
    wait_state detached
}

# A dm-crypt mapping on gaes holds the module: rmmod is refused (in use)
# and changes nothing; I/O on the mapping keeps working (no helper: the CPU
# path), and the data written reads back through the kernel's own xts(aes).
test_gaes_rmmod_with_mapping() {
    dm_setup $DM_MB || { dm_teardown; return 1; }
    key=$(hexkey 64)
    dd if=/dev/urandom of=/tmp/gaes-plain bs=1M count=$DM_MB 2>/dev/null
    r=1
    {
        dev=$(dm_map gaes_a capi:gaes_xts-plain64 $key) &&
        dd if=/tmp/gaes-plain of=$dev bs=64k count=4 oflag=direct conv=fsync 2>/dev/null &&
        if rmmod kgpu 2>/tmp/gaes-rmmod.err; then
            echo "rmmod succeeded with a gaes mapping open"
            false
        else
            cat /tmp/gaes-rmmod.err
        fi &&
        [ -d /sys/module/kgpu ] && [ -c /dev/kgpu ] && grep -q gaes_xts /proc/crypto &&
        dd if=/tmp/gaes-plain of=$dev bs=64k oflag=direct conv=fsync 2>/dev/null &&
        dm_unmap gaes_a &&
        dm_read aes-xts-plain64 $key /tmp/gaes-back &&
        { cmp /tmp/gaes-plain /tmp/gaes-back || { echo "data written after the refused rmmod reads back wrong"; false; }; } &&
        r=0
    }
    dm_teardown
    [ $r = 0 ] || return 1
    echo "rmmod refused: $(head -n1 /tmp/gaes-rmmod.err); ${DM_MB} MiB written through the mapping afterwards read back" >> /tmp/t.info
    # Unmapped, the module is free to go (and comes back for the next tests).
    rmmod kgpu && insmod /kgpu.ko
}

# A filesystem on a gaes mapping, written with the helper, read back with kgpu
# unloaded through the kernel's own xts(aes).
test_gaes_fs_without_kgpu() {
    [ -x /bin/mke2fs ] || { echo "mke2fs missing"; return 1; }
    start_server $(helper_cmd) || return 1
    dm_setup 32 || { dm_teardown; return 1; }
    key=$(hexkey 64)
    echo reset > $G
    mkdir -p /mnt/gaes
    r=1
    {
        dev=$(dm_map gaes_a capi:gaes_xts-plain64 $key sector_size:4096) &&
        /bin/mke2fs -q -F -t ext4 $dev && mount -t ext4 $dev /mnt/gaes &&
        for i in 1 2 3 4 5 6; do
            dd if=/dev/urandom of=/mnt/gaes/f$i bs=1k count=$((i * i * 97)) 2>/dev/null || break
        done &&
        mkdir /mnt/gaes/d && cp /mnt/gaes/f2 /mnt/gaes/d/copy &&
        (cd /mnt/gaes && md5sum f1 f2 f3 f4 f5 f6 d/copy > /tmp/gaes-sums) &&
        umount /mnt/gaes && dm_unmap gaes_a && r=0
    }
    [ $r = 0 ] || { umount /mnt/gaes 2>/dev/null; dm_teardown; return 1; }
    gpu=$(gstat gpu_requests)
    stop_server
    rmmod kgpu || { dm_teardown; return 1; }
    r=1
    {
        grep -q gaes_ /proc/crypto && { echo "gaes still registered"; false; } ||
        { dev=$(dm_map gaes_b aes-xts-plain64 $key sector_size:4096) && mount -t ext4 -o ro $dev /mnt/gaes &&
          (cd /mnt/gaes && md5sum -c /tmp/gaes-sums) && umount /mnt/gaes && dm_unmap gaes_b && r=0; }
    }
    [ $r = 0 ] || umount /mnt/gaes 2>/dev/null
    dm_teardown
    rm -f /tmp/gaes-sums
    insmod /kgpu.ko || return 1
    [ $r = 0 ] || return 1
    echo "ext4 written through gaes_xts (gpu_requests=$gpu), read with kgpu unloaded" >> /tmp/t.info
    [ "$gpu" -gt 0 ]
}

# ---- the standard cipher names, gaes chosen by priority --------------------------

CRYPTSETUP=/bin/cryptsetup
LUKS_KEY=/tmp/gaes-luks.key

# best NAME: the driver the crypto API resolves algorithm NAME to among those
# registered (the highest priority in /proc/crypto).
best() {
    awk -v want="$1" '/^name/ { n = $3 } /^driver/ { d = $3 }
        /^priority/ { if (n == want && $3 > p) { p = $3; b = d } } END { print b }' /proc/crypto
}

# A priority that is neither a number >= 0 nor "auto" is refused at insmod.
# kgpu reloaded with gaes_priority=auto: each of the four modes registers one
# above the best driver of its mode present at load (xts-aes-aesni-avx is at
# 500, above the AES-NI drivers of the other modes), so each algorithm name
# resolves to gaes.
test_gaes_priority_auto() {
    rmmod kgpu || return 1
    for bad in bogus -5 automatic; do
        if command insmod /kgpu.ko gaes_priority=$bad 2>/dev/null; then
            echo "gaes_priority=$bad accepted"
            rmmod kgpu
            insmod /kgpu.ko
            return 1
        fi
    done
    insmod /kgpu.ko gaes_priority=auto || { insmod /kgpu.ko; return 1; }
    r=0
    expect_eq "gaes_priority" "$(cat $P/gaes_priority)" auto || r=1
    info=
    for m in ecb cbc ctr xts; do
        expect_eq "highest-priority $m(aes)" "$(best "$m(aes)")" gaes_$m || r=1
        info="$info $m(aes)=$(awk -v d=gaes_$m '/^driver/ { hit = ($3 == d) } hit && /^priority/ { print $3; exit }' /proc/crypto)"
    done
    dmesg | grep 'gaes: .* before gaes' | sed 's/^\[[^]]*\] //' | tail -n 4
    rmmod kgpu && insmod /kgpu.ko || return 1
    [ $r = 0 ] || return 1
    echo "gaes_priority=auto:$info (the previous best: dmesg 'before gaes')" >> /tmp/t.info
}

# luks_open NAME: opens $LOOP's LUKS volume as /dev/mapper/NAME; prints its node.
luks_open() {
    $CRYPTSETUP open --disable-locks --key-file $LUKS_KEY $LOOP "$1" || return 1
    dm_node "$1"
}

# A LUKS2 volume made as anyone makes one (cipher aes-xts-plain64, the
# standard name: nothing kgpu-specific on disk) while gaes has the highest
# priority: the mapping runs through gaes (the helper answers its requests,
# and rmmod kgpu is refused while it is open); with kgpu unloaded the same
# volume opens through the kernel's own xts(aes) and reads back the same.
# $1: cryptsetup's --sector-size.
luks_xts() {
    ssize=$1
    [ -x $CRYPTSETUP ] || { echo "cryptsetup missing"; return 1; }
    rmmod kgpu || return 1
    insmod /kgpu.ko gaes_priority=auto || { insmod /kgpu.ko; return 1; }
    start_server $(helper_cmd) || { rmmod kgpu; insmod /kgpu.ko; return 1; }
    # LUKS2's default header takes 16 MiB of the device.
    dm_setup 24 || { dm_teardown; stop_server; rmmod kgpu; insmod /kgpu.ko; return 1; }
    hexkey 32 > $LUKS_KEY
    r=1
    {
        $CRYPTSETUP luksFormat --batch-mode --disable-locks --type luks2 \
            --cipher aes-xts-plain64 --key-size 512 --sector-size $ssize \
            --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file $LUKS_KEY $LOOP &&
        $CRYPTSETUP luksDump $LOOP | grep -q 'cipher: aes-xts-plain64' &&
        dev=$(luks_open gaes_luks) && echo reset > $G &&
        $DMSETUP table gaes_luks | grep -q ' crypt aes-xts-plain64 ' &&
        dd if=/dev/urandom of=/tmp/gaes-plain bs=1M count=4 2>/dev/null &&
        dd if=/tmp/gaes-plain of=$dev bs=64k oflag=direct conv=fsync 2>/dev/null &&
        if rmmod kgpu 2>/dev/null; then
            echo "rmmod kgpu succeeded with the LUKS mapping open: it does not use gaes"
            false
        fi &&
        gpu=$(gstat gpu_requests) &&
        $CRYPTSETUP close gaes_luks && r=0
    }
    [ $r = 0 ] || $CRYPTSETUP close gaes_luks 2>/dev/null
    cat $G
    failed=$(gstat helper_failed)
    stop_server
    rmmod kgpu || { dm_teardown; insmod /kgpu.ko; return 1; }
    if [ $r = 0 ]; then
        r=1
        if grep -q gaes_ /proc/crypto; then
            echo "gaes still registered"
        else
            dev=$(luks_open gaes_luks) &&
            dd if=$dev of=/tmp/gaes-back bs=64k count=64 iflag=direct 2>/dev/null &&
            { cmp /tmp/gaes-plain /tmp/gaes-back || { echo "read back wrong without kgpu"; false; }; } &&
            $CRYPTSETUP close gaes_luks && r=0
            [ $r = 0 ] || $CRYPTSETUP close gaes_luks 2>/dev/null
        fi
    fi
    dm_teardown
    rm -f $LUKS_KEY
    insmod /kgpu.ko || return 1
    [ $r = 0 ] || return 1
    expect_eq helper_failed "$failed" 0 || return 1
    [ "$gpu" -gt 0 ] || { echo "the LUKS mapping's requests did not reach the helper"; return 1; }
    echo "LUKS2 aes-xts-plain64, ${ssize} B sectors, gaes_priority=auto: gpu_requests=$gpu, rmmod refused while open, opened and read back with kgpu unloaded" >> /tmp/t.info
}

# The batch pool under sustained writeback: ext4 on a LUKS2 volume (4 KiB
# sectors, gaes by priority), 32 MiB written buffered and synced, once per
# pool size (gaes_max_batches 4, 8, 16). Reported per run: the share of
# dm-crypt's requests that found every batch in use and ran on the caller's
# CPU (cpu_busy). Checked: every request accounted once (queued + on the CPU
# = requests), the file intact after a remount (read-only). The share is the helper's
# throughput against the writers', not the pool's size, when it does not
# fall as the pool grows.
test_gaes_luks2_ext4_pool() {
    [ -x $CRYPTSETUP ] && [ -x /bin/mke2fs ] || { echo "cryptsetup or mke2fs missing"; return 1; }
    rmmod kgpu || return 1
    insmod /kgpu.ko gaes_priority=auto || { insmod /kgpu.ko; return 1; }
    start_server $(helper_cmd) || { rmmod kgpu; insmod /kgpu.ko; return 1; }
    dm_setup 64 || { dm_teardown; stop_server; rmmod kgpu; insmod /kgpu.ko; return 1; }
    hexkey 32 > $LUKS_KEY
    dd if=/dev/urandom of=/tmp/gaes-plain bs=1M count=32 2>/dev/null
    mkdir -p /mnt/gaes-luks
    r=1
    {
        $CRYPTSETUP luksFormat --batch-mode --disable-locks --type luks2 \
            --cipher aes-xts-plain64 --key-size 512 --sector-size 4096 \
            --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file $LUKS_KEY $LOOP &&
        dev=$(luks_open gaes_luks) &&
        /bin/mke2fs -q -t ext4 -b 4096 $dev && r=0
    }
    for nb in 4 8 16; do
        [ $r = 0 ] || break
        r=1
        echo $nb > $P/gaes_max_batches
        mount -t ext4 $dev /mnt/gaes-luks || break
        rm -f /mnt/gaes-luks/f* && sync
        echo reset > $G
        cp /tmp/gaes-plain /mnt/gaes-luks/f$nb && sync || { umount /mnt/gaes-luks; break; }
        cp $G /tmp/gaes-pool.stats
        umount /mnt/gaes-luks || break
        mount -t ext4 -o ro $dev /mnt/gaes-luks || break
        cmp /tmp/gaes-plain /mnt/gaes-luks/f$nb || { echo "f$nb differs after a remount"; umount /mnt/gaes-luks; break; }
        umount /mnt/gaes-luks || break
        q=$(gstat queued /tmp/gaes-pool.stats) n=$(gstat requests /tmp/gaes-pool.stats)
        busy=$(gstat cpu_busy /tmp/gaes-pool.stats)
        inline=$(( $(gstat cpu_nohelper /tmp/gaes-pool.stats) + $(gstat cpu_small /tmp/gaes-pool.stats) + busy + $(gstat cpu_other /tmp/gaes-pool.stats) + $(gstat cpu_policy /tmp/gaes-pool.stats) ))
        expect_eq "requests = queued + on the CPU ($nb batches)" $n $((q + inline)) || break
        [ $n -gt 0 ] || { echo "no request reached gaes"; break; }
        echo "gaes_max_batches $nb: requests $n, cpu_busy $busy ($((busy * 1000 / n / 10)).$((busy * 1000 / n % 10)) %), helper $(gstat gpu_requests /tmp/gaes-pool.stats), batches $(gstat batches /tmp/gaes-pool.stats), avg_batch_requests $(gstat avg_batch_requests /tmp/gaes-pool.stats), cpu_small $(gstat cpu_small /tmp/gaes-pool.stats)" >> /tmp/t.info
        r=0
    done
    echo 16 > $P/gaes_max_batches
    $CRYPTSETUP close gaes_luks 2>/dev/null
    stop_server
    dm_teardown
    rm -f $LUKS_KEY
    rmmod kgpu && insmod /kgpu.ko || return 1
    return $r
}

test_gaes_luks2_xts() { luks_xts 512; }
test_gaes_luks2_xts_4k() { luks_xts 4096; }

# ---- eCryptfs ------------------------------------------------------------------

ECR_LOWER=/tmp/gaes-ecr-lower
ECR_MNT=/mnt/gaes-ecr
ECRKEY=/bin/gaes-ecryptfs-key

# ecr_mount SIG KEYHEX: eCryptfs on $ECR_LOWER at $ECR_MNT, the passphrase
# token made by gaes-ecryptfs-key. The kernel options are those mount.ecryptfs
# passes for aes, 16-byte key, no plaintext passthrough, no filename
# encryption (the last two are the kernel's defaults; no_sig_cache is an
# option of mount.ecryptfs alone).
ecr_mount() {
    $ECRKEY "$1" "$2" mount -t ecryptfs $ECR_LOWER $ECR_MNT \
        -o "ecryptfs_sig=$1,ecryptfs_cipher=aes,ecryptfs_key_bytes=16"
}

# insmod with gaes_priority=1000 (above AES-NI): eCryptfs's cbc(aes) is
# gaes_cbc. Files written through it with the helper attached; the helper
# stopped, kgpu unloaded, the same lower directory mounted again with the same
# key through the kernel's own cbc(aes): checksums equal.
test_gaes_ecryptfs() {
    [ -x $ECRKEY ] || { echo "gaes-ecryptfs-key missing"; return 1; }
    rmmod kgpu || return 1
    insmod /kgpu.ko gaes_priority=1000 || { insmod /kgpu.ko; return 1; }
    r=1
    sig=$(hexkey 8)
    key=$(hexkey 16)
    rm -rf $ECR_LOWER
    mkdir -p $ECR_LOWER $ECR_MNT
    # The lower f5 holds ciphertext: after the 8 KiB header, its first
    # extent differs from the plaintext.
    {
        best=$(awk '/^name/ { n = $3 } /^driver/ { d = $3 } /^priority/ { if (n == "cbc(aes)" && $3 > p) { p = $3; b = d } }
            END { print b }' /proc/crypto)
        expect_eq "highest-priority cbc(aes)" "$best" gaes_cbc &&
        start_server $(helper_cmd) && echo reset > $G &&
        ecr_mount $sig $key &&
        for i in 1 2 3 4 5; do
            dd if=/dev/urandom of=$ECR_MNT/f$i bs=1k count=$((i * i * 37 + i)) 2>/dev/null || break
        done &&
        mkdir $ECR_MNT/d && cp $ECR_MNT/f3 $ECR_MNT/d/copy &&
        printf 'short\n' > $ECR_MNT/d/small &&
        (cd $ECR_MNT && md5sum f1 f2 f3 f4 f5 d/copy d/small > /tmp/gaes-sums) && sync &&
        { [ "$(dd if=$ECR_LOWER/f5 bs=4096 skip=2 count=1 2>/dev/null | md5sum)" != \
            "$(head -c 4096 $ECR_MNT/f5 | md5sum)" ] || { echo "f5 stored in the clear"; false; }; } &&
        umount $ECR_MNT && r=0
    }
    [ $r = 0 ] || umount $ECR_MNT 2>/dev/null
    cat $G
    gpu=$(gstat gpu_requests)
    failed=$(gstat helper_failed)
    stop_server
    rmmod kgpu || { insmod /kgpu.ko; rm -rf $ECR_LOWER /tmp/gaes-sums; return 1; }
    if [ $r = 0 ]; then
        r=1
        if grep -q gaes_ /proc/crypto; then
            echo "gaes still registered"
        else
            ecr_mount $sig $key && (cd $ECR_MNT && md5sum -c /tmp/gaes-sums) && umount $ECR_MNT && r=0
            [ $r = 0 ] || umount $ECR_MNT 2>/dev/null
        fi
    fi
    rm -rf $ECR_LOWER /tmp/gaes-sums
    insmod /kgpu.ko || return 1
    [ $r = 0 ] || return 1
    expect_eq helper_failed "$failed" 0 || return 1
    [ "$gpu" -gt 0 ] || { echo "eCryptfs did not go through gaes (no helper request)"; return 1; }
    echo "eCryptfs (cbc(aes) = gaes_cbc, priority 1000): gpu_requests=$gpu, files read back by stock eCryptfs with kgpu unloaded" >> /tmp/t.info
}

# ---- run -----------------------------------------------------------------------

# A suite that picks its own tests sources this file for its definitions only.
[ -n "$KGPU_DEFINE_ONLY" ] && return 0

if grep -q gaes_ /proc/crypto 2>/dev/null; then
    t gaes_proc_crypto_selftest_passed test_gaes_proc_crypto
    t gaes_priority_auto_wins test_gaes_priority_auto
    if [ -x $AFALG ]; then
        t gaes_afalg_vs_generic_no_helper test_gaes_afalg_nohelper
    else
        skip gaes_afalg "gaes-afalg not built (no static gcc on the host)"
    fi
    if [ -n "$HAVE_HELPER" ]; then
        [ -x $AFALG ] && t gaes_afalg_vs_generic_helper test_gaes_afalg_helper
        t gaes_testmgr_with_helper test_gaes_selftest_helper
        if [ -x $DMSETUP ]; then
            t gaes_dmcrypt_xts_cross_read test_gaes_dm_xts
            t gaes_dmcrypt_xts_4k_cross_read test_gaes_dm_xts_4k
            t gaes_dmcrypt_ctr_cross_read test_gaes_dm_ctr
            t gaes_dmcrypt_cbc_cross_read test_gaes_dm_cbc
            t gaes_dmcrypt_ecb_cross_read test_gaes_dm_ecb
            t gaes_dmcrypt_two_keys_at_once test_gaes_dm_two_keys
            t gaes_policy_auto_gpu_cpu test_gaes_policy
            t gaes_dmcrypt_helper_killed test_gaes_dm_helper_killed
            t gaes_rmmod_refused_with_mapping test_gaes_rmmod_with_mapping
            if [ -x /bin/mke2fs ]; then
                t gaes_ext4_read_without_kgpu test_gaes_fs_without_kgpu
            else
                skip gaes_ext4 "mke2fs not in the initramfs"
            fi
            if [ -x $CRYPTSETUP ]; then
                t gaes_luks2_xts_by_priority test_gaes_luks2_xts
                t gaes_luks2_xts_4k_by_priority test_gaes_luks2_xts_4k
                t gaes_luks2_ext4_writeback_pool test_gaes_luks2_ext4_pool
            else
                skip gaes_luks2 "cryptsetup not in the initramfs"
            fi
        else
            skip gaes_dmcrypt "dmsetup not in the initramfs"
        fi
        if [ -x $ECRKEY ]; then
            t gaes_ecryptfs_read_without_kgpu test_gaes_ecryptfs
        else
            skip gaes_ecryptfs "gaes-ecryptfs-key not built (no static gcc on the host)"
        fi
    else
        skip gaes_helper "no helper (gaes helper tests not run)"
    fi
else
    t gaes_registered test_gaes_proc_crypto
fi
