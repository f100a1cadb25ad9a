//! systemd's readiness protocol (`Type=notify`), written by hand: one
//! datagram `READY=1` to the AF_UNIX socket named by `$NOTIFY_SOCKET` (a
//! path, or `@name` in the abstract namespace) once the helper is attached,
//! so that units ordered after `kgpu-helper.service` start only then.
//! Without `$NOTIFY_SOCKET` (not started by systemd) nothing is sent.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (newline-separated `KEY=VALUE` assignments) to `socket`.
pub fn notify_to(socket: &OsStr, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let bytes = socket.as_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?
        }
        None if bytes.first() == Some(&b'/') => sock.send_to(state.as_bytes(), socket)?,
        None => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{NOTIFY_SOCKET}={socket:?} is neither a path nor @name"),
            ))
        }
    };
    if sent != state.len() {
        return Err(std::io::Error::other("short write of the notification"));
    }
    Ok(())
}

/// Sends `state` to systemd when it started us with `Type=notify`;
/// returns whether it was sent. A failure is logged, never fatal: the
/// helper serves either way.
pub fn notify(state: &str) -> bool {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else {
        return false;
    };
    match notify_to(&socket, state) {
        Ok(()) => true,
        Err(e) => {
            log::warn!("could not tell systemd {state:?}: {e}");
            false
        }
    }
}

/// The helper is attached and serving: `READY=1`.
pub fn ready(what: &str) -> bool {
    notify(&format!("READY=1\nSTATUS=serving {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_reaches_a_path_socket() {
        let p = std::env::temp_dir().join(format!("kgpu-notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let rx = UnixDatagram::bind(&p).unwrap();
        notify_to(p.as_os_str(), "READY=1\nSTATUS=serving /dev/kgpu").unwrap();
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving /dev/kgpu");
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn ready_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("kgpu-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn a_bad_socket_is_an_error() {
        assert!(notify_to(OsStr::new("relative/path"), "READY=1").is_err());
        assert!(notify_to(OsStr::new("/nonexistent/notify"), "READY=1").is_err());
    }
}
