//! A helper serving a stand-in's region in a child process (so that its CPU
//! time can be measured apart from the submitter's), and nothing left behind
//! whichever way either process ends.
//!
//! The region is the submitter's memfd: it never has a name in a file system,
//! so no region file can be left in /dev/shm. The child inherits the
//! descriptor and opens it as `/proc/self/fd/N`. It is killed by the kernel
//! when its parent dies (`PR_SET_PDEATHSIG`, whatever ended the parent: a
//! signal, a panic, `exit`), and by [`ChildHelper`]'s `Drop` on every path
//! that unwinds.

use crate::standin::Submitter;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How the child is started.
#[derive(Clone, Debug, Default)]
pub struct ChildOptions {
    /// `--backend` of the child's `serve`.
    pub backend: String,
    /// `--cpu-workers`.
    pub cpu_workers: usize,
    /// `KGPU_MAX_GPUS` for the child.
    pub max_gpus: Option<usize>,
    /// `RUST_LOG` for the child (None: inherit).
    pub log_filter: Option<String>,
    /// How long the child may take to attach.
    pub attach_timeout: Duration,
}

/// A helper serving `sub`'s region in a child process, killed on drop.
pub struct ChildHelper {
    child: Option<Child>,
}

impl ChildHelper {
    /// Starts `exe serve --region /proc/self/fd/N` on `sub`'s region and
    /// waits until it has attached.
    pub fn start(
        exe: &std::path::Path,
        sub: &Submitter,
        opts: &ChildOptions,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let fd = sub.region().fd().as_raw_fd();
        let mut cmd = Command::new(exe);
        if let Some(n) = opts.max_gpus {
            cmd.env("KGPU_MAX_GPUS", n.to_string());
        }
        if let Some(f) = &opts.log_filter {
            cmd.env("RUST_LOG", f);
        }
        cmd.args([
            "serve",
            "--backend",
            &opts.backend,
            "--cpu-workers",
            &opts.cpu_workers.to_string(),
            "--region",
            &format!("/proc/self/fd/{fd}"),
        ]);
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the closure runs in the forked child before exec and makes
        // only async-signal-safe calls (prctl, getppid, fcntl, _exit) on
        // values copied into it; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before the prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                // The region's memfd is close-on-exec in the parent; the
                // child keeps it across exec.
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("start {} serve: {e}", exe.display()))?;
        log::debug!(
            "helper pid {} serves the region (memfd, fd {fd})",
            child.id()
        );
        let mut h = ChildHelper { child: Some(child) };
        let t0 = Instant::now();
        while !sub.helper_attached() {
            if let Some(st) = h.child_mut().try_wait()? {
                h.child = None;
                return Err(format!("the helper exited ({st}) before attaching").into());
            }
            if t0.elapsed() > opts.attach_timeout {
                return Err(format!(
                    "the helper did not attach within {} s",
                    opts.attach_timeout.as_secs()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(h)
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("a running child")
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// User + system CPU time of the helper so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.id())).ok()?;
        // Fields after the command name (which may hold spaces) in parentheses.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
    }

    /// Stops the helper (SIGTERM: it finishes what was submitted) and waits.
    pub fn stop(mut self) -> Result<(), Box<dyn std::error::Error>> {
        // On an error here, Drop kills and reaps it.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let st = self.child_mut().wait()?;
        self.child = None;
        if !st.success() {
            return Err(format!("the helper exited with {st}").into());
        }
        Ok(())
    }
}

impl Drop for ChildHelper {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
