//! Just enough RESP2 for the limiter's one command. The decisions' `EVALSHA`s are written as
//! bytes, one buffer per batch, and their replies parsed straight off the read buffer:
//! redis-rs spent ~7k instructions a decision building, routing and converting the same bytes
//! (callgrind), more than the rest of the limiter together.

use anyhow::{bail, Context as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::time::{timeout_at, Instant};

/// One reply, borrowed from the read buffer. Arrays are never an answer to what is sent here.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Integer(i64),
    Bulk(Option<&'a [u8]>),
}

/// A bulk reply longer than this is not one of ours: the stream is out of step or not Redis.
const MAX_BULK: usize = 1 << 20;

/// The first complete reply in `buf` and the bytes it took; `None` until all of it is there.
pub fn parse(buf: &[u8]) -> anyhow::Result<Option<(Frame<'_>, usize)>> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > 64 && buf.first() != Some(&b'-') && buf.first() != Some(&b'+') {
            bail!("redis sent a header line longer than 64 bytes");
        }
        return Ok(None);
    };
    if nl < 2 || buf[nl - 1] != b'\r' {
        bail!("redis sent a line not ended by CRLF");
    }
    let line = &buf[1..nl - 1];
    let after = nl + 1;
    let frame = match buf[0] {
        b'+' => Frame::Simple(line),
        b'-' => Frame::Error(line),
        b':' => Frame::Integer(number(line)?),
        b'$' => match number(line)? {
            -1 => Frame::Bulk(None),
            len if (0..=MAX_BULK as i64).contains(&len) => {
                let end = after + len as usize;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    bail!("redis sent a bulk string not ended by CRLF");
                }
                return Ok(Some((Frame::Bulk(Some(&buf[after..end])), end + 2)));
            }
            len => bail!("redis announced a bulk string of {len} bytes"),
        },
        other => bail!("unexpected reply type {:?} from redis", char::from(other)),
    };
    Ok(Some((frame, after)))
}

fn number(line: &[u8]) -> anyhow::Result<i64> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("redis sent {:?} where a number belongs", String::from_utf8_lossy(line)))
}

/// Appends one command, as the array of bulk strings Redis reads.
pub fn command(buf: &mut Vec<u8>, args: &[&[u8]]) {
    header(buf, b'*', args.len());
    for arg in args {
        bulk(buf, arg);
    }
}

/// Appends `EVALSHA sha 1 key interval_us burst` without building the argument list.
pub fn evalsha(buf: &mut Vec<u8>, sha: &str, key: &str, interval_us: u64, burst: u32) {
    buf.extend_from_slice(b"*6\r\n$7\r\nEVALSHA\r\n");
    bulk(buf, sha.as_bytes());
    buf.extend_from_slice(b"$1\r\n1\r\n");
    bulk(buf, key.as_bytes());
    let mut digits = itoa::Buffer::new();
    bulk(buf, digits.format(interval_us).as_bytes());
    bulk(buf, digits.format(burst).as_bytes());
}

fn bulk(buf: &mut Vec<u8>, data: &[u8]) {
    header(buf, b'$', data.len());
    buf.extend_from_slice(data);
    buf.extend_from_slice(b"\r\n");
}

fn header(buf: &mut Vec<u8>, kind: u8, n: usize) {
    buf.push(kind);
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    buf.extend_from_slice(b"\r\n");
}

pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// The replies side of a connection: a buffer that is read into and parsed in place.
pub struct Replies {
    io: ReadHalf,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Replies {
    pub fn new(io: ReadHalf) -> Replies {
        Replies { io, buf: vec![0; 16 * 1024], start: 0, end: 0 }
    }

    /// The next reply, given to `take` while it is still in the buffer; an error once
    /// `deadline` passes without it, or when the connection ends or goes out of step.
    pub async fn next<T>(&mut self, deadline: Instant, take: impl FnOnce(Frame<'_>) -> T) -> anyhow::Result<T> {
        loop {
            if let Some((frame, used)) = parse(&self.buf[self.start..self.end])? {
                let taken = take(frame);
                self.start += used;
                return Ok(taken);
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                // A simple or error line has no announced length: cap what one reply may take.
                if self.buf.len() >= 2 * MAX_BULK {
                    bail!("redis sent a reply longer than {} bytes", self.buf.len());
                }
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let read = self.io.read(&mut self.buf[self.end..]);
            match timeout_at(deadline, read).await {
                Ok(Ok(0)) => bail!("redis closed the connection"),
                Ok(Ok(n)) => self.end += n,
                Ok(Err(e)) => return Err(e).context("reading from redis"),
                Err(_) => bail!("no answer from redis within REDIS_TIMEOUT_MS"),
            }
        }
    }
}

/// Connects to the address in `REDIS_URL` and splits the stream in two.
pub async fn connect(info: &redis::ConnectionInfo) -> anyhow::Result<(ReadHalf, WriteHalf)> {
    match &info.addr {
        redis::ConnectionAddr::Tcp(host, port) => {
            let (read, write) = tcp(host, *port).await?.into_split();
            Ok((Box::new(read), Box::new(write)))
        }
        redis::ConnectionAddr::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .with_context(|| format!("connecting to redis at {}", path.display()))?;
            let (read, write) = stream.into_split();
            Ok((Box::new(read), Box::new(write)))
        }
        redis::ConnectionAddr::TcpTls { host, port, insecure, tls_params } => {
            if tls_params.is_some() {
                bail!("the rate limiter takes its TLS settings from REDIS_URL only");
            }
            let tcp = tcp(host, *port).await?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .with_context(|| format!("{host:?} is not a name TLS can verify"))?;
            let stream = tokio_rustls::TlsConnector::from(tls::config(*insecure)?)
                .connect(name, tcp)
                .await
                .with_context(|| format!("TLS handshake with redis at {host}:{port}"))?;
            let (read, write) = tokio::io::split(stream);
            Ok((Box::new(read), Box::new(write)))
        }
    }
}

async fn tcp(host: &str, port: u16) -> anyhow::Result<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .with_context(|| format!("connecting to redis at {host}:{port}"))?;
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    Ok(stream)
}

/// AUTH and SELECT as `REDIS_URL` asks, then SCRIPT LOAD: after this, `sha` is known to the
/// server for as long as the connection lives (a restart ends both).
pub async fn handshake(
    info: &redis::RedisConnectionInfo,
    script: &str,
    sha: &str,
    read: &mut Replies,
    write: &mut WriteHalf,
    deadline: Instant,
) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(script.len() + 128);
    let mut expect_ok = Vec::new();
    if let Some(password) = &info.password {
        match &info.username {
            Some(user) => command(&mut buf, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
            None => command(&mut buf, &[b"AUTH", password.as_bytes()]),
        }
        expect_ok.push("AUTH");
    }
    if info.db != 0 {
        command(&mut buf, &[b"SELECT", itoa::Buffer::new().format(info.db).as_bytes()]);
        expect_ok.push("SELECT");
    }
    command(&mut buf, &[b"SCRIPT", b"LOAD", script.as_bytes()]);
    match timeout_at(deadline, write.write_all(&buf)).await {
        Ok(written) => written.context("writing the handshake to redis")?,
        Err(_) => bail!("redis did not take the handshake within REDIS_TIMEOUT_MS"),
    }
    for step in expect_ok {
        let reply = read.next(deadline, |f| described(&f)).await?;
        if reply != "OK" {
            bail!("redis refused {step}: {reply}");
        }
    }
    let loaded = read.next(deadline, |f| described(&f)).await?;
    if loaded != sha {
        bail!("redis answered SCRIPT LOAD with {loaded:?}, expected the script's sha {sha}");
    }
    Ok(())
}

/// A reply as text, for handshake checks and error messages.
pub fn described(frame: &Frame<'_>) -> String {
    match frame {
        Frame::Simple(s) | Frame::Bulk(Some(s)) => String::from_utf8_lossy(s).into_owned(),
        Frame::Error(e) => format!("error {}", String::from_utf8_lossy(e)),
        Frame::Integer(n) => n.to_string(),
        Frame::Bulk(None) => "nil".to_owned(),
    }
}

/// `rediss://`: the public web PKI roots, as the pool's connections use (redis-rs with
/// `tls-rustls-webpki-roots`), and `#insecure` skips the certificate check there and here.
mod tls {
    use std::sync::Arc;

    use anyhow::Context as _;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::WebPkiSupportedAlgorithms;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

    /// Built per connection: reconnecting is rare, and nothing can fail later for having
    /// been cached wrong.
    pub fn config(insecure: bool) -> anyhow::Result<Arc<ClientConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("setting up TLS for redis")?;
        let config = if insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.signature_verification_algorithms)))
                .with_no_client_auth()
        } else {
            let roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(Arc::new(config))
    }

    /// Accepts any certificate, still checking that the server holds its key.
    #[derive(Debug)]
    struct AnyCertificate(WebPkiSupportedAlgorithms);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_reply_type_is_read_whole_or_not_at_all() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Some((Frame::Simple(b"OK"), 5)));
        assert_eq!(parse(b"-NOSCRIPT x\r\n+OK\r\n").unwrap(), Some((Frame::Error(b"NOSCRIPT x"), 13)));
        assert_eq!(parse(b":-42\r\n").unwrap(), Some((Frame::Integer(-42), 6)));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Some((Frame::Bulk(None), 5)));
        assert_eq!(parse(b"$0\r\n\r\n").unwrap(), Some((Frame::Bulk(Some(b"")), 6)));
        assert_eq!(parse(b"$10\r\n1 9 0 6000\r\n$3").unwrap(), Some((Frame::Bulk(Some(b"1 9 0 6000")), 17)));
        for partial in [&b""[..], b"$", b"$10\r", b"$10\r\n1 9 0", b"$10\r\n1 9 0 6000", b"$10\r\n1 9 0 6000\r", b"+O"]
        {
            assert_eq!(parse(partial).unwrap(), None, "{:?}", String::from_utf8_lossy(partial));
        }
    }

    #[test]
    fn a_stream_out_of_step_is_an_error_not_a_wait() {
        for bad in [
            &b"*2\r\n"[..],
            b"\r\n",
            b"\n",
            b"hello\r\n",
            b"+OK\n",
            b"$x\r\n",
            b"$3\r\nabcd\r\n",
            b"$99999999\r\n",
            b":1.5\r\n",
            &[b'$'; 100][..],
        ] {
            assert!(parse(bad).is_err(), "{:?} accepted", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn commands_are_written_as_redis_reads_them() {
        let mut buf = Vec::new();
        command(&mut buf, &[b"SELECT", b"3"]);
        assert_eq!(buf, b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n");
        buf.clear();
        let sha = "e0e1f9fabfc9d4800c877a703b823ac0578ff831";
        evalsha(&mut buf, sha, "ballast:rl:default:alice", 60_000_000, 10);
        let expected = format!(
            "*6\r\n$7\r\nEVALSHA\r\n$40\r\n{sha}\r\n$1\r\n1\r\n$24\r\nballast:rl:default:alice\r\n$8\r\n60000000\r\n$2\r\n10\r\n"
        );
        assert_eq!(String::from_utf8(buf).unwrap(), expected);
    }

    #[tokio::test]
    async fn an_endless_line_is_refused_at_the_cap_not_buffered_forever() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let mut replies = Replies::new(Box::new(client));
        let feeder = tokio::spawn(async move {
            let chunk = vec![b'x'; 64 * 1024];
            let _ = server.write_all(b"-ERR ").await;
            while server.write_all(&chunk).await.is_ok() {}
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let err = replies.next(deadline, |f| described(&f)).await.unwrap_err();
        assert!(format!("{err:#}").contains("longer than"), "{err:#}");
        assert!(replies.buf.len() <= 2 * MAX_BULK, "{}", replies.buf.len());
        drop(replies);
        feeder.await.expect("the feeder stops once the reader is gone");
    }

    #[tokio::test]
    async fn replies_split_across_reads_are_joined_and_a_silent_server_times_out() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut replies = Replies::new(Box::new(client));
        let deadline = Instant::now() + Duration::from_secs(5);
        server.write_all(b"$10\r\n1 9").await.unwrap();
        let writer = tokio::spawn(async move {
            tokio::task::yield_now().await;
            server.write_all(b" 0 6000\r\n+OK\r\n").await.unwrap();
            server
        });
        assert_eq!(replies.next(deadline, |f| described(&f)).await.unwrap(), "1 9 0 6000");
        let _server = writer.await.unwrap();
        assert_eq!(replies.next(deadline, |f| described(&f)).await.unwrap(), "OK");
        let soon = Instant::now() + Duration::from_millis(20);
        let err = replies.next(soon, |f| described(&f)).await.unwrap_err();
        assert!(format!("{err:#}").contains("REDIS_TIMEOUT_MS"), "{err:#}");
    }
}
