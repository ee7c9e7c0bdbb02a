//! `synod-probe URL [NEEDLE]`: GET a plain-HTTP URL with a 2-second budget and exit 0 when the
//! status is 2xx and the body contains NEEDLE (when given), 1 otherwise.
//!
//! It exists for the etcd image's healthcheck: that image is `FROM scratch` with Debian's etcd
//! and no shell, curl or etcdctl. It depends on nothing but std, so its static build takes
//! seconds. Replica healthchecks do not use it: they run `synod status` from the synod binary.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

const BUDGET: Duration = Duration::from_secs(2);

/// Split `http://host:port/path` into (`host:port`, `/path`).
fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return None;
    }
    let authority = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
    Some((authority, path.to_string()))
}

/// The status code and body of an HTTP/1.0 response.
fn parse_response(raw: &[u8]) -> Option<(u16, &[u8])> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, &raw[end + 4..]))
}

fn probe(url: &str, needle: Option<&str>) -> Result<(), String> {
    let (authority, path) = split_url(url).ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("resolving {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} resolves to nothing"))?;
    let mut s = TcpStream::connect_timeout(&addr, BUDGET).map_err(|e| format!("connecting to {addr}: {e}"))?;
    s.set_read_timeout(Some(BUDGET)).and_then(|_| s.set_write_timeout(Some(BUDGET))).map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
    s.write_all(request.as_bytes()).map_err(|e| format!("sending: {e}"))?;
    let mut raw = Vec::new();
    s.take(1 << 20).read_to_end(&mut raw).map_err(|e| format!("reading: {e}"))?;
    let (status, body) = parse_response(&raw).ok_or("malformed HTTP response")?;
    if !(200..300).contains(&status) {
        return Err(format!("status {status}"));
    }
    if let Some(n) = needle {
        if !String::from_utf8_lossy(body).contains(n) {
            return Err(format!("body does not contain {n:?}: {}", String::from_utf8_lossy(body)));
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(url) = args.first() else {
        eprintln!("usage: synod-probe URL [NEEDLE]");
        std::process::exit(2);
    };
    match probe(url, args.get(1).map(String::as_str)) {
        Ok(()) => println!("ok"),
        Err(e) => {
            eprintln!("unhealthy: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(split_url("http://127.0.0.1:2379/health"), Some(("127.0.0.1:2379".into(), "/health".into())));
        assert_eq!(split_url("http://etcd-1"), Some(("etcd-1:80".into(), "/".into())));
        assert_eq!(split_url("https://x/"), None);
        assert_eq!(split_url("http:///x"), None);
    }

    #[test]
    fn responses_parse_status_and_body() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"health\":\"true\"}";
        assert_eq!(parse_response(raw), Some((200, &b"{\"health\":\"true\"}"[..])));
        assert_eq!(parse_response(b"HTTP/1.1 503 Service Unavailable\r\n\r\n"), Some((503, &b""[..])));
        assert_eq!(parse_response(b"garbage"), None);
    }

    #[test]
    fn probe_against_a_local_server() {
        // A one-shot server on a free loopback port answers like etcd's /health.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let t = std::thread::spawn(move || {
            for reply in ["{\"health\":\"true\"}", "{\"health\":\"false\"}"] {
                let (mut c, _) = l.accept().expect("accept");
                // Read the whole request head before answering, as a real server does.
                let mut head = Vec::new();
                let mut buf = [0u8; 512];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(c, "HTTP/1.1 200 OK\r\n\r\n{reply}");
            }
        });
        let url = format!("http://127.0.0.1:{port}/health");
        assert_eq!(probe(&url, Some("\"health\":\"true\"")), Ok(()));
        let err = probe(&url, Some("\"health\":\"true\"")).unwrap_err();
        assert!(err.contains("does not contain"), "{err}");
        t.join().expect("server thread");
    }
}
