//! Bounds on what the command line may ask for, checked before anything is
//! allocated: the data area's size, queue depths, request sizes and worker
//! counts. Each error says what the limit is and how to get within it.

use crate::bench::human;

/// The kernel module takes regions up to `max_region_mb` (4096 MiB by
/// default); the header and rings need less than one MiB of that.
pub const MAX_DATA_MIB: u64 = 4095;

/// The most CPU worker threads a backend may start.
pub const MAX_CPU_WORKERS: usize = 256;

/// The longest `stats --watch` interval, seconds (one day).
pub const MAX_WATCH_SECS: u64 = 86_400;

/// Room a request needs besides its input and output (key, IV list,
/// allocator rounding), bytes.
const REQUEST_SLACK: u64 = 1 << 20;

/// `MemAvailable` from /proc/meminfo, MiB.
fn mem_available_mib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib >> 10)
}

/// Checks a data-area size against the module's limit and, when known, the
/// memory this machine has available (`avail_mib`): the region is locked in
/// memory, so it may take at most three quarters of it.
pub fn check_data_mib(mib: u64, avail_mib: Option<u64>) -> Result<u64, String> {
    if mib == 0 {
        return Err("the data area needs at least 1 MiB".into());
    }
    if mib > MAX_DATA_MIB {
        return Err(format!(
            "{mib} MiB is more than the {MAX_DATA_MIB} MiB a region's data area may have (the module's max_region_mb is 4096 MiB by default)"
        ));
    }
    if let Some(avail) = avail_mib {
        if mib > avail / 4 * 3 {
            return Err(format!(
                "{mib} MiB is more than three quarters of the {avail} MiB of memory available (MemAvailable): the region is locked in memory; pass a smaller --data-mib"
            ));
        }
    }
    Ok(mib)
}

/// clap's parser for `--data-mib`.
pub fn parse_data_mib(s: &str) -> Result<u64, String> {
    let mib = s
        .parse::<u64>()
        .map_err(|e| format!("{s:?} is not a number of MiB: {e}"))?;
    check_data_mib(mib, mem_available_mib())
}

/// clap's parser for `--cpu-workers` (0: run on the serving thread).
pub fn parse_cpu_workers(s: &str) -> Result<usize, String> {
    let n = s
        .parse::<usize>()
        .map_err(|e| format!("{s:?} is not a number of threads: {e}"))?;
    if n > MAX_CPU_WORKERS {
        return Err(format!("at most {MAX_CPU_WORKERS} worker threads"));
    }
    Ok(n)
}

/// clap's parser for `stats --watch`.
pub fn parse_watch_secs(s: &str) -> Result<u64, String> {
    let n = s
        .parse::<u64>()
        .map_err(|e| format!("{s:?} is not a number of seconds: {e}"))?;
    if n == 0 || n > MAX_WATCH_SECS {
        return Err(format!(
            "the interval is whole seconds from 1 to {MAX_WATCH_SECS}"
        ));
    }
    Ok(n)
}

/// Checks the queue depths of a benchmark plan: each keeps that many
/// requests in flight, so each must be at least 1 and at most the number of
/// requests the region can hold in flight (`capacity`, its completion ring).
pub fn check_depths(depths: &[usize], capacity: usize) -> Result<(), String> {
    if depths.is_empty() {
        return Err("--depths: give at least one queue depth".into());
    }
    for &d in depths {
        if d == 0 || d > capacity {
            return Err(format!(
                "--depths {d}: a queue depth is from 1 to {capacity} (the requests the region's completion ring holds in flight)"
            ));
        }
    }
    Ok(())
}

/// Checks the request sizes of a benchmark plan (each as given on the
/// command line, and in bytes) against a data area of `data_mib`: one
/// request's input and output must fit in it.
pub fn check_sizes(sizes: &[(&str, usize)], data_mib: u64) -> Result<(), String> {
    if sizes.is_empty() {
        return Err("--sizes: give at least one request size".into());
    }
    let data = data_mib << 20;
    let max_size = ((MAX_DATA_MIB << 20) - REQUEST_SLACK) / 2;
    for &(text, s) in sizes {
        let s = s as u64;
        if s == 0 {
            return Err(format!(
                "--sizes {text}: a request carries at least one byte"
            ));
        }
        if s > max_size {
            return Err(format!(
                "--sizes {text}: a request's input and output must fit in the data area, which is at most {MAX_DATA_MIB} MiB: the largest request size is {}",
                human(max_size & !((1 << 20) - 1))
            ));
        }
        let need = 2 * s + REQUEST_SLACK;
        if need > data {
            let need_mib = need.div_ceil(1 << 20);
            return Err(format!(
                "--sizes {text}: a request's input and output must fit in the data area ({data_mib} MiB): pass --data-mib {need_mib} or more, or a smaller size"
            ));
        }
    }
    Ok(())
}

/// One `--gpu-figures` value: `SERVICE=MBPS,RTT_US,CROSSOVER` (service `aes`
/// or `raid6`; MB/s, microseconds, bytes), the figures a helper publishes in
/// the region header for the kernel's load-time choice.
pub fn parse_gpu_figures(s: &str) -> Result<(u16, kgpu_common::abi::GpuFigures), String> {
    use kgpu_common::abi::GpuFigures;
    let want = "SERVICE=MBPS,RTT_US,CROSSOVER (service aes or raid6; e.g. aes=40000,30,65536)";
    let (name, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: want {want}"))?;
    let id = match crate::services::by_name(name) {
        Some(r) if r.gpu => r.id,
        _ => return Err(format!("{name:?}: unknown service; want {want}")),
    };
    let v: Vec<u64> = rest
        .split(',')
        .map(|x| x.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{rest:?}: not three whole numbers; want {want}"))?;
    let [mbps, rtt_us, crossover] = v[..] else {
        return Err(format!("{rest:?}: not three numbers; want {want}"));
    };
    if mbps == 0 {
        return Err(format!(
            "{s:?}: MB/s of 0 would mean no GPU path; want {want}"
        ));
    }
    let rtt_ns = rtt_us
        .checked_mul(1000)
        .ok_or_else(|| format!("{rtt_us} us: too large"))?;
    Ok((
        id,
        GpuFigures {
            mbps,
            rtt_ns,
            crossover,
            reserved: 0,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_figures_parse_and_refuse() {
        let (id, f) = parse_gpu_figures("aes=40000,30,65536").unwrap();
        assert_eq!(id, kgpu_common::abi::service::AES);
        assert_eq!((f.mbps, f.rtt_ns, f.crossover), (40000, 30_000, 65536));
        let (id, _) = parse_gpu_figures("raid6=1,0,0").unwrap();
        assert_eq!(id, kgpu_common::abi::service::RAID6);
        for bad in [
            "aes",
            "des=1,2,3",
            "aes=1,2",
            "aes=1,2,3,4",
            "aes=0,1,1",
            "aes=x,1,1",
            "aes=1,18446744073709551615,0",
        ] {
            assert!(parse_gpu_figures(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn data_mib_bounds() {
        assert!(check_data_mib(0, None).is_err());
        assert_eq!(check_data_mib(1, None), Ok(1));
        assert_eq!(check_data_mib(MAX_DATA_MIB, None), Ok(MAX_DATA_MIB));
        let e = check_data_mib(MAX_DATA_MIB + 1, None).unwrap_err();
        assert!(e.contains("max_region_mb"), "{e}");
        let e = check_data_mib(1024, Some(1000)).unwrap_err();
        assert!(e.contains("MemAvailable") && e.contains("1000 MiB"), "{e}");
        assert_eq!(check_data_mib(750, Some(1000)), Ok(750));
        assert!(parse_data_mib("100000").is_err());
        assert!(parse_data_mib("-1").is_err());
        assert!(parse_data_mib("16M").is_err());
    }

    #[test]
    fn depths_within_the_completion_ring() {
        assert!(check_depths(&[1, 16, 2048], 2048).is_ok());
        for bad in [&[0usize][..], &[1, 2049], &[]] {
            assert!(check_depths(bad, 2048).is_err(), "{bad:?}");
        }
        assert!(check_depths(&[4096], 2048).unwrap_err().contains("2048"));
    }

    #[test]
    fn sizes_fit_the_data_area() {
        assert!(check_sizes(&[("4K", 4096), ("16M", 16 << 20)], 1024).is_ok());
        assert!(check_sizes(&[("0", 0)], 1024)
            .unwrap_err()
            .contains("--sizes 0"));
        let e = check_sizes(&[("1G", 1 << 30)], 1024).unwrap_err();
        assert!(
            e.contains("--sizes 1G:") && e.contains("--data-mib 2049"),
            "{e}"
        );
        // What the error proposes is accepted.
        assert!(check_data_mib(2049, None).is_ok());
        assert!(check_sizes(&[("1G", 1 << 30)], 2049).is_ok());
        let e = check_sizes(&[("4G", 4 << 30)], 1024).unwrap_err();
        assert!(e.contains("largest request size is 2047M"), "{e}");
        assert!(check_sizes(&[("2047M", 2047 << 20)], MAX_DATA_MIB).is_ok());
        assert!(check_sizes(&[], 1024).is_err());
    }

    #[test]
    fn watch_and_workers() {
        assert!(parse_watch_secs("0").is_err());
        assert_eq!(parse_watch_secs("2"), Ok(2));
        assert!(parse_watch_secs("x").is_err());
        assert!(parse_cpu_workers("100000").is_err());
        assert_eq!(parse_cpu_workers("0"), Ok(0));
    }
}
