// SPDX-License-Identifier: GPL-2.0-only

//! `attach-errors`: every malformed attach gets its errno; a good one works.

use crate::dev::{attach, do_ioctl, open_dev, stat, stat_u64};
use crate::region::Region;
use crate::sys::{EBADMSG, EBUSY, EFAULT, EFBIG, EINVAL, ENOTTY, EPROTO};
use crate::util::Checks;
use kgpu_common::abi::{self, RegionHeader, RingIndices};
use kgpu_common::ioctl::{AttachArgs, KGPU_IOC_ATTACH, KGPU_IOC_DOORBELL};
use std::ffi::c_void;
use std::mem::size_of;
use std::sync::atomic::Ordering;

pub fn attach_errors() -> ! {
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
