//! A small blocking HTTP/1.1 client for the REST API of a running `weir run`, used by
//! `weir savepoint` and `weir cancel`.
//!
//! The API is plain JSON over HTTP on a loopback or cluster-internal address, one request per
//! connection, so a `TcpStream`, a request line and a response parser cover it; an HTTP client
//! crate would add more code to the binary than this whole module.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_api::rest::ErrorResponse;

/// A request to the REST API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers at the address.
    #[error(
        "cannot reach the weir REST API at {address}: {message}\nFix: check that `weir run` is \
         running and pass the address it printed at startup (`REST API on http://HOST:PORT`) \
         with --rest-address."
    )]
    Connect {
        /// The address given.
        address: String,
        /// Why connecting failed.
        message: String,
    },
    /// The connection broke or timed out.
    #[error("{request} on {address}: {source}")]
    Io {
        /// Method and path.
        request: String,
        /// The address.
        address: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The answer is not HTTP or not the JSON that was expected.
    #[error("{request} on {address}: unexpected answer: {message}")]
    Malformed {
        /// Method and path.
        request: String,
        /// The address.
        address: String,
        /// What is wrong.
        message: String,
    },
    /// The API answered with an error status.
    #[error("{request} on {address} answered {status}: {message}")]
    Status {
        /// Method and path.
        request: String,
        /// The address.
        address: String,
        /// The HTTP status code.
        status: u16,
        /// The API's error messages, or the body.
        message: String,
    },
}

/// A response: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The body, decoded from chunked transfer encoding if needed.
    pub body: String,
}

/// The REST API of one `weir run`.
#[derive(Debug, Clone)]
pub struct Client {
    address: String,
    timeout: Duration,
}

impl Client {
    /// A client for `address` (`HOST:PORT`, optionally written `http://HOST:PORT`); each request
    /// may take up to `timeout` to connect and again to answer.
    pub fn new(address: &str, timeout: Duration) -> Self {
        let address = address
            .trim()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        Self { address, timeout }
    }

    /// The address requests go to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `method path` with an optional JSON body and decodes the JSON answer, which must
    /// have one of the `expected` status codes; other codes become [`ClientError::Status`] with
    /// the API's error messages.
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
        expected: &[u16],
    ) -> Result<T, ClientError> {
        let request = format!("{method} {path}");
        let malformed = |message: String| ClientError::Malformed {
            request: request.clone(),
            address: self.address.clone(),
            message,
        };
        let body = body
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| malformed(format!("cannot encode the request: {e}")))?;
        let resp = self.request(method, path, body.as_deref())?;
        if !expected.contains(&resp.status) {
            let message = match serde_json::from_str::<ErrorResponse>(&resp.body) {
                Ok(e) if !e.errors.is_empty() => e.errors.join("; "),
                _ => resp.body.trim().to_string(),
            };
            return Err(ClientError::Status {
                request,
                address: self.address.clone(),
                status: resp.status,
                message,
            });
        }
        serde_json::from_str(&resp.body).map_err(|e| malformed(format!("{e}: {}", resp.body)))
    }

    /// Sends one request and reads the whole response.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Response, ClientError> {
        let request = format!("{method} {path}");
        let io = |source| ClientError::Io {
            request: request.clone(),
            address: self.address.clone(),
            source,
        };
        let mut stream = self.connect()?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let body = body.unwrap_or("");
        let content_type = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/json\r\n"
        };
        // `Connection: close` makes the server end the response by closing, so reading to the
        // end is reading exactly one response.
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n{content_type}\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.address,
            body.len()
        );
        stream.write_all(head.as_bytes()).map_err(io)?;
        stream.write_all(body.as_bytes()).map_err(io)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).map_err(io)?;
        parse_response(&raw).map_err(|message| ClientError::Malformed {
            request,
            address: self.address.clone(),
            message,
        })
    }

    fn connect(&self) -> Result<TcpStream, ClientError> {
        let connect_error = |message: String| ClientError::Connect {
            address: self.address.clone(),
            message,
        };
        let addrs = self
            .address
            .to_socket_addrs()
            .map_err(|e| connect_error(e.to_string()))?;
        let mut last = "the address resolves to nothing".to_string();
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(s) => return Ok(s),
                Err(e) => last = e.to_string(),
            }
        }
        Err(connect_error(last))
    }
}

/// Parses a complete HTTP/1.1 response: status line, headers, and a body delimited by the end
/// of the connection, `Content-Length` or chunked transfer encoding.
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|e| format!("headers: {e}"))?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| format!("not an HTTP/1.x status line: {status_line:?}"))?;
    let header = |name: &str| {
        lines.clone().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body)?
    } else if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad Content-Length {len:?}"))?;
        body.get(..len)
            .ok_or_else(|| format!("body shorter than its Content-Length {len}"))?
            .to_vec()
    } else {
        body.to_vec()
    };
    let body = String::from_utf8(body).map_err(|e| format!("body: {e}"))?;
    Ok(Response { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|e| e.to_string())?;
        // Chunk extensions (`;name=value`) carry nothing this client needs.
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data.get(..size).ok_or("truncated chunk")?;
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).ok_or("truncated chunk end")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse() {
        let r = parse_response(
            b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        )
        .unwrap();
        assert_eq!(
            r,
            Response {
                status: 202,
                body: "{}".into()
            }
        );
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, "abcde");
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope").unwrap();
        assert_eq!((r.status, r.body.as_str()), (404, "nope"));
        for bad in [
            &b"garbage"[..],
            b"SMTP 220\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn addresses_accept_a_scheme() {
        assert_eq!(
            Client::new("http://127.0.0.1:8081/", Duration::from_secs(1)).address(),
            "127.0.0.1:8081"
        );
    }

    #[test]
    fn nothing_listening_is_a_connect_error() {
        // Bind and drop to get a port that nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Client::new(&format!("127.0.0.1:{port}"), Duration::from_secs(2));
        let e = c.request("GET", "/v1/job", None).unwrap_err();
        assert!(matches!(e, ClientError::Connect { .. }), "{e}");
        assert!(e.to_string().contains("--rest-address"), "{e}");
    }
}
