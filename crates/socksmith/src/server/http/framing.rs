//! The guard between the client's bytes and hyper: follows the message boundaries of the
//! request stream and holds every request head back until [`head::parse`] has checked it.
//!
//! hyper parses leniently where smuggling lives: it reads `Content-Length` beside
//! `Transfer-Encoding` by the latter and drops the length before the service sees the
//! request, and it bounds its read buffer, not each head. So every head, the first and every
//! pipelined or keep-alive one, goes through our checks first (both lengths, differing
//! lengths, a space before a colon, a head over 64 KiB, `Host`), and a refused one never
//! reaches hyper: in its place hyper reads a marker request that the service answers with
//! the refusal (with a close), and nothing after it.
//!
//! Sans-IO, like the SOCKS codec: bytes in, bytes out, so that any split of the input gives
//! the same output.

use crate::server::http::head::{self, BodyLength};
use crate::server::http::HttpError;

/// The longest chunk-size line accepted (`1a2b;ext=value\r\n`).
const MAX_CHUNK_LINE: usize = 4096;

/// Where the stream is.
#[derive(Debug)]
enum State {
    /// Collecting a request head (held back until complete and checked).
    Head,
    /// Inside a body of known length: this many bytes left.
    Body(u64),
    /// Collecting a chunk-size line.
    ChunkSize,
    /// Inside a chunk: this many data bytes left, then its CRLF.
    ChunkData(u64),
    /// The CRLF after a chunk's data: this many bytes left.
    ChunkEnd(u8),
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
    /// A CONNECT was sent: what follows is the tunnel's, not HTTP.
    Tunnel,
    /// A head was refused: nothing more goes to hyper.
    Refused,
}

/// Follows one client connection's request stream. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Framer {
    state: State,
    /// The head, chunk-size line or trailers being collected.
    held: Vec<u8>,
    /// The request hyper reads in place of a refused head.
    marker: Vec<u8>,
}

impl Framer {
    /// A framer whose refusals are announced with `marker`, a request the service recognises.
    pub(crate) fn new(marker: Vec<u8>) -> Self {
        Framer {
            state: State::Head,
            held: Vec::new(),
            marker,
        }
    }

    /// Takes the client's next bytes and appends what may go on to hyper to `out`. A refused
    /// head is answered `Err` once; `out` then ends with the marker request, and every later
    /// byte is dropped.
    pub(crate) fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), HttpError> {
        while !input.is_empty() {
            match self.state {
                State::Refused => return Ok(()),
                State::Tunnel => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                State::Body(left) | State::ChunkData(left) => {
                    let n = input.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    let left = left - n as u64;
                    self.state = match (&self.state, left) {
                        (State::Body(_), 0) => State::Head,
                        (State::Body(_), _) => State::Body(left),
                        (_, 0) => State::ChunkEnd(2),
                        (_, _) => State::ChunkData(left),
                    };
                }
                State::ChunkEnd(left) => {
                    // Passed on as sent: hyper checks that they are CRLF.
                    let n = input.len().min(usize::from(left));
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    let left = left - n as u8;
                    self.state = if left == 0 {
                        State::ChunkSize
                    } else {
                        State::ChunkEnd(left)
                    };
                }
                State::Head | State::ChunkSize | State::Trailers => {
                    input = self.collect(input, out)?;
                }
            }
        }
        Ok(())
    }

    /// Adds bytes to the held head, chunk-size line or trailers; when it is complete, passes
    /// it on and moves on. Returns the input left over.
    fn collect<'i>(&mut self, input: &'i [u8], out: &mut Vec<u8>) -> Result<&'i [u8], HttpError> {
        // At most up to the end of a line, so that what follows a complete unit is never
        // held with it (it may be a body).
        let take = match input.iter().position(|&b| b == b'\n') {
            Some(i) => i + 1,
            None => input.len(),
        };
        self.held.extend_from_slice(&input[..take]);
        let rest = &input[take..];
        let complete_line = self.held.last() == Some(&b'\n');
        match self.state {
            // A head ends with a line; parsing it only then keeps this linear.
            State::Head if !complete_line && self.held.len() < head::MAX_HEAD => {}
            // An empty line before a request line is ignored (RFC 9112 §2.2); held, every
            // further one would be parsed with all the others, quadratic in a stream of them.
            State::Head if self.held == b"\r\n" || self.held == b"\n" => self.held.clear(),
            State::Head => match head::parse(&self.held) {
                Ok(Some(parsed)) => {
                    out.append(&mut self.held);
                    self.state = match (parsed.connect, parsed.body) {
                        (true, _) => State::Tunnel,
                        (false, BodyLength::Chunked) => State::ChunkSize,
                        (false, BodyLength::Length(0)) => State::Head,
                        (false, BodyLength::Length(n)) => State::Body(n),
                    };
                }
                Ok(None) => {}
                Err(e) => return Err(self.refuse(e, out)),
            },
            State::ChunkSize if complete_line => match httparse::parse_chunk_size(&self.held) {
                Ok(httparse::Status::Complete((_, size))) => {
                    out.append(&mut self.held);
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::ChunkData(size)
                    };
                }
                _ => {
                    let e = HttpError::Malformed("invalid chunk size line".into());
                    return Err(self.refuse(e, out));
                }
            },
            State::ChunkSize if self.held.len() > MAX_CHUNK_LINE => {
                let e = HttpError::Malformed("chunk size line too long".into());
                return Err(self.refuse(e, out));
            }
            State::Trailers => {
                // The trailer section ends with an empty line. Its size is checked whether or
                // not a line has ended: a trailer line that never ends must not grow forever.
                let ended = self.held.ends_with(b"\r\n\r\n") || self.held == b"\r\n";
                if complete_line && ended {
                    out.append(&mut self.held);
                    self.state = State::Head;
                } else if self.held.len() > head::MAX_HEAD {
                    return Err(self.refuse(HttpError::HeadTooLarge(head::MAX_HEAD), out));
                }
            }
            _ => {}
        }
        Ok(rest)
    }

    fn refuse(&mut self, error: HttpError, out: &mut Vec<u8>) -> HttpError {
        self.held = Vec::new();
        self.state = State::Refused;
        out.extend_from_slice(&self.marker);
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARK: &[u8] = b"MARK";

    /// Feeds `input` whole and one byte at a time; both must give the same.
    fn run(input: &[u8]) -> (Vec<u8>, Option<String>) {
        let whole = {
            let mut framer = Framer::new(MARK.to_vec());
            let mut out = Vec::new();
            let error = framer.feed(input, &mut out).err().map(|e| e.to_string());
            (out, error)
        };
        let mut framer = Framer::new(MARK.to_vec());
        let mut out = Vec::new();
        let mut error = None;
        for byte in input {
            if let Err(e) = framer.feed(std::slice::from_ref(byte), &mut out) {
                error = Some(e.to_string());
            }
        }
        assert_eq!((out.clone(), error.clone()), whole, "split differently");
        (out, error)
    }

    #[test]
    fn pipelined_requests_with_bodies_pass_whole() {
        let input: &[u8] = b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
            POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
            3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n\
            GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(run(input), (input.to_vec(), None));
    }

    #[test]
    fn a_smuggling_head_after_a_good_request_is_replaced_by_the_marker() {
        let good: &[u8] = b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n";
        let bad: &[u8] = b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n";
        let (out, error) = run(&[good, bad, good].concat());
        assert_eq!(out, [good, MARK].concat());
        assert_eq!(
            error.as_deref(),
            Some("both Content-Length and Transfer-Encoding")
        );
    }

    #[test]
    fn a_body_that_looks_like_a_bad_head_is_only_a_body() {
        let body: &[u8] = b"X : y\r\nContent-Length: 1\r\n\r\n";
        let input = [
            format!(
                "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
            body,
        ]
        .concat();
        assert_eq!(run(&input), (input.clone(), None));
    }

    #[test]
    fn an_oversized_head_never_passes() {
        let mut input =
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\nGET http://a/ HTTP/1.1\r\nX: ".to_vec();
        input.resize(input.len() + head::MAX_HEAD, b'x');
        let (out, error) = run(&input);
        assert_eq!(
            out,
            [&b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"[..], MARK].concat()
        );
        assert!(error.is_some_and(|e| e.contains("longer than")));
    }

    #[test]
    fn a_trailer_line_that_never_ends_is_refused_not_held_forever() {
        let head: &[u8] =
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n";
        let mut framer = Framer::new(MARK.to_vec());
        let mut out = Vec::new();
        framer.feed(head, &mut out).expect("a good request so far");
        let endless = [b'A'; 8192];
        let mut fed = 0;
        let error = loop {
            match framer.feed(&endless, &mut out) {
                Ok(()) => fed += endless.len(),
                Err(e) => break e,
            }
            assert!(fed <= 2 * head::MAX_HEAD, "still held after {fed} bytes");
        };
        assert!(matches!(error, HttpError::HeadTooLarge(_)), "{error}");
        assert_eq!(out, [head, MARK].concat());
        assert!(framer.held.is_empty());
    }

    #[test]
    fn empty_lines_between_requests_are_dropped_not_held() {
        let get: &[u8] = b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n";
        let input = [get, &b"\r\n".repeat(50_000), b"\n", get].concat();
        assert_eq!(run(&input), ([get, get].concat(), None));
    }

    #[test]
    fn after_connect_bytes_are_the_tunnels() {
        let input: &[u8] =
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n\x16\x03\x01 Foo : bar\r\n\r\n";
        assert_eq!(run(input), (input.to_vec(), None));
    }
}
