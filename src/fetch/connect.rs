//! Outbound connections: TCP with a deadline, CONNECT tunnels through a parent proxy, and the
//! rustls client configuration. Never decides what to fetch.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::ParentProxy;

/// Connects to `host:port`, trying each resolved address until one answers, within `timeout`
/// in total. A timeout is reported as `io::ErrorKind::TimedOut`.
pub async fn tcp(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let attempt = async {
        let mut last = None;
        for addr in tokio::net::lookup_host((host, port)).await? {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address"))
        }))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connecting to {host}:{port} timed out after {timeout:?}"),
        )),
    }
}

/// The longest response head we accept from a parent proxy answering CONNECT.
const MAX_CONNECT_HEAD: usize = 16 * 1024;

/// Opens a tunnel to `host:port` through the parent proxy (`CONNECT`, RFC 9110 §9.3.6).
pub async fn tunnel(
    parent: &ParentProxy,
    host: &str,
    port: u16,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let mut s = tcp(&parent.host, parent.port, timeout).await?;
    let authority = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let handshake = async {
        s.write_all(
            format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
        )
        .await?;
        // Read byte by byte up to the end of the head, so nothing of the tunnel is consumed.
        let mut head = Vec::with_capacity(256);
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_CONNECT_HEAD || s.read(&mut byte).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "parent proxy closed or sent an oversized CONNECT response",
                ));
            }
            head.push(byte[0]);
        }
        let status_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        let status_line = String::from_utf8_lossy(status_line);
        let code = status_line.split_whitespace().nth(1).unwrap_or_default();
        if code.starts_with('2') {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!(
                    "parent proxy refused CONNECT {authority}: {}",
                    status_line.trim()
                ),
            ))
        }
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(r) => r.map(|()| s),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("CONNECT {authority} through the parent proxy timed out"),
        )),
    }
}

/// A TCP stream to `host:port`, directly or through the parent proxy.
pub async fn stream_to(
    parent: Option<&ParentProxy>,
    host: &str,
    port: u16,
    timeout: Duration,
) -> io::Result<TcpStream> {
    match parent {
        Some(p) => tunnel(p, host, port, timeout).await,
        None => tcp(host, port, timeout).await,
    }
}

/// rustls client config trusting the webpki roots, the system bundle and `extra_roots`.
pub fn tls_config(
    extra_roots: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    for cert in extra_roots {
        roots.add(cert.clone())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Reads the PEM certificates of `path` (for `upstream.ca_file`). Fails on an unreadable file, a
/// malformed PEM block, or a file without any certificate.
pub fn load_ca_file(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect();
    let certs = certs.map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate found", path.display()));
    }
    Ok(certs)
}
