// SPDX-License-Identifier: GPL-2.0-only

//! In-guest test program for the kgpu module.
//!
//! ```text
//! kgpu-ktest open-twice          a second opener of /dev/kgpu gets EBUSY
//! kgpu-ktest open-as-nobody      uid 65534 cannot open /dev/kgpu
//! kgpu-ktest attach-errors       every malformed attach gets its errno; a good one works
//! kgpu-ktest serve [MODE] [SEED]  a minimal helper serving ECHO; MODE picks a misbehaviour:
//!     echo      answer correctly (default)
//!     garbage   post invalid completions (bad slot, stale generation, generation
//!               0, a slot never submitted, unknown status, overlong byte counts)
//!               around the correct one, a duplicate right after it and another
//!               one round later, once the kernel has taken it
//!     silent    take requests and never answer
//!     corrupt   answer a few, then write an impossible completion-ring tail
//!     wrongdata answer with one byte changed
//!     freeze    answer 100 requests, then stop everything, heartbeat included
//!     drain     answer correctly, ask the kernel to drain after 200 requests,
//!               exit when poll() reports POLLHUP
//!     random    eight hostile sessions (seeded: SEED, printed): random writes all
//!               over the region (header page, both rings' indices, submission
//!               and completion records, the data area) mixed with correct
//!               answers, error answers, no answers and records of random
//!               bytes; a session ends when the kernel hangs up, when our own
//!               end of a ring is broken, or after 300 requests or 4 s, and the
//!               next one attaches a fresh region; then it serves correctly
//!     jumps     head/tail jumps, one per session (completion tail a ring ahead,
//!               a ring and one ahead, 2^31 ahead, one back, u32::MAX;
//!               submission head past the kernel's tail, more than a ring
//!               behind, half a ring back), each checked against the kernel's
//!               counters and state; then it serves correctly
//!     header    overwrite every layout field of the header (and its reserved
//!               bytes) after every round while answering 1000 requests; then
//!               check that the kernel kept its geometry, that the same region
//!               cannot be attached again, and serve correctly after restoring it
//!     race      answer 2000 requests correctly while a second thread rewrites
//!               completion records the kernel may be copying at that moment
//!               (published and not yet consumed, or about to be published):
//!               the (slot, generation) of another request in flight, random
//!               ones, a small status, a small byte count; then serve correctly
//! ```
//!
//! The hostile modes print `figures (...)` lines (records written, random
//! writes by target, sessions) for the tests to compare with the kernel's
//! counters, and `ok:`/`not ok:` lines for their own checks.
//!
//! What the random mode leaves alone, and why: the kernel cannot tell a
//! correct answer from a wrong one (see `wrongdata`), so random bytes never
//! go where they would turn an answer posted as correct into wrong data: the
//! data-area writes hit the extents of requests it then fails or leaves
//! unanswered; submission records are written only where the kernel cannot
//! be writing (more than 64 entries past our head) and get an invalid slot;
//! completion records only where the kernel is not reading, and get an
//! invalid generation; indices the other side checks are moved anywhere
//! except "ahead by at most a ring" of the owner's copy, which would let a
//! side overwrite entries the other is reading (the completion tail may move
//! so: we then go on from there, as the kernel does).
//!
//! The race mode is the exception: it writes, on purpose, records the kernel
//! is reading, some of them valid answers for another request, so it can make
//! the kernel accept a wrong answer (as `wrongdata` does). What it checks is
//! that the kernel validates its own copy of each record: no request
//! completed twice, none lost, nothing touched outside the region.
//!
//! It exercises the kernel's side of the protocol with a peer the tests
//! control, including a hostile one; the real helper is tested separately.

use kgpu_common::abi::{self, service, Cqe, RegionHeader, RingIndices, Sqe, Status};
use kgpu_common::ioctl::{AttachArgs, KGPU_IOC_ATTACH, KGPU_IOC_DOORBELL, KGPU_IOC_DRAIN};
use kgpu_common::region::{init_header, Geometry, KNOWN_FEATURES};
use kgpu_common::request::check_sqe;
use kgpu_common::ring::{Consumer, Producer, RingError};
use std::ffi::{c_int, c_short, c_uint, c_ulong, c_void};
use std::fs::{File, OpenOptions};
use std::io;
use std::mem::size_of;
use std::os::fd::AsRawFd;
use std::process::exit;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const DEV: &str = "/dev/kgpu";

extern "C" {
    fn ioctl(fd: c_int, req: c_ulong, ...) -> c_int;
    fn memfd_create(name: *const u8, flags: c_uint) -> c_int;
    fn ftruncate(fd: c_int, len: i64) -> c_int;
    fn mmap(
        addr: *mut c_void,
        len: usize,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        off: i64,
    ) -> *mut c_void;
    fn munmap(addr: *mut c_void, len: usize) -> c_int;
    fn mlock(addr: *const c_void, len: usize) -> c_int;
    fn setuid(uid: c_uint) -> c_int;
    fn setgid(gid: c_uint) -> c_int;
    fn poll(fds: *mut PollFd, n: c_ulong, timeout: c_int) -> c_int;
}

#[repr(C)]
struct PollFd {
    fd: c_int,
    events: c_short,
    revents: c_short,
}
const POLLIN: c_short = 1;
const POLLHUP: c_short = 0x10;
const PROT_RW: c_int = 3;
const MAP_SHARED: c_int = 1;

const EFAULT: i32 = 14;
const EBUSY: i32 = 16;
const EINVAL: i32 = 22;
const EFBIG: i32 = 27;
const ENOTTY: i32 = 25;
const EPROTO: i32 = 71;
const EBADMSG: i32 = 74;
const EACCES: i32 = 13;
const EPERM: i32 = 1;

struct Checks {
    failed: u32,
}

impl Checks {
    fn check(&mut self, name: &str, ok: bool, detail: String) {
        if ok {
            println!("ok: {name}");
        } else {
            println!("not ok: {name}: {detail}");
            self.failed += 1;
        }
    }
    fn finish(self) -> ! {
        exit(if self.failed == 0 { 0 } else { 1 })
    }
}

fn open_dev() -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(DEV)
}

fn errno_of(r: &io::Result<File>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn do_ioctl(f: &File, req: u32, arg: *const c_void) -> i32 {
    // SAFETY: the kgpu ioctls read at most one AttachArgs from `arg`; the
    // tests pass either a valid AttachArgs or a deliberately bad pointer,
    // which the kernel must reject with EFAULT.
    let rc = unsafe { ioctl(f.as_raw_fd(), req as c_ulong, arg) };
    if rc == 0 {
        0
    } else {
        io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    }
}

/// A memfd-backed region mapped into this process.
struct Region {
    _fd: File,
    base: *mut u8,
    len: usize,
    geom: Geometry,
}

impl Region {
    fn new(sq: u32, cq: u32, data: u64) -> Region {
        Region::with_slack(sq, cq, data, 0)
    }

    /// A region whose mapping is `slack` bytes longer than its header says.
    fn with_slack(sq: u32, cq: u32, data: u64, slack: usize) -> Region {
        let geom = Geometry::new(sq, cq, data).expect("geometry");
        let len = geom.region_size as usize + slack;
        // SAFETY: plain syscalls; results are checked.
        unsafe {
            let fd = memfd_create(c"kgpu-ktest".as_ptr().cast(), 1);
            assert!(fd >= 0, "memfd_create: {}", io::Error::last_os_error());
            let file = <File as std::os::fd::FromRawFd>::from_raw_fd(fd);
            assert_eq!(ftruncate(fd, len as i64), 0, "ftruncate");
            let p = mmap(std::ptr::null_mut(), len, PROT_RW, MAP_SHARED, fd, 0);
            assert!(p as isize != -1, "mmap: {}", io::Error::last_os_error());
            let _ = mlock(p, len);
            init_header(p.cast(), &geom, KNOWN_FEATURES);
            Region {
                _fd: file,
                base: p.cast(),
                len,
                geom,
            }
        }
    }

    fn args(&self) -> AttachArgs {
        AttachArgs {
            version: abi::ABI_VERSION,
            flags: 0,
            addr: self.base as u64,
            len: self.len as u64,
        }
    }

    fn header(&self) -> &RegionHeader {
        // SAFETY: the header is the first page of our live mapping.
        unsafe { &*self.base.cast::<RegionHeader>() }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: our own mapping; the device that may have pinned it is
        // closed before the region is dropped (see `Session`).
        unsafe { munmap(self.base.cast(), self.len) };
    }
}

fn attach(f: &File, a: &AttachArgs) -> i32 {
    do_ioctl(f, KGPU_IOC_ATTACH, (a as *const AttachArgs).cast())
}

fn open_twice() -> ! {
    let mut c = Checks { failed: 0 };
    let first = open_dev();
    c.check(
        "first open succeeds",
        first.is_ok(),
        format!("{:?}", first.as_ref().err()),
    );
    let second = open_dev();
    c.check(
        "second open gets EBUSY",
        errno_of(&second) == EBUSY,
        format!("errno {}", errno_of(&second)),
    );
    drop(second);
    drop(first);
    let third = open_dev();
    c.check(
        "open after close succeeds",
        third.is_ok(),
        format!("{:?}", third.as_ref().err()),
    );
    c.finish()
}

fn open_as_nobody() -> ! {
    let mut c = Checks { failed: 0 };
    // SAFETY: plain syscalls dropping privileges for the rest of the process.
    let dropped = unsafe { setgid(65534) == 0 && setuid(65534) == 0 };
    c.check(
        "dropped to uid 65534",
        dropped,
        io::Error::last_os_error().to_string(),
    );
    let r = open_dev();
    let e = errno_of(&r);
    c.check(
        "open refused (EACCES or EPERM)",
        e == EACCES || e == EPERM,
        format!("errno {e}"),
    );
    c.finish()
}

/// Attaches one well-formed region and prints the outcome (`errno 0` when
/// attached); the region goes with the process.
fn attach_one() -> ! {
    let f = open_dev().expect("open /dev/kgpu");
    let r = Region::new(64, 128, 1 << 20);
    println!("attach: errno {}", attach(&f, &r.args()));
    exit(0)
}

fn attach_errors() -> ! {
    let mut c = Checks { failed: 0 };
    let f = open_dev().expect("open /dev/kgpu");
    let r = Region::new(64, 128, 1 << 20);
    let good = r.args();
    let attaches0 = stat_u64("attaches");
    let refused0 = stat_u64("attach_refused");
    let sq_tail = || {
        // SAFETY: the submission ring's indices inside our live mapping.
        unsafe { &(*r.base.add(r.geom.sq_off as usize).cast::<RingIndices>()).tail }
    };
    // A mark a successful attach would reset.
    sq_tail().store(7, Ordering::Release);
    let mut expect = |name: &str, a: AttachArgs, want: i32| {
        let got = attach(&f, &a);
        c.check(name, got == want, format!("errno {got}, wanted {want}"));
    };
    expect(
        "wrong ABI version",
        AttachArgs {
            version: good.version + 1,
            ..good
        },
        EPROTO,
    );
    expect("reserved flags", AttachArgs { flags: 1, ..good }, EINVAL);
    expect(
        "unaligned address",
        AttachArgs {
            addr: good.addr + 8,
            ..good
        },
        EINVAL,
    );
    expect(
        "length not whole pages",
        AttachArgs {
            len: good.len - 100,
            ..good
        },
        EINVAL,
    );
    expect("length too small", AttachArgs { len: 4096, ..good }, EINVAL);
    expect(
        "length over max_region_mb",
        AttachArgs {
            len: 1 << 40,
            ..good
        },
        EFBIG,
    );
    expect(
        "address wraps",
        AttachArgs {
            addr: !4095,
            ..good
        },
        EFAULT,
    );
    expect(
        "unmapped address",
        AttachArgs {
            addr: 0x1000_0000_0000,
            ..good
        },
        EFAULT,
    );
    expect(
        "length past the mapping",
        AttachArgs {
            len: good.len + (64 << 20),
            ..good
        },
        EFAULT,
    );
    // A header that does not match the region it lies in.
    expect(
        "region shorter than its header says",
        AttachArgs {
            len: good.len - 4096,
            ..good
        },
        EBADMSG,
    );
    // SAFETY: our own mapping; the kernel is not attached to it.
    unsafe { (*r.base.cast::<RegionHeader>()).magic ^= 1 };
    expect("bad magic", good, EBADMSG);
    // SAFETY: as above.
    unsafe { (*r.base.cast::<RegionHeader>()).magic ^= 1 };
    // SAFETY: as above.
    unsafe { (*r.base.cast::<RegionHeader>()).sq_entries = 63 };
    expect("ring size not a power of two", good, EBADMSG);
    // SAFETY: as above.
    unsafe { (*r.base.cast::<RegionHeader>()).sq_entries = 64 };
    let bad_ptr = do_ioctl(&f, KGPU_IOC_ATTACH, 16 as *const c_void);
    c.check(
        "argument pointer unreadable",
        bad_ptr == EFAULT,
        format!("errno {bad_ptr}"),
    );
    let kernel_ptr = do_ioctl(
        &f,
        KGPU_IOC_ATTACH,
        0xffff_8880_0000_0000u64 as *const c_void,
    );
    c.check(
        "argument pointer into the kernel",
        kernel_ptr == EFAULT,
        format!("errno {kernel_ptr}"),
    );
    // A region larger than its header says (the mapping is really that long).
    let big = Region::with_slack(64, 128, 1 << 20, 4096);
    let got = attach(&f, &big.args());
    c.check(
        "region longer than its header says",
        got == EBADMSG,
        format!("errno {got}"),
    );
    drop(big);
    let unknown = do_ioctl(&f, 0x4b7f, std::ptr::null());
    c.check(
        "unknown ioctl",
        unknown == ENOTTY,
        format!("errno {unknown}"),
    );
    // ATTACH's number encodes the argument's size: another size is another
    // (unknown) command.
    for size in [size_of::<AttachArgs>() - 8, size_of::<AttachArgs>() + 8] {
        let cmd = (KGPU_IOC_ATTACH & !(0x3fff << 16)) | ((size as u32) << 16);
        let got = do_ioctl(&f, cmd, (&good as *const AttachArgs).cast());
        c.check(
            &format!("ATTACH with argument size {size}"),
            got == ENOTTY,
            format!("errno {got}"),
        );
    }
    // No refusal changed anything: no attach counted, every refusal counted
    // once, the rings (which a successful attach resets) untouched.
    let refusals = 15;
    let attaches = stat_u64("attaches").wrapping_sub(attaches0);
    let refused = stat_u64("attach_refused").wrapping_sub(refused0);
    c.check(
        "refusals left no attach",
        attaches == 0 && stat("state") == "detached",
        format!("attaches +{attaches}, state {}", stat("state")),
    );
    c.check(
        "every refusal counted once",
        refused == refusals,
        format!("attach_refused +{refused}, wanted +{refusals}"),
    );
    c.check(
        "refusals left the region alone",
        sq_tail().load(Ordering::Acquire) == 7 && r.header().cq_flags.load(Ordering::Acquire) == 0,
        "ring indices or flags written".into(),
    );
    let got = attach(&f, &good);
    c.check("good attach", got == 0, format!("errno {got}"));
    // Claim the region as the helper does; the kernel resets it at detach.
    r.header()
        .helper_state
        .store(abi::helper_state::ATTACHED, Ordering::Release);
    let again = attach(&f, &good);
    c.check(
        "second attach gets EBUSY",
        again == EBUSY,
        format!("errno {again}"),
    );
    let bell = do_ioctl(&f, KGPU_IOC_DOORBELL, std::ptr::null());
    c.check(
        "doorbell while attached",
        bell == 0,
        format!("errno {bell}"),
    );
    drop(f);
    c.check(
        "close detaches and resets helper_state",
        r.header().helper_state.load(Ordering::Acquire) == abi::helper_state::DETACHED,
        "helper_state not DETACHED".into(),
    );
    drop(r);
    c.finish()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Echo,
    Garbage,
    Silent,
    Corrupt,
    WrongData,
    Drain,
    Freeze,
    Random,
    Jumps,
    Header,
    Race,
}

const STATS: &str = "/sys/kernel/debug/kgpu/stats";

/// A line `NAME: VALUE` of the kernel's stats file.
fn stat(name: &str) -> String {
    let text = std::fs::read_to_string(STATS).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .unwrap_or("?")
        .to_owned()
}

fn stat_u64(name: &str) -> u64 {
    stat(name).parse().unwrap_or(u64::MAX)
}

/// splitmix64: reproducible from the seed the test prints.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn fill(&mut self, dst: *mut u8, len: usize) {
        for i in 0..len {
            // SAFETY: callers pass a range inside the mapped region.
            unsafe { std::ptr::write_volatile(dst.add(i), self.next() as u8) };
        }
    }
}

/// What a serving run did, printed so that the tests can compare it with the
/// kernel's counters.
#[derive(Clone, Default, PartialEq, Eq)]
struct Figures {
    /// Submissions taken off the ring.
    requests: u64,
    /// Correct answers posted.
    answers: u64,
    /// Error answers posted (a valid error status, no bytes).
    errors: u64,
    /// Requests never answered.
    unanswered: u64,
    /// Records posted that the kernel must reject (garbage, jumps).
    bad_records: u64,
    /// Records of random bytes posted.
    random_records: u64,
    /// Random writes into the region, by target.
    scribbles: [u64; SCRIBBLE_TARGETS],
    scribbled_bytes: u64,
    /// Random writes into the extents of requests then failed or left
    /// unanswered (random mode).
    data_scribbles: u64,
    /// Header layout overwrites (header mode).
    header_overwrites: u64,
    /// Attaches after the first (random, jumps).
    reattaches: u64,
    /// Sessions the kernel ended with POLLHUP.
    hangups: u64,
    /// Sessions ended because the helper's own end of a ring was corrupted.
    helper_ring_errors: u64,
}

const SCRIBBLE_TARGETS: usize = 7;
const SCRIBBLE_NAMES: [&str; SCRIBBLE_TARGETS] = [
    "header",
    "sq_head",
    "sq_tail",
    "cq_head",
    "cq_tail",
    "sq_records",
    "cq_records",
];

impl Figures {
    fn print(&self, label: &str) {
        let mut by = String::new();
        for (n, c) in SCRIBBLE_NAMES.iter().zip(self.scribbles) {
            by.push_str(&format!(" {n}={c}"));
        }
        println!(
            "kgpu-ktest: figures ({label}): requests={} answers={} errors={} unanswered={} bad_records={} random_records={} scribbles={} scribbled_bytes={} data_scribbles={} header_overwrites={} reattaches={} hangups={} helper_ring_errors={} |{by}",
            self.requests,
            self.answers,
            self.errors,
            self.unanswered,
            self.bad_records,
            self.random_records,
            self.scribbles.iter().sum::<u64>(),
            self.scribbled_bytes,
            self.data_scribbles,
            self.header_overwrites,
            self.reattaches,
            self.hangups,
            self.helper_ring_errors
        );
    }
}

/// One attached region and the helper's ends of its rings.
struct Session {
    /// Dropped first: closing detaches before the region is unmapped.
    f: File,
    r: Region,
    sq: Consumer<Sqe>,
    cq: Producer<Cqe>,
}

/// The helper's ends of the rings of `r`, starting from the indices found there.
fn ring_ends(r: &Region) -> (Consumer<Sqe>, Producer<Cqe>) {
    let g = r.geom;
    // SAFETY: offsets from the geometry we created; the mapping lives as long
    // as the region, which outlives the ends (both live in one `Session`); the
    // callers drop the previous ends first, so there is one consumer of the SQ
    // and one producer of the CQ on this side.
    unsafe {
        (
            Consumer::<Sqe>::new(
                r.base.add(g.sq_off as usize).cast::<RingIndices>(),
                r.base.add(g.sq_records() as usize).cast(),
                g.sq_entries,
            ),
            Producer::<Cqe>::new(
                r.base.add(g.cq_off as usize).cast::<RingIndices>(),
                r.base.add(g.cq_records() as usize).cast(),
                g.cq_entries,
            ),
        )
    }
}

impl Session {
    fn start() -> Session {
        let f = open_dev().unwrap_or_else(|e| {
            eprintln!("kgpu-ktest: open {DEV}: {e}");
            exit(1)
        });
        let r = Region::new(256, 512, 8 << 20);
        let rc = attach(&f, &r.args());
        if rc != 0 {
            eprintln!("kgpu-ktest: attach: errno {rc}");
            exit(1);
        }
        Session::with(f, r)
    }

    fn with(f: File, r: Region) -> Session {
        let (sq, cq) = ring_ends(&r);
        Session { f, r, sq, cq }
    }

    fn geom(&self) -> Geometry {
        self.r.geom
    }

    fn sq_idx(&self) -> &RingIndices {
        // SAFETY: the submission ring's indices inside our live mapping.
        unsafe {
            &*self
                .r
                .base
                .add(self.r.geom.sq_off as usize)
                .cast::<RingIndices>()
        }
    }

    fn cq_idx(&self) -> &RingIndices {
        // SAFETY: the completion ring's indices inside our live mapping.
        unsafe {
            &*self
                .r
                .base
                .add(self.r.geom.cq_off as usize)
                .cast::<RingIndices>()
        }
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: the data area lies inside our mapping.
        unsafe { self.r.base.add(self.r.geom.data_off as usize) }
    }

    fn doorbell(&self) -> i32 {
        do_ioctl(&self.f, KGPU_IOC_DOORBELL, std::ptr::null())
    }

    fn heartbeat(&self) {
        self.r.header().heartbeat.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits up to `ms` for the kernel; returns poll's `revents`.
    fn wait(&self, ms: c_int) -> c_short {
        let mut p = PollFd {
            fd: self.f.as_raw_fd(),
            events: POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { poll(&mut p, 1, ms) };
        p.revents
    }

    fn hung_up(&self) -> bool {
        self.wait(0) & POLLHUP != 0
    }

    /// Re-reads the completion ring's indices (after writing them behind the
    /// producer's back).
    fn resync_cq(&mut self) {
        let (_, cq) = ring_ends(&self.r);
        self.cq = cq;
    }

    /// Our own completion-ring tail (what `publish` stores).
    fn cq_tail(&self) -> u32 {
        self.cq.publish();
        self.cq_idx().tail.load(Ordering::Acquire)
    }

    /// Our own submission-ring head (what `release` stores).
    fn sq_head(&self) -> u32 {
        self.sq.release();
        self.sq_idx().head.load(Ordering::Acquire)
    }

    /// Posts one record; false when the ring stays full or is broken.
    fn push(&mut self, c: Cqe) -> bool {
        for _ in 0..2000 {
            match self.cq.push(c) {
                Ok(()) => return true,
                Err(RingError::Full) => {
                    // Full: let the kernel reap, then retry.
                    self.doorbell();
                    if self.hung_up() {
                        return false;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(RingError::Corrupt { .. }) => return false,
            }
        }
        false
    }

    /// Closes the device (the kernel detaches) and attaches a fresh region.
    fn restart(self) -> Session {
        drop(self);
        let state = stat("state");
        if state != "detached" {
            println!("not ok: state after close is '{state}', wanted 'detached'");
        }
        Session::start()
    }
}

/// The correct answer to `sqe` (ECHO only), the output written.
fn answer(sqe: &Sqe, data: *mut u8, data_size: u64, wrong: bool) -> Cqe {
    let mut cqe = Cqe {
        slot: sqe.slot,
        gen: sqe.gen,
        status: Status::Ok.raw(),
        backend: abi::backend::CPU,
        bytes: 0,
        nanos: 0,
    };
    match check_sqe(sqe, data_size) {
        Ok(x) if sqe.service == service::ECHO && x.output.len >= x.input.len => {
            // SAFETY: both extents were checked to lie in the data area.
            unsafe {
                std::ptr::copy(
                    data.add(x.input.off as usize),
                    data.add(x.output.off as usize),
                    x.input.len as usize,
                );
                if wrong && x.input.len > 0 {
                    *data.add(x.output.off as usize) ^= 0x5a;
                }
            }
            cqe.bytes = x.input.len;
        }
        Ok(_) if sqe.service != service::ECHO => cqe.status = Status::UnknownService.raw(),
        Ok(_) => cqe.status = Status::BadLength.raw(),
        Err(s) => cqe.status = s.raw(),
    }
    cqe
}

/// A record of random bytes.
fn random_cqe(rng: &mut Rng) -> Cqe {
    Cqe {
        slot: rng.next() as u32,
        gen: rng.next() as u32,
        status: rng.next() as i32,
        backend: rng.next() as u32,
        bytes: rng.next(),
        nanos: rng.next(),
    }
}

/// An index value for a random write that is never "ahead by at most a ring"
/// of `own`: behind it, far ahead, or random.
fn index_not_just_ahead(rng: &mut Rng, own: u32, entries: u32) -> u32 {
    let v = match rng.below(3) {
        0 => rng.next() as u32,
        1 => own.wrapping_sub(1 + rng.below(2 * u64::from(entries)) as u32),
        _ => own.wrapping_add(entries + 1 + rng.below(1 << 20) as u32),
    };
    if v.wrapping_sub(own) <= entries {
        own.wrapping_sub(1)
    } else {
        v
    }
}

/// In-flight submissions live in the first `SQ_BUSY` entries from the
/// helper's head: the self-test keeps at most 64 requests in flight.
const SQ_BUSY: u32 = 64;

/// Random mode: how many sessions are hostile before it behaves.
const RANDOM_SESSIONS: u64 = 8;
/// Random mode: a hostile session ends after this many requests or this long.
const RANDOM_SESSION_REQUESTS: u64 = 300;
const RANDOM_SESSION_MS: u128 = 4000;

/// One random write somewhere in the region (never into a record or extent
/// the kernel may be reading as a correct answer: see the `random` mode).
fn scribble(s: &mut Session, rng: &mut Rng, fig: &mut Figures) {
    let g = s.geom();
    // Mostly places the kernel must ignore or check; the kernel-owned
    // indices (which it never reads back) rarely, as they mostly break our
    // own end of the ring and end the session.
    let target = match rng.below(1000) {
        0..=299 => 0,
        300..=309 => 1,
        310..=314 => 2,
        315..=319 => 3,
        320..=329 => 4,
        330..=664 => 5,
        _ => 6,
    };
    // Index writes store one u32; the others 1 to 16 random bytes.
    let len = if (1..=4).contains(&target) {
        4
    } else {
        1 + rng.below(16) as usize
    };
    match target {
        0 => {
            // Anywhere in the header page: layout fields, flags, doorbells,
            // helper_state, heartbeat, reserved bytes.
            let off = rng.below(u64::from(abi::HEADER_SIZE) - len as u64) as usize;
            // SAFETY: inside the header page of our mapping.
            rng.fill(unsafe { s.r.base.add(off) }, len);
        }
        1 => {
            // Ours: the kernel checks it (a head past its tail or more than
            // a ring behind is corrupt; a head ahead of what we consumed
            // would let the kernel overwrite entries we read: not written).
            let own = s.sq_head();
            let v = index_not_just_ahead(rng, own, g.sq_entries);
            s.sq_idx().head.store(v, Ordering::Release);
        }
        2 => {
            // The kernel's: it never reads it back; our consumer sees it.
            let own = s.sq_idx().tail.load(Ordering::Acquire);
            let v = index_not_just_ahead(rng, own, g.sq_entries);
            s.sq_idx().tail.store(v, Ordering::Release);
        }
        3 => {
            // The kernel's: never read back; our producer sees it.
            let own = s.cq_idx().head.load(Ordering::Acquire);
            let v = index_not_just_ahead(rng, own, g.cq_entries);
            s.cq_idx().head.store(v, Ordering::Release);
        }
        4 => {
            // Ours: the kernel checks it. Ahead by at most a ring, the kernel
            // reads old records (all stale); we go on from there.
            let own = s.cq_tail();
            let v = if rng.chance(50) {
                own.wrapping_add(1 + rng.below(u64::from(g.cq_entries)) as u32)
            } else {
                index_not_just_ahead(rng, own, g.cq_entries)
            };
            s.cq_idx().tail.store(v, Ordering::Release);
            if v.wrapping_sub(own) <= g.cq_entries {
                // Go on after the records the kernel now takes as posted.
                s.resync_cq();
            }
        }
        5 => {
            // A submission entry the kernel cannot be writing (more than
            // SQ_BUSY past our head), with its slot made invalid so that its
            // answer, if we ever read it, is rejected.
            let pos = s
                .sq_head()
                .wrapping_add(SQ_BUSY + rng.below(u64::from(g.sq_entries - SQ_BUSY)) as u32)
                & (g.sq_entries - 1);
            let rec = g.sq_records() as usize + pos as usize * std::mem::size_of::<Sqe>();
            let off = rng.below((std::mem::size_of::<Sqe>() - len) as u64) as usize;
            // SAFETY: inside submission record `pos` of our mapping.
            unsafe {
                rng.fill(s.r.base.add(rec + off), len);
                let slot = s.r.base.add(rec).cast::<u32>();
                std::ptr::write_volatile(slot, std::ptr::read_volatile(slot) | 1 << 31);
            }
        }
        _ => {
            // A completion entry the kernel does not read now (outside
            // [kernel head, our tail)), its generation made invalid.
            let tail = s.cq_tail();
            let head = s.cq_idx().head.load(Ordering::Acquire);
            let used = tail.wrapping_sub(head);
            if used >= g.cq_entries {
                return;
            }
            let pos = tail.wrapping_add(rng.below(u64::from(g.cq_entries - used)) as u32)
                & (g.cq_entries - 1);
            let rec = g.cq_records() as usize + pos as usize * std::mem::size_of::<Cqe>();
            // SAFETY: inside completion record `pos` of our mapping.
            unsafe {
                let gen = s.r.base.add(rec + 4).cast::<u32>();
                std::ptr::write_volatile(gen, std::ptr::read_volatile(gen) | 1 << 31);
                let off = rng.below((std::mem::size_of::<Cqe>() - len) as u64) as usize;
                rng.fill(s.r.base.add(rec + off), len);
                std::ptr::write_volatile(gen, std::ptr::read_volatile(gen) | 1 << 31);
            }
        }
    }
    fig.scribbles[target] += 1;
    fig.scribbled_bytes += len as u64;
}

/// Random bytes over the extents of a request the helper will not answer
/// correctly.
fn scribble_extents(s: &Session, rng: &mut Rng, sqe: &Sqe) -> u64 {
    let Ok(x) = check_sqe(sqe, s.geom().data_size) else {
        return 0;
    };
    let mut n = 0;
    for e in [x.input, x.output] {
        if e.len == 0 {
            continue;
        }
        let len = 1 + rng.below(e.len.min(64)) as usize;
        let off = e.off + rng.below(e.len - len as u64 + 1);
        // SAFETY: the extent was checked to lie in the data area.
        rng.fill(unsafe { s.data().add(off as usize) }, len);
        n += len as u64;
    }
    n
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Jump {
    /// CQ tail ahead by exactly one ring: the kernel reads a whole ring of
    /// old records, all of them stale.
    CqFullRing,
    /// CQ tail ahead by a ring and one.
    CqPastRing,
    /// CQ tail ahead by 2^31.
    CqFar,
    /// CQ tail one behind the kernel's head.
    CqBack,
    /// CQ tail set to u32::MAX (a counter wrapped the wrong way).
    CqWrap,
    /// SQ head past the kernel's tail.
    SqPastTail,
    /// SQ head more than a ring behind the tail.
    SqBehind,
    /// SQ head half a ring backwards (legal: the kernel sees less space).
    SqBackHalf,
}

const JUMPS: [Jump; 8] = [
    Jump::CqFullRing,
    Jump::CqPastRing,
    Jump::CqFar,
    Jump::CqBack,
    Jump::CqWrap,
    Jump::SqPastTail,
    Jump::SqBehind,
    Jump::SqBackHalf,
];

impl Jump {
    fn fatal(self) -> bool {
        !matches!(self, Jump::CqFullRing | Jump::SqBackHalf)
    }
}

/// Waits until the kernel has consumed every completion we posted.
fn catch_up(s: &Session) -> bool {
    for _ in 0..2000 {
        let t = s.cq_tail();
        if s.cq_idx().head.load(Ordering::Acquire) == t {
            return true;
        }
        s.doorbell();
        s.heartbeat();
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    false
}

/// Polls `f` for up to `ms` milliseconds.
fn eventually(ms: u64, s: &Session, mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..ms / 5 {
        if f() {
            return true;
        }
        s.heartbeat();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    f()
}

/// Performs one jump and checks the kernel's reaction; returns the session
/// to go on with.
fn do_jump(mut s: Session, j: Jump, c: &mut Checks, fig: &mut Figures) -> Session {
    let g = s.geom();
    let bad0 = stat_u64("bad_completions");
    let corrupt0 = stat_u64("ring_corrupt");
    if !catch_up(&s) {
        c.check(
            &format!("{j:?}: kernel consumed our completions"),
            false,
            "it did not".into(),
        );
    }
    let t = s.cq_tail();
    match j {
        Jump::CqFullRing => s
            .cq_idx()
            .tail
            .store(t.wrapping_add(g.cq_entries), Ordering::Release),
        Jump::CqPastRing => s
            .cq_idx()
            .tail
            .store(t.wrapping_add(g.cq_entries + 1), Ordering::Release),
        Jump::CqFar => s
            .cq_idx()
            .tail
            .store(t.wrapping_add(1 << 31), Ordering::Release),
        Jump::CqBack => s.cq_idx().tail.store(t.wrapping_sub(1), Ordering::Release),
        Jump::CqWrap => s.cq_idx().tail.store(u32::MAX, Ordering::Release),
        Jump::SqPastTail => {
            let ktail = s.sq_idx().tail.load(Ordering::Acquire);
            s.sq_idx()
                .head
                .store(ktail.wrapping_add(SQ_BUSY), Ordering::Release);
        }
        Jump::SqBehind => {
            let h = s.sq_head();
            s.sq_idx()
                .head
                .store(h.wrapping_sub(g.sq_entries + 1), Ordering::Release);
        }
        Jump::SqBackHalf => {
            let h = s.sq_head();
            s.sq_idx()
                .head
                .store(h.wrapping_sub(g.sq_entries / 2), Ordering::Release);
        }
    }
    s.doorbell();
    if j.fatal() {
        let hup = eventually(5000, &s, || {
            s.doorbell();
            s.hung_up()
        });
        c.check(
            &format!("{j:?}: kernel hangs up"),
            hup,
            "no POLLHUP within 5 s".into(),
        );
        let state = stat("state");
        c.check(
            &format!("{j:?}: state broken"),
            state == "broken",
            format!("state '{state}'"),
        );
        let d = stat_u64("ring_corrupt").wrapping_sub(corrupt0);
        c.check(
            &format!("{j:?}: ring_corrupt +1"),
            d == 1,
            format!("ring_corrupt +{d}"),
        );
        fig.hangups += u64::from(hup);
        fig.reattaches += 1;
        return s.restart();
    }
    match j {
        Jump::CqFullRing => {
            let n = u64::from(g.cq_entries);
            fig.bad_records += n;
            let got = eventually(3000, &s, || {
                stat_u64("bad_completions").wrapping_sub(bad0) >= n
            });
            let d = stat_u64("bad_completions").wrapping_sub(bad0);
            c.check(
                &format!("{j:?}: all {n} old records rejected"),
                got && d == n,
                format!("bad_completions +{d}"),
            );
            s.resync_cq();
        }
        _ => {
            std::thread::sleep(std::time::Duration::from_millis(300));
            s.heartbeat();
            s.sq.release();
        }
    }
    let d = stat_u64("ring_corrupt").wrapping_sub(corrupt0);
    c.check(
        &format!("{j:?}: not treated as corruption"),
        d == 0 && !s.hung_up(),
        format!("ring_corrupt +{d}, state {}", stat("state")),
    );
    s
}

/// Header mode: every layout field of the header gets a wrong value, and the
/// reserved rest of the page random bytes (the atomics stay: the helper
/// needs its heartbeat).
fn overwrite_header(s: &Session, rng: &mut Rng) {
    let h = s.r.base.cast::<RegionHeader>();
    let g = s.geom();
    // SAFETY: fields of the header page of our mapping, written through raw
    // pointers (the kernel only reads the atomics, which are not touched).
    unsafe {
        use std::ptr::{addr_of_mut, write_volatile as w};
        w(
            addr_of_mut!((*h).magic),
            abi::REGION_MAGIC ^ (1 | rng.next()),
        );
        w(
            addr_of_mut!((*h).version),
            abi::ABI_VERSION + 1 + rng.below(100) as u32,
        );
        w(addr_of_mut!((*h).header_size), rng.next() as u32 | 1);
        w(
            addr_of_mut!((*h).region_size),
            g.region_size ^ (1 | rng.next()),
        );
        w(addr_of_mut!((*h).sq_off), rng.next());
        w(addr_of_mut!((*h).sq_entries), (rng.next() as u32) | 3);
        w(addr_of_mut!((*h).sqe_size), 1 + rng.below(4096) as u32);
        w(addr_of_mut!((*h).cq_off), rng.next());
        w(addr_of_mut!((*h).cq_entries), 1 << 31);
        w(addr_of_mut!((*h).cqe_size), 0);
        w(addr_of_mut!((*h).data_off), g.region_size - 1);
        w(addr_of_mut!((*h).data_size), u64::MAX);
        w(addr_of_mut!((*h).features), rng.next() | 1 << 63);
        let tail = std::mem::offset_of!(RegionHeader, heartbeat) + 8;
        rng.fill(s.r.base.add(tail), abi::HEADER_SIZE as usize - tail);
    }
}

/// Header mode: answers this many requests with the header overwritten,
/// then checks that the same region cannot be attached again.
const HEADER_REQUESTS: u64 = 1000;

/// Race mode: correct answers posted while the racer runs.
const RACE_REQUESTS: u64 = 2000;
/// Race mode: (slot, generation) pairs of recent submissions, for the racer.
const RACE_RECENT: usize = 64;
/// Race mode: at most one racing write per this many answers posted, so
/// that most answers still get through and the kernel keeps serving.
const RACE_EVERY: u64 = 4;

/// The completion ring of a live mapping, for the racer thread.
struct RaceTarget {
    idx: *const RingIndices,
    records: *mut Cqe,
    entries: u32,
}

// SAFETY: the pointers lie in the session's mapping, which lives until the
// racer is stopped and joined (or the process exits).
unsafe impl Send for RaceTarget {}

/// Race mode: a thread rewriting completion records while the kernel copies
/// them.
struct Racer {
    stop: Arc<AtomicBool>,
    recent: Arc<Vec<AtomicU64>>,
    answers: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<(u64, u64)>,
}

/// Two consecutive 4-byte fields of a record (slot and generation, status
/// and backend) as one 8-byte word, as they lie in memory.
fn pair_word(first: u32, second: u32) -> u64 {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&first.to_ne_bytes());
    b[4..].copy_from_slice(&second.to_ne_bytes());
    u64::from_ne_bytes(b)
}

impl Racer {
    fn start(s: &Session, seed: u64) -> Racer {
        let g = s.geom();
        let t = RaceTarget {
            idx: s.cq_idx(),
            // SAFETY: an offset from the geometry we created, inside the mapping.
            records: unsafe { s.r.base.add(g.cq_records() as usize) }.cast::<Cqe>(),
            entries: g.cq_entries,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let recent: Arc<Vec<AtomicU64>> =
            Arc::new((0..RACE_RECENT).map(|_| AtomicU64::new(0)).collect());
        let answers = Arc::new(AtomicU64::new(0));
        let (stop2, recent2, answers2) = (stop.clone(), recent.clone(), answers.clone());
        let thread = std::thread::spawn(move || race(t, &stop2, &recent2, &answers2, seed));
        Racer {
            stop,
            recent,
            answers,
            thread,
        }
    }

    fn saw(&self, n: u64, sqe: &Sqe) {
        self.recent[n as usize % RACE_RECENT]
            .store(pair_word(sqe.slot, sqe.gen), Ordering::Relaxed);
    }

    fn answered(&self, n: u64) {
        self.answers.store(n, Ordering::Relaxed);
    }

    /// Stops the thread; returns (writes, writes into unconsumed records).
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or((0, 0))
    }
}

/// The racer's loop: one 8-byte store at a time into a record between the
/// kernel's head and our tail (published, not yet consumed: the kernel may be
/// copying it), or just past our tail (about to be published). It watches the
/// indices and writes as soon as a record is pending, at most once per
/// `RACE_EVERY` answers; after 2 ms with none pending it writes past the tail.
fn race(
    t: RaceTarget,
    stop: &AtomicBool,
    recent: &[AtomicU64],
    answers: &AtomicU64,
    seed: u64,
) -> (u64, u64) {
    let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
    let (mut writes, mut unconsumed) = (0u64, 0u64);
    let off_status = std::mem::offset_of!(Cqe, status);
    let off_bytes = std::mem::offset_of!(Cqe, bytes);
    let mut next = RACE_EVERY;
    let mut spins = 0u32;
    let mut armed = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(64) {
            std::thread::yield_now();
        }
        if answers.load(Ordering::Relaxed) < next {
            armed = std::time::Instant::now();
            std::hint::spin_loop();
            continue;
        }
        // SAFETY: the completion ring's indices in the live mapping.
        let idx = unsafe { &*t.idx };
        let head = idx.head.load(Ordering::Acquire);
        let tail = idx.tail.load(Ordering::Acquire);
        let pending = tail.wrapping_sub(head);
        let pos = if (1..=t.entries).contains(&pending) {
            unconsumed += 1;
            head.wrapping_add(rng.below(u64::from(pending)) as u32)
        } else if armed.elapsed().as_millis() >= 2 {
            tail.wrapping_add(rng.below(4) as u32)
        } else {
            std::hint::spin_loop();
            continue;
        };
        next = answers.load(Ordering::Relaxed) + RACE_EVERY;
        armed = std::time::Instant::now();
        let (off, v) = match rng.below(4) {
            0 => (
                0,
                recent[rng.below(RACE_RECENT as u64) as usize].load(Ordering::Relaxed),
            ),
            1 => (0, rng.next()),
            // Status 0 (Ok) .. 9, any backend.
            2 => (
                off_status,
                pair_word(rng.below(10) as u32, rng.next() as u32),
            ),
            _ => (off_bytes, rng.below(8192)),
        };
        // SAFETY: `pos` masked to the ring: a record of the live mapping,
        // 8-aligned (records are 32 bytes from an aligned offset). The
        // kernel reads it concurrently, on purpose; it only ever copies it.
        unsafe {
            let rec = t.records.add((pos & (t.entries - 1)) as usize).cast::<u8>();
            AtomicU64::from_ptr(rec.add(off).cast::<u64>()).store(v, Ordering::Relaxed);
        }
        writes += 1;
    }
    (writes, unconsumed)
}

/// Random mode: the current attach (session) and how many there were.
struct RandomSessions {
    /// Requests seen in this session (slot, generation).
    seen: std::collections::HashSet<(u32, u32)>,
    start: std::time::Instant,
    requests: u64,
    count: u64,
}

impl RandomSessions {
    fn new() -> Self {
        Self {
            seen: std::collections::HashSet::new(),
            start: std::time::Instant::now(),
            requests: 0,
            count: 1,
        }
    }

    /// Ends the session and attaches again; after `RANDOM_SESSIONS`
    /// sessions the stand-in stops being hostile and serves correctly.
    fn restart(&mut self, s: Session, fig: &mut Figures, hostile: &mut bool) -> Session {
        fig.reattaches += 1;
        if self.count >= RANDOM_SESSIONS {
            *hostile = false;
            fig.print("random done");
            println!(
                "kgpu-ktest: random: done after {} sessions, serving correctly",
                self.count
            );
        }
        self.count += 1;
        let s = s.restart();
        self.seen.clear();
        self.start = std::time::Instant::now();
        self.requests = 0;
        s
    }
}

fn serve(mode: Mode, seed: u64) -> ! {
    let mut s = Session::start();
    println!("kgpu-ktest: attached, serving");
    if matches!(mode, Mode::Random | Mode::Jumps | Mode::Header | Mode::Race) {
        println!("kgpu-ktest: seed {seed}");
    }
    let mut rng = Rng(seed);
    let mut fig = Figures::default();
    let mut printed = Figures::default();
    let mut checks = Checks { failed: 0 };
    let mut served = 0u64;
    // Hostile until its script is done (random, jumps, header).
    let mut hostile = matches!(mode, Mode::Random | Mode::Jumps | Mode::Header | Mode::Race);
    let mut racer = (mode == Mode::Race).then(|| Racer::start(&s, seed));
    // Garbage: answers already taken, posted again a round later.
    let mut late: Vec<Cqe> = Vec::new();
    // Garbage: slots we saw submitted (the others were never submitted).
    let mut seen_slots = vec![false; s.geom().cq_entries as usize];
    // Random: the current session (attach).
    let mut random = RandomSessions::new();
    let mut jumps = JUMPS.iter();
    let mut jump_after = 50u64;
    loop {
        let ev = s.wait(100);
        if ev & POLLHUP != 0 {
            if hostile && mode == Mode::Random {
                fig.hangups += 1;
                s = random.restart(s, &mut fig, &mut hostile);
                continue;
            }
            fig.print("final");
            println!("kgpu-ktest: kernel hung up after {served} requests");
            exit(0);
        }
        s.heartbeat();
        let mut posted = false;
        let mut took = 0u64;
        if mode == Mode::Garbage && !late.is_empty() {
            // Duplicates of completions the kernel has already taken.
            for c in std::mem::take(&mut late) {
                if s.push(c) {
                    fig.bad_records += 1;
                }
            }
            posted = true;
        }
        loop {
            let sqe = match s.sq.pop() {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => {
                    if hostile && mode == Mode::Random {
                        fig.helper_ring_errors += 1;
                        break;
                    }
                    println!("kgpu-ktest: submission ring: {e:?}");
                    exit(1);
                }
            };
            took += 1;
            fig.requests += 1;
            if let Some(r) = &racer {
                r.saw(fig.requests, &sqe);
            }
            if mode == Mode::Freeze && served == 100 {
                println!("kgpu-ktest: freezing");
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
            served += 1;
            if mode == Mode::Silent {
                continue;
            }
            if hostile && mode == Mode::Random {
                random.requests += 1;
                if !random.seen.insert((sqe.slot, sqe.gen)) || sqe.slot >= s.geom().cq_entries {
                    // Read again (an index was moved) or a record we
                    // scribbled on: answered with a record of random bytes.
                    if s.push(random_cqe(&mut rng)) {
                        fig.random_records += 1;
                    }
                    posted = true;
                    continue;
                }
                let fate = rng.below(100);
                if fate >= 70 {
                    fig.scribbled_bytes += scribble_extents(&s, &mut rng, &sqe);
                    fig.data_scribbles += 1;
                    if fate < 80 {
                        let c = Cqe {
                            slot: sqe.slot,
                            gen: sqe.gen,
                            status: 1 + rng.below(9) as i32,
                            backend: rng.next() as u32,
                            bytes: 0,
                            nanos: rng.next(),
                        };
                        if s.push(c) {
                            fig.errors += 1;
                        }
                    } else if fate < 90 {
                        fig.unanswered += 1;
                    } else if s.push(random_cqe(&mut rng)) {
                        fig.unanswered += 1;
                        fig.random_records += 1;
                    }
                    posted = true;
                    continue;
                }
            }
            let cqe = answer(&sqe, s.data(), s.geom().data_size, mode == Mode::WrongData);
            if mode == Mode::Garbage {
                if let Some(x) = seen_slots.get_mut(sqe.slot as usize) {
                    *x = true;
                }
                let never = seen_slots.iter().rposition(|x| !x).unwrap_or(0) as u32;
                let bad = [
                    Cqe {
                        slot: 1 << 30,
                        ..cqe
                    },
                    Cqe {
                        gen: cqe.gen.wrapping_add(7),
                        ..cqe
                    },
                    Cqe {
                        status: 1000,
                        ..cqe
                    },
                    Cqe {
                        bytes: u64::MAX,
                        ..cqe
                    },
                    Cqe {
                        bytes: cqe.bytes + 1 + (64 << 20),
                        ..cqe
                    },
                    // A slot that was never submitted.
                    Cqe {
                        slot: never,
                        gen: 1,
                        ..cqe
                    },
                    // Generation 0 is never used.
                    Cqe { gen: 0, ..cqe },
                ];
                for b in bad {
                    if s.push(b) {
                        fig.bad_records += 1;
                    }
                }
            }
            if mode == Mode::Corrupt && served > 20 {
                let head = s.cq_idx().head.load(Ordering::Acquire);
                s.cq_idx().tail.store(
                    head.wrapping_add(4 * s.geom().cq_entries),
                    Ordering::Release,
                );
                s.doorbell();
                continue;
            }
            if s.push(cqe) {
                fig.answers += 1;
                if let Some(r) = &racer {
                    r.answered(fig.answers);
                }
            }
            if mode == Mode::Garbage {
                // Duplicate at once (usually in the same batch), and again
                // once the kernel has taken it.
                if s.push(cqe) {
                    fig.bad_records += 1;
                }
                late.push(cqe);
            }
            if mode == Mode::Drain && served == 200 {
                let rc = do_ioctl(&s.f, KGPU_IOC_DRAIN, std::ptr::null());
                println!("kgpu-ktest: drain requested (errno {rc})");
            }
            posted = true;
        }
        if hostile && mode == Mode::Random {
            for _ in 0..rng.below(3) {
                if s.push(random_cqe(&mut rng)) {
                    fig.random_records += 1;
                }
                posted = true;
            }
            for _ in 0..rng.below(4) {
                scribble(&mut s, &mut rng, &mut fig);
            }
        }
        if posted {
            s.doorbell();
        }
        if hostile && mode == Mode::Random {
            let own_error = s.sq.available().is_err() || s.cq.space().is_err();
            let over = random.requests >= RANDOM_SESSION_REQUESTS
                || random.start.elapsed().as_millis() >= RANDOM_SESSION_MS;
            if own_error || over {
                if own_error {
                    fig.helper_ring_errors += 1;
                }
                s = random.restart(s, &mut fig, &mut hostile);
                continue;
            }
        }
        if hostile && mode == Mode::Jumps && fig.answers >= jump_after {
            match jumps.next() {
                Some(&j) => {
                    s = do_jump(s, j, &mut checks, &mut fig);
                    jump_after = fig.answers + 50;
                }
                None => {
                    hostile = false;
                    fig.print("jumps done");
                    println!(
                        "kgpu-ktest: jumps: done, {} checks failed, serving correctly",
                        checks.failed
                    );
                }
            }
            continue;
        }
        if hostile && mode == Mode::Race && fig.answers >= RACE_REQUESTS {
            hostile = false;
            if let Some(r) = racer.take() {
                let (writes, unconsumed) = r.finish();
                fig.print("race done");
                println!(
                    "kgpu-ktest: race: done after {} answers, {writes} racing writes ({unconsumed} into unconsumed records), serving correctly",
                    fig.answers
                );
            }
        }
        if hostile && mode == Mode::Header {
            overwrite_header(&s, &mut rng);
            fig.header_overwrites += 1;
            if fig.answers >= HEADER_REQUESTS {
                hostile = false;
                s = header_reattach(s, &mut checks, &fig);
            }
        }
        if took == 0 && (fig.requests, fig.bad_records) != (printed.requests, printed.bad_records) {
            fig.print("running");
            printed = fig.clone();
        }
    }
}

/// Header mode, at the end: the kernel still used its own geometry; the same
/// region, header overwritten, cannot be attached again; restored, it can.
fn header_reattach(s: Session, c: &mut Checks, fig: &Figures) -> Session {
    let g = s.geom();
    for (name, want) in [
        ("sq_entries", u64::from(g.sq_entries)),
        ("cq_entries", u64::from(g.cq_entries)),
        ("region_bytes", g.region_size),
        ("data_bytes", g.data_size),
    ] {
        let got = stat_u64(name);
        c.check(
            &format!("kernel's {name} unchanged"),
            got == want,
            format!("{got}, wanted {want}"),
        );
    }
    fig.print("header done");
    let Session { f, r, .. } = s;
    drop(f);
    let f = open_dev().unwrap_or_else(|e| {
        println!("kgpu-ktest: reopen: {e}");
        exit(1)
    });
    let rc = attach(&f, &r.args());
    c.check(
        "attach with the overwritten header refused (EBADMSG)",
        rc == EBADMSG,
        format!("errno {rc}"),
    );
    // SAFETY: our own mapping; the kernel refused it and holds nothing.
    unsafe { init_header(r.base, &r.geom, KNOWN_FEATURES) };
    let rc = attach(&f, &r.args());
    c.check(
        "attach after restoring the header",
        rc == 0,
        format!("errno {rc}"),
    );
    if rc != 0 {
        exit(1);
    }
    println!(
        "kgpu-ktest: header: done, {} checks failed, serving correctly",
        c.failed
    );
    Session::with(f, r)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("open-twice") => open_twice(),
        Some("open-as-nobody") => open_as_nobody(),
        Some("attach-errors") => attach_errors(),
        Some("attach-one") => attach_one(),
        Some("serve") => {
            let mode = match args.get(2).map(String::as_str) {
                None | Some("echo") => Mode::Echo,
                Some("garbage") => Mode::Garbage,
                Some("silent") => Mode::Silent,
                Some("corrupt") => Mode::Corrupt,
                Some("wrongdata") => Mode::WrongData,
                Some("drain") => Mode::Drain,
                Some("freeze") => Mode::Freeze,
                Some("random") => Mode::Random,
                Some("jumps") => Mode::Jumps,
                Some("header") => Mode::Header,
                Some("race") => Mode::Race,
                Some(m) => {
                    eprintln!("kgpu-ktest: unknown serve mode {m}");
                    exit(2)
                }
            };
            let seed = match args.get(3).map(|a| a.parse::<u64>()) {
                Some(Ok(v)) => v,
                Some(Err(_)) => {
                    eprintln!("kgpu-ktest: seed must be a number");
                    exit(2)
                }
                None => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1),
            };
            serve(mode, seed)
        }
        _ => {
            eprintln!("usage: kgpu-ktest open-twice|open-as-nobody|attach-errors|attach-one|serve [echo|garbage|silent|corrupt|wrongdata|drain|freeze|random|jumps|header|race] [SEED]");
            exit(2)
        }
    }
}
