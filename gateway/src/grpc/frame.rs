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
    Bytes::copy_from_slice(&encode_prefix(compressed, len))
}

/// An uncompressed message behind its prefix, in one buffer (a copy of `message`: for small messages).
pub fn framed(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(HEADER_LEN + message.len());
    framed.extend_from_slice(&encode_prefix(false, message.len()));
    framed.extend_from_slice(message);
    framed.freeze()
}

fn encode_prefix(compressed: bool, len: usize) -> [u8; HEADER_LEN] {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    let mut h = [0u8; HEADER_LEN];
    h[0] = u8::from(compressed);
    h[1..].copy_from_slice(&len.to_be_bytes());
    h
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
///
/// Messages that arrive whole in one chunk (the usual case: a small request in one DATA frame) are handed out as
/// slices of that chunk, neither copied nor allocated; only messages split across chunks are reassembled.
#[derive(Debug)]
pub struct Decoder {
    /// The received chunk not yet consumed, while nothing is being reassembled.
    chunk: Bytes,
    /// Bytes being reassembled across chunks.
    buf: BytesMut,
    limit: u64,
}

impl Decoder {
    /// A decoder accepting messages of at most `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self {
            chunk: Bytes::new(),
            buf: BytesMut::new(),
            limit,
        }
    }

    /// Adds bytes received from the stream.
    pub fn push(&mut self, chunk: Bytes) {
        if self.buf.is_empty() && self.chunk.is_empty() {
            self.chunk = chunk;
            return;
        }
        let pending = std::mem::take(&mut self.chunk);
        self.buf.extend_from_slice(&pending);
        self.buf.extend_from_slice(&chunk);
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        if !self.chunk.is_empty() {
            match self.whole_message_in_chunk()? {
                Some(message) => return Ok(Some(message)),
                // A message continues past this chunk: reassemble it from here on.
                None => {
                    let pending = std::mem::take(&mut self.chunk);
                    self.buf.extend_from_slice(&pending);
                }
            }
        }
        let Some((flag, len)) = prefix(&self.buf, self.limit)? else {
            return Ok(None);
        };
        // The buffer grows with the bytes received, never ahead to the length a prefix declares: a peer announcing
        // large messages and sending nothing more costs the gateway nothing.
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        Ok(Some(Message {
            compressed: flag == 1,
            bytes: self.buf.split_to(len).freeze(),
        }))
    }

    /// The next message if the current chunk holds all of it, sliced out of the chunk.
    fn whole_message_in_chunk(&mut self) -> Result<Option<Message>, FrameError> {
        let Some((flag, len)) = prefix(&self.chunk, self.limit)? else {
            return Ok(None);
        };
        if self.chunk.len() < HEADER_LEN + len {
            return Ok(None);
        }
        self.chunk.advance(HEADER_LEN);
        Ok(Some(Message {
            compressed: flag == 1,
            bytes: self.chunk.split_to(len),
        }))
    }

    /// Whether bytes of a next message (its prefix, at least its first byte) have arrived.
    pub fn has_started_a_message(&self) -> bool {
        !self.chunk.is_empty() || !self.buf.is_empty()
    }

    /// Checks that the stream ended on a message boundary.
    pub fn finish(&self) -> Result<(), FrameError> {
        if !self.chunk.is_empty() {
            return Err(truncated(&self.chunk));
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        Err(truncated(&self.buf))
    }
}

/// The flag and length of the message at the start of `bytes`, once its prefix is complete; a bad flag or a length
/// over `limit` is refused before any of the message is buffered.
fn prefix(bytes: &[u8], limit: u64) -> Result<Option<(u8, usize)>, FrameError> {
    if bytes.len() < HEADER_LEN {
        return Ok(None);
    }
    let flag = bytes[0];
    if flag > 1 {
        return Err(FrameError::BadFlag(flag));
    }
    let len = u64::from(u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]));
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    Ok(Some((flag, usize::try_from(len).unwrap_or(usize::MAX))))
}

/// The error for a stream that ended with `rest` unconsumed.
fn truncated(rest: &[u8]) -> FrameError {
    let want = if rest.len() < HEADER_LEN {
        HEADER_LEN
    } else {
        HEADER_LEN + u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize
    };
    FrameError::Truncated {
        have: rest.len(),
        want,
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
            d.push(Bytes::copy_from_slice(&[byte]));
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
        d.push(Bytes::copy_from_slice(&framed(0, b"hello")[..HEADER_LEN]));
        assert_eq!(
            d.next_message(),
            Err(FrameError::TooLarge { len: 5, limit: 4 })
        );
    }

    #[test]
    fn rejects_bad_flags_and_truncation() {
        let mut d = Decoder::new(100);
        d.push(Bytes::from(framed(7, b"x")));
        assert_eq!(d.next_message(), Err(FrameError::BadFlag(7)));
        let mut d = Decoder::new(100);
        d.push(Bytes::copy_from_slice(&framed(0, b"hello")[..7]));
        assert_eq!(d.next_message(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated { have: 7, want: 10 }));
    }

    #[test]
    fn whole_messages_are_sliced_from_their_chunk_not_copied() {
        let wire = Bytes::from([framed(0, b"hello"), framed(0, b"world!")].concat());
        let mut d = Decoder::new(100);
        d.push(wire.clone());
        let first = d.next_message().expect("valid").expect("a message");
        assert_eq!(first.bytes, Bytes::from_static(b"hello"));
        // Same memory as the chunk: a slice, not a copy.
        assert_eq!(first.bytes.as_ptr(), wire[HEADER_LEN..].as_ptr());
        let second = d.next_message().expect("valid").expect("a message");
        assert_eq!(second.bytes, Bytes::from_static(b"world!"));
        assert_eq!(d.next_message(), Ok(None));
        d.finish().expect("ends on a boundary");
    }

    #[test]
    fn a_message_split_after_a_whole_one_is_reassembled() {
        let wire = [framed(0, b"one"), framed(0, b"two-two")].concat();
        let mut d = Decoder::new(100);
        d.push(Bytes::copy_from_slice(&wire[..12]));
        assert_eq!(
            d.next_message().expect("valid").expect("first").bytes,
            Bytes::from_static(b"one")
        );
        assert_eq!(d.next_message(), Ok(None));
        d.push(Bytes::copy_from_slice(&wire[12..]));
        assert_eq!(
            d.next_message().expect("valid").expect("second").bytes,
            Bytes::from_static(b"two-two")
        );
        d.finish().expect("ends on a boundary");
    }

    #[test]
    fn header_encodes_length() {
        assert_eq!(&header(258)[..], &[0, 0, 0, 1, 2]);
    }
}
