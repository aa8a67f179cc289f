//! gRPC length-prefixed message framing: 1 byte compressed flag, 4 bytes big-endian length, then the message.

use bytes::{Buf, Bytes, BytesMut};

/// Size of the prefix before each message.
pub const HEADER_LEN: usize = 5;

/// The 5-byte prefix of an uncompressed message of `len` bytes.
pub fn header(len: usize) -> Bytes {
    header_with_flag(false, len)
}

/// The 5-byte prefix of a message of `len` bytes, with the compressed flag as given.
pub fn header_with_flag(compressed: bool, len: usize) -> Bytes {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    let mut h = [0u8; HEADER_LEN];
    h[0] = u8::from(compressed);
    h[1..].copy_from_slice(&len.to_be_bytes());
    Bytes::copy_from_slice(&h)
}

/// One message read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Whether the sender set the compressed flag.
    pub compressed: bool,
    /// The message bytes (without the prefix).
    pub bytes: Bytes,
}

/// Why a byte stream is not a valid sequence of gRPC messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A message is larger than the limit; says how large it claimed to be.
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: u64, limit: u64 },
    /// The compressed-flag byte is neither 0 nor 1.
    #[error("invalid compressed flag {0} in message prefix")]
    BadFlag(u8),
    /// The stream ended inside a message.
    #[error("stream ended inside a message ({have} of {want} bytes)")]
    Truncated { have: usize, want: usize },
}

/// Splits a byte stream into messages, refusing any message over `limit` bytes before buffering it.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    limit: u64,
}

impl Decoder {
    /// A decoder accepting messages of at most `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self {
            buf: BytesMut::new(),
            limit,
        }
    }

    /// Adds bytes received from the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let flag = self.buf[0];
        if flag > 1 {
            return Err(FrameError::BadFlag(flag));
        }
        let len = u64::from(u32::from_be_bytes([
            self.buf[1],
            self.buf[2],
            self.buf[3],
            self.buf[4],
        ]));
        if len > self.limit {
            return Err(FrameError::TooLarge {
                len,
                limit: self.limit,
            });
        }
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if self.buf.len() < HEADER_LEN + len {
            self.buf.reserve(HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        Ok(Some(Message {
            compressed: flag == 1,
            bytes: self.buf.split_to(len).freeze(),
        }))
    }

    /// Checks that the stream ended on a message boundary.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let want = if self.buf.len() < HEADER_LEN {
            HEADER_LEN
        } else {
            HEADER_LEN
                + u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize
        };
        Err(FrameError::Truncated {
            have: self.buf.len(),
            want,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(flag: u8, msg: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        v.extend_from_slice(msg);
        v
    }

    #[test]
    fn reassembles_split_messages() {
        let wire = [framed(0, b"hello"), framed(0, b""), framed(1, b"zz")].concat();
        let mut d = Decoder::new(100);
        let mut got = Vec::new();
        for byte in wire {
            d.push(&[byte]);
            while let Some(m) = d.next_message().expect("valid") {
                got.push(m);
            }
        }
        d.finish().expect("ends on a boundary");
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].bytes, Bytes::from_static(b"hello"));
        assert!(got[1].bytes.is_empty());
        assert!(got[2].compressed);
    }

    #[test]
    fn rejects_oversized_before_buffering() {
        let mut d = Decoder::new(4);
        d.push(&framed(0, b"hello")[..HEADER_LEN]);
        assert_eq!(
            d.next_message(),
            Err(FrameError::TooLarge { len: 5, limit: 4 })
        );
    }

    #[test]
    fn rejects_bad_flags_and_truncation() {
        let mut d = Decoder::new(100);
        d.push(&framed(7, b"x"));
        assert_eq!(d.next_message(), Err(FrameError::BadFlag(7)));
        let mut d = Decoder::new(100);
        d.push(&framed(0, b"hello")[..7]);
        assert_eq!(d.next_message(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated { have: 7, want: 10 }));
    }

    #[test]
    fn header_encodes_length() {
        assert_eq!(&header(258)[..], &[0, 0, 0, 1, 2]);
    }
}
