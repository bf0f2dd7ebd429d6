//! The `healthcheck` subcommand of both binaries: one HTTP/1.1 `GET` of the process's own readiness
//! endpoint, for container runtimes whose images have no shell or `curl` (Docker's `HEALTHCHECK`).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// `GET http://{addr}{path}`: `Ok` on a 2xx status, otherwise what went wrong. A listener bound to the
/// unspecified address (`0.0.0.0`, `[::]`) is asked on the loopback address of its family.
pub fn http_ready(addr: SocketAddr, path: &str, timeout: Duration) -> Result<u16, String> {
    let target = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    };
    let mut stream = TcpStream::connect_timeout(&target, timeout)
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    let io = |e: std::io::Error| format!("{target}: {e}");
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    // The status line is all we need; a readiness answer is small.
    let mut head = Vec::with_capacity(256);
    stream.take(4096).read_to_end(&mut head).map_err(io)?;
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let status = std::str::from_utf8(line)
        .ok()
        .and_then(|l| l.strip_prefix("HTTP/1.1 ").or_else(|| l.strip_prefix("HTTP/1.0 ")))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("{target}{path}: not an HTTP answer"))?;
    if (200..300).contains(&status) { Ok(status) } else { Err(format!("{target}{path} answered {status}")) }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread;

    use super::*;

    fn serve_once(answer: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap() == 1 {
                head.push(byte[0]);
            }
            assert!(head.starts_with(b"GET /ready HTTP/1.1\r\n"));
            conn.write_all(answer.as_bytes()).unwrap();
        });
        addr
    }

    #[test]
    fn a_2xx_is_ready_and_anything_else_is_not() {
        let ok = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        let unspecified = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), ok.port());
        assert_eq!(http_ready(unspecified, "/ready", Duration::from_secs(5)), Ok(200));
        let busy = serve_once("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
        let err = http_ready(busy, "/ready", Duration::from_secs(5)).unwrap_err();
        assert!(err.ends_with("/ready answered 503"), "{err}");
        let garbage = serve_once("SSH-2.0-OpenSSH\r\n");
        let err = http_ready(garbage, "/ready", Duration::from_secs(5)).unwrap_err();
        assert!(err.ends_with("not an HTTP answer"), "{err}");
    }

    #[test]
    fn nobody_listening_is_not_ready() {
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let err = http_ready(addr, "/ready", Duration::from_secs(5)).unwrap_err();
        assert!(err.starts_with("cannot connect to"), "{err}");
    }
}
