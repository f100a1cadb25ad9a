// SPDX-License-Identifier: GPL-2.0-only

//! In-guest test program for the kgpu module.
//!
//! ```text
//! kgpu-ktest open-twice          a second opener of /dev/kgpu gets EBUSY
//! kgpu-ktest open-as-nobody      uid 65534 cannot open /dev/kgpu
//! kgpu-ktest attach-errors       every malformed attach gets its errno; a good one works
//! kgpu-ktest serve [MODE]        a minimal helper serving ECHO; MODE picks a misbehaviour:
//!     echo      answer correctly (default)
//!     garbage   post invalid completions (bad slot, stale generation, unknown
//!               status, overlong byte counts, duplicates) around the correct one
//!     silent    take requests and never answer
//!     corrupt   answer a few, then write an impossible completion-ring tail
//!     wrongdata answer with one byte changed
//!     freeze    answer 100 requests, then stop everything, heartbeat included
//!     drain     answer correctly, ask the kernel to drain after 200 requests,
//!               exit when poll() reports POLLHUP
//! ```
//!
//! It exercises the kernel's side of the protocol with a peer the tests
//! control, including a hostile one; the real helper is tested separately.

use kgpu_common::abi::{self, service, Cqe, RegionHeader, RingIndices, Sqe, Status};
use kgpu_common::ioctl::{AttachArgs, KGPU_IOC_ATTACH, KGPU_IOC_DOORBELL, KGPU_IOC_DRAIN};
use kgpu_common::region::{init_header, Geometry, KNOWN_FEATURES};
use kgpu_common::request::check_sqe;
use kgpu_common::ring::{Consumer, Producer};
use std::ffi::{c_int, c_short, c_uint, c_ulong, c_void};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::process::exit;
use std::sync::atomic::Ordering;

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
        let geom = Geometry::new(sq, cq, data).expect("geometry");
        let len = geom.region_size as usize;
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

fn attach_errors() -> ! {
    let mut c = Checks { failed: 0 };
    let f = open_dev().expect("open /dev/kgpu");
    let r = Region::new(64, 128, 1 << 20);
    let good = r.args();
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
    let unknown = do_ioctl(&f, 0x4b7f, std::ptr::null());
    c.check(
        "unknown ioctl",
        unknown == ENOTTY,
        format!("errno {unknown}"),
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
    // SAFETY: unmapping our own mapping after the kernel let go of it.
    unsafe { munmap(r.base.cast(), r.len) };
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
}

fn serve(mode: Mode) -> ! {
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
    let g = r.geom;
    // SAFETY: offsets from the geometry we created; the mapping lives until
    // exit; we are the only SQ consumer and CQ producer.
    let (mut sq, mut cq) = unsafe {
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
    };
    // SAFETY: the data area lies inside our mapping.
    let data = unsafe { r.base.add(g.data_off as usize) };
    println!("kgpu-ktest: attached, serving");
    let mut served = 0u64;
    loop {
        let mut p = PollFd {
            fd: f.as_raw_fd(),
            events: POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { poll(&mut p, 1, 100) };
        if p.revents & POLLHUP != 0 {
            println!("kgpu-ktest: kernel hung up after {served} requests");
            exit(0);
        }
        r.header().heartbeat.fetch_add(1, Ordering::Relaxed);
        let mut posted = false;
        while let Ok(Some(sqe)) = sq.pop() {
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
            let mut cqe = Cqe {
                slot: sqe.slot,
                gen: sqe.gen,
                status: Status::Ok.raw(),
                backend: abi::backend::CPU,
                bytes: 0,
                nanos: 0,
            };
            match check_sqe(&sqe, g.data_size) {
                Ok(x) if sqe.service == service::ECHO && x.output.len >= x.input.len => {
                    // SAFETY: both extents were checked to lie in the data area.
                    unsafe {
                        std::ptr::copy(
                            data.add(x.input.off as usize),
                            data.add(x.output.off as usize),
                            x.input.len as usize,
                        );
                        if mode == Mode::WrongData && x.input.len > 0 {
                            *data.add(x.output.off as usize) ^= 0x5a;
                        }
                    }
                    cqe.bytes = x.input.len;
                }
                Ok(_) if sqe.service != service::ECHO => cqe.status = Status::UnknownService.raw(),
                Ok(_) => cqe.status = Status::BadLength.raw(),
                Err(s) => cqe.status = s.raw(),
            }
            if mode == Mode::Garbage {
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
                ];
                for b in bad {
                    push(&mut cq, &f, b);
                }
            }
            if mode == Mode::Corrupt && served > 20 {
                // SAFETY: the completion ring's indices in our mapping.
                let idx = unsafe { &*r.base.add(g.cq_off as usize).cast::<RingIndices>() };
                let head = idx.head.load(Ordering::Acquire);
                idx.tail
                    .store(head.wrapping_add(4 * g.cq_entries), Ordering::Release);
                do_ioctl(&f, KGPU_IOC_DOORBELL, std::ptr::null());
                continue;
            }
            push(&mut cq, &f, cqe);
            if mode == Mode::Garbage {
                push(&mut cq, &f, cqe);
            }
            if mode == Mode::Drain && served == 200 {
                let rc = do_ioctl(&f, KGPU_IOC_DRAIN, std::ptr::null());
                println!("kgpu-ktest: drain requested (errno {rc})");
            }
            posted = true;
        }
        if posted {
            do_ioctl(&f, KGPU_IOC_DOORBELL, std::ptr::null());
        }
    }
}

fn push(cq: &mut Producer<Cqe>, f: &File, c: Cqe) {
    loop {
        match cq.push(c) {
            Ok(()) => return,
            Err(_) => {
                // Full: let the kernel reap, then retry.
                do_ioctl(f, KGPU_IOC_DOORBELL, std::ptr::null());
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("open-twice") => open_twice(),
        Some("open-as-nobody") => open_as_nobody(),
        Some("attach-errors") => attach_errors(),
        Some("serve") => {
            let mode = match args.get(2).map(String::as_str) {
                None | Some("echo") => Mode::Echo,
                Some("garbage") => Mode::Garbage,
                Some("silent") => Mode::Silent,
                Some("corrupt") => Mode::Corrupt,
                Some("wrongdata") => Mode::WrongData,
                Some("drain") => Mode::Drain,
                Some("freeze") => Mode::Freeze,
                Some(m) => {
                    eprintln!("kgpu-ktest: unknown serve mode {m}");
                    exit(2)
                }
            };
            serve(mode)
        }
        _ => {
            eprintln!("usage: kgpu-ktest open-twice|open-as-nobody|attach-errors|serve [echo|garbage|silent|corrupt|wrongdata|drain|freeze]");
            exit(2)
        }
    }
}
