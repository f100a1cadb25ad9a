//! Model checks of the ring protocol with loom:
//! `RUSTFLAGS="--cfg loom" cargo test -p kgpu-common --test loom --release`.
#![cfg(loom)]

use kgpu_common::abi::RingIndices;
use kgpu_common::ring::{arm, disarm, must_wake, Consumer, Producer};
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::Arc;

struct Shared {
    idx: RingIndices,
    recs: [UnsafeCell<u64>; 2],
    flags: AtomicU32,
    doorbell: AtomicU32,
    done: AtomicU32,
}
// SAFETY: records are accessed only through the ring protocol under test.
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

fn shared() -> Arc<Shared> {
    Arc::new(Shared {
        idx: RingIndices::new(),
        recs: [UnsafeCell::new(0), UnsafeCell::new(0)],
        flags: AtomicU32::new(0),
        doorbell: AtomicU32::new(0),
        done: AtomicU32::new(0),
    })
}

fn ends(sh: &Shared) -> (Producer<u64>, Consumer<u64>) {
    let recs = sh.recs.as_ptr() as *mut UnsafeCell<u64>;
    // SAFETY: `sh` outlives the ends in each model; one producer, one consumer.
    unsafe {
        (
            Producer::new(&sh.idx, recs, 2),
            Consumer::new(&sh.idx, recs, 2),
        )
    }
}

/// Publish/consume: every record written is read intact, in order, through
/// wraparound of a two-entry ring (loom flags any data race on a record).
#[test]
fn publish_consume() {
    loom::model(|| {
        let sh = shared();
        let sh2 = sh.clone();
        let t = loom::thread::spawn(move || {
            let (mut p, _) = ends(&sh2);
            let mut i = 1;
            while i <= 3 {
                if p.push(i * 11).is_ok() {
                    i += 1;
                } else {
                    loom::thread::yield_now();
                }
            }
        });
        let (_, mut c) = ends(&sh);
        let mut want = 1;
        while want <= 3 {
            match c.pop().unwrap() {
                Some(v) => {
                    assert_eq!(v, want * 11);
                    want += 1;
                }
                None => loom::thread::yield_now(),
            }
        }
        t.join().unwrap();
    });
}

/// NEED_WAKEUP: a consumer that arms, re-checks and then "sleeps" on the
/// doorbell value it read before arming is never left asleep with a record
/// pending (no lost wakeup).
#[test]
fn need_wakeup_handshake() {
    loom::model(|| {
        let sh = shared();
        let sh2 = sh.clone();
        let producer = loom::thread::spawn(move || {
            let (mut p, _) = ends(&sh2);
            p.push(7).unwrap();
            if must_wake(&sh2.flags, 1) {
                sh2.doorbell.fetch_add(1, Ordering::SeqCst);
            }
            sh2.done.store(1, Ordering::SeqCst);
        });
        let (_, mut c) = ends(&sh);
        let got = loop {
            if let Some(v) = c.pop().unwrap() {
                break v;
            }
            let bell = sh.doorbell.load(Ordering::SeqCst);
            arm(&sh.flags, 1);
            if let Some(v) = c.pop().unwrap() {
                disarm(&sh.flags, 1);
                break v;
            }
            // Sleep: a futex would block while the doorbell still equals
            // `bell`. If the producer has finished without ringing, the sleep
            // would never end: a lost wakeup.
            loop {
                // `done` first: once it reads 1, the producer's ring (if any)
                // is visible to the doorbell load that follows.
                let finished = sh.done.load(Ordering::SeqCst) == 1;
                if sh.doorbell.load(Ordering::SeqCst) != bell {
                    break;
                }
                assert!(
                    !finished,
                    "lost wakeup: record published, consumer asleep, no doorbell"
                );
                loom::thread::yield_now();
            }
            disarm(&sh.flags, 1);
        };
        assert_eq!(got, 7);
        producer.join().unwrap();
    });
}
