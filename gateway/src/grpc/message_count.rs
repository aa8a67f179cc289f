//! Counting the messages of a body as it streams by, without buffering them: how the gateway learns that a method it
//! has no descriptor for streams its answers.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame};

use super::frame::HEADER_LEN;

/// Where a message boundary is, byte by byte.
#[derive(Debug, Default)]
struct Boundaries {
    /// Bytes of the current prefix seen so far.
    prefix: [u8; HEADER_LEN],
    prefix_len: usize,
    /// Bytes of the current message still to come.
    remaining: u64,
    /// Messages begun.
    begun: u32,
}

impl Boundaries {
    /// Counts the messages begun in `chunk`.
    fn push(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let skip = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(chunk.len());
                chunk.advance(skip);
                self.remaining -= skip as u64;
                continue;
            }
            let take = (HEADER_LEN - self.prefix_len).min(chunk.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&chunk[..take]);
            self.prefix_len += take;
            chunk.advance(take);
            if self.prefix_len == HEADER_LEN {
                self.begun = self.begun.saturating_add(1);
                let len = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]);
                self.remaining = u64::from(len);
                self.prefix_len = 0;
            }
        }
    }
}

/// A body that calls `on_second` once, when a second message begins in it.
#[derive(Debug)]
pub struct OnSecondMessage<B, F: FnOnce()> {
    inner: B,
    boundaries: Boundaries,
    on_second: Option<F>,
}

impl<B, F: FnOnce()> OnSecondMessage<B, F> {
    /// `inner`, watched.
    pub fn new(inner: B, on_second: F) -> Self {
        Self {
            inner,
            boundaries: Boundaries::default(),
            on_second: Some(on_second),
        }
    }
}

impl<B, F> Body for OnSecondMessage<B, F>
where
    B: Body<Data = Bytes> + Unpin,
    F: FnOnce() + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if this.on_second.is_some() {
            if let Poll::Ready(Some(Ok(frame))) = &polled {
                if let Some(data) = frame.data_ref() {
                    this.boundaries.push(data);
                    if this.boundaries.begun >= 2 {
                        if let Some(on_second) = this.on_second.take() {
                            on_second();
                        }
                    }
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn counts_messages_split_anywhere() {
        let stream = [framed(b"hello"), framed(b""), framed(&[7; 300])].concat();
        for split in [1, 2, 3, 5, 7, 64, stream.len()] {
            let mut boundaries = Boundaries::default();
            for chunk in stream.chunks(split) {
                boundaries.push(chunk);
            }
            assert_eq!(boundaries.begun, 3, "chunks of {split}");
        }
    }
}
