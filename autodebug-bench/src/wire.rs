//! A lean HTTP/1.1 client for plain `http://` endpoints: keep-alive connections, each stream's
//! task reading its own socket, and every read timed by the kernel's receive stamp.
//!
//! Why not reqwest here (it stays for `https://`): hyper hands a response's bytes from a
//! connection task to the request's task through a channel, and on a loaded machine each of
//! those hand-offs waits for a CPU; worse, a clock read when `read` returns is late by however
//! long the task waited. At 1,000 streams on two cores that wait, not the server, made most of
//! the TTFT error's p99 (see `benches/README.md`). Here the request's own task writes the
//! request and reads the socket, and with `SO_TIMESTAMPNS` each read carries the moment its last
//! packet reached this host: an SSE event is timed by its arrival, whatever the client was busy
//! with meanwhile. Where the kernel gives no stamp (not Linux, or stamping not yet on) the read's
//! own time is used.
//!
//! What it speaks: `POST` with `Content-Length`; responses framed by `Transfer-Encoding:
//! chunked`, `Content-Length` or the connection's close; `1xx` heads skipped; keep-alive unless
//! `Connection: close` or HTTP/1.0. A pooled connection the server closed while idle is retried
//! once on a fresh one when it failed before any response byte. No pool cap: idle connections
//! are kept for reuse, as many as were in use at once.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use autodebug_core::rx_stamp::{enable_rx_stamps, recv_stamped};
use autodebug_core::{ErrorClass, Secret, TimeWindow};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

/// Longest response head accepted (status line and headers).
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest chunk-size or trailer line accepted.
const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;
/// Bytes asked of the kernel per read.
const READ_BYTES: usize = 8 * 1024;

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum WireError {
    /// No connection: refused, unresolvable, or not within the connect timeout.
    Connect(String),
    /// The connection ended or broke before the response did.
    Closed(String),
    /// The server's bytes are not HTTP/1.1 as this client reads it.
    Malformed(String),
}

impl WireError {
    /// The error class a request that failed this way counts under.
    pub(crate) fn class(&self) -> ErrorClass {
        match self {
            WireError::Connect(_) => ErrorClass::Connect,
            // Broken or unreadable HTTP ends the stream early, as reqwest's errors do.
            WireError::Closed(_) | WireError::Malformed(_) => ErrorClass::EarlyClose,
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Connect(why) | WireError::Closed(why) | WireError::Malformed(why) => f.write_str(why),
        }
    }
}

/// Posts to one `http://` URL over pooled keep-alive connections.
pub(crate) struct WireClient {
    /// `host:port` to connect to.
    authority: String,
    /// Request line and the headers every request shares, up to the per-request ones.
    head: Vec<u8>,
    connect_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl WireClient {
    /// A client for `url` when it is plain `http://` with no credentials in it and no proxy
    /// variable applies to it; `None` otherwise (the caller uses reqwest, which speaks TLS and
    /// proxies).
    pub(crate) fn for_url(url: &str, connect_timeout: Duration, user_agent: &str) -> Option<WireClient> {
        let parsed = HttpUrl::parse(url).ok()?;
        if !parsed.scheme.eq_ignore_ascii_case("http") || parsed.has_userinfo || proxy_may_apply(parsed.host) {
            return None;
        }
        let host = parsed.host.to_ascii_lowercase();
        let port = parsed.port.unwrap_or(80);
        // As a browser writes it: the default port is left out of `Host`.
        let host_header = if port == 80 { host.clone() } else { format!("{host}:{port}") };
        let target =
            if parsed.target.starts_with('/') { parsed.target.to_string() } else { format!("/{}", parsed.target) };
        let head = format!(
            "POST {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {user_agent}\r\n\
             Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        );
        Some(WireClient {
            authority: format!("{host}:{port}"),
            head: head.into_bytes(),
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `body` and reads the response head. Bounded by the connect timeout only: the caller
    /// puts its own deadline around it.
    pub(crate) async fn post(&self, body: &[u8], token: Option<&Secret>) -> Result<WireResponse<'_>, WireError> {
        let request = self.render(body, token);
        if let Some(connection) = self.checkout() {
            match exchange(connection, &request).await {
                Ok(response) => return Ok(WireResponse::new(self, response)),
                // The server closed this idle connection before the request got there.
                Err(Exchange::Stale(_)) => {}
                Err(Exchange::Failed(error)) => return Err(error),
            }
        }
        let connection = self.connect().await?;
        match exchange(connection, &request).await {
            Ok(response) => Ok(WireResponse::new(self, response)),
            Err(Exchange::Stale(error) | Exchange::Failed(error)) => Err(error),
        }
    }

    fn render(&self, body: &[u8], token: Option<&Secret>) -> Vec<u8> {
        let mut request = Vec::with_capacity(self.head.len() + body.len() + 128);
        request.extend_from_slice(&self.head);
        if let Some(token) = token {
            request.extend_from_slice(b"Authorization: Bearer ");
            request.extend_from_slice(token.expose().as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        request.extend_from_slice(body);
        request
    }

    /// An idle connection that still looks open.
    fn checkout(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some(connection) = idle.pop() {
            // An idle connection has nothing to read: a byte or an end means the server spoke or
            // closed on its own, and it cannot carry a request.
            if let Err(e) = connection.stream.try_read(&mut [0u8; 1])
                && e.kind() == io::ErrorKind::WouldBlock
            {
                return Some(Connection { reused: true, ..connection });
            }
        }
        None
    }

    fn checkin(&self, connection: Connection) {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(connection);
    }

    async fn connect(&self) -> Result<Connection, WireError> {
        let stream = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.authority)).await {
            Err(_) => {
                return Err(WireError::Connect(format!(
                    "could not connect to {} within the connect timeout {:?}",
                    self.authority, self.connect_timeout
                )));
            }
            Ok(Err(e)) => return Err(WireError::Connect(format!("could not connect to {}: {e}", self.authority))),
            Ok(Ok(stream)) => stream,
        };
        // Requests are small writes whose timing matters; Nagle would hold them back.
        let _ = stream.set_nodelay(true);
        // Reads carry no stamp where this fails; they are then timed when they return.
        enable_rx_stamps(&stream);
        Ok(Connection::new(stream))
    }
}

/// Whether a proxy variable reqwest honours (`http_proxy`, `all_proxy`, either case) is set for
/// a host that is not loopback: reqwest then decides, `NO_PROXY` included. Loopback is never
/// sent through a proxy.
fn proxy_may_apply(host: &str) -> bool {
    proxy_may_apply_with(host, |var| std::env::var_os(var).is_some_and(|value| !value.is_empty()))
}

fn proxy_may_apply_with(host: &str, is_set: impl Fn(&str) -> bool) -> bool {
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !loopback && ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"].into_iter().any(is_set)
}

/// An absolute URL as the lean client needs it, split without a URL library (that would come
/// with the `https` feature's whole stack). Anything it cannot take plainly (a non-ASCII host,
/// spaces, a fragment) is refused, and the caller hands the URL to reqwest where it is built.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HttpUrl<'a> {
    pub scheme: &'a str,
    pub has_userinfo: bool,
    /// A name, an IPv4 address or a bracketed IPv6 literal, as written.
    pub host: &'a str,
    pub port: Option<u16>,
    /// Path and query, as written (`""` for none).
    pub target: &'a str,
}

impl<'a> HttpUrl<'a> {
    pub(crate) fn parse(text: &'a str) -> Result<HttpUrl<'a>, String> {
        let (scheme, rest) = text.split_once("://").ok_or("no scheme (such as http://)")?;
        if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
            return Err(format!("scheme {scheme:?} is not valid"));
        }
        if let Some(c) = rest.chars().find(|c| c.is_whitespace() || c.is_control() || !c.is_ascii() || *c == '#') {
            return Err(format!("{c:?} is not allowed here"));
        }
        let (authority, target) = rest.find(['/', '?']).map_or((rest, ""), |i| rest.split_at(i));
        let (has_userinfo, host_port) = match authority.rsplit_once('@') {
            Some((_, host_port)) => (true, host_port),
            None => (false, authority),
        };
        let (host, port) = if let Some(literal) = host_port.strip_prefix('[') {
            let end = literal.find(']').ok_or("an IPv6 host without its closing ]")?;
            literal[..end].parse::<std::net::Ipv6Addr>().map_err(|e| format!("IPv6 host: {e}"))?;
            (&host_port[..end + 2], &literal[end + 1..])
        } else {
            match host_port.find(':') {
                Some(i) => host_port.split_at(i),
                None => (host_port, ""),
            }
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        if !host.starts_with('[') && !host.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) {
            return Err(format!("host {host:?} is not valid"));
        }
        let port = match port.strip_prefix(':') {
            None if port.is_empty() => None,
            None => return Err(format!("unexpected {port:?} after the host")),
            Some("") => None,
            Some(digits) => {
                Some(digits.parse::<u16>().map_err(|_| format!("port {digits:?} is not a number up to 65535"))?)
            }
        };
        Ok(HttpUrl { scheme, has_userinfo, host, port, target })
    }

    /// Whether `text` is an absolute URL with a host, whatever its scheme.
    #[cfg(not(feature = "https"))]
    pub(crate) fn check(text: &str) -> Result<(), String> {
        HttpUrl::parse(text).map(|_| ())
    }
}

/// One TCP connection and the bytes read from it but not yet consumed (`buf[start..end]`).
struct Connection {
    stream: TcpStream,
    /// Initialized once and reused, so a read costs no zeroing; grows only for a long head or
    /// framing line.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Came from the pool (so a failure before any response byte may be a stale connection).
    reused: bool,
}

impl Connection {
    fn new(stream: TcpStream) -> Self {
        Connection { stream, buf: vec![0; READ_BYTES], start: 0, end: 0, reused: false }
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, count: usize) {
        self.start += count;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// One read appended to the unread bytes: the bytes read (0 at the end) and when they arrived.
    async fn read(&mut self) -> io::Result<(usize, Instant)> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                // Unread bytes fill the buffer: an incomplete head or line longer than it. The
                // parsers bound how far this goes.
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        loop {
            self.stream.readable().await?;
            let stream = &self.stream;
            let target = &mut self.buf[self.end..];
            let room = target.len();
            // A short read drained the socket: report it as WouldBlock to `try_io` so the
            // readiness is cleared now (as tokio's own reads do), instead of spending one more
            // syscall to learn it.
            let mut drained = None;
            let result = stream.try_io(Interest::READABLE, || {
                // Without stamping on, the same call reads with no stamp.
                let (read, stamp) = recv_stamped(stream, target)?;
                if read > 0 && read < room {
                    drained = Some((read, stamp));
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok((read, stamp))
            });
            let result = match drained {
                Some(read) => Ok(read),
                None => result,
            };
            match result {
                Ok((read, stamp)) => {
                    self.end += read;
                    return Ok((read, arrival(stamp)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// The monotonic instant of a kernel receive stamp (Unix ns), measured back from now so the
/// two clocks need only agree over the short lag; now when there is no stamp.
fn arrival(stamp: Option<u64>) -> Instant {
    let now = Instant::now();
    let Some(stamp) = stamp else { return now };
    let lag_ns = (TimeWindow::now_ns() - i128::from(stamp)).clamp(0, i128::from(u64::MAX)) as u64;
    now.checked_sub(Duration::from_nanos(lag_ns)).unwrap_or(now)
}

/// How an exchange failed: on a stale pooled connection (retry on a fresh one), or for good.
enum Exchange {
    Stale(WireError),
    Failed(WireError),
}

/// A response whose head has been read.
struct Head {
    connection: Connection,
    status: u16,
    framing: Framing,
    keep_alive: bool,
    /// When the bytes that completed the head arrived.
    arrived: Instant,
}

async fn exchange(mut connection: Connection, request: &[u8]) -> Result<Head, Exchange> {
    let reused = connection.reused;
    let fail = |error: WireError, got_bytes: bool| {
        if reused && !got_bytes { Exchange::Stale(error) } else { Exchange::Failed(error) }
    };
    // No byte of the response arrives before the request is sent (a clock step cannot say so).
    let sending = Instant::now();
    if let Err(e) = connection.stream.write_all(request).await {
        return Err(fail(WireError::Closed(format!("could not send the request: {e}")), false));
    }
    let mut got_bytes = false;
    loop {
        let (read, arrived) = match connection.read().await {
            Ok(read) => read,
            Err(e) => {
                return Err(fail(WireError::Closed(format!("connection broke before a response: {e}")), got_bytes));
            }
        };
        if read == 0 {
            let error = if connection.unread().is_empty() {
                "connection closed before a response".to_string()
            } else {
                "connection closed in the middle of the response head".to_string()
            };
            return Err(fail(WireError::Closed(error), got_bytes));
        }
        got_bytes = true;
        // A 1xx head is followed by the real one on the same connection.
        while let Some(parsed) = parse_head(connection.unread()).map_err(Exchange::Failed)? {
            connection.consume(parsed.length);
            if (100..200).contains(&parsed.status) {
                continue;
            }
            return Ok(Head {
                connection,
                status: parsed.status,
                framing: parsed.framing,
                keep_alive: parsed.keep_alive,
                arrived: arrived.max(sending),
            });
        }
    }
}

/// A parsed response head.
#[derive(Debug, PartialEq)]
pub(crate) struct ParsedHead {
    /// Bytes of the head, blank line included.
    pub length: usize,
    pub status: u16,
    pub framing: Framing,
    pub keep_alive: bool,
}

/// How a response body ends.
#[derive(Debug, PartialEq)]
pub(crate) enum Framing {
    Chunked(ChunkedDecoder),
    Length(u64),
    UntilClose,
}

/// Parses a response head at the start of `bytes`: `None` while it is incomplete.
pub(crate) fn parse_head(bytes: &[u8]) -> Result<Option<ParsedHead>, WireError> {
    // The first blank line ends the head; bare-LF heads are rare but tolerated.
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|at| at + 2);
    let Some(end) = crlf.into_iter().chain(lf).min() else {
        if bytes.len() > MAX_HEAD_BYTES {
            return Err(WireError::Malformed(format!("response head longer than {MAX_HEAD_BYTES} bytes")));
        }
        return Ok(None);
    };
    if end > MAX_HEAD_BYTES {
        return Err(WireError::Malformed(format!("response head longer than {MAX_HEAD_BYTES} bytes")));
    }
    let text = std::str::from_utf8(&bytes[..end])
        .map_err(|_| WireError::Malformed("response head is not UTF-8".to_string()))?;
    let mut lines = text.lines();
    let status_line = lines.next().unwrap_or_default();
    let shown = || status_line.chars().take(80).collect::<String>();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(WireError::Malformed(format!("not an HTTP/1.x status line: {:?}", shown()))),
    };
    let status = parts
        .next()
        .filter(|code| code.len() == 3)
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (100..600).contains(code))
        .ok_or_else(|| WireError::Malformed(format!("no status code in {:?}", shown())))?;
    let mut length = None;
    let mut chunked = false;
    let mut keep_alive = !http10;
    for line in lines.take_while(|line| !line.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(WireError::Malformed(format!(
                "response header line without a colon: {:?}",
                line.chars().take(80).collect::<String>()
            )));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let parsed =
                value.parse::<u64>().map_err(|_| WireError::Malformed(format!("bad Content-Length {value:?}")))?;
            if length.is_some_and(|known| known != parsed) {
                return Err(WireError::Malformed("two different Content-Length headers".to_string()));
            }
            length = Some(parsed);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.rsplit(',').next().is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case("keep-alive") && http10 {
                    keep_alive = true;
                }
            }
        }
    }
    let framing = if status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked(ChunkedDecoder::default())
    } else if let Some(length) = length {
        Framing::Length(length)
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    Ok(Some(ParsedHead { length: end, status, framing, keep_alive }))
}

/// Incremental `Transfer-Encoding: chunked` decoder.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Default, PartialEq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// Expecting the line end after a chunk's data.
    DataEnd,
    /// After the last chunk, expecting trailer lines up to a blank one.
    Trailer,
    Done,
}

impl ChunkedDecoder {
    /// Decodes from `input`, appending body bytes to `out`; returns the bytes consumed. What is
    /// left unconsumed is an incomplete line: call again with more input.
    pub(crate) fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, WireError> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match self.state {
                ChunkState::Done => return Ok(at),
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok(at);
                    }
                    let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&rest[..take]);
                    at += take;
                    let left = left - take as u64;
                    self.state = if left == 0 { ChunkState::DataEnd } else { ChunkState::Data(left) };
                }
                ChunkState::DataEnd => {
                    let Some(line) = line(rest)? else { return Ok(at) };
                    if line.length > 2 || !line.text.is_empty() {
                        return Err(WireError::Malformed("chunk data longer than its size".to_string()));
                    }
                    at += line.length;
                    self.state = ChunkState::Size;
                }
                ChunkState::Size => {
                    let Some(line) = line(rest)? else { return Ok(at) };
                    let digits = line.text.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
                    let size = std::str::from_utf8(digits)
                        .ok()
                        .filter(|d| !d.is_empty() && d.len() <= 15)
                        .and_then(|d| u64::from_str_radix(d, 16).ok())
                        .ok_or_else(|| {
                            WireError::Malformed(format!(
                                "bad chunk size line {:?}",
                                String::from_utf8_lossy(&line.text[..line.text.len().min(40)])
                            ))
                        })?;
                    at += line.length;
                    self.state = if size == 0 { ChunkState::Trailer } else { ChunkState::Data(size) };
                }
                ChunkState::Trailer => {
                    let Some(line) = line(rest)? else { return Ok(at) };
                    at += line.length;
                    if line.text.is_empty() {
                        self.state = ChunkState::Done;
                    }
                }
            }
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

struct Line<'a> {
    /// Without its line end.
    text: &'a [u8],
    /// With its line end.
    length: usize,
}

/// The first line of `bytes` (`\r\n` or `\n` ended); `None` while its end has not arrived.
fn line(bytes: &[u8]) -> Result<Option<Line<'_>>, WireError> {
    match bytes.iter().position(|&b| b == b'\n') {
        Some(newline) => {
            let text = &bytes[..newline];
            Ok(Some(Line { text: text.strip_suffix(b"\r").unwrap_or(text), length: newline + 1 }))
        }
        None if bytes.len() > MAX_CHUNK_LINE_BYTES => {
            Err(WireError::Malformed(format!("chunk framing line longer than {MAX_CHUNK_LINE_BYTES} bytes")))
        }
        None => Ok(None),
    }
}

/// A response being read; its connection goes back to the pool when the body was read to its
/// end and the server keeps connections alive.
pub(crate) struct WireResponse<'c> {
    client: &'c WireClient,
    connection: Option<Connection>,
    status: u16,
    framing: Framing,
    keep_alive: bool,
    /// Body bytes of the latest read.
    body: Vec<u8>,
    /// No arrival is earlier than the last one (a clock step cannot reorder reads).
    floor: Instant,
    done: bool,
}

impl<'c> WireResponse<'c> {
    fn new(client: &'c WireClient, head: Head) -> Self {
        WireResponse {
            client,
            connection: Some(head.connection),
            status: head.status,
            framing: head.framing,
            keep_alive: head.keep_alive,
            body: Vec::new(),
            floor: head.arrived,
            done: false,
        }
    }

    pub(crate) fn status(&self) -> u16 {
        self.status
    }

    /// When the bytes that completed the response head arrived.
    pub(crate) fn head_arrived(&self) -> Instant {
        self.floor
    }

    /// Waits for body bytes: `Some(arrival)` with them in [`WireResponse::body`], `None` at the
    /// body's end.
    pub(crate) async fn read(&mut self) -> Result<Option<Instant>, WireError> {
        self.body.clear();
        let Some(connection) = self.connection.as_mut() else { return Ok(None) };
        loop {
            // Bytes already read (with the head, or after the previous body bytes) come first.
            let unread = connection.unread();
            let used = match &mut self.framing {
                Framing::Chunked(decoder) => {
                    let used = decoder.decode(unread, &mut self.body)?;
                    self.done = decoder.is_done();
                    used
                }
                Framing::Length(left) => {
                    let take = unread.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    self.body.extend_from_slice(&unread[..take]);
                    *left -= take as u64;
                    self.done = *left == 0;
                    take
                }
                Framing::UntilClose => {
                    self.body.extend_from_slice(unread);
                    unread.len()
                }
            };
            connection.consume(used);
            if !self.body.is_empty() {
                return Ok(Some(self.floor));
            }
            if self.done {
                self.release();
                return Ok(None);
            }
            let (read, arrived) = connection
                .read()
                .await
                .map_err(|e| WireError::Closed(format!("connection broke mid-response: {e}")))?;
            self.floor = self.floor.max(arrived);
            if read == 0 {
                if matches!(self.framing, Framing::UntilClose) {
                    self.done = true;
                    self.connection = None;
                    return Ok(None);
                }
                return Err(WireError::Closed("connection closed before the response ended".to_string()));
            }
        }
    }

    /// Body bytes of the latest [`WireResponse::read`].
    pub(crate) fn body(&self) -> &[u8] {
        &self.body
    }

    /// Reads what is left of the body, at most `budget` bytes and until `deadline`, so the
    /// connection can serve the next request; otherwise it is closed.
    pub(crate) async fn finish(mut self, deadline: Instant, mut budget: usize) {
        while !self.done && budget > 0 {
            match tokio::time::timeout_at(deadline.into(), self.read()).await {
                Ok(Ok(Some(_))) => budget = budget.saturating_sub(self.body.len().max(1)),
                _ => return,
            }
        }
    }

    fn release(&mut self) {
        if let Some(connection) = self.connection.take()
            && self.keep_alive
            && connection.unread().is_empty()
        {
            self.client.checkin(connection);
        }
    }
}

impl Drop for WireResponse<'_> {
    fn drop(&mut self) {
        if self.done {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn decode_all(pieces: &[&[u8]]) -> Result<(Vec<u8>, bool), WireError> {
        let mut decoder = ChunkedDecoder::default();
        let mut pending = Vec::new();
        let mut out = Vec::new();
        for piece in pieces {
            pending.extend_from_slice(piece);
            let used = decoder.decode(&pending, &mut out)?;
            pending.drain(..used);
        }
        Ok((out, decoder.is_done()))
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: x\r\n\r\n";
        for cut in 0..wire.len() {
            let (body, done) = decode_all(&[&wire[..cut], &wire[cut..]]).expect("valid");
            assert_eq!(body, b"hello, world", "cut at {cut}");
            assert!(done, "cut at {cut}");
        }
        let (body, done) = decode_all(&[b"3\r\nabc\r\n"]).expect("valid so far");
        assert_eq!((body.as_slice(), done), (&b"abc"[..], false));
    }

    #[test]
    fn bad_chunk_framing_is_an_error() {
        assert!(decode_all(&[b"zz\r\n"]).is_err(), "not hex");
        assert!(decode_all(&[b"3\r\nabcd\r\n"]).is_err(), "data longer than its size");
        assert!(decode_all(&[&[b'1'; 5000][..]]).is_err(), "a size line that never ends");
        assert!(decode_all(&[b"ffffffffffffffff\r\n"]).is_err(), "a size past 15 hex digits");
    }

    #[test]
    fn heads_give_status_framing_and_keep_alive() {
        let head = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nrest").unwrap().unwrap();
        assert_eq!((head.status, head.keep_alive, head.length), (200, true, 47));
        assert!(matches!(head.framing, Framing::Chunked(_)));
        let head =
            parse_head(b"HTTP/1.1 429 Too Many\r\ncontent-length: 12\r\nConnection: close\r\n\r\n").unwrap().unwrap();
        assert_eq!((head.status, head.keep_alive, head.framing), (429, false, Framing::Length(12)));
        let head = parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!((head.keep_alive, head.framing), (false, Framing::UntilClose));
        let bare = b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n5\r\nhello\r\n0\r\n\r\n";
        let head = parse_head(bare).unwrap().unwrap();
        assert_eq!(
            &bare[head.length..head.length + 3],
            b"5\r\n",
            "the head ends at its own blank line, not the body's"
        );
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None, "incomplete");
        assert!(parse_head(b"<html>hello</html>\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n").is_err());
        assert!(parse_head(&vec![b'a'; MAX_HEAD_BYTES + 1]).is_err(), "a head that never ends");
    }

    /// A loopback server that answers each request on a connection with the next of
    /// `responses`, then closes; it counts the connections it accepted.
    async fn scripted_server(responses: Vec<Vec<u8>>, connections: Arc<AtomicUsize>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let address = listener.local_addr().expect("address");
        let responses = Arc::new(responses);
        tokio::spawn(async move {
            for _ in 0..8 {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                connections.fetch_add(1, Ordering::SeqCst);
                let responses = responses.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    // An empty response: read the request, then close without answering.
                    for response in responses.iter() {
                        // Read one whole request: head, then Content-Length bytes of body.
                        let mut buf = [0u8; 4096];
                        let body_end = loop {
                            if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
                                let length: usize = head
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length: "))
                                    .and_then(|v| v.trim().parse().ok())
                                    .unwrap_or(0);
                                if request.len() >= end + 4 + length {
                                    break end + 4 + length;
                                }
                            }
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(read) => request.extend_from_slice(&buf[..read]),
                            }
                        };
                        request.drain(..body_end);
                        if response.is_empty() || socket.write_all(response).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        format!("http://{address}/v1/chat/completions")
    }

    const CHUNKED_OK: &[u8] =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\ndata: \r\n5\r\nhello\r\n0\r\n\r\n";

    async fn read_body(response: &mut WireResponse<'_>) -> Vec<u8> {
        let mut body = Vec::new();
        while response.read().await.expect("body").is_some() {
            body.extend_from_slice(response.body());
        }
        body
    }

    #[tokio::test]
    async fn a_finished_response_leaves_its_connection_for_the_next_request() {
        let connections = Arc::new(AtomicUsize::new(0));
        let url = scripted_server(vec![CHUNKED_OK.to_vec(), CHUNKED_OK.to_vec()], connections.clone()).await;
        let client = WireClient::for_url(&url, Duration::from_secs(2), "test").expect("http URL");
        for _ in 0..2 {
            let mut response = client.post(b"{}", None).await.expect("response");
            assert_eq!(response.status(), 200);
            assert_eq!(read_body(&mut response).await, b"data: hello");
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1, "the second request reused the connection");
    }

    #[tokio::test]
    async fn a_pooled_connection_the_server_closed_is_replaced_by_a_fresh_one() {
        let connections = Arc::new(AtomicUsize::new(0));
        // One response per connection, then the server closes it.
        let url = scripted_server(vec![CHUNKED_OK.to_vec()], connections.clone()).await;
        let client = WireClient::for_url(&url, Duration::from_secs(2), "test").expect("http URL");
        for round in 0..3 {
            let mut response = client.post(b"{}", None).await.unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(read_body(&mut response).await, b"data: hello");
            drop(response);
            // Let the server's close arrive, as it would while a connection sits idle.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_request_on_a_reused_connection_that_closes_unanswered_is_sent_once_more() {
        let connections = Arc::new(AtomicUsize::new(0));
        // The first connection answers once, then takes the next request and closes, as a server
        // closing an idle connection just as the request arrives does.
        let url = scripted_server(vec![CHUNKED_OK.to_vec(), Vec::new()], connections.clone()).await;
        let client = WireClient::for_url(&url, Duration::from_secs(2), "test").expect("http URL");
        for round in 0..2 {
            let mut response = client.post(b"{}", None).await.unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(read_body(&mut response).await, b"data: hello");
        }
        assert_eq!(connections.load(Ordering::SeqCst), 2, "the second request went again on a fresh connection");
    }

    #[tokio::test]
    async fn a_fresh_connection_that_closes_unanswered_is_an_error() {
        let connections = Arc::new(AtomicUsize::new(0));
        let url = scripted_server(vec![Vec::new()], connections.clone()).await;
        let client = WireClient::for_url(&url, Duration::from_secs(2), "test").expect("http URL");
        let error = client.post(b"{}", None).await.err().expect("no response");
        assert!(matches!(error, WireError::Closed(_)), "{error}");
        assert_eq!(connections.load(Ordering::SeqCst), 1, "not retried: the connection was not reused");
    }

    #[tokio::test]
    async fn length_and_close_delimited_bodies_are_read_whole() {
        let connections = Arc::new(AtomicUsize::new(0));
        let url =
            scripted_server(vec![b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nboom".to_vec()], connections.clone())
                .await;
        let client = WireClient::for_url(&url, Duration::from_secs(2), "test").expect("http URL");
        let mut response = client.post(b"{}", None).await.expect("response");
        assert_eq!((response.status(), read_body(&mut response).await), (500, b"boom".to_vec()));

        let url = scripted_server(vec![b"HTTP/1.0 200 OK\r\n\r\nuntil the end".to_vec()], connections).await;
        let client = WireClient::for_url(&url, Duration::from_secs(2), "test").expect("http URL");
        let mut response = client.post(b"{}", None).await.expect("response");
        assert_eq!(read_body(&mut response).await, b"until the end");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2_000, failure_persistence: None, ..Default::default() })]

        /// Whatever a server sends as its head, parsing ends in a head, "incomplete" or an error.
        #[test]
        fn arbitrary_heads_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            if let Ok(Some(head)) = parse_head(&bytes) {
                proptest::prop_assert!(head.length <= bytes.len());
            }
        }

        /// Arbitrary framing never panics, and never yields more body than bytes went in.
        #[test]
        fn arbitrary_chunk_framing_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            cut in proptest::prelude::any::<usize>(),
        ) {
            let cut = cut % (bytes.len() + 1);
            if let Ok((body, _)) = decode_all(&[&bytes[..cut], &bytes[cut..]]) {
                proptest::prop_assert!(body.len() <= bytes.len());
            }
        }

        /// Any body, chunked any way and split into reads anywhere, decodes back to itself.
        #[test]
        fn chunked_bodies_round_trip(
            pieces in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 1..40), 0..8),
            cuts in proptest::collection::vec(proptest::prelude::any::<usize>(), 0..6),
        ) {
            let mut wire = Vec::new();
            for piece in &pieces {
                wire.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                wire.extend_from_slice(piece);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).chain([0, wire.len()]).collect();
            points.sort_unstable();
            points.dedup();
            let reads: Vec<&[u8]> = points.windows(2).map(|w| &wire[w[0]..w[1]]).collect();
            let (body, done) = decode_all(&reads).expect("valid chunked body");
            proptest::prop_assert_eq!(body, pieces.concat());
            proptest::prop_assert!(done);
        }
    }

    #[test]
    fn a_proxy_variable_hands_remote_hosts_to_reqwest_but_never_loopback() {
        fn host(text: &str) -> &str {
            HttpUrl::parse(text).expect("URL").host
        }
        let proxied = |var: &str| var == "HTTPS_PROXY" || var == "all_proxy";
        let https_only = |var: &str| var == "HTTPS_PROXY";
        assert!(proxy_may_apply_with(host("http://gpu-node:8000/v1"), proxied));
        assert!(!proxy_may_apply_with(host("http://gpu-node:8000/v1"), https_only), "https_proxy is for https");
        for local in ["http://localhost:8000/v1", "http://127.0.0.1:8000/v1", "http://[::1]:8000/v1"] {
            assert!(!proxy_may_apply_with(host(local), proxied), "{local}");
        }
    }

    #[test]
    fn urls_split_into_the_parts_a_request_head_needs() {
        let url = HttpUrl::parse("http://user:pw@Node-1.local:8000/v1/x?y=1").expect("URL");
        assert_eq!(
            url,
            HttpUrl { scheme: "http", has_userinfo: true, host: "Node-1.local", port: Some(8000), target: "/v1/x?y=1" }
        );
        let url = HttpUrl::parse("https://[::1]").expect("IPv6 literal");
        assert_eq!((url.host, url.port, url.target), ("[::1]", None, ""));
        assert_eq!(HttpUrl::parse("http://h?q=1").expect("query only").target, "?q=1");
        for bad in [
            "127.0.0.1:8000",
            "http://",
            "http://h:99999/",
            "http://h:x/",
            "http://[::1/",
            "http://a b/",
            "http://h/é",
            "ht tp://h/",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn only_plain_http_urls_get_a_wire_client() {
        let timeout = Duration::from_secs(1);
        assert!(WireClient::for_url("http://127.0.0.1:8000/v1/completions", timeout, "t").is_some());
        assert!(WireClient::for_url("https://example.com/v1/completions", timeout, "t").is_none());
        assert!(WireClient::for_url("http://user:pw@127.0.0.1/v1", timeout, "t").is_none());
        let client = WireClient::for_url("http://[::1]:9/v1/x?y=1", timeout, "t").expect("IPv6 literal");
        assert_eq!(client.authority, "[::1]:9");
        assert!(String::from_utf8_lossy(&client.head).starts_with("POST /v1/x?y=1 HTTP/1.1\r\nHost: [::1]:9\r\n"));
        let client = WireClient::for_url("http://LocalHost:80?y=1", timeout, "t").expect("default port");
        assert_eq!(client.authority, "localhost:80");
        assert!(String::from_utf8_lossy(&client.head).starts_with("POST /?y=1 HTTP/1.1\r\nHost: localhost\r\n"));
    }

    /// Real loopback sockets: a token that arrived while the client was busy elsewhere is timed
    /// by its arrival, not by the late read.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn body_bytes_are_timed_by_their_arrival_not_by_a_late_read() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let address = listener.local_addr().expect("address");
        let (written, chunk_written) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            socket.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").await.expect("head");
            tokio::time::sleep(Duration::from_millis(20)).await;
            let sent = Instant::now();
            socket.write_all(b"5\r\nfirst\r\n").await.expect("chunk");
            let _ = written.send(sent);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = socket.write_all(b"0\r\n\r\n").await;
        });
        // Stamping turns on a moment after a socket first asks for it (see the simulator's
        // StampedListener); ask once before the measured connection.
        let warm = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        enable_rx_stamps(&warm);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let client = WireClient::for_url(&format!("http://{address}/x"), Duration::from_secs(2), "t").expect("URL");
        let mut response = client.post(b"{}", None).await.expect("head");
        // Busy elsewhere: the chunk is in the socket, and the client reads it 50 ms later.
        let sent = chunk_written.await.expect("the server wrote the chunk");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let read_at = Instant::now();
        let arrived = response.read().await.expect("read").expect("bytes");
        assert_eq!(response.body(), b"first");
        assert!(
            read_at.saturating_duration_since(arrived) >= Duration::from_millis(40),
            "arrival only {:?} before the late read: timed by the read, not by the packet",
            read_at.saturating_duration_since(arrived)
        );
        assert!(
            arrived + Duration::from_millis(1) >= sent,
            "arrival {:?} before the server wrote the chunk",
            sent.saturating_duration_since(arrived)
        );
    }
}
