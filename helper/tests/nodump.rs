//! The region (keys, plaintext) is left out of core dumps: its mapping
//! carries MADV_DONTDUMP ("dd" in /proc/self/smaps), created or opened.

use kgpu_helper::shm::{RegionSpec, SharedRegion};

/// The VmFlags of the mapping that starts at `addr`.
fn vm_flags(addr: usize) -> String {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let head = format!("{addr:08x}-");
    let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head));
    assert!(lines.next().is_some(), "no mapping at {head}");
    lines
        .find_map(|l| l.strip_prefix("VmFlags:"))
        .unwrap()
        .to_string()
}

#[test]
fn the_region_is_not_dumped() {
    let spec = RegionSpec {
        sq_entries: 64,
        cq_entries: 128,
        data_size: 1 << 20,
    };
    let r = SharedRegion::create(None, spec).unwrap();
    let flags = vm_flags(r.base() as usize);
    assert!(flags.split_whitespace().any(|f| f == "dd"), "{flags}");
    let path = std::env::temp_dir().join(format!("kgpu-nodump-{}.region", std::process::id()));
    let made = SharedRegion::create(Some(&path), spec).unwrap();
    let opened = SharedRegion::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    for m in [&made, &opened] {
        let flags = vm_flags(m.base() as usize);
        assert!(flags.split_whitespace().any(|f| f == "dd"), "{flags}");
    }
}
